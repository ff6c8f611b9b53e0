"""ElastiCache Auto Discovery: the reply parser, the socket exchange, TLS and URLs."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_settings.attempt import DEFAULT_MAX_REPLY_SIZE
from cache_settings.exceptions import ConfigurationError, SourceError
from cache_settings.nodes import Node, is_nowhere
from cache_settings.sources import WatchableSource, parse_source
from cache_settings.sources.config_endpoint import ConfigEndpoint, parse_cluster_config
from cache_settings.tls import TLSConfig
from tests.helpers import LATE
from tests.servers.config_endpoint import ConfigEndpointServer, cluster_reply
from tests.servers.faults import Faults
from tests.servers.tls import TLSFiles

# AWS guide, "Adding Auto Discovery to your client library", output format example. The guide
# prints <len> as 147, but its data block ("12\n" + node line + "\n") is 136 bytes; AWS's
# own libmemcached reads <len> + 2 bytes then END, so a real server sends 136.
AWS_NODE_LINE = (
    b"myCluster.pc4ldq.0001.use1.cache.amazonaws.com|10.82.235.120|11211 "
    b"myCluster.pc4ldq.0002.use1.cache.amazonaws.com|10.80.249.27|11211"
)
AWS_EXAMPLE = b"CONFIG cluster 0 136\r\n12\n" + AWS_NODE_LINE + b"\n\r\nEND\r\n"
AWS_EXAMPLE_AS_PRINTED = AWS_EXAMPLE.replace(b" 136\r\n", b" 147\r\n")
AWS_NODES = [
    Node("mycluster.pc4ldq.0001.use1.cache.amazonaws.com", 11211, "10.82.235.120"),
    Node("mycluster.pc4ldq.0002.use1.cache.amazonaws.com", 11211, "10.80.249.27"),
]
THREE = [
    ("n1.example", "10.0.0.1", 11211),
    ("n2.example", "10.0.0.2", 11211),
    ("n3.example", "", 11212),
]
THREE_NODES = [
    Node("n1.example", 11211, "10.0.0.1"),
    Node("n2.example", 11211, "10.0.0.2"),
    Node("n3.example", 11212),
]


def reply_with(data: bytes, head: bytes = b"CONFIG cluster 0") -> bytes:
    """Return a correctly framed reply around the data block *data*."""
    return b"%s %d\r\n%s\r\nEND\r\n" % (head, len(data), data)


def endpoint(server: ConfigEndpointServer, **kwargs: object) -> ConfigEndpoint:
    return ConfigEndpoint("127.0.0.1", server.port, **kwargs)  # type: ignore[arg-type]


# -- the pure parser ---------------------------------------------------------------------


def test_parse_cluster_config__aws_example():
    assert parse_cluster_config(AWS_EXAMPLE) == (12, AWS_NODES)


def test_parse_cluster_config__length_counts_both_lines_without_crlf():
    data = AWS_EXAMPLE.split(b"\r\n", 1)[1].removesuffix(b"\r\nEND\r\n")

    assert len(data) == 136
    assert data == b"12\n" + AWS_NODE_LINE + b"\n"


def test_parse_cluster_config__aws_example_as_printed_is_refused():
    """The guide's 147 is 11 bytes more than it sends: a short reply, never a guess."""
    with pytest.raises(SourceError, match="ended after 143 of 147 bytes"):
        parse_cluster_config(AWS_EXAMPLE_AS_PRINTED, source="elasticache://cfg:11211")


def test_parse_cluster_config__legacy_value_header():
    reply = AWS_EXAMPLE.replace(b"CONFIG cluster 0", b"VALUE AmazonElastiCache:cluster 0")

    assert parse_cluster_config(reply) == (12, AWS_NODES)


def test_parse_cluster_config__empty_ip_means_no_ip():
    version, nodes = parse_cluster_config(reply_with(b"3\nhost-a.example||11211\n"))

    assert (version, nodes) == (3, [Node("host-a.example", 11211, None)])
    assert nodes[0].location == "host-a.example:11211"


def test_parse_cluster_config__ipv6_ip():
    _, nodes = parse_cluster_config(reply_with(b"1\nnode.example|2001:DB8::1|11211\n"))

    assert nodes == [Node("node.example", 11211, "2001:db8::1")]
    assert nodes[0].location == "[2001:db8::1]:11211"


