"""A site for the CLI tests: each alias's source comes from an environment variable.

``CLI_SITE_CONSUL`` (default ``consul:///memcached``), ``CLI_SITE_STATIC`` (default
``memcached://127.0.0.1:11211``), ``CLI_SITE_ELASTICACHE`` (the ``cluster`` alias, only when
set), ``CLI_SITE_SNAPSHOT`` (one file for all aliases) and ``CLI_SITE_DEADLINE`` (seconds),
so that tests point it at stand-ins.
"""

from __future__ import annotations

import os

import cache_settings

SECRET_KEY = "cli-site-tests"
USE_TZ = True
INSTALLED_APPS = ["cache_settings"]
DATABASES: dict[str, dict[str, str]] = {}

_SNAPSHOT = os.environ.get("CLI_SITE_SNAPSHOT") or None
_DEADLINE = float(os.environ.get("CLI_SITE_DEADLINE", "1"))

CACHES = {
    "default": cache_settings.memcached(
        os.environ.get("CLI_SITE_CONSUL", "consul:///memcached"),
        snapshot=_SNAPSHOT,
        attempts=2,
        deadline=_DEADLINE,
        key_prefix="cli-site",
    ),
    "sessions": cache_settings.memcached(
        os.environ.get("CLI_SITE_STATIC", "memcached://127.0.0.1:11211"),
        snapshot=_SNAPSHOT,
        backend="pymemcache",
    ),
}
if os.environ.get("CLI_SITE_ELASTICACHE"):
    CACHES["cluster"] = cache_settings.memcached(
        os.environ["CLI_SITE_ELASTICACHE"], snapshot=_SNAPSHOT, deadline=_DEADLINE
    )
