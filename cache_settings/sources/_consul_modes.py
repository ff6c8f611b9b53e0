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

``max_stale`` bounds how old a stale or cached answer may be, as the agent's ``dns_config``
option of that name does for DNS ("if a Consul server is behind the leader by more than
max_stale, the query will be re-evaluated on the leader"). "Consistency Modes": a stale
answer's ``X-Consul-LastContact`` is the milliseconds since its server last heard from the
leader. "Agent Caching": a background-refreshed answer's ``Age`` is the seconds since the
agent lost contact with the servers (0 while its blocking query keeps it fresh).
"""

from __future__ import annotations

import math
import re

from ..exceptions import ConfigurationError, brief

__all__ = [
    "CONSISTENCY",
    "MAX_WAIT",
    "check_max_stale",
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
    seconds = _seconds(wait)
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


def check_max_stale(
    max_stale: float | None, consistency: str, cached: bool, *, where: str
) -> float | None:
    """Return *max_stale* in whole milliseconds (seconds), or raise ConfigurationError.

    It bounds stale reads, so it needs ``consistency="stale"`` or ``cached``; it is a
    positive, finite number of seconds.
    """
    if max_stale is None:
        return None
    if consistency != "stale" and not cached:
        raise ConfigurationError(
            f"{where}: max_stale bounds stale answers, and this source asks the leader; add "
            "consistency=stale or cached=true, or drop max_stale"
        )
    seconds = _seconds(max_stale)
    if seconds is None or not 0.001 <= seconds < math.inf:
        raise ConfigurationError(
            f"{where}: max_stale={brief(max_stale)} must be a number of seconds, at least 0.001"
        )
    return round(seconds, 3)


def _seconds(value: object) -> float | None:
    """Return a number of seconds as a float (inf past float's range); None if not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)  # an int past float's range raises OverflowError
    except OverflowError:
        return math.inf
    return seconds if not math.isnan(seconds) else None


def parse_wait(text: str, *, where: str, option: str = "wait") -> float:
    """Return a duration option in seconds: ``"30"`` (seconds), ``"30s"``, ``"5m"``, ``"1m30s"``.

    Raise ConfigurationError naming *option* and the value when it is neither.
    """
    value = text.strip()
    try:
        return float(value) if _SECONDS.fullmatch(value) else _go(value)
    except ValueError:
        raise ConfigurationError(
            f"{where}: option {option}={brief(text)} must be seconds or a duration such as 30s, "
            "5m, 1m30s"
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


def url_params(
    consistency: str, cached: bool, wait: float | None, max_stale: float | None = None
) -> list[tuple[str, str]]:
    """Return the ``consistency=``, ``cached=``, ``wait=`` and ``max_stale=`` URL options."""
    params = [("consistency", consistency)] if consistency != "default" else []
    params += [("cached", "true")] if cached else []
    params += [("wait", go_duration(wait))] if wait is not None else []
    return params + ([("max_stale", go_duration(max_stale))] if max_stale is not None else [])


def staleness(headers: object) -> float | None:
    """Return how old a stale or cached answer is, in seconds, from its headers; None if unsaid.

    The larger of a cache hit's ``Age`` (seconds) and ``X-Consul-LastContact``
    (milliseconds), of those the agent sent as decimal integers.
    """
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ages = []
    for name, unit in (("Age", 1.0), ("X-Consul-LastContact", 0.001)):
        text = get(name)
        if isinstance(text, str) and text.strip().isascii() and text.strip().isdigit():
            digits = text.strip()
            ages.append(int(digits) * unit if len(digits) <= 20 else math.inf)
    return max(ages, default=None)
