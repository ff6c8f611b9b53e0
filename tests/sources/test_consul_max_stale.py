"""max_stale: a stale or cached Consul answer older than the bound is asked again of the leader.

Over real HTTP against the stand-in (tests/servers/consul.py), which reports how far behind
a follower is (``X-Consul-LastContact``) and how long its cache has been cut off (``Age``), as
the API docs' "Consistency Modes" and "Agent Caching" say.
"""

from __future__ import annotations

import http.client
import logging
import math
import time
from typing import Any

import pytest

from cache_settings import ConfigurationError, Node, SourceError, parse_source
from cache_settings.sources._consul_modes import staleness
from cache_settings.sources.consul import Consul
from tests.servers.consul import ConsulAgent


def modes_asked(agent: ConsulAgent) -> list[set[str]]:
    """The mode parameters of every health query the stand-in received, in order."""
    wanted = {"stale", "cached", "consistent"}
    return [{k for k, _ in r.query} & wanted for r in agent.health_requests("memcached")]


@pytest.mark.parametrize(
    ("kwargs", "behind"),
    [({"consistency": "stale"}, 250), ({"cached": True}, 0)],
)
def test_consul__an_answer_within_max_stale_is_used(
    consul_agent: ConsulAgent, kwargs: dict[str, Any], behind: int
) -> None:
    consul_agent.needs_standin("stand-in staleness")
    consul_agent.add("memcached", "10.0.0.1", 11211)
    consul_agent.fall_behind(behind)
    source = Consul("memcached", agent=consul_agent.address, max_stale=1, **kwargs)

    assert source.resolve(timeout=2) == [Node("10.0.0.1", 11211)]
    assert len(modes_asked(consul_agent)) == 1


def test_consul__a_follower_too_far_behind_is_overruled_by_the_leader(
    consul_agent: ConsulAgent, caplog: pytest.LogCaptureFixture
) -> None:
    consul_agent.needs_standin("stand-in staleness")
    consul_agent.add("memcached", "10.0.0.1", 11211)
    consul_agent.fall_behind(5000)
    source = parse_source(
        f"consul://{consul_agent.address}/memcached?consistency=stale&max_stale=2s"
    )

    with caplog.at_level(logging.WARNING, "cache_settings"):
        nodes = source.resolve(timeout=2)

    assert nodes == [Node("10.0.0.1", 11211)]
    assert modes_asked(consul_agent) == [{"stale"}, set()]
    assert "the answer is 5s old, more than max_stale=2s; asking the leader" in caplog.text


def test_consul__a_cache_cut_off_too_long_is_overruled_by_the_servers(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.needs_standin("stand-in staleness")
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=consul_agent.address, cached=True, max_stale=60)
    source.resolve(timeout=2)  # fills the agent's cache: a miss
    consul_agent.cut_off_cache(600)

    assert source.resolve(timeout=2) == [Node("10.0.0.1", 11211)]
    assert modes_asked(consul_agent) == [{"cached"}, {"cached"}, set()]


def test_consul__without_a_leader_an_answer_too_stale_fails_and_without_max_stale_it_is_taken(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.needs_standin("stand-in staleness")
    consul_agent.add("memcached", "10.0.0.1", 11211)
    consul_agent.lose_leader(last_contact=30_000)
    bounded = Consul("memcached", agent=consul_agent.address, consistency="stale", max_stale=10)
    unbounded = Consul("memcached", agent=consul_agent.address, consistency="stale")

    with pytest.raises(SourceError, match="No cluster leader"):
        bounded.resolve(timeout=2)
    assert unbounded.resolve(timeout=2) == [Node("10.0.0.1", 11211)]


@pytest.mark.parametrize(
    ("headers", "age"),
    [
        ({"X-Consul-LastContact": "1500"}, 1.5),
        ({"Age": "42", "X-Consul-LastContact": "0"}, 42.0),
        ({"Age": "1", "X-Consul-LastContact": "3000"}, 3.0),  # the larger of the two
        ({"X-Consul-LastContact": " 7 "}, 0.007),
        ({}, None),  # an answer that does not say how old it is: too old for a bound
        ({"X-Consul-LastContact": "-5"}, None),
        ({"X-Consul-LastContact": "1e3"}, None),
        ({"X-Consul-LastContact": "\uff13"}, None),  # a fullwidth digit: not decimal ASCII
        ({"Age": "9" * 400}, math.inf),
    ],
)
def test_staleness__reads_the_documented_headers_only(
    headers: dict[str, str], age: float | None
) -> None:
    message = http.client.HTTPMessage()
    for name, value in headers.items():
        message[name] = value

    assert staleness(message) == age


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("consul:///mc?consistency=stale&max_stale=10s", "consul:///mc?consistency=stale&max_stale=10s"),
        ("consul:///mc?cached=1&max_stale=90", "consul:///mc?cached=true&max_stale=90s"),
        ("consul:///mc?consistency=stale&max_stale=1500ms", "consul:///mc?consistency=stale&max_stale=1500ms"),
        ("consul:///mc?consistency=stale&max_stale=87600h", "consul:///mc?consistency=stale&max_stale=315360000s"),
    ],
)  # fmt: skip
def test_consul_url__max_stale_round_trips(url: str, canonical: str) -> None:
    source = parse_source(url)

    assert source.url == canonical
    assert parse_source(canonical) == source


STALE = "consul:///mc?consistency=stale&max_stale="


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("consul:///mc?max_stale=10s", "max_stale bounds stale answers, and this source asks"),
        ("consul:///mc?consistency=consistent&max_stale=1", "add consistency=stale or cached"),
        (STALE + "0", r"max_stale=0.0 must be a number of seconds, at least 0.001"),
        (STALE + "-1", "at least 0.001"),
        (STALE + "soon", "option max_stale='soon' must be seconds or a duration"),
        (STALE + "nan", "option max_stale='nan' must be seconds"),
        (STALE + "9" * 5000, "at least 0.001"),
    ],
)  # fmt: skip
def test_consul_url__bad_max_stale_is_a_configuration_error(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_source(url)

    assert len(str(info.value)) < 600
    assert str(info.value).isprintable()


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "10s", True, 10**400])
def test_consul__bad_max_stale_argument_is_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError, match="max_stale="):
        Consul("mc", consistency="stale", max_stale=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("wait", "sent"), [(None, "1500ms"), (30, "1500ms"), (1, "1s")])
def test_consul__a_blocking_query_waits_at_most_max_stale(
    consul_agent: ConsulAgent, wait: float | None, sent: str
) -> None:
    """A follower cut off from the leader answers only when its wait ends: a 27 s (or 10 min)
    wait left a too-stale list in use that long, not max_stale."""
    consul_agent.needs_standin("stand-in requests")
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul(
        "memcached", agent=consul_agent.address, consistency="stale", max_stale=1.5, wait=wait
    )
    index, _ = source.watch(None, timeout=2)

    started = time.monotonic()
    source.watch(index, timeout=40)
    elapsed = time.monotonic() - started

    assert consul_agent.health_requests("memcached")[-1].params("wait") == [sent]
    assert elapsed < 1.5 * 17 / 16 + 1.0, elapsed
