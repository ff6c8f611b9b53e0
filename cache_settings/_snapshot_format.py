"""The snapshot file's JSON format: a checked parser and the one way entries are written.

Everything in a snapshot file is untrusted input. :func:`parse` checks it at the boundary
before any of it is used, and turns whatever Python raises while doing so into a
:class:`SnapshotError` that names the file and what was wrong:

- at most :data:`MAX_SIZE` bytes, UTF-8, JSON nested at most :data:`MAX_DEPTH` levels (checked
  on the text before it is parsed, so 100,000 brackets never reach the recursive parser);
- numbers finite (``NaN``, ``Infinity`` and ``1e999`` are refused anywhere in the file);
- ``fetched_at`` Unix time in seconds within ``0..MAX_TIME``; ``version`` null or an integer
  within ``VERSION_MIN..VERSION_MAX`` (a signed or unsigned 64-bit index);
- every node an object with a ``host`` that is a host name or an IP address, as in live
  answers (:func:`cache_settings.nodes.is_host`), a ``port`` integer in 1..65535, an
  optional ``ip`` that is an IP address, an optional boolean ``tls``.

Unknown keys are ignored, so a newer writer may add fields.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from dataclasses import dataclass

from .exceptions import SnapshotError, brief, excerpt
from .nodes import Node, unique_sorted

__all__ = [
    "FORMAT",
    "MAX_DEPTH",
    "MAX_SIZE",
    "MAX_TIME",
    "VERSION_MAX",
    "VERSION_MIN",
    "SnapshotEntry",
    "check_time",
    "check_version",
    "dump",
    "parse",
]

FORMAT = "cache_settings/1"

#: Bytes a snapshot file may hold: about 36,000 nodes with their IPs (115 bytes each).
MAX_SIZE = 4 * 1024 * 1024

#: Levels of JSON nesting a snapshot file may use; the format itself needs five.
MAX_DEPTH = 16

#: The largest ``fetched_at``: 9999-12-31T23:59:59Z, the last second ``datetime`` can show.
MAX_TIME = 253402300799.0

#: The range of ``version``: Consul's index is unsigned 64-bit, other sources' signed.
VERSION_MIN, VERSION_MAX = -(2**63), 2**64 - 1

# A string literal, also one cut off by the end of the text. It always matches from its
# opening quote without backtracking, so stripping strings is linear in the text's length.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST_PAIR = re.compile(r"[\[{][\]}]")


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """The node list of one source as a live answer last confirmed it."""

    source: str
    nodes: tuple[Node, ...]
    fetched_at: float
    version: int | None = None

    def age(self, now: float | None = None) -> float:
        """Return the seconds since ``fetched_at``; 0 if it lies in the future (clock skew)."""
        return max(0.0, (time.time() if now is None else now) - self.fetched_at)


def parse(filename: str, content: bytes) -> dict[str, SnapshotEntry]:
    """Return the entries of a snapshot file's *content*, keyed by source URL.

    Raises:
        SnapshotError: the content is not a valid snapshot, whatever Python raised while
            finding that out; the message starts with *filename* and says what was wrong.
    """
    try:
        return _parse(content)
    except _BadEntry as exc:
        raise SnapshotError(filename, exc.reason, entry=exc.entry) from None
    except ValueError as exc:  # our own descriptions, and json's
        raise SnapshotError(filename, str(exc)) from None
    except Exception as exc:
        # The boundary: nothing but SnapshotError leaves a read (RecursionError, MemoryError,
        # OverflowError... from input no check above foresaw).
        raise SnapshotError(
            filename, f"malformed snapshot ({type(exc).__name__}: {excerpt(str(exc), 80)})"
        ) from exc


def dump(entries: dict[str, SnapshotEntry]) -> bytes:
    """Return *entries* as the bytes of a snapshot file."""
    sources = {
        source: {
            "nodes": [node.as_dict() for node in entry.nodes],
            "fetched_at": entry.fetched_at,
            "fetched": _iso(entry.fetched_at),
            "version": entry.version,
        }
        for source, entry in entries.items()
    }
    data = {"format": FORMAT, "sources": sources}
    # Indented and sorted: snapshot files ship with releases and are read in diffs.
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def check_time(value: object) -> float:
    """Return *value* as ``fetched_at``; raise ValueError unless it is in ``0..MAX_TIME``."""
    # Compared before any conversion: float() of a 400-digit integer raises OverflowError.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_TIME:
        raise ValueError(
            f"'fetched_at' must be Unix time in seconds within 0..{MAX_TIME:.0f}, "
            f"not {brief(value)}"
        )
    return float(value)


def check_version(value: object) -> int | None:
    """Return *value* as ``version``; raise ValueError unless None or an integer in range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"'version' must be an integer or null, not {brief(value)}")
    if not VERSION_MIN <= value <= VERSION_MAX:
        raise ValueError(
            f"'version' must be within {VERSION_MIN}..{VERSION_MAX}, not {brief(value)}"
        )
    return value


