"""The last-known-good snapshot: one JSON file holding the node lists of many sources.

DESIGN.md, "Resolution and snapshots": a successful resolution writes the snapshot, a failed
one reads it. One file may hold many sources, keyed by the redacted source URL::

    {"format": "cache_settings/1",
     "sources": {"consul:///memcached?tag=prod": {
         "nodes": [{"host": "10.0.0.1", "port": 11211}],
         "fetched_at": 1700000000.0, "fetched": "2023-11-14T22:13:20Z", "version": 12}}}

``fetched_at`` is Unix time in seconds (``fetched`` is the same instant in ISO 8601 UTC, for
humans; it is written but never read back). ``version`` is the source's config version or
Consul index, or null. The file is plain JSON: never pickle, never a token.

Where to put the file: in a directory owned by the site's user and not writable by others,
e.g. ``BASE_DIR / "var" / "cache-nodes.json"``; never ``/tmp``, never a URL (refused: its
query, which may hold a token, would become a file name). Whoever can write to the
directory can replace the snapshot, and so the node list the site falls back to. In a
shared or world-writable directory this module still never follows a symbolic link, never
opens anything but a regular file and never writes into an existing file (see
``_safefile.py``), so nothing outside the snapshot and its ``.lock``, ``.tmp`` and
``.corrupt`` siblings is created or changed, and no other file's content is copied. The
directories above the file, and their symbolic links, are trusted.

Decisions this module documents:

- Every failure to read the file is a :class:`SnapshotError` naming the file and the reason,
  whatever Python raised (``OverflowError``, ``RecursionError``, ``MemoryError``...); every
  field is checked at the boundary (``_snapshot_format.py``). Caps: :data:`MAX_SIZE` bytes,
  :data:`MAX_DEPTH` levels of JSON nesting. A write that would exceed the size cap, or hold
  an entry the reader would refuse, logs a warning and writes nothing.
- Only a regular file is read or written: a symbolic link, directory, FIFO, socket or
  device at the snapshot path (or at its ``.lock``) makes a read fail at once, without
  blocking, and a write log a warning; :func:`check_snapshot_path` refuses them at settings.
- ``fetched_at`` is always updated on write, even when nodes and version are unchanged: it
  records the last time a live source confirmed the list, which is what ``max_age`` measures.
- Writes are read-modify-write of the whole file under a POSIX record lock
  (``fcntl.lockf``) on a sibling ``<name>.lock`` (the data file itself is replaced, so it
  cannot carry the lock), through a temp file ``.<name>.<random>.tmp`` in the same directory,
  ``fsync``, ``os.replace`` and an ``fsync`` of the directory. Readers take no lock: they see
  the old file or the new one. The new file keeps the permission bits of the one it replaces.
- Why ``lockf`` and not ``flock``: a ``flock`` lock belongs to the open file description,
  which a forked child shares; a worker forked while the watcher thread held it kept the lock
  for its whole life and every other writer blocked forever. A record lock belongs to the
  process and is not inherited. Record locks do not exclude the threads of one process, and
  closing any descriptor of the file drops the process's lock, so one in-process
  ``threading.Lock`` also serialises all snapshot writes of the process; a forked child gets
  a fresh one (``os.register_at_fork``), never a copy held by a thread that is not there.
- Waiting for the lock is bounded by :data:`LOCK_TIMEOUT` seconds (polled, non-blocking):
  on timeout :func:`write_snapshot` logs a warning and returns False, it never hangs.
- A missing parent directory is created (``var/cache-nodes.json`` in a fresh checkout).
- An entry whose ``fetched_at`` is more than 300 seconds in the future (a hand edit, a
  skewed clock) is not trusted by :func:`read_snapshot`: its age would be negative and pass
  any ``max_age`` forever. :meth:`SnapshotEntry.age` is never negative.
- Temp files left behind by a killed writer are removed by the next writer (under the lock,
  nobody else can be writing one). They are never read as the snapshot.
- A malformed (or oversized) file does not block a write: it is renamed to ``<name>.corrupt``
  for forensics (one copy, replaced by the next corruption; renamed, not copied, so it keeps
  its owner and permission bits), a warning is logged, and a valid file holding only the new
  entry takes its place.
- A file that cannot be read or written (read-only file system, permissions, a parent that
  is not a directory, a symbolic link) makes :func:`write_snapshot` log a warning and return
  False: settings import must not crash because the snapshot cannot be saved.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import parse_qsl, urlsplit

from . import _safefile
from ._snapshot_format import (
    FORMAT,
    MAX_DEPTH,
    MAX_SIZE,
    SnapshotEntry,
    check_time,
    check_version,
    dump,
    parse,
)
from ._snapshot_path import DIRECTORY_NAMES as _DIRECTORY_NAMES
from ._snapshot_path import check_snapshot_path
from .exceptions import SnapshotError
from .nodes import Node, unique_sorted
from .redact import SECRET_KEYS, redact_url

__all__ = [
    "FORMAT",
    "LOCK_TIMEOUT",
    "MAX_DEPTH",
    "MAX_SIZE",
    "SnapshotEntry",
    "check_snapshot_path",
    "load_snapshot",
    "read_snapshot",
    "trusted_entry",
    "write_snapshot",
]

logger = logging.getLogger(__name__)

#: Seconds :func:`write_snapshot` waits for the lock before it gives up with a warning.
#: Read at each call, so tests may lower it.
LOCK_TIMEOUT = 10.0

# Seconds an entry's fetched_at may lie in the future (clock skew between the writer and the
# reader) before read_snapshot stops trusting it.
_FUTURE_TOLERANCE = 300.0


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, SnapshotEntry]:
    """Return every entry of the snapshot file at *path*, keyed by source URL.

    A missing file is an empty dict. Entries are returned whatever their age; compare
    :meth:`SnapshotEntry.age` with a maximum age in seconds, or use :func:`read_snapshot`,
    which does.

    Raises:
        SnapshotError: the file cannot be read (a symbolic link, not a regular file,
            permissions, ...) or is malformed; the message names the path and what was wrong.
            No other exception leaves this function for any content of the file.
    """
    filename = os.fspath(path)
    try:
        found = _safefile.read_regular(filename, limit=MAX_SIZE)
    except OSError as exc:
        raise SnapshotError(
            filename, f"cannot be read ({_safefile.reason(exc)})", readable=False
        ) from exc
    except Exception as exc:  # ValueError for a NUL in the name, MemoryError...
        raise SnapshotError(
            filename, f"cannot be read ({type(exc).__name__}: {exc})", readable=False
        ) from exc
    if found is None:
        return {}
    return parse(filename, found.content)


def read_snapshot(
    path: str | os.PathLike[str], source: str, *, max_age: float | None = None
) -> SnapshotEntry | None:
    """Return the entry of *source* in the snapshot at *path*, or None when there is none to trust.

    None when the file is missing, holds no entry for *source*, is unreadable or malformed
    (a warning is logged), when the entry is older than *max_age* seconds (a warning
    with its age is logged), or when its ``fetched_at`` is more than 300 seconds in the
    future (a warning is logged; whatever *max_age* is). This is the reader for settings
    import: it never raises :class:`SnapshotError`.
    """
    filename = os.fspath(path)
    try:
        entries = load_snapshot(filename)
    except SnapshotError as exc:
        logger.warning("%s: snapshot not used: %s", source, exc)
        return None
    return trusted_entry(entries, filename, source, max_age=max_age)


def trusted_entry(
    entries: Mapping[str, SnapshotEntry],
    path: str | os.PathLike[str],
    source: str,
    *,
    max_age: float | None = None,
) -> SnapshotEntry | None:
    """Return *source*'s entry of *entries* (loaded from *path*) when it may be trusted.

    As :func:`read_snapshot`, for a file already loaded with :func:`load_snapshot`: None
    (with the same warnings) when there is no entry, or it is too old or in the future.
    """
    filename = os.fspath(path)
    entry = entries.get(source)
    if entry is None:
        logger.debug("%s: no entry in snapshot %s", source, filename)
        return None
    now = time.time()
    ahead = entry.fetched_at - now
    if ahead > _FUTURE_TOLERANCE:
        # Its age would be negative and pass any max_age forever; a hand edit or a clock
        # far off is not a live confirmation.
        logger.warning(
            "%s: snapshot %s has fetched_at %.0f seconds in the future; not trusted",
            source,
            filename,
            ahead,
        )
        return None
    age = entry.age(now)
    if max_age is not None and age > max_age:
        logger.warning(
            "%s: snapshot %s is %.0f seconds old, more than max_age=%s; not trusted",
            source,
            filename,
            age,
            max_age,
        )
        return None
    return entry


def write_snapshot(
    path: str | os.PathLike[str],
    source: str,
    nodes: Iterable[Node],
    *,
    version: int | None = None,
    fetched_at: float | None = None,
    lock_timeout: float | None = None,
) -> bool:
    """Store *nodes* as the entry of *source* in the snapshot at *path*; return True when written.

    Entries of other sources in the file are kept. *fetched_at* (Unix time in seconds)
    defaults to now and is always updated, even when nodes and version are unchanged.
    A missing parent directory is created. When the file cannot be written, or the lock is
    not free within *lock_timeout* seconds (default :data:`LOCK_TIMEOUT`), log a warning
    and return False; never raise for I/O, never hang.

    Raises:
        ValueError: programming errors: *source* carries user info or a secret query
            option (pass the source's redacted ``url``), *nodes* is empty, or *version* or
            *fetched_at* has the wrong type.
    """
    filename = os.fspath(path)
    _check_source(source)
    entry = SnapshotEntry(
        source=source,
        nodes=unique_sorted(nodes),
        fetched_at=time.time() if fetched_at is None else check_time(fetched_at),
        version=check_version(version),
    )
    if not entry.nodes:
        # DESIGN.md: an empty answer is a failure, never stored as a node list.
        raise ValueError(f"{source}: refusing to store an empty node list")
    try:
        # Checked again under the lock; this keeps a directory or FIFO in the way from
        # getting a stray .lock beside it.
        _safefile.require_regular(filename)
        if os.path.basename(filename) in _DIRECTORY_NAMES:
            raise IsADirectoryError(errno.EISDIR, "names a directory, not a file")
        _make_parent(filename)
        with _locked(filename, LOCK_TIMEOUT if lock_timeout is None else lock_timeout) as dir_fd:
            name = os.path.basename(os.path.abspath(filename))  # as _locked() splits it
            _safefile.remove_stale(f".{name}.", dir_fd=dir_fd)
            entries, like = _load_for_update(filename, name, source, dir_fd=dir_fd)
            entries[source] = entry
            content = dump(entries)
            _check_readable(filename, content)
            _safefile.replace(name, content, dir_fd=dir_fd, temp_prefix=f".{name}.", like=like)
    except SnapshotError as exc:
        logger.warning("%s: cannot write snapshot %s (%s)", source, filename, exc.detail)
        return False
    except _safefile.LockTimeout as exc:
        logger.warning("%s: cannot write snapshot %s (%s)", source, filename, exc)
        return False
    except OSError as exc:
        logger.warning("%s: cannot write snapshot %s (%s)", source, filename, _safefile.reason(exc))
        return False
    return True


def _check_source(source: str) -> None:
    # The caller passes source.url, already redacted; a key with secrets is a programming
    # error, and the message shows only the redacted form.
    if not isinstance(source, str) or not source:
        raise ValueError(f"snapshot key must be a non-empty string, not {source!r}")
    parts = urlsplit(source)
    keys = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if "@" in parts.netloc or keys & SECRET_KEYS:
        raise ValueError(
            f"snapshot key {redact_url(parts)!r} carries credentials; "
            "pass the source's redacted url"
        )


def _check_readable(filename: str, content: bytes) -> None:
    # Never write what load_snapshot() would refuse: one bad node from a source (a host
    # with a space) would cost every other source in the file its fallback.
    if len(content) > MAX_SIZE:
        raise SnapshotError(filename, f"it would hold {len(content)} bytes, more than {MAX_SIZE}")
    try:
        parse(filename, content)
    except SnapshotError as exc:
        raise SnapshotError(filename, f"the file would not read back: {exc.detail}") from None


def _load_for_update(
    filename: str, name: str, source: str, *, dir_fd: int
) -> tuple[dict[str, SnapshotEntry], os.stat_result | None]:
    """Return the entries to keep, and the ``fstat`` of the file they replace (None if none).

    A file that is not a regular file, or cannot be read, fails the write (OSError): it is
    not ours to replace. Only malformed content is moved aside and replaced.
    """
    found = _safefile.read_regular(name, limit=MAX_SIZE, dir_fd=dir_fd)
    if found is None:
        return {}, None
    try:
        return parse(filename, found.content), found.status
    except SnapshotError as exc:
        corrupt = filename + ".corrupt"
        try:
            _safefile.move_aside(name, name + ".corrupt", dir_fd=dir_fd)
        except OSError as move_exc:
            corrupt = f"nowhere ({_safefile.reason(move_exc)})"
        logger.warning(
            "%s: replacing malformed snapshot, old file moved to %s: %s",
            source,
            corrupt,
            exc.detail,
        )
        return {}, found.status


def _make_parent(filename: str) -> None:
    directory = os.path.dirname(os.path.abspath(filename))
    # A regular file in the way is left to fail on open with the clearer ENOTDIR.
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, exist_ok=True)


@contextlib.contextmanager
def _locked(filename: str, timeout: float) -> Iterator[int]:
    """Hold every lock on the snapshot *filename*; yield a descriptor of its directory.

    Raises _safefile.LockTimeout when the locks are not held within *timeout* seconds.
    """
    directory, name = os.path.split(os.path.abspath(filename))
    with (
        _safefile.directory(directory) as dir_fd,
        _safefile.locked(f"{name}.lock", dir_fd=dir_fd, timeout=timeout, shown=f"{filename}.lock"),
    ):
        yield dir_fd
