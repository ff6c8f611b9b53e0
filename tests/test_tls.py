"""TLS end to end: real memcached started with ``-Z``, trustme certificates, real clients.

docs/sources.md: a source that knows its nodes need TLS yields a pymemcache entry
whose ``OPTIONS["tls_context"]`` verifies the certificate and the host name (``ca=``, else the
default trust store, which honours ``SSL_CERT_FILE``); nodes are addressed by host name;
pylibmc with TLS is a ConfigurationError; snapshots hold plain JSON.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache.backends.base import BaseCache
from pymemcache.client.base import Client as PlainClient

from cache_settings import ConfigurationError, ResolutionError, memcached
from tests.helpers import django_cache
from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.elasticache_api import ElastiCacheAPIServer
from tests.servers.memcached import MemcachedFactory, MemcachedServer
from tests.servers.tls import TLSFiles

PYMEMCACHE = "django.core.cache.backends.memcached.PyMemcacheCache"


@pytest.fixture(scope="session")
def tls_nodes(memcached_factory: MemcachedFactory) -> list[MemcachedServer]:
    """Two memcached daemons that speak only TLS, with a certificate for localhost."""
    return [memcached_factory(tls=True) for _ in range(2)]


@pytest.fixture
def fresh_tls_nodes(tls_nodes: list[MemcachedServer]) -> list[MemcachedServer]:
    for server in tls_nodes:
        server.start()
        server.flush()
    return tls_nodes


@pytest.fixture
def tls_config_endpoint(
    tls_files: TLSFiles, fresh_tls_nodes: list[MemcachedServer]
) -> Iterator[ConfigEndpointServer]:
    """A configuration endpoint behind TLS listing the TLS nodes by host name (localhost)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    with ConfigEndpointServer(ssl_context=context) as endpoint:
        endpoint.set_nodes([("localhost", "127.0.0.1", node.port) for node in fresh_tls_nodes])
        yield endpoint


def _store_and_read(cache: BaseCache, servers: list[MemcachedServer], count: int = 20) -> None:
    """Store values through Django, read them back, and find them on the TLS daemons."""
    prefix = uuid.uuid4().hex[:8]
    values = {f"{prefix}-{i}": {"n": i} for i in range(count)}
    assert cache.set_many(values) == []
    assert cache.get_many(list(values)) == values
    on_servers = {key.split(":", 2)[2] for server in servers for key in server.keys()}
    assert set(values) <= on_servers


def test_tls_node__refuses_plain_clients(fresh_tls_nodes: list[MemcachedServer]) -> None:
    """The daemons really speak only TLS: a plain client gets no answer it can use."""
    client = PlainClient(("127.0.0.1", fresh_tls_nodes[0].port), connect_timeout=1, timeout=1)
    try:
        with pytest.raises(Exception):  # noqa: B017 - any failure will do: no plain protocol
            client.set("k", b"v", noreply=False)
    finally:
        client.close()


# --- static lists -----------------------------------------------------------------------


def test_static_tls__django_cache_stores_over_tls(
    fresh_tls_nodes: list[MemcachedServer], tls_files: TLSFiles
) -> None:
    hosts = ",".join(f"localhost:{server.port}" for server in fresh_tls_nodes)

    entry = memcached(f"pymemcache://{hosts}?tls=true&ca={tls_files.ca}")

    assert entry["BACKEND"] == PYMEMCACHE
    assert entry["LOCATION"] == sorted(f"localhost:{s.port}" for s in fresh_tls_nodes)
    context = entry["OPTIONS"]["tls_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    with django_cache(dict(entry)) as cache:
        _store_and_read(cache, fresh_tls_nodes)


def test_static_tls__ssl_cert_file_is_the_trust_store(
    fresh_tls_nodes: list[MemcachedServer], tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ca=, the default trust store is used, and it honours SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.ca)
    hosts = ",".join(f"localhost:{server.port}" for server in fresh_tls_nodes)

    entry = memcached(f"pymemcache://{hosts}?tls=true")

    with django_cache(dict(entry)) as cache:
        _store_and_read(cache, fresh_tls_nodes)


def test_static_tls__unknown_ca_fails_at_first_use(
    fresh_tls_nodes: list[MemcachedServer], other_ca_file: str
) -> None:
    """A static list is not contacted at settings time; the first operation fails."""
    entry = memcached(
        f"pymemcache://localhost:{fresh_tls_nodes[0].port}?tls=true&ca={other_ca_file}"
    )

    with django_cache(dict(entry)) as cache, pytest.raises(ssl.SSLCertVerificationError):
        cache.set("key", "value")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            {"url": "pymemcache://localhost:1?tls=true", "backend": "pylibmc"}, id="backend"
        ),
        pytest.param({"url": "pylibmc://localhost:1?tls=true"}, id="scheme"),
    ],
)
def test_static_tls__pylibmc_is_a_configuration_error(call: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="pymemcache"):
        memcached(call.pop("url"), **call)


# --- configuration endpoint -------------------------------------------------------------


