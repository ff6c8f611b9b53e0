"""Per-operation cost of the entries ``memcached()`` writes, against stock Django, side by side.

Run: ``.venv/bin/python bench/bench_backends.py [--rounds 150] [--repeats 3] [--options]``.

It starts one or three ``memcached`` daemons (``tests/servers/memcached.py``, one worker
thread each, so every client is served alike) and times set+get through Django backends
built from different ``CACHES`` entries, all in one process, in interleaved rounds (see
``bench/_rounds.py``). Every figure is the median of per-round ratios to stock Django's
backend of the same client with Django's own default options, on the same daemons:

- table 1: the entry ``memcached(url, backend=...)`` returns, and its refreshing
  variant (``refresh=3600``), for pylibmc and pymemcache, 1 and 3 nodes; the issue 17
  target is <= 1.03x in every repeat.
- ``--options`` adds table 2: each of our client defaults alone on a stock entry, and the
  ways to make one pymemcache client safe to share between threads (pymemcache's pool
  and its settings, a lock-free per-thread client), to find what an operation costs.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django
from django.conf import settings

if not settings.configured:
    settings.configure(USE_TZ=True)
    django.setup()

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.memcached import PyMemcacheCache
from django.utils.module_loading import import_string

from bench._rounds import Repeats, interleaved, ratio_cell, summary
from cache_settings import memcached
from cache_settings.settings import BACKENDS
from cache_settings.watchers import stop_all
from tests.servers.memcached import MemcachedServer

LIMIT = 1.03  # issue 17: the defaults cost at most this much per operation
CLIENTS = ("pylibmc", "pymemcache")
NODES = (1, 3)


@contextmanager
def daemons(count: int) -> Iterator[list[str]]:
    """Yield the locations of *count* fresh memcached daemons; stop them afterwards."""
    servers = [MemcachedServer() for _ in range(count)]
    try:
        yield [server.start().location for server in servers]
    finally:
        for server in servers:
            server.stop()


def build(entry: dict[str, Any]) -> BaseCache:
    """Return the backend Django's CacheHandler would build from *entry*."""
    params = dict(entry)
    backend = params.pop("BACKEND")
    location = params.pop("LOCATION", "")
    backend_cls = import_string(backend) if isinstance(backend, str) else backend
    cache: BaseCache = backend_cls(location, params)
    return cache


def close(cache: BaseCache) -> None:
    cache.close()
    client = cache.__dict__.get("_cache") or getattr(cache, "_client", None)
    if client is not None and type(client).__module__.startswith("pylibmc"):
        client.disconnect_all()


def batch(cache: BaseCache, pairs: int) -> Callable[[], float]:
    """Return a function that runs *pairs* set+get pairs and returns seconds per pair."""
    keys = [f"bench-{n % 50}" for n in range(pairs)]

    def run() -> float:
        started = time.perf_counter()
        for key in keys:
            cache.set(key, "value")
            cache.get(key)
        return (time.perf_counter() - started) / pairs

    return run


def stock(
    client: str, locations: list[str], options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A stock Django entry: Django's backend, its own defaults, plus *options*."""
    entry: dict[str, Any] = {"BACKEND": BACKENDS[client], "LOCATION": locations}
    if options:
        entry["OPTIONS"] = options
    return entry


class _PerThreadClient:
    """One pymemcache HashClient per thread, created on first use; no lock per operation."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        try:
            client = self._local.client
        except AttributeError:
            client = self._local.client = self._factory()
        return getattr(client, name)


class PerThreadPyMemcacheCache(PyMemcacheCache):
    """Django's PyMemcacheCache whose client is per thread even if the backend is shared."""

    @property
    def _cache(self) -> Any:
        client = self.__dict__.get("_per_thread")
        if client is None:
            client = self.__dict__["_per_thread"] = _PerThreadClient(
                lambda: self._class(self.client_servers, **self._options)
            )
        return client


class KernelTimeouts:
    """A ``socket_module`` for pymemcache: blocking sockets bounded by SO_RCVTIMEO/SO_SNDTIMEO.

    With ``timeout=0.5`` CPython makes the socket non-blocking and calls poll() before every
    send and recv (Modules/socketmodule.c, sock_call_ex); with these kernel timeouts a
    blocking send/recv that waits 0.5 s fails with EAGAIN (BlockingIOError, an OSError),
    which HashClient treats like any socket error: the same bounded wait, no extra syscall.
    Plain TCP only: over TLS, CPython's ssl module retries such a read on a blocking socket
    and it never returns (a stopped TLS memcached kept a get waiting for minutes).
    """

    def __init__(self, seconds: float) -> None:
        self._timeval = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    def socket(self, *args: Any) -> socket.socket:
        sock = socket.socket(*args)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self._timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._timeval)
        return sock


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


def subjects_defaults(client: str, locations: list[str]) -> dict[str, dict[str, Any]]:
    url = "memcached://" + ",".join(locations)
    return {
        "stock Django": stock(client, locations),
        "memcached()": dict(memcached(url, backend=client)),  # type: ignore[arg-type]
        "memcached(refresh=3600)": dict(memcached(url, backend=client, refresh=3600)),  # type: ignore[arg-type]
    }


