"""What the ``cache-settings`` verbs print: tables, JSON and log lines, every secret masked."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from .exceptions import LONGEST_MESSAGE, one_line
from .redact import Scrubber, environment_secrets, url_secrets
from .sources import Source

__all__ = [
    "CHECK_COLUMNS",
    "PROBE_COLUMN",
    "PROG",
    "RESOLVE_COLUMNS",
    "SHOW_COLUMNS",
    "Column",
    "Output",
    "Stream",
    "age",
    "logging_to",
    "secrets",
    "table",
]

PROG = "cache-settings"

# A table column: its header, and how one result dict becomes its cell.
Column = tuple[str, Callable[[dict[str, Any]], str]]


class Stream(Protocol):
    """Where text goes: ``sys.stdout``, or a management command's ``OutputWrapper``."""

    def write(self, text: str, /) -> object: ...


class Output:
    """Writes text and JSON, with every known secret masked."""

    def __init__(self, stdout: Stream, stderr: Stream, secrets: Iterable[str]) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self._scrubber = Scrubber(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Mask *secrets* too from now on."""
        self._scrubber.add(secrets)

    def scrub(self, text: str) -> str:
        """Return *text* with every known secret, URL user info and secret option masked."""
        return self._scrubber.scrub(text)

    def _scrubbed(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self._scrubbed(key): self._scrubbed(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrubbed(item) for item in value]
        return value

    def out(self, text: str) -> None:
        """Write one line to standard output."""
        self.stdout.write(self.scrub(text) + "\n")

    def err(self, text: str) -> None:
        """Write one line to standard error: printable, whatever a path or reply in it held."""
        self.stderr.write(one_line(self.scrub(text), 2 * LONGEST_MESSAGE) + "\n")

    def report(
        self,
        as_json: bool,
        data: dict[str, Any],
        rows: Sequence[dict[str, Any]],
        columns: Sequence[Column],
    ) -> None:
        """Print *data* as JSON, or else *rows* as a table of *columns* (nothing if none)."""
        if as_json:
            # Every string is masked before it is serialised, not after: json.dumps escapes
            # it again, and an escaped form of a secret escaped once more (an agent quoted
            # the token as JSON does) is no form the scrubber knows.
            self.out(json.dumps(self._scrubbed(data), indent=2))
        elif rows:
            cells = [[cell(row) for _, cell in columns] for row in rows]
            self.out(table([header for header, _ in columns], cells))


def secrets(url: str | Sequence[str] | None = None, sources: Iterable[Source] = ()) -> list[str]:
    """Return the secrets in the environment, in the source *url* (or URLs), of *sources*."""
    found = environment_secrets()
    for text in [url] if isinstance(url, str) else url or []:
        found += url_secrets(text)
    for source in sources:
        found += source.traits.secrets
    return found


class _ScrubbingFormatter(logging.Formatter):
    def __init__(self, output: Output) -> None:
        super().__init__(f"{PROG}: %(levelname)s: %(message)s")
        self.output = output

    def format(self, record: logging.LogRecord) -> str:
        return self.output.scrub(super().format(record))


@contextlib.contextmanager
def logging_to(output: Output, verbose: bool) -> Iterator[None]:
    """Send the package's log lines to *output*'s stderr while the block runs."""
    # resolve() logs each retry and fallback. The summary already names every attempt's
    # cause, so only --verbose shows them (masked like everything else); logging is left
    # as it was afterwards.
    level = logging.INFO if verbose else logging.ERROR
    handler = logging.StreamHandler(output.stderr)
    handler.setFormatter(_ScrubbingFormatter(output))
    handler.setLevel(level)
    package = logging.getLogger("cache_settings")
    old_level = package.level
    package.addHandler(handler)
    if verbose:
        package.setLevel(level)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return *rows* under *headers*, each column padded to its widest cell.

    A cell's characters that are not printable are escaped (``\\n``, ``\\x1b``): a snapshot
    path or a host from a file must not start a row of its own or drive the terminal.
    """
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def age(seconds: float) -> str:
    """Return *seconds* as a short age: ``45s``, ``3m``, ``5h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _nodes(row: dict[str, Any]) -> str:
    return ", ".join(row["locations"]) or "-"


def _version(row: dict[str, Any]) -> str:
    return "-" if row["version"] is None else str(row["version"])


def _snapshot(row: dict[str, Any]) -> str:
    return row["snapshot"] or "-"


RESOLVE_COLUMNS: tuple[Column, ...] = (
    ("SOURCE", lambda row: row["source"]),
    ("STATUS", lambda row: row["status"]),
    ("NODES", _nodes),
    ("VERSION", _version),
    ("SNAPSHOT", _snapshot),
)
SHOW_COLUMNS: tuple[Column, ...] = (
    ("SOURCE", lambda row: row["source"]),
    ("NODES", _nodes),
    ("AGE", lambda row: "-" if row["age_seconds"] is None else age(row["age_seconds"])),
    ("VERSION", _version),
    ("STATUS", lambda row: row["status"]),
    ("SNAPSHOT", _snapshot),
)
CHECK_COLUMNS: tuple[Column, ...] = (
    ("SOURCE", lambda row: row["source"]),
    ("STATUS", lambda row: row["status"]),
    ("DETAIL", lambda row: row["detail"]),
    ("SNAPSHOT", _snapshot),
)


def _probe(row: dict[str, Any]) -> str:
    probes = row.get("probe")
    if not probes:
        return "-"
    missed = sum(1 for p in probes if p["error"] is not None)
    return f"{missed} of {len(probes)} silent" if missed else f"{len(probes)} answered"


# Added to the resolve and check tables by --probe.
PROBE_COLUMN: Column = ("PROBE", _probe)
