"""resolve(): ask a source with retries and a deadline, fall back to the snapshot."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .ask import Answer, backoff, save
from .attempt import DEFAULT_MAX_REPLY_SIZE
from .chain import as_source, ask_in_order, members
from .exceptions import ResolutionError, SnapshotError, SourceError
from .nodes import Node
from .policy import Policy, as_path, seconds_text
from .sources import Source

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from .snapshot import SnapshotEntry

__all__ = ["OFFLINE_VARIABLE", "Resolution", "is_offline", "offline", "resolve", "resolve_with"]

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


# Set by offline(): this thread (or async context) contacts no source, whatever the
# environment says; other threads of the process are not affected.
_offline: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cache_settings_offline", default=False
)


def is_offline() -> bool:
    """Return True inside :func:`offline`, or when ``CACHE_SETTINGS_OFFLINE`` is set."""
    if _offline.get():
        return True
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Within this block, in this thread only, resolve as ``CACHE_SETTINGS_OFFLINE=1`` does.

    The command line imports a settings module inside it; unlike setting the variable,
    it changes nothing for the rest of the process (``manage.py cache_nodes`` may run in
    the site's own).
    """
    token = _offline.set(True)
    try:
        yield
    finally:
        _offline.reset(token)


def resolve(
    source: str | Source | Sequence[str | Source],
    *,
    attempts: int = 3,
    deadline: float = 5.0,
    snapshot: PathLike | None = None,
    max_age: float | None = None,
    min_nodes: int = 1,
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    live_only: bool = False,
) -> Resolution:
    """Return the nodes of *source*, asked live, else read from the *snapshot* file.

    Attempts are retried with exponential back-off and jitter until one succeeds,
    *attempts* have been made or *deadline* seconds have passed, whichever comes
    first; each attempt gets only the time left. An answer with fewer than
    *min_nodes* nodes, or a reply over *max_reply_size* bytes, is a failed attempt; a
    failure no retry can change (an unknown host, a refused permission) ends the
    attempts at once. A live answer is written to
    *snapshot*; when every attempt fails, a snapshot entry younger than *max_age*
    seconds is returned instead. With *live_only* (pre-deploy checks) the snapshot is
    written but never read.

    A list of sources is a chain (:mod:`cache_settings.chain`): each attempt asks them in
    order, each within a fair share of the time left, and the first live answer wins;
    ``Resolution.source`` names the one that answered (or whose snapshot entry stood in).

    Raises:
        ResolutionError: neither a live answer nor a trusted snapshot entry; the message
            says each cause once and what to do next.
        ConfigurationError: an invalid URL or argument.
    """
    policy = Policy(
        attempts, deadline, min_nodes, max_age, as_path(snapshot), max_reply_size=max_reply_size
    )
    return resolve_with(as_source(source), policy, live_only=live_only)


def resolve_with(
    source: Source, policy: Policy, *, live_only: bool = False, in_settings: bool = False
) -> Resolution:
    """Return the nodes of *source* (one source or a chain) under *policy*, as :func:`resolve`.

    *in_settings*: called by ``memcached()``, whose entries ``cache-settings resolve
    --settings`` finds; an error then names that command.
    """
    # A static list needs no network, so offline mode still reads it from the settings.
    offline = is_offline() and not live_only
    asking = [member for member in members(source) if not (offline and member.traits.needs_network)]
    if not asking:
        return _from_snapshot(source, policy, (), in_settings)

    started = time.monotonic()
    deadline_at = started + policy.deadline
    errors: list[SourceError] = []
    rounds: list[int] = []

    def attempt() -> Answer:
        # One attempt asks every source still in `asking`, in order (one, for a single
        # source); a source that failed for good has left `asking`.
        rounds.append(len(rounds) + 1)
        return ask_in_order(asking, policy, deadline_at=deadline_at, errors=errors)

    try:
        try:
            answer = attempt()
        except SourceError as first:
            # A permanent failure or a static list left `asking`: no retry would change it.
            # tenacity is imported only here, once a retry is due: most settings imports
            # never need it.
            if not asking or policy.attempts == 1:
                raise
            answer = _retry(source, policy, deadline_at, first, attempt, asking)
    except SourceError:
        if live_only:
            raise ResolutionError(source.url, errors) from None
        return _from_snapshot(source, policy, errors, in_settings)

    answered = answer.source or source.url
    logger.info(
        "%s: resolved %d node(s) in %.0f ms (attempt %d)",
        answered,
        len(answer.nodes),
        (time.monotonic() - started) * 1000,
        len(rounds),
    )
    if answered != members(source)[0].url:
        earlier = {error.source: error for error in errors if error.source != answered}
        logger.warning(
            "%s: answered by %s; before it: %s",
            source.url,
            answered,
            "; ".join(str(error) for error in earlier.values()),
        )
    # Saving the answer must not hold settings import past its deadline either; a writer
    # that finds the lock taken that long only logs (a later write succeeds).
    save(policy, answered, answer, lock_timeout=max(deadline_at - time.monotonic(), 0.1))
    return Resolution(
        answer.nodes, "live", answer.fetched_at, answered, answer.version, tuple(errors)
    )


