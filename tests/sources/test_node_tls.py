"""TLS to the nodes of discovery sources: ``node_tls=true&node_ca=…`` on consul://, dns*://, file://.

A site whose memcached fleet speaks only TLS declares it in the source URL (Consul's own
``tls=``/``ca=`` stay the agent's): the source's ``Traits.node_tls`` makes ``memcached()``
build a verifying context and choose pymemcache, and nodes are marked ``tls``.
"""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import pytest

from cache_settings import ConfigurationError, memcached
from cache_settings.nodes import Node
from cache_settings.sources import parse_source
from cache_settings.tls import TLSConfig
from tests.helpers import django_cache
from tests.servers.consul import ConsulAgent
from tests.servers.dns import DNSServer
from tests.servers.memcached import MemcachedFactory, MemcachedServer
from tests.servers.tls import TLSFiles

PYMEMCACHE = "django.core.cache.backends.memcached.PyMemcacheCache"


@pytest.fixture
def tls_node(memcached_factory: MemcachedFactory) -> MemcachedServer:
    """A memcached daemon that speaks only TLS, its certificate naming localhost."""
    server = memcached_factory(tls=True)
    server.start()
    server.flush()
    return server


def _stores_over_tls(entry: dict[str, object], server: MemcachedServer) -> None:
    assert entry["BACKEND"] == PYMEMCACHE
    options = entry["OPTIONS"]
    assert isinstance(options, dict)
    context = options["tls_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    key = uuid.uuid4().hex
    with django_cache(dict(entry)) as cache:
        cache.set(key, {"over": "tls"})
        assert cache.get(key) == {"over": "tls"}
    assert any(stored.endswith(key) for stored in server.keys())


def test_consul_node_tls__django_cache_stores_over_tls(
    consul_agent: ConsulAgent, tls_node: MemcachedServer, tls_files: TLSFiles
) -> None:
    consul_agent.add("memcached", "localhost", tls_node.port)
    url = f"consul://{consul_agent.address}/memcached?node_tls=true&node_ca={tls_files.ca}"

    entry = memcached(url)

    assert entry["LOCATION"] == [f"localhost:{tls_node.port}"]
    _stores_over_tls(entry, tls_node)


def test_file_node_tls__django_cache_stores_over_tls(
    tmp_path: Path, tls_node: MemcachedServer, tls_files: TLSFiles
) -> None:
    path = tmp_path / "nodes"
    path.write_text(f"localhost:{tls_node.port}\n")

    entry = memcached(f"file://{path}?node_ca={tls_files.ca}")  # node_ca= implies node_tls

    _stores_over_tls(entry, tls_node)


def test_node_tls__without_it_the_entry_is_plain(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "localhost", 11211)

    entry = memcached(f"consul://{consul_agent.address}/memcached", backend="pymemcache")

    assert "tls_context" not in entry.get("OPTIONS", {})


@pytest.mark.parametrize(
    "url",
    [
        "consul:///memcached?node_tls=true&node_ca=/etc/ca.pem",
        "consul://agent:8501/memcached?tls=true&ca=/etc/agent-ca.pem&node_tls=true",
        "dns://mc.cache.test:11211?node_tls=true&node_ca=/etc/ca.pem",
        "dnssrv://_mc._tcp.cache.test?nameserver=10.0.0.53&node_ca=/etc/ca.pem",
        "file:///etc/memcached-nodes?node_tls=true&node_cert=/c.pem&node_key=/k.pem",
    ],
)
def test_node_tls__declared_in_traits_and_kept_in_the_canonical_url(url: str) -> None:
    source = parse_source(url)

    assert source.traits.node_tls is not None
    assert "node_tls=true" in source.url
    assert parse_source(source.url) == source


def test_consul_tls__still_means_the_agent() -> None:
    source = parse_source("consul://agent:8501/memcached?tls=true&ca=/etc/agent-ca.pem")

    assert source.traits.node_tls is None


def test_node_tls__settings_are_read_as_written() -> None:
    source = parse_source("file:///n?node_ca=/ca.pem&node_cert=/c.pem&node_key=/k.pem")

    assert source.traits.node_tls == TLSConfig("/ca.pem", "/c.pem", "/k.pem")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dns://mc.test?node_tls=false&node_ca=/ca.pem", "need node_tls=true"),
        ("file:///n?node_tls=true&node_key=/k.pem", "node_key= needs node_cert="),
        ("consul:///mc?node_tls=maybe", "node_tls='maybe' must be true or false"),
    ],
)
def test_node_tls__bad_settings_name_the_option(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_source(url)


def test_dnssrv_node_tls__nodes_are_addressed_by_target_name(dns_server: DNSServer) -> None:
    target = dns_server.name("node")
    dns_server.set_addresses(target, ["10.0.7.1"])
    service = f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(service, [(target, 11211, 0, 0)])
    source = parse_source(f"dnssrv+{service}?nameserver={dns_server.address}&node_tls=true")

    nodes = source.resolve(timeout=2)

    assert nodes == [Node(target, 11211, "10.0.7.1", tls=True)]
    assert nodes[0].location == f"{target}:11211"  # the name its certificate holds
