"""Rejoins by address: one server named two ways by two sources is one node.

A chain of Consul (which names a node by its address, ``127.0.0.1:PORT``) and a rendered
file in the snapshot format (which names it ``mcN.internal`` with its IP, as DNS SRV or a
configuration endpoint does): both lists give the clients the same ``IP:PORT`` locations,
as docs/sources.md asks of a chain ("all IPs"), so a node is the same server whichever
member lists it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cache_settings import memcached
from cache_settings.nodes import Node
from cache_settings.rejoin import Departures
from cache_settings.snapshot import write_snapshot
from cache_settings.watch import Watcher
from tests.helpers import django_cache, wait_until
from tests.servers.consul import ConsulAgent, Instance
from tests.servers.memcached import MemcachedServer
from tests.test_rejoin_flap import leave, listed

CLIENTS = ["pylibmc", "pymemcache"]
KEYS = [f"key-{n}" for n in range(90)]
CHANGE = 5.0  # seconds a change may take to reach a watcher polling every 0.2 s


def test_departures__a_server_renamed_at_the_same_address_is_one_node() -> None:
    by_consul = Node("10.0.0.3", 11211)
    by_dns = Node("mc3.internal", 11211, "10.0.0.3")
    departures = Departures()

    departures.update([Node("10.0.0.1"), by_consul], [Node("mc1.internal", ip="10.0.0.1")])

    assert departures.returning([], [by_dns]) == {by_dns}
    assert by_dns in departures
    assert Node("10.0.0.1") not in departures  # renamed, never gone
    assert Node("mc1.internal", ip="10.0.0.1") not in departures


@dataclass
class Chain:
    """Three daemons listed by Consul and by a rendered file behind it."""

    agent: ConsulAgent
    servers: list[MemcachedServer]
    instances: list[Instance]
    entry: dict[str, Any]

    def cache(self) -> Any:
        return django_cache(self.entry)


@pytest.fixture(params=CLIENTS)
def chain(
    request: pytest.FixtureRequest,
    consul_agent: ConsulAgent,
    fresh_memcached_nodes: list[MemcachedServer],
    tmp_path: Path,
) -> Chain:
    service = f"mc-{uuid.uuid4().hex[:8]}"
    instances = [
        consul_agent.add(service, server.host, server.port, node=f"n{n}")
        for n, server in enumerate(fresh_memcached_nodes)
    ]
    rendered = tmp_path / "rendered.json"
    named = [Node(f"mc{n}.internal", s.port, s.host) for n, s in enumerate(fresh_memcached_nodes)]
    assert write_snapshot(rendered, "memcached://rendered", named)
    urls = [f"consul://{consul_agent.address}/{service}", f"file://{rendered}"]
    entry = dict(memcached(urls, backend=request.param, refresh=0.2))
    return Chain(consul_agent, fresh_memcached_nodes, instances, entry)


def test_backend__a_node_that_returns_under_another_name_serves_no_value_from_before_it_left(
    chain: Chain,
) -> None:
    """C leaves Consul's list, Consul fails, the file lists C (by name) again: C is flushed."""
    c = chain.servers[2]
    with chain.cache() as cache:
        on_c, watcher = leave(chain, cache, KEYS)
        for instance in chain.instances[:2]:
            chain.agent.set_status(instance, "critical")  # Consul: no node, the file answers

        assert wait_until(lambda: c.location in listed(watcher), CHANGE)
        read = {key: cache.get(key) for key in KEYS}

    assert on_c  # the flap moved keys, so a stale read was possible
    assert [key for key in KEYS if read[key] == "old"] == []
    assert [key for key in KEYS if read[key] is None] == on_c


def test_backend__a_chain_back_on_a_member_that_names_the_same_servers_otherwise__flushes_none(
    chain: Chain,
) -> None:
    """Consul fails, the file names the same three servers otherwise, Consul recovers: every key
    written meanwhile is still read (no server left the list, so none is flushed)."""
    with chain.cache() as cache:
        cache.get("first-use")  # starts the watcher
        watcher: Watcher = cache._watcher
        consul = watcher.answered_by
        for instance in chain.instances:
            chain.agent.set_status(instance, "critical")
        assert wait_until(lambda: watcher.answered_by != consul, CHANGE)
        for key in KEYS:
            cache.set(key, "written")
        for instance in chain.instances:
            chain.agent.set_status(instance, "passing")

        assert wait_until(lambda: watcher.answered_by == consul, CHANGE)
        read = {key: cache.get(key) for key in KEYS}

    assert [key for key in KEYS if read[key] != "written"] == []
    assert all(server.keys() for server in chain.servers)
