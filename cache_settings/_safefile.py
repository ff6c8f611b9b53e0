"""File operations that stay safe in a directory other users can write to.

The snapshot module keeps its files here; nothing in this module knows their format.

- Every file is opened with ``O_NOFOLLOW`` (a symbolic link as the last component of a name is
  refused, never followed) and ``O_CLOEXEC``; opens that a FIFO could block also get
  ``O_NONBLOCK``, and ``O_NOCTTY`` keeps a terminal from becoming the controlling one.
- A name is checked with ``lstat`` before it is opened and the descriptor with ``fstat`` after:
  anything but a regular file (symbolic link, directory, FIFO, socket, device) is refused with
  :class:`NotRegularFile` before a byte is read, so nothing blocks and no device is read.
- Existing files are never written: new content goes into a fresh file (``O_CREAT | O_EXCL``,
  a random name) that ``os.replace`` renames over the old name. A planted symbolic link or
  hard link at that name loses its directory entry; its target is not touched.
- The replacement keeps the permission bits of the file it replaces, so a private file never
  becomes readable by others. (Not its owner: whoever owned a planted file would then own the
  new content.)
- Names are resolved relative to one open directory descriptor (:func:`directory`), so every
  step of one write works in the same directory.

The symbolic links and ownership of the *directories* above a file are trusted: a directory
that other users can write to and that lacks the sticky bit lets them rename files under the
writer's feet, whatever the writer opens with.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Found",
    "LockTimeout",
    "NotRegularFile",
    "directory",
    "locked",
    "move_aside",
    "read_regular",
    "reason",
    "remove_stale",
    "replace",
    "require_regular",
]

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_LOCK = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = (
    (stat.S_ISLNK, errno.ELOOP, "is a symbolic link, which is never followed"),
    (stat.S_ISDIR, errno.EISDIR, "is a directory, not a regular file"),
    (stat.S_ISFIFO, errno.EINVAL, "is a FIFO, not a regular file"),
    (stat.S_ISSOCK, errno.EINVAL, "is a socket, not a regular file"),
    (stat.S_ISCHR, errno.EINVAL, "is a character device, not a regular file"),
    (stat.S_ISBLK, errno.EINVAL, "is a block device, not a regular file"),
)

# A temporary file's name is the caller's prefix, this many random bytes in hex, and ".tmp".
# remove_stale() removes only names of exactly that shape: another file that shares the
# prefix (the temp file of a snapshot named "<name>.d", a user's ".<name>.bak.tmp") is not
# one of ours, and its writer may still be using it.
_TEMP_RANDOM_BYTES = 8

# Poll interval bounds while another process holds a lock: short, so a write waits about as
# long as the one before it takes, and capped, so many waiters do not spin.
_POLL_FIRST, _POLL_MAX = 0.001, 0.02

# Serialises locked sections between the threads of this process (lockf does not), and
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


class NotRegularFile(OSError):
    """Raised when a name exists but is a symbolic link, directory, FIFO, socket or device."""


class LockTimeout(Exception):
    """Raised when a lock was not free within the time allowed."""


@dataclass(frozen=True, slots=True)
class Found:
    """What :func:`read_regular` read: the first bytes of a file and its ``fstat``."""

    content: bytes
    status: os.stat_result


def reason(exc: OSError) -> str:
    """Return the operating system's words for *exc* ("Not a directory")."""
    return exc.strerror or str(exc)


def _require_regular(mode: int) -> None:
    for is_kind, code, words in _KINDS:
        if is_kind(mode):
            raise NotRegularFile(code, words)
    if not stat.S_ISREG(mode):
        raise NotRegularFile(errno.EINVAL, "is not a regular file")


def require_regular(name: str, *, dir_fd: int | None = None) -> None:
    """Raise NotRegularFile unless *name* is a regular file or missing; never open it.

    Raises:
        NotRegularFile: *name* is a symbolic link, directory, FIFO, socket or device.
        OSError: *name* cannot be looked up (a parent that is not a directory, ...).
    """
    with contextlib.suppress(FileNotFoundError):
        _require_regular(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)


