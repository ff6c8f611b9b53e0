"""DNS sources against a real dnsmasq (or CACHE_SETTINGS_DNS_SERVER) through dnspython."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_settings import (
    ConfigurationError,
    Node,
    ResolutionError,
    SourceError,
    memcached,
    parse_source,
    resolve,
)
from cache_settings.attempt import Attempt, run
from cache_settings.policy import Policy
from cache_settings.snapshot import write_snapshot
from cache_settings.sources.dns import DNS
from cache_settings.watch import Watcher
from cache_settings.watchers import stop_all
from tests.helpers import LATE, django_cache, wait_until
from tests.servers.dns import MISSING_NAME, DNSServer
from tests.servers.memcached import MemcachedServer

ROOT = Path(__file__).resolve().parents[2]


def source(url: str, server: DNSServer) -> DNS:
    joined = "&" if "?" in url else "?"
    built = parse_source(f"{url}{joined}nameserver={server.address}")
    assert isinstance(built, DNS)
    return built


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        (
            "dns://Memcached.Cache.svc.cluster.local.:11211",
            "dns://memcached.cache.svc.cluster.local:11211",
        ),
        ("dns+memcached.cache.svc:11211", "dns://memcached.cache.svc:11211"),
        ("dns://memcached.cache.svc", "dns://memcached.cache.svc:11211"),
        (
            "DNSSRV+_memcached._tcp.memcached.service.consul",
            "dnssrv://_memcached._tcp.memcached.service.consul",
        ),
        ("dnssrv://_memcached._tcp.mc.test:11300", "dnssrv://_memcached._tcp.mc.test:11300"),
        ("dnssrvnoa+_memcached._tcp.mc.test", "dnssrvnoa://_memcached._tcp.mc.test"),
        ("dns+mc.test:1?nameserver=10.96.0.10", "dns://mc.test:1?nameserver=10.96.0.10:53"),
        (
            "dnssrv+_mc._tcp.mc.test?nameserver=[::1]:8600",
            "dnssrv://_mc._tcp.mc.test?nameserver=[::1]:8600",
        ),
    ],
)
def test_dns__spellings_give_one_canonical_url(url: str, canonical: str) -> None:
    built = parse_source(url)

    assert isinstance(built, DNS)
    assert built.url == canonical
    assert parse_source(built.url) == built


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dns://10.0.0.1:11211", "is an IP address"),
        ("dns+[::1]:11211", "is an IP address"),
        ("dns://", "expected dns://HOST:PORT"),
        ("dns://mc.test:11211/path", "expected dns://HOST:PORT"),
        ("dns://mc.test:0", "invalid port '0'"),
        ("dns://mc.test?ttl=5", "unknown option 'ttl'"),
        ("dns://mc.test?nameserver=dns.google", "must be an IP address"),
        ("dns://mc.test?nameserver=10.0.0.1:99999", "invalid port"),
        ("dnssrv+", "expected dnssrv://_memcached._tcp.NAME"),
        ("dns://user:pw@mc.test", "expected dns://HOST:PORT"),
    ],
)
def test_dns__bad_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("?", r"\?")):
        parse_source(url)


def test_dns__parsing_and_import_do_not_load_dnspython() -> None:
    code = (
        "import sys, cache_settings\n"
        "cache_settings.parse_source('dns+mc.test:11211')\n"
        "print('dns' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"


def test_dns__missing_dnspython_names_the_extra() -> None:
    """sys.modules["dns"] = None makes "import dns" fail, as in an install without the extra."""
    code = (
        "import sys; sys.modules['dns'] = None\n"
        "import cache_settings\n"
        "try:\n"
        "    cache_settings.parse_source('dns+mc.test:11211').resolve(timeout=1)\n"
        "except cache_settings.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert 'pip install "django-cache-settings[dns]"' in out.stdout


# --- answers -------------------------------------------------------------------------------


def test_dns__every_a_and_aaaa_record_is_a_node(dns_server: DNSServer) -> None:
    name = dns_server.name()
    dns_server.set_addresses(name, ["10.0.0.3", "10.0.0.1", "10.0.0.2", "fd00::1"])

    nodes = source(f"dns+{name}:11211", dns_server).resolve(timeout=2)

    assert nodes == [
        Node("10.0.0.1", 11211),
        Node("10.0.0.2", 11211),
        Node("10.0.0.3", 11211),
        Node("fd00::1", 11211),
    ]
    assert [node.location for node in nodes][-1] == "[fd00::1]:11211"


def test_dns__only_aaaa_records_give_ipv6_nodes(dns_server: DNSServer) -> None:
    name = dns_server.name()
    dns_server.set_addresses(name, ["fd00::2", "FD00:0::1"])

    nodes = source(f"dns://{name}:11300", dns_server).resolve(timeout=2)

    assert nodes == [Node("fd00::1", 11300), Node("fd00::2", 11300)]


def test_dns__an_ipv4_mapped_aaaa_record_has_one_spelling_on_every_python(
    dns_server: DNSServer,
) -> None:
    name = dns_server.name()
    dns_server.set_addresses(name, ["::ffff:10.0.0.1"])

    nodes = source(f"dns://{name}:11300", dns_server).resolve(timeout=2)

    assert nodes == [Node("::ffff:10.0.0.1", 11300)]


def test_dns__truncated_udp_answer_is_asked_again_over_tcp(dns_server: DNSServer) -> None:
    """150 A records (2.4 kB) do not fit the 1232-byte EDNS payload: only TCP has them all."""
    name = dns_server.name()
    addresses = [f"10.1.0.{n}" for n in range(1, 151)]
    dns_server.set_addresses(name, addresses)

    nodes = source(f"dns://{name}:11211", dns_server).resolve(timeout=2)

    assert len(nodes) == 150
    assert {node.host for node in nodes} == set(addresses)


def test_dnssrv__lowest_priority_targets_with_their_ports(dns_server: DNSServer) -> None:
    # Labels that sort as a, b, c whatever the counter ("node-10" sorts before "node-9").
    a, b, c = (dns_server.name(f"node-{letter}") for letter in "abc")
    dns_server.set_addresses(a, ["10.0.1.1", "10.0.1.2"])
    dns_server.set_addresses(b, ["10.0.2.1", "fd00::21"])
    dns_server.set_addresses(c, ["10.0.3.1"])
    service = f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(service, [(a, 11211, 10, 5), (b, 11212, 10, 1), (c, 11213, 20, 5)])

    nodes = source(f"dnssrv+{service}", dns_server).resolve(timeout=2)

    assert nodes == [
        Node(a, 11211, "10.0.1.1"),
        Node(a, 11211, "10.0.1.2"),
        Node(b, 11212, "10.0.2.1"),
        Node(b, 11212, "fd00::21"),
    ]
    assert [node.location for node in nodes] == [
        "10.0.1.1:11211",
        "10.0.1.2:11211",
        "10.0.2.1:11212",
        "[fd00::21]:11212",
    ]


def test_dnssrvnoa__targets_are_host_names_and_a_port_replaces_theirs(
    dns_server: DNSServer,
) -> None:
    a, b = dns_server.name("node"), dns_server.name("node")
    service = f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(service, [(a, 11211, 0, 0), (b, 11212, 0, 0), ("other.test", 1, 1, 0)])

    plain = source(f"dnssrvnoa+{service}", dns_server).resolve(timeout=2)
    override = source(f"dnssrvnoa+{service}:11300", dns_server).resolve(timeout=2)

    # Sorted by name, whatever the names' counters ("node-10" sorts before "node-9").
    assert plain == sorted([Node(a, 11211), Node(b, 11212)], key=lambda node: node.host)
    assert override == sorted([Node(a, 11300), Node(b, 11300)], key=lambda node: node.host)


def test_dnssrv__a_target_without_addresses_fails_the_attempt(dns_server: DNSServer) -> None:
    """A shorter list would move keys to other nodes: the attempt fails instead."""
    a, b = dns_server.name("node"), dns_server.name("gone")
    dns_server.set_addresses(a, ["10.0.4.1"])
    service = f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(service, [(a, 11211, 0, 0), (b, 11211, 0, 0)])

    with pytest.raises(SourceError, match=f"NXDOMAIN: {b} does not exist"):
        source(f"dnssrv+{service}", dns_server).resolve(timeout=2)


# --- failures ------------------------------------------------------------------------------


def test_dns__nxdomain_says_so(dns_server: DNSServer) -> None:
    with pytest.raises(SourceError, match=f"NXDOMAIN: {MISSING_NAME} does not exist") as caught:
        source(f"dns+{MISSING_NAME}:11211", dns_server).resolve(timeout=2)

    assert caught.value.source.startswith(f"dns://{MISSING_NAME}:11211?nameserver=")
    assert caught.value.permanent  # resolve() does not retry it


def test_dns__nxdomain_says_etc_hosts_is_not_read(dns_server: DNSServer) -> None:
    # dns://localhost: the system resolver would answer from /etc/hosts, a DNS server does not.
    with pytest.raises(SourceError, match="in DNS only, never in /etc/hosts"):
        source(f"dns+{MISSING_NAME}:11211", dns_server).resolve(timeout=2)


def test_dns__name_without_records_of_the_type_says_no_records(dns_server: DNSServer) -> None:
    name = dns_server.name()
    dns_server.set_addresses(name, ["10.0.5.1"])
    service = f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(service, [(name, 11211, 0, 0)])

    with pytest.raises(SourceError, match=f"no SRV records for {name}; SRV names start with _"):
        source(f"dnssrv+{name}", dns_server).resolve(timeout=2)
    with pytest.raises(SourceError, match=f"no A or AAAA records for {service}; .* SRV name"):
        source(f"dns+{service}:11211", dns_server).resolve(timeout=2)


def test_dns__servfail_says_so(dns_server: DNSServer) -> None:
    name = dns_server.servfail_name

    with pytest.raises(SourceError, match=f"SERVFAIL: no nameserver answered {name} A .*SERVFAIL"):
        source(f"dns+{name}:11211", dns_server).resolve(timeout=2)


def test_dns__refused_says_so(dns_server: DNSServer) -> None:
    dns_server.name()  # only dnsmasq is known to refuse names outside its zones

    with pytest.raises(SourceError, match="no nameserver answered memcached.example A .*REFUSED"):
        source("dns+memcached.example:11211", dns_server).resolve(timeout=2)


@pytest.mark.usefixtures("without_collections")
def test_dns__silent_nameserver_fails_within_the_timeout(silent_nameserver: str) -> None:
    built = parse_source(f"dns+{MISSING_NAME}:11211?nameserver={silent_nameserver}")

    started = time.monotonic()
    with pytest.raises(SourceError, match="timeout: no answer for .* within 2.00 s") as caught:
        built.resolve(timeout=2)
    elapsed = time.monotonic() - started

    assert 1.9 < elapsed < 2.0 + LATE  # dnspython's own Resolver overran such a lifetime by 0.4 s
    assert "no answer" in caught.value.reason


def test_dns__attempt_time_left_bounds_the_lookup(silent_nameserver: str) -> None:
    built = parse_source(f"dns+{MISSING_NAME}:11211?nameserver={silent_nameserver}")

    started = time.monotonic()
    # Either the source's own bound or the runner's cancellation ends it: both say so.
    with pytest.raises(SourceError, match=r"within 0\.\d\d s"):
        run(Attempt(built.url, 0.5), lambda: built.resolve(timeout=30))

    assert time.monotonic() - started < 0.5 + 0.3  # margin: scheduling on a loaded 2-core box


def test_dns__replies_over_max_reply_size_fail(dns_server: DNSServer) -> None:
    name = dns_server.name()
    dns_server.set_addresses(name, ["10.0.6.1", "10.0.6.2"])
    built = source(f"dns+{name}:11211", dns_server)

    with pytest.raises(SourceError, match="larger than 60 bytes"):
        run(Attempt(built.url, 2, max_reply_size=60), lambda: built.resolve(timeout=2))


def test_resolve__silent_nameserver_falls_back_to_the_snapshot_within_the_deadline(
    silent_nameserver: str, tmp_path: Path
) -> None:
    built = parse_source(f"dns+mc.test:11211?nameserver={silent_nameserver}")
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, built.url, [Node("10.0.0.1", 11211)])

    started = time.monotonic()
    resolution = resolve(built, deadline=2, snapshot=snapshot)
    elapsed = time.monotonic() - started

    assert resolution.origin == "snapshot"
    assert resolution.nodes == (Node("10.0.0.1", 11211),)
    assert elapsed < 2.4
    with pytest.raises(ResolutionError, match="timeout"):
        resolve(built, deadline=0.5)


def test_resolve__an_unspecified_address_in_dns_falls_back_to_the_snapshot(
    dns_server: DNSServer, tmp_path: Path
) -> None:
    """A filtering resolver answers 0.0.0.0 (or ::) for a name it blocks: not where a node is."""
    name = dns_server.name()
    dns_server.set_addresses(name, ["0.0.0.0", "::"])
    built = source(f"dns+{name}:11211", dns_server)
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, built.url, [Node("10.0.0.1", 11211)])

    resolution = resolve(built, deadline=2, snapshot=snapshot)

    assert resolution.nodes == (Node("10.0.0.1", 11211),)
    assert resolution.origin == "snapshot"
    with pytest.raises(ResolutionError, match=r"'0\.0\.0\.0', '::', which no memcached node"):
        resolve(built, attempts=1, deadline=2)


@pytest.mark.parametrize("mapped", ["::ffff:0.0.0.0", "::ffff:224.0.0.1"])
def test_resolve__an_ipv4_mapped_address_no_node_has_is_refused_as_its_ipv4_form(
    dns_server: DNSServer, mapped: str
) -> None:
    """An AAAA record ::ffff:0.0.0.0 connects to this host (as 0.0.0.0 does), ::ffff:224.0.0.1
    to a multicast group; ipaddress calls neither unspecified nor multicast, so both were
    nodes."""
    name = dns_server.name()
    dns_server.set_addresses(name, ["10.0.0.1", mapped])

    with pytest.raises(ResolutionError, match="which no memcached node has") as raised:
        resolve(source(f"dns+{name}:11211", dns_server), attempts=1, deadline=2)

    assert f"'{mapped}'" in str(raised.value)


# --- following changes ---------------------------------------------------------------------


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    made: list[Watcher] = []
    yield made
    for watcher in made:
        watcher.stop()


def test_watcher__removed_a_record_disappears_within_refresh(
    dns_server: DNSServer, watchers: list[Watcher]
) -> None:
    name = dns_server.name()
    dns_server.set_addresses(name, ["10.0.7.1", "10.0.7.2", "10.0.7.3"])
    watcher = Watcher(source(f"dns+{name}:11211", dns_server), Policy(refresh=0.5))
    watchers.append(watcher)
    watcher.start()
    assert len(watcher.nodes) == 3

    dns_server.set_addresses(name, ["10.0.7.1", "10.0.7.3"])
    removed = time.monotonic()

    assert wait_until(lambda: len(watcher.nodes) == 2, timeout=0.5 + 2)
    assert time.monotonic() - removed < 0.5 * 1.1 + 2
    assert [node.host for node in watcher.nodes] == ["10.0.7.1", "10.0.7.3"]


def test_backend__follows_srv_records_of_real_memcached_nodes(
    dns_server: DNSServer, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    names = [dns_server.name("node") for _ in fresh_memcached_nodes]
    for name in names:
        dns_server.set_addresses(name, ["127.0.0.1"])
    records = [(n, s.port, 0, 0) for n, s in zip(names, fresh_memcached_nodes, strict=True)]
    service = f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(service, records)
    url = source(f"dnssrv+{service}", dns_server).url

    with django_cache(dict(memcached(url, refresh=0.3, backend="pymemcache"))) as cache:
        cache.set("key", "value")
        assert cache.get("key") == "value"
        everyone = sorted(server.location for server in fresh_memcached_nodes)
        assert sorted(cache.client_servers) == everyone  # type: ignore[attr-defined]

        dns_server.set_srv(service, records[:2])
        kept = sorted(server.location for server in fresh_memcached_nodes[:2])

        def dropped() -> bool:
            cache.get("key")  # an operation lets the backend pick up the new generation
            return sorted(cache.client_servers) == kept  # type: ignore[attr-defined]

        assert wait_until(dropped, timeout=0.3 + 2)
    stop_all(timeout=2)


def test_dnssrvnoa__a_target_that_is_not_a_host_name_fails_the_attempt(
    dns_server: DNSServer,
) -> None:
    # dnsmasq serves the name as given; "/" is no host name character (a client would read
    # "/tmp/..." as a unix socket path).
    service = f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(service, [("tmp/evil.test", 11211, 0, 0)])

    with pytest.raises(SourceError, match="is not a host name"):
        source(f"dnssrvnoa+{service}", dns_server).resolve(timeout=2)
