"""How long a node change takes to reach a refreshing backend.

Run: ``.venv/bin/python bench/bench_propagation.py [--trials 10]``. It starts two
``memcached`` daemons, the Consul stand-in and the configuration-endpoint stand-in from
``tests/servers``, then, for each trial, changes the node list and times until a
backend's next operation uses the new node:

- Consul with ``refresh=60``: blocking queries, so the time should be well under a
  second, whatever ``refresh`` is (each change here is an add then a remove, two index
  bumps; the watcher spaces its queries by at least 0.2 s, as Consul's docs advise);
- a polled source (ElastiCache configuration endpoint) with ``refresh=1`` and ``2``:
  the time is spread over one interval (± 10 % jitter), so its median is about half.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django
from django.conf import settings

if not settings.configured:
    settings.configure(USE_TZ=True)
    django.setup()

from django.core.cache import CacheHandler
from django.core.cache.backends.base import BaseCache

from cache_settings import memcached
from cache_settings.watchers import stop_all
from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.consul import ConsulAgent, ConsulServer, ConsulState
from tests.servers.memcached import MemcachedServer

POLL = 0.001  # seconds between operations while waiting for the new node


def time_until(cache: BaseCache, location: str, timeout: float) -> float:
    """Return seconds until an operation through *cache* runs against *location* alone."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        cache.get("probe")
        if cache.client_servers == [location]:  # type: ignore[attr-defined]
            return time.perf_counter() - started
        time.sleep(POLL)
    raise RuntimeError(f"no change to {location} within {timeout} s")


def trials(
    name: str,
    cache: BaseCache,
    servers: list[MemcachedServer],
    change: Callable[[MemcachedServer], None],
    count: int,
    timeout: float,
    spread: float = 0.0,
) -> list[float]:
    cache.get("probe")  # first use: the watcher starts
    time.sleep(0.5)
    took = []
    for n in range(count):
        target = servers[(n + 1) % 2]
        change(target)
        took.append(time_until(cache, target.location, timeout))
        # Let a blocking watcher park its next query; for a polled source, also land the
        # next change at a random point of the poll interval (*spread* seconds).
        time.sleep(0.3 + random.uniform(0, spread))
    print(
        f"{name:<40} median {statistics.median(took) * 1000:7.1f} ms   "
        f"min {min(took) * 1000:7.1f} ms   max {max(took) * 1000:7.1f} ms   ({count} changes)"
    )
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    servers = [MemcachedServer().start(), MemcachedServer().start()]
    consul = ConsulServer(ConsulState()).start()
    endpoint = ConfigEndpointServer()
    handlers: list[CacheHandler] = []
    try:
        # Consul, blocking queries, refresh=60.
        agent = ConsulAgent(consul.address, consul.state)
        service = f"bench-{uuid.uuid4().hex[:6]}"
        current = [agent.add(service, servers[0].host, servers[0].port, node="n0")]

        def consul_change(target: MemcachedServer) -> None:
            new = agent.add(service, target.host, target.port, node=f"n{target.port}")
            agent.remove(current.pop())
            current.append(new)

        handler = CacheHandler(
            {"default": dict(memcached(f"consul://{consul.address}/{service}", refresh=60))}
        )
        handlers.append(handler)
        trials("consul, blocking queries, refresh=60", handler["default"], servers,
               consul_change, args.trials, timeout=5)  # fmt: skip

        # Configuration endpoint, polled.
        version = [1]

        def endpoint_change(target: MemcachedServer) -> None:
            version[0] += 1  # every change carries a newer config version, as AWS's do
            endpoint.set_nodes([("n.cache.test", target.host, target.port)], version[0])

        for refresh in (1.0, 2.0):
            version[0] += 1
            endpoint.set_nodes([("n0.cache.test", servers[0].host, servers[0].port)], version[0])

            url = f"elasticache://{endpoint.address}"
            handler = CacheHandler({"default": dict(memcached(url, refresh=refresh))})
            handlers.append(handler)
            trials(f"config endpoint, polled, refresh={refresh:g}", handler["default"], servers,
                   endpoint_change, args.trials, timeout=refresh * 1.1 + 2,
                   spread=refresh)  # fmt: skip
            stop_all(timeout=2.0)  # the next refresh gets a new watcher
    finally:
        for handler in handlers:
            handler.close_all()
        stop_all(timeout=2.0)
        endpoint.close()
        consul.stop()
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