def test_parse_cluster_config__ipv4_mapped_ip_in_mixed_notation_on_every_python():
    _, nodes = parse_cluster_config(reply_with(b"1\nnode.example|::FFFF:a00:1|11211\n"))

    assert nodes == [Node("node.example", 11211, "::ffff:10.0.0.1")]


def test_parse_cluster_config__crlf_lines_accepted():
    _, nodes = parse_cluster_config(reply_with(b"1\r\nnode.example|10.0.0.1|11211\r\n"))

    assert nodes == [Node("node.example", 11211, "10.0.0.1")]


def test_parse_cluster_config__empty_node_list():
    assert parse_cluster_config(reply_with(b"5\n\n")) == (5, [])


def test_parse_cluster_config__error_names_plain_memcached():
    with pytest.raises(SourceError, match="not an ElastiCache configuration endpoint") as info:
        parse_cluster_config(b"ERROR\r\n", source="elasticache://cfg.example:11211")

    assert info.value.source == "elasticache://cfg.example:11211"


def test_parse_cluster_config__oversize_refused():
    with pytest.raises(SourceError, match=r"larger than \d+ bytes \(max_reply_size\)"):
        parse_cluster_config(b"CONFIG cluster 0 %d\r\n" % (DEFAULT_MAX_REPLY_SIZE + 1))


# Bytes after END: a socket reader stops at END, so only the parser sees them.
TRAILING_JUNK = [
    b"CONFIG cluster 0 3\r\n1\n\n\r\nEND\r\nEND\r\n",
    b"CONFIG cluster 0 3\r\n1\n\n\r\nEND\r\nVERSION 1\r\n",
]

MALFORMED_REPLIES = [
    b"",
    b"\r\n",
    b"CONFIG cluster 0 136",
    b"END\r\n",
    b"ERROR\r\n",
    b"SERVER_ERROR out of memory\r\n",
    b"CLIENT_ERROR bad command line format\r\n",
    b"VERSION 1.6.18\r\n",
    b"CONFIG cluster 0\r\n1\n\n\r\nEND\r\n",
    b"CONFIG cluster 0 4 5\r\n1\n\n\r\nEND\r\n",
    b"CONFIG cluster x 3\r\n1\n\n\r\nEND\r\n",
    b"CONFIG cluster 0 -3\r\n1\n\n\r\nEND\r\n",
    b"CONFIG cluster 0 +3\r\n1\n\n\r\nEND\r\n",
    b"CONFIG clusters 0 3\r\n1\n\n\r\nEND\r\n",
    b"CONFIG AmazonElastiCache:cluster 0 3\r\n1\n\n\r\nEND\r\n",
    b"VALUE cluster 0 3\r\n1\n\n\r\nEND\r\n",
    b"config cluster 0 3\r\n1\n\n\r\nEND\r\n",
    b"CONFIG  cluster 0 3\r\n1\n\n\r\nEND\r\n",
    b"CONFIG cluster 0 2\r\n1\n\n\r\nEND\r\n",  # length too short
    b"CONFIG cluster 0 4\r\n1\n\n\r\nEND\r\n",  # length too long
    b"CONFIG cluster 0 3\r\n1\n\n\r\nEND",  # trailer cut
    b"CONFIG cluster 0 3\r\n1\n\nEND\r\n",  # no CRLF after the data
    b"CONFIG cluster 0 3\r\n1\n\n\r\nFIN\r\n",
    b"CONFIG cluster 0 99999999999999999999999\r\n",
    reply_with(b""),
    reply_with(b"1\n"),
    reply_with(b"1"),
    reply_with(b"1\nh|10.0.0.1|11211"),  # node line without \n
    reply_with(b"1\nh|10.0.0.1|11211\n\n"),  # extra line
    reply_with(b"\nh|10.0.0.1|11211\n"),  # no version
    reply_with(b"x\nh|10.0.0.1|11211\n"),
    reply_with(b"-1\nh|10.0.0.1|11211\n"),
    reply_with(b"1.5\nh|10.0.0.1|11211\n"),
    reply_with(b" 1\nh|10.0.0.1|11211\n"),
    reply_with(b"\xd9\xa1\nh|10.0.0.1|11211\n"),  # Arabic-Indic digit one
    reply_with(b"1" * 40 + b"\nh|10.0.0.1|11211\n"),
    reply_with(b"1\nh|10.0.0.1\n"),
    reply_with(b"1\nh|10.0.0.1|11211|x\n"),
    reply_with(b"1\nh:10.0.0.1:11211\n"),
    reply_with(b"1\n|10.0.0.1|11211\n"),  # no host
    reply_with(b"1\nh|10.0.0.1|\n"),  # no port
    reply_with(b"1\nh|10.0.0.1|0\n"),
    reply_with(b"1\nh|10.0.0.1|65536\n"),
    reply_with(b"1\nh|10.0.0.1|-1\n"),
    reply_with(b"1\nh|10.0.0.1|port\n"),
    reply_with(b"1\nh|10.0.0.1|0000000011211\n"),
    reply_with(b"1\nh|10.0.0.300|11211\n"),
    reply_with(b"1\nh|not-an-ip|11211\n"),
    reply_with(b"1\nh|2001:db8::zz|11211\n"),
    reply_with(b"1\nh_ost!|10.0.0.1|11211\n"),
    reply_with(b"1\nh:1|10.0.0.1|11211\n"),
    reply_with(b"1\n[::1]|10.0.0.1|11211\n"),
    reply_with(b"1\n-h.example|10.0.0.1|11211\n"),
    reply_with(b"1\nh\xc3\xa9.example|10.0.0.1|11211\n"),
    reply_with(b"1\nh\tx|10.0.0.1|11211\n"),
    reply_with(b"1\nh.example|10.0.0.1|11211 broken\n"),
]


