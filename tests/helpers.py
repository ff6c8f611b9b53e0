"""Small helpers shared by the tests: a Django cache from one entry, waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.cache import CacheHandler
from django.core.cache.backends.base import BaseCache


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
