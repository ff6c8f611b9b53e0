"""Django system checks for cache_settings (``"cache_settings"`` in ``INSTALLED_APPS``).

``cache_settings.W001``  the snapshot is missing, unreadable or unwritable, or lacks the source
``cache_settings.W002``  the snapshot entry is older than the entry's ``max_age``
``cache_settings.W003``  the source failed at settings import; the nodes came from the snapshot
``cache_settings.W004``  retired: now ``E005``
``cache_settings.W005``  the source failed; the entry fell back to a local cache (``on_failure``)
``cache_settings.W006``  a pylibmc entry asks for node ejection from a pylibmc that cannot do it
``cache_settings.W007``  a refreshing pylibmc entry hashes keys with ``modula``
``cache_settings.E001``  a memcached ``LOCATION`` is a URL of an unknown scheme
``cache_settings.E002``  a source URL as ``LOCATION`` of Django's own memcached ``BACKEND``
``cache_settings.E003``  a ``memcached()`` call failed (``manage.py check``; elsewhere it raises)
``cache_settings.E004``  the entry of a refreshing or ``compat`` ``BACKEND`` cannot work
``cache_settings.E005``  policy keys (``refresh``, …) in ``OPTIONS`` of Django's own ``BACKEND``

W001-W003, W005 and E003 look at the ``memcached()`` calls made when the settings were
imported; E001, E002, E004 and E005 at ``settings.CACHES``. Each cause is said by one
check: an entry that failed (E003, W005) gets no snapshot warning, and an unknown scheme
(E001) no E004.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from ._snapshot_path import snapshot_unwritable
from .capabilities import check_pylibmc_clients, entry_behaviors
from .chain import may_change, members
from .entries import Entry, entries, reported
from .exceptions import ResolutionError, SnapshotError, SourceError
from .policy import OPTION_KEYS, seconds_text
from .settings import BACKENDS
from .snapshot import load_snapshot
from .sources import SCHEMES

__all__ = [
    "check_backends",
    "check_errors",
    "check_fallbacks",
    "check_hashing",
    "check_locations",
    "check_pylibmc_clients",
    "check_refresh_backends",
    "check_snapshots",
]

logger = logging.getLogger(__name__)

register(Tags.caches)(check_pylibmc_clients)  # W006, in capabilities.py beside the facts


def _resolve_command() -> str:
    """The command that writes the snapshots, naming the settings module the checks run on."""
    module = getattr(settings, "SETTINGS_MODULE", None) or "<your settings>"
    return f"cache-settings resolve --settings {module}"


def _resolve_hint() -> str:
    return (
        f"Run `{_resolve_command()}` (or `manage.py cache_nodes resolve`) in the release "
        "pipeline and ship the snapshot with the release."
    )


# Backends that read source URLs and policy keys, not Django's memcached backends.
_REFRESHING_PREFIXES = ("cache_settings.backends.", "cache_settings.compat.")


def _recorded() -> Iterator[Entry]:
    # The settings may be imported more than once in a process (the CLI does); one
    # message per source and snapshot file is enough.
    seen: set[tuple[str, str | None]] = set()
    for entry in entries():
        key = (entry.source.url, entry.policy.snapshot)
        if key not in seen:
            seen.add(key)
            yield entry


@register(Tags.caches)
def check_snapshots(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W001: a snapshot missing or without this source; W002: older than ``max_age``."""
    messages: list[CheckMessage] = []
    for entry in _recorded():
        # A static list is read from the settings; it never needs its snapshot. A failed
        # entry's own message (E003, W005) says why its snapshot did not stand in.
        snapshot, max_age = entry.policy.snapshot, entry.policy.max_age
        if snapshot is None or not entry.source.traits.needs_network or entry.error:
            continue
        try:
            held = load_snapshot(snapshot)
            # A chain: its first member with an entry (each member keeps its own).
            stored = next((held[m.url] for m in members(entry.source) if m.url in held), None)
        except SnapshotError as exc:
            messages.append(
                Warning(
                    f"The snapshot cannot be used: {exc}",
                    hint=_resolve_hint(),
                    obj=entry.source.url,
                    id="cache_settings.W001",
                )
            )
            continue
        unwritable = snapshot_unwritable(snapshot) if stored is None else None
        if unwritable is not None:
            # The settings import asked the source and could not save its answer.
            messages.append(
                Warning(
                    f"The snapshot {snapshot} cannot be written ({unwritable}): if the "
                    "source is down when a process starts, there is no list to fall back on.",
                    hint="Give snapshot= a path in a directory the site's user can write, "
                    f"then run `{_resolve_command()}`.",
                    obj=entry.source.url,
                    id="cache_settings.W001",
                )
            )
        elif stored is None:
            messages.append(
                Warning(
                    f"The snapshot {snapshot} holds no node list for this source: "
                    "if the source is down when a process starts, settings import fails.",
                    hint=_resolve_hint(),
                    obj=entry.source.url,
                    id="cache_settings.W001",
                )
            )
        elif max_age is not None and stored.age() > max_age:
            # The same words as the error of resolve() when this entry is refused.
            messages.append(
                Warning(
                    f"The snapshot {snapshot} is {stored.age():.0f} s old, older than "
                    f"max_age={seconds_text(max_age)} s: it will not stand in for the source.",
                    hint=_resolve_hint() + " Resolve more often than max_age, or raise it.",
                    obj=entry.source.url,
                    id="cache_settings.W002",
                )
            )
    return messages


