"""One attempt: the only way this package asks a source for its nodes.

``resolve()`` retries :func:`ask` with tenacity within its deadline; the refreshing
backends' watchers loop over it (a Consul blocking query is an attempt with a longer bound,
a poll is the same attempt as at settings time). Here, and only here:

- a source that needs the network is asked through :func:`cache_settings.attempt.run`, so
  its deadline ends the work (sockets shut down, the worker thread returns) and its reply
  is capped at ``Policy.max_reply_size`` bytes;
- any exception a source raises, short of ``KeyboardInterrupt``/``SystemExit``, becomes a
  :class:`SourceError` naming the source (:class:`ConfigurationError` passes through);
- nodes are de-duplicated and sorted, and an answer below ``min_nodes`` is a failure, as is
  a live answer naming an address no node has (``0.0.0.0``, ``::``, a multicast group:
  :func:`cache_settings.nodes.is_nowhere`); a static list is the user's own and is kept.

:func:`save` is the one writer of snapshots after a live answer, and :func:`backoff` the one
back-off strategy (tenacity's wait objects, imported only once a retry is due).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .attempt import Attempt, run
from .exceptions import ConfigurationError, SourceError, excerpt, some
from .nodes import Node, is_nowhere, unique_sorted
from .policy import Policy
from .redact import environment_secrets, scrub
from .sources import Source, WatchableSource

if TYPE_CHECKING:
    from tenacity.wait import wait_base

__all__ = ["Answer", "TooFewNodes", "ask", "backoff", "save", "sleep_for"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One live answer: the nodes, de-duplicated and sorted, the source's version, and when.

    ``version`` is a configuration endpoint's config version or a Consul index, else None;
    ``fetched_at`` the Unix time (seconds) of the answer; ``source`` the redacted URL of
    the source that answered (a chain's member; None when not known).
    """

    nodes: tuple[Node, ...]
    version: int | None = None
    fetched_at: float = field(default_factory=time.time)
    source: str | None = None


class TooFewNodes(SourceError):
    """Raised when a source answered, with fewer nodes than ``min_nodes``.

    ``answer`` is what it said: a watcher still blocks on its Consul index.
    """

    def __init__(self, source: str, reason: str, answer: Answer) -> None:
        super().__init__(source, reason)
        self.answer = answer


def ask(source: Source, policy: Policy, *, timeout: float, index: int | None = None) -> Answer:
    """Ask *source* once, within *timeout* seconds; return its :class:`Answer`.

    With *index* (a source that can block, such as Consul), wait up to *timeout* seconds
    for the answer to move past it.

    Raises:
        SourceError: the attempt failed, ran out of time, or answered too few nodes.
        ConfigurationError: the source cannot be asked as configured.
    """
    if timeout <= 0:
        raise SourceError(source.url, "no time left for an attempt")
    if source.traits.needs_network:
        attempt = Attempt(source.url, timeout, max_reply_size=policy.max_reply_size)
        version, nodes = run(attempt, lambda: _call(source, index, timeout))
    else:
        version, nodes = _call(source, index, timeout)
    answer = Answer(unique_sorted(nodes), version, source=source.url)
    if source.traits.needs_network:
        _check_addresses(source.url, answer.nodes)
    reason = policy.too_few(answer.nodes)
    if reason is not None:
        if not answer.nodes and source.traits.if_empty:
            reason = f"{reason}: {source.traits.if_empty}"
        raise TooFewNodes(source.url, reason, answer)
    return answer


def _check_addresses(source: str, nodes: tuple[Node, ...]) -> None:
    """Raise SourceError when a live answer names an address no node has (see is_nowhere)."""
    texts = [node.host for node in nodes] + [node.ip for node in nodes if node.ip]
    nowhere = [text for text in texts if is_nowhere(text)]
    if nowhere:
        raise SourceError(
            source,
            f"answered {some(nowhere, 'addresses')}, which no memcached node has (0.0.0.0 "
            "and :: reach each client's own host, a multicast group no server); fix the "
            "registration or record that gives it",
        )


def _call(source: Source, index: int | None, timeout: float) -> tuple[int | None, list[Node]]:
    try:
        if isinstance(source, WatchableSource):
            return source.watch(index, timeout)
        return None, source.resolve(timeout)
    except (SourceError, ConfigurationError):
        raise
    except Exception as exc:
        # A source's bug, or a client library's exception it did not expect, must not end
        # settings import or a watcher thread with a foreign exception type.
        # Its secrets masked in every form (a client library may quote a token escaped)
        # before the first line is escaped and cut.
        secrets = [*source.traits.secrets, *environment_secrets()]
        text = scrub(str(exc), secrets).strip().splitlines()
        detail = f": {excerpt(text[0])}" if text else ""
        raise SourceError(source.url, f"unexpected {type(exc).__name__}{detail}") from exc


def save(policy: Policy, source: str, answer: Answer, *, lock_timeout: float | None = None) -> bool:
    """Write a live *answer* of *source* (its redacted URL) to ``policy.snapshot``, if any.

    Return True when written. Never raises for I/O; waits at most *lock_timeout* seconds
    for the snapshot's lock (see :func:`cache_settings.snapshot.write_snapshot`).
    """
    if policy.snapshot is None:
        return False
    from .snapshot import write_snapshot  # not imported by entries without a snapshot

    return write_snapshot(
        policy.snapshot,
        source,
        answer.nodes,
        version=answer.version,
        fetched_at=answer.fetched_at,
        lock_timeout=lock_timeout,
    )


def backoff(cap: float) -> wait_base:
    """Return the wait before a retry: exponential from 0.1 s, at most *cap* s, plus jitter.

    0.1, 0.2, 0.4 … *cap* seconds, plus up to 0.1 s at random, so that processes started
    together do not retry in step. Imports tenacity: call it only once a retry is due.
    """
    from tenacity import wait_exponential, wait_random

    return wait_exponential(multiplier=0.1, max=cap) + wait_random(0, 0.1)


def sleep_for(wait: wait_base | Callable[..., float], attempt_number: int) -> float:
    """Return the seconds *wait* (a tenacity wait object) gives after failure *attempt_number*."""
    from tenacity import RetryCallState, Retrying

    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt_number
    return float(wait(state))
