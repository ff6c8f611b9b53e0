"""Node flaps behind Consul: a node that rejoins serves no value from before it left.

Issue 14, item 3: three real daemons listed by the Consul stand-in, a refreshing backend
that writes keys, node C turning critical (its keys move to A and B and are rewritten
there) and passing again with its old data.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from cache_settings import memcached, parse_source
from cache_settings.policy import Policy
from cache_settings.watch import Watcher
from tests.helpers import django_cache, wait_until
from tests.servers.consul import ConsulAgent, Instance
from tests.servers.memcached import MemcachedServer

CLIENTS = ["pylibmc", "pymemcache"]
KEYS = [f"key-{n}" for n in range(60)]
REJOIN_LOGGER = "cache_settings.rejoin"
CHANGE = 5.0  # seconds a Consul change may take to reach the watcher (measured: ~0.1 s)


@dataclass
class Cluster:
    """Three daemons registered as one Consul service, one instance each."""

    agent: ConsulAgent
    servers: list[MemcachedServer]
    instances: list[Instance]
    url: str


@pytest.fixture
def cluster(consul_agent: ConsulAgent, fresh_memcached_nodes: list[MemcachedServer]) -> Cluster:
    service = f"mc-{uuid.uuid4().hex[:8]}"
    instances = [
        consul_agent.add(service, server.host, server.port, node=f"n{n}")
        for n, server in enumerate(fresh_memcached_nodes)
    ]
    url = f"consul://{consul_agent.address}/{service}"
    return Cluster(consul_agent, fresh_memcached_nodes, instances, url)


def listed(watcher: Watcher) -> list[str]:
    return sorted(node.location for node in watcher.nodes)


@dataclass
class Flap:
    """What each key read after the flap, and which keys lived on the node that flapped."""

    read: dict[str, Any]
    on_c: list[str]

    @property
    def stale(self) -> list[str]:
        return [key for key in KEYS if self.read[key] == "old"]

    @property
    def missing(self) -> list[str]:
        return [key for key in KEYS if self.read[key] is None]


class Fleet(Protocol):
    """Three daemons, each listed by one instance of a Consul service."""

    agent: ConsulAgent
    servers: list[MemcachedServer]
    instances: list[Instance]


def leave(cluster: Fleet, cache: Any, keys: list[str] = KEYS) -> tuple[list[str], Watcher]:
    """Write every key, drop C in Consul, rewrite every key; return C's keys and the watcher."""
    c = cluster.servers[2]
    for key in keys:
        cache.set(key, "old")
    on_c = [key for key in keys if cache.make_key(key) in c.keys()]
    watcher: Watcher = cache._watcher
    cluster.agent.set_status(cluster.instances[2], "critical")
    assert wait_until(lambda: c.location not in listed(watcher), CHANGE)
    for key in keys:
        cache.set(key, "new")  # C's keys now live on A and B
    return on_c, watcher


def flap(cluster: Cluster, **entry_args: Any) -> Flap:
    """C leaves (:func:`leave`) and comes back; read every key."""
    c = cluster.servers[2]
    with django_cache(dict(memcached(cluster.url, refresh=60, **entry_args))) as cache:
        on_c, watcher = leave(cluster, cache)
        assert {cache.make_key(key) for key in on_c} <= set(c.keys())  # C kept its data
        cluster.agent.set_status(cluster.instances[2], "passing")
        assert wait_until(lambda: c.location in listed(watcher), CHANGE)
        return Flap({key: cache.get(key) for key in KEYS}, on_c)


@pytest.mark.parametrize("client", CLIENTS)
def test_backend__a_node_that_rejoins_serves_no_value_from_before_it_left(
    client: str, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Judged-by 3: 0 stale reads; the cost is the keys C holds when it returns (misses)."""
    caplog.set_level(logging.INFO, REJOIN_LOGGER)

    result = flap(cluster, backend=client)

    assert result.on_c  # the flap moved keys, so a stale read was possible
    assert result.stale == []
    assert result.missing == result.on_c
    assert all(result.read[key] == "new" for key in KEYS if key not in result.on_c)
    c = cluster.servers[2].location
    assert [r for r in caplog.records if f"{c} returned to the list; flushed" in r.getMessage()]


@pytest.mark.parametrize("client", CLIENTS)
def test_backend__rejoin_keep_serves_the_values_from_before_the_node_left(
    client: str, cluster: Cluster
) -> None:
    """The opt-out, and proof that the flap test can fail: every key of C reads its old value."""
    result = flap(cluster, backend=client, rejoin="keep")

    assert result.on_c
    assert result.stale == result.on_c


def test_backend__a_node_that_cannot_be_flushed_stays_out_until_a_flush_succeeds(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, REJOIN_LOGGER)
    c = cluster.servers[2]
    entry = dict(memcached(cluster.url, backend="pymemcache", refresh=60))
    with django_cache(entry) as cache:
        on_c, watcher = leave(cluster, cache)
        c.pause()  # accepts connections, answers nothing: flush_all times out
        try:
            cluster.agent.set_status(cluster.instances[2], "passing")

            def refused() -> bool:
                return any(
                    f"{c.location} returned to the list but could not be flushed (TimeoutError"
                    in r.getMessage()
                    for r in caplog.records
                    if r.levelno == logging.WARNING
                )

            assert wait_until(refused, CHANGE)
            assert c.location not in listed(watcher)
            assert all(cache.get(key) == "new" for key in KEYS)  # A and B serve every key
        finally:
            c.resume()
        cluster.agent.set_status(cluster.instances[2], "passing")  # the next answer

        assert wait_until(lambda: c.location in listed(watcher), CHANGE)
        assert c.keys() == []
        read = {key: cache.get(key) for key in KEYS}
        assert [key for key in KEYS if read[key] is None] == on_c
        assert all(read[key] == "new" for key in KEYS if key not in on_c)


def test_watcher__min_nodes_counts_only_the_nodes_that_could_be_flushed(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer of 2 nodes of which 1 cannot be flushed is below min_nodes=2: kept out."""
    caplog.set_level(logging.WARNING, REJOIN_LOGGER)
    a, b, c = cluster.servers
    watcher = Watcher(parse_source(cluster.url), Policy(refresh=60, min_nodes=2))
    watcher.start()
    assert listed(watcher) == sorted([a.location, b.location, c.location])
    cluster.agent.set_status(cluster.instances[2], "critical")
    assert wait_until(lambda: listed(watcher) == sorted([a.location, b.location]), CHANGE)
    c.pause()
    try:
        cluster.agent.set_status(cluster.instances[2], "passing")
        cluster.agent.remove(cluster.instances[1])  # the answer is A and C; C cannot be flushed

        def kept() -> bool:
            return any("fewer than min_nodes=2" in r.getMessage() for r in caplog.records)

        assert wait_until(kept, CHANGE)
        assert listed(watcher) == sorted([a.location, b.location])
    finally:
        c.resume()
        watcher.stop()
