"""memcached(): one Django ``CACHES`` entry for the nodes of a source."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict, cast

from .clients import BACKENDS, choose_client, client_defaults
from .entries import Entry, is_collecting, record
from .exceptions import ConfigurationError, ResolutionError
from .forking import install as _install_fork_guard
from .policy import Policy, as_path
from .redact import url_secrets
from .resolve import resolve_with
from .sources import Source, parse_source
from .tls import TLSConfig

__all__ = ["BACKENDS", "REFRESHING_BACKENDS", "CacheConfig", "client_defaults", "memcached"]

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
REFRESHING_BACKENDS: dict[str, str] = {
    "pylibmc": "cache_settings.backends.PyLibMCCache",
    "pymemcache": "cache_settings.backends.PyMemcacheCache",
}
_FALLBACKS: dict[str, str] = {
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
    "dummy": "django.core.cache.backends.dummy.DummyCache",
}


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
            seconds ± 10 %. The entry is then plain data: ``LOCATION`` is the source's
            redacted URL and the policy sits in ``OPTIONS`` (see
            :mod:`cache_settings.policy`).
        options: the entry's ``OPTIONS``; each key overrides our defaults, and a
            ``behaviors`` dict is merged key by key.
        django_keys: ``timeout``, ``key_prefix``, ``version``, ``key_function``.

    Raises:
        ResolutionError: with ``on_failure="raise"``, when neither the source nor the
            snapshot gave a node list.
        ConfigurationError: an invalid URL or argument.
    """
    src = parse_source(source)
    policy = Policy(attempts, deadline, min_nodes, max_age, as_path(snapshot), refresh)
    django = _django_keys(django_keys)
    if on_failure not in ("raise", "locmem", "dummy"):
        raise ConfigurationError(
            f"on_failure must be 'raise', 'locmem' or 'dummy', not {on_failure!r}"
        )
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError(f"options must be a dict, not {type(options).__name__}")
    tls = src.traits.node_tls
    chosen, _ = choose_client(src, backend, tls, (), options or {})
    secrets = tuple(url_secrets(source)) if isinstance(source, str) else ()
    try:
        resolution = resolve_with(src, policy)
    except ResolutionError as exc:
        record(Entry(src, policy, chosen, None, secrets))
        if is_collecting():
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
    # The nodes are known now: a client that cannot reach one of them is not chosen.
    chosen, entry_options = choose_client(src, backend, tls, resolution.nodes, options or {})
    record(Entry(src, policy, chosen, resolution, secrets))
    if tls is not None:
        entry_options.setdefault("tls_context", tls.context())
    entry: CacheConfig = {
        "BACKEND": BACKENDS[chosen],
        "LOCATION": resolution.locations,
        "OPTIONS": entry_options,
    }
    if refresh is not None:
        # Plain data that cache_settings.backends reads and removes before Django's client
        # sees OPTIONS. The backend finds the Source object (and its token) and this
        # settings-time answer again through cache_settings.entries, by the URL.
        entry["BACKEND"] = REFRESHING_BACKENDS[chosen]
        entry["LOCATION"] = src.url
        entry_options.update(policy.as_options())
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
