"""How the Consul source reads: consistency mode, the agent's cache, the blocking query's wait.

Consul API docs, "Consistency Modes": a read is ``default`` (the leader answers; no
parameter), ``stale`` (any server answers; ``?stale``) or ``consistent`` (the leader first
confirms with a quorum; ``?consistent``). "Agent Caching": ``?cached`` has the local agent
answer from its cache, which ``/v1/health/service`` keeps fresh with one background blocking
query of its own ("background refresh"; its queries to the servers are always stale
reads); "Combining ``?cached`` with ``?consistent`` is an error", and the agent answers 400.
"Blocking Queries": ``wait`` is at most 10 minutes, Consul adds up to ``wait / 16`` of
jitter, and is written as a Go duration (``"10s"``, ``"5m"``). Consul reads ``stale``,
``consistent`` and ``cached`` by their presence, whatever their value, so they are sent
only when asked for.
"""

from __future__ import annotations

import math
import re

from ..exceptions import ConfigurationError, brief

__all__ = [
    "CONSISTENCY",
    "MAX_WAIT",
    "check_modes",
    "go_duration",
    "mode_params",
    "parse_wait",
    "url_params",
]

#: The consistency modes of Consul's read API, ``default`` first.
CONSISTENCY = ("default", "stale", "consistent")
#: The longest ``wait`` Consul honours, in seconds ("Blocking Queries": 10 minutes).
MAX_WAIT = 600.0
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_SECONDS = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # ASCII digits only, as Consul's
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def check_modes(consistency: str, cached: bool, wait: float | None, *, where: str) -> float | None:
    """Return *wait* in whole milliseconds (seconds); raise ConfigurationError for a bad mode.

    *consistency* must be one of :data:`CONSISTENCY`; ``cached`` with ``consistent`` is
    refused as Consul refuses it; *wait* is seconds from 0.001 to :data:`MAX_WAIT`.
    """
    if consistency not in CONSISTENCY:
        raise ConfigurationError(
            f"{where}: consistency={brief(consistency)} must be one of {', '.join(CONSISTENCY)}"
        )
    if not isinstance(cached, bool):
        raise ConfigurationError(f"{where}: cached={brief(cached)} must be True or False")
    if cached and consistency == "consistent":
        raise ConfigurationError(
            f"{where}: cached=true cannot go with consistency=consistent: Consul refuses "
            "?cached with ?consistent (its cache answers without asking the leader); drop "
            "one of them (with cached=true the agent's own queries are stale reads anyway)"
        )
    if wait is None:
        return None
    seconds = None
    if not isinstance(wait, bool) and isinstance(wait, int | float):
        try:
            seconds = float(wait)  # an int past float's range raises OverflowError
        except OverflowError:
            seconds = math.inf
    if seconds is None or not math.isfinite(seconds):
        raise ConfigurationError(
            f"{where}: wait={brief(wait)} must be a number of seconds, from 0.001 to {MAX_WAIT:g}"
        )
    if not 0.001 <= seconds <= MAX_WAIT:
        raise ConfigurationError(
            f"{where}: wait={brief(wait)} must be from 0.001 to {MAX_WAIT:g} seconds (1ms to "
            "10m): Consul holds a blocking query at most 10 minutes"
        )
    return round(seconds, 3)


def parse_wait(text: str, *, where: str) -> float:
    """Return the ``wait=`` option in seconds: ``"30"`` (seconds), ``"30s"``, ``"5m"``, ``"1m30s"``.

    Raise ConfigurationError naming the value when it is neither.
    """
    value = text.strip()
    try:
        return float(value) if _SECONDS.fullmatch(value) else _go(value)
    except ValueError:
        raise ConfigurationError(
            f"{where}: option wait={brief(text)} must be seconds or a duration such as 30s, 5m, "
            "1m30s"
        ) from None


def _go(text: str) -> float:
    """Return a Go duration of ``ms``, ``s``, ``m`` and ``h`` parts in seconds."""
    if not text or _DURATION.sub("", text):
        raise ValueError(text)
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


def go_duration(seconds: float) -> str:
    """Return *seconds* as the Go duration Consul reads: ``"27s"``, or ``"1500ms"``."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def mode_params(consistency: str, cached: bool) -> list[tuple[str, str]]:
    """Return the query parameters of a mode: ``stale`` or ``consistent``, and ``cached``."""
    params = [(consistency, "")] if consistency != "default" else []
    return [*params, ("cached", "")] if cached else params


def url_params(consistency: str, cached: bool, wait: float | None) -> list[tuple[str, str]]:
    """Return the ``consistency=``, ``cached=`` and ``wait=`` options of a canonical URL."""
    params = [("consistency", consistency)] if consistency != "default" else []
    params += [("cached", "true")] if cached else []
    return params + ([("wait", go_duration(wait))] if wait is not None else [])
