"""A stand-in ElastiCache configuration endpoint: ``config get cluster`` over real TCP.

It follows the AWS guide "Adding Auto Discovery to your client library": engines from
1.4.14 answer ``config get cluster``; older ones (``legacy = True``, engine 1.4.5) answer
``ERROR`` to it and serve the same data under ``get AmazonElastiCache:cluster``.  With
``plain = True`` it answers as stock memcached 1.6 does (checked against memcached
1.6.18): ``ERROR`` to ``config get cluster`` and ``END`` (a miss) to the legacy get.
"""

from __future__ import annotations

import itertools
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

__all__ = ["ConfigEndpointServer", "cluster_reply", "config_endpoint"]


def cluster_reply(
    nodes: Sequence[tuple[str, str, int]], version: int = 1, *, legacy: bool = False
) -> bytes:
    """Return the reply AWS sends for *nodes* (``(host, ip, port)``; ip may be ``""``).

    ``<len>`` counts the version line and the node line with their ``\\n``; the data block
    is then closed by ``\\r\\n`` and ``END\\r\\n``, as for any memcached ``VALUE``.
    """
    data = f"{version}\n{' '.join(f'{h}|{ip}|{port}' for h, ip, port in nodes)}\n".encode()
    head = b"VALUE AmazonElastiCache:cluster 0" if legacy else b"CONFIG cluster 0"
    return b"%s %d\r\n%s\r\nEND\r\n" % (head, len(data), data)


class ConfigEndpointServer:
    """A threaded TCP server on ``127.0.0.1:0`` that plays an ElastiCache configuration endpoint.

    Attributes set by tests: ``legacy`` (engine 1.4.5), ``plain`` (stock memcached),
    ``chunk_sizes`` (send every reply a few bytes at a time, cycling through the sizes),
    and, through :meth:`set_nodes` / :meth:`set_raw`, what ``config get cluster`` returns.
    ``commands`` records every command line received (ended by ``\r\n`` or a bare ``\n``).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.legacy = False
        self.plain = False
        self.chunk_sizes: Sequence[int] | None = None
        self.commands: list[bytes] = []
        self.connections = 0
        self.ssl_context = ssl_context
        self._raw: bytes | None = None
        self._close_after_raw = False
        self._nodes: list[tuple[str, str, int]] = []
        self._version = 1
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = False
            block_on_close = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients that hang up mid-reply are part of the tests

        self._server = Server(("127.0.0.1", 0), Handler)
        host, port = self._server.socket.getsockname()[:2]
        self.host: str = host
        self.port: int = port
        self.address = f"{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def engine_version(self) -> str:
        """The engine version ``version`` reports."""
        if self.plain:
            return "1.6.18"
        return "1.4.5" if self.legacy else "1.6.22"

    def set_nodes(self, nodes: Sequence[tuple[str, str, int]], version: int = 1) -> None:
        """Serve *nodes* (``(host, ip, port)``) under config *version*; drop any raw reply."""
        with self._lock:
            self._nodes, self._version, self._raw = list(nodes), version, None

    def set_raw(self, reply: bytes, *, close: bool = False) -> None:
        """Answer the cluster command with exactly *reply*; with *close*, hang up after it."""
        with self._lock:
            self._raw, self._close_after_raw = reply, close

    def reply(self, *, legacy: bool = False) -> bytes:
        """Return the bytes the cluster command gets now."""
        with self._lock:
            if self._raw is not None:
                return self._raw
            return cluster_reply(self._nodes, self._version, legacy=legacy)

    def close(self) -> None:
        """Stop serving and wait for every connection thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> ConfigEndpointServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one connection -------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections += 1
        if self.ssl_context is not None:
            try:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                return  # the client refused our certificate
        try:
            self._commands(conn)
        except OSError:
            pass
        finally:
            # socketserver closes the plain socket; a TLS wrapper took it over, so close that.
            if isinstance(conn, ssl.SSLSocket):
                conn.close()

    def _commands(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            # memcached ends a command at "\n" and drops one "\r" before it (proto_text.c),
            # so "version\n", as django-elasticache sends it, is a command too.
            while b"\n" not in buffer:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffer += chunk
            line, _, buffer = buffer.partition(b"\n")
            line = line.removesuffix(b"\r")
            with self._lock:
                self.commands.append(line)
            reply, close = self._answer(line)
            self._send(conn, reply)
            if close:
                return

    def _answer(self, line: bytes) -> tuple[bytes, bool]:
        if line == b"version":
            return f"VERSION {self.engine_version}\r\n".encode(), False
        if line == b"config get cluster":
            if self.plain or self.legacy:
                return b"ERROR\r\n", False
            return self.reply(), self._raw is not None and self._close_after_raw
        if line == b"get AmazonElastiCache:cluster":
            if self.plain:
                return b"END\r\n", False
            return self.reply(legacy=True), self._raw is not None and self._close_after_raw
        return b"ERROR\r\n", False

    def _send(self, conn: socket.socket, data: bytes) -> None:
        if not self.chunk_sizes:
            conn.sendall(data)
            return
        sizes = itertools.cycle(self.chunk_sizes)
        offset = 0
        while offset < len(data):
            size = next(sizes)
            conn.sendall(data[offset : offset + size])
            offset += size
            time.sleep(0.0005)  # let each piece leave as its own TCP segment


@pytest.fixture
def config_endpoint() -> Iterator[ConfigEndpointServer]:
    """A plain-TCP stand-in configuration endpoint, listing no nodes until told."""
    with ConfigEndpointServer() as server:
        yield server
