"""Fork safety: a forked child never sends anything on the connections it inherited.

A child made by ``fork()`` (gunicorn, uWSGI and Celery prefork workers, multiprocessing's
"fork" start method, management commands that fork) shares its parent's sockets. Two things
would then go wrong with memcached clients the parent built before the fork:

- The child uses one: its requests and the parent's interleave on one connection, and each
  reads the other's replies.
- The child frees one: libmemcached (pylibmc) sends ``quit`` on every connection of a client
  it frees, so a child that exits normally (``sys.exit()``, the end of the script) closes the
  parent's connections under it. Measured with pylibmc 1.6.3 and one daemon: after five such
  children, 50 of the parent's next 50 gets failed and the node was ejected for
  ``dead_timeout`` seconds.

So, in the child, right after the fork, every memcached client reachable from Django's cache
handler is detached from its backend, which builds a fresh client (new connections) on its
next operation, and :func:`release_inherited` lets go of the old one without a byte sent:
a pymemcache client's sockets are closed (closing a descriptor the parent still holds sends
nothing), a pylibmc client is kept alive for the rest of the process, so libmemcached never
runs its ``quit``. That costs one client object per backend per fork, never more.

What remains: Django keeps one backend per thread; only the forking thread's backends are
reachable in the child (the others' threads do not exist there). Fork before using the
cache in other threads (gunicorn ``--preload`` forks from the main thread), or use the
refreshing backends, which track their clients per process (``cache_settings/backends.py``).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

__all__ = ["install", "release_inherited"]

_installed = False
_install_lock = threading.Lock()


def release_inherited(client: Any) -> None:
    """Let go of *client*, built before a fork, without sending anything on its connections."""
    pylibmc = sys.modules.get("pylibmc")
    if pylibmc is not None and isinstance(client, pylibmc.Client):
        import ctypes  # only in a forked child: ctypes costs ~3 ms at settings import

        # One reference that is never dropped: the interpreter then never frees the client,
        # not even at exit, so libmemcached never sends "quit" on the parent's connections.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(client))
        return
    disconnect = getattr(client, "disconnect_all", None)
    if disconnect is not None:
        # pymemcache closes its sockets without a "quit"; the parent's stay open.
        disconnect()


def _new_install_lock() -> None:
    # A thread that held the lock at the fork does not exist in the child: a fresh lock.
    global _install_lock
    _install_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_install_lock)


def install() -> None:
    """Detach inherited memcached clients in every forked child of this process (idempotent)."""
    global _installed
    with _install_lock:
        if _installed or not hasattr(os, "register_at_fork"):
            return
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _installed = True


def _after_fork_in_child() -> None:
    if "django.core.cache" not in sys.modules:
        return
    from django.core.cache import caches
    from django.core.cache.backends.memcached import BaseMemcachedCache

    try:
        backends = caches.all(initialized_only=True)
    except Exception:  # settings not configured: no cache was ever built
        return
    for backend in backends:
        if not isinstance(backend, BaseMemcachedCache):
            continue
        # Django's backends build their client in the ``_cache`` cached_property, stored
        # in the instance's __dict__; removing it makes the next operation build a new one.
        client = backend.__dict__.pop("_cache", None)
        if client is not None:
            release_inherited(client)
