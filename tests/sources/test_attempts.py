"""Attempts that end their work: sockets closed, threads returned, replies capped (issue 12).

Each network source is asked as ``resolve()`` asks it, ``attempt.run(Attempt(url, T),
lambda: source.resolve(T))``, against servers that trickle or never stop talking.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cache_settings import attempt
from cache_settings.attempt import Attempt
from cache_settings.exceptions import SourceError
from cache_settings.nodes import Node
from cache_settings.sources import Source, parse_source
from cache_settings.sources.elasticache_api import ElastiCacheAPI
from tests.helpers import LATE
from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.consul import ConsulAgent
from tests.servers.elasticache_api import ElastiCacheAPIServer
from tests.servers.faults import Faults

CALLS = 10  # the judged run makes 200 (numbers in the branch report)
DEADLINE = 0.2
ONE_BYTE_EVERY = 0.05


def _bounded(source: Source, timeout: float) -> Callable[[], object]:
    return lambda: attempt.run(Attempt(source.url, timeout), lambda: source.resolve(timeout))


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def aws_credentials(
    elasticache_api: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch
) -> ElastiCacheAPIServer:
    for name, value in elasticache_api.credentials_env.items():
        monkeypatch.setenv(name, value)
    return elasticache_api


@pytest.fixture(params=["consul", "elasticache-api", "elasticache"])
def trickling(
    request: pytest.FixtureRequest,
    faults: Faults,
    consul_agent: ConsulAgent,
    aws_credentials: ElastiCacheAPIServer,
    config_endpoint: ConfigEndpointServer,
) -> Source:
    """A source whose server sends its reply one byte every 50 ms."""
    if request.param == "consul":
        consul_agent.needs_standin("a proxy in front of the agent")
        consul_agent.add("memcached", "10.0.0.1", 11211)
        proxy = faults.proxy(consul_agent.address, chunk=1, pause=ONE_BYTE_EVERY)
        return parse_source(f"consul://{proxy.address}/memcached")
    if request.param == "elasticache-api":
        aws_credentials.add_cluster("mc", [("10.0.0.1", 11211)])
        target = aws_credentials.endpoint_url.split("//", 1)[1]
        proxy = faults.proxy(target, chunk=1, pause=ONE_BYTE_EVERY)
        return ElastiCacheAPI("mc", region="us-east-1", endpoint_url=f"http://{proxy.address}")
    config_endpoint.set_nodes([("a.cache.test", "10.0.0.1", 11211)])
    proxy = faults.proxy(config_endpoint.address, chunk=1, pause=ONE_BYTE_EVERY)
    return parse_source(f"elasticache://{proxy.address}")


@pytest.mark.usefixtures("without_collections")
def test_attempts__trickling_server_leaves_no_thread_or_descriptor(trickling: Source) -> None:
    call = _bounded(trickling, DEADLINE)
    with pytest.raises(SourceError):
        call()  # imports, sessions and pools made once, before counting
    time.sleep(1)
    threads, descriptors = threading.active_count(), _descriptors()

    slowest = 0.0
    for _ in range(CALLS):
        started = time.monotonic()
        with pytest.raises(SourceError, match="no complete answer within 0.20 s"):
            call()
        slowest = max(slowest, time.monotonic() - started)
    time.sleep(1)

    assert threading.active_count() <= threads + 2, threading.enumerate()
    assert _descriptors() <= descriptors + 2
    assert slowest <= DEADLINE + 2 * attempt.GRACE + LATE


@pytest.mark.usefixtures("without_collections")
def test_attempts__direct_call_is_bounded_as_well(trickling: Source) -> None:
    """Called without a current attempt, a source makes its own and ends with it."""
    started = time.monotonic()
    with pytest.raises(SourceError, match="no complete answer within"):
        trickling.resolve(0.3)
    elapsed = time.monotonic() - started
    time.sleep(0.5)

    assert elapsed <= 0.3 + 2 * attempt.GRACE + LATE
    assert not [t for t in threading.enumerate() if t.name.startswith("cache_settings attempt")]


ENDLESS_HEADS = {
    "consul": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 5\r\n\r\n[",
    "elasticache-api": b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<DescribeCacheClustersR",
    "elasticache": b"CONFIG cluster 0 ",  # a header line that never ends
}


def _endless_source(kind: str, address: str) -> Source:
    if kind == "consul":
        return parse_source(f"consul://{address}/memcached")
    if kind == "elasticache-api":
        return ElastiCacheAPI("mc", region="us-east-1", endpoint_url=f"http://{address}")
    return parse_source(f"elasticache://{address}")


@pytest.mark.parametrize("kind", ENDLESS_HEADS)
def test_attempts__reply_that_never_ends_is_capped(
    kind: str, faults: Faults, aws_credentials: ElastiCacheAPIServer
) -> None:
    source = _endless_source(kind, faults.endless(ENDLESS_HEADS[kind]))
    started = time.monotonic()

    with pytest.raises(SourceError, match=r"larger than \d+ bytes|reply line too long"):
        attempt.run(Attempt(source.url, 5.0), lambda: source.resolve(5.0))

    assert time.monotonic() - started < 5.0


def test_attempts__cap_is_the_attempts_max_reply_size(faults: Faults) -> None:
    source = parse_source(f"consul://{faults.endless(ENDLESS_HEADS['consul'])}/memcached")
    small = Attempt(source.url, 5.0, max_reply_size=1000)

    with pytest.raises(SourceError, match="larger than 1000 bytes"):
        attempt.run(small, lambda: source.resolve(5.0))


_RSS_PROBE = """
import json, resource, sys, time
from cache_settings import attempt
from cache_settings.attempt import Attempt
from cache_settings.exceptions import SourceError
from cache_settings.sources import parse_source

