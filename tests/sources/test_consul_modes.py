"""Consul's read modes on the health query: consistency, the agent cache, the blocking wait.

Over real HTTP against the stand-in (tests/servers/consul.py), which answers them as the
API docs' "Consistency Modes", "Agent Caching" and "Blocking Queries" say.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from cache_settings import ConfigurationError, Node, SourceError, memcached, parse_source
from cache_settings.policy import Policy
from cache_settings.sources._consul_modes import go_duration
from cache_settings.sources.consul import Consul, blocking_wait
from cache_settings.watch import BLOCKING_TIMEOUT, Watcher
from tests.helpers import wait_until
from tests.servers.consul import ConsulAgent

TOKEN = "b1gs3cr3t-0000-4c0c-a1b2-c3d4e5f60718"


def health(agent: ConsulAgent, query: str) -> tuple[int, dict[str, str], Any]:
    """GET /v1/health/service/memcached?QUERY from the stand-in: status, headers, body."""
    url = f"http://{agent.address}/v1/health/service/memcached?{query}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


# --- what is sent -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "sent", "absent"),
    [
        ({}, [], ["stale", "consistent", "leader", "cached"]),
        ({"consistency": "default"}, [], ["stale", "consistent", "leader", "cached"]),
        ({"consistency": "stale"}, ["stale"], ["consistent", "cached"]),
        ({"consistency": "consistent"}, ["consistent"], ["stale", "cached"]),
        ({"cached": True}, ["cached"], ["stale", "consistent"]),
        ({"cached": True, "consistency": "stale"}, ["stale", "cached"], ["consistent"]),
    ],
)
def test_consul__each_mode_sends_its_query_parameter(
    consul_agent: ConsulAgent, kwargs: dict[str, Any], sent: list[str], absent: list[str]
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)

    nodes = Consul("memcached", agent=consul_agent.address, **kwargs).resolve(timeout=2)

    assert nodes == [Node("10.0.0.1", 11211)]
    if not consul_agent.real:
        request = consul_agent.health_requests("memcached")[-1]
        assert [name for name in sent if request.has(name)] == sent
        assert [name for name in absent if request.has(name)] == []
        assert request.params("passing") == ["1"]  # the other options are still sent


def test_consul__stale_reads_answer_without_a_leader_default_reads_do_not(
    consul_agent: ConsulAgent,
) -> None:
    """API docs, "Consistency Modes": stale lets any server answer, even without a quorum."""
    consul_agent.add("memcached", "10.0.0.1", 11211)
    consul_agent.needs_standin("a cluster without a leader")
    consul_agent.lose_leader(last_contact=1500)

    stale = Consul("memcached", agent=consul_agent.address, consistency="stale").resolve(timeout=2)
    cached = Consul("memcached", agent=consul_agent.address, cached=True).resolve(timeout=2)
    with pytest.raises(SourceError, match="500 No cluster leader"):
        Consul("memcached", agent=consul_agent.address).resolve(timeout=2)
    with pytest.raises(SourceError, match="500 No cluster leader"):
        Consul("memcached", agent=consul_agent.address, consistency="consistent").resolve(1)

    assert stale == cached == [Node("10.0.0.1", 11211)]


def test_consul__watch_sends_the_modes_and_the_wait_on_blocking_queries(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul(
        "memcached", agent=consul_agent.address, consistency="stale", cached=True, wait=1.5
    )
    index, _ = source.watch(None, timeout=2)

    started = time.monotonic()
    new_index, nodes = source.watch(index, timeout=10)
    elapsed = time.monotonic() - started

    # Consul holds the query for wait plus up to wait/16 of jitter (the stand-in adds none).
    assert 1.4 <= elapsed < 1.5 * 17 / 16 + 1.0, elapsed
    assert (new_index, nodes) == (index, [Node("10.0.0.1", 11211)])
    if not consul_agent.real:
        request = consul_agent.health_requests("memcached")[-1]
        assert request.params("index") == [str(index)]
        assert request.params("wait") == ["1500ms"]
        assert request.has("stale")
        assert request.has("cached")


def test_consul__watch_shortens_a_wait_that_does_not_fit_in_the_timeout(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=consul_agent.address, wait=300)
    index, _ = source.watch(None, timeout=2)

    started = time.monotonic()
    source.watch(index, timeout=2)

    assert time.monotonic() - started < 2
    if not consul_agent.real:
        assert consul_agent.health_requests("memcached")[-1].params("wait") == ["1s"]


# --- a refreshing entry's watcher -------------------------------------------------------------


def test_watcher__blocking_queries_carry_the_modes_and_the_wait(
    consul_agent: ConsulAgent,
) -> None:
    service = f"mc-{uuid.uuid4().hex[:8]}"
    consul_agent.add(service, "10.0.0.1", 11211, node="n1")
    url = f"consul://{consul_agent.address}/{service}?consistency=stale&cached=true&wait=2s"
    watcher = Watcher(parse_source(url), Policy(refresh=60, deadline=2.0))

    watcher.start()
    try:
        assert wait_until(lambda: watcher.nodes == (Node("10.0.0.1", 11211),), 3.0)
        generation = watcher.generation
        time.sleep(0.3)  # the first blocking query is in flight
        consul_agent.add(service, "10.0.0.2", 11211, node="n2")
        assert watcher.wait_for_generation(generation + 1, 3.0)
    finally:
        watcher.stop(timeout=2.0)

    assert watcher.nodes == (Node("10.0.0.1", 11211), Node("10.0.0.2", 11211))
    # The bound of one blocking query: the wait, Consul's jitter, twice the margin.
    assert watcher.blocking_timeout == pytest.approx(2 + 2 / 16 + 1.0)
    if not consul_agent.real:
        blocking = [r for r in consul_agent.health_requests(service) if r.params("index")]
        assert blocking
        assert all(r.params("wait") == ["2s"] for r in blocking)
        assert all(r.has("stale") and r.has("cached") for r in blocking)


@pytest.mark.parametrize(
    ("url", "bound"),
    [
        ("consul:///mc", BLOCKING_TIMEOUT),
        ("consul:///mc?wait=10m", 600 * 17 / 16 + 1.0),
        ("consul:///mc?wait=5s", 5 * 17 / 16 + 1.0),
    ],
)
def test_watcher__bound_of_a_blocking_query_follows_the_wait(url: str, bound: float) -> None:
    source = parse_source(url)
    watcher = Watcher(source, Policy(refresh=60))

    assert watcher.blocking_timeout == pytest.approx(bound)
    assert Watcher(source, Policy(refresh=60), blocking_timeout=3.0).blocking_timeout == 3.0
    assert isinstance(source, Consul)
    if source.wait is not None:  # that bound lets the query wait exactly as asked
        assert blocking_wait(bound - 0.01, source.wait)[0] == source.wait


@pytest.mark.parametrize(
    ("timeout", "wanted", "wait"),
    [(10.0, 5.0, 5.0), (10.0, 0.25, 0.25), (3.0, 5.0, 2), (0.5, 5.0, 1), (0.5, 0.2, 0.2),
     (638.5, 600.0, 600.0), (30.0, None, 27)],
)  # fmt: skip
def test_blocking_wait__takes_the_wanted_wait_when_it_fits(
    timeout: float, wanted: float | None, wait: float
) -> None:
    assert blocking_wait(timeout, wanted)[0] == wait
    assert blocking_wait(timeout, wanted)[1] <= timeout


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected", "canonical"),
    [
        ("consul:///mc?consistency=stale", Consul("mc", consistency="stale"),
         "consul:///mc?consistency=stale"),
        ("consul:///mc?consistency=default&cached=false", Consul("mc"), "consul:///mc"),
        ("consul:///mc?cached=true&consistency=stale&wait=5m",
         Consul("mc", consistency="stale", cached=True, wait=300),
         "consul:///mc?consistency=stale&cached=true&wait=300s"),
        ("consul:///mc?consistency=consistent&wait=30", Consul("mc", consistency="consistent",
         wait=30), "consul:///mc?consistency=consistent&wait=30s"),
        ("consul:///mc?wait=1500ms", Consul("mc", wait=1.5), "consul:///mc?wait=1500ms"),
        ("consul:///mc?wait=1m30s", Consul("mc", wait=90), "consul:///mc?wait=90s"),
        (f"consul://{TOKEN}@agent/mc?tag=a&cached=1&wait=0.5",
         Consul("mc", agent="agent:8500", tags=("a",), token=TOKEN, cached=True, wait=0.5),
         "consul://agent:8500/mc?tag=a&cached=true&wait=500ms"),
    ],
)  # fmt: skip
def test_consul_url__modes_round_trip(url: str, expected: Consul, canonical: str) -> None:
    source = parse_source(url)

    assert source == expected
    assert source.url == canonical
    assert TOKEN not in source.url
    assert parse_source(source.url) == dataclasses.replace(source, token=None)
    assert parse_source(source.url).url == canonical


def test_memcached__refreshing_entry_keeps_the_modes_in_its_location(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.add("mc", "10.0.0.1", 11211)
    url = f"consul://{consul_agent.address}/mc?consistency=stale&cached=true&wait=2m"

    entry = memcached(url, refresh=60)

    assert isinstance(entry["LOCATION"], str)
    assert parse_source(entry["LOCATION"]) == Consul(
        "mc", agent=consul_agent.address, consistency="stale", cached=True, wait=120
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("consul:///mc?consistency=eventual",
         r"consistency='eventual' must be one of consistent, default, stale"),
        ("consul:///mc?consistency=", r"option consistency= is empty"),
        ("consul:///mc?cached=true&consistency=consistent",
         r"cached=true cannot go with consistency=consistent: Consul refuses \?cached"),
        ("consul:///mc?cached=maybe", r"cached='maybe' must be true or false"),
        ("consul:///mc?wait=0", r"wait=0.0 must be from 0.001 to 600 seconds"),
        ("consul:///mc?wait=0s", r"wait=0.0 must be from 0.001 to 600 seconds"),
        ("consul:///mc?wait=-5", r"wait=-5.0 must be from"),
        ("consul:///mc?wait=11m", r"wait=660.0 must be from 0.001 to 600 seconds \(1ms to 10m\)"),
        ("consul:///mc?wait=1h", r"wait=3600.0 must be from"),
        ("consul:///mc?wait=soon", r"option wait='soon' must be seconds or a duration"),
        ("consul:///mc?wait=5%20s", r"option wait='5 s' must be seconds or a duration"),
        ("consul:///mc?wait=1d", r"option wait='1d' must be seconds or a duration"),
        ("consul:///mc?wait=nan", r"option wait='nan' must be seconds or a duration"),
        # Fullwidth digits, which float() would take: Consul reads ASCII digits only.
        ("consul:///mc?wait=%EF%BC%93%EF%BC%90", r"option wait='\uff13\uff10' must be seconds"),
        ("consul:///mc?wait=1_000", r"option wait='1_000' must be seconds or a duration"),
        ("consul:///mc?wait=" + "9" * 5000, r"from 0.001 to 600"),
        ("consul:///mc?wait=", r"option wait= is empty"),
    ],
)  # fmt: skip
def test_consul_url__bad_modes_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_source(url)

    text = str(info.value)
    assert text.startswith("consul:///mc?")
    assert len(text) < 600  # whatever the URL holds
    assert text.isprintable()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"consistency": "STALE"}, r"^consul: consistency='STALE' must be one of default, stale"),
        ({"consistency": "consistent", "cached": True}, r"^consul: cached=true cannot go with"),
        ({"cached": "yes"}, r"^consul: cached='yes' must be True or False"),
        ({"wait": 0}, r"^consul: wait=0 must be from 0.001 to 600 seconds"),
        ({"wait": 600.5}, r"wait=600.5 must be from"),
        ({"wait": math.inf}, r"wait=inf must be a number of seconds"),
        ({"wait": "30s"}, r"wait='30s' must be a number of seconds"),
        ({"wait": True}, r"wait=True must be a number of seconds"),
        ({"wait": 10**400}, r"wait=an integer of 1329 bits must be a number of seconds"),
        ({"consistency": "x" * 100_000}, r"consistency='x{59}\.\.\. \(100002 characters\)"),
    ],
)
def test_consul__bad_mode_arguments_are_configuration_errors(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Consul("mc", **kwargs)

    assert len(str(info.value)) < 600


def test_consul__wait_is_kept_to_the_millisecond() -> None:
    assert Consul("mc", wait=2.0004).wait == 2.0
    assert Consul("mc", wait=600).url == "consul:///mc?wait=600s"
    assert [go_duration(s) for s in (27, 0.001, 1.5, 90, 0.25)] == [
        "27s", "1ms", "1500ms", "90s", "250ms",
    ]  # fmt: skip


# --- the stand-in answers as Consul documents -------------------------------------------------


def test_standin__stale_read_reports_last_contact_and_leader(consul_agent: ConsulAgent) -> None:
    consul_agent.needs_standin("stand-in headers")
    consul_agent.add("memcached", "10.0.0.1", 11211)

    _, default, _ = health(consul_agent, "passing=1")
    _, consistent, _ = health(consul_agent, "consistent")
    consul_agent.lose_leader(last_contact=250)
    status, stale, body = health(consul_agent, "stale")
    no_leader = health(consul_agent, "passing=1")

    assert default["X-Consul-Effective-Consistency"] == "leader"
    assert default["X-Consul-Knownleader"] == "true"
    assert consistent["X-Consul-Effective-Consistency"] == "consistent"
    assert (status, len(body)) == (200, 1)
    assert stale["X-Consul-Effective-Consistency"] == "stale"
    assert stale["X-Consul-Knownleader"] == "false"
    assert stale["X-Consul-Lastcontact"] == "250"
    assert no_leader[0] == 500
    assert no_leader[2] == "No cluster leader"


def test_standin__cached_read_misses_then_hits_with_an_age(consul_agent: ConsulAgent) -> None:
    consul_agent.needs_standin("stand-in headers")
    consul_agent.add("memcached", "10.0.0.1", 11211)

    _, first, _ = health(consul_agent, "cached&passing=1")
    _, second, _ = health(consul_agent, "cached&passing=1")
    consul_agent.cut_off_cache(42)
    _, third, body = health(consul_agent, "passing=1&cached")
    _, plain, _ = health(consul_agent, "passing=1")

    assert first["X-Cache"] == "MISS"
    assert "Age" not in first
    assert second["X-Cache"] == "HIT"
    assert second["Age"] == "0"
    assert third["X-Cache"] == "HIT"
    assert third["Age"] == "42"
    assert third["X-Consul-Effective-Consistency"] == "stale"
    assert len(body) == 1
    assert "X-Cache" not in plain


@pytest.mark.parametrize(
    ("query", "message"),
    [("stale&consistent", "Cannot specify ?stale with ?consistent, conflicting semantics."),
     ("cached&consistent", "Cannot specify ?cached with ?consistent, conflicting semantics.")],
)  # fmt: skip
def test_standin__conflicting_modes_are_refused_as_consul_does(
    consul_agent: ConsulAgent, query: str, message: str
) -> None:
    consul_agent.needs_standin("stand-in answers")

    assert health(consul_agent, query)[::2] == (400, message)
