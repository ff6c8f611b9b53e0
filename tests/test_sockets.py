"""pymemcache's timeout kept by the kernel (cache_settings/sockets.py), over real sockets.

A plain-TCP pymemcache connection made from a ``memcached()`` entry is a blocking socket
with ``SO_RCVTIMEO``/``SO_SNDTIMEO`` of the entry's ``timeout``: no ``poll()`` per step, and
a node that stops answering still costs one bounded wait. A TLS connection keeps CPython's
own timeout, since CPython's ``ssl`` retries a read that the kernel timed out.
"""

from __future__ import annotations

import copy
import json
import pickle
import socket
import ssl
import struct
import sys
import threading
import time
from typing import Any

import pytest

from cache_settings import memcached
from cache_settings.sockets import KERNEL_TIMEOUTS, kernel_timeouts_available
from tests.helpers import django_cache
from tests.servers.memcached import MemcachedFactory, MemcachedServer
from tests.servers.tls import TLSFiles

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kernel timeouts: Linux only")

TIMEOUT = 0.5  # seconds: the entries' default I/O timeout (cache_settings/clients.py)


def _kernel_timeouts(sock: socket.socket) -> tuple[float, float]:
    """Return (SO_RCVTIMEO, SO_SNDTIMEO) of *sock* in seconds; 0 means none."""

    def read(option: int) -> float:
        seconds, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
        return float(seconds + micros / 1_000_000)

    return read(socket.SO_RCVTIMEO), read(socket.SO_SNDTIMEO)


def _connection(cache: Any) -> socket.socket:
    """Return the one connected socket of a single-node pymemcache cache."""
    (client,) = cache._cache.clients.values()
    assert client.sock is not None
    return client.sock  # type: ignore[no-any-return]


def _timed_get(cache: Any, key: str, limit: float) -> tuple[float | None, BaseException | None]:
    """Run ``cache.get(key)`` in a thread; return (seconds, its error), seconds None if hung."""
    outcome: list[tuple[float, BaseException | None]] = []

    def get() -> None:
        started = time.monotonic()
        try:
            cache.get(key)
        except Exception as exc:  # the caller inspects it
            outcome.append((time.monotonic() - started, exc))
        else:
            outcome.append((time.monotonic() - started, None))

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    thread.join(limit)
    return outcome[0] if outcome else (None, None)


def test_kernel_timeouts__available_on_linux() -> None:
    assert kernel_timeouts_available()


def test_kernel_timeouts__plain_connection_is_blocking_with_kernel_bounds(
    memcached_node: MemcachedServer,
) -> None:
    entry = dict(memcached(f"memcached://{memcached_node.location}", backend="pymemcache"))

    assert entry["OPTIONS"]["socket_module"] is KERNEL_TIMEOUTS
    assert entry["OPTIONS"]["timeout"] == TIMEOUT  # as documented: pymemcache's own option
    with django_cache(entry) as cache:
        cache.set("k", "v")
        assert cache.get("k") == "v"
        sock = _connection(cache)
        assert sock.gettimeout() is None  # blocking: no poll() before each recv()
        assert _kernel_timeouts(sock) == (TIMEOUT, TIMEOUT)


def test_kernel_timeouts__node_that_stops_answering_costs_one_bounded_wait(
    memcached_factory: MemcachedFactory,
) -> None:
    node = memcached_factory()
    entry = dict(memcached(f"memcached://{node.location}", backend="pymemcache"))
    with django_cache(entry) as cache:
        cache.set("k", "v")  # connected, then the node stops answering
        node.pause()
        try:
            took, error = _timed_get(cache, "k", limit=5.0)
        finally:
            node.resume()
            node.stop()

    assert took is not None, "the read never returned"
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 0.5
    assert isinstance(error, OSError)  # what HashClient counts as a failed node


def test_kernel_timeouts__tls_connection_keeps_cpython_timeout(
    memcached_factory: MemcachedFactory, tls_files: TLSFiles
) -> None:
    node = memcached_factory(tls=True)
    entry = dict(memcached(f"pymemcache://localhost:{node.port}?tls=true&ca={tls_files.ca}"))
    with django_cache(entry) as cache:
        cache.set("k", "v")
        sock = _connection(cache)
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.gettimeout() == TIMEOUT
        assert _kernel_timeouts(sock) == (0.0, 0.0)
        node.pause()
        try:
            took, error = _timed_get(cache, "k", limit=5.0)
        finally:
            node.resume()
            node.stop()

    assert took is not None, "a TLS read timed out by the kernel would never return"
    assert took < TIMEOUT + 0.5
    assert isinstance(error, OSError)


def test_kernel_timeouts__refreshing_entry_stays_plain_data_and_uses_them(
    memcached_node: MemcachedServer,
) -> None:
    entry = dict(
        memcached(f"memcached://{memcached_node.location}", backend="pymemcache", refresh=60)
    )

    assert "socket_module" not in entry["OPTIONS"]
    json.dumps(entry)  # plain data, as every refreshing entry
    with django_cache(entry) as cache:
        cache.set("k", "v")
        assert cache.get("k") == "v"
        assert _kernel_timeouts(_connection(cache)) == (TIMEOUT, TIMEOUT)


def test_kernel_timeouts__user_socket_module_wins(memcached_node: MemcachedServer) -> None:
    entry = memcached(
        f"memcached://{memcached_node.location}",
        backend="pymemcache",
        options={"socket_module": socket},
    )

    assert entry["OPTIONS"]["socket_module"] is socket
    with django_cache(dict(entry)) as cache:
        cache.set("k", "v")
        assert _connection(cache).gettimeout() == TIMEOUT


def test_kernel_timeouts__entry_survives_copy_and_pickle() -> None:
    entry = memcached("memcached://10.0.0.1:11211", backend="pymemcache")

    assert copy.deepcopy(entry)["OPTIONS"]["socket_module"] is KERNEL_TIMEOUTS
    assert pickle.loads(pickle.dumps(entry))["OPTIONS"]["socket_module"] is KERNEL_TIMEOUTS
    assert repr(KERNEL_TIMEOUTS) == "cache_settings.sockets.KERNEL_TIMEOUTS"
    assert KERNEL_TIMEOUTS.AF_INET == socket.AF_INET  # every other name is socket's
