"""resolve(): ask a source with retries and a deadline, fall back to the snapshot."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .exceptions import ConfigurationError, ResolutionError, SourceError
from .nodes import Node, unique_sorted
from .snapshot import SnapshotEntry, read_snapshot, write_snapshot
from .sources import Source, WatchableSource, parse_source

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

__all__ = ["OFFLINE_VARIABLE", "Resolution", "ask", "is_offline", "resolve"]

logger = logging.getLogger(__name__)

OFFLINE_VARIABLE = "CACHE_SETTINGS_OFFLINE"

Origin = Literal["live", "snapshot"]
PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Resolution:
    """The nodes of a source, and where they came from.

    ``origin`` is ``"live"`` when the source answered and ``"snapshot"`` when the
    last-known-good file stood in; ``fetched_at`` is the Unix time (seconds) of the
    live answer; ``errors`` holds every failed attempt of this resolution.
    """

    nodes: tuple[Node, ...]
    origin: Origin
    fetched_at: float
    source: str
    version: int | None = None
    errors: tuple[BaseException, ...] = field(default=(), compare=False)

    @property
    def locations(self) -> list[str]:
        """Return the nodes as client addresses, in their stable order."""
        return [node.location for node in self.nodes]


def is_offline() -> bool:
    """Return True when ``CACHE_SETTINGS_OFFLINE`` asks to contact no source."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


def resolve(
    source: str | Source,
    *,
    attempts: int = 3,
    deadline: float = 5.0,
    snapshot: PathLike | None = None,
    max_age: float | None = None,
    min_nodes: int = 1,
    live_only: bool = False,
) -> Resolution:
    """Return the nodes of *source*, asked live, else read from the *snapshot* file.

    Attempts are retried with exponential back-off and jitter until one succeeds,
    *attempts* have been made or *deadline* seconds have passed, whichever comes
    first; each attempt gets only the time left. An answer with fewer than
    *min_nodes* nodes is a failed attempt. A live answer is written to *snapshot*;
    when every attempt fails, a snapshot entry younger than *max_age* seconds is
    returned instead. With *live_only* (pre-deploy checks) the snapshot is written
    but never read. Raise :class:`ResolutionError` when neither can be had.
    """
    src = parse_source(source)
    _check_arguments(attempts=attempts, deadline=deadline, max_age=max_age, min_nodes=min_nodes)
    # A static list needs no network, so offline mode still reads it from the settings.
    if is_offline() and not live_only and src.traits.needs_network:
        return _from_snapshot(src, snapshot, max_age, min_nodes, (), reason=f"{OFFLINE_VARIABLE}=1")

    started = time.monotonic()
    deadline_at = started + deadline
    errors: list[BaseException] = []

    def attempt() -> tuple[int | None, tuple[Node, ...]]:
        left = deadline_at - time.monotonic()
        try:
            if left <= 0:
                raise SourceError(src.url, f"deadline of {deadline:g} s reached")
            version, nodes = (
                ask(src, left) if not src.traits.needs_network else _bounded_ask(src, left)
            )
            if len(nodes) < min_nodes:
                raise SourceError(
                    src.url, f"answered {len(nodes)} node(s), fewer than min_nodes={min_nodes}"
                )
        except SourceError as exc:
            errors.append(exc)
            raise
        return version, nodes

    try:
        # A static list cannot fail for a reason a retry would fix, and skipping tenacity
        # keeps it out of the import of a settings module that uses no remote source.
        version, nodes = (
            attempt()
            if not src.traits.needs_network
            else _retrying(src, attempts, deadline)(attempt)
        )
    except SourceError:
        logger.warning(
            "%s: %d attempt(s) failed in %.2f s; last: %s",
            src.url,
            len(errors),
            time.monotonic() - started,
            errors[-1],
        )
        if live_only:
            raise ResolutionError(src.url, errors) from errors[-1]
        return _from_snapshot(src, snapshot, max_age, min_nodes, errors, reason="source failed")

    fetched_at = time.time()
    logger.info(
        "%s: resolved %d node(s) in %.0f ms (attempt %d)",
        src.url,
        len(nodes),
        (time.monotonic() - started) * 1000,
        len(errors) + 1,
    )
    if snapshot is not None:
        # Saving the answer must not hold settings import past its deadline either; a
        # writer that finds the lock taken that long only logs (a later write succeeds).
        lock_timeout = max(deadline_at - time.monotonic(), 0.1)
        write_snapshot(
            snapshot,
            src.url,
            nodes,
            version=version,
            fetched_at=fetched_at,
            lock_timeout=lock_timeout,
        )
    return Resolution(nodes, "live", fetched_at, src.url, version, tuple(errors))


