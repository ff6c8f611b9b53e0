"""resolve(): ask a source with retries and a deadline, fall back to the snapshot."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .ask import Answer, ask, backoff, save
from .exceptions import ResolutionError, SnapshotError, SourceError
from .nodes import Node
from .policy import Policy, as_path
from .snapshot import load_snapshot, read_snapshot
from .sources import Source, parse_source

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["OFFLINE_VARIABLE", "Resolution", "is_offline", "resolve", "resolve_with"]

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
    *min_nodes* nodes is a failed attempt; a failure no retry can change (an unknown
    host, a refused permission) ends the attempts at once. A live answer is written to
    *snapshot*; when every attempt fails, a snapshot entry younger than *max_age*
    seconds is returned instead. With *live_only* (pre-deploy checks) the snapshot is
    written but never read.

    Raises:
        ResolutionError: neither a live answer nor a trusted snapshot entry; the message
            says each cause once and what to do next.
        ConfigurationError: an invalid URL or argument.
    """
    policy = Policy(attempts, deadline, min_nodes, max_age, as_path(snapshot))
    return resolve_with(parse_source(source), policy, live_only=live_only)


def resolve_with(source: Source, policy: Policy, *, live_only: bool = False) -> Resolution:
    """Return the nodes of *source* under *policy*, as :func:`resolve` does."""
    # A static list needs no network, so offline mode still reads it from the settings.
    if is_offline() and not live_only and source.traits.needs_network:
        return _from_snapshot(source, policy, (), reason=f"{OFFLINE_VARIABLE}=1")

    started = time.monotonic()
    deadline_at = started + policy.deadline
    errors: list[SourceError] = []

    def attempt() -> Answer:
        try:
            left = deadline_at - time.monotonic()
            if left <= 0:
                raise SourceError(source.url, f"deadline of {policy.deadline:g} s reached")
            return ask(source, policy, timeout=left)
        except SourceError as exc:
            errors.append(exc)
            raise

    try:
        try:
            answer = attempt()
        except SourceError as first:
            # A static list cannot fail for a reason a retry would fix. tenacity is imported
            # only here, once a retry is due: most settings imports never need it.
            if first.permanent or policy.attempts == 1 or not source.traits.needs_network:
                raise
            answer = _retry(source, policy, deadline_at, first, attempt)
    except SourceError:
        if live_only:
            raise ResolutionError(source.url, errors) from None
        return _from_snapshot(source, policy, errors, reason="source failed")

    logger.info(
        "%s: resolved %d node(s) in %.0f ms (attempt %d)",
        source.url,
        len(answer.nodes),
        (time.monotonic() - started) * 1000,
        len(errors) + 1,
    )
    # Saving the answer must not hold settings import past its deadline either; a writer
    # that finds the lock taken that long only logs (a later write succeeds).
    save(policy, source.url, answer, lock_timeout=max(deadline_at - time.monotonic(), 0.1))
    return Resolution(
        answer.nodes, "live", answer.fetched_at, source.url, answer.version, tuple(errors)
    )


def _retry(
    source: Source,
    policy: Policy,
    deadline_at: float,
    first: SourceError,
    attempt: Callable[[], Answer],
) -> Answer:
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_before_delay

    # The first attempt ran before tenacity was imported; its failure is handed to
    # Retrying as its own first call, so that the stop, wait and log below count it.
    pending = [first]

    def call() -> Answer:
        if pending:
            raise pending.pop()
        return attempt()

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts)
        | stop_before_delay(max(deadline_at - time.monotonic(), 0.0)),
        wait=backoff(1.0),
        retry=retry_if_exception(lambda exc: isinstance(exc, SourceError) and not exc.permanent),
        before_sleep=lambda state: _log_retry(source, state),
        reraise=True,
    )
    return retrying(call)


def _log_retry(source: Source, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.info(
        "%s: attempt %d failed (%s); retrying in %.2f s",
        source.url,
        state.attempt_number,
        error.reason if isinstance(error, SourceError) else error,
        wait,
    )


def _from_snapshot(
    source: Source,
    policy: Policy,
    errors: Sequence[SourceError],
    *,
    reason: str,
) -> Resolution:
    entry = None
    if policy.snapshot is not None:
        entry = read_snapshot(policy.snapshot, source.url, max_age=policy.max_age)
    too_few = policy.too_few(entry.nodes) if entry is not None else None
    if entry is None or too_few is not None:
        detail = _unusable(source, policy) if too_few is None else f"snapshot {too_few}"
        error = ResolutionError(source.url, errors, f"{reason}; {detail}")
        logger.error("%s", error)
        raise error from None  # the causes are in the message and in .errors
    logger.warning(
        "%s: %s (%s); using %d node(s) from snapshot %s (%.0f s old)",
        source.url,
        reason,
        errors[-1].reason if errors else "not asked",
        len(entry.nodes),
        policy.snapshot,
        entry.age(),
    )
    return Resolution(
        entry.nodes, "snapshot", entry.fetched_at, source.url, entry.version, tuple(errors)
    )


def _unusable(source: Source, policy: Policy) -> str:
    """Say why the snapshot had no entry to trust, and what to do about it."""
    if policy.snapshot is None:
        return "no snapshot file configured (snapshot=PATH keeps a last-known-good list)"
    where = f"no usable entry in snapshot {policy.snapshot}"
    module = os.environ.get("DJANGO_SETTINGS_MODULE") or "<settings module>"
    fix = f"run `cache-settings resolve --settings {module}` to create it"
    try:
        entry = load_snapshot(policy.snapshot).get(source.url)
    except SnapshotError as exc:
        return f"{where}: {exc}; {fix}"
    if entry is None:
        return f"{where}: it holds no list for this source; {fix}"
    if policy.max_age is not None and entry.age() > policy.max_age:
        return (
            f"{where}: its list is {entry.age():.0f} s old, older than "
            f"max_age={policy.max_age:g} s; {fix.replace('create', 'refresh')}"
        )
    return f"{where}: its fetched_at lies in the future (a clock or the file is wrong); {fix}"
