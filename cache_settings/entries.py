"""The record of every ``memcached()`` call in this process.

The command line re-resolves these entries (``cache-settings resolve --settings …``), the
system checks look at their snapshots and fallbacks, and a refreshing backend whose
``LOCATION`` is a recorded source URL finds the Source object (with its token) and the
settings-time answer here, so that its first cache use asks nothing.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .exceptions import CacheSettingsError
from .policy import Policy
from .resolve import Resolution
from .sources import Source

__all__ = [
    "Entry",
    "collecting",
    "entries",
    "is_collecting",
    "latest",
    "management_command",
    "record",
    "recorded",
    "report",
    "reported",
]


@dataclass(frozen=True, slots=True)
class Entry:
    """What one ``memcached()`` call asked for and got.

    ``resolution`` is None when the source was not asked (:func:`is_collecting`) or
    failed with no snapshot to stand in; then ``error`` says why. ``secrets`` are the
    values in the URL it was given that no output may show.
    """

    source: Source
    policy: Policy
    backend: str
    resolution: Resolution | None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    error: CacheSettingsError | None = field(default=None, compare=False)


# Each entry with the number of the record() call that made it, oldest first; an entry made
# again with the same source, policy and client replaces the older one (see record()).
_entries: dict[tuple[str, Policy, str], tuple[int, Entry]] = {}
_calls = 0  # record() calls so far
_latest: dict[str, Entry] = {}
_reported: list[CacheSettingsError] = []
_lock = threading.Lock()
# Set by collecting(), for the thread (or async context) that imports the settings only.
_collecting: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cache_settings_collecting", default=False
)

# manage.py commands under which memcached() does not raise: `check` exists to list what is
# wrong (as system check E003), and `cache_nodes` asks every source itself, as the
# cache-settings command does.
_REPORTING_COMMANDS = ("check", "cache_nodes")


def _after_fork_in_child() -> None:
    # A thread that held the lock at the fork does not exist in the child: a fresh lock.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def record(entry: Entry) -> None:
    """Add *entry* to the record (``memcached()`` calls this).

    An entry made again with the same source, policy and client (settings imported once
    more, as test runs and reloading servers do) replaces the older one, so the record
    grows with the entries the settings have, not with the number of imports.
    """
    global _calls
    key = (entry.source.url, entry.policy, entry.backend)
    with _lock:
        _calls += 1
        _entries.pop(key, None)  # re-inserted last: the order stays oldest first
        _entries[key] = (_calls, entry)
        _latest[entry.source.url] = entry


def recorded() -> int:
    """Return how many entries ``memcached()`` has recorded so far (for ``entries(since=)``)."""
    with _lock:
        return _calls


def entries(since: int = 0) -> list[Entry]:
    """Return the entries made by ``memcached()`` in this process, oldest first.

    With *since* (a :func:`recorded` count), only those recorded after it.
    """
    with _lock:
        return [entry for number, entry in _entries.values() if number > since]


def latest(url: str) -> Entry | None:
    """Return the newest entry whose source's redacted URL is *url*, or None."""
    with _lock:
        return _latest.get(url)


def report(error: CacheSettingsError) -> None:
    """Keep *error*, which ``memcached()`` did not raise under ``manage.py check``."""
    with _lock:
        _reported.append(error)


def reported() -> list[CacheSettingsError]:
    """Return the errors :func:`report` kept, oldest first (system check E003 lists them)."""
    with _lock:
        return list(_reported)


def management_command() -> str | None:
    """Return ``"check"`` or ``"cache_nodes"`` when this process runs that manage.py command.

    Also for ``django-admin`` and ``python -m django``. Read as Django's ManagementUtility
    reads it: the first argument names the command. Anything else returns None.
    """
    if len(sys.argv) < 2 or "django.core.management" not in sys.modules:
        return None
    return sys.argv[1] if sys.argv[1] in _REPORTING_COMMANDS else None


@contextmanager
def collecting() -> Iterator[None]:
    """Within this block, ``memcached()`` records every entry and asks no source.

    The command line imports the settings module inside it, so that one source without a
    snapshot does not hide the entries after it; its verbs then ask each source. Only the
    calling thread is affected: other threads of the process resolve as usual.
    """
    token = _collecting.set(True)
    try:
        yield
    finally:
        _collecting.reset(token)


def is_collecting() -> bool:
    """Return True inside :func:`collecting`, and under ``manage.py cache_nodes``."""
    return _collecting.get() or management_command() == "cache_nodes"
