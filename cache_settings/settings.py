"""memcached(): one Django ``CACHES`` entry for the nodes of a source."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, TypedDict, cast

from .clients import BACKENDS, _choose_backend, _merge_options, client_defaults
from .exceptions import ConfigurationError, ResolutionError
from .forking import install as _install_fork_guard
from .resolve import Resolution, resolve
from .sources import Source, parse_source
from .tls import TLSConfig

__all__ = ["BACKENDS", "CacheConfig", "Entry", "client_defaults", "entries", "memcached"]

logger = logging.getLogger(__name__)

Backend = Literal["pylibmc", "pymemcache"]
OnFailure = Literal["raise", "locmem", "dummy"]


class CacheConfig(TypedDict, total=False):
    """One entry of Django's ``CACHES`` setting, as :func:`memcached` returns it."""

    BACKEND: str
    LOCATION: list[str] | str
    OPTIONS: dict[str, Any]
    TIMEOUT: float | None
    KEY_PREFIX: str
    VERSION: int
    KEY_FUNCTION: str | Callable[..., str]


# refresh=N: the subclasses that follow the source's changes at run time.
# The OPTIONS key under which a refreshing entry carries its source to the backend.
CONFIG_KEY = "cache_settings"
REFRESHING_BACKENDS: dict[str, str] = {
    "pylibmc": "cache_settings.backends.PyLibMCCache",
    "pymemcache": "cache_settings.backends.PyMemcacheCache",
}
_FALLBACKS: dict[str, str] = {
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
    "dummy": "django.core.cache.backends.dummy.DummyCache",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """What one ``memcached()`` call asked for and got; the CLI re-resolves these."""

    source: Source
    snapshot: str | None
    attempts: int
    deadline: float
    max_age: float | None
    min_nodes: int
    backend: str
    resolution: Resolution | None


_entries: list[Entry] = []


_collecting = False


@contextmanager
def collecting() -> Iterator[None]:
    """Within this block, ``memcached()`` records every entry and never raises for a source.

    The command line imports the settings module inside it, so that one source without a
    snapshot does not hide the entries after it.
    """
    global _collecting
    previous, _collecting = _collecting, True
    try:
        yield
    finally:
        _collecting = previous


def entries() -> list[Entry]:
    """Return every entry made by :func:`memcached` in this process, oldest first."""
    return list(_entries)


def memcached(
    source: str | Source,
    *,
    backend: Backend | None = None,
    snapshot: str | os.PathLike[str] | None = None,
    attempts: int = 3,
    deadline: float = 5.0,
    max_age: float | None = None,
    min_nodes: int = 1,
    on_failure: OnFailure = "raise",
    refresh: float | None = None,
    options: Mapping[str, Any] | None = None,
    **django_keys: Any,
) -> CacheConfig:
    """Return one CACHES entry for the memcached nodes of *source*.

    *source* is a URL (``consul:///memcached?tag=prod``, ``elasticache://…``,
    ``elasticache-api://…``, ``memcached://h1,h2``) or a Source object. The nodes
    are resolved now, as :func:`cache_settings.resolve` does, with *attempts*,
    *deadline* (seconds), *snapshot*, *max_age* (seconds) and *min_nodes*.

    Args:
        backend: ``"pylibmc"`` (the default) or ``"pymemcache"`` (the default,
            and the only choice, when the nodes speak TLS).
        on_failure: ``"raise"`` raises :class:`ResolutionError`; ``"locmem"`` and
            ``"dummy"`` log the error and return a working local cache instead.
        refresh: seconds; selects a refreshing backend
            (:mod:`cache_settings.backends`) that follows the source's changes at run
            time: Consul by blocking queries, other sources polled every *refresh*
            seconds ± 10 %.
        options: the entry's ``OPTIONS``; each key overrides our defaults, and a
            ``behaviors`` dict is merged key by key.
        django_keys: ``timeout``, ``key_prefix``, ``version``, ``key_function``.
    """
    src = parse_source(source)
    if refresh is not None and (
        isinstance(refresh, bool) or not isinstance(refresh, int | float) or not refresh > 0
    ):
        raise ConfigurationError(
            f"refresh must be a positive number of seconds or None, not {refresh!r}"
        )
    django = _django_keys(django_keys)
    if on_failure not in ("raise", "locmem", "dummy"):
        raise ConfigurationError(
            f"on_failure must be 'raise', 'locmem' or 'dummy', not {on_failure!r}"
        )
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError(f"options must be a dict, not {type(options).__name__}")
    tls = src.traits.node_tls
    chosen = _choose_backend(src, backend, tls)
    record = Entry(
        src,
        os.fspath(snapshot) if snapshot is not None else None,
        attempts,
        deadline,
        max_age,
        min_nodes,
        chosen,
        None,
    )
    try:
        resolution = resolve(
            src,
            attempts=attempts,
            deadline=deadline,
            snapshot=snapshot,
            max_age=max_age,
            min_nodes=min_nodes,
        )
    except ResolutionError as exc:
        _entries.append(record)
        if _collecting:
            # The CLI only learns the entries here; it resolves and reports each one itself.
            on_failure = "dummy"
        elif on_failure == "raise":
            raise
        else:
            logger.error("%s: using a %s cache instead of memcached: %s", src.url, on_failure, exc)
        fallback: CacheConfig = {
            "BACKEND": _FALLBACKS[on_failure],
            "LOCATION": f"cache_settings:{src.url}",
        }
        fallback.update(django)
        return fallback

    if tls is None and any(node.tls for node in resolution.nodes):
        # A serverless cache: the source learnt only now that its endpoint speaks TLS.
        tls = src.traits.node_tls_if_needed or TLSConfig()
        chosen = _choose_backend(src, backend, tls)
    _entries.append(replace(record, resolution=resolution, backend=chosen))
    entry_options = _merge_options(client_defaults(chosen), options or {})
    if tls is not None:
        entry_options.setdefault("tls_context", tls.context())
    entry: CacheConfig = {
        "BACKEND": BACKENDS[chosen],
        "LOCATION": resolution.locations,
        "OPTIONS": entry_options,
    }
    if refresh is not None:
        # Read by cache_settings.backends, which removes it before Django's backend sees
        # OPTIONS; the watcher starts from this settings-time answer.
        entry["BACKEND"] = REFRESHING_BACKENDS[chosen]
        entry_options[CONFIG_KEY] = {
            "source": src,
            "refresh": float(refresh),
            "min_nodes": min_nodes,
            "snapshot": record.snapshot,
            "deadline": deadline,
            "attempts": attempts,
            "nodes": resolution.nodes,
            "version": resolution.version,
        }
    entry.update(django)
    # A forked child must not use or free the clients built from this entry before the
    # fork: cache_settings/forking.py detaches them in the child.
    _install_fork_guard()
    return entry


_DJANGO_KEYS = {
    "timeout": "TIMEOUT",
    "key_prefix": "KEY_PREFIX",
    "version": "VERSION",
    "key_function": "KEY_FUNCTION",
}


def _django_keys(given: Mapping[str, Any]) -> CacheConfig:
    unknown = sorted(set(given) - set(_DJANGO_KEYS))
    if unknown:
        raise ConfigurationError(
            f"memcached() got unknown argument(s) {', '.join(unknown)}; "
            f"Django keys are written in lower case: {', '.join(_DJANGO_KEYS)}"
        )
    return cast(CacheConfig, {_DJANGO_KEYS[key]: value for key, value in given.items()})
