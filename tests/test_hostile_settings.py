"""CACHES entries nobody meant: their secrets are never quoted, and only our errors escape.

Each entry goes through Django's CacheHandler or its system checks, as a site's settings
do; messages and warnings are read whole, and must not hold the password or token the
setting held.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
from django.core.cache import CacheHandler
from django.core.checks import run_checks
from django.core.checks.registry import registry
from django.test import override_settings

from cache_settings import ConfigurationError, checks

ELASTICACHE = "cache_settings.compat.ElastiCache"
CONSUL = "cache_settings.compat.ConsulMemcachedCache"
REFRESHING = "cache_settings.backends.PyLibMCCache"
PASSWORD = "hunter2-password"
TOKEN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
URL = f"consul://ops:{PASSWORD}@agent.example:8500/memcached?token={TOKEN}"


def _error_of(entry: dict[str, Any]) -> str:
    handler = CacheHandler({"default": entry})
    with pytest.raises(ConfigurationError) as raised:
        handler["default"].get("key")
    return str(raised.value)


@pytest.mark.parametrize(
    "entry",
    [
        {"BACKEND": ELASTICACHE, "LOCATION": f"ops:{PASSWORD}@cfg.example:11211,b.example:1"},
        {"BACKEND": ELASTICACHE, "LOCATION": ["cfg.example:11211", URL]},
        {"BACKEND": ELASTICACHE, "LOCATION": "cfg.example:11211", "OPTIONS": {"behaviors": URL}},
        {"BACKEND": REFRESHING, "LOCATION": [URL, "cfg.example:11211"]},
        {"BACKEND": REFRESHING, "LOCATION": f"cfg.example:11211;{URL}"},
        {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "CONSUL_HOST": f"http://ops:{PASSWORD}@a"},
    ],
    ids=["two-servers", "endpoint-and-url", "behaviors", "chain-list", "chain-text", "host"],
)
def test_compat_errors__a_setting_holding_a_secret_is_quoted_without_it(
    entry: dict[str, Any],
) -> None:
    text = _error_of(entry)

    assert PASSWORD not in text, text
    assert TOKEN not in text, text


@pytest.mark.parametrize(
    "entry",
    [
        {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "LOCATION": URL},
        {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "LOCATION": f"ops:{PASSWORD}@mc.example:1"},
        {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "CONSUL_ALT_TTL": 60, "CONSUL_CACHE": URL},
        {
            "BACKEND": ELASTICACHE,
            "LOCATION": "cfg.example:11211",
            "OPTIONS": {"IGNORE_CLUSTER_ERRORS": URL},
        },
    ],
    ids=["consul-location-url", "consul-location-node", "consul-cache", "ignore-errors"],
)
def test_compat_warnings__a_setting_holding_a_secret_is_quoted_without_it(
    entry: dict[str, Any],
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CacheHandler({"default": entry})["default"]

    text = "\n".join(str(warning.message) for warning in caught)
    assert "mc.example" in text or "agent.example" in text, text
    assert PASSWORD not in text, text
    assert TOKEN not in text, text


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"BACKEND": ELASTICACHE, "LOCATION": 11211}, "LOCATION must be .* as text"),
        ({"BACKEND": ELASTICACHE, "LOCATION": b"cfg.example:11211"}, "LOCATION must be"),
        ({"BACKEND": ELASTICACHE, "LOCATION": ["cfg.example:11211", None]}, "LOCATION must be"),
        (
            {"BACKEND": ELASTICACHE, "LOCATION": "cfg.example:11211", "OPTIONS": {1: 2, "x": 3}},
            r"OPTIONS 'x', 1 are neither pylibmc behaviors",
        ),
        (
            {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "CONSUL_PORT": 10**5000},
            "CONSUL_PORT must be a port 1..65535, not an integer of 16610 bits",
        ),
    ],
    ids=["location-int", "location-bytes", "location-none-item", "option-keys", "port-huge"],
)
def test_compat_backends__settings_of_odd_types_are_a_configuration_error(
    entry: dict[str, Any], message: str
) -> None:
    """Django builds every cache for its own system checks: nothing else may escape there."""
    text = _error_of(entry)  # the first operation raises what building the cache kept

    assert re.search(message, text), text


@pytest.mark.parametrize(
    ("agent", "says"),
    [
        ({"CONSUL_HOST": "consul.example:8500"}, "CONSUL_HOST must be the agent's host name"),
        ({"CONSUL_HOST": "http://consul.example"}, "CONSUL_HOST must be the agent's host name"),
        ({"CONSUL_HOST": f"ops:{PASSWORD}@consul.example"}, "user info removed"),
        ({"CONSUL_HOST": ["consul.example"]}, "CONSUL_HOST must be .* not a JSON array"),
        ({"CONSUL_HOST": ""}, "CONSUL_HOST must be the agent's host name"),
        ({"CONSUL_HOST": "consul.example", "CONSUL_PORT": 0}, "CONSUL_PORT must be a port"),
        ({"CONSUL_HOST": "consul.example", "CONSUL_PORT": ""}, "CONSUL_PORT must be a port"),
    ],
    ids=["host-with-port", "host-url", "host-user-info", "host-list", "host-empty", "port-0",
         "port-empty"],
)  # fmt: skip
def test_consul_compat__agent_settings_that_never_worked__name_the_setting_and_the_fix(
    agent: dict[str, Any], says: str
) -> None:
    """django-memcached-consul wrote http://CONSUL_HOST:CONSUL_PORT: a port or scheme in
    CONSUL_HOST never worked there. Here it was bracketed as an IPv6 address (the message
    quoted '[consul.example:8500]:8500' and named no setting), and an empty or zero value
    was silently replaced by 127.0.0.1 or 8500."""
    text = _error_of({"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", **agent})

    assert re.search(says, text), text
    assert "cache_settings.compat.ConsulMemcachedCache (CONSUL_SERVICE='mc')" in text
    assert PASSWORD not in text
    assert "]:8500" not in text


def test_consul_compat__an_ipv6_agent_in_consul_host__is_bracketed() -> None:
    cache = CacheHandler(
        {"default": {"BACKEND": CONSUL, "CONSUL_SERVICE": "mc", "CONSUL_HOST": "::1"}}
    )["default"]

    assert cache._watcher.url == "consul://[::1]:8500/mc"  # type: ignore[attr-defined]


@pytest.mark.parametrize("location", [11211, 3.5, object()])
def test_system_checks__a_location_of_any_type_is_checked_without_crashing(location: Any) -> None:
    """``manage.py check`` runs every check: one raising stops it with a traceback."""
    assert checks.check_locations in registry.get_checks()
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "stock": {"BACKEND": "django.core.cache.backends.memcached.PyLibMCCache",
                  "LOCATION": location},
        "refreshing": {"BACKEND": REFRESHING, "LOCATION": location},
        "compat": {"BACKEND": ELASTICACHE, "LOCATION": location},
    }  # fmt: skip

    with override_settings(CACHES=caches):
        messages = run_checks(tags=["caches"])  # ours are registered by importing checks

    found = [(m.id, m.obj) for m in messages if str(m.id).startswith("cache_settings.E")]
    assert found == [("cache_settings.E004", "compat")], messages
