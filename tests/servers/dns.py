"""A real ``dnsmasq`` on a free loopback port (UDP and TCP), serving records the tests write.

Fixtures: ``dns_server`` (session; :class:`DNSServer`) and ``silent_nameserver`` (function;
``"127.0.0.1:PORT"`` of a UDP socket that receives queries and never answers).

With ``CACHE_SETTINGS_DNS_SERVER=IP:PORT`` set, ``dns_server`` only reports that server; the
methods that write records skip their test, since another server's records are not ours.

What dnsmasq 2.90 does, found by running it (``--no-resolv --no-hosts``, no upstream):

- A/AAAA: one hosts file per name in a ``--hostsdir``. dnsmasq watches it with inotify: a new
  or changed file is read, and a deleted file's records are dropped, without SIGHUP. Files are
  written under a dot name and renamed into place: dnsmasq ignores dot files, and would
  otherwise read a half-written one.
- SRV: ``--srv-host`` lines in the ``--conf-file``. SIGHUP re-reads hosts files and
  ``--servers-file`` but not these (tried), so a change restarts dnsmasq on the same port.
- Names under ``test.`` and ``invalid.`` are local (``--local``): an unknown name is
  NXDOMAIN, a known name without the asked type an empty NOERROR answer. Other names are
  REFUSED (no upstream).
- SERVFAIL: dnsmasq answers REFUSED for the failures it finds itself (no server, a loop, a
  network error), so names under ``servfail.test.`` are forwarded to an upstream UDP socket
  here that answers SERVFAIL to everything; dnsmasq passes that on.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

__all__ = ["DNSServer", "dns_server", "silent_nameserver"]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 5.0  # seconds dnsmasq gets to answer, and a record change to show
#: An IP:PORT of another DNS server to test against instead of dnsmasq (read at import,
#: before the autouse fixture clears CACHE_SETTINGS_* for each test).
EXTERNAL = os.environ.get("CACHE_SETTINGS_DNS_SERVER")
#: A name no server has: RFC 6761 reserves ``invalid.``, so real resolvers say NXDOMAIN too.
MISSING_NAME = "no-such-memcached.invalid"


class DNSServer:
    """The DNS server of the tests: a dnsmasq we control, or the one of ``EXTERNAL``."""

    def __init__(self, workdir: Path | None, external: str | None = None) -> None:
        self.writable = external is None
        if external is not None:
            host, _, port = external.rpartition(":")
            self.host, self.port = host.strip("[]"), int(port)
            return
        assert workdir is not None
        self.host, self.port = HOST, 0
        self.hostsdir = workdir / "hosts"
        self.hostsdir.mkdir()
        self.config = workdir / "dnsmasq.conf"
        self.config.write_text("")
        self.log = workdir / "dnsmasq.log"
        self._srv: dict[str, list[str]] = {}
        self._names = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._upstream = _ServfailUpstream()

    @property
    def address(self) -> str:
        """Return ``"IP:PORT"`` as a ``nameserver=`` option takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def name(self, label: str = "mc") -> str:
        """Return a name under ``test.`` that no other test uses."""
        self._require_writable()
        return f"{label}-{next(self._names)}.test"

    @property
    def servfail_name(self) -> str:
        """Return a name whose lookups end in SERVFAIL."""
        self._require_writable()
        return "memcached.servfail.test"

    def set_addresses(self, name: str, addresses: Sequence[str]) -> None:
        """Serve exactly *addresses* (IPv4 and IPv6) as A/AAAA of *name*; [] removes it."""
        self._require_writable()
        path = self.hostsdir / name
        if addresses:
            temp = self.hostsdir / f".{name}.tmp"
            temp.write_text("".join(f"{address} {name}\n" for address in addresses))
            temp.rename(path)
        else:
            path.unlink(missing_ok=True)
        for rdtype, version in (("A", 4), ("AAAA", 6)):
            expected = sorted(
                _text(a) for a in map(ipaddress.ip_address, addresses) if a.version == version
            )
            self._wait(name, rdtype, expected or ("NOANSWER" if addresses else "NXDOMAIN"))

    def set_srv(self, name: str, records: Sequence[tuple[str, int, int, int]]) -> None:
        """Serve *records* ``(target, port, priority, weight)`` as the SRV records of *name*."""
        self._require_writable()
        self._srv[name] = [
            f"srv-host={name},{target},{port},{priority},{weight}\n"
            for target, port, priority, weight in records
        ]
        self.config.write_text("".join(itertools.chain.from_iterable(self._srv.values())))
        self.stop()
        self.start()
        expected = sorted(f"{p} {w} {port} {t}." for t, port, p, w in records)
        self._wait(name, "SRV", expected or "NXDOMAIN")

    def command(self) -> list[str]:
        """Return dnsmasq's command line."""
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        argv = [
            binary,
            "--keep-in-foreground",
            f"--conf-file={self.config}",  # also keeps /etc/dnsmasq.conf out
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            f"--listen-address={HOST}",
            f"--port={self.port}",
            f"--hostsdir={self.hostsdir}",
            "--local=/test/",
            "--local=/invalid/",
            f"--server=/servfail.test/{HOST}#{self._upstream.port}",
            "--pid-file=",
            f"--log-facility={self.log}",
        ]
        if os.geteuid() == 0:
            # As root dnsmasq drops to "nobody", who cannot read the test's private directory.
            argv.append(f"--user={pwd.getpwuid(0).pw_name}")
        return argv

    def start(self) -> DNSServer:
        """Start dnsmasq (on a new free port the first time) and wait until it answers."""
        for _ in range(3):  # another process may take the free port before dnsmasq binds it
            self.port = self.port or _free_port()
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                self._wait(MISSING_NAME, "A", "NXDOMAIN")
                return self
            except RuntimeError:
                self.stop()
                self.port = 0
        raise RuntimeError(f"dnsmasq did not start; see {self.log}")

    def stop(self) -> None:
        """Stop dnsmasq and reap it; a no-op when stopped."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=STARTUP_TIMEOUT)

    def close(self) -> None:
        """Stop dnsmasq and the SERVFAIL upstream."""
        if self.writable:
            self.stop()
            self._upstream.close()

    def ask(self, name: str, rdtype: str, timeout: float = 1.0) -> list[str] | str:
        """Return the sorted answer texts, or "NXDOMAIN", "NOANSWER" or another rcode."""
        query = dns.message.make_query(name if name.endswith(".") else f"{name}.", rdtype)
        response, _ = dns.query.udp_with_fallback(query, self.host, timeout=timeout, port=self.port)
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            return str(dns.rcode.to_text(rcode))
        answer = response.resolve_chaining().answer
        return sorted(item.to_text() for item in answer) if answer else "NOANSWER"

    def _wait(self, name: str, rdtype: str, expected: list[str] | str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        got: list[str] | str = "nothing"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self._process.communicate()[1]!r}")
            try:
                # A short timeout: a query sent before dnsmasq binds its port is lost.
                got = self.ask(name, rdtype, timeout=0.1)
            except (OSError, dns.exception.DNSException):
                got = "no answer"
            if got == expected:
                return
            time.sleep(0.02)
        raise RuntimeError(f"dnsmasq {self.address}: {name} {rdtype} is {got}, not {expected}")

    def _require_writable(self) -> None:
        if not self.writable:
            pytest.skip("CACHE_SETTINGS_DNS_SERVER is set: this test writes its own records")


class _ServfailUpstream:
    """A UDP server on 127.0.0.1 that answers every query with SERVFAIL."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((HOST, 0))
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-servfail", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
                reply = dns.message.make_response(dns.message.from_wire(data))
            except (TimeoutError, dns.exception.DNSException):
                continue
            except OSError:
                return
            reply.set_rcode(dns.rcode.SERVFAIL)
            self._sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()


def _free_port() -> int:
    """Return a port on 127.0.0.1 free for both UDP and TCP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DNSServer]:
    """dnsmasq for the whole session, or the server of CACHE_SETTINGS_DNS_SERVER."""
    if EXTERNAL:
        yield DNSServer(None, EXTERNAL)
        return
    server = DNSServer(tmp_path_factory.mktemp("dnsmasq"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def silent_nameserver() -> Iterator[str]:
    """Return ``"127.0.0.1:PORT"`` of a nameserver that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        yield f"{HOST}:{sock.getsockname()[1]}"


def _text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Return *address* as a DNS answer's text shows it: RFC 5952 (mixed ::ffff:a.b.c.d)."""
    if address.version == 4:
        return str(address)
    return socket.inet_ntop(socket.AF_INET6, address.packed)
