"""A scripted DNS responder on 127.0.0.1 (UDP and TCP, one port) for replies dnsmasq never sends.

A test gives it a *script*: ``script(query, tcp)`` returns what the responder sends back, as
a list of wire messages (each one UDP datagram, or each one length-prefixed TCP message);
``[]`` sends nothing (a TCP connection is then closed at once). Messages are built with
dnspython (``dns.message.make_response``, ``dns.rrset.from_text``), or are raw bytes.

Fixture: ``scripted_dns`` (function), a factory that starts a :class:`ScriptedDNS` for a
script and stops it after the test.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import dns.message
import dns.rrset
import pytest

__all__ = ["Script", "ScriptedDNS", "answer", "scripted_dns"]

HOST = "127.0.0.1"
Script = Callable[[dns.message.Message, bool], list[bytes]]


def answer(query: dns.message.Message, *records: str, rcode: int = 0) -> bytes:
    """Return the wire reply to *query* holding *records* (``"NAME TTL IN TYPE DATA"``)."""
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for text in records:
        name, ttl, rdclass, rdtype, data = text.split(None, 4)
        reply.answer.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, data))
    return reply.to_wire(max_size=65535)


class ScriptedDNS:
    """Answers every query on UDP and TCP with what its script says; ``address`` is IP:PORT."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.queries: list[tuple[str, str, bool]] = []  # (name, type, over TCP)
        self._udp, self._tcp = _bound_pair()
        self.port = int(self._udp.getsockname()[1])
        self._tcp.listen()
        for sock in (self._udp, self._tcp):
            sock.settimeout(0.05)
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=serve, name=f"dns-scripted-{kind}", daemon=True)
            for kind, serve in (("udp", self._serve_udp), ("tcp", self._serve_tcp))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> str:
        """Return ``"127.0.0.1:PORT"`` as a ``nameserver=`` option takes it."""
        return f"{HOST}:{self.port}"

    def _replies(self, wire: bytes, tcp: bool) -> list[bytes]:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        self.queries.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype), tcp))
        return self.script(query, tcp)

    def _serve_udp(self) -> None:
        while not self._stopped.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            for reply in self._replies(wire, tcp=False):
                self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    (size,) = struct.unpack("!H", _read(conn, 2))
                    for reply in self._replies(_read(conn, size), tcp=True):
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:  # the client gave up: serve the next one
                    continue

    def close(self) -> None:
        """Stop both threads and close the sockets."""
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()


def _bound_pair() -> tuple[socket.socket, socket.socket]:
    """Return a UDP and a TCP socket bound to one port of 127.0.0.1.

    The port the kernel picks for UDP may be taken for TCP (another test's listener), so
    a pair that does not bind is closed and another port is tried.
    """
    while True:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((HOST, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind((HOST, udp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            continue
        return udp, tcp


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data


@pytest.fixture
def scripted_dns() -> Iterator[Callable[[Script], ScriptedDNS]]:
    """Return a factory of :class:`ScriptedDNS` responders, all stopped after the test."""
    started: list[ScriptedDNS] = []

    def start(script: Script) -> ScriptedDNS:
        started.append(ScriptedDNS(script))
        return started[-1]

    yield start
    for server in started:
        server.close()
