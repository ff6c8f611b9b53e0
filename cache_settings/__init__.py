"""Resolve memcached nodes for Django's ``CACHES`` from Consul, ElastiCache or a static list.

::

    import cache_settings
    CACHES = {"default": cache_settings.memcached("consul:///memcached?tag=prod",
                                                  snapshot=BASE_DIR / "cache-nodes.json")}
"""

from __future__ import annotations

from .exceptions import (
    CacheSettingsError,
    ConfigurationError,
    ResolutionError,
    SnapshotError,
    SourceError,
)
from .nodes import Node
from .resolve import Resolution, resolve
from .settings import CacheConfig, memcached
from .sources import Source, parse_source

__all__ = [
    "CacheConfig",
    "CacheSettingsError",
    "ConfigurationError",
    "Node",
    "Resolution",
    "ResolutionError",
    "SnapshotError",
    "Source",
    "SourceError",
    "memcached",
    "parse_source",
    "resolve",
]

__version__ = "0.1.0"
