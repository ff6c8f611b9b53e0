"""The memcached clients: which one an entry uses, what it can do here, and its OPTIONS.

A client library is imported only when an entry is about to use it (to check the
``options`` against it and what its build can do), never by ``import cache_settings``.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from copy import deepcopy
from functools import lru_cache
from typing import Any, Literal, NamedTuple, TypeGuard

from .capabilities import cannot_reach, ejects_silent_nodes, pylibmc_build, unapplied_behaviors
from .exceptions import ConfigurationError, brief, close_matches
from .nodes import Node
from .sources import Source
from .tls import TLSConfig

__all__ = ["BACKENDS", "choose_client", "client_defaults", "unknown_option"]

logger = logging.getLogger(__name__)

# Django's own backends; refresh=N swaps in the subclasses of cache_settings.backends.
BACKENDS: dict[str, str] = {
    "pylibmc": "django.core.cache.backends.memcached.PyLibMCCache",
    "pymemcache": "django.core.cache.backends.memcached.PyMemcacheCache",
}
_INSTALL = {name: f'pip install "django-cache-settings[{name}]"' for name in BACKENDS}

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
# failures only then. failure_limit is spelt out: libmemcached 1.0 (pylibmc's wheels, up
# to Python 3.11) sets it from remove_failed, libmemcached 1.1 (what pylibmc builds
# against on Python 3.12 and later, e.g. Debian 12) does not and leaves it at 5.
_PYLIBMC_BEHAVIORS: dict[str, Any] = {
    "ketama": True,
    "tcp_nodelay": True,
    "connect_timeout": int(_IO_TIMEOUT * 1000),
    "_poll_timeout": int(_IO_TIMEOUT * 1000),
    "retry_timeout": 2,
    "remove_failed": 1,
    "failure_limit": 1,
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


def choose_client(
    source: Source,
    backend: str | None,
    tls: TLSConfig | None,
    nodes: Sequence[Node],
    options: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """Return the client for an entry of *nodes* and the entry's OPTIONS.

    The client the user chose (*backend*, a ``pylibmc://``/``pymemcache://`` URL, or
    ``options`` only pylibmc takes, such as ``behaviors``) must serve the entry;
    otherwise the first of pylibmc and pymemcache that can serve it on this interpreter
    is used. A client cannot when it is not installed, when *tls* is set (pylibmc), when
    an ``options`` name is not one of its arguments, when it cannot connect to one of
    *nodes* (:func:`cannot_reach`), or when pylibmc does not apply the behaviors asked
    (read back from a client built without connecting). Unless chosen, pylibmc is also
    passed over where it does not eject a node that stops answering (libmemcached 1.1).

    Raises:
        ConfigurationError: the chosen client cannot, or neither can; the message names
            each cause and the fix.
    """
    implied = source.traits.backend
    if backend is not None and (not isinstance(backend, str) or backend not in BACKENDS):
        raise ConfigurationError(f"backend must be 'pylibmc' or 'pymemcache', not {brief(backend)}")
    if backend is not None and implied is not None and backend != implied:
        raise ConfigurationError(
            f"{source.url}: the URL asks for {implied} but backend={brief(backend)}; "
            "drop one of them"
        )
    chosen = backend or implied
    if tls is not None and chosen == "pylibmc":
        raise ConfigurationError(
            f"{source.url}: pylibmc cannot speak TLS (libmemcached has no TLS); "
            'use backend="pymemcache"'
        )
    if "behaviors" in options and not isinstance(options["behaviors"], Mapping):
        kind = type(options["behaviors"]).__name__
        raise ConfigurationError(f"{source.url}: options['behaviors'] must be a dict, not {kind}")
    if chosen is None and not tls and _PYLIBMC_ARGUMENTS & set(options):
        chosen = "pylibmc"
    candidates = [chosen] if chosen else ["pymemcache"] if tls else ["pylibmc", "pymemcache"]
    causes: list[_Cause] = []
    for candidate in candidates:
        merged = _merge_options(client_defaults(candidate), options)
        cause = _cannot_serve(candidate, merged, options, nodes, chosen=chosen is not None)
        if cause is None:
            if causes:
                logger.info("%s: using %s: %s", source.url, candidate, _join(causes))
            return candidate, merged
        causes.append(cause)
    if causes[0].kind == "options":
        causes = causes[:1]  # a mistake for the preferred client, not a reason to list others
    elif chosen is None and all(cause.kind == "missing" for cause in causes):
        install = f"{_INSTALL['pylibmc']} (or [pymemcache])"
        causes = [_Cause(f"no memcached client is installed: {install}")]
    elif chosen == "pylibmc" and causes[0].kind == "capability":
        fix = "a pymemcache:// URL" if implied else 'backend="pymemcache"'
        causes.append(_Cause(f"use pymemcache instead ({fix})"))
        if importlib.util.find_spec("pymemcache") is None:
            causes.append(_Cause(_INSTALL["pymemcache"]))
    raise ConfigurationError(f"{source.url}: {_join(causes)}")


# pylibmc.Client's own arguments besides the servers (pylibmc 1.6 client.py); options
# naming one of them choose pylibmc as surely as backend="pylibmc".
_PYLIBMC_ARGUMENTS = frozenset({"behaviors", "binary", "username", "password"})


class _Cause(NamedTuple):
    """Why one client cannot serve an entry: it is "missing", refuses the "options", or
    lacks a "capability" on this interpreter that the other client has."""

    text: str
    kind: Literal["missing", "options", "capability"] = "options"


def _join(causes: Iterable[_Cause]) -> str:
    return "; ".join(cause.text for cause in causes)


def _cannot_serve(
    backend: str,
    merged: dict[str, Any],
    options: Mapping[str, Any],
    nodes: Sequence[Node],
    *,
    chosen: bool,
) -> _Cause | None:
    """Return why *backend* cannot serve this entry, or None when it can."""
    if importlib.util.find_spec(backend) is None:
        return _Cause(f"{backend} is not installed: {_INSTALL[backend]}", "missing")
    unknown = unknown_option(backend, options) or _bad_value(backend, options)
    if unknown:
        return _Cause(unknown)
    unreachable = cannot_reach(backend, nodes)
    if unreachable:
        where = ", ".join(node.location for node in unreachable)
        return _Cause(f"{pylibmc_build()} cannot connect to IPv6 addresses ({where})", "capability")
    if backend != "pylibmc":
        return None
    try:
        dropped = unapplied_behaviors(merged["behaviors"], bool(merged.get("binary")))
    except ValueError as exc:
        return _Cause(str(exc))
    if dropped:
        # One of the user's behaviors not applied is a mistake in options; one of ours is
        # what this pylibmc cannot do.
        text = f"{pylibmc_build()} did not apply the behaviors {', '.join(dropped.values())}"
        given = set(options.get("behaviors", ()))
        return _Cause(text, "options" if given & set(dropped) else "capability")
    if not chosen and not ejects_silent_nodes():
        return _Cause(f"{pylibmc_build()} does not eject a node that stops answering", "capability")
    return None


def unknown_option(
    backend: str, options: Mapping[str, Any], *, also: Sequence[str] = ()
) -> str | None:
    """Return a message naming the first option *backend* does not take, with a suggestion.

    The suggestion is the closest of the client's names and *also* (names the caller has
    already taken out of *options*, such as the refreshing backends' ``refresh``). Imports
    the client library (``ImportError`` when it is missing).
    """
    if not options:
        return None
    arguments, behaviors = _names(backend)
    for name in options:
        if name not in arguments:
            message = f"{brief(name)} is not a {backend} option"
            return _misspelt(message, name, (*arguments, *also))
    if backend == "pylibmc":
        for name in options.get("behaviors", {}):
            if name not in behaviors:
                return _misspelt(f"{brief(name)} is not a pylibmc behavior", name, behaviors)
    return None


# What the clients read as waits and counts (pymemcache 4.0 client/base.py and hash.py:
# seconds, None for "no timeout" only on the socket's two; libmemcached's behaviors are all
# unsigned 64-bit integers). A negative, NaN or infinite one is never what was meant, and it
# fails late or never: pymemcache hands a wait to socket.settimeout(), which raises on the
# first request instead of here, and libmemcached reads -5 ms as 2**64 - 5 ms.
_PYMEMCACHE_WAITS = {
    "connect_timeout": True, "timeout": True,  # name: None allowed
    "retry_timeout": False, "dead_timeout": False, "pool_idle_timeout": False,
}  # fmt: skip
_PYMEMCACHE_COUNTS = {"retry_attempts": 0, "max_pool_size": 1}  # name: least value
# Waits where 0 is no wait at all, so every request fails (measured against memcached 1.6):
# pymemcache's socket waits (settimeout(0) makes the socket non-blocking: BlockingIOError on
# connect or recv) and libmemcached's poll timeout ("A TIMEOUT OCCURRED" on every set).
_PYMEMCACHE_NOT_ZERO = frozenset({"connect_timeout", "timeout"})
_PYLIBMC_NOT_ZERO = frozenset({"_poll_timeout"})


def _bad_value(backend: str, options: Mapping[str, Any]) -> str | None:
    """Return a message naming the first wait or count *backend* would misread, or None."""
    if backend == "pylibmc":
        for name, value in (options.get("behaviors") or {}).items():
            if _is_number(value) and not 0 <= value < math.inf:
                return (
                    f"behavior {brief(name)}={brief(value)} must be 0 or more: libmemcached's "
                    "behaviors are unsigned"
                )
            if _is_number(value) and value == 0 and name in _PYLIBMC_NOT_ZERO:
                return (
                    f"behavior {brief(name)}=0 must be more than 0 (milliseconds): "
                    "libmemcached then times out every request"
                )
        return None
    for name, none_allowed in _PYMEMCACHE_WAITS.items():
        value = options.get(name)
        if name not in options or (value is None and none_allowed):
            continue
        if not (_is_number(value) and 0 <= value < math.inf):
            limit = " (or None for no limit)" if none_allowed else ""
            return f"options[{name!r}]={brief(value)} must be seconds, 0 or more{limit}"
        if value == 0 and name in _PYMEMCACHE_NOT_ZERO:
            return (
                f"options[{name!r}]=0 must be more than 0 seconds (or None for no limit): "
                "a socket with timeout 0 is non-blocking, and every request fails"
            )
    for name, least in _PYMEMCACHE_COUNTS.items():
        value = options.get(name)
        if value is not None and not (type(value) is int and value >= least):
            return f"options[{name!r}]={brief(value)} must be an integer, {least} or more"
    return None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _misspelt(message: str, name: object, known: Sequence[str]) -> str:
    close = close_matches(str(name), known, n=1)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message} (it takes {', '.join(sorted(known))})"


@lru_cache(maxsize=2)
def _names(backend: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return (constructor arguments, behavior names) of *backend*'s client."""
    if backend == "pylibmc":
        import pylibmc

        # Django's PyLibMCCache calls pylibmc.Client(servers, **OPTIONS); behaviors take
        # pylibmc's own list (its C module's table), its callbacks, and the alias
        # _retry_timeout that pylibmc/client.py still accepts.
        behaviors = (*pylibmc.all_behaviors, *pylibmc.all_callbacks, "_retry_timeout")
        return _arguments(pylibmc.Client.__init__), tuple(behaviors)
    from pymemcache.client.hash import HashClient

    # Django's PyMemcacheCache calls HashClient(servers, **OPTIONS).
    return _arguments(HashClient.__init__), ()


