"""Per-process watchers: one daemon thread per source keeps its node list fresh.

docs/architecture.md, "One path to a source": one watcher per source and policy per
process (:mod:`cache_settings.watchers` keeps them), started lazily on first cache use,
restarted after ``fork``, stopped at exit. A watcher publishes an
immutable :class:`State` ``(generation, nodes)`` in one attribute; readers (the backends,
one per thread) take no lock: under the GIL, reading an attribute is atomic, and the
tuple it holds never changes.

Every question to the source is one :func:`cache_settings.ask.ask`, the attempt
``resolve()`` retries, under the watcher's :class:`~cache_settings.policy.Policy`:

- Sources with ``blocking = True`` (Consul) are asked with blocking queries in a loop, so
  a change reaches the site within milliseconds whatever ``refresh`` is (median 5-6 ms,
  bench/README.md, "Propagation"; queries start at least MIN_QUERY_INTERVAL apart). A blocking
  query is an attempt bounded by ``blocking_timeout``: the bound the source declares
  (``Traits.blocking_timeout``: Consul's ``wait=`` plus its jitter and a margin), else 30 s
  (a 27 s wait). An agent that never finishes its reply is cut off there, and the next
  query answers at once, so a change is followed within that bound and a few seconds even
  then. After a failure the watcher waits as ``resolve()`` does between retries
  (:func:`cache_settings.ask.backoff`, capped by ``refresh`` and 30 s) and asks again.
- Other sources are polled every ``refresh`` seconds ± 10 % jitter, so that processes
  started together do not ask in step; a static list is never polled.
- Guards: an empty, below-``min_nodes`` or failing answer keeps the last good list (one
  WARNING per outage, one INFO on recovery); a configuration endpoint's answer with a
  lower config version than the one in use is ignored until ``OLDER_LIMIT`` answers in a
  row give one (a recreated cluster), and a snapshot's version orders no live answer; an
  identical list is no change.
- A node that returns to the list after leaving it is flushed before the list that holds
  it is published, or left out while that fails (``Policy.rejoin``,
  :class:`cache_settings.rejoin.Rejoins`).
- Each change bumps ``generation``, is logged at INFO with the added and removed nodes,
  written to the snapshot and sent as :data:`cache_settings.signals.nodes_changed`.
- A chain (:mod:`cache_settings.chain`) is polled every ``refresh`` seconds, never with
  blocking queries: each poll asks its members in order within the deadline and takes the
  first answer. ``answered_by`` names the member in use; when another member answers (a
  later one while the first is down: WARNING; an earlier one once it recovers: INFO) the
  move is logged and sent as ``nodes_changed`` with that ``answered_by``, even when the
  nodes are the same (no new generation then). Config versions are compared only within
  one member, and each member's answers are saved under its own snapshot entry.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import ClassVar

from ._publish import Publishing, State
from .ask import Answer, TooFewNodes, ask, backoff, sleep_for
from .attempt import Scope, scoped, wait_time
from .chain import ask_in_order, members, versions_grow
from .exceptions import CacheSettingsError, ResolutionError
from .nodes import Node, unique_sorted
from .policy import DEFAULT_REFRESH, Policy, check_seconds
from .rejoin import Rejoins
from .resolve import resolve_with
from .sources import Source, WatchableSource

__all__ = ["BLOCKING_TIMEOUT", "State", "Watcher"]

logger = logging.getLogger(__name__)

JITTER = 0.1  # ± 10 % on every poll interval
#: Seconds one Consul blocking query (one attempt) may take unless the source declares
#: its own bound (``wait=``); Consul.watch() fits its ``wait`` in this, and the attempt is
#: cut off here if the reply never completes.
BLOCKING_TIMEOUT = 30.0
# Consul docs, "Blocking queries": rate-limit the loop, since an agent may answer at once.
MIN_QUERY_INTERVAL = 0.2


class Watcher(Publishing):
    """Keep the node list of one source fresh from a daemon thread.

    Args:
        policy: how the source is asked; ``refresh`` (default 60) is the seconds between
            polls of a non-blocking source and caps the back-off of a blocking one.
        nodes, version: the settings-time answer to start from; with no *nodes*, the
            first :meth:`start` resolves once under *policy* (bounded by its deadline,
            falling back to its snapshot).
        answered_by: the URL of the source that gave *nodes* (a chain's member).
        written_at: when (``time.time()``, seconds) a live answer of *nodes* was written
            to the snapshot; None (a snapshot fallback's nodes) has the first unchanged
            live answer write them again.
        blocking_timeout: seconds one blocking query may take before it is cut off;
            None: what the source declares (``Traits.blocking_timeout``), else
            :data:`BLOCKING_TIMEOUT`.
    """

    #: Set at interpreter exit (cache_settings.watchers): no watcher starts any more.
    exiting: ClassVar[bool] = False

    def __init__(
        self,
        source: Source,
        policy: Policy,
        *,
        nodes: Iterable[Node] = (),
        version: int | None = None,
        answered_by: str | None = None,
        written_at: float | None = None,
        blocking_timeout: float | None = None,
    ) -> None:
        self.source = source
        self.url = source.url
        if policy.refresh is None:
            policy = replace(policy, refresh=DEFAULT_REFRESH)
        self.policy = policy
        if blocking_timeout is None:
            blocking_timeout = source.traits.blocking_timeout or BLOCKING_TIMEOUT
        self.blocking_timeout = check_seconds(blocking_timeout, "blocking_timeout")
        self.version = version
        #: The URL of the source whose answer is in use: a chain's member, else the source.
        self.answered_by = answered_by
        first = unique_sorted(nodes)
        self.state = State(0, first)
        # Written after ``state``: whoever sees a new generation finds its nodes in state.
        self.generation = 0
        self._primed = bool(first)
        # Why the first resolution failed, while the watcher has no node list yet.
        self.error: ResolutionError | None = None
        self._failing = False
        self._stale_logged: int | None = None
        self._older_answers = 0  # answers in a row with a lower config version (_publish)
        # When the snapshot's entry was last written by a live answer (_publish): seeded
        # nodes from a snapshot fallback wrote nothing, so the first unchanged live answer
        # stamps the entry; _prime() records its own live answer's write.
        self._confirmed_at = -math.inf
        if written_at is not None and first:
            self._confirmed_at = time.monotonic() - max(0.0, time.time() - written_at)
        self._rejoins = Rejoins(self.url, source.traits)
        self._init_process()

    @property
    def refresh(self) -> float:
        """Seconds between polls (and the cap of the back-off), from the policy."""
        return self.policy.refresh or DEFAULT_REFRESH

    def _init_process(self) -> None:
        # Locks and the thread belong to one process: a forked child gets fresh ones (a lock
        # held by a parent's thread at fork time would stay locked forever in the child).
        self._pid = os.getpid()
        self._lock = threading.Lock()  # start/stop/prime; never on the read path
        self._write_lock = threading.RLock()  # publishing a new state
        self._changed = threading.Condition()
        self._stop = threading.Event()
        # Set when the poll interval shrinks (poll_within) or the watcher stops: a polling
        # thread's wait under way is then cut to the new interval.
        self._wake = threading.Event()
        self._scope = Scope()  # the prime's and the thread's attempts, cancelled by stop()
        # Swaps _stop and _scope; never held for long, so stop() cancels a prime in flight
        # while start() holds _lock.
        self._swap_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        running = "running" if self.running else "stopped"
        return f"<Watcher {self.url} generation={self.generation} {running}>"

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The current node list (read from the published state)."""
        return self.state.nodes

    @property
    def running(self) -> bool:
        """True while this process's watcher thread is alive."""
        thread = self._thread
        return thread is not None and self._pid == os.getpid() and thread.is_alive()

    def start(self) -> None:
        """Start the watcher thread unless it runs; a no-op at interpreter exit.

        Without a node list yet, first resolve once (bounded by the policy's deadline,
        falling back to its snapshot), so the first cache use has nodes when any exist.
        """
        if self.running or Watcher.exiting:
            return
        with self._lock:
            if self.running or Watcher.exiting:
                return
            with self._swap_lock:
                self._stop = stop = threading.Event()
                self._scope = scope = Scope()
            if not self._primed:
                with scoped(scope):  # stop() cancels it
                    self._prime()
            if not self.source.traits.needs_network or scope.cancelled:
                return  # a static list never changes: nothing to watch; or stopped
            loop = self._run_blocking if self._blocking else self._run_polling
            self._thread = threading.Thread(
                target=self._run,
                args=(loop, stop, scope),
                name=f"cache_settings watcher {self.url}",
                daemon=True,
            )
            self._thread.start()

    def poll_within(self, refresh: float) -> None:
        """Poll at least every *refresh* seconds from now on, if that is sooner.

        An entry that shares this watcher asked for a shorter ``refresh``: the wait under
        way (up to the longer interval) is cut to the new one, so that entry's first change
        is followed within its own ``refresh``, not the first entry's.
        """
        if refresh < self.refresh:
            self.policy = replace(self.policy, refresh=refresh)
            self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread and wait up to *timeout* seconds; return True once it has ended.

        A question in flight (a Consul blocking query may wait ``blocking_timeout``, or the
        first resolution of a :meth:`start` in another thread) is cancelled: its sockets
        are shut down. The thread is a daemon, so it never holds up
        the interpreter's exit either way.
        """
        deadline = time.monotonic() + wait_time(timeout)
        self._signal_stop()  # also a first resolution that start() is making, holding _lock
        if not self._lock.acquire(timeout=wait_time(timeout)):
            return False
        try:
            self._signal_stop()  # again: start() may have made a new event and scope since
            thread = self._thread
        finally:
            self._lock.release()
        if thread is None or self._pid != os.getpid():
            return True
        thread.join(wait_time(deadline - time.monotonic()))
        return not thread.is_alive()

    def _signal_stop(self) -> None:
        """Tell the thread to stop and cancel the attempts in flight; never waits long."""
        with self._swap_lock:
            self._stop.set()
            self._wake.set()
            self._scope.cancel()

    def wait_for_generation(self, generation: int, timeout: float) -> bool:
        """Wait up to *timeout* seconds until ``generation`` reaches *generation*."""
        with self._changed:
            return self._changed.wait_for(lambda: self.generation >= generation, wait_time(timeout))

    # --- the thread ----------------------------------------------------------------------

    @property
    def _blocking(self) -> bool:
        return isinstance(self.source, WatchableSource) and bool(self.source.blocking)

    def _prime(self) -> None:
        self._primed = True
        try:
            resolution = resolve_with(self.source, self.policy)
        except ResolutionError as exc:
            if self._scope.cancelled:  # stop() during start(): not the source's failure
                logger.debug("%s: first resolution cancelled by stop()", self.url)
                self._primed = False  # a later start() resolves once more
                return
            logger.error("%s", exc)
            self.error = exc  # the thread keeps asking
            self._failing = True  # said here: the thread's first failure is not said again
            return
        # resolve_with() already wrote a live answer to the snapshot. A snapshot's version
        # orders no live answer: the file may be older than the cluster (recreated since).
        version = None
        if resolution.origin == "live":
            version, self._confirmed_at = resolution.version, time.monotonic()
        answer = Answer(resolution.nodes, version, resolution.fetched_at, resolution.source)
        self._offer(answer, ordered=False, write=False)

    def _run(
        self, loop: Callable[[threading.Event], None], stop: threading.Event, scope: Scope
    ) -> None:
        with scoped(scope):  # stop() cancels the attempts this thread makes
            self._loop(loop, stop)

    def _loop(self, loop: Callable[[threading.Event], None], stop: threading.Event) -> None:
        # The thread is the only thing that keeps this process's node list current: an
        # exception no guard expected (a bug, a wait the platform refuses) is logged, and
        # the loop starts again after a back-off, instead of ending the thread unseen.
        crashes = 0
        while not stop.is_set():
            try:
                loop(stop)
                return
            except Exception:
                crashes += 1
                pause = self._backoff(crashes)
                logger.exception(
                    "%s: watcher: unexpected error; starting again in %.2f s", self.url, pause
                )
                stop.wait(wait_time(pause))

    def _run_polling(self, stop: threading.Event) -> None:
        delay = self._interval() if self.state.nodes else 0.0
        while not self._pause(stop, delay):
            try:
                # One source, or a chain's members in order, within the policy's deadline.
                deadline_at = time.monotonic() + self.policy.deadline
                answer = ask_in_order(
                    list(members(self.source)), self.policy, deadline_at=deadline_at
                )
            except CacheSettingsError as exc:
                if stop.is_set():
                    return  # stop() cancelled the question: no failure to report
                self._failed(exc)
            else:
                self._publish(answer, ordered=versions_grow(self.source, answer.source))
            delay = self._interval()

    def _pause(self, stop: threading.Event, delay: float) -> bool:
        """Wait *delay* seconds, less once poll_within() shortens refresh; True once stopped."""
        until = time.monotonic() + delay
        while not stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return False
            if self._wake.wait(wait_time(left)):
                self._wake.clear()
                until = min(until, time.monotonic() + self._interval())
        return True

    def _run_blocking(self, stop: threading.Event) -> None:
        index: int | None = None  # the first query answers at once: catch up since settings
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            # A blocking query is an attempt bounded by blocking_timeout; one that answers
            # at once (no index yet) gets the policy's deadline, as at settings time.
            timeout = self.blocking_timeout if index else self.policy.deadline
            try:
                answer = ask(self.source, self.policy, timeout=timeout, index=index)
            except CacheSettingsError as exc:
                if stop.is_set():
                    return  # stop() cancelled the question: no failure to report
                self._failed(exc)
                # Too few nodes is still an answer: block on its index. After any other
                # failure (a reply cut off at its bound, a refused connection) start afresh.
                index = exc.answer.version if isinstance(exc, TooFewNodes) else None
                failures += 1
                stop.wait(wait_time(self._backoff(failures)))
                continue
            failures = 0
            index = answer.version
            if stop.is_set():
                break
            self._publish(answer, ordered=False)
            stop.wait(wait_time(MIN_QUERY_INTERVAL - (time.monotonic() - started)))

    def _backoff(self, failures: int) -> float:
        # resolve()'s back-off between retries, capped by refresh and one blocking query.
        return sleep_for(backoff(min(self.refresh, BLOCKING_TIMEOUT)), failures)

    def _interval(self) -> float:
        from tenacity import wait_random

        spread = wait_random(self.refresh * (1 - JITTER), self.refresh * (1 + JITTER))
        return sleep_for(spread, 1)

    def _after_fork_in_child(self) -> None:
        # The child has no watcher thread. Keep the nodes and move the generation on by
        # one: every backend then rebuilds its client (the inherited one shares its
        # sockets with the parent) and restarts this watcher on its next operation. The
        # sockets of a question the parent's thread had in flight are closed here, or the
        # child would hold those connections open for its whole life.
        self._scope.release_inherited()
        self._init_process()
        state = self.state
        self.state = State(state.generation + 1, state.nodes)
        self.generation = state.generation + 1
