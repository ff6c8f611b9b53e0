"""The README's settings usage, type-checked by mypy (never imported by tests)."""

from __future__ import annotations

from pathlib import Path

import cache_settings

BASE_DIR = Path(__file__).resolve().parent

CACHES: dict[str, cache_settings.CacheConfig] = {
    "default": cache_settings.memcached(
        "consul:///memcached?tag=prod",
        snapshot=BASE_DIR / "cache-nodes.json",
        backend="pylibmc",
        timeout=600,
        key_prefix="site",
        options={"behaviors": {"ketama": True}},
    ),
    "sessions": cache_settings.memcached(
        "elasticache://sessions.abc123.cfg.use1.cache.amazonaws.com:11211",
        backend="pymemcache",
        on_failure="locmem",
    ),
}

# README, "Chains": a migration chain, the new registry first.
CHAINED: dict[str, cache_settings.CacheConfig] = {
    "default": cache_settings.memcached(
        [
            "consul:///memcached?tag=prod",
            "elasticache://mc.abc123.cfg.use1.cache.amazonaws.com:11211",
        ],
        snapshot=BASE_DIR / "cache-nodes.json",
        refresh=30,
    ),
}
