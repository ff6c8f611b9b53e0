"""The ElastiCache sources through resolve() and memcached(): errors, deadlines, secrets."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from django.core.cache import CacheHandler

from cache_settings import ResolutionError, memcached, resolve
from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.elasticache_api import ElastiCacheAPIServer
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer
from tests.sources.test_config_endpoint import MALFORMED_REPLIES

DEADLINE = 1.0


def test_config_endpoint__aws_shaped_reply_in_small_pieces_gives_a_working_cache(
    config_endpoint: ConfigEndpointServer, memcached_nodes: list[MemcachedServer]
) -> None:
    config_endpoint.set_nodes(
        [
            (
                f"node-{i}.abc123.0001.use1.cache.amazonaws.com",
                "" if i == 0 else node.host,
                node.port,
            )
            for i, node in enumerate(memcached_nodes)
        ],
        version=12,
    )
    config_endpoint.chunk_sizes = (1, 2, 3)
    url = f"elasticache://{config_endpoint.address}"

    resolution = resolve(url)
    entry = memcached(url)

    assert resolution.version == 12
    # The first entry came as host||port: its name is kept (and here it does not resolve).
    assert sorted(n.location for n in resolution.nodes)[-1].startswith("node-0.abc123")
    assert set(entry["LOCATION"]) >= {n.location for n in memcached_nodes[1:]}


def test_config_endpoint__working_cache_end_to_end(
    config_endpoint: ConfigEndpointServer, memcached_nodes: list[MemcachedServer]
) -> None:
    config_endpoint.set_nodes(
        [(f"n{i}.cache.test", n.host, n.port) for i, n in enumerate(memcached_nodes)]
    )
    entry = memcached(f"elasticache://{config_endpoint.address}", key_prefix="e2e")
    handler = CacheHandler({"default": dict(entry)})
    try:
        cache = handler["default"]
        cache.set_many({f"k{i}": i for i in range(30)})
        assert cache.get_many([f"k{i}" for i in range(30)]) == {f"k{i}": i for i in range(30)}
    finally:
        handler.close_all()
    assert sorted(entry["LOCATION"]) == sorted(n.location for n in memcached_nodes)


def test_config_endpoint__legacy_engine_is_resolved_through_the_legacy_key(
    config_endpoint: ConfigEndpointServer,
) -> None:
    config_endpoint.legacy = True
    config_endpoint.set_nodes([("a.cache.test", "10.0.0.1", 11211)], version=3)

    resolution = resolve(f"elasticache://{config_endpoint.address}")

    assert resolution.locations == ["10.0.0.1:11211"]
    assert any(c.startswith(b"get AmazonElastiCache:cluster") for c in config_endpoint.commands)


def assert_bounded_resolution_error(url: str, started: float, error: ResolutionError) -> None:
    assert time.monotonic() - started <= DEADLINE * 1.2
    assert str(error).startswith(url + ": ")


@pytest.mark.parametrize("reply", MALFORMED_REPLIES)
def test_config_endpoint__malformed_reply_is_a_bounded_resolution_error(
    config_endpoint: ConfigEndpointServer, reply: bytes
) -> None:
    config_endpoint.set_raw(reply, close=True)
    url = f"elasticache://{config_endpoint.address}"
    started = time.monotonic()

    with pytest.raises(ResolutionError) as raised:
        resolve(url, deadline=DEADLINE)

    assert_bounded_resolution_error(url, started, raised.value)


@pytest.mark.parametrize("reply", [b"CONFIG cluster 0 40\r\n1\nh|10.0.0.1|11211\n", b"CONFIG clu"])
def test_config_endpoint__reply_that_stops_midway_is_bounded_by_the_deadline(
    config_endpoint: ConfigEndpointServer, reply: bytes
) -> None:
    config_endpoint.set_raw(reply)  # and keep the connection open
    url = f"elasticache://{config_endpoint.address}"
    started = time.monotonic()

    with pytest.raises(ResolutionError) as raised:
        resolve(url, deadline=DEADLINE)

    assert_bounded_resolution_error(url, started, raised.value)


def test_config_endpoint__plain_memcached_is_named_as_such(memcached_node: MemcachedServer) -> None:
    url = f"elasticache://{memcached_node.location}"
    started = time.monotonic()

    with pytest.raises(
        ResolutionError, match="not an ElastiCache configuration endpoint"
    ) as raised:
        resolve(url, deadline=DEADLINE)

    assert_bounded_resolution_error(url, started, raised.value)


def test_config_endpoint__black_hole_and_early_close_are_bounded(
    faults: Faults, config_endpoint: ConfigEndpointServer
) -> None:
    config_endpoint.set_nodes([("a.cache.test", "10.0.0.1", 11211)])
    cut = faults.proxy(config_endpoint.address, cut_after=12)
    for address in (faults.blackhole(), cut.address, faults.refused()):
        url = f"elasticache://{address}"
        started = time.monotonic()
        with pytest.raises(ResolutionError) as raised:
            resolve(url, deadline=DEADLINE)
        assert_bounded_resolution_error(url, started, raised.value)


# --- the AWS API through boto3's standard chain --------------------------------------------


@pytest.fixture
def aws_chain(
    elasticache_api: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch
) -> ElastiCacheAPIServer:
    """boto3 finds the endpoint, region and credentials in the environment, as in production."""
    for name, value in elasticache_api.credentials_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ELASTICACHE", elasticache_api.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    return elasticache_api


def test_elasticache_api__standard_chain_gives_only_available_nodes(
    aws_chain: ElastiCacheAPIServer, memcached_nodes: list[MemcachedServer]
) -> None:
    nodes = [(n.host, n.port) for n in memcached_nodes[:2]]
    aws_chain.add_cluster("sessions", [*nodes, ("10.9.9.9", 11211, "rebooting")])

    entry = memcached("elasticache-api://sessions")

    assert entry["LOCATION"] == sorted(n.location for n in memcached_nodes[:2])
    handler = CacheHandler({"default": dict(entry)})
    try:
        handler["default"].set("k", "v")
        assert handler["default"].get("k") == "v"
    finally:
        handler.close_all()


def test_elasticache_api__unknown_cluster_names_it_and_no_secret_leaks(
    aws_chain: ElastiCacheAPIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cache_settings")
    aws_chain.add_cluster("present", [("10.0.0.1", 11211)])
    snapshot = tmp_path / "nodes.json"
    resolve("elasticache-api://present", snapshot=snapshot)

    with pytest.raises(ResolutionError, match="missing-cluster") as raised:
        resolve("elasticache-api://missing-cluster", snapshot=snapshot, deadline=3)

    secret = aws_chain.credentials_env["AWS_SECRET_ACCESS_KEY"]
    key_id = aws_chain.credentials_env["AWS_ACCESS_KEY_ID"]
    for text in (str(raised.value), snapshot.read_text(), caplog.text):
        assert secret not in text
        assert key_id not in text


def test_elasticache_api__trickling_endpoint_is_bounded_by_the_deadline(
    aws_chain: ElastiCacheAPIServer, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_chain.add_cluster("slow", [("10.0.0.1", 11211)])
    trickle = faults.proxy(aws_chain.endpoint_url.split("//", 1)[1], chunk=8, delay=0.2)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ELASTICACHE", f"http://{trickle.address}")
    started = time.monotonic()

    with pytest.raises(ResolutionError, match="slow"):
        resolve("elasticache-api://slow", deadline=DEADLINE)

    assert time.monotonic() - started <= DEADLINE * 1.2
