"""Loopback network faults: a black hole, an endless talker, and a TCP proxy that delays,
trickles, resets or cuts replies.

Each fault is a small real server on ``127.0.0.1:0`` served by daemon threads. The
function-scoped ``faults`` fixture hands out a :class:`Faults` and closes everything it
made at teardown::

    def test_source__black_hole_costs_one_timeout(faults, memcached_node):
        address = faults.blackhole()                          # "127.0.0.1:PORT"
        proxy = faults.proxy(memcached_node.location, cut_after=12)
        proxy.set(blackhole=True)                             # change the mode at run time
        slow = faults.proxy(agent, chunk=1, pause=0.05)       # one byte every 50 ms
        address = faults.endless(b"HTTP/1.1 200 OK\r\n\r\n[")  # then b" " forever
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

__all__ = ["Endless", "Faults", "Proxy", "ProxyMode", "faults"]

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 2.0  # seconds the proxy waits for its target
POLL = 0.02  # seconds between checks of the stop flag
CHUNK_PAUSE = 0.005  # seconds between chunks, so each one leaves in its own TCP segment


@dataclass(frozen=True, slots=True)
class ProxyMode:
    """How a :class:`Proxy` treats traffic; see :meth:`Proxy.set`."""

    delay: float = 0.0
    reset: bool = False
    cut_after: int | None = None
    chunk: int | None = None
    blackhole: bool = False
    pause: float = CHUNK_PAUSE


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``target`` (``"host:port"``) with a switchable fault mode.

    With no target it is a pure black hole: it accepts connections and never answers.
    *port* 0 picks a free port; a given one brings a closed address back to life (a
    source that refused connections, then recovers).
    """

    def __init__(
        self, target: str | None = None, mode: ProxyMode | None = None, *, port: int = 0
    ) -> None:
        self.target = _split(target) if target else None
        self.mode = mode or ProxyMode(blackhole=True)
        self.accepted = 0  # connections accepted so far
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []  # black-holed clients, closed at close()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, port))
        # A large backlog so a burst of connects completes even while the thread is busy.
        self._listener.listen(128)
        self._listener.settimeout(POLL)
        self.host, self.port = HOST, int(self._listener.getsockname()[1])
        self._accepter = threading.Thread(
            target=self._accept_loop, name=f"proxy-{self.port}", daemon=True
        )
        self._accepter.start()

    @property
    def address(self) -> str:
        """Return ``"127.0.0.1:PORT"``, where clients connect."""
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"<Proxy {self.address} -> {self.target} {self.mode}>"

    def set(
        self,
        *,
        delay: float = 0.0,
        reset: bool = False,
        cut_after: int | None = None,
        chunk: int | None = None,
        blackhole: bool = False,
        pause: float = CHUNK_PAUSE,
    ) -> None:
        """Replace the whole mode; arguments left out go back to a transparent proxy.

        ``delay`` seconds before each server-to-client chunk; ``reset`` answers with a
        TCP RST (``SO_LINGER`` 0) on accept or on the next data; ``cut_after`` forwards
        only that many bytes of the server's reply per connection, then closes;
        ``chunk`` forwards the reply that many bytes at a time, ``pause`` seconds apart;
        ``blackhole`` holds new connections open and drops data on existing ones.
        The mode applies to open connections from their next chunk of data on.
        """
        if self.target is None and not blackhole:
            raise ValueError("a proxy without a target can only be a black hole")
        self.mode = ProxyMode(delay, reset, cut_after, chunk, blackhole, pause)

    def close(self) -> None:
        """Stop accepting, end every connection and join the threads."""
        self._stopped.set()
        self._accepter.join(timeout=5)
        self._listener.close()
        with self._lock:
            threads, held = list(self._threads), list(self._held)
        for thread in threads:
            thread.join(timeout=5)
        for sock in held:
            sock.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        for client in _accepted(self._listener, self._stopped):
            self.accepted += 1
            mode = self.mode
            if mode.reset:
                _reset(client)
            elif mode.blackhole or self.target is None:
                with self._lock:
                    self._held.append(client)
            else:
                thread = threading.Thread(
                    target=self._pump, args=(client,), name=f"proxy-{self.port}-conn", daemon=True
                )
                with self._lock:
                    self._threads.append(thread)
                thread.start()

    def _pump(self, client: socket.socket) -> None:
        assert self.target is not None
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError:
            client.close()
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Bounded sends: a client that stops reading ends its connection, not the teardown.
        client.settimeout(CONNECT_TIMEOUT)
        # OSError: a peer went away or stopped reading; the connection just ends.
        with client, upstream, contextlib.suppress(OSError):
            self._forward(client, upstream)

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        readers = [client, upstream]
        replied = 0  # bytes of the server's reply forwarded on this connection
        while readers and not self._stopped.is_set():
            ready, _, _ = select.select(readers, [], [], POLL)
            for sock in ready:
                data = sock.recv(65536)
                mode = self.mode
                if mode.reset:
                    _reset(client)
                    return
                if not data:
                    if sock is upstream:
                        return  # the server closed: close the client too
                    # The client half-closed: pass the FIN on and keep reading replies.
                    upstream.shutdown(socket.SHUT_WR)
                    readers.remove(client)
                    continue
                if mode.blackhole:
                    continue
                if sock is client:
                    upstream.sendall(data)
                    continue
                if mode.cut_after is not None:
                    data = data[: max(mode.cut_after - replied, 0)]
                if mode.delay and self._stopped.wait(mode.delay):
                    return
                step = mode.chunk or len(data) or 1
                for start in range(0, len(data), step):
                    if start and self._stopped.wait(mode.pause):
                        return
                    client.sendall(data[start : start + step])
                replied += len(data)
                if mode.cut_after is not None and replied >= mode.cut_after:
                    return