@pytest.mark.parametrize("reply", MALFORMED_REPLIES + TRAILING_JUNK)
def test_parse_cluster_config__malformed_is_source_error(reply: bytes):
    with pytest.raises(SourceError) as info:
        parse_cluster_config(reply, source="elasticache://cfg.example:11211")

    assert str(info.value).startswith("elasticache://cfg.example:11211: ")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | st.builds(reply_with, st.binary(max_size=200)))
def test_parse_cluster_config__any_bytes_parse_or_source_error(reply: bytes):
    try:
        version, nodes = parse_cluster_config(reply)
    except SourceError:
        return
    assert version >= 0
    assert all(isinstance(node, Node) and 0 < node.port < 65536 for node in nodes)


_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
# The last label of a host name is never a number (RFC 1123, 2.1; parse_node refuses "0").
_last_labels = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hosts = st.builds(
    lambda labels, last: ".".join([*labels, last]), st.lists(_labels, max_size=3), _last_labels
)
# Node IPs are RFC 5952 text, an IPv4-mapped one in mixed notation on every Python; never
# 0.0.0.0, :: or a multicast group, in any spelling (refused: no node has such an address).
_ips = st.ip_addresses().filter(lambda ip: not is_nowhere(str(ip))).map(
    lambda ip: f"::ffff:{ip.ipv4_mapped}" if ip.version == 6 and ip.ipv4_mapped else str(ip)
) | st.just("")
_entries = st.tuples(_hosts, _ips, st.integers(1, 65535))


@settings(max_examples=200, deadline=None)
@given(st.lists(_entries, max_size=8), st.integers(0, 2**63 - 1), st.booleans())
def test_parse_cluster_config__round_trips_what_aws_sends(
    entries: list[tuple[str, str, int]], version: int, legacy: bool
):
    reply = cluster_reply(entries, version, legacy=legacy)

    assert parse_cluster_config(reply) == (
        version,
        [Node(host, port, ip or None) for host, ip, port in entries],
    )


# -- over a socket -----------------------------------------------------------------------


def test_config_endpoint__resolves_nodes(config_endpoint: ConfigEndpointServer):
    config_endpoint.set_nodes(THREE, version=7)

    version, nodes = endpoint(config_endpoint).watch(None, timeout=2)

    assert version == 7
    assert nodes == THREE_NODES
    assert config_endpoint.commands == [b"config get cluster"]


def test_config_endpoint__is_a_watchable_non_blocking_source(config_endpoint):
    source = endpoint(config_endpoint)

    assert isinstance(source, WatchableSource)
    assert source.blocking is False


def test_config_endpoint__resolve_returns_sorted_unique(config_endpoint):
    config_endpoint.set_nodes([THREE[2], THREE[0], THREE[1], THREE[0]])

    assert endpoint(config_endpoint).resolve(timeout=2) == THREE_NODES


def test_config_endpoint__aws_example_reply(config_endpoint):
    config_endpoint.set_raw(AWS_EXAMPLE)

    assert endpoint(config_endpoint).watch(None, timeout=2) == (12, AWS_NODES)


