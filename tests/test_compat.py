"""Drop-in backends: the old packages' README settings, with only BACKEND changed.

Each CACHES entry below is written as django-elasticache's or django-memcached-consul's
README shows it, with stand-in addresses; keys go through Django's CacheHandler and are
found on the real memcached daemons.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import CacheHandler, InvalidCacheBackendError
from django.test import override_settings

from cache_settings import ConfigurationError, ResolutionError
from cache_settings.compat import SNAPSHOT_NAME, SettingsError
from cache_settings.snapshot import load_snapshot
from cache_settings.watch import Watcher
from cache_settings.watchers import stop_all, watchers
from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.consul import ConsulAgent
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

ELASTICACHE = "cache_settings.compat.ElastiCache"
CONSUL = "cache_settings.compat.ConsulMemcachedCache"
KEYS = [f"key-{n}" for n in range(50)]


def store_keys(entry: dict[str, Any], extra: dict[str, Any] | None = None) -> list[str]:
    """Set the 50 keys through Django's CacheHandler; return them as stored (":1:key-0")."""
    handler = CacheHandler({"default": entry, **(extra or {})})
    try:
        cache = handler["default"]
        cache.set_many({key: key.upper() for key in KEYS})
        assert cache.get_many(KEYS) == {key: key.upper() for key in KEYS}
        return sorted(cache.make_key(key) for key in KEYS)
    finally:
        handler.close_all()


def live_keys(node: MemcachedServer) -> list[str]:
    """The node's keys, sorted, each once.

    One run of this file saw ``lru_crawler metadump`` list a key twice on a daemon started
    moments before (an item moved between LRU queues mid-crawl, presumably); every key
    must still be on the node, and on no other.
    """
    return sorted(set(node.keys()))


def keys_on(nodes: list[MemcachedServer]) -> dict[str, list[str]]:
    return {node.location: live_keys(node) for node in nodes}


def watcher_of(url_start: str) -> Watcher:
    (found,) = [w for w in watchers() if w.url.startswith(url_start)]
    return found


# --- django-elasticache ------------------------------------------------------------------


