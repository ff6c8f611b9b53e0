"""Real ``memcached`` daemons on free loopback ports, plain or TLS.

Fixtures: ``memcached_factory`` (session; ``start(*, tls=False) -> MemcachedServer``),
``memcached_nodes`` (session; three plain servers), ``memcached_node`` (session; one more),
and the function-scoped ``fresh_memcached_nodes`` / ``fresh_memcached_node``, which restart
any stopped server and flush all of them before the test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote

import pytest

from tests.servers.tls import TLSFiles

__all__ = [
    "MemcachedFactory",
    "MemcachedServer",
    "free_port",
    "fresh_memcached_node",
    "fresh_memcached_nodes",
    "memcached_factory",
    "memcached_node",
    "memcached_nodes",
]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 5.0  # seconds a daemon gets to accept connections
IO_TIMEOUT = 5.0  # seconds for one raw-socket command


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class MemcachedServer:
    """One ``memcached`` daemon on 127.0.0.1; ``stop()`` then ``start()`` keeps its port."""

    def __init__(
        self,
        *,
        tls_files: TLSFiles | None = None,
        port: int | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.host = HOST
        self.options = options  # more command-line options, such as -F (no flush_all)
        self.port = port or free_port()
        self.tls_files = tls_files
        self._process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def tls(self) -> bool:
        """True when the daemon speaks only TLS."""
        return self.tls_files is not None

    @property
    def location(self) -> str:
        """Return ``"127.0.0.1:PORT"``."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the daemon process is alive."""
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MemcachedServer {self.location}{' tls' if self.tls else ''} {state}>"

    def command(self) -> list[str]:
        """Return the daemon's command line."""
        binary = shutil.which("memcached") or "/usr/bin/memcached"
        # -U 0: no UDP listener (it would need a second free port); -t 1: one worker thread.
        argv = [binary, "-l", self.host, "-p", str(self.port), "-U", "0", "-m", "16", "-t", "1"]
        if os.geteuid() == 0:
            # memcached refuses to run as root without -u; it reads the TLS files first.
            argv += ["-u", "memcache" if _user_exists("memcache") else "nobody"]
        if self.tls_files is not None:
            argv += [
                "-Z",
                "-o",
                f"ssl_chain_cert={self.tls_files.cert},ssl_key={self.tls_files.key}",
            ]
        return argv + list(self.options)

    def pause(self) -> None:
        """Stop the daemon with SIGSTOP: the kernel still accepts connections, nothing answers.

        Returns once every thread of it is stopped: a signal takes effect when the process
        next runs, and a busy machine let a "paused" daemon answer one more command.
        """
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)
            self.paused = True
            deadline = time.monotonic() + 5.0
            while not self._stopped(self._process.pid) and time.monotonic() < deadline:
                time.sleep(0.001)

    @staticmethod
    def _stopped(pid: int) -> bool:
        # proc(5): the state is the field after the ")" that ends the command name.
        try:
            states = [
                Path(f"/proc/{pid}/task/{task}/stat").read_text().rpartition(")")[2].split()[0]
                for task in os.listdir(f"/proc/{pid}/task")
            ]
        except (OSError, IndexError):
            return True  # gone, or no /proc: nothing more to wait for
        return all(state in ("T", "t") for state in states)

    def resume(self) -> None:
        """Let a paused daemon run on (SIGCONT) with its memory intact; a no-op otherwise."""
        if self._process is not None and self.paused:
            self._process.send_signal(signal.SIGCONT)
        self.paused = False

    def start(self) -> MemcachedServer:
        """Start the daemon and wait until it accepts connections; a running one only resumes."""
        if self.running:
            self.resume()
            return self
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self._process.poll() is not None:
                _, err = self._process.communicate()
                self._process = None
                reason = err.decode(errors="replace").strip()
                raise RuntimeError(f"memcached on {self.location} exited at start-up: {reason}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"memcached on {self.location} did not accept connections within "
                        f"{STARTUP_TIMEOUT} seconds"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the daemon and reap it; a no-op when stopped."""
        process, self._process = self._process, None
        self.paused = False
        if process is None:
            return
        # SIGKILL, not SIGTERM: memcached 1.6 spends ~0.7 s joining its threads on SIGTERM,
        # and a test node holds nothing worth a clean shutdown.
        process.kill()
        process.communicate()

    def connect(self, timeout: float = IO_TIMEOUT) -> socket.socket:
        """Return a raw connection to the daemon, wrapped in TLS when it speaks TLS."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.tls_files is None:
            return sock
        context = ssl.create_default_context(cafile=self.tls_files.ca)
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def call(self, request: bytes, terminators: tuple[bytes, ...]) -> bytes:
        """Send one raw command; return the reply up to a terminator or a one-line error."""
        with self.connect() as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(terminators) and not _one_line_error(reply):
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError(f"memcached {self.location} closed after {reply!r}")
                reply += data
            return reply

    def stats(self) -> dict[str, str]:
        """Return the ``stats`` command's answer as ``{"curr_items": "3", ...}``."""
        reply = self.call(b"stats\r\n", (b"END\r\n",))
        return {
            parts[1]: parts[2]
            for parts in (line.split(" ", 2) for line in reply.decode().splitlines())
            if parts[0] == "STAT" and len(parts) == 3
        }

    def flush(self) -> None:
        """Invalidate every item (``flush_all``)."""
        reply = self.call(b"flush_all\r\n", (b"OK\r\n",))
        if reply != b"OK\r\n":
            raise RuntimeError(f"flush_all on {self.location}: {reply!r}")

    def keys(self) -> list[str]:
        """Return the live keys, as stored (with any Django key prefix), sorted.

        ``lru_crawler metadump all`` lists only live items, unlike ``curr_items``,
        which still counts flushed items until they are reclaimed.
        """
        deadline = time.monotonic() + IO_TIMEOUT
        while True:
            reply = self.call(b"lru_crawler metadump all\r\n", (b"END\r\n",))
            # The crawler answers BUSY while its own background crawl runs (often just
            # after start-up); that crawl takes milliseconds on a 16 MB test node.
            if not reply.startswith(b"BUSY") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not reply.endswith(b"END\r\n"):
            raise RuntimeError(f"lru_crawler metadump on {self.location}: {reply!r}")
        # A set: the crawler walks the HOT, WARM and COLD queues of the segmented LRU one after
        # the other, and an item that moves between them meanwhile is listed twice.
        keys = {
            unquote(line.split(" ", 1)[0][len("key=") :])
            for line in reply.decode().splitlines()
            if line.startswith("key=")
        }
        return sorted(keys)

    def keys_count(self) -> int:
        """Return how many live keys the daemon holds."""
        return len(self.keys())


class MemcachedFactory(Protocol):
    """Signature of the ``memcached_factory`` fixture."""

    def __call__(self, *, tls: bool = False) -> MemcachedServer: ...


def _one_line_error(reply: bytes) -> bool:
    # protocol.txt: ERROR, CLIENT_ERROR and SERVER_ERROR lines; the crawler adds BUSY.
    return reply.endswith(b"\r\n") and reply.startswith(
        (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR", b"BUSY")
    )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def memcached_factory(request: pytest.FixtureRequest) -> Iterator[MemcachedFactory]:
    """Start memcached daemons on demand; every one is stopped at the end of the session."""
    servers: list[MemcachedServer] = []

    def start(*, tls: bool = False) -> MemcachedServer:
        files: TLSFiles | None = request.getfixturevalue("tls_files") if tls else None
        for _ in range(3):  # another process may take the free port before memcached binds it
            server = MemcachedServer(tls_files=files)
            servers.append(server)
            try:
                return server.start()
            except RuntimeError as exc:
                error = exc
        raise error

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def memcached_nodes(memcached_factory: MemcachedFactory) -> list[MemcachedServer]:
    """Three plain memcached daemons for the whole session."""
    return [memcached_factory() for _ in range(3)]


@pytest.fixture(scope="session")
def memcached_node(memcached_factory: MemcachedFactory) -> MemcachedServer:
    """One plain memcached daemon for the whole session (not one of ``memcached_nodes``)."""
    return memcached_factory()


def _fresh(servers: list[MemcachedServer]) -> list[MemcachedServer]:
    for server in servers:
        server.start()
        server.flush()
    return servers


@pytest.fixture
def fresh_memcached_nodes(memcached_nodes: list[MemcachedServer]) -> list[MemcachedServer]:
    """The three session daemons, each running and empty when the test starts."""
    return _fresh(memcached_nodes)


@pytest.fixture
def fresh_memcached_node(memcached_node: MemcachedServer) -> MemcachedServer:
    """The single session daemon, running and empty when the test starts."""
    return _fresh([memcached_node])[0]
