"""This process's watchers: one per source and policy, stopped at exit, carried across ``fork``.

The refreshing backends ask :func:`get_watcher` for the watcher of their source; tests and
the interpreter's exit stop them all with :func:`stop_all`.

Entries that watch one source with the same policy share a watcher, and the shortest
``refresh`` among them is used: each would otherwise ask the source for the same answer.
Entries whose policies differ otherwise (``min_nodes``, ``snapshot``, ``rejoin``,
``max_age``, ...) get a watcher each, so that each gets the guards it asked for: a shared
one applied the first entry's policy to all, so a ``min_nodes=2`` entry took a one-node
list and its snapshot was never written.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import replace

from .nodes import Node
from .policy import Policy
from .sources import Source
from .watch import Watcher

__all__ = ["get_watcher", "stop_all", "watchers"]

EXIT_JOIN = 0.5  # seconds, in total, to join watcher threads at interpreter exit

# Keyed by the source's URL and the policy without its refresh (which the entries share).
_registry: dict[tuple[str, Policy], Watcher] = {}
_registry_lock = threading.Lock()


def get_watcher(
    source: Source,
    policy: Policy,
    *,
    nodes: Iterable[Node] = (),
    version: int | None = None,
    answered_by: str | None = None,
    written_at: float | None = None,
) -> Watcher:
    """Return this process's watcher of *source* under *policy*, made on first request.

    Keyed by the source's URL and *policy* apart from its ``refresh``: entries that differ
    only there share one watcher, which polls at the shortest ``refresh`` (seconds) of
    them from the moment an entry asks (a wait under way is cut short). *nodes*,
    *version* and *answered_by* (the URL of the source, or chain member, that gave
    them) are the settings-time answer to start from; *written_at* is when
    (``time.time()``) it was written to the snapshot, if live. The watcher is not
    started: backends start it on first use.
    """
    key = (source.url, replace(policy, refresh=None))
    with _registry_lock:
        watcher = _registry.get(key)
        if watcher is None:
            watcher = _registry[key] = Watcher(
                source,
                policy,
                nodes=nodes,
                version=version,
                answered_by=answered_by,
                written_at=written_at,
            )
        elif policy.refresh is not None:
            watcher.poll_within(policy.refresh)
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
        watcher._signal_stop()
    deadline = time.monotonic() + timeout
    return all([watcher.stop(max(0.0, deadline - time.monotonic())) for watcher in stopping])


def _stop_at_exit() -> None:
    Watcher.exiting = True
    stop_all(EXIT_JOIN)


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for watcher in _registry.values():
        watcher._after_fork_in_child()


atexit.register(_stop_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