def test_elasticache__readme_settings_keys_land_on_cluster_nodes(
    config_endpoint: ConfigEndpointServer, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    config_endpoint.set_nodes(
        [
            (f"node{n}.cache.local", node.host, node.port)
            for n, node in enumerate(fresh_memcached_nodes)
        ]
    )
    entry = {
        "BACKEND": ELASTICACHE,  # was django_elasticache.memcached.ElastiCache
        "LOCATION": config_endpoint.address,
        "OPTIONS": {"IGNORE_CLUSTER_ERRORS": False},
    }

    stored = store_keys(entry)

    found = keys_on(fresh_memcached_nodes)
    assert sorted(key for keys in found.values() for key in keys) == stored  # each on one node
    assert all(found.values()), f"ketama should spread 50 keys over 3 nodes: {found}"


def test_elasticache__no_options_and_legacy_engine_work(
    config_endpoint: ConfigEndpointServer, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    """The README's shortest entry, against an engine older than 1.4.14."""
    config_endpoint.legacy = True
    node = fresh_memcached_nodes[1]
    config_endpoint.set_nodes([("n.cache.local", node.host, node.port)])

    stored = store_keys({"BACKEND": ELASTICACHE, "LOCATION": config_endpoint.address})

    assert live_keys(node) == stored


def test_elasticache__ignore_cluster_errors_uses_plain_memcached_as_only_node(
    fresh_memcached_node: MemcachedServer,
) -> None:
    entry = {
        "BACKEND": ELASTICACHE,
        "LOCATION": fresh_memcached_node.location,
        "OPTIONS": {"IGNORE_CLUSTER_ERRORS": True},
    }

    stored = store_keys(entry)

    assert live_keys(fresh_memcached_node) == stored


def test_elasticache__plain_memcached_without_ignore_fails_at_first_use(
    fresh_memcached_node: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Building the backend (settings, system checks) is fine; the first use says why not."""
    handler = CacheHandler(
        {"default": {"BACKEND": ELASTICACHE, "LOCATION": fresh_memcached_node.location}}
    )
    try:
        cache = handler["default"]
        started = time.monotonic()
        with pytest.raises(ResolutionError, match="no memcached nodes yet") as raised:
            cache.get("key")
        first = time.monotonic() - started
        # The error carries each attempt's cause, not only a pointer to the log.
        assert "not an ElastiCache configuration endpoint" in str(raised.value)
        started = time.monotonic()
        with pytest.raises(ResolutionError):
            cache.set("key", 1)
        again = time.monotonic() - started
    finally:
        handler.close_all()

    assert first < 2.0, "three quick ERROR answers, well inside the 5 s deadline"
    assert again < 0.1, "later operations fail at once instead of waiting again"
    assert "not an ElastiCache configuration endpoint" in caplog.text


def test_elasticache__black_holed_endpoint_fails_within_the_deadline(faults: Faults) -> None:
    handler = CacheHandler(
        {
            "default": {
                "BACKEND": ELASTICACHE,
                "LOCATION": faults.blackhole(),
                "OPTIONS": {"DEADLINE": 0.5},
            }
        }
    )
    try:
        started = time.monotonic()
        with pytest.raises(ResolutionError, match=r"up to 0\.5 s"):
            handler["default"].get("key")
        elapsed = time.monotonic() - started
    finally:
        handler.close_all()

    assert 0.4 < elapsed < 1.5  # the deadline, plus 1 s of margin for a loaded machine


def test_elasticache__node_change_is_followed(
    config_endpoint: ConfigEndpointServer, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    first, second, third = fresh_memcached_nodes
    config_endpoint.set_nodes([("a", first.host, first.port), ("b", second.host, second.port)], 1)
    handler = CacheHandler(
        {
            "default": {
                "BACKEND": ELASTICACHE,
                "LOCATION": config_endpoint.address,
                "OPTIONS": {"IGNORE_CLUSTER_ERRORS": False, "REFRESH": 0.2},
            }
        }
    )
    try:
        cache = handler["default"]
        assert config_endpoint.connections == 0  # Django's system checks build every cache
        cache.set("before", 1)
        watcher = watcher_of(f"elasticache://{config_endpoint.address}")
        config_endpoint.set_nodes([("c", third.host, third.port)], 2)
        assert watcher.wait_for_generation(watcher.generation + 1, timeout=5.0)
        cache.set_many({key: 1 for key in KEYS})
        stored = sorted(cache.make_key(key) for key in KEYS)
    finally:
        handler.close_all()

    assert live_keys(third) == stored


@pytest.mark.parametrize(
    "location",
    ["a.cfg.example:11211,b.cfg.example:11211", ["a:11211", "b:11211"], "", "cfg.example:port"],
)
def test_elasticache__location_not_one_endpoint__is_a_configuration_error(location: Any) -> None:
    handler = CacheHandler({"default": {"BACKEND": ELASTICACHE, "LOCATION": location}})

    with pytest.raises(InvalidCacheBackendError, match="LOCATION") as raised:
        handler["default"].get("key")  # the first operation raises, not building it

    assert isinstance(raised.value, ConfigurationError)


def test_elasticache__flat_options_become_pylibmc_behaviors_over_our_defaults(
    fresh_memcached_node: MemcachedServer,
) -> None:
    handler = CacheHandler(
        {
            "default": {
                "BACKEND": ELASTICACHE,
                "LOCATION": fresh_memcached_node.location,
                "OPTIONS": {"IGNORE_CLUSTER_ERRORS": True, "no_block": True, "tcp_nodelay": False},
            }
        }
    )
    try:
        cache = handler["default"]
        cache.set("key", 1)
        client = cache._cache  # type: ignore[attr-defined]
        behaviors = dict(client.behaviors)
    finally:
        handler.close_all()

    assert behaviors["no_block"]  # the user's
    assert not behaviors["tcp_nodelay"]
    assert behaviors["ketama"]  # our defaults
    assert behaviors["connect_timeout"] == 500
    assert client.binary is False


def test_elasticache__unknown_option__names_it() -> None:
    handler = CacheHandler(
        {
            "default": {
                "BACKEND": ELASTICACHE,
                "LOCATION": "cfg.example:11211",
                "OPTIONS": {"tcp_nodelayy": True},
            }
        }
    )

    with pytest.raises(ConfigurationError, match="'tcp_nodelayy' are neither pylibmc behaviors"):
        handler["default"].get("key")  # the first operation raises, not building it


def test_elasticache__flat_options_beside_behaviors_are_ignored_as_the_old_package_did(
    fresh_memcached_node: MemcachedServer,
) -> None:
    """django-elasticache: client.behaviors = OPTIONS.get("behaviors", OPTIONS). Settings that
    worked there (flat keys it never read) must not fail here."""
    options = {"IGNORE_CLUSTER_ERRORS": True, "behaviors": {"no_block": True}, "stale_key": 1}
    entry = {"BACKEND": ELASTICACHE, "LOCATION": fresh_memcached_node.location, "OPTIONS": options}
    handler = CacheHandler({"default": entry})
    try:
        with pytest.warns(UserWarning, match=r"OPTIONS 'stale_key' are ignored beside"):
            cache = handler["default"]
        cache.set("key", 1)
        behaviors = dict(cache._cache.behaviors)  # type: ignore[attr-defined]
        assert cache.get("key") == 1
    finally:
        handler.close_all()

    assert behaviors["no_block"]
    assert behaviors["ketama"]  # our defaults under them


def test_elasticache__binary_key__warns_that_text_protocol_is_used() -> None:
    handler = CacheHandler(
        {"default": {"BACKEND": ELASTICACHE, "LOCATION": "cfg.example:11211", "BINARY": True}}
    )

    with pytest.warns(UserWarning, match="BINARY key is ignored"):
        cache = handler["default"]

    assert cache._options["binary"] is False  # type: ignore[attr-defined]


def test_elasticache__readme_placeholder_for_ignore__warns_and_reads_its_truth(
    fresh_memcached_node: MemcachedServer,
) -> None:
    """The README writes ``'IGNORE_CLUSTER_ERRORS': [True,False]``, a true value."""
    entry = {
        "BACKEND": ELASTICACHE,
        "LOCATION": fresh_memcached_node.location,
        "OPTIONS": {"IGNORE_CLUSTER_ERRORS": [True, False]},
    }

    with pytest.warns(UserWarning, match=r"should be True or False, not \[True, False\]"):
        stored = store_keys(entry)

    assert live_keys(fresh_memcached_node) == stored


# --- django-memcached-consul -------------------------------------------------------------


def consul_host_port(consul_agent: ConsulAgent) -> tuple[str, int]:
    if "://" in consul_agent.address:
        pytest.skip("the old settings have no scheme for the Consul agent")
    host, _, port = consul_agent.address.rpartition(":")
    return host, int(port)


def test_consul__readme_settings_keys_land_on_service_nodes(
    consul_agent: ConsulAgent, fresh_memcached_nodes: list[MemcachedServer], tmp_path: Path
) -> None:
    host, port = consul_host_port(consul_agent)
    service = f"memcached-{uuid.uuid4().hex[:8]}"
    for n, node in enumerate(fresh_memcached_nodes):
        consul_agent.add(service, node.host, node.port, node=f"n{n}")
    consul_agent.add(service, "127.0.0.9", 11211, node="sick", status="critical")
    caches: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": CONSUL,  # was django_memcached_consul.memcached.MemcachedCache
            "TIMEOUT": 60,
            "CONSUL_TTL": 60,
            # Alt cache will be used if consul is unreachable
            "CONSUL_ALT_TTL": 3600,
            "CONSUL_CACHE": "consul-memcached",
            "CONSUL_HOST": host,
            "CONSUL_PORT": port,
            "CONSUL_SERVICE": service,
        },
        "consul-memcached": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "django_consul_cache"),
        },
    }

    with (
        override_settings(CACHES=caches),
        pytest.warns(UserWarning, match="remove CONSUL_ALT_TTL to silence"),
    ):
        stored = store_keys(caches["default"], {"consul-memcached": caches["consul-memcached"]})

    found = keys_on(fresh_memcached_nodes)
    assert sorted(key for keys in found.values() for key in keys) == stored  # each on one node
    assert all(found.values()), f"ketama should spread 50 keys over 3 nodes: {found}"
    (snapshot,) = load_snapshot(tmp_path / "django_consul_cache" / SNAPSHOT_NAME).values()
    assert sorted(node.port for node in snapshot.nodes) == sorted(
        node.port for node in fresh_memcached_nodes
    )


def test_consul__file_cache_snapshot_serves_when_consul_refuses_at_start(
    consul_agent: ConsulAgent,
    fresh_memcached_nodes: list[MemcachedServer],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CONSUL_CACHE's "alt" role: a new process starts from the last list when Consul fails."""
    host, port = consul_host_port(consul_agent)
    node = fresh_memcached_nodes[2]
    service = f"memcached-{uuid.uuid4().hex[:8]}"
    consul_agent.add(service, node.host, node.port)
    entry = {
        "BACKEND": CONSUL,
        "CONSUL_CACHE": "consul-memcached",
        "CONSUL_HOST": host,
        "CONSUL_PORT": port,
        "CONSUL_SERVICE": service,
        "OPTIONS": {"DEADLINE": 0.5},
    }
    file_cache = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(tmp_path),
    }
    with override_settings(CACHES={"default": entry, "consul-memcached": file_cache}):
        store_keys(entry)  # Consul answers; the snapshot is written
        node.flush()
        stop_all(timeout=2.0)  # as if this were a new process
        consul_agent.require_token("secret")  # from now on the agent answers 403

        stored = store_keys(entry)

    assert live_keys(node) == stored
    assert f"from snapshot {tmp_path / SNAPSHOT_NAME}" in caplog.text


def test_consul__node_change_is_followed(
    consul_agent: ConsulAgent, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    host, port = consul_host_port(consul_agent)
    first, second = fresh_memcached_nodes[:2]
    service = f"memcached-{uuid.uuid4().hex[:8]}"
    instance = consul_agent.add(service, first.host, first.port, node="n1")
    entry = {
        "BACKEND": CONSUL,
        "CONSUL_TTL": 60,
        "CONSUL_HOST": host,
        "CONSUL_PORT": str(port),  # the old package's own tests pass a string
        "CONSUL_SERVICE": service,
    }
    handler = CacheHandler({"default": entry})
    try:
        cache = handler["default"]
        cache.set("before", 1)
        watcher = watcher_of("consul://")
        consul_agent.add(service, second.host, second.port, node="n2")
        consul_agent.remove(instance)
        # Blocking queries: the change arrives within a second, whatever CONSUL_TTL is.
        deadline = time.monotonic() + 5.0
        while [node.port for node in watcher.nodes] != [second.port]:
            assert time.monotonic() < deadline, watcher.nodes
            watcher.wait_for_generation(watcher.generation + 1, timeout=0.5)
        cache.set_many({key: 1 for key in KEYS})
        stored = sorted(cache.make_key(key) for key in KEYS)
    finally:
        handler.close_all()

    assert live_keys(second) == stored


def test_consul__unreachable_agent_fails_at_first_use_within_the_deadline(
    faults: Faults,
) -> None:
    host, _, port = faults.refused().rpartition(":")
    handler = CacheHandler(
        {
            "default": {
                "BACKEND": CONSUL,
                "CONSUL_HOST": host,
                "CONSUL_PORT": int(port),
                "CONSUL_SERVICE": "memcached",
                "OPTIONS": {"DEADLINE": 1.0},
            }
        }
    )
    try:
        cache = handler["default"]  # no error yet: nothing is asked before first use
        started = time.monotonic()
        with pytest.raises(ResolutionError, match=r"consul://.*no memcached nodes yet"):
            cache.get("key")
        elapsed = time.monotonic() - started
    finally:
        handler.close_all()

    assert elapsed < 2.0  # the 1 s deadline plus 1 s of margin


def test_consul__missing_service__is_a_configuration_error() -> None:
    handler = CacheHandler({"default": {"BACKEND": CONSUL, "CONSUL_HOST": "consul.example"}})

    with pytest.raises(ConfigurationError, match="needs CONSUL_SERVICE"):
        handler["default"].get("key")  # the first operation raises, not building it


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"OPTIONS": {"server_max_value_length": 2**21}}, "server_max_value_length"),
        ({"CONSUL_CACHE": "not-there"}, "CONSUL_CACHE='not-there' is not in CACHES"),
        ({"LOCATION": "127.0.0.1:11211"}, "LOCATION '127.0.0.1:11211' is ignored"),
    ],
)
def test_consul__settings_not_honoured__warn(extra: dict[str, Any], message: str) -> None:
    entry = {"BACKEND": CONSUL, "CONSUL_SERVICE": "memcached", **extra}
    handler = CacheHandler({"default": entry})

    with pytest.warns(UserWarning, match=message):
        cache = handler["default"]

    assert "server_max_value_length" not in cache._options  # type: ignore[attr-defined]


