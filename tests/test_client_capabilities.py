"""What each client can do here: ejecting a silent node, reaching IPv6, the default choice.

Issue 14, items 1 and 7. pylibmc's wheels (Python <= 3.11) bundle libmemcached 1.0.16,
which cannot reach IPv6 literals; on Python >= 3.12 pylibmc is built against the system's
libmemcached 1.1 (1.1.4 here), which reaches them but never ejects a node that stops
answering. ./run test runs this file in both corners, so both builds are exercised: each
capability test asserts what the real client does and that cache_settings knows it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pylibmc
import pytest
from django.test import override_settings

from cache_settings import ConfigurationError, Node, memcached
from cache_settings.capabilities import (
    cannot_reach,
    check_pylibmc_clients,
    ejects_silent_nodes,
    pylibmc_build,
)
from cache_settings.clients import BACKENDS, client_defaults
from tests.helpers import django_cache
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

ROOT = Path(__file__).resolve().parent.parent
LIBMEMCACHED = tuple(int(part) for part in pylibmc.libmemcached_version.split(".")[:2])
# Measured: libmemcached 1.0.16 (pylibmc's wheels) fails on [::1], 1.1.4 (Debian 12) works.
PYLIBMC_REACHES_IPV6 = LIBMEMCACHED >= (1, 1)


_BLACK_HOLE_SITE = """
import json, sys, time
import django
from django.conf import settings
import cache_settings

settings.configure(CACHES={"default": cache_settings.memcached(sys.argv[1])})
django.setup()
from django.core.cache import cache

took = []
for i in range(30):
    started = time.monotonic()
    try:
        cache.set(f"key{i}", i)
    except Exception:
        pass
    took.append(time.monotonic() - started)
misses = 0
for i in range(30):  # under load, a get may meet the node in libmemcached's retry window
    try:
        misses += cache.get(f"key{i}") != i
    except Exception:
        misses += 1
print(json.dumps({"backend": settings.CACHES["default"]["BACKEND"], "took": took,
                  "misses": misses}))
