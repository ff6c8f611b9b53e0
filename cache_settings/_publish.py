"""What a watcher does with each answer: the guards, then publishing a new node list.

Split from :mod:`cache_settings.watch`, whose :class:`~cache_settings.watch.Watcher` mixes
in :class:`Publishing`; the module docstring there says what each guard is for. Everything
here runs on the watcher's thread (and once at start-up, for the settings-time answer).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import NamedTuple

from .ask import Answer, save
from .chain import is_earlier
from .exceptions import CacheSettingsError, SourceError
from .nodes import Node
from .policy import Policy
from .rejoin import Rejoins
from .signals import nodes_changed
from .sources import Source

__all__ = ["Publishing", "State"]

# The watcher's messages keep the logger name they always had.
logger = logging.getLogger("cache_settings.watch")

#: Answers in a row with a lower config version than the one in use after which the lower
#: one is followed: a lagging endpoint node answers so for moments, a cluster recreated
#: under the same name (its versions start again at 1) for good.
OLDER_LIMIT = 5
#: Seconds after which an unchanged live answer is written to the snapshot again, so that its
#: ``fetched_at`` (when a live source last confirmed the list, which ``max_age`` measures)
#: stays fresh on a stable fleet; half of ``max_age`` when that is shorter. One write per
#: interval per process at most: a thousand processes at 300 s are about three a second.
CONFIRM_INTERVAL = 300.0


class State(NamedTuple):
    """What a watcher publishes: its change counter and the node list it belongs to."""

    generation: int
    nodes: tuple[Node, ...]


class Publishing:
    """The guards and the publishing of :class:`~cache_settings.watch.Watcher`."""

    # Set by Watcher.__init__ and _init_process.
    source: Source
    url: str
    policy: Policy
    state: State
    generation: int
    version: int | None
    answered_by: str | None
    _failing: bool
    _stale_logged: int | None
    _older_answers: int
    _confirmed_at: float  # time.monotonic() of this watcher's last snapshot write that happened
    _rejoins: Rejoins
    _write_lock: threading.RLock
    _changed: threading.Condition

    def _publish(self, answer: Answer, *, ordered: bool) -> None:
        # A log handler or a snapshot write that raises must not end the watch: the thread
        # is the only thing that keeps this process's node list current.
        try:
            self._offer(answer, ordered=ordered)
        except Exception:
            logger.exception("%s: watcher: error while publishing a node list", self.url)

    def _offer(self, answer: Answer, *, ordered: bool, write: bool = True) -> bool:
        """Publish *answer* if it passes the guards and differs; return True on a change.

        A chain that moved to another member with the same nodes sends ``nodes_changed``
        (empty ``added`` and ``removed``) and returns False: no new generation.

        ``ask()`` already refused an answer below ``min_nodes``.
        """
        nodes, version = answer.nodes, answer.version
        answered_by = answer.source or self.url
        with self._write_lock:
            current = self.state
            moved = self._follow(answered_by)
            # docs/sources.md, "ElastiCache configuration endpoint": never apply a lower config
            # version (logged once).
            if ordered and _older(version, self.version):
                self._older_answers += 1
                if self._older_answers < OLDER_LIMIT:
                    if self._stale_logged != version:
                        self._stale_logged = version
                        logger.warning(
                            "%s: ignoring an answer with config version %s, older than %s",
                            self.url,
                            version,
                            self.version,
                        )
                    return False
                # Never locked out for good: the source is the authority on its nodes.
                logger.warning(
                    "%s: config version went back from %s to %s for %d answers in a row "
                    "(a cluster recreated under the same name?); following it",
                    self.url,
                    self.version,
                    version,
                    self._older_answers,
                )
            self._older_answers = 0
            if self._failing:
                self._failing = False
                logger.info("%s: source recovered with %d node(s)", self.url, len(nodes))
            if version is not None:
                self.version = version
            if nodes != current.nodes:
                # Flushes the nodes that return, on this thread, before they are published.
                admitted = self._rejoins.admit(current.nodes, nodes, self.policy)
                if admitted is None:
                    return False
                nodes = admitted
                answer = replace(answer, nodes=nodes)
            if nodes == current.nodes and not moved:
                if write and self._confirm_due():
                    self._save(answered_by, answer)
                return False
            old, new = set(current.nodes), set(nodes)
            added = tuple(node for node in nodes if node not in old)
            removed = tuple(node for node in current.nodes if node not in new)
            # Another chain member with the same nodes: signalled, but no new generation.
            state = current if nodes == current.nodes else State(current.generation + 1, nodes)
            self.state = state
            self.generation = state.generation
        if state is not current:
            with self._changed:
                self._changed.notify_all()
            logger.info(
                "%s: nodes changed (generation %d), added %s, removed %s",
                self.url,
                state.generation,
                ", ".join(node.location for node in added) or "none",
                ", ".join(node.location for node in removed) or "none",
            )
        if write:
            self._save(answered_by, answer)
        # The sender is the Watcher class (README, "Refreshing backends").
        for receiver, result in nodes_changed.send_robust(
            type(self),
            source=self.url,
            nodes=nodes,
            added=added,
            removed=removed,
            generation=state.generation,
            version=version,
            answered_by=answered_by,
        ):
            if isinstance(result, Exception):
                logger.error("%s: nodes_changed receiver %r raised %r", self.url, receiver, result)
        return state is not current

    def _confirm_due(self) -> bool:
        """True when the snapshot's entry should be written again for an unchanged answer."""
        if self.policy.snapshot is None:
            return False
        max_age = self.policy.max_age
        interval = CONFIRM_INTERVAL if max_age is None else min(CONFIRM_INTERVAL, max_age / 2)
        return time.monotonic() - self._confirmed_at >= interval

    def _save(self, answered_by: str, answer: Answer) -> None:
        # Only a write that happened confirms the entry: one that failed (it logged why) is
        # tried again at the next unchanged answer, not an interval later.
        if save(self.policy, answered_by, answer):
            self._confirmed_at = time.monotonic()

    def _follow(self, answered_by: str) -> bool:
        """Note which source answered; return True when a chain moved to another member.

        Called under the write lock. Versions of different members never compare: the
        one in use is forgotten on a move.
        """
        previous, self.answered_by = self.answered_by, answered_by
        if previous is None or previous == answered_by:
            return False
        self.version = None
        self._stale_logged = None
        self._older_answers = 0
        back = is_earlier(self.source, answered_by, previous)
        # Back to an earlier member is a recovery (INFO); on to a later one, a fallback.
        logger.log(
            logging.INFO if back else logging.WARNING,
            "%s: %s %s (was %s)",
            self.url,
            "back to" if back else "moved on to",
            answered_by,
            previous,
        )
        return True

    def _failed(self, error: CacheSettingsError) -> None:
        reason = error.reason if isinstance(error, SourceError) else str(error)
        with self._write_lock:
            first = not self._failing
            self._failing = True
        if first:
            # Without a list the first resolution failed, and said so (Watcher._prime).
            logger.warning(
                "%s: source failed (%s); keeping the last good %d node(s) until it recovers",
                self.url,
                reason,
                len(self.state.nodes),
            )
        else:
            logger.debug("%s: source still failing (%s)", self.url, reason)


def _older(version: int | None, current: int | None) -> bool:
    return version is not None and current is not None and version < current