def _retry(
    source: Source,
    policy: Policy,
    deadline_at: float,
    first: SourceError,
    attempt: Callable[[], Answer],
    asking: list[Source],
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
        # Retried while a source is left that a retry could change (see ask_in_order).
        retry=retry_if_exception(lambda exc: isinstance(exc, SourceError) and bool(asking)),
        before_sleep=lambda state: _log_retry(source, state),
        reraise=True,
    )
    return retrying(call)


def _log_retry(source: Source, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    reason = error.reason if isinstance(error, SourceError) else error
    if isinstance(error, SourceError) and error.source != source.url:
        reason = str(error)  # a chain's member: name it
    logger.info(
        "%s: attempt %d failed (%s); retrying in %.2f s",
        source.url,
        state.attempt_number,
        reason,
        wait,
    )


def _from_snapshot(
    source: Source, policy: Policy, errors: Sequence[SourceError], in_settings: bool
) -> Resolution:
    # No errors: no source was asked (offline). The attempts' causes say the source failed.
    offline = f"{OFFLINE_VARIABLE}=1"
    stored = _load(policy)
    found = _first_usable(source, policy, stored)
    if found is None:
        detail = _unusable(source, policy, stored, in_settings)
        # Not logged: the caller that swallows the error logs it (memcached(on_failure=...),
        # the watcher), else it is raised and printed once.
        error = ResolutionError(source.url, errors, detail if errors else f"{offline}; {detail}")
        raise error from None  # the causes are in the message and in .errors
    member, entry = found
    logger.warning(
        "%s: %s; using %d node(s) from snapshot %s (%.0f s old)",
        member,
        errors[-1].reason if errors else f"{offline}: no source asked",
        len(entry.nodes),
        policy.snapshot,
        entry.age(),
    )
    return Resolution(
        entry.nodes, "snapshot", entry.fetched_at, member, entry.version, tuple(errors)
    )


def _load(policy: Policy) -> dict[str, SnapshotEntry] | SnapshotError | None:
    """Read the policy's snapshot once: its entries, why it cannot be read, or None (none set)."""
    if policy.snapshot is None:
        return None
    from .snapshot import load_snapshot  # entries without a snapshot never import it

    try:
        return load_snapshot(policy.snapshot)
    except SnapshotError as exc:
        return exc


def _first_usable(
    source: Source, policy: Policy, stored: dict[str, SnapshotEntry] | SnapshotError | None
) -> tuple[str, SnapshotEntry] | None:
    """Return the first trusted snapshot entry in chain order (a single source: its own)."""
    if stored is None or isinstance(stored, SnapshotError) or policy.snapshot is None:
        return None  # _unusable() says why, in the error
    from .snapshot import trusted_entry

    for member in members(source):
        # Why an entry is not trusted is said once, in the error: trusted_entry() would log
        # it as well, so it checks only an entry that passes _why()'s checks (it still
        # refuses, and logs, one whose fetched_at lies far in the future).
        if _why(stored.get(member.url), policy) is not None:
            continue
        entry = trusted_entry(stored, policy.snapshot, member.url, max_age=policy.max_age)
        if entry is not None:
            return member.url, entry
    return None


def _unusable(
    source: Source,
    policy: Policy,
    stored: dict[str, SnapshotEntry] | SnapshotError | None,
    in_settings: bool,
) -> str:
    """Say once why the snapshot could not stand in, and the one thing to do about it.

    The file's path is said once (in the command, when the command names it); what to run
    depends on what is there: nothing (create it), no entry for the source (add it), a
    malformed file (replace it), an entry too old or too short (refresh it). A file that
    cannot be read needs its owner, not a command.
    """
    if stored is None:
        return "no snapshot file configured (snapshot=PATH keeps a last-known-good list)"
    path = policy.snapshot
    urls = [member.url for member in members(source)]
    command, names_path = _command(source.url, urls, path, in_settings)
    # The URLs are redacted: the command asks without the token unless it is added back.
    secret = names_path and any(member.traits.secrets for member in members(source))
    run = f"run `{command}`{' (with the token left out here)' if secret else ''} to"
    snapshot = "the snapshot" if names_path else f"snapshot {path}"
    if isinstance(stored, SnapshotError):
        if not stored.readable:
            return f"snapshot {path} {stored.reason}; it must be a regular file this user can read"
        if stored.entry is not None and [stored.entry] == urls:
            return f"its entry in {snapshot} is malformed: {stored.reason}; {run} replace it"
        return f"{snapshot} is malformed: {stored.detail}; {run} replace it"
    if not stored and path is not None and not os.path.lexists(path):
        return f"{snapshot} does not exist; {run} create it"
    why = [(url, _why(stored.get(url), policy) or _FUTURE) for url in urls]
    where = f"no usable entry in {snapshot}"
    if why == [(urls[0], _MISSING)]:
        return f"{snapshot} holds no list for this source; {run} add it"
    if len(why) == 1:
        return f"{where}: {why[0][1]}; {run} refresh it"
    each = "; ".join(f"{url}: {text}" for url, text in why)
    return f"{where} for any of its {len(why)} sources ({each}); {run} refresh it"


def _command(url: str, urls: list[str], path: str | None, in_settings: bool) -> tuple[str, bool]:
    """Return the command that writes the snapshot entries of the source written as *url*.

    ``--settings`` for an entry of a ``memcached()`` call (being made, or recorded by
    one: a refreshing entry's watcher); otherwise (a ``CACHES``
    entry written as data, a compat backend, a ``resolve()`` call) the URLs and the file
    (made absolute), which ``--settings`` would not find. The flag is True when the
    command names the file.
    """
    import shlex

    from .entries import latest  # entries.py imports this module

    if in_settings or latest(url) is not None:
        module = os.environ.get("DJANGO_SETTINGS_MODULE") or "<settings module>"
        return f"cache-settings resolve --settings {module}", False
    written = " ".join(shlex.quote(member) for member in urls)
    # Absolute: the settings' relative path is the application's working directory's.
    where = os.path.abspath(path) if path else str(path)
    return f"cache-settings resolve {written} --snapshot {shlex.quote(where)}", True


_MISSING = "it holds no list for this source"
_FUTURE = "its fetched_at lies in the future (a clock or the file is wrong)"


def _why(entry: SnapshotEntry | None, policy: Policy) -> str | None:
    """Say why one source's snapshot *entry* is not trusted; None when it may be."""
    if entry is None:
        return _MISSING
    if policy.max_age is not None and entry.age() > policy.max_age:
        age, limit = entry.age(), seconds_text(policy.max_age)
        return f"its list is {age:.0f} s old, older than max_age={limit} s"
    if policy.too_few(entry.nodes) is not None:
        return f"its list has {len(entry.nodes)} node(s), fewer than min_nodes={policy.min_nodes}"
    return None
