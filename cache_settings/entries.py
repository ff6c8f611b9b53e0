"""The record of every ``memcached()`` call in this process.

The command line re-resolves these entries (``cache-settings resolve --settings …``), the
system checks look at their snapshots and fallbacks, and a refreshing backend whose
``LOCATION`` is a recorded source URL finds the Source object (with its token) and the
settings-time answer here, so that its first cache use asks nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .policy import Policy
from .resolve import Resolution
from .sources import Source

__all__ = ["Entry", "collecting", "entries", "is_collecting", "latest", "record"]


@dataclass(frozen=True, slots=True)
class Entry:
    """What one ``memcached()`` call asked for and got.

    ``resolution`` is None when the source failed and no snapshot stood in; ``secrets``
    are the values in the URL it was given that no output may show.
    """

    source: Source
    policy: Policy
    backend: str
    resolution: Resolution | None
    secrets: tuple[str, ...] = field(default=(), repr=False)


_entries: list[Entry] = []
_latest: dict[str, Entry] = {}
_lock = threading.Lock()
_collecting = False


def record(entry: Entry) -> None:
    """Add *entry* to the record (``memcached()`` calls this)."""
    with _lock:
        _entries.append(entry)
        _latest[entry.source.url] = entry


def entries() -> list[Entry]:
    """Return every entry made by ``memcached()`` in this process, oldest first."""
    with _lock:
        return list(_entries)


def latest(url: str) -> Entry | None:
    """Return the newest entry whose source's redacted URL is *url*, or None."""
    with _lock:
        return _latest.get(url)


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


def is_collecting() -> bool:
    """Return True inside :func:`collecting`."""
    return _collecting