source = parse_source(sys.argv[1])
deadline = float(sys.argv[2])
try:  # imports and first use, before the baseline
    attempt.run(Attempt(source.url, 0.05), lambda: source.resolve(0.05))
except SourceError:
    pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    attempt.run(Attempt(source.url, deadline), lambda: source.resolve(deadline))
    error = None
except SourceError as exc:
    error = str(exc)
elapsed = time.monotonic() - started
time.sleep(1.0)  # an abandoned read would go on growing the process meanwhile
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": peak - before, "elapsed": elapsed, "error": error}))
"""


@pytest.mark.parametrize("deadline", [DEADLINE, 5.0])
def test_attempts__consul_reply_that_never_ends_costs_little_memory(
    faults: Faults, tmp_path: Path, deadline: float
) -> None:
    """Measured in a fresh process, up to a second after the call: peak RSS growth <= 64 MB."""
    url = f"consul://{faults.endless(ENDLESS_HEADS['consul'])}/memcached"
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(_RSS_PROBE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}

    done = subprocess.run(
        [sys.executable, str(probe), url, str(deadline)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    result = json.loads(done.stdout)

    assert result["error"] is not None
    assert result["growth_kib"] <= 64 * 1024, result
    assert result["elapsed"] <= deadline + 2 * attempt.GRACE + LATE, result


def test_attempts__hung_credential_lookup_harms_no_later_resolution(
    faults: Faults,
    elasticache_api: ElastiCacheAPIServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Issue 14, item 4: an instance-metadata lookup that never answers holds no lock."""
    elasticache_api.add_cluster("mc", [("10.0.0.1", 11211)])
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://{faults.blackhole()}/")
    monkeypatch.setenv("AWS_METADATA_SERVICE_TIMEOUT", "30")
    monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1")
    source = ElastiCacheAPI("mc", region="us-east-1", endpoint_url=elasticache_api.endpoint_url)

    started = time.monotonic()
    with pytest.raises(SourceError, match="no complete answer within 1.00 s"):
        _bounded(source, 1.0)()
    abandoned_after = time.monotonic() - started
    for name, value in elasticache_api.credentials_env.items():
        monkeypatch.setenv(name, value)  # the next resolution has credentials
    nodes = _bounded(source, 3.0)()

    assert abandoned_after <= 1.0 + 2 * attempt.GRACE + 0.05
    assert nodes == [Node("10.0.0.1", 11211)]
