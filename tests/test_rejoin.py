"""Rejoining nodes: the departure memory and flush_all against real daemons."""

from __future__ import annotations

import time

from cache_settings.nodes import Node
from cache_settings.rejoin import Departures, flush_node
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer


def _node(address: str) -> Node:
    host, _, port = address.rpartition(":")
    return Node(host, int(port))


def test_departures__a_node_that_left_and_returns_is_reported() -> None:
    a, b, c = Node("10.0.0.1"), Node("10.0.0.2"), Node("10.0.0.3")
    departures = Departures()

    assert departures.update([a, b, c], [a, b]) == set()
    assert departures.update([a, b], [a, b, c]) == {c}
    departures.returned(c)

    assert departures.update([a, b, c], [a, b, c]) == set()
    assert c not in departures


def test_departures__a_node_never_seen_before_is_not_a_rejoin() -> None:
    departures = Departures()

    assert departures.update([Node("10.0.0.1")], [Node("10.0.0.1"), Node("10.0.0.9")]) == set()


def test_flush_node__old_values_are_gone(fresh_memcached_nodes: list[MemcachedServer]) -> None:
    server = fresh_memcached_nodes[0]
    server.call(b"set stale 0 0 3\r\nold\r\n", (b"STORED\r\n",))

    reason = flush_node(_node(server.location), timeout=1.0)

    assert reason == ""
    assert server.keys_count() == 0


def test_flush_node__refused_says_why(faults: Faults) -> None:
    reason = flush_node(_node(faults.refused()), timeout=1.0)

    assert "ConnectionRefusedError" in reason


def test_flush_node__black_hole_costs_at_most_its_timeout(faults: Faults) -> None:
    started = time.monotonic()

    reason = flush_node(_node(faults.blackhole()), timeout=0.3)

    assert reason
    assert time.monotonic() - started < 0.3 + 0.2  # margin: thread scheduling on 2 cores