"""


def test_defaults__black_hole_costs_one_wait_and_prints_no_traceback(
    fresh_memcached_nodes: list[MemcachedServer], faults: Faults
) -> None:
    """Issue 14, judged 6 (run on Python 3.13 by ./run test): a fresh process, defaults."""
    nodes = [*(server.location for server in fresh_memcached_nodes[:2]), faults.blackhole()]
    done = subprocess.run(
        [sys.executable, "-c", _BLACK_HOLE_SITE, "memcached://" + ",".join(nodes)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    assert max(result["took"]) <= 1.0
    assert sum(seconds > 0.2 for seconds in result["took"]) == 1  # one bounded wait
    assert result["misses"] <= 2  # the keys set while the node was being ejected


# --- IPv6 nodes -----------------------------------------------------------------------


class IPv6Memcached(MemcachedServer):
    """A memcached daemon listening on ``[::1]`` only."""

    def __init__(self) -> None:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = int(probe.getsockname()[1])
        super().__init__(port=port)
        self.host = "::1"

    @property
    def location(self) -> str:
        return f"[::1]:{self.port}"


@pytest.fixture
def ipv6_memcached() -> Iterator[IPv6Memcached]:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        server = IPv6Memcached().start()
    except OSError as exc:  # no IPv6 loopback in this container
        pytest.skip(f"cannot listen on [::1]: {exc}")
    yield server
    server.stop()


def test_ipv6__node_list_works_end_to_end_with_no_backend_chosen(
    ipv6_memcached: IPv6Memcached, memcached_node: MemcachedServer
) -> None:
    """Issue 14, judged 1: the client that can reach [::1] is chosen, and it does."""
    url = f"memcached://{ipv6_memcached.location},{memcached_node.location}"
    entry = dict(memcached(url))

    with django_cache(entry) as cache:
        cache.set_many({f"k{i}": i for i in range(20)})
        values = cache.get_many([f"k{i}" for i in range(20)])

    # pylibmc only where it both reaches [::1] and ejects a silent node (libmemcached 1.0
    # does the one, 1.1 the other: measured, see cache_settings.capabilities).
    expected = "pylibmc" if PYLIBMC_REACHES_IPV6 and ejects_silent_nodes() else "pymemcache"
    assert entry["BACKEND"] == BACKENDS[expected]
    assert values == {f"k{i}": i for i in range(20)}
    assert ipv6_memcached.keys_count() > 0  # the IPv6 node took its share of the keys


def test_ipv6__pylibmc_chosen_fails_at_settings_time_where_it_cannot_connect(
    ipv6_memcached: IPv6Memcached,
) -> None:
    url = f"memcached://{ipv6_memcached.location}"
    if PYLIBMC_REACHES_IPV6:
        with django_cache(dict(memcached(url, backend="pylibmc"))) as cache:
            cache.set("k", "v")
            assert cache.get("k") == "v"
        return

    with pytest.raises(ConfigurationError) as raised:
        memcached(url, backend="pylibmc")

    message = str(raised.value)
    assert f"cannot connect to IPv6 addresses ({ipv6_memcached.location})" in message
    assert 'use pymemcache instead (backend="pymemcache")' in message


def test_ipv6__the_capability_matches_the_real_client(ipv6_memcached: IPv6Memcached) -> None:
    """What cannot_reach() knows about this pylibmc build is what the build does."""
    client = pylibmc.Client([ipv6_memcached.location], behaviors={"connect_timeout": 500})
    error = ""
    try:
        client.set("k", "v")
        reached = client.get("k") == "v"
    except pylibmc.Error as exc:
        reached, error = False, str(exc)
    finally:
        client.disconnect_all()

    assert reached or "HOSTNAME LOOKUP FAILURE" in error
    node = Node("::1", ipv6_memcached.port, "::1")
    assert (cannot_reach("pylibmc", [node]) == []) is reached
    assert cannot_reach("pymemcache", [node]) == []
    assert cannot_reach("pylibmc", [Node("127.0.0.1", 11211)]) == []


# --- ejecting a node that stops answering ------------------------------------------------


def test_ejection__the_capability_matches_the_real_client(
    fresh_memcached_nodes: list[MemcachedServer], faults: Faults
) -> None:
    """pylibmc with our behaviors: one timeout then skipped (1.0), or a timeout each time (1.1)."""
    servers = [fresh_memcached_nodes[0].location, faults.blackhole()]
    behaviors = client_defaults("pylibmc")["behaviors"]
    client = pylibmc.Client(servers, binary=False, behaviors=behaviors)
    slow = 0
    try:
        for i in range(20):
            started = time.monotonic()
            with contextlib.suppress(pylibmc.Error):
                client.set(f"key{i}", i)
            slow += time.monotonic() - started > 0.2
    finally:
        client.disconnect_all()

    assert slow >= 1  # some keys live on the black hole
    assert (slow == 1) is ejects_silent_nodes(), f"{pylibmc_build()}: {slow} slow sets"


def test_ejection__options_naming_pylibmc_keep_it_and_w006_names_the_cost() -> None:
    """Behaviors in options choose pylibmc; where it cannot eject, W006 says so (and why)."""
    entry = dict(memcached("memcached://10.0.0.1:11211", options={"behaviors": {"cas": True}}))

    with override_settings(CACHES={"sessions": entry}):
        found = [(m.id, m.obj, m.msg) for m in check_pylibmc_clients()]

    assert entry["BACKEND"] == BACKENDS["pylibmc"]
    if ejects_silent_nodes():
        assert found == []
    else:
        assert [(id_, obj) for id_, obj, _ in found] == [("cache_settings.W006", "sessions")]
        assert "every operation on it waits _poll_timeout (500 ms)" in found[0][2]


def test_ejection__w006_is_quiet_for_pymemcache_and_for_no_ejection() -> None:
    caches = {
        "a": dict(memcached("memcached://10.0.0.1:11211", backend="pymemcache")),
        "b": dict(memcached("pylibmc://10.0.0.2:11211", options={"behaviors": {"auto_eject": 0}})),
    }
    with override_settings(CACHES=caches):
        assert check_pylibmc_clients() == []


def test_choice__chosen_pylibmc_failures_name_the_other_client() -> None:
    """A behavior pylibmc does not apply, with pylibmc chosen: the fix is named."""
    with pytest.raises(ConfigurationError) as raised:
        memcached("pylibmc://10.0.0.1:11211", options={"behaviors": {"dead_timeout": 2**32}})

    assert "did not apply the behaviors dead_timeout=4294967296 (reads 0)" in str(raised.value)


def test_ipv6__refreshing_pylibmc_never_hands_out_a_node_it_cannot_reach(
    ipv6_memcached: IPv6Memcached, memcached_node: MemcachedServer
) -> None:
    """A source that lists an IPv6 node at run time: every key is still served."""
    entry = {
        "BACKEND": "cache_settings.backends.PyLibMCCache",
        "LOCATION": f"memcached://{ipv6_memcached.location},{memcached_node.location}",
        "OPTIONS": {"refresh": 60},
    }

    with django_cache(entry) as cache:
        cache.set_many({f"r{i}": i for i in range(20)})
        values = cache.get_many([f"r{i}" for i in range(20)])
        servers = list(cache.client_servers)  # type: ignore[attr-defined]

    assert values == {f"r{i}": i for i in range(20)}
    assert (ipv6_memcached.location in servers) == PYLIBMC_REACHES_IPV6
