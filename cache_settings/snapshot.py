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

Decisions this module documents:

- ``fetched_at`` is always updated on write, even when nodes and version are unchanged: it
  records the last time a live source confirmed the list, which is what ``max_age`` measures.
- Writes are read-modify-write of the whole file under a POSIX record lock
  (``fcntl.lockf``) on a sibling ``<name>.lock`` (the data file itself is replaced, so it
  cannot carry the lock), through a temp file ``.<name>.<random>.tmp`` in the same directory,
  ``fsync``, ``os.replace`` and an ``fsync`` of the directory. Readers take no lock: they see
  the old file or the new one.
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
- A malformed file does not block a write: it is copied to ``<name>.corrupt`` for forensics
  (one copy, overwritten by the next corruption), a warning is logged, and it is replaced by
  a valid file holding only the new entry.
- A file that cannot be read or written (read-only file system, permissions, a parent that
  is not a directory) makes :func:`write_snapshot` log a warning and return False: settings
  import must not crash because the snapshot cannot be saved.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from .exceptions import SnapshotError
from .nodes import Node, unique_sorted
from .sources._url import redact

__all__ = [
    "FORMAT",
    "LOCK_TIMEOUT",
    "SnapshotEntry",
    "load_snapshot",
    "read_snapshot",
    "write_snapshot",
]

logger = logging.getLogger(__name__)

FORMAT = "cache_settings/1"

#: Seconds :func:`write_snapshot` waits for the lock before it gives up with a warning.
#: Read at each call, so tests may lower it.
LOCK_TIMEOUT = 10.0

# Seconds an entry's fetched_at may lie in the future (clock skew between the writer and the
# reader) before read_snapshot stops trusting it.
_FUTURE_TOLERANCE = 300.0

# Poll interval bounds while another process holds the lock: short, so a write waits about as
# long as the one before it takes, and capped, so many waiters do not spin.
_POLL_FIRST, _POLL_MAX = 0.001, 0.02

# Query keys that carry secrets; the same set redact() strips.
_SECRET_KEYS = frozenset({"token", "password", "secret"})

# Serialises snapshot writes between the threads of this process (lockf does not), and
# guards _lock_fd. Replaced in a forked child by _after_fork_in_child().
_write_lock = threading.Lock()
# The descriptor of the lock file while this process holds the lock, else None.
_lock_fd: int | None = None


def _after_fork_in_child() -> None:
    # The child has only the forking thread. A lock held by another thread at the fork would
    # stay held forever in the child, so it gets a fresh one. It holds no record lock (those
    # are not inherited); its copy of the parent's lock descriptor is closed, which touches
    # only the child's own (absent) locks.
    global _write_lock, _lock_fd
    _write_lock = threading.Lock()
    if _lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_lock_fd)
        _lock_fd = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class _LockTimeout(Exception):
    """The snapshot lock was not free within LOCK_TIMEOUT seconds."""


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """The node list of one source as a live answer last confirmed it."""

    source: str
    nodes: tuple[Node, ...]
    fetched_at: float
    version: int | None = None

    def age(self, now: float | None = None) -> float:
        """Return the seconds since ``fetched_at``; 0 if it lies in the future (clock skew)."""
        return max(0.0, (time.time() if now is None else now) - self.fetched_at)


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, SnapshotEntry]:
    """Return every entry of the snapshot file at *path*, keyed by source URL.

    A missing file is an empty dict. A file that cannot be read or is malformed raises
    :class:`SnapshotError` naming the path and what was wrong. Entries are returned whatever
    their age; compare :meth:`SnapshotEntry.age` with a maximum age in seconds, or use
    :func:`read_snapshot`, which does.
    """
    filename = os.fspath(path)
    try:
        text = _read_bytes(filename)
    except OSError as exc:
        raise SnapshotError(f"{filename}: cannot read snapshot ({_reason(exc)})") from exc
    if text is None:
        return {}
    return _parse(filename, text)


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
        fetched_at=time.time() if fetched_at is None else _check_time(fetched_at),
        version=_check_version(version),
    )
    if not entry.nodes:
        # DESIGN.md: an empty answer is a failure, never stored as a node list.
        raise ValueError(f"{source}: refusing to store an empty node list")
    try:
        _make_parent(filename)
        with _locked(filename, LOCK_TIMEOUT if lock_timeout is None else lock_timeout):
            _remove_stale_temp_files(filename)
            entries = _load_for_update(filename, source)
            entries[source] = entry
            _replace(filename, _dump(entries))
    except _LockTimeout as exc:
        logger.warning("%s: cannot write snapshot %s (%s)", source, filename, exc)
        return False
    except OSError as exc:
        logger.warning("%s: cannot write snapshot %s (%s)", source, filename, _reason(exc))
        return False
    return True


