"""Session fixtures: real memcached daemons, network stand-ins, a TLS CA; a clean environment."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        SECRET_KEY="cache-settings-tests",
        USE_TZ=True,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    )
    django.setup()

pytest_plugins = [
    "tests.servers.tls",
    "tests.servers.memcached",
    "tests.servers.faults",
    "tests.servers.consul",
    "tests.servers.config_endpoint",
    "tests.servers.elasticache_api",
    "tests.servers.dns",
    "tests.servers.dns_scripted",
]

# Real services are opt-in through their standard variables; the stand-in fixtures read
# them at import time, before this fixture clears them for every test.
_CLEARED_PREFIXES = ("CONSUL_", "AWS_", "CACHE_SETTINGS_")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without the caller's Consul, AWS and cache_settings variables."""
    for name in list(os.environ):
        if name.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(name)
    # boto3 must never read the developer's ~/.aws files during a test.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def stopped_watchers() -> Iterator[None]:
    """Stop every refreshing backend's watcher after each test: none outlives its test."""
    from cache_settings.watchers import stop_all

    yield
    stop_all(timeout=2.0)


@pytest.fixture
def without_collections() -> Iterator[None]:
    """Keep the garbage collector's pauses out of a test that times a bounded call.

    A full collection of this process's heap, large after the property tests that run
    before, took 0.3 s in the middle of a timed call (tests/sources/test_attempts.py):
    the test's heap, not the call's bound. Collected once before, none during.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