def test_compat__seconds_written_as_text_are_read_as_numbers() -> None:
    """Settings read from the environment hold text: "30" is 30 seconds, "soon" an error."""
    handler = CacheHandler(
        {
            "default": {"BACKEND": CONSUL, "CONSUL_SERVICE": "memcached", "CONSUL_TTL": "45",
                        "OPTIONS": {"DEADLINE": " 2 "}},
            "broken": {"BACKEND": ELASTICACHE, "LOCATION": "cfg.example:11211",
                       "OPTIONS": {"REFRESH": "soon"}},
        }
    )  # fmt: skip

    watcher = handler["default"]._watcher  # type: ignore[attr-defined]

    assert (watcher.policy.refresh, watcher.policy.deadline) == (45.0, 2.0)
    with pytest.raises(SettingsError, match=r"REFRESH.* must be a positive number of seconds"):
        handler["broken"].get("key")


def test_elasticache__a_source_url_as_location__says_to_write_host_port() -> None:
    """LOCATION 'elasticache://cfg:11211' read as a node: "too many ':'", no fix named."""
    handler = CacheHandler(
        {"default": {"BACKEND": ELASTICACHE, "LOCATION": "elasticache://cfg.example:11211"}}
    )

    with pytest.raises(SettingsError) as raised:
        handler["default"].get("key")

    assert "LOCATION 'elasticache://cfg.example:11211' is a URL" in str(raised.value)
    assert "the configuration endpoint as HOST:PORT, without a scheme" in str(raised.value)


