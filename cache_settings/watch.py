"""Per-process watchers: one daemon thread per source keeps its node list fresh.

DESIGN.md, "Refreshing backends": one watcher per source per process, started lazily on
first cache use, restarted after ``fork``, stopped at exit. A watcher publishes an
immutable :class:`State` ``(generation, nodes)`` in one attribute; readers (the backends,
one per thread) take no lock: under the GIL, reading an attribute is atomic, and the
tuple it holds never changes.

- Sources with ``blocking = True`` (Consul) are asked with blocking queries in a loop, so
  a change reaches the site within about a second whatever ``refresh`` is; on error the
  watcher backs off (exponentially, jittered, capped by ``refresh``) and retries.
- Other sources are polled every ``refresh`` seconds ± 10 % jitter, so that processes
  started together do not ask in step.
- Guards: an empty, below-``min_nodes`` or failing answer keeps the last good list (one
  WARNING per outage, one INFO on recovery); a configuration endpoint's answer with a
  lower config version than the one in use is ignored; an identical list is no change.
- Each change bumps ``generation``, is logged at INFO with the added and removed nodes,
  written to the snapshot and sent as :data:`cache_settings.signals.nodes_changed`.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Iterable
from typing import NamedTuple

from .exceptions import CacheSettingsError, ResolutionError
from .nodes import Node, unique_sorted
from .resolve import ask, resolve
from .signals import nodes_changed
from .snapshot import write_snapshot
from .sources import Source, WatchableSource

__all__ = ["State", "Watcher", "get_watcher", "stop_all", "watchers"]

logger = logging.getLogger(__name__)

JITTER = 0.1  # ± 10 % on every poll interval and back-off
# Seconds one Consul blocking query may take: Consul.watch() fits its ``wait`` (plus
# Consul's wait/16 jitter and a margin) in this, so a hung agent costs at most this long.
BLOCKING_TIMEOUT = 30.0
# Consul docs, "Blocking queries": rate-limit the loop, since an agent may answer at once.
MIN_QUERY_INTERVAL = 0.2
FIRST_BACKOFF = 0.5  # seconds after the first failure of a blocking source
MAX_BACKOFF = 30.0  # seconds; the back-off never exceeds this nor ``refresh``
EXIT_JOIN = 0.5  # seconds, in total, to join watcher threads at interpreter exit


class State(NamedTuple):
    """What a watcher publishes: its change counter and the node list it belongs to."""

    generation: int
    nodes: tuple[Node, ...]


class Watcher:
    """Keep the node list of one source fresh from a daemon thread.

    Args:
        refresh: seconds between polls of a non-blocking source (± 10 % jitter), and the
            cap of the back-off after errors of a blocking one.
        nodes, version: the settings-time answer to start from; with no *nodes*, the
            first :meth:`start` resolves once, bounded by *deadline* seconds and falling
            back to *snapshot*.
    """

    def __init__(
        self,
        source: Source,
        *,
        refresh: float,
        min_nodes: int = 1,
        snapshot: str | os.PathLike[str] | None = None,
        deadline: float = 5.0,
        attempts: int = 3,
        nodes: Iterable[Node] = (),
        version: int | None = None,
    ) -> None:
        self.source = source
        self.url = source.url
        self.refresh = float(refresh)
        self.min_nodes = min_nodes
        self.snapshot = os.fspath(snapshot) if snapshot is not None else None
        self.deadline = deadline
        self.attempts = attempts
        self.version = version
        first = unique_sorted(nodes)
        self.state = State(0, first)
        # Written after ``state``: whoever sees a new generation finds its nodes in state.
        self.generation = 0
        self._primed = bool(first)
        # Why the first resolution failed, while the watcher has no node list yet.
        self.error: ResolutionError | None = None
        self._failing = False
        self._stale_logged: int | None = None
        self._init_process()

    def _init_process(self) -> None:
        # Locks and the thread belong to one process: a forked child gets fresh ones (a lock
        # held by a parent's thread at fork time would stay locked forever in the child).
        self._pid = os.getpid()
        self._lock = threading.Lock()  # start/stop/prime; never on the read path
        self._write_lock = threading.RLock()  # publishing a new state
        self._changed = threading.Condition()
        self._stop = threading.Event()
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

        Without a node list yet, first resolve once (bounded by ``deadline`` seconds,
        falling back to the snapshot), so the first cache use has nodes when any exist.
        """
        if self.running or _exiting:
            return
        with self._lock:
            if self.running or _exiting:
                return
            if not self._primed:
                self._prime()
            self._stop = stop = threading.Event()
            target = self._run_blocking if self._blocking else self._run_polling
            self._thread = threading.Thread(
                target=target, args=(stop,), name=f"cache_settings watcher {self.url}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread and wait up to *timeout* seconds; return True once it has ended.

        A Consul blocking query in flight ends when the agent answers; the thread is a
        daemon, so an unanswered one never holds up the interpreter's exit.
        """
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is None or self._pid != os.getpid():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def wait_for_generation(self, generation: int, timeout: float) -> bool:
        """Wait up to *timeout* seconds until ``generation`` reaches *generation*."""
        with self._changed:
            return self._changed.wait_for(lambda: self.generation >= generation, timeout)

    # --- the thread ----------------------------------------------------------------------

    @property
    def _blocking(self) -> bool:
        return isinstance(self.source, WatchableSource) and bool(self.source.blocking)

    def _prime(self) -> None:
        self._primed = True
        try:
            resolution = resolve(
                self.source,
                attempts=self.attempts,
                deadline=self.deadline,
                snapshot=self.snapshot,
                min_nodes=self.min_nodes,
            )
        except ResolutionError as exc:
            self.error = exc  # resolve() logged it; the thread keeps asking
            return
        # resolve() already wrote a live answer to the snapshot.
        self._offer(resolution.version, resolution.nodes, ordered=False, save=False)

    def _run_polling(self, stop: threading.Event) -> None:
        delay = self._jittered(self.refresh) if self.state.nodes else 0.0
        while not stop.wait(delay):
            self._poll()
            delay = self._jittered(self.refresh)

    def _poll(self) -> None:
        try:
            version, nodes = ask(self.source, self.deadline)
        except CacheSettingsError as exc:
            self._failed(str(getattr(exc, "reason", exc)))
        except Exception as exc:  # a watcher thread must outlive a broken source
            logger.exception("%s: watcher: unexpected error", self.url)
            self._failed(f"{type(exc).__name__}: {exc}")
        else:
            self._publish(version, nodes, ordered=True)

    def _run_blocking(self, stop: threading.Event) -> None:
        assert isinstance(self.source, WatchableSource)
        index: int | None = None  # the first query answers at once: catch up since settings
        errors = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                index, nodes = self.source.watch(index, BLOCKING_TIMEOUT)
            except Exception as exc:
                if not isinstance(exc, CacheSettingsError):
                    logger.exception("%s: watcher: unexpected error", self.url)
                errors += 1
                self._failed(str(getattr(exc, "reason", exc)))
                stop.wait(self._backoff(errors))
                continue
            errors = 0
            if stop.is_set():
                break
            self._publish(index, unique_sorted(nodes), ordered=False)
            stop.wait(MIN_QUERY_INTERVAL - (time.monotonic() - started))

    def _backoff(self, errors: int) -> float:
        cap = min(self.refresh, MAX_BACKOFF)
        return self._jittered(min(cap, FIRST_BACKOFF * 2 ** (errors - 1)))

    @staticmethod
    def _jittered(seconds: float) -> float:
        return seconds * random.uniform(1 - JITTER, 1 + JITTER)

    # --- guards and publishing -----------------------------------------------------------

    def _publish(self, version: int | None, nodes: tuple[Node, ...], *, ordered: bool) -> None:
        # A log handler or a snapshot write that raises must not end the watch: the thread
        # is the only thing that keeps this process's node list current.
        try:
            self._offer(version, nodes, ordered=ordered)
        except Exception:
            logger.exception("%s: watcher: error while publishing a node list", self.url)

    def _offer(
        self,
        version: int | None,
        nodes: tuple[Node, ...],
        *,
        ordered: bool,
        save: bool = True,
    ) -> bool:
        """Publish *nodes* if they pass the guards and differ; return True on a change."""
        with self._write_lock:
            current = self.state
            # DESIGN.md: never apply a lower ElastiCache config version (logged once each).
            if (
                ordered
                and version is not None
                and self.version is not None
                and (version < self.version)
            ):
                if self._stale_logged != version:
                    self._stale_logged = version
                    logger.warning(
                        "%s: ignoring an answer with config version %d, older than %d",
                        self.url,
                        version,
                        self.version,
                    )
                return False
            if len(nodes) < self.min_nodes:
                self._failed(
                    f"answered {len(nodes)} node(s), fewer than min_nodes={self.min_nodes}"
                )
                return False
            if self._failing:
                self._failing = False
                logger.info("%s: source recovered with %d node(s)", self.url, len(nodes))
            if version is not None:
                self.version = version
            if nodes == current.nodes:
                return False
            old = set(current.nodes)
            added = tuple(node for node in nodes if node not in old)
            new = set(nodes)
            removed = tuple(node for node in current.nodes if node not in new)
            state = State(current.generation + 1, nodes)
            self.state = state
            self.generation = state.generation
        with self._changed:
            self._changed.notify_all()
        logger.info(
            "%s: nodes changed (generation %d), added %s, removed %s",
            self.url,
            state.generation,
            ", ".join(node.location for node in added) or "none",
            ", ".join(node.location for node in removed) or "none",
        )
        if save and self.snapshot is not None:
            write_snapshot(self.snapshot, self.url, nodes, version=version)
        for receiver, result in nodes_changed.send_robust(
            Watcher,
            source=self.url,
            nodes=nodes,
            added=added,
            removed=removed,
            generation=state.generation,
            version=version,
        ):
            if isinstance(result, Exception):
                logger.error("%s: nodes_changed receiver %r raised %r", self.url, receiver, result)
        return True

    def _failed(self, reason: str) -> None:
        with self._write_lock:
            first = not self._failing
            self._failing = True
        if first:
            logger.warning(
                "%s: source failed (%s); keeping the last good %d node(s) until it recovers",
                self.url,
                reason,
                len(self.state.nodes),
            )
        else:
            logger.debug("%s: source still failing (%s)", self.url, reason)

    def _after_fork_in_child(self) -> None:
        # The child has no watcher thread. Keep the nodes and move the generation on by
        # one: every backend then rebuilds its client (the inherited one shares its
        # sockets with the parent) and restarts this watcher on its next operation.
        self._init_process()
        state = self.state
        self.state = State(state.generation + 1, state.nodes)
        self.generation = state.generation + 1


_registry: dict[str, Watcher] = {}
_registry_lock = threading.Lock()
_exiting = False


def get_watcher(
    source: Source,
    *,
    refresh: float,
    min_nodes: int = 1,
    snapshot: str | os.PathLike[str] | None = None,
    deadline: float = 5.0,
    attempts: int = 3,
    nodes: Iterable[Node] = (),
    version: int | None = None,
) -> Watcher:
    """Return this process's watcher of *source* (keyed by its URL), made on first request.

    When several cache entries watch one source, the first made sets the guards and the
    shortest *refresh* (seconds) wins. The watcher is not started: backends start it on
    first use.
    """
    with _registry_lock:
        watcher = _registry.get(source.url)
        if watcher is None:
            watcher = _registry[source.url] = Watcher(
                source,
                refresh=refresh,
                min_nodes=min_nodes,
                snapshot=snapshot,
                deadline=deadline,
                attempts=attempts,
                nodes=nodes,
                version=version,
            )
        elif refresh < watcher.refresh:
            watcher.refresh = float(refresh)
        return watcher


def watchers() -> list[Watcher]:
    """Return every watcher of this process."""
    with _registry_lock:
        return list(_registry.values())


def stop_all(timeout: float = 5.0) -> bool:
    """Stop and forget every watcher, waiting up to *timeout* seconds in total.

    Return True when every thread ended. Used at interpreter exit and between tests.
    """
    with _registry_lock:
        stopping = list(_registry.values())
        _registry.clear()
    for watcher in stopping:
        with watcher._lock:
            watcher._stop.set()
    deadline = time.monotonic() + timeout
    return all([watcher.stop(max(0.0, deadline - time.monotonic())) for watcher in stopping])


def _stop_at_exit() -> None:
    global _exiting
    _exiting = True
    stop_all(EXIT_JOIN)


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for watcher in _registry.values():
        watcher._after_fork_in_child()


atexit.register(_stop_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