def _arguments(init: Any) -> tuple[str, ...]:
    parameters = inspect.signature(init).parameters
    return tuple(name for name in parameters if name not in ("self", "servers"))


# pylibmc sets auto_eject, then remove_failed, then failure_limit; remove_failed turns
# auto_eject on (and, in libmemcached 1.0, sets failure_limit), so our two would silently
# override a user who chose any of these three to control ejection.
_EJECTION_BEHAVIORS = {"remove_failed", "auto_eject", "failure_limit"}


def _merge_options(defaults: dict[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    merged = deepcopy(defaults)
    for key, value in options.items():
        if key == "behaviors" and isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            value = dict(value)
            if "_retry_timeout" in value:  # pylibmc's old name; ours must not shadow it
                value.setdefault("retry_timeout", value.pop("_retry_timeout"))
            if _EJECTION_BEHAVIORS & set(value):
                merged[key].pop("remove_failed", None)
                merged[key].pop("failure_limit", None)
            merged[key] = {**merged[key], **value}
            # pylibmc documents remove_failed=N as "eject after N failures", which only
            # libmemcached 1.0 implements by itself (see _PYLIBMC_BEHAVIORS).
            remove_failed = merged[key].get("remove_failed")
            if isinstance(remove_failed, int) and remove_failed > 0:
                merged[key].setdefault("failure_limit", int(remove_failed))
        else:
            merged[key] = value
    return merged
