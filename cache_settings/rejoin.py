"""Nodes that rejoin: a node that comes back never serves values written before it left.

When a node leaves the list (Consul marks it critical, a configuration endpoint stops
listing it) the keys it held are re-hashed to the other nodes and rewritten there. If it
comes back with its memory intact, every key that hashes to it again returns the value
from before it left: measured with three daemons and Consul, 17 of 17 rewritten keys were
stale with pylibmc and 20 of 20 with pymemcache.

So each watcher (:mod:`cache_settings.watch`) has a :class:`Rejoins`, which remembers the
nodes that left its list (:class:`Departures`) and, with the default ``rejoin="flush"``
(``Policy.rejoin``), sends ``flush_all`` to each one that returns *before* the list that
holds it is published (:func:`flush_node`, memcached's protocol.txt, "flush_all"), over
the TLS that the source's traits declare. A node that cannot be flushed is left out of
the list until a later answer, when the flush is tried again: a missing node costs cache
misses, a stale one serves wrong data. The cost is the keys the node held, which were
stale anyway, and one round trip on the watcher thread (0.3-0.4 ms measured on loopback).

``rejoin="keep"`` opts out (a cluster whose nodes always restart empty, or a site that
tolerates stale reads). What remains, documented in docs/refresh.md: each process flushes when
it sees the node return, so keys written to it between two processes' flushes are lost
(cache misses, never stale values); a process started after the node returned has nothing
to compare with; and the clients' own ejection (``dead_timeout``) re-admits a node without
a flush, because neither client offers a hook there.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .attempt import GRACE, Attempt, in_scope, wait_time
from .exceptions import ConfigurationError, SourceError
from .nodes import Node
from .policy import REJOIN_POLICIES
from .tls import TLSConfig

if TYPE_CHECKING:
    from .policy import Policy
    from .sources import Traits

__all__ = [
    "FLUSH_TIMEOUT", "MAX_DEPARTURES", "MAX_FLUSHERS", "REJOIN_POLICIES", "Departures", "Rejoins",
    "flush_node", "flush_nodes",
]  # fmt: skip

logger = logging.getLogger(__name__)

#: Seconds one flush may take at most (less when the policy's deadline is shorter). It
#: runs on the watcher thread, never on the request path.
FLUSH_TIMEOUT = 1.0
#: Departures a watcher remembers (about 180 bytes each); beyond, the oldest is forgotten,
#: and that node, should it ever return, is used without a flush (docs/refresh.md).
MAX_DEPARTURES = 10_000
#: Threads that flush the nodes returning in one answer, together within FLUSH_TIMEOUT:
#: a thousand silent nodes then cost one FLUSH_TIMEOUT, not a thousand.
MAX_FLUSHERS = 32


class Departures:
    """The nodes that left a watcher's list and have not come back flushed.

    A node is known by the address a client connects to (:attr:`Node.location`), not by
    how a source names it: sources (and a chain's members) name one server differently
    (``10.0.0.3:11211`` from Consul, ``mc3.internal`` with IP ``10.0.0.3`` from DNS SRV or
    a configuration endpoint), and the clients hash and connect by location. A server
    that leaves under one name and returns under another is a rejoin; a list that only
    renames servers that stay in it moves nothing away.

    At most :data:`MAX_DEPARTURES` are remembered, the oldest departure forgotten first: a
    fleet whose nodes come back under new addresses (DNS or Consul instances that get a new
    IP at each restart, nodes replaced by autoscaling) would otherwise grow this memory for
    the life of the process, by every node that ever left.
    """

    def __init__(self) -> None:
        # Locations, insertion-ordered: the first key left longest ago.
        self._left: dict[str, None] = {}

    def returning(self, old: Iterable[Node], new: Iterable[Node]) -> set[Node]:
        """Return the nodes of *new*, not in *old*, that left a published list; record nothing."""
        kept = {node.location for node in old}
        return {node for node in new if node.location not in kept and node.location in self._left}

    def update(self, old: Iterable[Node], new: Iterable[Node]) -> set[Node]:
        """Record a published move from *old* to *new*; return the nodes of *new* that left before.

        Only a list that is published counts: a node of *old* missing from an answer that
        was not used never left this process's list, and must not be flushed as a rejoin.
        """
        new = list(new)
        staying = {node.location for node in new}
        for node in old:
            if node.location not in staying:
                self._left.pop(node.location, None)  # left again: now the latest departure
                self._left[node.location] = None
        for _ in range(len(self._left) - MAX_DEPARTURES):
            del self._left[next(iter(self._left))]
        return {node for node in new if node.location in self._left}

    def returned(self, node: Node) -> None:
        """Forget *node*: it is back, flushed (or the policy keeps its data)."""
        self._left.pop(node.location, None)

    def __contains__(self, node: object) -> bool:
        return isinstance(node, Node) and node.location in self._left

    def __len__(self) -> int:
        return len(self._left)


def flush_node(node: Node, *, timeout: float, tls_context: ssl.SSLContext | None = None) -> str:
    """Send ``flush_all`` to *node*; return ``""`` on success, else why it failed.

    The connection, the TLS handshake (when *tls_context* is given) and the reply are
    bounded by *timeout* seconds in total. Never raises for a network failure.
    """
    return _flush(node, Attempt(f"flush_all {node.location}", timeout), tls_context)


def flush_nodes(
    nodes: Sequence[Node], *, timeout: float, contexts: Mapping[Node, ssl.SSLContext] | None = None
) -> dict[Node, tuple[str, float]]:
    """Flush *nodes* in parallel within *timeout* seconds in all; map each to (why not, seconds).

    At most :data:`MAX_FLUSHERS` threads, sharing one :class:`~cache_settings.attempt.Attempt`:
    a node not flushed by its deadline failed ("no answer"). The attempt is cancelled with
    the current scope, so a watcher's ``stop()`` ends the flushes at once. *contexts* gives
    the TLS context of each node that speaks TLS.
    """
    attempt = Attempt("flush_all", timeout)
    pending = list(reversed(nodes))
    results: dict[Node, tuple[str, float]] = {}
    lock = threading.Lock()

    def work() -> None:
        while not attempt.cancelled:
            with lock:
                if not pending:
                    return
                node = pending.pop()
            started = time.monotonic()
            reason = _flush(node, attempt, (contexts or {}).get(node))
            with lock:
                results[node] = (reason, time.monotonic() - started)

    threads = [
        threading.Thread(target=work, name=f"cache_settings flush_all {n}", daemon=True)
        for n in range(min(len(nodes), MAX_FLUSHERS))
    ]
    with in_scope(attempt):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(wait_time(attempt.left() + GRACE))
        if any(thread.is_alive() for thread in threads):
            attempt.cancel()  # shuts every socket down; a name lookup runs on alone
            for thread in threads:
                thread.join(GRACE)
    with lock:
        return {node: results.get(node) or (_no_answer(attempt), timeout) for node in nodes}


def _no_answer(attempt: Attempt) -> str:
    return f"no answer within {attempt.timeout:g} s"


def _flush(node: Node, attempt: Attempt, tls_context: ssl.SSLContext | None) -> str:
    host = node.host if node.tls or not node.ip else node.ip
    try:
        sock = socket.create_connection((host, node.port), timeout=attempt.check())
        attempt.track(sock)
        try:
            if tls_context is not None:
                # Tracked before the handshake: wrap_socket takes the descriptor over.
                tls = tls_context.wrap_socket(
                    sock, server_hostname=node.host, do_handshake_on_connect=False
                )
                attempt.untrack(sock)
                attempt.track(tls)
                sock = tls
                tls.settimeout(attempt.check())
                tls.do_handshake()
            sock.settimeout(attempt.check())
            sock.sendall(b"flush_all\r\n")
            reply = b""
            while not reply.endswith(b"\r\n") and len(reply) < 1024:
                sock.settimeout(attempt.check())
                chunk = sock.recv(1024)
                if not chunk:
                    break
                reply += chunk
        finally:
            attempt.untrack(sock)
            sock.close()
    except SourceError:
        return _no_answer(attempt)
    except (OSError, ValueError) as exc:
        if attempt.cancelled:
            return _no_answer(attempt)
        return f"{type(exc).__name__}: {exc}"
    if reply.startswith((b"CLIENT_ERROR", b"ERROR")):
        # memcached -F (--disable-flush-all) answers "CLIENT_ERROR flush_all not allowed":
        # no later answer changes that, and processes started since use the node.
        return (
            f"it refuses flush_all ({reply[:80]!r}): memcached -F (--disable-flush-all)? "
            'give this entry rejoin="keep", or run the node without -F'
        )
    if reply != b"OK\r\n":
        return f"unexpected reply {reply[:80]!r}"
    return ""


class Rejoins:
    """One watcher's rejoin policy: flush the nodes that return before they are published.

    *url* names the source in log lines; *traits* are the source's declared traits, which
    say which nodes speak TLS (``node_tls`` for all of them, ``node_tls_if_needed`` for
    nodes marked ``Node.tls``). The TLS context is built once, on the first TLS flush.
    """

    def __init__(self, url: str, traits: Traits) -> None:
        self.url = url
        self.departures = Departures()
        self._node_tls = traits.node_tls
        self._tls_if_needed = traits.node_tls_if_needed or TLSConfig()
        self._context: ssl.SSLContext | None = None
        self._warned: set[Node] = set()  # refused nodes already logged at WARNING

    def admit(
        self, current: tuple[Node, ...], nodes: tuple[Node, ...], policy: Policy
    ) -> tuple[Node, ...] | None:
        """Return the part of *nodes* that may replace *current*, or None to keep *current*.

        With ``policy.rejoin == "flush"``, each node of *nodes* that left an earlier list
        is flushed first (all of them in parallel, within ``min(policy.deadline,
        FLUSH_TIMEOUT)`` seconds together, cancelled by the watcher's ``stop()``); one
        that cannot be flushed is left out (a WARNING says why) and tried again with the
        next answer (WARNING once per node, then DEBUG until it is flushed). When that
        leaves fewer than ``policy.min_nodes``, the answer is not used (None, logged).
        Never raises for a network failure.
        """
        if policy.rejoin != "flush":
            return nodes
        returning = self.departures.returning(current, nodes)
        if not returning:
            self.departures.update(current, nodes)  # the caller publishes *nodes*
            return nodes
        timeout = min(policy.deadline, FLUSH_TIMEOUT)
        flushed: list[Node] = []
        refused: set[Node] = set()
        for node, (reason, took) in self._flush_all(
            [node for node in nodes if node in returning], timeout
        ).items():
            if reason:
                refused.add(node)
                level = logging.DEBUG if node in self._warned else logging.WARNING
                self._warned.add(node)
                logger.log(
                    level,
                    "%s: %s returned to the list but could not be flushed (%s); leaving it "
                    "out so that it serves no value from before it left, and trying again "
                    "with the next answer",
                    self.url,
                    node.location,
                    reason,
                )
            else:
                flushed.append(node)
                self._warned.discard(node)
                logger.info(
                    "%s: %s returned to the list; flushed it (%.1f ms) before use",
                    self.url,
                    node.location,
                    took * 1000,
                )
        admitted = tuple(node for node in nodes if node not in refused)
        too_few = policy.too_few(admitted)
        if too_few is not None:
            logger.warning(
                "%s: keeping the last good %d node(s): without the nodes that could not be "
                "flushed the answer has %s",
                self.url,
                len(current),
                too_few.removeprefix("answered "),
            )
            # Nothing recorded: the nodes of *current* missing from this answer are still
            # in use, and flushing them when a later answer lists them would lose their keys.
            return None
        # Recorded only for a list that is published; a node flushed for an answer that is
        # not used takes no keys from this process until a later flush.
        self.departures.update(current, admitted)
        for node in flushed:
            self.departures.returned(node)
        # A refused node that never returns stays a departure; one forgotten there is
        # forgotten here too, so this set stays within MAX_DEPARTURES as well.
        self._warned = {node for node in self._warned if node in self.departures}
        return admitted

    def _flush_all(self, nodes: list[Node], timeout: float) -> dict[Node, tuple[str, float]]:
        tls = [node for node in nodes if self._node_tls is not None or node.tls]
        if tls and self._context is None:
            try:
                self._context = (self._node_tls or self._tls_if_needed).context()
            except ConfigurationError as exc:
                failed = {node: (str(exc), 0.0) for node in tls}
                plain = [node for node in nodes if node not in failed]
                return {**failed, **flush_nodes(plain, timeout=timeout)}
        contexts = {node: self._context for node in tls if self._context is not None}
        return flush_nodes(nodes, timeout=timeout, contexts=contexts)