@pytest.mark.parametrize("sizes", [(1,), (2,), (3,), (1, 2, 3), (3, 1, 2)])
def test_config_endpoint__reply_in_small_pieces(config_endpoint, sizes):
    config_endpoint.set_nodes(THREE, version=9)
    config_endpoint.chunk_sizes = sizes

    assert endpoint(config_endpoint).watch(None, timeout=5) == (9, THREE_NODES)


def test_config_endpoint__legacy_engine_uses_get(config_endpoint):
    """Engine 1.4.5 answers ERROR to "config get cluster" and serves the legacy key."""
    config_endpoint.legacy = True
    config_endpoint.set_nodes(THREE, version=4)

    result = endpoint(config_endpoint).watch(None, timeout=2)

    assert result == (4, THREE_NODES)
    assert config_endpoint.commands == [b"config get cluster", b"get AmazonElastiCache:cluster"]
    assert config_endpoint.connections == 1


def test_config_endpoint__plain_memcached_is_refused(config_endpoint):
    config_endpoint.plain = True

    with pytest.raises(SourceError, match="not an ElastiCache configuration endpoint") as info:
        endpoint(config_endpoint).resolve(timeout=2)

    assert info.value.source == f"elasticache://127.0.0.1:{config_endpoint.port}"
    assert "fallback=single" in str(info.value)


def test_config_endpoint__fallback_single_uses_the_endpoint(config_endpoint):
    config_endpoint.plain = True
    source = endpoint(config_endpoint, fallback="single")

    assert source.watch(None, timeout=2) == (None, [Node("127.0.0.1", config_endpoint.port)])


def test_config_endpoint__not_an_endpoint_is_permanent(config_endpoint):
    config_endpoint.plain = True

    with pytest.raises(SourceError) as info:
        endpoint(config_endpoint).resolve(timeout=2)

    assert info.value.permanent, "asking again cannot turn memcached into an endpoint"


def test_config_endpoint__fallback_single_warns_once_per_outage(config_endpoint, caplog):
    """Polling a plain memcached with fallback=single: one WARNING, not one per poll."""
    source = endpoint(config_endpoint, fallback="single")
    config_endpoint.plain = True

    with caplog.at_level(logging.DEBUG, logger="cache_settings.sources.config_endpoint"):
        for _ in range(5):
            source.watch(None, timeout=2)
        config_endpoint.plain = False
        config_endpoint.set_nodes(THREE)
        source.watch(None, timeout=2)
        config_endpoint.plain = True
        source.watch(None, timeout=2)
        source.watch(None, timeout=2)

    levels = [
        logging.getLevelName(r.levelno)
        for r in caplog.records
        if "not an ElastiCache configuration endpoint" in r.getMessage()
    ]
    assert levels == ["WARNING", *["DEBUG"] * 4, "WARNING", "DEBUG"]
    assert any(
        "answers as a configuration endpoint again" in r.getMessage() for r in caplog.records
    )


def test_config_endpoint__each_source_warns_for_itself(config_endpoint, caplog):
    config_endpoint.plain = True

    with caplog.at_level(logging.WARNING, logger="cache_settings.sources.config_endpoint"):
        endpoint(config_endpoint, fallback="single").resolve(timeout=2)
        endpoint(config_endpoint, fallback="single").resolve(timeout=2)

    assert len(caplog.records) == 2


def test_config_endpoint__fallback_single_ignored_for_a_real_endpoint(config_endpoint):
    config_endpoint.set_nodes(THREE)

    assert endpoint(config_endpoint, fallback="single").resolve(timeout=2) == THREE_NODES


def test_config_endpoint__address_hostname_drops_ips(config_endpoint):
    config_endpoint.set_nodes(THREE)

    nodes = endpoint(config_endpoint, address="hostname").resolve(timeout=2)

    assert [node.location for node in nodes] == [
        "n1.example:11211",
        "n2.example:11211",
        "n3.example:11212",
    ]


def test_config_endpoint__early_close(config_endpoint):
    config_endpoint.set_raw(AWS_EXAMPLE[:40], close=True)

    with pytest.raises(SourceError, match=r"reply ended after 18 of 136 bytes"):
        endpoint(config_endpoint).resolve(timeout=2)


def test_config_endpoint__close_before_end_line(config_endpoint):
    config_endpoint.set_raw(AWS_EXAMPLE[:-3], close=True)

    with pytest.raises(SourceError, match="before its END line"):
        endpoint(config_endpoint).resolve(timeout=2)


