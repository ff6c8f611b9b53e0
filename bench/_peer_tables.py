"""Tables 3-5 of bench_peers.py: a black-holed source, propagation, resolution at scale."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import _settings_time as st
from bench._peers import OURS, Worker, nodes_of, pythons
from bench._rounds import order, paired, ratio_cell
from bench._standins import config_endpoint, fake_nodes
from bench._standins import register as consul_register
from tests.servers.faults import Proxy

# --- 3. black hole ------------------------------------------------------------------------------


def table_blackhole(args: argparse.Namespace) -> None:
    hole = Proxy()  # accepts connections and never answers
    try:
        py = pythons()
        host, _, port = hole.address.rpartition(":")
        cases = {
            "ours elasticache:// (deadline=5)": st.Case(
                py[OURS],
                "import cache_settings\n"
                f"ENTRY = cache_settings.memcached('elasticache://{hole.address}')",
            ),
            "ours consul:// (deadline=5)": st.Case(
                py[OURS],
                "import cache_settings\n"
                f"ENTRY = cache_settings.memcached('consul://{hole.address}/bench')",
            ),
            "django-elasticache": st.Case(
                py["django-elasticache"],
                "ENTRY = {'BACKEND': 'django_elasticache.memcached.ElastiCache', "
                f"'LOCATION': {hole.address!r}}}",
            ),
            "django-elastipymemcache": st.Case(
                py["django-elastipymemcache"],
                "ENTRY = {'BACKEND': 'django_elastipymemcache.backend.ElastiPymemcache', "
                f"'LOCATION': {hole.address!r}}}",
            ),
            "django-memcached-consul": st.Case(
                py["django-memcached-consul"],
                "ENTRY = {'BACKEND': 'django_memcached_consul.memcached.MemcachedCache', "
                f"'CONSUL_HOST': {host!r}, 'CONSUL_PORT': {port}, 'CONSUL_SERVICE': 'bench'}}",
            ),
        }
        with ThreadPoolExecutor(len(cases)) as pool:  # they wait, they do not compute
            futures = {
                name: pool.submit(st.run, case, args.blackhole_cap) for name, case in cases.items()
            }
            outcomes = {name: future.result() for name, future in futures.items()}
    finally:
        hole.close()
    print(f"\n3. black-holed source (accepts, never answers): settings call to first get "
          f"(stopped after {args.blackhole_cap:g} s)")  # fmt: skip
    for name, (seconds, failure) in outcomes.items():
        waited = f"{seconds:6.2f} s" if seconds is not None else f"> {args.blackhole_cap:g} s"
        print(f"  {name:<36} {waited:>10}   {failure[:90]}")


# --- 4. propagation -----------------------------------------------------------------------------


def propagation(
    worker: Worker,
    entry: dict[str, Any],
    servers: list[Any],
    change: Callable[[Any], None],
    trials: int,
    timeout: float,
    spread: float,
) -> list[float | None]:
    took: list[float | None] = []
    for n in range(trials):
        target = servers[(n + 1) % 2]
        worker.send({"cmd": "propagate", "entry": entry})
        ready = worker.receive()
        if "error" in ready:
            raise RuntimeError(ready["error"])
        time.sleep(0.3 + random.uniform(0, spread))  # land at a random point of the interval
        changed = time.monotonic()
        change(target)
        worker.send({"target": target.location, "timeout": timeout})
        reply = worker.receive()
        took.append(None if reply.get("at") is None else reply["at"] - changed)
    return took


def table_propagation(workers: dict[str, Worker], env: Any, args: argparse.Namespace) -> None:
    servers, _, consul_state, consul = env
    two = servers[:2]
    endpoint = config_endpoint()
    version = [100]

    def endpoint_change(target: Any) -> None:
        version[0] += 1
        endpoint.set_nodes(nodes_of([target]), version=version[0])

    def consul_change(target: Any) -> None:
        consul_register(consul_state, "prop", nodes_of([target]))

    host, _, port = consul.address.rpartition(":")
    rows = [
        ("ours consul:// refresh=60 (blocking queries)", OURS, consul_change, 0.0,
         {"memcached": {"source": f"consul://{consul.address}/prop", "refresh": 60}}),
        ("ours elasticache:// refresh=1", OURS, endpoint_change, 1.0,
         {"memcached": {"source": f"elasticache://{endpoint.address}", "refresh": 1}}),
        ("django-elastipymemcache discovery_interval=1", "django-elastipymemcache",
         endpoint_change, 1.0,
         {"BACKEND": "django_elastipymemcache.backend.ElastiPymemcache",
          "LOCATION": endpoint.address, "OPTIONS": {"discovery_interval": 1}}),
        ("django-elasticache", "django-elasticache", endpoint_change, 0.0,
         {"BACKEND": "django_elasticache.memcached.ElastiCache", "LOCATION": endpoint.address}),
        ("django-memcached-consul", "django-memcached-consul", consul_change, 0.0,
         {"BACKEND": "django_memcached_consul.memcached.MemcachedCache",
          "CONSUL_HOST": host, "CONSUL_PORT": int(port), "CONSUL_SERVICE": "prop"}),
    ]  # fmt: skip
    print(f"\n4. propagation: node change at the source to the first key stored on the new "
          f"node ({args.trials} changes; a backend that does not follow is given "
          f"{args.propagation_cap:g} s)")  # fmt: skip
    try:
        for name, worker, change, spread, entry in rows:
            endpoint_change(two[0])
            consul_change(two[0])
            follows = spread > 0 or "blocking" in name
            took = propagation(
                workers[worker],
                entry,
                two,
                change,
                args.trials if follows else 1,
                3.0 if follows else args.propagation_cap,
                spread,
            )
            done = [t for t in took if t is not None]
            if not done:
                print(f"  {name:<48} never within {args.propagation_cap:g} s")
                continue
            print(
                f"  {name:<48} median {statistics.median(done) * 1000:7.0f} ms, "
                f"worst {max(done) * 1000:6.0f} ms"
                + (f", {len(took) - len(done)} missed" if len(done) < len(took) else "")
            )
    finally:
        workers[OURS].call("stop_watchers")
        endpoint.close()


# --- 5. resolution at scale ---------------------------------------------------------------------


def table_scale(workers: dict[str, Worker], env: Any, args: argparse.Namespace) -> None:
    _, _, consul_state, consul = env
    endpoint = config_endpoint()
    families = {
        "configuration endpoint": (
            endpoint.address,
            [(OURS, OURS), ("django-elasticache", "django-elasticache"),
             ("django-elastipymemcache", "django-elastipymemcache")],
        ),
        "Consul": (
            consul.address,
            [(OURS, "cache_settings-consul"),
             ("django-memcached-consul", "django-memcached-consul")],
        ),
    }  # fmt: skip
    print(f"\n5. resolving N nodes once: ours in ms, the peers as a ratio to ours (median of "
          f"{args.scale_rounds} interleaved rounds of {args.scale_count} resolutions)")  # fmt: skip
    try:
        for family, (address, impls) in families.items():
            print(f"  {family}")
            for count in (1, 100, 1000, 5000):
                nodes = fake_nodes(count)
                endpoint.set_nodes(nodes, version=count)
                consul_register(consul_state, f"scale{count}", nodes)
                cells: list[str] = []
                for _ in range(args.repeats):
                    times: dict[str, list[float]] = {impl: [] for _, impl in impls}
                    failed: dict[str, str] = {}
                    for n in range(args.scale_rounds):
                        for worker, impl in (impls[i] for i in order(range(len(impls)), n)):
                            if impl in failed:
                                continue
                            reply = workers[worker].call(
                                "resolve", impl=impl, address=address,
                                count=args.scale_count, service=f"scale{count}",
                            )  # fmt: skip
                            if "error" in reply or reply["nodes"] != count:
                                failed[impl] = reply.get("error") or f"{reply['nodes']} nodes"
                            else:
                                times[impl].append(reply["seconds"])
                    ours = impls[0][1]
                    parts = [f"{statistics.median(times[ours]) * 1000:.2f} ms"]
                    for _, impl in impls[1:]:
                        parts.append(
                            f"{impl} fails ({failed[impl][:50]})"
                            if impl in failed
                            else f"{impl} {ratio_cell(paired(times, impl, ours))}"
                        )
                    cells.append("; ".join(parts))
                for n, cell in enumerate(cells):
                    print(f"    {count:>5} nodes, repeat {n + 1}: ours {cell}")
    finally:
        endpoint.close()