class Endless:
    """A server on 127.0.0.1 that answers every connection with a head, then filler forever."""

    def __init__(self, head: bytes, fill: bytes) -> None:
        self._head, self._fill = head, fill * max(1, 65536 // max(len(fill), 1))
        self._stopped = threading.Event()
        self._listener = socket.socket()
        self._listener.bind((HOST, 0))
        self._listener.listen(128)
        self._listener.settimeout(POLL)
        self.address = f"{HOST}:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def close(self) -> None:
        """Stop accepting and end every connection."""
        self._stopped.set()
        self._accepter.join(timeout=5)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        for client in _accepted(self._listener, self._stopped):
            thread = threading.Thread(target=self._talk, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _talk(self, client: socket.socket) -> None:
        # OSError: the client went away, which is how every connection ends.
        with client, contextlib.suppress(OSError):
            client.settimeout(CONNECT_TIMEOUT)
            client.recv(65536)
            client.sendall(self._head)
            while not self._stopped.is_set():
                client.sendall(self._fill)


class Faults:
    """Factory of loopback faults for one test; :meth:`close` ends them all."""

    def __init__(self) -> None:
        self._proxies: list[Proxy | Endless] = []

    def blackhole(self) -> str:
        """Return ``"127.0.0.1:PORT"`` of a server that accepts and never sends a byte."""
        proxy = Proxy()
        self._proxies.append(proxy)
        return proxy.address

    def proxy(
        self,
        target: str,
        *,
        delay: float = 0.0,
        reset: bool = False,
        cut_after: int | None = None,
        chunk: int | None = None,
        blackhole: bool = False,
        pause: float = CHUNK_PAUSE,
        port: int = 0,
    ) -> Proxy:
        """Return a running :class:`Proxy` to ``target``; see :meth:`Proxy.set` for the mode.

        *port*: listen there (say, where :meth:`refused` was refused) instead of a free port.
        """
        mode = ProxyMode(delay, reset, cut_after, chunk, blackhole, pause)
        proxy = Proxy(target, mode, port=port)
        self._proxies.append(proxy)
        return proxy

    def endless(self, head: bytes, fill: bytes = b" ") -> str:
        """Return ``"127.0.0.1:PORT"`` of a server that answers *head*, then *fill* forever.

        Each connection reads what the client sends first, then writes as fast as the
        client reads, until the client goes away: a reply that never ends.
        """
        server = Endless(head, fill)
        self._proxies.append(server)
        return server.address

    def refused(self) -> str:
        """Return ``"127.0.0.1:PORT"`` where nothing listens, so connecting is refused."""
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            return f"{HOST}:{probe.getsockname()[1]}"

    def close(self) -> None:
        """Close every fault made so far."""
        for proxy in self._proxies:
            proxy.close()
        self._proxies.clear()


@pytest.fixture
def faults() -> Iterator[Faults]:
    """Loopback faults for one test, all closed at teardown."""
    toolkit = Faults()
    yield toolkit
    toolkit.close()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN (socket(7)).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _accepted(listener: socket.socket, stopped: threading.Event) -> Iterator[socket.socket]:
    """Yield each connection *listener* accepts until *stopped* is set or it is closed."""
    while not stopped.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue  # the listener's timeout: look at *stopped* again
        except OSError:
            return
        yield client