def subjects_options(client: str, locations: list[str]) -> dict[str, dict[str, Any]]:
    """Stock, then each default alone, then the defaults with other thread-safety choices."""
    url = "memcached://" + ",".join(locations)
    ours = dict(memcached(url, backend=client))  # type: ignore[arg-type]
    subjects = {"stock Django": stock(client, locations)}
    if client == "pylibmc":
        for name, value in ours["OPTIONS"]["behaviors"].items():
            subjects[f"{name}={value!r} alone"] = stock(
                client, locations, {"behaviors": {name: value}}
            )
        subjects["all defaults (memcached())"] = ours
        return subjects
    defaults = {k: v for k, v in ours["OPTIONS"].items() if k != "use_pooling"}
    for name, value in ours["OPTIONS"].items():
        if name in ("connect_timeout", "use_pooling"):
            continue  # connect_timeout acts at connect time only; pooling has rows below
        subjects[f"{name}={value!r} alone"] = stock(client, locations, {name: value})
    subjects["use_pooling=True alone"] = stock(client, locations, {"use_pooling": True})
    subjects["use_pooling, max_pool_size=1"] = stock(
        client, locations, {"use_pooling": True, "max_pool_size": 1}
    )
    subjects["use_pooling, pool_idle_timeout=60"] = stock(
        client, locations, {"use_pooling": True, "pool_idle_timeout": 60}
    )
    subjects["use_pooling, no lock (unsafe)"] = stock(
        client, locations, {"use_pooling": True, "lock_generator": _NoLock}
    )
    subjects["defaults, no pooling"] = stock(client, locations, defaults)
    subjects["defaults, pooling"] = stock(client, locations, {**defaults, "use_pooling": True})
    subjects["defaults, no pooling, kernel timeouts"] = stock(
        client,
        locations,
        {**defaults, "timeout": None, "socket_module": KernelTimeouts(defaults["timeout"])},
    )
    per_thread = stock(client, locations, defaults)
    per_thread["BACKEND"] = PerThreadPyMemcacheCache
    subjects["defaults, per-thread client"] = per_thread
    subjects["memcached() as it is"] = ours
    return subjects


def measure(entries: dict[str, dict[str, Any]], rounds: int, repeats: int, pairs: int) -> Repeats:
    """Return, for each repeat, each entry's median per-round ratio to the first entry."""
    baseline = next(iter(entries))
    results: Repeats = []
    with ExitStack() as stack:
        caches = {name: build(entry) for name, entry in entries.items()}
        for cache in caches.values():
            stack.callback(close, cache)
        runs = {name: batch(cache, pairs) for name, cache in caches.items()}
        for run in runs.values():
            run()  # warm up: connections, the watcher thread
        for _ in range(repeats):
            results.append(summary(interleaved(runs, baseline, rounds)))
    return results


def print_table(title: str, results: Repeats, limit: float | None = None) -> bool:
    """Print one table of ratios, one column per repeat; return whether all are <= limit."""
    print(title)
    names = list(results[0])
    width = max(len(name) for name in names) + 2
    head = "".join(f"{f'repeat {n + 1}':>10}" for n in range(len(results)))
    print(f"  {'entry':<{width}}{head}")
    ok = True
    for name in names[1:]:
        values = [repeat[name] for repeat in results]
        verdict = ""
        if limit is not None:
            within = all(value <= limit for value in values)
            ok = ok and within
            verdict = f"   {'ok' if within else 'OVER'} (<= {limit:.2f}x)"
        cells = "".join(f"{ratio_cell(value):>10}" for value in values)
        print(f"  {name:<{width}}{cells}{verdict}")
    return ok


def versions() -> str:
    import pylibmc
    import pymemcache

    return (
        f"Python {sys.version.split()[0]}, Django {django.get_version()}, "
        f"pylibmc {pylibmc.__version__} (libmemcached {pylibmc.libmemcached_version}), "
        f"pymemcache {pymemcache.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=150, help="rounds per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=100, help="set+get pairs per batch")
    parser.add_argument("--options", action="store_true", help="also time each option alone")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    args = parser.parse_args(argv)
    print(f"per set+get, ratio to stock Django (median of {args.rounds} interleaved rounds of "
          f"{args.pairs} set+get; {versions()})")  # fmt: skip
    ok = True
    for nodes in NODES:
        with daemons(nodes) as locations:
            for client in args.clients:
                results = measure(
                    subjects_defaults(client, locations), args.rounds, args.repeats, args.pairs
                )
                title = f"{client}, {nodes} node{'s' if nodes > 1 else ''}"
                ok = print_table(title, results, LIMIT) and ok
                stop_all(timeout=1.0)
            if args.options:
                for client in args.clients:
                    results = measure(
                        subjects_options(client, locations),
                        max(args.rounds // 3, 20),
                        args.repeats,
                        args.pairs,
                    )
                    print_table(f"{client}, {nodes} node{'s' if nodes > 1 else ''}: each "
                                "option alone on stock Django", results)  # fmt: skip
    print(f"every memcached() entry within {LIMIT:.2f}x of stock in every repeat: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
