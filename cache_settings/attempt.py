"""One bounded attempt: the time and reply budget of one question to a source.

Client libraries bound each socket read, not a whole request: an agent or an API endpoint
that trickles its reply one byte at a time, or a credential lookup that stalls, would keep
an attempt alive long past its deadline. So :func:`run` asks the source in a worker thread
with an :class:`Attempt` made current there; the source's transports register every socket
they open with :meth:`Attempt.track`, shrink their timeouts to :meth:`Attempt.left`, and cap
what they read at :attr:`Attempt.max_reply_size`. When time is up, :meth:`Attempt.cancel`
shuts those sockets down, which ends any read or write blocked on them, so the worker
thread returns and nothing of the attempt outlives it by more than :data:`GRACE` seconds.

A :class:`Scope` cancels attempts before their deadline: a watcher's attempts run in its
scope, which :meth:`cache_settings.watch.Watcher.stop` cancels, so that a blocking query
in flight (up to ``blocking_timeout``, 30 s) does not keep the watcher's thread alive.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from .exceptions import SourceError

__all__ = [
    "DEFAULT_MAX_REPLY_SIZE", "GRACE", "Attempt", "Scope", "current", "in_scope", "run",
    "scoped", "wait_time",
]  # fmt: skip

T = TypeVar("T")

#: Bytes one reply may hold before the attempt fails: 32 MiB holds about 100,000 Consul
#: instances (about 300 bytes each without checks), far past any memcached fleet.
DEFAULT_MAX_REPLY_SIZE = 32 * 1024 * 1024
#: Seconds an attempt may run past its deadline before it is cancelled, and that a
#: cancelled worker thread is then given to return.
GRACE = 0.05

_current: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "cache_settings_attempt", default=None
)
_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "cache_settings_scope", default=None
)


class Attempt:
    """The budget of one attempt: a deadline (monotonic seconds) and a reply size cap (bytes)."""

    def __init__(
        self, source: str, timeout: float, *, max_reply_size: int = DEFAULT_MAX_REPLY_SIZE
    ) -> None:
        self.source = source
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.max_reply_size = max_reply_size
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closers: list[Callable[[], object]] = []
        self.cancelled = False
        # What the attempt is waiting on now, set by the source as it goes (one assignment,
        # read by the thread that gives up): a timeout then says what ran out of time.
        self.waiting_on: str | None = None

    def left(self) -> float:
        """Return the seconds left before the deadline, never below zero."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> float:
        """Return the seconds left; raise :class:`SourceError` when none are, or if cancelled."""
        left = self.left()
        if left <= 0 or self.cancelled:
            raise self.timed_out()
        return left

    def timed_out(self) -> SourceError:
        """Return the error for an attempt out of time, naming what it waited on (if set)."""
        waiting = f" (waiting on {self.waiting_on})" if self.waiting_on else ""
        return SourceError(self.source, f"no complete answer within {self.timeout:.2f} s{waiting}")

    def check_size(self, size: int) -> None:
        """Raise :class:`SourceError` when a reply of *size* bytes is over the cap."""
        if size > self.max_reply_size:
            raise SourceError(
                self.source,
                f"reply larger than {self.max_reply_size} bytes (max_reply_size); "
                "raise it if the source really lists that many nodes",
            )

    def track(self, sock: socket.socket) -> None:
        """Shut *sock* down when the attempt is cancelled (at once if it already is)."""
        with self._lock:
            if not self.cancelled:
                self._sockets.add(sock)
                return
        _shutdown(sock)

    def untrack(self, sock: socket.socket) -> None:
        """Forget *sock* (closed by its owner)."""
        with self._lock:
            self._sockets.discard(sock)

    def on_cancel(self, closer: Callable[[], object]) -> None:
        """Call *closer* when the attempt is cancelled (at once if it already is)."""
        with self._lock:
            if not self.cancelled:
                self._closers.append(closer)
                return
        closer()

    def release_inherited(self) -> None:
        """In a forked child: close the descriptors of the sockets this attempt tracks.

        Closed, never shut down: the connections are the parent's, whose attempt goes on.
        No lock is taken (a thread of the parent may have held it at the fork).
        """
        for sock in list(self._sockets):
            # detach(), not close(): a reader's file object (http.client's) keeps close()
            # from closing the descriptor, and the socket must never close it again.
            with contextlib.suppress(OSError):
                os.close(sock.detach())
        self._sockets = set()

    def cancel(self) -> None:
        """End the attempt's I/O: shut down every tracked socket, call every closer."""
        with self._lock:
            self.cancelled = True
            sockets, self._sockets = self._sockets, set()
            closers, self._closers = self._closers, []
        for sock in sockets:
            _shutdown(sock)
        for closer in closers:
            # A closer of an abandoned attempt must not hide its timeout.
            with contextlib.suppress(Exception):
                closer()


