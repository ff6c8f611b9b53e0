"""Side by side: cache_settings and django-elasticache, -elastipymemcache, -memcached-consul.

Run: ``./run bench peers`` (or ``.venv/bin/python bench/bench_peers.py [--repeats 3]``).
On first use it installs each peer into its own virtualenv under ``bench/.venv-peers/``
(git-ignored) with the newest Django it runs on (``bench/_peers.py``). Everything runs
against the stand-ins of ``tests/servers`` on loopback: real memcached daemons, the
ElastiCache configuration-endpoint stand-in and the Consul stand-in. Tables:

1. per operation: set+get through each library's backend, as a ratio to stock Django's
   backend for the same client library in the same process and virtualenv (1 and 3 nodes);
2. settings time: fresh interpreters, from the settings call to the first get
   (``bench/_settings_time.py``), as ratios to stock Django with a fixed list in the same
   virtualenv, and ours to the peer that reads the same source;
3. a black-holed source (accepts connections, never answers): how long settings wait;
4. propagation: from a node change at the source to the first key stored on the new node;
5. resolution of 1/100/1,000/5,000 nodes, as ratios to ours.

Ratios are medians of per-round ratios from interleaved rounds (``bench/_rounds.py``);
every table is measured ``--repeats`` times and each repeat is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _peer_tables as tables
from bench import _settings_time as st
from bench._peers import (
    OURS,
    PEERS,
    STOCK,
    Worker,
    ensure,
    locations,
    machine,
    nodes_of,
    print_rows,
    pythons,
    versions,
)
from bench._rounds import paired, ratio_cell
from bench._standins import ConsulServer, MemoConsulState, config_endpoint, daemons
from bench._standins import register as consul_register

# --- 1. per operation -------------------------------------------------------------------------


def ops_groups(endpoint: str, consul: str, locs: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """[(worker, {subject: entry spec})]; each group's first subject is its stock baseline.

    Each group runs on its own, so a subject alternates with its baseline only.
    """

    def ours(url: str, backend: str) -> dict[str, Any]:
        return {"memcached": {"source": url, "backend": backend}}

    def stock(client: str) -> dict[str, Any]:
        return {"BACKEND": STOCK[client], "LOCATION": locs}

    host, _, port = consul.rpartition(":")
    return [
        (OURS, {
            "stock pylibmc": stock("pylibmc"),
            "ours elasticache:// pylibmc": ours(f"elasticache://{endpoint}", "pylibmc"),
            "ours consul:// pylibmc": ours(f"consul://{consul}/bench", "pylibmc"),
        }),
        (OURS, {
            "stock pymemcache": stock("pymemcache"),
            "ours elasticache:// pymemcache": ours(f"elasticache://{endpoint}", "pymemcache"),
        }),
        ("django-elasticache", {
            "stock pylibmc": stock("pylibmc"),
            "django-elasticache": {
                "BACKEND": "django_elasticache.memcached.ElastiCache", "LOCATION": endpoint,
            },
        }),
        ("django-elastipymemcache", {
            "stock pymemcache": stock("pymemcache"),
            "django-elastipymemcache": {
                "BACKEND": "django_elastipymemcache.backend.ElastiPymemcache", "LOCATION": endpoint,
            },
        }),
        ("django-memcached-consul", {
            "stock memcache": stock("memcache"),
            "django-memcached-consul": {
                "BACKEND": "django_memcached_consul.memcached.MemcachedCache",
                "CONSUL_HOST": host, "CONSUL_PORT": int(port), "CONSUL_SERVICE": "bench",
            },
        }),
    ]  # fmt: skip


def table_ops(workers: dict[str, Worker], env: Any, args: argparse.Namespace) -> None:
    servers, endpoint, consul_state, consul = env
    for count in (1, 3):
        chosen = servers[:count]
        endpoint.set_nodes(nodes_of(chosen), version=count)
        consul_register(consul_state, "bench", nodes_of(chosen))
        groups = ops_groups(endpoint.address, consul.address, locations(chosen))
        results: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for worker, subjects in groups:
                baseline = next(iter(subjects))
                reply = workers[worker].call(
                    "ops", subjects=subjects, baseline=baseline, rounds=args.rounds,
                    pairs=args.pairs,
                )  # fmt: skip
                for subject in list(subjects)[1:]:
                    cell = (
                        reply["error"][:40]
                        if "error" in reply
                        else ratio_cell(paired(reply["times"], subject, baseline))
                    )
                    results.setdefault(subject, []).append(cell)
        print(f"\n1. per set+get, ratio to stock Django with the same client, {count} node(s) "
              f"(median of {args.rounds} interleaved rounds of {args.pairs})")  # fmt: skip
        print_rows(results, args.repeats)


# --- 2. settings time ---------------------------------------------------------------------------


def settings_cases(env: Any) -> tuple[dict[str, st.Case], list[tuple[str, str]]]:
    """Return the cases and the (subject, baseline) pairs to report."""
    servers, endpoint, consul_state, consul = env
    locs = locations(servers)
    endpoint.set_nodes(nodes_of(servers), version=10)
    consul_register(consul_state, "bench", nodes_of(servers))
    py = pythons()

    def stock(python: Path, client: str) -> st.Case:
        return st.stock_case(python, client, locs)

    host, _, port = consul.address.rpartition(":")
    cases = {
        **st.our_cases(py[OURS], locs, endpoint.address, consul.address),
        "django-elastipymemcache": st.Case(
            py["django-elastipymemcache"],
            "ENTRY = {'BACKEND': 'django_elastipymemcache.backend.ElastiPymemcache', "
            f"'LOCATION': {endpoint.address!r}}}",
        ),
        "stock PyMemcacheCache (its venv)": stock(py["django-elastipymemcache"], "pymemcache"),
        "django-elasticache": st.Case(
            py["django-elasticache"],
            "ENTRY = {'BACKEND': 'django_elasticache.memcached.ElastiCache', "
            f"'LOCATION': {endpoint.address!r}}}",
        ),
        "stock PyLibMCCache (Django 3.2)": stock(py["django-elasticache"], "pylibmc"),
        "django-memcached-consul": st.Case(
            py["django-memcached-consul"],
            "ENTRY = {'BACKEND': 'django_memcached_consul.memcached.MemcachedCache', "
            f"'CONSUL_HOST': {host!r}, 'CONSUL_PORT': {int(port)}, 'CONSUL_SERVICE': 'bench'}}",
        ),
        "stock MemcachedCache (Django 4.0)": stock(py["django-memcached-consul"], "memcache"),
    }
    pairs = [
        *st.OUR_PAIRS,
        ("django-elastipymemcache", "stock PyMemcacheCache (its venv)"),
        ("django-elasticache", "stock PyLibMCCache (Django 3.2)"),
        ("django-memcached-consul", "stock MemcachedCache (Django 4.0)"),
        ("ours elasticache://, pymemcache", "django-elastipymemcache"),
        ("ours elasticache://, pylibmc", "django-elasticache"),
        ("ours consul://, pylibmc", "django-memcached-consul"),
    ]
    return cases, pairs


def table_settings(env: Any, args: argparse.Namespace) -> None:
    cases, pairs = settings_cases(env)
    results: dict[str, list[str]] = {}
    medians: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        times = st.rounds(cases, args.settings_rounds)
        for name, values in times.items():
            medians[name].extend(values)
        for subject, baseline in pairs:
            cell = ratio_cell(paired(times, subject, baseline))
            results.setdefault(f"{subject}  /  {baseline}", []).append(cell)
    print(f"\n2. settings time in fresh interpreters, from the settings call to the first get "
          f"(median of {args.settings_rounds} interleaved rounds)")  # fmt: skip
    print_rows(results, args.repeats, "subject / baseline")
    print("  for reference, medians over all repeats (ms; absolute times move with the load):")
    for name, values in medians.items():
        print(f"    {name:<40} {statistics.median(values) * 1000:7.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=100, help="per-operation rounds")
    parser.add_argument("--pairs", type=int, default=100, help="set+get pairs per batch")
    parser.add_argument("--settings-rounds", type=int, default=7)
    parser.add_argument("--blackhole-cap", type=float, default=12.0)
    parser.add_argument("--trials", type=int, default=6, help="node changes per propagation row")
    parser.add_argument("--propagation-cap", type=float, default=3.0)
    parser.add_argument("--scale-rounds", type=int, default=5)
    parser.add_argument("--scale-count", type=int, default=3)
    parser.add_argument(
        "--tables", nargs="+", default=["ops", "settings", "blackhole", "propagation", "scale"]
    )
    args = parser.parse_args(argv)
    for peer in PEERS:
        ensure(peer)
    print(f"machine: {machine()}")
    ours = ["django", "pylibmc", "pymemcache", "python-consul2", "tenacity"]
    print(f"  ours: {versions(Path(sys.executable), ours)}")
    for peer in PEERS:
        packages = [peer.name, "django", *(r.split("=")[0] for r in peer.requirements[2:])]
        print(f"  {peer.name}: {versions(peer.python, packages)}")
    workers = {OURS: Worker(Path(sys.executable))}
    workers.update({peer.name: Worker(peer.python) for peer in PEERS})
    consul = ConsulServer(MemoConsulState()).start()
    endpoint = config_endpoint()
    try:
        with daemons(3) as servers:
            env = (servers, endpoint, consul.state, consul)
            if "ops" in args.tables:
                table_ops(workers, env, args)
            if "settings" in args.tables:
                table_settings(env, args)
            if "blackhole" in args.tables:
                tables.table_blackhole(args)
            if "propagation" in args.tables:
                tables.table_propagation(workers, env, args)
            if "scale" in args.tables:
                tables.table_scale(workers, env, args)
    finally:
        for worker in workers.values():
            worker.close()
        endpoint.close()
        consul.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