@register(Tags.caches)
def check_fallbacks(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W003: nodes served from the snapshot; W005: a local cache instead of memcached."""
    messages: list[CheckMessage] = []
    raised = {id(error) for error in reported()}
    for entry in _recorded():
        resolution = entry.resolution
        if resolution is None:
            # Not asked (the command line's import), or failed with on_failure="raise":
            # memcached() raised, or E003 says it.
            if entry.error is None or id(entry.error) in raised:
                continue
            messages.append(
                Warning(
                    f"{_without_source(entry.error)}. This cache is a local fallback "
                    "(on_failure), not memcached.",
                    hint="Once the source answers, restart the processes.",
                    obj=entry.source.url,
                    id="cache_settings.W005",
                )
            )
        elif resolution.origin == "snapshot" and resolution.errors:
            # Without errors the snapshot was asked for (CACHE_SETTINGS_OFFLINE=1): no warning.
            last = resolution.errors[-1]
            reason = last.reason if isinstance(last, SourceError) else last
            messages.append(
                Warning(
                    f"The source failed at settings import ({reason}); "
                    f"the nodes come from the snapshot {entry.policy.snapshot}.",
                    hint="Check the source; `cache-settings check` compares it with the snapshot.",
                    obj=entry.source.url,
                    id="cache_settings.W003",
                )
            )
    return messages


@register(Tags.caches)
def check_errors(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E003: a ``memcached()`` call failed; under ``manage.py check`` it is reported, not raised."""
    messages: list[CheckMessage] = []
    # The settings may be imported more than once in a process: one message per error.
    for error in {str(error): error for error in reported()}.values():
        source = error.source if isinstance(error, ResolutionError) else None
        messages.append(
            Error(
                _without_source(error),
                hint="Outside `manage.py check` the settings import raises this error, "
                "and the site does not start.",
                obj=source or f"memcached() in {settings.SETTINGS_MODULE}",
                id="cache_settings.E003",
            )
        )
    return messages


def _without_source(error: Exception) -> str:
    # The check framework prints the source as the message's object already.
    text = str(error)
    source = error.source if isinstance(error, ResolutionError) else ""
    return text.removeprefix(f"{source}: ") if source else text


@register(Tags.caches)
def check_refresh_backends(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E005: policy keys such as ``refresh`` in the OPTIONS of a backend that does not refresh.

    Formerly the warning W004; Django's backend passes every OPTIONS key to the client,
    which refuses these with a TypeError at the first cache operation, so it is an error.
    """
    messages: list[CheckMessage] = []
    for alias, config in _caches():
        backend = str(config.get("BACKEND", ""))
        options = config.get("OPTIONS")
        ours = sorted(set(OPTION_KEYS) & set(options)) if isinstance(options, dict) else []
        if not ours or backend not in BACKENDS.values():
            continue
        messages.append(
            Error(
                f"CACHES[{alias!r}] OPTIONS hold {', '.join(ours)}, but its BACKEND "
                f"{backend!r} does not refresh: it passes them to the memcached client, "
                "which fails with a TypeError at the first cache operation.",
                hint="Keep the BACKEND that memcached(..., refresh=SECONDS) chose "
                "(cache_settings.backends.PyLibMCCache or PyMemcacheCache), or remove them.",
                obj=alias,
                id="cache_settings.E005",
            )
        )
    return messages


@register(Tags.caches)
def check_backends(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E004: the entry of a refreshing or compat backend cannot work.

    Such a backend does not raise when Django builds it (Django's own checks build every
    cache first); it keeps the :class:`~cache_settings.ConfigurationError`, raised at its
    first cache operation, and this check says it. An unknown scheme is E001's.
    """
    from django.core.cache import caches

    from .backends import _RefreshingCache

    messages: list[CheckMessage] = []
    for alias, config in _caches():
        if not str(config.get("BACKEND", "")).startswith(_REFRESHING_PREFIXES):
            continue
        if _unknown_schemes(config):
            continue
        cache = caches[alias]
        error = cache.cache_settings_error if isinstance(cache, _RefreshingCache) else None
        if error is None:
            continue
        messages.append(
            Error(
                f"CACHES[{alias!r}]: {error}",
                hint="Every operation on this cache raises this error until the entry is fixed.",
                obj=alias,
                id="cache_settings.E004",
            )
        )
    return messages


@register(Tags.caches)
def check_hashing(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W007: a refreshing pylibmc entry of a source that can change, hashing with ``modula``.

    ``modula`` sends a key to node ``hash % len(nodes)``: a node joining or leaving moves
    nearly every key (a measured 0 of 3,000 keys were found after one of three nodes was
    replaced), which is what a refreshing entry meets. ``memcached()`` turns ``ketama`` on;
    an entry written as data passes its ``OPTIONS`` as written.
    """
    messages: list[CheckMessage] = []
    for alias, config in _caches():
        behaviors = entry_behaviors(config)
        changing = any(may_change(item) for item in _locations(config))  # not a fixed list
        if config.get("BACKEND") != _REFRESHING_PYLIBMC or behaviors is None or not changing:
            continue
        distribution = str(behaviors.get("distribution", "modula"))
        if behaviors.get("ketama") or behaviors.get("ketama_weighted"):
            continue
        if distribution.startswith("consistent"):
            continue
        messages.append(
            Warning(
                f"CACHES[{alias!r}] follows node changes but hashes keys with "
                f"{distribution!r}: a node joining or leaving moves nearly every key.",
                hint="Add OPTIONS={'behaviors': {'ketama': True}} (what memcached() entries "
                "have), or build the entry with cache_settings.memcached(URL, refresh=N).",
                obj=alias,
                id="cache_settings.W007",
            )
        )
    return messages


_REFRESHING_PYLIBMC = "cache_settings.backends.PyLibMCCache"


@register(Tags.caches)
def check_locations(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E001: a memcached LOCATION with an unknown URL scheme; E002: an unresolved source URL."""
    messages: list[CheckMessage] = []
    for alias, config in _caches():
        backend = str(config.get("BACKEND", ""))
        # Other backends (redis://, file paths) have URLs of their own.
        if backend not in BACKENDS.values() and not backend.startswith(_REFRESHING_PREFIXES):
            continue
        for scheme in _unknown_schemes(config):
            close = difflib.get_close_matches(scheme.lower(), SCHEMES, n=1)
            guess = f" Did you mean '{close[0]}://'?" if close else ""
            messages.append(
                Error(
                    f"CACHES[{alias!r}] LOCATION uses the unknown scheme '{scheme}://'.{guess}",
                    hint=f"Known schemes: {', '.join(sorted(SCHEMES))}; memcached LOCATIONs "
                    "are host:port.",
                    obj=alias,
                    id="cache_settings.E001",
                )
            )
        for item in _locations(config):
            scheme, sep, _ = item.partition("://")
            if sep and scheme.lower() in SCHEMES and backend in BACKENDS.values():
                messages.append(
                    Error(
                        f"CACHES[{alias!r}] LOCATION is the source URL '{scheme}://…', which "
                        f"{backend} would take for a host name.",
                        hint="Build the entry with cache_settings.memcached(URL), which "
                        "resolves the URL into nodes, or use the BACKEND "
                        "cache_settings.backends.PyLibMCCache or PyMemcacheCache, which "
                        "read a source URL.",
                        obj=alias,
                        id="cache_settings.E002",
                    )
                )
    return messages


def _locations(config: dict[str, Any]) -> list[str]:
    location = config.get("LOCATION", [])
    # Only text and lists are LOCATIONs Django reads; anything else is the backend's to refuse.
    items = [location] if isinstance(location, str) else location
    if not isinstance(items, list | tuple):
        return []
    return [str(item) for item in items]


def _unknown_schemes(config: dict[str, Any]) -> list[str]:
    """Return the URL schemes of *config*'s LOCATION that no source has."""
    found = [item.partition("://") for item in _locations(config)]
    return [scheme for scheme, sep, _ in found if sep and scheme.lower() not in SCHEMES]


def _caches() -> Iterator[tuple[str, dict[str, Any]]]:
    caches = getattr(settings, "CACHES", None) or {}
    for alias, config in caches.items():
        if isinstance(config, dict):
            yield str(alias), config