def read_regular(name: str, *, limit: int, dir_fd: int | None = None) -> Found | None:
    """Return at most ``limit + 1`` bytes of the regular file *name*, or None if it is missing.

    One byte more than *limit* tells the caller the file is too large without reading it all.

    Raises:
        NotRegularFile: *name* is a symbolic link, directory, FIFO, socket or device.
        OSError: any other reason the file cannot be read.
    """
    # lstat first: a device or FIFO is refused without being opened at all.
    require_regular(name, dir_fd=dir_fd)
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        # fstat again: the name may have been swapped between lstat and open.
        status = os.fstat(fd)
        _require_regular(status.st_mode)
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return Found(b"".join(chunks), status)
    finally:
        os.close(fd)


@contextlib.contextmanager
def directory(path: str) -> Iterator[int]:
    """Yield a descriptor of the directory *path* for the ``dir_fd`` of the other functions."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(name: str, *, dir_fd: int, timeout: float, shown: str) -> Iterator[None]:
    """Hold this process's write lock and a POSIX record lock on the file *name*.

    The lock file is created when missing (``0o666`` less the umask) and never written.
    *shown* names it in messages.

    Raises:
        LockTimeout: both locks were not held within *timeout* seconds.
        NotRegularFile: *name* is not a regular file.
        OSError: the lock file cannot be opened or locked.
    """
    global _lock_fd
    deadline = time.monotonic() + timeout
    # Keep the object acquired: a fork in between replaces the module global in the child only.
    lock = _write_lock
    if not lock.acquire(timeout=max(0.0, timeout)):
        raise LockTimeout(f"another thread held the lock for {timeout:g} seconds")
    try:
        # Opened and closed only under the in-process lock: closing any descriptor of the
        # file would drop this process's record lock.
        require_regular(name, dir_fd=dir_fd)
        fd = os.open(name, _LOCK, 0o666, dir_fd=dir_fd)
        _lock_fd = fd
        try:
            _require_regular(os.fstat(fd).st_mode)
            _lock_record(fd, shown, deadline, timeout)
            # The kernel releases a record lock when its holder dies, so a killed writer
            # never leaves the file locked. The lock file is kept: unlinking it would race.
            yield
        finally:
            _lock_fd = None
            os.close(fd)  # also releases the record lock
    finally:
        lock.release()


def _lock_record(fd: int, shown: str, deadline: float, timeout: float) -> None:
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
            raise LockTimeout(f"{shown} held by another process for {timeout:g} seconds")
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _POLL_MAX)


def remove_stale(temp_prefix: str, *, dir_fd: int) -> None:
    """Remove the temporary files of :func:`replace` with *temp_prefix* a killed writer left.

    Only names :func:`replace` makes with *temp_prefix* go (the prefix, 16 hex digits,
    ``.tmp``): a file that merely starts with the prefix is another's. Only directory
    entries go: a symbolic link is removed, never its target. An entry that cannot be
    removed (another user's, in a sticky directory) is left alone.
    """
    ours = re.compile(re.escape(temp_prefix) + rf"[0-9a-f]{{{2 * _TEMP_RANDOM_BYTES}}}\.tmp")
    with os.scandir(dir_fd) as it:
        stale = [e.name for e in it if ours.fullmatch(e.name)]
    for name in stale:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)


def replace(
    name: str, content: bytes, *, dir_fd: int, temp_prefix: str, like: os.stat_result | None
) -> None:
    """Make *name* a new regular file holding *content*, atomically.

    A fresh temporary file ``<temp_prefix><16 hex digits>.tmp`` is written, ``fsync``-ed and renamed
    over *name*; then the directory is ``fsync``-ed. With *like* (the ``fstat`` of the file
    being replaced), the new file gets its permission bits; without, ``0o666`` less the
    umask, like any new file.

    Raises:
        OSError: the temporary file cannot be written or renamed; it is removed.
    """
    temp = f"{temp_prefix}{os.urandom(_TEMP_RANDOM_BYTES).hex()}.tmp"
    fd = os.open(temp, _NEW, 0o666, dir_fd=dir_fd)
    try:
        try:
            if like is not None:
                # Exactly the old bits, whatever the umask; set-id and sticky bits are dropped.
                os.fchmod(fd, stat.S_IMODE(like.st_mode) & 0o777)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    # Make the rename itself durable; some file systems refuse fsync on a directory.
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def move_aside(name: str, new_name: str, *, dir_fd: int) -> None:
    """Rename *name* to *new_name* in the same directory, replacing what is there.

    The file keeps its inode, content, owner and permission bits: nothing is copied. Whatever
    *new_name* was (a planted symbolic or hard link included) loses its directory entry only.
    """
    os.replace(name, new_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