def test_config_endpoint_tls__django_cache_on_nodes_by_hostname(
    tls_config_endpoint: ConfigEndpointServer,
    fresh_tls_nodes: list[MemcachedServer],
    tls_files: TLSFiles,
    tmp_path: Path,
) -> None:
    """Issue 8, judged 1: ca=, pymemcache, nodes by host name, values over TLS, JSON snapshot."""
    snapshot = tmp_path / "cache-nodes.json"
    url = f"elasticache://localhost:{tls_config_endpoint.port}?tls=true&ca={tls_files.ca}"

    entry = memcached(url, backend="pymemcache", snapshot=snapshot)

    assert entry["BACKEND"] == PYMEMCACHE
    # Host names, not the listed IPs: the certificate names the host.
    assert entry["LOCATION"] == sorted(f"localhost:{s.port}" for s in fresh_tls_nodes)
    assert isinstance(entry["OPTIONS"]["tls_context"], ssl.SSLContext)
    with django_cache(dict(entry)) as cache:
        _store_and_read(cache, fresh_tls_nodes)
    data = json.loads(snapshot.read_text())  # plain JSON, no context, no pickle
    (saved,) = data["sources"].values()
    assert sorted(node["port"] for node in saved["nodes"]) == sorted(
        s.port for s in fresh_tls_nodes
    )
    assert "tls_context" not in snapshot.read_text()


def test_config_endpoint_tls__ssl_cert_file_without_ca(
    tls_config_endpoint: ConfigEndpointServer,
    fresh_tls_nodes: list[MemcachedServer],
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.ca)

    entry = memcached(
        f"elasticache://localhost:{tls_config_endpoint.port}?tls=true", backend="pymemcache"
    )

    with django_cache(dict(entry)) as cache:
        _store_and_read(cache, fresh_tls_nodes)


def test_config_endpoint_tls__no_backend_chooses_pymemcache(
    tls_config_endpoint: ConfigEndpointServer, tls_files: TLSFiles
) -> None:
    url = f"elasticache://localhost:{tls_config_endpoint.port}?tls=true&ca={tls_files.ca}"

    assert memcached(url)["BACKEND"] == PYMEMCACHE


def test_config_endpoint_tls__unknown_ca_is_a_resolution_error(
    tls_config_endpoint: ConfigEndpointServer, other_ca_file: str
) -> None:
    url = f"elasticache://localhost:{tls_config_endpoint.port}?tls=true&ca={other_ca_file}"

    with pytest.raises(ResolutionError, match="certificate"):
        memcached(url, backend="pymemcache", attempts=1, deadline=2)


def test_config_endpoint_tls__pylibmc_is_a_configuration_error(
    tls_config_endpoint: ConfigEndpointServer, tls_files: TLSFiles
) -> None:
    url = f"elasticache://localhost:{tls_config_endpoint.port}?tls=true&ca={tls_files.ca}"

    with pytest.raises(ConfigurationError, match='backend="pymemcache"'):
        memcached(url, backend="pylibmc")


# --- serverless, through the ElastiCache API -------------------------------------------


@pytest.fixture
def aws_env(
    monkeypatch: pytest.MonkeyPatch, elasticache_api: ElastiCacheAPIServer
) -> ElastiCacheAPIServer:
    """boto3's standard chain, pointed at the stand-in by environment variables only."""
    for name, value in elasticache_api.credentials_env.items():
        monkeypatch.setenv(name, value)
    # botocore reads the region from AWS_DEFAULT_REGION (AWS_REGION only for IMDS).
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ELASTICACHE", elasticache_api.endpoint_url)
    return elasticache_api


def test_serverless__one_tls_endpoint_through_boto3_chain(
    aws_env: ElastiCacheAPIServer,
    fresh_tls_nodes: list[MemcachedServer],
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 8, judged 2: a serverless cache gives its one endpoint, and the cache works."""
    node = fresh_tls_nodes[0]
    aws_env.add_serverless("sessions", "localhost", node.port)
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.ca)

    entry = memcached("elasticache-api://sessions")

    assert entry["BACKEND"] == PYMEMCACHE
    assert entry["LOCATION"] == [f"localhost:{node.port}"]
    assert isinstance(entry["OPTIONS"]["tls_context"], ssl.SSLContext)
    with django_cache(dict(entry)) as cache:
        _store_and_read(cache, [node])
    assert aws_env.actions() == ["DescribeCacheClusters", "DescribeServerlessCaches"]


def test_serverless__ca_argument_verifies_the_endpoint(
    aws_env: ElastiCacheAPIServer, fresh_tls_nodes: list[MemcachedServer], tls_files: TLSFiles
) -> None:
    node = fresh_tls_nodes[0]
    aws_env.add_serverless("sessions", "localhost", node.port)

    entry = memcached(f"elasticache-api://sessions?ca={tls_files.ca}")

    with django_cache(dict(entry)) as cache:
        _store_and_read(cache, [node])


def test_serverless__pylibmc_is_a_configuration_error(
    aws_env: ElastiCacheAPIServer, fresh_tls_nodes: list[MemcachedServer]
) -> None:
    aws_env.add_serverless("sessions", "localhost", fresh_tls_nodes[0].port)

    with pytest.raises(ConfigurationError, match="pymemcache"):
        memcached("elasticache-api://sessions", backend="pylibmc")
