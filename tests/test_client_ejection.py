"""What remains: a node the client ejects for ``dead_timeout`` seconds comes back unflushed.

Neither client offers a hook at re-admission, so ``rejoin="flush"`` cannot act there
(docs/refresh.md, "What happens when nodes change"). These tests pin down the documented
behaviour with a real daemon stopped by SIGSTOP (connections accepted, nothing answered),
so that the documentation changes when the behaviour does.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from cache_settings import memcached
from cache_settings.capabilities import ejects_silent_nodes, pylibmc_build
from tests.helpers import django_cache, wait_until
from tests.servers.memcached import MemcachedServer

KEYS = [f"key-{n}" for n in range(60)]
# Seconds; pylibmc takes whole seconds. Long enough that the 60 sets and gets while C is
# paused finish before the client tries C again, also on a loaded 2-core machine running
# both corners of ./run test at once (3 s was not, once in a clean-clone run).
DEAD_TIMEOUT = 5
OPTIONS: dict[str, dict[str, Any]] = {
    "pylibmc": {"behaviors": {"dead_timeout": DEAD_TIMEOUT}},
    "pymemcache": {"dead_timeout": DEAD_TIMEOUT},
}


@pytest.mark.parametrize("client", ["pylibmc", "pymemcache"])
def test_client_ejection__readmitted_node_serves_values_from_before_its_ejection(
    client: str, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    if client == "pylibmc" and not ejects_silent_nodes():
        pytest.skip(f"{pylibmc_build()} never ejects a silent node (W006), so never re-admits one")
    c = fresh_memcached_nodes[2]
    url = "memcached://" + ",".join(server.location for server in fresh_memcached_nodes)
    entry = dict(memcached(url, backend=client, options=OPTIONS[client]))  # type: ignore[arg-type]
    with django_cache(entry) as cache:
        for key in KEYS:
            cache.set(key, "old")
        on_c = [key for key in KEYS if cache.make_key(key) in c.keys()]
        assert on_c
        c.pause()
        paused_at = time.monotonic()
        try:
            failed = set()  # a set that timed out reaches C when it runs on
            for key in KEYS:
                for _ in range(3):  # the first key of C costs one timeout, then C is ejected
                    try:
                        cache.set(key, "new")
                        break
                    except Exception:
                        failed.add(key)
            ejected = {key: cache.get(key) for key in KEYS}
            took = time.monotonic() - paused_at
        finally:
            c.resume()
        # C's keys moved to A and B (unless the machine took longer than dead_timeout).
        assert all(value == "new" for value in ejected.values()), (took, ejected)
        expected_stale = [key for key in on_c if key not in failed]
        assert expected_stale

        # After dead_timeout the client puts C back, as it is: nothing flushes it. pymemcache
        # looks at its dead nodes once per dead_timeout (HashClient._retry_dead), so that
        # can take up to twice dead_timeout.
        assert wait_until(lambda: cache.get(expected_stale[0]) == "old", 2 * DEAD_TIMEOUT + 4.0)
        read = {key: cache.get(key) for key in KEYS}

    stale = [key for key in KEYS if read[key] == "old"]
    assert set(expected_stale) <= set(stale) <= set(on_c)
