"""Nodes that rejoin: a node that comes back never serves values written before it left.

When a node leaves the list (Consul marks it critical, a configuration endpoint stops
listing it) the keys it held are re-hashed to the other nodes and rewritten there. If it
comes back with its memory intact, every key that hashes to it again returns the value
from before it left: measured with three daemons and Consul, 17 of 17 rewritten keys were
stale with pylibmc and 20 of 20 with pymemcache.

So a watcher remembers the nodes that left its list (:class:`Departures`) and, with the
default ``rejoin="flush"``, sends ``flush_all`` to each one that returns *before* the list
that holds it is published (:func:`flush_node`, memcached's protocol.txt, "flush_all").
A node that cannot be flushed is left out of the list until a later answer, when the flush
is tried again: a missing node costs cache misses, a stale one serves wrong data. The cost
is the keys the node held, which were stale anyway, and one round trip.

``rejoin="keep"`` opts out (a cluster whose nodes always restart empty, or a site that
tolerates stale reads). What remains, documented in the README: each process flushes when
it sees the node return, so keys written to it between two processes' flushes are lost
(cache misses, never stale values); a process started after the node returned has nothing
to compare with; and the clients' own ejection (``dead_timeout``) re-admits a node without
a flush, because neither client offers a hook there.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Iterable

from .nodes import Node

__all__ = ["REJOIN_POLICIES", "Departures", "flush_node"]

logger = logging.getLogger(__name__)

REJOIN_POLICIES = ("flush", "keep")


class Departures:
    """The nodes that left a watcher's list and have not come back flushed."""

    def __init__(self) -> None:
        self._left: set[Node] = set()

    def update(self, old: Iterable[Node], new: Iterable[Node]) -> set[Node]:
        """Record a move from *old* to *new*; return the nodes of *new* that left before."""
        old_set, new_set = set(old), set(new)
        self._left |= old_set - new_set
        return new_set & self._left

    def returned(self, node: Node) -> None:
        """Forget *node*: it is back, flushed (or the policy keeps its data)."""
        self._left.discard(node)

    def __contains__(self, node: object) -> bool:
        return node in self._left


def flush_node(node: Node, *, timeout: float, tls_context: ssl.SSLContext | None = None) -> str:
    """Send ``flush_all`` to *node*; return ``""`` on success, else why it failed.

    The connection, the TLS handshake (when *tls_context* is given) and the reply are
    bounded by *timeout* seconds in total. Never raises for a network failure.
    """
    deadline = time.monotonic() + timeout
    host = node.host if node.tls or not node.ip else node.ip
    try:
        with contextlib.closing(socket.create_connection((host, node.port), timeout)) as raw:
            sock: socket.socket = raw
            if tls_context is not None:
                sock = tls_context.wrap_socket(raw, server_hostname=node.host)
            with contextlib.closing(sock):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(b"flush_all\r\n")
                reply = b""
                while not reply.endswith(b"\r\n") and len(reply) < 1024:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    chunk = sock.recv(1024)
                    if not chunk:
                        break
                    reply += chunk
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if reply != b"OK\r\n":
        return f"unexpected reply {reply[:80]!r}"
    return ""
