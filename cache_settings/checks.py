"""Django system checks for cache_settings (``"cache_settings"`` in ``INSTALLED_APPS``).

``cache_settings.W001``  the snapshot file is missing, unreadable, or lacks the source
``cache_settings.W002``  the snapshot entry is older than the entry's ``max_age``
``cache_settings.W003``  the source failed at settings import; the nodes came from the snapshot
``cache_settings.W004``  ``refresh`` asked of a ``BACKEND`` that cannot refresh
``cache_settings.W005``  the source failed; the entry fell back to a local cache (``on_failure``)
``cache_settings.W006``  a pylibmc entry asks for node ejection from a pylibmc that cannot do it
``cache_settings.E001``  a memcached ``LOCATION`` is a URL of an unknown scheme
``cache_settings.E002``  a source URL as ``LOCATION`` of Django's own memcached ``BACKEND``
``cache_settings.E003``  a ``memcached()`` call failed (``manage.py check``; elsewhere it raises)

W001-W003, W005 and E003 look at the ``memcached()`` calls made when the settings were
imported; W004, E001 and E002 at ``settings.CACHES``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .capabilities import check_pylibmc_clients
from .chain import members
from .entries import Entry, entries, reported
from .exceptions import ResolutionError, SnapshotError, SourceError
from .policy import OPTION_KEYS
from .settings import BACKENDS
from .snapshot import load_snapshot
from .sources import SCHEMES

__all__ = [
    "check_errors",
    "check_fallbacks",
    "check_locations",
    "check_pylibmc_clients",
    "check_refresh_backends",
    "check_snapshots",
]

logger = logging.getLogger(__name__)

register(Tags.caches)(check_pylibmc_clients)  # W006, in capabilities.py beside the facts

_RESOLVE_HINT = (
    "Run `cache-settings resolve --settings <your settings>` (or `manage.py cache_nodes "
    "resolve`) in the release pipeline and ship the snapshot with the release."
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
                    hint=_RESOLVE_HINT,
                    obj=entry.source.url,
                    id="cache_settings.W001",
                )
            )
            continue
        if stored is None:
            messages.append(
                Warning(
                    f"The snapshot {snapshot} holds no node list for this source: "
                    "if the source is down when a process starts, settings import fails.",
                    hint=_RESOLVE_HINT,
                    obj=entry.source.url,
                    id="cache_settings.W001",
                )
            )
        elif max_age is not None and stored.age() > max_age:
            messages.append(
                Warning(
                    f"The snapshot {snapshot} is {stored.age():.0f} seconds old, older "
                    f"than max_age={max_age:g}: it will not stand in for the source.",
                    hint=_RESOLVE_HINT + " Resolve more often than max_age, or raise it.",
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
    """W004: policy keys such as ``refresh`` in the OPTIONS of a backend that does not refresh."""
    messages: list[CheckMessage] = []
    for alias, config in _caches():
        backend = str(config.get("BACKEND", ""))
        options = config.get("OPTIONS")
        ours = sorted(set(OPTION_KEYS) & set(options)) if isinstance(options, dict) else []
        if not ours or backend not in BACKENDS.values():
            continue
        messages.append(
            Warning(
                f"CACHES[{alias!r}] OPTIONS hold {', '.join(ours)}, but its BACKEND "
                f"{backend!r} does not refresh; it would pass them to the client.",
                hint="Keep the BACKEND that memcached(..., refresh=SECONDS) chose "
                "(cache_settings.backends.PyLibMCCache or PyMemcacheCache).",
                obj=alias,
                id="cache_settings.W004",
            )
        )
    return messages


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
        location = config.get("LOCATION", [])
        locations = [location] if isinstance(location, str) else list(location or [])
        for item in locations:
            scheme, sep, _ = str(item).partition("://")
            if not sep:
                continue
            known = ", ".join(sorted(SCHEMES))
            if scheme.lower() not in SCHEMES:
                messages.append(
                    Error(
                        f"CACHES[{alias!r}] LOCATION uses the unknown scheme '{scheme}://'.",
                        hint=f"Known schemes: {known}; memcached LOCATIONs are host:port.",
                        obj=alias,
                        id="cache_settings.E001",
                    )
                )
            elif backend in BACKENDS.values():
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


def _caches() -> Iterator[tuple[str, dict[str, Any]]]:
    caches = getattr(settings, "CACHES", None) or {}
    for alias, config in caches.items():
        if isinstance(config, dict):
            yield str(alias), config
