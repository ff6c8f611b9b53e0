"""Small helpers shared by the tests: a Django cache from one entry, waiting for a condition,
scripted third-party sources."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import CacheHandler
from django.core.cache.backends.base import BaseCache

from cache_settings import Node, SourceError
from cache_settings.sources import Traits

# The backends' dotted paths, written out: what an entry must name (not read from the library).
STOCK = {
    "pylibmc": "django.core.cache.backends.memcached.PyLibMCCache",
    "pymemcache": "django.core.cache.backends.memcached.PyMemcacheCache",
}
REFRESHING = {
    "pylibmc": "cache_settings.backends.PyLibMCCache",
    "pymemcache": "cache_settings.backends.PyMemcacheCache",
}

# Seconds a bounded call may return after its bound on the CI machine, where both test
# corners share two cores: a thread's join(0.2) beside a spinning thread woke up to 45 ms
# late while ./run test ran (median 5 ms, 817 samples), and a bounded call waits twice;
# one CI run saw a call 56 ms late. Three times that again, since the CI machine may be
# busier. Far below what an unbounded wait takes (a socket timeout, or a reply that never
# ends), and below the 0.4 s by which dnspython's own lifetime was overrun (test_dns.py).
LATE = 0.3


@contextmanager
def django_cache(entry: dict[str, Any]) -> Iterator[BaseCache]:
    """Yield the Django cache built from one CACHES *entry*; close it afterwards.

    Django's pylibmc backend leaves libmemcached's sockets open on ``close()``, so a
    pylibmc client is disconnected too: a test must not leave sockets behind.
    """
    handler = CacheHandler({"default": entry})
    try:
        yield handler["default"]
    finally:
        handler.close_all()
        client = getattr(handler["default"], "_cache", None)
        if client is not None and type(client).__module__.startswith("pylibmc"):
            client.disconnect_all()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll *predicate* every 20 ms for up to *timeout* seconds; return its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@dataclass
class Scripted:
    """A third-party source whose attempts follow a script: nodes, an error, or a permanent one.

    Each attempt takes the next step (the last one repeats); a step that is a string is the
    reason of a SourceError, permanent when it starts with "permanent".
    """

    script: list[list[Node] | str]
    url: str = "scripted://cluster"
    traits = Traits()
    calls: list[float] = field(default_factory=list)

    def resolve(self, timeout: float) -> list[Node]:
        self.calls.append(timeout)
        step = self.script[min(len(self.calls), len(self.script)) - 1]
        if isinstance(step, str):
            raise SourceError(self.url, step, permanent=step.startswith("permanent"))
        return step


@dataclass
class Hanging:
    """A source that uses up every second it is given, as a black-holed server does."""

    url: str = "hanging://registry"
    traits = Traits()
    calls: list[float] = field(default_factory=list)

    def resolve(self, timeout: float) -> list[Node]:
        self.calls.append(timeout)
        time.sleep(timeout)
        raise SourceError(self.url, f"timed out after {timeout:.2f} s")


def without_host_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide this machine's AWS setup (AWS_* variables, config files, instance metadata)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
