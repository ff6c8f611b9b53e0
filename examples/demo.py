"""The main job on local defaults: Consul → CACHES → a Django cache, then the snapshot fallback.

Starts three real memcached daemons and the local Consul stand-in (the one the tests use),
registers the daemons as a Consul service, resolves them the way settings.py does, stores
and reads a value through Django, then stops the registry and resolves again.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

import cache_settings  # noqa: E402
from tests.servers.consul import ConsulAgent, ConsulServer, ConsulState  # noqa: E402
from tests.servers.memcached import MemcachedServer  # noqa: E402


def show(title: str, value: object) -> None:
    print(f"\n== {title}")
    print(value if isinstance(value, str) else json.dumps(value, indent=2, default=repr))


def fallback(url: str, snapshot: Path, entry: dict[str, object], what: str) -> None:
    show(what, f"resolving {url} again, deadline=2 s")
    started = time.monotonic()
    resolution = cache_settings.resolve(url, snapshot=snapshot, deadline=2.0)
    show(
        "fallback",
        {
            "origin": resolution.origin,
            "nodes": resolution.locations,
            "took_seconds": round(time.monotonic() - started, 3),
            "errors": [str(error.reason) for error in resolution.errors],  # type: ignore[attr-defined]
        },
    )
    assert resolution.origin == "snapshot"
    assert resolution.locations == entry["LOCATION"]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="   log %(levelname)s %(name)s: %(message)s")
    daemons = [MemcachedServer().start() for _ in range(3)]
    registry = ConsulServer(ConsulState()).start()
    agent = ConsulAgent(registry.address, registry.state)
    workdir = tempfile.TemporaryDirectory(prefix="cache-settings-demo-")
    snapshot = Path(workdir.name) / "cache-nodes.json"
    try:
        for daemon in daemons:
            agent.add("memcached", daemon.host, daemon.port, tags=["prod"], node=f"n{daemon.port}")
        # Two instances that must not be used: a failing check, and another tag.
        agent.add("memcached", "10.255.0.1", 11211, status="critical", tags=["prod"], node="sick")
        agent.add("memcached", "10.255.0.2", 11211, tags=["staging"], node="staging")
        url = f"consul://{registry.address}/memcached?tag=prod"
        show("memcached daemons", [d.location for d in daemons])
        call = f'cache_settings.memcached("{url}", snapshot=...)'
        show("settings.py", f'CACHES = {{"default": {call}}}')

        entry = dict(
            cache_settings.memcached(url, snapshot=snapshot, key_prefix="demo", timeout=300)
        )
        show("resolved CACHES['default']", entry)

        settings.configure(CACHES={"default": entry})
        django.setup()
        from django.core.cache import caches

        cache = caches["default"]
        cache.set("greeting", {"hello": "memcached"})
        show("caches['default'].get('greeting')", cache.get("greeting"))
        show(f"snapshot {snapshot.name}", json.loads(snapshot.read_text()))

        registry.state.hang = True  # accepts connections, never answers
        fallback(url, snapshot, entry, "registry hung (accepts, never answers)")
        registry.stop()
        fallback(url, snapshot, entry, "registry stopped")
        print("\ndemo ok")
        return 0
    finally:
        for daemon in daemons:
            daemon.stop()
        registry.state.released.set()
        workdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