def test_config_endpoint__close_without_reply(config_endpoint):
    config_endpoint.set_raw(b"", close=True)

    with pytest.raises(SourceError, match="connection closed before a complete reply line"):
        endpoint(config_endpoint).resolve(timeout=2)


def test_config_endpoint__length_too_short(config_endpoint):
    config_endpoint.set_raw(AWS_EXAMPLE.replace(b" 136\r\n", b" 130\r\n"))

    with pytest.raises(SourceError, match="wrong length"):
        endpoint(config_endpoint).resolve(timeout=2)


def test_config_endpoint__length_too_long_times_out(config_endpoint):
    """The guide's printed 147: the client waits for bytes that never come, then gives up."""
    config_endpoint.set_raw(AWS_EXAMPLE_AS_PRINTED)
    started = time.monotonic()

    with pytest.raises(SourceError, match=r"no complete answer within 0\.30 s"):
        endpoint(config_endpoint).resolve(timeout=0.3)

    assert time.monotonic() - started < 0.3 * 1.2


def test_config_endpoint__header_line_too_long(config_endpoint):
    config_endpoint.set_raw(b"X" * 5000)

    with pytest.raises(SourceError, match="reply line too long"):
        endpoint(config_endpoint).resolve(timeout=2)


_HTML = b'<!DOCTYPE HTML>\n<html lang="en">\n<head><title>Error response</title>' + b" " * 400


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n400 Bad Request", "HTTP"),
        (_HTML, "HTTP"),  # an HTTP/0.9 error page: no \r\n at all
        (b"*0\r\n", "Redis's protocol"),  # CONFIG GET of a parameter Redis does not have
        (b"-NOAUTH Authentication required.\r\n", "Redis's protocol"),
    ],
    ids=["http", "html", "redis", "redis-auth"],
)
def test_config_endpoint__another_protocol__named_with_the_fix(config_endpoint, reply, words):
    """Read as "reply line too long" or "unexpected reply", naming neither peer nor fix."""
    config_endpoint.set_raw(reply, close=True)

    with pytest.raises(
        SourceError, match=f"not a configuration endpoint: it speaks {words}"
    ) as info:
        endpoint(config_endpoint).resolve(timeout=2)

    assert info.value.permanent  # no retry makes it speak memcached


def test_config_endpoint__pointed_at_a_consul_agent__says_it_speaks_http(consul_agent):
    source = parse_source(f"elasticache://{consul_agent.address}")

    with pytest.raises(SourceError, match="it speaks HTTP .a Consul agent, a web server.."):
        source.resolve(timeout=2)


def test_config_endpoint__oversize_reply_refused(config_endpoint):
    config_endpoint.set_raw(b"CONFIG cluster 0 %d\r\n" % (DEFAULT_MAX_REPLY_SIZE * 4))

    with pytest.raises(SourceError, match=r"larger than \d+ bytes \(max_reply_size\)"):
        endpoint(config_endpoint).resolve(timeout=2)


@pytest.mark.parametrize("reply", MALFORMED_REPLIES[8:])
def test_config_endpoint__malformed_reply_is_source_error(config_endpoint, reply):
    config_endpoint.set_raw(reply, close=True)

    with pytest.raises(SourceError):
        endpoint(config_endpoint).resolve(timeout=2)


def test_config_endpoint__connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused

        with pytest.raises(SourceError, match="cannot reach the endpoint") as info:
            ConfigEndpoint("127.0.0.1", port).resolve(timeout=2)

    assert info.value.source == f"elasticache://127.0.0.1:{port}"


def test_config_endpoint__unknown_name():
    with pytest.raises(SourceError, match="unknown host name") as unknown:
        ConfigEndpoint("no-such-host.invalid").resolve(timeout=2)

    assert unknown.value.permanent, "no retry can make the name exist"


def source_at(address: str, **kwargs: object) -> ConfigEndpoint:
    host, _, port = address.rpartition(":")
    return ConfigEndpoint(host, int(port), **kwargs)  # type: ignore[arg-type]


@pytest.mark.usefixtures("without_collections")
@pytest.mark.parametrize("timeout", [0.2, 0.5])
def test_config_endpoint__black_hole_within_timeout(faults: Faults, timeout: float):
    address = faults.blackhole()
    started = time.monotonic()

    with pytest.raises(SourceError, match="no complete answer within"):
        source_at(address).resolve(timeout=timeout)

    elapsed = time.monotonic() - started
    assert timeout * 0.9 <= elapsed <= timeout + LATE


