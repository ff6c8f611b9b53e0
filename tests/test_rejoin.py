"""Rejoining nodes: the departure memory and flush_all against real daemons."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from cache_settings import ConfigurationError, memcached, parse_source
from cache_settings.nodes import Node
from cache_settings.policy import Policy
from cache_settings.rejoin import MAX_DEPARTURES, Departures, Rejoins, flush_node
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedFactory, MemcachedServer
from tests.servers.tls import TLSFiles


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


def test_rejoins__nodes_replaced_for_good__memory_stays_bounded() -> None:
    """A fleet whose nodes come back under new addresses (a DNS or Consul service whose pods
    get a new IP at each restart) does not grow a watcher's memory for the process's life."""
    source = parse_source("memcached://10.0.0.1:11211")
    rejoins = Rejoins(source.url, source.traits)
    rounds = MAX_DEPARTURES // 10 + 100
    current: tuple[Node, ...] = ()
    for generation in range(rounds + 1):
        # Ten new nodes replace the ten in use, none of which ever comes back.
        fresh = tuple(Node(f"10.{generation >> 8}.{generation & 255}.{i}") for i in range(10))
        admitted = rejoins.admit(current, fresh, Policy())
        assert admitted == fresh
        current = fresh

    assert len(rejoins.departures) == MAX_DEPARTURES
    latest_to_leave = Node(f"10.{(rounds - 1) >> 8}.{(rounds - 1) & 255}.0")
    assert latest_to_leave in rejoins.departures  # the most recent departures are kept
    assert Node("10.0.0.0") not in rejoins.departures  # the oldest forgotten first


def test_departures__a_node_that_leaves_again_is_the_latest_departure() -> None:
    """Forgetting goes by the last time a node left, not the first."""
    departures = Departures()
    first = Node("10.0.0.1")
    departures.update([first], [])
    departures.update([], [first])  # back, but never flushed (refused): still a departure
    others = [Node(f"10.1.{n >> 8}.{n & 255}") for n in range(MAX_DEPARTURES - 1)]
    departures.update([*others, first], [])  # first leaves again, after the others

    departures.update([Node("10.2.0.1")], [])  # one more: the oldest is forgotten

    assert first in departures
    assert others[0] not in departures
    assert len(departures) == MAX_DEPARTURES


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


def test_rejoins__a_tls_node_is_flushed_over_the_tls_its_source_declares(
    memcached_factory: MemcachedFactory, tls_files: TLSFiles
) -> None:
    server = memcached_factory(tls=True)
    try:
        server.call(b"set stale 0 0 3\r\nold\r\n", (b"STORED\r\n",))
        declared = parse_source(f"pymemcache://{server.location}?tls=true&ca={tls_files.ca}")
        undeclared = parse_source(f"pymemcache://{server.location}")
        node, plain = declared.resolve(1.0)[0], undeclared.resolve(1.0)[0]
        rejoins = Rejoins(declared.url, declared.traits)
        without_tls = Rejoins(undeclared.url, undeclared.traits)
        assert rejoins.admit((node,), (), Policy()) == ()  # the node leaves
        assert without_tls.admit((plain,), (), Policy()) == ()

        # Spoken in plain text, flush_all never reaches a TLS-only daemon: the node stays out.
        assert without_tls.admit((), (plain,), Policy()) is None
        assert server.keys() == ["stale"]
        assert rejoins.admit((), (node,), Policy()) == (node,)
        assert server.keys() == []
    finally:
        server.stop()


def test_rejoins__keep_publishes_a_returning_node_without_a_flush(
    fresh_memcached_node: MemcachedServer,
) -> None:
    server = fresh_memcached_node
    server.call(b"set stale 0 0 3\r\nold\r\n", (b"STORED\r\n",))
    node = _node(server.location)
    rejoins = Rejoins("memcached://test", parse_source("memcached://10.0.0.1").traits)
    keep = Policy(rejoin="keep")

    assert rejoins.admit((node,), (), keep) == ()
    assert rejoins.admit((), (node,), keep) == (node,)
    assert server.keys() == ["stale"]


def test_rejoins__an_unflushable_node_is_left_out_with_one_warning_until_flushed(
    faults: Faults, fresh_memcached_node: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "cache_settings.rejoin")
    live, down = _node(fresh_memcached_node.location), _node(faults.refused())
    rejoins = Rejoins("memcached://test", parse_source("memcached://10.0.0.1").traits)
    assert rejoins.admit((live, down), (live,), Policy()) == (live,)

    for _ in range(3):  # three answers list it again; it refuses every flush
        assert rejoins.admit((live,), (live, down), Policy()) == (live,)

    about = [r for r in caplog.records if down.location in r.getMessage()]
    assert [r.levelname for r in about] == ["WARNING", "DEBUG", "DEBUG"]
    assert "could not be flushed (ConnectionRefusedError" in about[0].getMessage()
    assert down in rejoins.departures


def test_rejoins__a_node_still_in_use_is_not_flushed_after_an_unused_answer(
    faults: Faults, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    """An answer refused for too few nodes is not a departure of the nodes it lacked.

    [a, b] in use; an answer [a, down] (down returning, unflushable) leaves one node, below
    min_nodes=2, so [a, b] stays in use and b takes keys. When a later answer adds c, b
    is no rejoin: flushing it would drop every key it holds, in every process.
    """
    first, second, third = fresh_memcached_nodes
    a, b, c = (_node(server.location) for server in (first, second, third))
    down = _node(faults.refused())
    rejoins = Rejoins("memcached://test", parse_source("memcached://10.0.0.1").traits)
    policy = Policy(min_nodes=2)
    assert rejoins.admit((a, b, down), (a, b), policy) == (a, b)  # down left
    assert rejoins.admit((a, b), (a, down), policy) is None  # not used: [a, b] stays

    second.call(b"set written-since 0 0 3\r\nnew\r\n", (b"STORED\r\n",))
    assert rejoins.admit((a, b), (a, b, c), policy) == (a, b, c)

    assert second.keys() == ["written-since"]
    assert b not in rejoins.departures
    assert down in rejoins.departures  # still owed its flush


@pytest.mark.parametrize("value", ["drop", "", None, True])
def test_policy__rejoin_is_flush_or_keep(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"rejoin must be 'flush' .* or 'keep', not"):
        Policy(rejoin=value)
    with pytest.raises(ConfigurationError, match=r"^mysite: OPTIONS rejoin must be 'flush'"):
        Policy.from_options({"rejoin": value}, where="mysite")


def test_memcached__rejoin_keep_is_plain_data_in_options() -> None:
    entry = memcached("memcached://10.0.0.1:11211", refresh=30, rejoin="keep")
    default = memcached("memcached://10.0.0.1:11211", refresh=30)

    options = dict(entry["OPTIONS"])
    assert options["rejoin"] == "keep"
    assert "rejoin" not in default["OPTIONS"]  # the default is not written
    assert Policy.from_options(options, where="test").rejoin == "keep"
    assert "rejoin" not in options  # removed before the client sees OPTIONS
