"""Per-operation cost of the refreshing backends against Django's stock ones, same daemon.

Run: ``.venv/bin/python bench/bench_backends.py [--rounds 300] [--ops 200]``. It starts a
``memcached`` on a free loopback port (or uses ``CACHE_SETTINGS_BENCH_MEMCACHED=host:port``),
then times get+set through the stock and the refreshing backend of each client in
interleaved rounds: each round is a stock batch and a refreshing batch back to back, in
alternating order, so the pair shares the machine's load of the moment. It prints the
median per-operation times and the median of the per-round ratios, which should be
≤ 1.05. It also times ``self._cache`` alone: the only code the refreshing backend adds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Iterator
from contextlib import contextmanager
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

LIMIT = 1.05


@contextmanager
def memcached_daemon() -> Iterator[str]:
    given = os.environ.get("CACHE_SETTINGS_BENCH_MEMCACHED")
    if given:
        yield given
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [shutil.which("memcached") or "/usr/bin/memcached", "-l", "127.0.0.1", "-p", str(port)]
    # One worker thread: memcached hands each new connection to its workers in turn, and on a
    # small machine a stock client served by one worker and a refreshing one served by
    # another differed 4x (20 vs 80 us/op) for scheduling reasons alone, either way round.
    argv += ["-U", "0", "-m", "64", "-t", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(250):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def run_ops(cache: BaseCache, ops: int) -> float:
    """Return seconds per operation for *ops* operations, half set and half get."""
    keys = [f"bench-{n % 100}" for n in range(ops // 2)]
    started = time.perf_counter()
    for key in keys:
        cache.set(key, "value")
        cache.get(key)
    return (time.perf_counter() - started) / (2 * len(keys))


def bench_client(address: str, client: str, rounds: int, ops: int) -> float:
    stock_entry = dict(memcached(f"memcached://{address}", backend=client))  # type: ignore[arg-type]
    refreshing_entry = dict(memcached(f"memcached://{address}", backend=client, refresh=3600))  # type: ignore[arg-type]
    handler = CacheHandler({"stock": stock_entry, "refreshing": refreshing_entry})
    caches = {"stock": handler["stock"], "refreshing": handler["refreshing"]}
    times: dict[str, list[float]] = {"stock": [], "refreshing": []}
    pairs: list[float] = []
    try:
        for cache in caches.values():
            run_ops(cache, 200)  # warm up: connections, the watcher thread
        for n in range(rounds):
            # Each round is one stock batch and one refreshing batch back to back, in
            # alternating order: the pair shares the machine's load of the moment.
            order = ["stock", "refreshing"] if n % 2 == 0 else ["refreshing", "stock"]
            took = {kind: run_ops(caches[kind], ops) for kind in order}
            for kind, seconds in took.items():
                times[kind].append(seconds)
            pairs.append(took["refreshing"] / took["stock"])
        stock = statistics.median(times["stock"])
        refreshing = statistics.median(times["refreshing"])
        ratio = statistics.median(pairs)
        print(
            f"{client:<10} stock {stock * 1e6:7.2f} us/op   "
            f"refreshing {refreshing * 1e6:7.2f} us/op"
            f"   (medians; best {min(times['stock']) * 1e6:.2f} vs "
            f"{min(times['refreshing']) * 1e6:.2f})"
        )
        print(
            f"{'':<10} ratio refreshing/stock: median of {rounds} paired rounds of {ops} ops "
            f"{ratio:.3f} (quartiles {statistics.quantiles(pairs, n=4)[0]:.3f}.."
            f"{statistics.quantiles(pairs, n=4)[2]:.3f}; best/best "
            f"{min(times['refreshing']) / min(times['stock']):.3f})"
        )
        # The only code on the request path the refreshing backend adds: its _cache property.
        number = 200_000
        added = timeit.timeit(lambda: caches["refreshing"]._cache, number=number) / number  # type: ignore[attr-defined]
        base = timeit.timeit(lambda: caches["stock"]._cache, number=number) / number  # type: ignore[attr-defined]
        print(
            f"{'':<10} self._cache: stock {base * 1e9:5.0f} ns, refreshing {added * 1e9:5.0f} ns "
            f"(+{(added - base) * 1e9:.0f} ns per operation, "
            f"{(added - base) / stock * 100:.2f} % of one operation)"
        )
        return ratio
    finally:
        handler.close_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--ops", type=int, default=200)
    args = parser.parse_args()
    with memcached_daemon() as address:
        print(f"memcached at {address}")
        ratios = [bench_client(address, client, args.rounds, args.ops) for client in CLIENTS]
    stop_all(timeout=1.0)
    worst = max(ratios)
    print(f"worst ratio {worst:.3f} (limit {LIMIT})")
    return 0 if worst <= LIMIT else 1


CLIENTS = ("pylibmc", "pymemcache")

if __name__ == "__main__":
    sys.exit(main())