def test_config_endpoint__refused_through_faults(faults: Faults):
    with pytest.raises(SourceError, match="cannot reach the endpoint.*refused"):
        source_at(faults.refused()).resolve(timeout=2)


def test_config_endpoint__reset_by_peer(config_endpoint, faults: Faults):
    config_endpoint.set_nodes(THREE)
    proxy = faults.proxy(config_endpoint.address, reset=True)

    with pytest.raises(SourceError, match="connection to the endpoint was reset|connection closed"):
        source_at(proxy.address).resolve(timeout=2)


def test_config_endpoint__reply_cut_by_proxy(config_endpoint, faults: Faults):
    config_endpoint.set_nodes(THREE, version=3)
    full = config_endpoint.reply()
    header = full.index(b"\r\n") + 2
    length = len(full) - header - len(b"\r\nEND\r\n")
    proxy = faults.proxy(config_endpoint.address, cut_after=header + 10)

    with pytest.raises(SourceError, match=f"reply ended after 10 of {length} bytes"):
        source_at(proxy.address).resolve(timeout=2)


def test_config_endpoint__through_chunking_proxy(config_endpoint, faults: Faults):
    config_endpoint.set_nodes(THREE, version=3)
    proxy = faults.proxy(config_endpoint.address, chunk=2)

    assert source_at(proxy.address).watch(None, timeout=5) == (3, THREE_NODES)


def test_config_endpoint__end_to_end_with_real_memcached(config_endpoint, memcached_nodes):
    """The stand-in lists real daemons; clients built from Node.location use them."""
    import pylibmc
    from pymemcache.client.hash import HashClient

    config_endpoint.set_nodes(
        [(f"node{i}.local", n.host, n.port) for i, n in enumerate(memcached_nodes)]
    )

    nodes = endpoint(config_endpoint).resolve(timeout=2)

    locations = [node.location for node in nodes]
    assert sorted(locations) == sorted(f"{n.host}:{n.port}" for n in memcached_nodes)
    pymemcache_client = HashClient(locations, connect_timeout=2, timeout=2)
    try:
        pymemcache_client.set("config-endpoint-e2e", b"pymemcache")
        assert pymemcache_client.get("config-endpoint-e2e") == b"pymemcache"
    finally:
        pymemcache_client.close()
    pylibmc_client = pylibmc.Client(locations, behaviors={"ketama": True})
    try:
        pylibmc_client.set("config-endpoint-e2e-2", b"pylibmc")
        assert pylibmc_client.get("config-endpoint-e2e-2") == b"pylibmc"
    finally:
        pylibmc_client.disconnect_all()


def test_config_endpoint__real_memcached_is_not_an_endpoint(memcached_nodes):
    """Stock memcached answers ERROR and END: the same refusal as the stand-in's."""
    node = memcached_nodes[0]

    with pytest.raises(SourceError, match="not an ElastiCache configuration endpoint"):
        ConfigEndpoint(node.host, node.port).resolve(timeout=2)


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture
def tls_endpoint(tls_files: TLSFiles) -> Iterator[ConfigEndpointServer]:
    """A TLS stand-in whose certificate names localhost and 127.0.0.1 (``tls_files``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    with ConfigEndpointServer(ssl_context=context) as server:
        server.set_nodes(THREE, version=2)
        yield server


def test_config_endpoint__tls_with_right_ca(tls_endpoint, tls_files):
    source = ConfigEndpoint("localhost", tls_endpoint.port, tls=TLSConfig(ca=tls_files.ca))

    version, nodes = source.watch(None, timeout=3)

    assert version == 2
    assert all(node.tls for node in nodes)
    assert [node.location for node in nodes] == [
        "n1.example:11211",
        "n2.example:11211",
        "n3.example:11212",
    ]
    assert [node.ip for node in nodes] == ["10.0.0.1", "10.0.0.2", None]


def test_config_endpoint__tls_with_unknown_ca(tls_endpoint, tls_files):
    source = ConfigEndpoint("localhost", tls_endpoint.port, tls=TLSConfig(ca=tls_files.other_ca))

    with pytest.raises(
        SourceError, match="TLS with the endpoint failed: certificate verify failed"
    ):
        source.resolve(timeout=3)

    assert tls_endpoint.commands == []


def test_config_endpoint__tls_checks_the_host_name(tls_ca, tls_files):
    """A certificate for another name is refused even when its CA is trusted."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("cfg.elsewhere.test").configure_cert(context)
    with ConfigEndpointServer(ssl_context=context) as server:
        server.set_nodes(THREE)
        source = ConfigEndpoint("localhost", server.port, tls=TLSConfig(ca=tls_files.ca))

        with pytest.raises(SourceError, match="certificate verify failed.*mismatch"):
            source.resolve(timeout=3)

        assert server.commands == []


