"""Source chains: the rules of a chain, and resolve()/memcached() over one.

A chain's refreshing backends and watchers are tested in ``test_chain_watch.py``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from cache_settings import (
    ConfigurationError,
    Node,
    ResolutionError,
    SourceError,
    memcached,
    resolve,
)
from cache_settings.chain import Chain, as_source, members, source_urls
from cache_settings.checks import check_fallbacks, check_snapshots
from cache_settings.cli import main
from cache_settings.snapshot import load_snapshot, write_snapshot
from cache_settings.sources import parse_source
from tests import helpers
from tests.helpers import django_cache
from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.consul import ConsulAgent
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

NODES = [Node("10.0.0.1", 11211), Node("10.0.0.2", 11211)]
OTHER = [Node("10.0.9.9", 11211)]


@dataclass
class Scripted(helpers.Scripted):
    url: str = "scripted://one"


@dataclass
class Hanging(helpers.Hanging):
    url: str = "hanging://one"


def consul_url(address: str, service: str) -> str:
    return parse_source(f"consul://{address}/{service}").url


def endpoint_url(endpoint: ConfigEndpointServer) -> str:
    return parse_source(f"elasticache://{endpoint.address}").url


def serve(endpoint: ConfigEndpointServer, *servers: MemcachedServer) -> None:
    endpoint.set_nodes([(f"node-{s.port}.cache.test", s.host, s.port) for s in servers])


# --- the value and the LOCATION rule ---------------------------------------------------------


def test_as_source__a_list_is_a_chain_in_order_and_one_item_is_that_source() -> None:
    chain = as_source(["consul:///memcached", "elasticache://cfg.example:11211"])

    assert isinstance(chain, Chain)
    assert chain.url == "[consul:///memcached, elasticache://cfg.example:11211]"
    assert [m.url for m in members(chain)] == [
        "consul:///memcached",
        "elasticache://cfg.example:11211",
    ]
    assert chain.traits.needs_network
    assert as_source(["consul:///memcached"]).url == "consul:///memcached"
    nested = Chain((chain, parse_source("memcached://10.0.0.1:11211")))
    assert len(nested.members) == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "An empty list of cache sources"),
        (["consul:///mc", "consul:///mc"], "lists consul:///mc more than once"),
        (["pylibmc://10.0.0.1:11211", "pymemcache://10.0.0.2:11211"], "different clients"),
        (["consul:///mc", "pymemcache://10.0.0.2:11211?tls=true"], "disagree on TLS"),
        (["consul:///mc", "10.0.0.1:11211"], "needs a scheme"),
    ],
)
def test_as_source__chains_that_cannot_work_are_configuration_errors(
    value: list[str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        as_source(value)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("10.0.0.1:11211;10.0.0.2:11211", None),
        (["10.0.0.1:11211", "[::1]:11211", "unix:/run/mc.sock"], None),
        (
            "memcached://10.0.0.1:11211,10.0.0.2:11211",
            ["memcached://10.0.0.1:11211,10.0.0.2:11211"],
        ),
        ("dns+mc.svc.cluster.local:11211", ["dns+mc.svc.cluster.local:11211"]),
        (["consul:///mc", "DNSSRV+_mc._tcp.example"], ["consul:///mc", "DNSSRV+_mc._tcp.example"]),
        ([" consul:///mc "], ["consul:///mc"]),
    ],
)
def test_source_urls__items_with_a_scheme_or_dns_prefix_are_source_urls(
    location: Any, expected: list[str] | None
) -> None:
    assert source_urls(location, where="CACHES['default']") == expected


@pytest.mark.parametrize(
    "location",
    [["consul:///mc", "10.0.0.1:11211"], "10.0.0.1:11211,consul:///mc", ["dns+mc:11211", 11211]],
)
def test_source_urls__source_urls_mixed_with_nodes_are_a_configuration_error(
    location: Any,
) -> None:
    with pytest.raises(ConfigurationError, match="CACHES\\['default'\\]: LOCATION .* mixes"):
        source_urls(location, where="CACHES['default']")


# --- resolve() over a chain ------------------------------------------------------------------


def test_resolve_chain__first_refused_answers_from_the_second(
    consul_agent: ConsulAgent,
    config_endpoint: ConfigEndpointServer,
    faults: Faults,
    memcached_node: MemcachedServer,
    tmp_path: Path,
) -> None:
    """Issue 16, judged 4: the first source refuses connections."""
    serve(config_endpoint, memcached_node)
    first = consul_url(faults.refused(), "memcached")
    snapshot = tmp_path / "nodes.json"
    started = time.monotonic()

    resolution = resolve([first, endpoint_url(config_endpoint)], deadline=2, snapshot=snapshot)

    assert time.monotonic() - started < 1.0
    assert resolution.origin == "live"
    assert resolution.source == endpoint_url(config_endpoint)
    assert resolution.locations == [memcached_node.location]
    assert [e.source for e in resolution.errors if isinstance(e, SourceError)] == [first]
    assert list(load_snapshot(snapshot)) == [endpoint_url(config_endpoint)]  # its own entry


def test_resolve_chain__first_black_holed_costs_its_share_of_the_deadline(
    config_endpoint: ConfigEndpointServer, faults: Faults, memcached_node: MemcachedServer
) -> None:
    """Issue 16, judged 4: a black-holed first source cannot eat the whole deadline."""
    serve(config_endpoint, memcached_node)
    first = consul_url(faults.blackhole(), "memcached")
    started = time.monotonic()

    resolution = resolve([first, endpoint_url(config_endpoint)], deadline=2)

    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed <= 2.0, elapsed  # the first got half of the 2 s, no more
    assert resolution.source == endpoint_url(config_endpoint)
    assert resolution.locations == [memcached_node.location]


def test_resolve_chain__each_member_gets_the_time_left_over_the_members_left() -> None:
    first, second = Hanging("hanging://one"), Hanging("hanging://two")
    third = Scripted([NODES], url="scripted://three")

    resolution = resolve([first, second, third], deadline=1.5)

    assert first.calls == [pytest.approx(0.5, abs=0.05)]
    assert second.calls == [pytest.approx(0.5, abs=0.05)]
    assert third.calls == [pytest.approx(0.5, abs=0.1)]
    assert resolution.source == "scripted://three"


def test_resolve_chain__the_first_live_answer_wins(
    consul_agent: ConsulAgent, config_endpoint: ConfigEndpointServer, memcached_nodes: Any
) -> None:
    service = f"mc-{uuid.uuid4().hex[:8]}"
    consul_agent.add(service, "10.7.0.1", 11211)
    serve(config_endpoint, memcached_nodes[0])

    resolution = resolve([consul_url(consul_agent.address, service), endpoint_url(config_endpoint)])

    assert resolution.source == consul_url(consul_agent.address, service)
    assert resolution.locations == ["10.7.0.1:11211"]
    assert config_endpoint.commands == []  # the second was never asked


def test_resolve_chain__rounds_are_retried_and_a_permanent_failure_is_not_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = Scripted(["permanent: no such service"], url="scripted://one")
    second = Scripted(["refused", "refused", NODES], url="scripted://two")
    caplog.set_level(logging.INFO, "cache_settings")

    resolution = resolve([first, second], attempts=3, deadline=5)

    assert len(first.calls) == 1
    assert len(second.calls) == 3
    assert resolution.source == "scripted://two"
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries[0].startswith("[scripted://one, scripted://two]: attempt 1 failed")
    assert "scripted://two: refused" in retries[0]
    assert any("answered by scripted://two" in r.getMessage() for r in caplog.records)


def test_resolve_chain__permanent_failures_everywhere_end_the_attempts_at_once() -> None:
    first = Scripted(["permanent: denied"], url="scripted://one")
    second = Scripted(["permanent: denied"], url="scripted://two")

    with pytest.raises(ResolutionError) as raised:
        resolve([first, second], attempts=5)

    assert (len(first.calls), len(second.calls)) == (1, 1)
    message = str(raised.value)
    assert message.startswith("[scripted://one, scripted://two]: no node list could be resolved")
    assert "(2 attempts: scripted://one: permanent: denied; scripted://two: permanent" in message


def test_resolve_chain__snapshot_fallback_takes_the_first_usable_entry_in_chain_order(
    tmp_path: Path,
) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "scripted://two", NODES[:1], fetched_at=time.time() - 600)
    write_snapshot(snapshot, "scripted://three", NODES)
    write_snapshot(snapshot, "scripted://four", OTHER)

    def chain() -> list[Scripted]:
        return [Scripted(["down"], url=f"scripted://{n}") for n in ("one", "two", "three", "four")]

    # two is the first entry in chain order (one has none), whatever its age.
    assert resolve(chain(), attempts=1, snapshot=snapshot).source == "scripted://two"
    # max_age applies: two is too old, three stands in.
    older = resolve(chain(), attempts=1, snapshot=snapshot, max_age=60)
    assert (older.origin, older.source, older.nodes) == (
        "snapshot",
        "scripted://three",
        tuple(NODES),
    )
    # min_nodes applies: two has one node, three has two.
    assert resolve(chain(), attempts=1, snapshot=snapshot, min_nodes=2).source == "scripted://three"
    # None of them: the message says why for each.
    with pytest.raises(ResolutionError) as raised:
        resolve(chain(), attempts=1, snapshot=snapshot, min_nodes=3)
    message = str(raised.value)
    assert "no usable entry in the snapshot for any of its 4 sources" in message
    assert f"--snapshot {snapshot}` to refresh it" in message
    assert "scripted://one: it holds no list for this source" in message
    assert "scripted://four: its list has 1 node(s), fewer than min_nodes=3" in message


def test_resolve_chain__offline_reads_static_members_and_snapshots_without_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "scripted://two", NODES)
    monkeypatch.setenv("CACHE_SETTINGS_OFFLINE", "1")
    first, second = Scripted([OTHER], url="scripted://one"), Scripted([OTHER], url="scripted://two")

    resolution = resolve([first, second], snapshot=snapshot)

    assert first.calls == second.calls == []
    assert (resolution.origin, resolution.source) == ("snapshot", "scripted://two")
    static = resolve([first, "memcached://10.0.0.5:11211"], snapshot=snapshot)
    assert (static.origin, static.locations) == ("live", ["10.0.0.5:11211"])


def test_chain_resolve__one_round_as_a_plain_source() -> None:
    chain = Chain((Scripted(["down"]), Scripted([NODES], url="scripted://two")))

    assert chain.resolve(timeout=1.0) == NODES


# --- memcached() over a chain ----------------------------------------------------------------


@pytest.mark.parametrize("client", ["pylibmc", "pymemcache"])
def test_memcached_chain__entry_from_the_second_source_works_through_django(
    client: Literal["pylibmc", "pymemcache"],
    config_endpoint: ConfigEndpointServer,
    faults: Faults,
    fresh_memcached_node: MemcachedServer,
) -> None:
    serve(config_endpoint, fresh_memcached_node)
    first = f"consul://{faults.refused()}/memcached?token=s3cret"

    entry = memcached([first, f"elasticache://{config_endpoint.address}"], backend=client)

    assert entry["LOCATION"] == [fresh_memcached_node.location]
    with django_cache(dict(entry)) as cache:
        cache.set("chained", 1)
        assert cache.get("chained") == 1
    assert cache.make_key("chained") in fresh_memcached_node.keys()


def test_check_snapshots__a_chain_needs_an_entry_for_one_member_only(
    config_endpoint: ConfigEndpointServer,
    faults: Faults,
    memcached_node: MemcachedServer,
    tmp_path: Path,
) -> None:
    """W001 looks for the chain's members' entries, not for the chain's own URL."""
    serve(config_endpoint, memcached_node)
    snapshot = tmp_path / "nodes.json"
    unique = f"mc-{uuid.uuid4().hex[:8]}"
    memcached(
        [f"consul://{faults.refused()}/{unique}", f"elasticache://{config_endpoint.address}"],
        snapshot=snapshot,
    )

    warnings = [m for m in check_snapshots() if unique in str(m.obj)]

    assert warnings == []
    other = tmp_path / "other.json"
    alive = [f"consul://{faults.refused()}/{unique}-2", f"elasticache://{config_endpoint.address}"]
    memcached(alive, snapshot=other)
    other.unlink()  # no member has an entry any more
    assert [m.id for m in check_snapshots() if f"{unique}-2" in str(m.obj)] == [
        "cache_settings.W001"
    ]
    # A chain that failed is W005, whose message says why no member's entry stood in.
    down = [f"consul://{faults.refused()}/{unique}-3", f"consul://{faults.refused()}/{unique}-4"]
    memcached(down, snapshot=tmp_path / "down.json", attempts=1, on_failure="dummy")
    assert [m.id for m in check_snapshots() if f"{unique}-3" in str(m.obj)] == []
    [fallback] = [m for m in check_fallbacks() if f"{unique}-3" in str(m.obj)]
    assert fallback.id == "cache_settings.W005"
    assert f"snapshot {tmp_path / 'down.json'} does not exist; run `cache-settings" in fallback.msg


# --- the command line ------------------------------------------------------------------------


def test_cli_chain__resolve_and_check_take_several_urls(
    config_endpoint: ConfigEndpointServer,
    faults: Faults,
    memcached_node: MemcachedServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve(config_endpoint, memcached_node)
    first = f"consul://{faults.refused()}/memcached"
    second = parse_source(f"elasticache://{config_endpoint.address}").url
    snapshot = str(tmp_path / "nodes.json")

    status = main(["resolve", first, second, "--snapshot", snapshot, "--deadline", "1", "--json"])

    out = json.loads(capsys.readouterr().out)
    assert status == 0
    assert out["results"][0]["source"] == f"[{parse_source(first).url}, {second}]"
    assert out["results"][0]["answered_by"] == second
    assert out["results"][0]["locations"] == [memcached_node.location]
    assert list(load_snapshot(snapshot)) == [second]
    status = main(["check", first, second, "--snapshot", snapshot, "--deadline", "1", "--json"])
    assert status == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["status"] == "same"