class DuplicateKey(ValueError):
    """A JSON object named one key twice: ``json.loads`` would keep the last, silently."""


def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` for ``json.loads`` that refuses a key named twice (DuplicateKey).

    RFC 8259 (section 4) leaves what duplicate names mean to the reader; Python keeps the
    last, so ``{"targets": [a], "targets": [b]}`` would lose ``a`` without a word.
    """
    value = dict(pairs)
    if len(value) == len(pairs):  # the usual case, decided in C: a snapshot has 36,000 objects
        return value
    keys = [key for key, _ in pairs]
    twice = next(key for n, key in enumerate(keys) if key in keys[:n])
    raise DuplicateKey(f"a JSON object names the key {brief(twice)} twice; which is meant?")


def _parse(content: bytes) -> dict[str, SnapshotEntry]:
    if len(content) > MAX_SIZE:
        raise ValueError(f"larger than {MAX_SIZE} bytes; not a snapshot this library wrote")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid JSON (not UTF-8: {exc})") from None
    _check_nesting(text)
    try:
        data = json.loads(
            text,
            object_pairs_hook=unique_keys,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except DuplicateKey:
        raise
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, not {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(f"format is {brief(data.get('format'))}, expected {FORMAT!r}")
    sources = data.get("sources")
    if not isinstance(sources, dict):
        raise ValueError(f"'sources' must be an object, not {brief(sources)}")
    entries = {}
    for source, raw in sources.items():
        try:
            entries[source] = _entry(source, raw)
        except ValueError as exc:
            raise _BadEntry(source, str(exc)) from None
    return entries


class _BadEntry(ValueError):
    """Raised when one entry of the file is malformed: *entry* is its key."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(reason)
        self.entry = entry
        self.reason = reason


def _check_nesting(text: str) -> None:
    # Only brackets outside strings count. Each round removes the innermost pairs, so text
    # nested d levels deep is empty after d rounds; unbalanced text never is.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(MAX_DEPTH):
        if not brackets:
            return
        shorter = _INNERMOST_PAIR.sub("", brackets)
        if shorter == brackets:
            break
        brackets = shorter
    if brackets:
        raise ValueError(
            f"not valid JSON (brackets unbalanced or nested deeper than {MAX_DEPTH} levels)"
        )


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {brief(text)} is out of range")
    return value


def _entry(source: str, raw: object) -> SnapshotEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"must be an object, not {type(raw).__name__}")
    for key in ("nodes", "fetched_at"):
        if key not in raw:
            raise ValueError(f"missing {key!r}")
    nodes = raw["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise ValueError(f"'nodes' must be a non-empty list, not {brief(nodes)}")
    # 'version' may be absent (null); 'fetched' is for humans and never read.
    return SnapshotEntry(
        source=source,
        nodes=unique_sorted(Node.from_dict(node) for node in nodes),
        fetched_at=check_time(raw["fetched_at"]),
        version=check_version(raw.get("version")),
    )


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