@pytest.mark.parametrize(
    ("entry", "guess"),
    [
        ({"BACKEND": ELASTICACHE, "LOCATION": "cfg.example:11211",
          "OPTIONS": {"IGNORE_CLUSTER_ERROR": True}},
         "for 'IGNORE_CLUSTER_ERROR', did you mean 'IGNORE_CLUSTER_ERRORS'?"),
        ({"BACKEND": ELASTICACHE, "LOCATION": "cfg.example:11211", "OPTIONS": {"refresh": 30}},
         "for 'refresh', did you mean 'REFRESH'?"),
        ({"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "OPTIONS": {"snapshot": "/app/n.json"}},
         "for 'snapshot', did you mean 'SNAPSHOT'?"),
        ({"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "OPTIONS": {"ketma": True}},
         "for 'ketma', did you mean 'ketama'?"),
    ],
    ids=["ignore-errors", "refresh-lower-case", "snapshot-lower-case", "behavior"],
)  # fmt: skip
def test_compat_options__a_misspelt_key__names_the_closest(
    entry: dict[str, Any], guess: str
) -> None:
    """Our keys are upper case, pylibmc's lower: 'refresh' was refused without saying so."""
    handler = CacheHandler({"default": entry})

    with pytest.raises(SettingsError) as raised:
        handler["default"].get("key")

    assert guess in str(raised.value)


@pytest.mark.parametrize("host", ["http://consul.example:8500", "consul.example:8500"])
def test_consul__consul_host_with_a_scheme_or_port__says_to_use_consul_port(host: str) -> None:
    """The agent read as '[http://consul.example:8500]:8500', naming neither key nor fix."""
    handler = CacheHandler(
        {"default": {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "CONSUL_HOST": host}}
    )

    with pytest.raises(SettingsError) as raised:
        handler["default"].get("key")

    assert f"CONSUL_HOST must be the agent's host name or IP address, not {host!r}" in str(
        raised.value
    )
    assert "the port goes in CONSUL_PORT" in str(raised.value)


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_consul__an_ipv6_consul_host__is_the_agent(host: str) -> None:
    entry = {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "CONSUL_HOST": host, "CONSUL_PORT": 8501}
    cache = CacheHandler({"default": entry})["default"]

    assert cache.cache_settings_error is None  # type: ignore[attr-defined]
    assert cache._watcher.source.url == "consul://[::1]:8501/mc"  # type: ignore[attr-defined]
