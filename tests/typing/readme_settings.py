"""The README's settings usage, type-checked by mypy (never imported by tests)."""

from __future__ import annotations

import os
from pathlib import Path

import cache_settings

BASE_DIR = Path(__file__).resolve().parent

# README, "Recipes": the snapshot under BASE_DIR / "var", as docs/reference.md advises.
SNAPSHOT = BASE_DIR / "var" / "cache-nodes.json"

CACHES: dict[str, cache_settings.CacheConfig] = {
    # "Consul"
    "default": cache_settings.memcached(
        "consul:///memcached?tag=prod",
        snapshot=SNAPSHOT,
        timeout=600,
        key_prefix="site",
    ),
    # "ElastiCache configuration endpoint"
    "endpoint": cache_settings.memcached(
        "elasticache://my-cluster.abc123.cfg.use1.cache.amazonaws.com:11211",
        snapshot=SNAPSHOT,
    ),
    # "ElastiCache API, clusters and serverless caches"
    "api": cache_settings.memcached(
        "elasticache-api://my-cluster?region=eu-west-1", snapshot=SNAPSHOT
    ),
    # "Kubernetes headless Service, Consul DNS"
    "pods": cache_settings.memcached(
        "dns+memcached.cache.svc.cluster.local:11211", snapshot=SNAPSHOT, refresh=30
    ),
    # "Following node changes: refresh=N"
    "refreshing": cache_settings.memcached(
        "consul:///memcached?tag=prod", snapshot=SNAPSHOT, refresh=30
    ),
    # "Configuration from the environment"
    "environ": cache_settings.memcached(os.environ["CACHE_URL"], refresh=30, snapshot=SNAPSHOT),
    "plain": {
        "BACKEND": "cache_settings.backends.PyMemcacheCache",
        "LOCATION": os.environ["CACHE_URL"],
        "OPTIONS": {"refresh": 30, "snapshot": "/app/var/cache-nodes.json"},
    },
    # Keyword arguments of docs/reference.md, "memcached(source, **options)".
    "sessions": cache_settings.memcached(
        "elasticache://sessions.abc123.cfg.use1.cache.amazonaws.com:11211",
        backend="pymemcache",
        on_failure="locmem",
    ),
    "tuned": cache_settings.memcached(
        "consul:///memcached?tag=prod",
        backend="pylibmc",
        options={"behaviors": {"ketama": True}},
    ),
}

# docs/sources.md, "Chains": a migration chain, the new registry first.
CHAINED: dict[str, cache_settings.CacheConfig] = {
    "default": cache_settings.memcached(
        [
            "consul:///memcached?tag=prod",
            "elasticache://mc.abc123.cfg.use1.cache.amazonaws.com:11211",
        ],
        snapshot=SNAPSHOT,
        refresh=30,
    ),
}