def ask(source: Source, timeout: float) -> tuple[int | None, tuple[Node, ...]]:
    """Ask *source* once, within *timeout* seconds: ``(version, unique sorted nodes)``."""
    if isinstance(source, WatchableSource):
        version, nodes = source.watch(None, timeout)
    else:
        version, nodes = None, source.resolve(timeout)
    return version, unique_sorted(nodes)


# Seconds an attempt may run past its timeout before it is abandoned; the sources' own
# timeouts normally end it first.
_GRACE = 0.05


def _bounded_ask(source: Source, timeout: float) -> tuple[int | None, tuple[Node, ...]]:
    """Ask *source* once and give up after *timeout* seconds, whatever the source does.

    Client libraries bound each socket read, not a whole request: an agent or an API
    endpoint that trickles its reply a byte at a time, or a credential lookup that
    stalls, would hold settings import far past its deadline. The attempt therefore runs
    in a daemon thread that is abandoned (its answer ignored) when time is up.
    """
    outcome: list[tuple[int | None, tuple[Node, ...]] | BaseException] = []

    def run() -> None:
        try:
            outcome.append(ask(source, timeout))
        except BaseException as exc:  # handed to the caller's thread below
            outcome.append(exc)

    worker = threading.Thread(target=run, name=f"cache_settings attempt {source.url}", daemon=True)
    worker.start()
    worker.join(timeout + _GRACE)
    if not outcome:
        raise SourceError(source.url, f"no complete answer within {timeout:.2f} s")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _retrying(source: Source, attempts: int, deadline: float) -> Retrying:
    from tenacity import (
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        stop_before_delay,
        wait_exponential,
        wait_random,
    )

    return Retrying(
        stop=stop_after_attempt(attempts) | stop_before_delay(deadline),
        # Exponential back-off (0.1, 0.2, 0.4 … 1 s) plus up to 0.1 s of jitter, so that
        # processes started together do not retry in step.
        wait=wait_exponential(multiplier=0.1, max=1.0) + wait_random(0, 0.1),
        retry=retry_if_exception_type(SourceError),
        before_sleep=lambda state: _log_retry(source, state),
        reraise=True,
    )


def _log_retry(source: Source, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    reason = getattr(error, "reason", error)
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.warning(
        "%s: attempt %d failed (%s); retrying in %.2f s",
        source.url,
        state.attempt_number,
        reason,
        wait,
    )


def _from_snapshot(
    source: Source,
    snapshot: PathLike | None,
    max_age: float | None,
    min_nodes: int,
    errors: tuple[BaseException, ...] | list[BaseException],
    *,
    reason: str,
) -> Resolution:
    entry: SnapshotEntry | None = None
    if snapshot is not None:
        entry = read_snapshot(snapshot, source.url, max_age=max_age)
    if entry is None or len(entry.nodes) < min_nodes:
        if snapshot is None:
            detail = "no snapshot file configured"
        elif entry is None:
            detail = f"no usable entry in snapshot {os.fspath(snapshot)}"
        else:
            detail = f"snapshot {os.fspath(snapshot)} holds fewer than min_nodes={min_nodes} nodes"
        error = ResolutionError(source.url, errors, f"{reason}; {detail}")
        logger.error("%s", error)
        raise error
    logger.warning(
        "%s: %s; using %d node(s) from snapshot %s (%.0f s old)",
        source.url,
        reason,
        len(entry.nodes),
        os.fspath(snapshot) if snapshot is not None else "",
        entry.age(),
    )
    return Resolution(
        entry.nodes, "snapshot", entry.fetched_at, source.url, entry.version, tuple(errors)
    )


def _check_arguments(
    *, attempts: int, deadline: float, max_age: float | None, min_nodes: int
) -> None:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigurationError(f"attempts must be a positive integer, not {attempts!r}")
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0:
        raise ConfigurationError(f"deadline must be a positive number of seconds, not {deadline!r}")
    if max_age is not None and (
        isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0
    ):
        raise ConfigurationError(
            f"max_age must be a positive number of seconds or None, not {max_age!r}"
        )
    if isinstance(min_nodes, bool) or not isinstance(min_nodes, int) or min_nodes < 1:
        raise ConfigurationError(f"min_nodes must be a positive integer, not {min_nodes!r}")
