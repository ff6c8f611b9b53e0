"""Rejoin flushes are bounded as a whole: many silent returning nodes, and stop() mid-flush."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from cache_settings import Node, parse_source
from cache_settings.policy import Policy
from cache_settings.rejoin import FLUSH_TIMEOUT, Rejoins
from cache_settings.watch import Watcher
from tests.helpers import LATE, wait_until
from tests.servers.consul import ConsulAgent
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

SILENT = 6  # returning nodes that accept and never answer


def _node(address: str) -> Node:
    host, _, port = address.rpartition(":")
    return Node(host, int(port))


def test_rejoins__silent_returning_nodes_cost_one_flush_timeout_together(
    faults: Faults, fresh_memcached_node: MemcachedServer
) -> None:
    """Six black-holed nodes that return were flushed one after the other: 6.0 s on the
    watcher's thread for one answer (a thousand would hold it for a thousand seconds)."""
    live = _node(fresh_memcached_node.location)
    silent = tuple(_node(faults.blackhole()) for _ in range(SILENT))
    rejoins = Rejoins("memcached://test", parse_source("memcached://10.0.0.1").traits)
    assert rejoins.admit((live, *silent), (live,), Policy()) == (live,)

    started = time.monotonic()
    admitted = rejoins.admit((live,), (live, *silent), Policy())
    took = time.monotonic() - started

    assert admitted == (live,)
    assert took < FLUSH_TIMEOUT + LATE, took
    assert all(node in rejoins.departures for node in silent)  # still owed their flush


def test_watcher__stop_ends_a_rejoin_flush_in_flight(
    consul_agent: ConsulAgent, faults: Faults, fresh_memcached_node: MemcachedServer
) -> None:
    """stop() waited for the flushes of returning nodes that never answer: stop(3) gave
    False with six of them (one second each, on the watcher's thread)."""
    service = f"mc-{uuid.uuid4().hex[:8]}"
    live = consul_agent.add(
        service, fresh_memcached_node.host, fresh_memcached_node.port, node="live"
    )
    silent = []
    for n in range(SILENT):
        host, _, port = faults.blackhole().rpartition(":")
        silent.append(consul_agent.add(service, host, int(port), node=f"silent{n}"))
    source = parse_source(f"consul://{consul_agent.address}/{service}")
    watcher = Watcher(source, Policy(refresh=0.05, deadline=10.0))
    watcher.start()
    try:
        assert wait_until(lambda: len(watcher.nodes) == SILENT + 1, 5.0)
        for instance in silent:
            consul_agent.set_status(instance, "critical")
        assert wait_until(lambda: len(watcher.nodes) == 1, 5.0)
        for instance in silent:
            consul_agent.set_status(instance, "passing")
        time.sleep(0.5)  # the watcher is flushing the returning nodes
        assert live

        def flushing() -> list[str]:
            return [t.name for t in threading.enumerate() if "flush" in t.name]

        started = time.monotonic()
        stopped = watcher.stop(timeout=3.0)
        took = time.monotonic() - started
    finally:
        watcher.stop()

    assert stopped
    assert took < 0.5, took
    assert wait_until(lambda: not flushing(), 1.0), flushing()


def test_rejoins__a_node_that_refuses_flush_all_is_named_with_the_fix(
    fresh_memcached_node: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon run with -F (--disable-flush-all) answers CLIENT_ERROR: it stays out of this
    process's list for good, while processes started since use it. The WARNING quoted the
    reply only, and said the flush would be tried again as if it might succeed."""
    server = MemcachedServer(options=("-F",)).start()
    try:
        live, refusing = _node(fresh_memcached_node.location), _node(server.location)
        rejoins = Rejoins("memcached://test", parse_source("memcached://10.0.0.1").traits)
        assert rejoins.admit((live, refusing), (live,), Policy()) == (live,)

        assert rejoins.admit((live,), (live, refusing), Policy()) == (live,)
    finally:
        server.stop()

    message = next(r.getMessage() for r in caplog.records if refusing.location in r.getMessage())
    assert "refuses flush_all" in message
    assert "-F" in message
    assert 'rejoin="keep"' in message