def _read_bytes(filename: str) -> bytes | None:
    try:
        with open(filename, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def _parse(filename: str, text: bytes) -> dict[str, SnapshotEntry]:
    try:
        data = json.loads(text)
    except ValueError as exc:  # also UnicodeDecodeError
        raise SnapshotError(f"{filename}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SnapshotError(f"{filename}: expected a JSON object, not {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise SnapshotError(f"{filename}: format is {data.get('format')!r}, expected {FORMAT!r}")
    sources = data.get("sources")
    if not isinstance(sources, dict):
        raise SnapshotError(f"{filename}: 'sources' must be an object, not {sources!r}")
    entries = {}
    for source, raw in sources.items():
        try:
            entries[source] = _entry_from_dict(source, raw)
        except ValueError as exc:
            raise SnapshotError(f"{filename}: entry {source!r}: {exc}") from None
    return entries


def _entry_from_dict(source: str, raw: object) -> SnapshotEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"must be an object, not {type(raw).__name__}")
    for key in ("nodes", "fetched_at"):
        if key not in raw:
            raise ValueError(f"missing {key!r}")
    nodes = raw["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise ValueError(f"'nodes' must be a non-empty list, not {nodes!r}")
    # 'version' may be absent (null); 'fetched' is for humans and never read.
    return SnapshotEntry(
        source=source,
        nodes=unique_sorted(Node.from_dict(node) for node in nodes),
        fetched_at=_check_time(raw["fetched_at"]),
        version=_check_version(raw.get("version")),
    )


def _check_time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"'fetched_at' must be Unix time in seconds, not {value!r}")
    return float(value)


def _check_version(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"'version' must be an integer or null, not {value!r}")
    return value


def _check_source(source: str) -> None:
    # The caller passes source.url, already redacted; a key with secrets is a programming
    # error, and the message shows only the redacted form.
    if not isinstance(source, str) or not source:
        raise ValueError(f"snapshot key must be a non-empty string, not {source!r}")
    parts = urlsplit(source)
    keys = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if "@" in parts.netloc or keys & _SECRET_KEYS:
        raise ValueError(
            f"snapshot key {redact(parts)!r} carries credentials; pass the source's redacted url"
        )


def _load_for_update(filename: str, source: str) -> dict[str, SnapshotEntry]:
    # Read errors (permissions, a directory in the way) propagate as OSError: the write
    # fails with a warning. Only malformed content is replaced.
    text = _read_bytes(filename)
    if text is None:
        return {}
    try:
        return _parse(filename, text)
    except SnapshotError as exc:
        corrupt = filename + ".corrupt"
        try:
            with open(corrupt, "wb") as file:
                file.write(text)
        except OSError as copy_exc:
            corrupt = f"nowhere ({_reason(copy_exc)})"
        logger.warning(
            "%s: replacing malformed snapshot, old file copied to %s: %s", source, corrupt, exc
        )
        return {}


def _dump(entries: dict[str, SnapshotEntry]) -> bytes:
    sources = {
        source: {
            "nodes": [node.as_dict() for node in entry.nodes],
            "fetched_at": entry.fetched_at,
            "fetched": _iso(entry.fetched_at),
            "version": entry.version,
        }
        for source, entry in entries.items()
    }
    data = {"format": FORMAT, "sources": sources}
    # Indented and sorted: snapshot files ship with releases and are read in diffs.
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _make_parent(filename: str) -> None:
    directory = os.path.dirname(os.path.abspath(filename))
    # A regular file in the way is left to fail on open with the clearer ENOTDIR.
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, exist_ok=True)


@contextlib.contextmanager
def _locked(filename: str, timeout: float) -> Iterator[None]:
    """Hold this process's write lock and the record lock on ``<filename>.lock``.

    Raises _LockTimeout when both are not held within *timeout* seconds.
    """
    global _lock_fd
    deadline = time.monotonic() + timeout
    lockname = filename + ".lock"
    # Keep the object acquired: a fork in between replaces the module global in the child only.
    lock = _write_lock
    if not lock.acquire(timeout=max(0.0, timeout)):
        raise _LockTimeout(f"another thread held the lock for {timeout:g} seconds")
    try:
        # Opened and closed only under the in-process lock: closing any descriptor of the
        # file would drop this process's record lock.
        fd = os.open(lockname, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        _lock_fd = fd
        try:
            _lock_record(fd, lockname, deadline, timeout)
            # The kernel releases a record lock when its holder dies, so a killed writer
            # never leaves the file locked. The lock file is kept: unlinking it would race.
            yield
        finally:
            _lock_fd = None
            os.close(fd)  # also releases the record lock
    finally:
        lock.release()


def _lock_record(fd: int, lockname: str, deadline: float, timeout: float) -> None:
    # Non-blocking attempts with short sleeps: a blocking lockf cannot be given a timeout.
    pause = _POLL_FIRST
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _LockTimeout(f"{lockname} held by another process for {timeout:g} seconds")
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _POLL_MAX)


def _temp_prefix(filename: str) -> tuple[str, str]:
    directory, name = os.path.split(os.path.abspath(filename))
    return directory, f".{name}."


def _remove_stale_temp_files(filename: str) -> None:
    directory, prefix = _temp_prefix(filename)
    with os.scandir(directory) as it:
        stale = [e.path for e in it if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    for temp in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _replace(filename: str, content: bytes) -> None:
    directory, prefix = _temp_prefix(filename)
    temp = os.path.join(directory, f"{prefix}{os.urandom(8).hex()}.tmp")
    # 0o666 less the umask, like any new file: the snapshot is read by the app's user.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, filename)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    # Make the rename itself durable; some file systems refuse fsync on a directory.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
