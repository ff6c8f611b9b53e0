"""Settings of the example site: every cache alias is one cache_settings.memcached() call.

Out of the box the site uses one local memcached (``memcached://127.0.0.1:11211``). Each
source is switched on by an environment variable holding its URL:

========================== ========= =====================================================
variable                   alias     example
========================== ========= =====================================================
MYSITE_CACHE_URL           default   ``memcached://127.0.0.1:11211`` (the default)
MYSITE_CONSUL_URL          consul    ``consul:///memcached?tag=prod`` (agent, token from
                                     ``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``)
MYSITE_ELASTICACHE_URL     cluster   ``elasticache://my-cfg.abc123.cfg.use1.cache.amazonaws.com:11211``
MYSITE_ELASTICACHE_API_URL aws       ``elasticache-api://my-cluster?region=us-east-1``
========================== ========= =====================================================

``MYSITE_SNAPSHOT`` is the last-known-good file (default ``cache-nodes.json`` beside
manage.py), written by ``cache-settings resolve --settings mysite.settings`` (see
``examples/predeploy.sh``). ``MYSITE_REFRESH=30`` makes the Consul and ElastiCache aliases
follow node changes at run time (the refreshing backends).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cache_settings

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("MYSITE_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("MYSITE_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

INSTALLED_APPS = [
    "cache_settings",  # manage.py cache_nodes, and the system checks
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "mysite.urls"
DATABASES: dict[str, Any] = {}

SNAPSHOT = os.environ.get("MYSITE_SNAPSHOT", str(BASE_DIR / "cache-nodes.json"))
DEADLINE = float(os.environ.get("MYSITE_DEADLINE", "3"))


def _memcached(url: str, *, refreshing: bool = False) -> cache_settings.CacheConfig:
    extra: dict[str, Any] = {}
    if refreshing and os.environ.get("MYSITE_REFRESH"):
        extra["refresh"] = float(os.environ["MYSITE_REFRESH"])
    return cache_settings.memcached(
        url, snapshot=SNAPSHOT, deadline=DEADLINE, key_prefix="mysite", timeout=300, **extra
    )


CACHES = {
    "default": _memcached(os.environ.get("MYSITE_CACHE_URL", "memcached://127.0.0.1:11211")),
}
for _alias, _variable in (
    ("consul", "MYSITE_CONSUL_URL"),
    ("cluster", "MYSITE_ELASTICACHE_URL"),
    ("aws", "MYSITE_ELASTICACHE_API_URL"),
):
    if os.environ.get(_variable):
        CACHES[_alias] = _memcached(os.environ[_variable], refreshing=True)
