"""Policy: how hard to ask a source, how long to wait, and what answer to trust.

One frozen value, validated once, taken by ``memcached()``, ``resolve()``, the refreshing
backends and their watchers, ``cache_settings.compat`` and the command line. In a
``CACHES`` entry of a refreshing backend it is plain data under these ``OPTIONS`` keys
(:data:`OPTION_KEYS`), which the backend removes before Django's client sees ``OPTIONS``::

    "OPTIONS": {"refresh": 30, "snapshot": "/app/cache-nodes.json", "deadline": 5,
                "attempts": 3, "min_nodes": 1, "max_age": 86400,
                "max_reply_size": 33554432, "rejoin": "flush"}
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .attempt import DEFAULT_MAX_REPLY_SIZE
from .exceptions import ConfigurationError, brief
from .nodes import Node

__all__ = [
    "DEFAULT_REFRESH",
    "MAX_SECONDS",
    "OPTION_KEYS",
    "Policy",
    "Rejoin",
    "as_path",
    "check_count",
    "check_seconds",
    "seconds_text",
]

#: Seconds between polls when a refreshing backend's ``OPTIONS`` name no ``refresh``; AWS's
#: own Auto Discovery clients poll once a minute. Consul is followed by blocking queries.
DEFAULT_REFRESH = 60.0

#: The longest duration a policy takes, in seconds (365 days): longer than any sensible
#: deadline, poll interval or snapshot age, and short enough that every deadline and wait
#: computed from it stays a valid time (``threading.TIMEOUT_MAX`` is about 9.2e9 s on
#: Linux; waits are also clamped to it, see :func:`cache_settings.attempt.wait_time`).
MAX_SECONDS = 365 * 86400.0

#: What a watcher does with a node that returns to its list (cache_settings.rejoin).
Rejoin = Literal["flush", "keep"]
REJOIN_POLICIES: tuple[Rejoin, ...] = ("flush", "keep")


@dataclass(frozen=True, slots=True)
class Policy:
    """How one source is asked and what is trusted; every duration in seconds.

    Attributes:
        attempts: attempts per resolution (retried with back-off), at least 1.
        deadline: seconds all attempts of one resolution may take together.
        min_nodes: a live answer or snapshot with fewer nodes is a failure.
        max_age: seconds a snapshot entry stays trusted; None trusts any age.
        snapshot: path of the last-known-good JSON file, or None.
        refresh: seconds between polls of a refreshing backend; None: no refreshing.
        max_reply_size: bytes one reply may hold before the attempt fails.
        rejoin: ``"flush"`` (the default): a refreshing backend's watcher sends
            ``flush_all`` to a node that returns to the list before it takes keys again,
            so it never serves values from before it left; ``"keep"``: use it as it is.

    Raises:
        ConfigurationError: a value of the wrong type, not positive, or a duration above
            :data:`MAX_SECONDS`.
    """

    attempts: int = 3
    deadline: float = 5.0
    min_nodes: int = 1
    max_age: float | None = None
    snapshot: str | None = None
    refresh: float | None = None
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE
    rejoin: Rejoin = "flush"

    def __post_init__(self) -> None:
        if self.rejoin not in REJOIN_POLICIES:
            raise ConfigurationError(
                f"rejoin must be 'flush' (flush a node that returns to the list) or 'keep', "
                f"not {brief(self.rejoin)}"
            )
        check_count(self.attempts, "attempts")
        check_count(self.min_nodes, "min_nodes")
        check_count(self.max_reply_size, "max_reply_size", unit=" of bytes")
        object.__setattr__(self, "deadline", check_seconds(self.deadline, "deadline"))
        for name in ("max_age", "refresh"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_seconds(value, name, optional=True))
        if self.snapshot is not None:
            object.__setattr__(self, "snapshot", _snapshot_path(self.snapshot))

    @classmethod
    def from_options(
        cls, options: MutableMapping[str, Any], *, where: str, refresh: float | None = None
    ) -> Policy:
        """Remove the policy keys from a ``CACHES`` entry's *options* and return the policy.

        Absent keys keep their defaults (*refresh* for ``refresh``). *where* names the
        entry in error messages. A number written as text (``"30"``), as settings read
        from the environment or a ``CACHE_URL`` give it, is read as that number.
        """
        given = {key: _number(key, options.pop(key)) for key in OPTION_KEYS if key in options}
        given.setdefault("refresh", refresh)
        try:
            return cls(**given)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: OPTIONS {exc}") from None

    def as_options(self) -> dict[str, Any]:
        """Return the keys of ``OPTIONS`` that hold this policy: plain, JSON-ready data.

        ``refresh`` is always there; the other keys only when they differ from the default.
        """
        defaults = _DEFAULT
        values = asdict(self)
        return {
            key: value
            for key, value in values.items()
            if key == "refresh" or value != getattr(defaults, key)
        }

    def too_few(self, nodes: tuple[Node, ...]) -> str | None:
        """Return why *nodes* are too few to trust (below ``min_nodes``), or None."""
        if len(nodes) >= self.min_nodes:
            return None
        return f"answered {len(nodes)} node(s), fewer than min_nodes={self.min_nodes}"


def check_seconds(value: object, name: str, *, optional: bool = False) -> float:
    """Return *value* as float seconds, or raise :class:`ConfigurationError`.

    *value* must be a positive int or float of at most :data:`MAX_SECONDS`: booleans,
    strings, zero, negative numbers, ``inf``, ``nan`` and longer durations are refused.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        # The range first: math.isfinite() raises OverflowError on an int past float's range.
        or not 0 < value <= MAX_SECONDS
        or not math.isfinite(value)
    ):
        also = ", or None" if optional else ""
        raise ConfigurationError(
            f"{name} must be a positive number of seconds, at most {MAX_SECONDS:.0f} "
            f"(365 days){also}, not {brief(value)}"
        )
    return float(value)


def seconds_text(value: float) -> str:
    """Return a duration in seconds as messages print it: ``86400``, ``0.5``, ``2592000``."""
    return f"{value:.15g}"


def check_count(value: object, name: str, *, unit: str = "") -> int:
    """Return *value*; raise :class:`ConfigurationError` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer{unit}, not {brief(value)}")
    return value


# The OPTIONS keys that hold numbers, and how text is read as one.
_NUMBERS = {
    "attempts": int,
    "min_nodes": int,
    "max_reply_size": int,
    "deadline": float,
    "max_age": float,
    "refresh": float,
}


def _number(key: str, value: Any) -> Any:
    # Text that is not a number stays text: the policy's check then says what it must be.
    read = _NUMBERS.get(key)
    if read is None or not isinstance(value, str):
        return value
    try:
        return read(value.strip())
    except ValueError:
        return value


def as_path(value: str | os.PathLike[str] | None) -> str | None:
    """Return a ``snapshot=`` argument as text for :class:`Policy`, which checks it."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _snapshot_path(value: object) -> str:
    # snapshot.py refuses what no snapshot can live at (a directory, a link, a NUL); the
    # path is kept as given, so that messages and the CLI show what the settings say.
    from ._snapshot_path import check_snapshot_path

    if not isinstance(value, str | os.PathLike):
        raise ConfigurationError(
            "snapshot must be the path of a JSON file (str or os.PathLike) or None, "
            f"not {brief(value)}"
        )
    check_snapshot_path(value)
    return os.fspath(value)


#: The ``OPTIONS`` keys of a refreshing backend that hold the policy, never passed to a client.
OPTION_KEYS = tuple(sorted(field.name for field in fields(Policy)))
_DEFAULT = Policy()
