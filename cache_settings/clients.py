"""The memcached clients: which one an entry uses, and the OPTIONS it starts from."""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from .exceptions import ConfigurationError
from .sources import Source
from .tls import TLSConfig

__all__ = ["BACKENDS", "client_defaults"]

# Django's own backends; refresh=N swaps in the subclasses of cache_settings.backends.
BACKENDS: dict[str, str] = {
    "pylibmc": "django.core.cache.backends.memcached.PyLibMCCache",
    "pymemcache": "django.core.cache.backends.memcached.PyMemcacheCache",
}

# A node that accepts connections and never answers must cost one bounded wait, then be
# skipped (its keys re-hashed to the live nodes) until it is tried again. Measured with
# one black-holed node of three: stock PyLibMCCache waits 5.0 s (libmemcached's default
# _poll_timeout) and stock PyMemcacheCache (no socket timeout) blocks for good.
_IO_TIMEOUT = 0.5  # seconds: 250 times a cross-AZ round trip, half the 1 s request budget
_DEAD_TIMEOUT = 30  # seconds a failed node stays out of the hash ring before a retry

# pylibmc behaviors (pylibmc 1.6 docs/behaviors.rst, libmemcached 1.0 connect.cc/io.cc).
# libmemcached always uses non-blocking sockets, so _poll_timeout (ms) bounds every read
# and write and connect_timeout (ms) the connect; receive_timeout/send_timeout
# (SO_RCVTIMEO/SO_SNDTIMEO) have no effect on non-blocking sockets and are left alone.
# remove_failed=1 ejects a node after its first failure and re-hashes its keys (ketama);
# without dead_timeout an ejected node is never tried again and its keys keep failing,
# so the two go together. retry_timeout must stay above zero: libmemcached counts
# failures only then.
_PYLIBMC_BEHAVIORS: dict[str, Any] = {
    "ketama": True,
    "tcp_nodelay": True,
    "connect_timeout": int(_IO_TIMEOUT * 1000),
    "_poll_timeout": int(_IO_TIMEOUT * 1000),
    "retry_timeout": 2,
    "remove_failed": 1,
    "dead_timeout": _DEAD_TIMEOUT,
}

# pymemcache HashClient (pymemcache 4.0 client/hash.py): retry_attempts=0 removes a node
# from the rendezvous ring on its first socket error, for dead_timeout seconds; with
# retries it would wait once more per attempt. ignore_exc stays False, as in Django, so
# that the failing operation itself still raises.
# No pooling, as in stock Django: pymemcache's pool costs 1.10-1.20x stock per set+get
# (a lock, a deque and a context manager per operation; bench/bench_backends.py --options)
# and buys nothing here, because Django never shares a backend's client between threads.
# CacheHandler keeps backends in an asgiref Local (django/utils/connection.py,
# BaseConnectionHandler.__init__ and __getitem__), so each thread builds its own backend,
# and each backend its own client (BaseMemcachedCache._cache is a cached_property of the
# instance, django/core/cache/backends/memcached.py); the async a*() methods run the sync
# ones through sync_to_async(thread_sensitive=True) (django/core/cache/backends/base.py),
# one thread at a time. A backend object kept by hand and used from several threads (or
# sync calls on the event loop while a*() calls of the same context run) needs
# options={"use_pooling": True}, exactly as stock Django's PyMemcacheCache would.
_PYMEMCACHE_OPTIONS: dict[str, Any] = {
    "connect_timeout": _IO_TIMEOUT,
    "timeout": _IO_TIMEOUT,
    "no_delay": True,
    "retry_attempts": 0,
    "retry_timeout": 1,
    "dead_timeout": _DEAD_TIMEOUT,
    "use_pooling": False,
}


def client_defaults(backend: str) -> dict[str, Any]:
    """Return the OPTIONS every entry starts from, before the user's ``options``.

    Both clients get bounded connect and I/O timeouts (0.5 seconds) and drop a failed
    node from the hash ring for 30 seconds, so a node that never answers costs one
    bounded wait and its keys move to the live nodes until it is retried.

    pylibmc also gets the text protocol (libmemcached 1.0's binary mode breaks Django's
    ``incr``/``decr`` on missing keys, ``touch`` and zero timeouts) and ketama
    consistent hashing, so that adding one node to ten moves about a tenth of the keys.
    pymemcache: Django already uses its ``HashClient``, whose rendezvous hashing is
    consistent; no pooling, as in Django, which builds one client per thread.
    """
    if backend == "pylibmc":
        return {"binary": False, "behaviors": dict(_PYLIBMC_BEHAVIORS)}
    return dict(_PYMEMCACHE_OPTIONS)


def _choose_backend(source: Source, backend: str | None, tls: TLSConfig | None) -> str:
    implied = source.traits.backend
    if backend is not None and backend not in BACKENDS:
        raise ConfigurationError(f"backend must be 'pylibmc' or 'pymemcache', not {backend!r}")
    if backend is not None and implied is not None and backend != implied:
        raise ConfigurationError(
            f"{source.url}: the URL asks for {implied} but backend={backend!r}; drop one of them"
        )
    chosen = backend or implied
    if tls is not None:
        if chosen == "pylibmc":
            raise ConfigurationError(
                f"{source.url}: pylibmc cannot speak TLS (libmemcached has no TLS); "
                'use backend="pymemcache"'
            )
        return "pymemcache"
    return chosen or "pylibmc"


# pylibmc applies remove_failed after auto_eject and failure_limit, so our remove_failed
# would silently override a user who chose either of those to control ejection.
_EJECTION_BEHAVIORS = {"remove_failed", "auto_eject", "failure_limit"}


def _merge_options(defaults: dict[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    merged = deepcopy(defaults)
    for key, value in options.items():
        if key == "behaviors" and isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            if _EJECTION_BEHAVIORS & set(value):
                merged[key].pop("remove_failed", None)
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
