"""A benchmark worker that runs inside any of the virtualenvs (ours or a peer's).

``bench_peers.py`` starts one per virtualenv and talks to it over stdin/stdout, one JSON
object per line each way, so that it can interleave the peers' batches with ours round by
round. Only the standard library, Django and the package under test are imported here.

Commands (``{"cmd": ..., ...}`` in, ``{"ok": ..., ...}`` or ``{"error": "..."}`` out):

- ``ops``: build ``subjects`` (``{name: CACHES entry}``, or ``{"memcached": {kwargs}}`` for
  ``cache_settings.memcached``), then run ``rounds`` interleaved rounds of ``pairs``
  set+get through each; return every subject's seconds per pair, round by round.
- ``resolve``: time ``count`` node-list resolutions by ``impl`` from ``address``; return
  the median seconds and the node count.
- ``propagate``: start a cache from ``entry``; answer ``ready``; then on the next line
  (``{"target": "host:port", "timeout": s}``) set keys until one lands on ``target``;
  return the ``time.monotonic()`` at which it did (or null).
- ``stop_watchers``: stop cache_settings' watcher threads.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(USE_TZ=True, CACHES={})
    django.setup()

from bench._rounds import interleaved  # noqa: E402


def _entry(spec: dict[str, Any]) -> dict[str, Any]:
    if "memcached" in spec:
        from cache_settings import memcached

        return dict(memcached(**spec["memcached"]))
    return dict(spec)


def _build(entry: dict[str, Any]) -> Any:
    from django.core.cache import CacheHandler

    return CacheHandler({"default": entry})["default"]


def _close(cache: Any) -> None:
    cache.close()
    client = cache.__dict__.get("_cache")
    if client is not None and type(client).__module__.startswith("pylibmc"):
        client.disconnect_all()


def ops(subjects: dict[str, Any], baseline: str, rounds: int, pairs: int) -> dict[str, Any]:
    caches = {name: _build(_entry(spec)) for name, spec in subjects.items()}
    keys = [f"bench-{n % 50}" for n in range(pairs)]

    def runner(cache: Any) -> Any:
        def run() -> float:
            started = time.perf_counter()
            for key in keys:
                cache.set(key, "value")
                if cache.get(key) != "value":
                    raise RuntimeError(f"{key} did not read back")
            return (time.perf_counter() - started) / pairs

        return run

    runs = {name: runner(cache) for name, cache in caches.items()}
    try:
        for run in runs.values():
            run()
        times: dict[str, list[float]] = {}
        interleaved(runs, baseline, rounds, times=times)
        return {"times": times}
    finally:
        for cache in caches.values():
            _close(cache)


def _resolver(impl: str, address: str, service: str) -> Any:
    host, _, port = address.rpartition(":")
    if impl in ("cache_settings", "cache_settings-consul"):
        from cache_settings import parse_source

        scheme = "consul" if impl.endswith("consul") else "elasticache"
        url = f"consul://{address}/{service}" if scheme == "consul" else f"elasticache://{address}"
        source = parse_source(url)
        return lambda: source.resolve(timeout=30.0)
    if impl == "django-elasticache":
        from django_elasticache.cluster_utils import get_cluster_info

        return lambda: get_cluster_info(host, port)["nodes"]
    if impl == "django-elastipymemcache":
        from django_elastipymemcache.client import _ConfigurationEndpointClient

        client = _ConfigurationEndpointClient(address, default_kwargs={"timeout": 30.0})
        return client.config_get_cluster
    if impl == "django-memcached-consul":
        from django_memcached_consul.memcached import get_servers_list_from_consul

        params = {"CONSUL_HOST": host, "CONSUL_PORT": int(port), "CONSUL_SERVICE": service}
        return lambda: get_servers_list_from_consul(params)
    raise ValueError(f"unknown resolver {impl!r}")


def resolve(impl: str, address: str, count: int, service: str = "") -> dict[str, Any]:
    call = _resolver(impl, address, service)
    call()  # warm up: imports, the stand-in's reply for this node list
    took = []
    nodes = 0
    for _ in range(count):
        started = time.perf_counter()
        nodes = len(call())
        took.append(time.perf_counter() - started)
    return {"seconds": statistics.median(took), "nodes": nodes}


def _on(target: str, key: str) -> bool:
    """True when memcached at *target* holds *key* (as Django stores it: ':1:key')."""
    host, _, port = target.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(f"get :1:{key}\r\n".encode())
        reply = b""
        while not reply.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply.startswith(b"VALUE")


def propagate(entry: dict[str, Any]) -> dict[str, Any]:
    cache = _build(_entry(entry))
    cache.set("warm", 1)
    cache.get("warm")
    _reply({"ok": "ready"})
    order = json.loads(sys.stdin.readline())
    deadline = time.monotonic() + order["timeout"]
    n = 0
    trial = uuid.uuid4().hex[:8]  # keys of earlier trials are still on the target
    try:
        while time.monotonic() < deadline:
            n += 1
            key = f"probe-{trial}-{n}"
            try:
                cache.set(key, 1)
            except Exception:
                time.sleep(0.001)
                continue
            if _on(order["target"], key):
                return {"at": time.monotonic()}
            time.sleep(0.001)
        return {"at": None}
    finally:
        _close(cache)


def stop_watchers() -> dict[str, Any]:
    """Stop cache_settings' watcher threads, if this process started any."""
    watch = sys.modules.get("cache_settings.watchers")
    if watch is not None:
        watch.stop_all(timeout=2.0)
    return {"ok": "stopped"}


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        order = json.loads(line)
        command = order.pop("cmd")
        try:
            result = {
                "ops": ops,
                "resolve": resolve,
                "propagate": propagate,
                "stop_watchers": stop_watchers,
            }[command](**order)
        except Exception as exc:  # reported to the driver, which prints it as the peer's result
            result = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        _reply(result)


if __name__ == "__main__":
    main()