def test_config_endpoint__tls_against_plain_tcp(config_endpoint, tls_files):
    config_endpoint.set_nodes(THREE)
    source = ConfigEndpoint("localhost", config_endpoint.port, tls=TLSConfig(ca=tls_files.ca))

    with pytest.raises(SourceError, match=r"TLS|no complete answer|reset|closed"):
        source.resolve(timeout=1)


def test_config_endpoint__plain_against_tls_endpoint_says_add_tls(tls_endpoint):
    """A cluster with in-transit encryption hangs up on plain text: the error says tls=true."""
    source = ConfigEndpoint("localhost", tls_endpoint.port)

    with pytest.raises(SourceError, match=r"add \?tls=true") as caught:
        source.resolve(timeout=3)

    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 300


def test_config_endpoint__a_refused_connection_says_nothing_of_tls(faults: Faults):
    """Nothing listens there: no TLS listener either, so ?tls=true would mislead."""
    with pytest.raises(SourceError, match="refused") as caught:
        source_at(faults.refused()).resolve(timeout=2)

    assert "tls" not in str(caught.value).lower()


def test_config_endpoint__a_close_with_no_reply_to_a_plain_command_says_add_tls(config_endpoint):
    """A hang-up (FIN, not a reset) right after the plain command points to TLS too."""
    config_endpoint.set_raw(b"", close=True)

    with pytest.raises(SourceError, match=r"closed before a complete reply line.*add \?tls=true"):
        endpoint(config_endpoint).resolve(timeout=2)


def test_config_endpoint__a_tls_alert_to_a_plain_command_says_add_tls(config_endpoint):
    config_endpoint.set_raw(b"\x15\x03\x03\x00\x02\x02\x32", close=True)  # alert: decode_error

    with pytest.raises(SourceError, match=r"answered in TLS; add \?tls=true"):
        endpoint(config_endpoint).resolve(timeout=2)


@pytest.mark.parametrize(
    "ip",
    [
        b"0.0.0.0",
        b"::",
        b"224.0.0.1",
        b"ff02::1",
        b"fe80::1%eth0",
        b"::ffff:0.0.0.0",  # IPv4-mapped: connects to 0.0.0.0, this host
        b"::ffff:239.1.2.3",
    ],
)
def test_parse_cluster_config__an_ip_no_client_can_reach_is_refused(ip: bytes):
    """0.0.0.0 reaches this host, a multicast group no node, a zone names the sender's NIC."""
    reply = reply_with(b"1\nn1.example|" + ip + b"|11211\n")

    with pytest.raises(SourceError, match="bad IP"):
        parse_cluster_config(reply, source="elasticache://cfg:11211")


# -- URLs --------------------------------------------------------------------------------

GOOD_URLS = [
    ("elasticache://cfg.example:11211", ConfigEndpoint("cfg.example", 11211)),
    ("elasticache://CFG.Example", ConfigEndpoint("cfg.example", 11211)),
    ("elasticache://cfg.example:11212/", ConfigEndpoint("cfg.example", 11212)),
    ("elasticache://10.0.0.5:11211", ConfigEndpoint("10.0.0.5")),
    ("elasticache://[::1]:11300", ConfigEndpoint("::1", 11300)),
    ("elasticache://cfg.example?tls=true", ConfigEndpoint("cfg.example", tls=TLSConfig())),
    (
        "elasticache://cfg.example?tls=1&ca=/etc/ca.pem&cert=/c.pem&key=/k.pem",
        ConfigEndpoint("cfg.example", tls=TLSConfig("/etc/ca.pem", "/c.pem", "/k.pem")),
    ),
    (
        "elasticache://cfg.example?ca=/etc/ca.pem",
        ConfigEndpoint("cfg.example", tls=TLSConfig("/etc/ca.pem")),
    ),
    ("elasticache://cfg.example?tls=false", ConfigEndpoint("cfg.example")),
    (
        "elasticache://cfg.example?address=hostname",
        ConfigEndpoint("cfg.example", address="hostname"),
    ),
    ("elasticache://cfg.example?fallback=single", ConfigEndpoint("cfg.example", fallback="single")),
]