class Scope:
    """Attempts cancelled together, before their deadlines: a watcher's, when it stops.

    :func:`run` adds every attempt it runs under :func:`scoped` to that scope. :meth:`cancel`
    cancels those in flight (their sockets are shut down, so a blocked read returns at
    once) and every later one as it starts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: set[Attempt] = set()
        self.cancelled = False

    def add(self, attempt: Attempt) -> None:
        """Cancel *attempt* with this scope (at once if the scope is cancelled already)."""
        with self._lock:
            if not self.cancelled:
                self._attempts.add(attempt)
                return
        attempt.cancel()

    def discard(self, attempt: Attempt) -> None:
        """Forget *attempt*, which has ended."""
        with self._lock:
            self._attempts.discard(attempt)

    def release_inherited(self) -> None:
        """In a forked child: let go of the sockets of the attempts in flight at the fork."""
        for attempt in list(self._attempts):
            attempt.release_inherited()

    def cancel(self) -> None:
        """Cancel every attempt of this scope, now and from now on."""
        with self._lock:
            self.cancelled = True
            attempts, self._attempts = list(self._attempts), set()
        for attempt in attempts:
            attempt.cancel()


@contextlib.contextmanager
def scoped(scope: Scope) -> Iterator[None]:
    """Run the attempts made in this context (thread) in *scope*."""
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)


@contextlib.contextmanager
def in_scope(attempt: Attempt) -> Iterator[None]:
    """Within this block, cancel *attempt* with the current :class:`Scope`, if any."""
    scope = _scope.get()
    if scope is not None:
        scope.add(attempt)
    try:
        yield
    finally:
        if scope is not None:
            scope.discard(attempt)


def wait_time(seconds: float) -> float:
    """Return *seconds* as a timeout every wait of :mod:`threading` takes.

    Between 0 and ``threading.TIMEOUT_MAX`` (about 9.2e9 s on Linux, 49 days on Windows);
    a longer wait raises ``OverflowError`` there, and a NaN would raise ``ValueError``.
    """
    if not seconds > 0:  # also NaN
        return 0.0
    return min(seconds, threading.TIMEOUT_MAX)


def current() -> Attempt | None:
    """Return the attempt running in this thread, or None outside :func:`run`."""
    return _current.get()


def run(attempt: Attempt, call: Callable[[], T]) -> T:
    """Return ``call()``, run in a worker thread with *attempt* current there.

    At the attempt's deadline (plus :data:`GRACE`) the attempt is cancelled, the worker
    is given :data:`GRACE` more seconds to return, and :class:`SourceError` is raised.
    Exceptions raised by *call* are re-raised here.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        _current.set(attempt)
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(
        target=work, name=f"cache_settings attempt {attempt.source}", daemon=True
    )
    with in_scope(attempt):
        worker.start()
        worker.join(wait_time(attempt.left() + GRACE))
    if worker.is_alive():
        attempt.cancel()
        worker.join(GRACE)
        raise attempt.timed_out()
    scope = _scope.get()
    if scope is not None and scope.cancelled:
        raise SourceError(attempt.source, "stopped")  # whatever the cut-off reply gave
    if failure:
        raise failure[0]
    return outcome[0]


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter drops the SSL object that
    # the worker thread may be reading with; shutting the descriptor down wakes that read.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