@pytest.mark.parametrize(("url", "expected"), GOOD_URLS)
def test_from_url__good(url: str, expected: ConfigEndpoint):
    source = parse_source(url)

    assert source == expected
    assert parse_source(source.url) == source


def test_url__canonical():
    source = parse_source(
        "elasticache://CFG.example?fallback=single&key=/k.pem&cert=/c.pem&tls=yes"
    )

    assert (
        source.url
        == "elasticache://cfg.example:11211?tls=true&cert=/c.pem&key=/k.pem&fallback=single"
    )


BAD_URLS = [
    ("elasticache://", "no host"),
    ("elasticache:///", "no host"),
    ("elasticache://cfg.example:0", "invalid port"),
    ("elasticache://cfg.example:99999", "invalid port"),
    ("elasticache://cfg.example:abc", "invalid port"),
    ("elasticache://cfg.example/cluster", "nothing else"),
    ("elasticache://user:pw@cfg.example", "nothing else"),
    ("elasticache://cfg.example#frag", "nothing else"),
    ("elasticache://cfg_!.example", "not a host name"),
    ("elasticache://::1:11211", "brackets"),
    ("elasticache://cfg.example?tls=maybe", "true or false"),
    ("elasticache://cfg.example?tls=false&ca=/ca.pem", "need tls=true"),
    ("elasticache://cfg.example?tls=true&address=ip", "address=ip cannot be used with TLS"),
    ("elasticache://cfg.example?address=dns", "must be one of"),
    ("elasticache://cfg.example?fallback=always", "must be one of"),
    ("elasticache://cfg.example?region=us-east-1", "unknown option"),
    ("elasticache://cfg.example?tls=true&tls=false", "more than once"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_from_url__bad(url: str, message: str):
    with pytest.raises(ConfigurationError, match=message):
        ConfigEndpoint.from_url(urlsplit(url))


def test_from_url__error_hides_user_info():
    with pytest.raises(ConfigurationError) as info:
        ConfigEndpoint.from_url(urlsplit("elasticache://user:s3cret@cfg.example"))

    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": ""}, "needs the configuration endpoint"),
        ({"host": "h", "port": 0}, "port"),
        ({"host": "h", "address": "dns"}, "address"),
        ({"host": "h", "fallback": "yes"}, "fallback"),
    ],
)
def test_config_endpoint__bad_arguments(kwargs: dict[str, object], message: str):
    with pytest.raises(ConfigurationError, match=message):
        ConfigEndpoint(**kwargs)  # type: ignore[arg-type]


# -- the stand-in -------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_standin__commands_end_at_a_bare_newline_as_in_memcached(config_endpoint, ending):
    """django-elasticache sends ``version\\n``; memcached answers it, so the stand-in does."""
    config_endpoint.set_nodes(THREE)
    with socket.create_connection((config_endpoint.host, config_endpoint.port), timeout=2) as conn:
        conn.sendall(b"version" + ending)
        reply = conn.recv(100)

    assert reply == b"VERSION 1.6.22\r\n"
    assert config_endpoint.commands == [b"version"]


def _read_until(conn: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = conn.recv(4096)
        assert chunk, f"the stand-in closed the connection after {data!r}"
        data += chunk
    return data


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
def test_standin__version_and_config_get_cluster_with_bare_newlines(config_endpoint, pipelined):
    """django-elasticache's exchange, ``version\\n`` then ``config get cluster\\n``, answered."""
    config_endpoint.set_nodes(THREE, version=7)
    with socket.create_connection((config_endpoint.host, config_endpoint.port), timeout=2) as conn:
        if pipelined:
            conn.sendall(b"version\nconfig get cluster\n")
            replies = _read_until(conn, b"END\r\n")
            version, _, cluster = replies.partition(b"\r\n")
            version += b"\r\n"
        else:
            conn.sendall(b"version\n")
            version = _read_until(conn, b"\r\n")
            conn.sendall(b"config get cluster\n")
            cluster = _read_until(conn, b"END\r\n")

    assert version == b"VERSION 1.6.22\r\n"
    assert cluster == cluster_reply(THREE, 7)
    assert parse_cluster_config(cluster) == (7, THREE_NODES)
    assert config_endpoint.commands == [b"version", b"config get cluster"]
