"""The errors cache_settings raises.

::

    CacheSettingsError
    ├── ConfigurationError   bad URL or argument (also django ImproperlyConfigured)
    ├── SourceError          one attempt failed; .source is the redacted URL
    ├── ResolutionError      no trustworthy node list; .source, .errors (every attempt)
    └── SnapshotError        a snapshot file cannot be read or is malformed; .path, .reason
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "CacheSettingsError",
    "ConfigurationError",
    "ResolutionError",
    "SnapshotError",
    "SourceError",
]


#: The longest message (characters) an error of this package prints; see CacheSettingsError.
LONGEST_MESSAGE = 2000


class CacheSettingsError(Exception):
    """Raised for every error of cache_settings; catch this to catch them all.

    Its message is one printable line of at most :data:`LONGEST_MESSAGE` characters,
    whatever a setting, file or reply it quotes held: each message quotes its values
    briefly (:func:`brief`), and this is the guarantee behind them. A longer message keeps
    its head (the value and where) and its tail (the fix).
    """

    def __str__(self) -> str:
        return one_line(super().__str__(), LONGEST_MESSAGE)


class ConfigurationError(CacheSettingsError, ImproperlyConfigured):
    """Raised when a URL, a setting or an argument is invalid."""


class SourceError(CacheSettingsError):
    """Raised when one attempt to ask a source for its nodes fails.

    ``permanent`` marks a failure no retry can change (an unknown host name, a server that
    is not what the URL says, a refused permission): ``resolve()`` does not retry it.
    """

    def __init__(self, source: str, reason: str, *, permanent: bool = False) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.permanent = permanent


class ResolutionError(CacheSettingsError):
    """Raised when no trustworthy node list can be had: every attempt failed and no snapshot.

    The message says each distinct cause once, with how many attempts it ended
    (``3 attempts: connection refused``), then *detail*: why no snapshot stood in, and
    what to do. ``errors`` holds every attempt's exception.
    """

    def __init__(self, source: str, errors: Sequence[BaseException], detail: str = "") -> None:
        message = f"{source}: no node list could be resolved"
        if errors:
            message += f" ({_summary(source, errors)})"
        if detail:
            message += f"; {detail}"
        super().__init__(message)
        self.source = source
        self.errors = tuple(errors)


class SnapshotError(CacheSettingsError):
    """Raised when a snapshot file cannot be read or is malformed.

    ``path`` is the file and ``reason`` what is wrong with it; ``entry`` is the key (a
    source URL, from the file) of the one entry to blame, else None; ``readable`` is False
    when the file could not be read at all, True when what it holds is not a snapshot.
    """

    def __init__(
        self, path: str, reason: str, *, entry: str | None = None, readable: bool = True
    ) -> None:
        self.path = path
        self.reason = reason
        self.entry = entry
        self.readable = readable
        super().__init__(f"{path}: {self.detail}")

    @property
    def detail(self) -> str:
        """Return the message without the path: ``entry 'consul:///mc': <reason>``."""
        return (
            f"entry {brief(self.entry)}: {self.reason}" if self.entry is not None else self.reason
        )


def _summary(source: str, errors: Sequence[BaseException]) -> str:
    # Causes that differ only in a number (a duration, a port) are one cause; each is said
    # once, in the order first seen, with a count when it ended more than one attempt. A
    # chain's causes name the member they came from.
    first: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for error in errors:
        member, reason = "", str(error)
        if isinstance(error, SourceError):
            member = "" if error.source == source else f"{error.source}: "
            reason = error.reason
        key = member + re.sub(r"\d+(\.\d+)?", "#", reason)
        first.setdefault(key, member + reason)
        counts[key] += 1
    head = f"{len(errors)} attempt{'s' if len(errors) > 1 else ''}"
    if len(first) == 1:
        return f"{head}: {next(iter(first.values()))}"
    causes = [
        f"{text} ({counts[key]} times)" if counts[key] > 1 else text for key, text in first.items()
    ]
    return f"{head}: {'; '.join(causes)}"


T = TypeVar("T")

_WORD = re.compile(r"[\w.:/@+-]{1,64}")


def brief(value: object, limit: int = 80) -> str:
    """Return *value* for an error message, briefly: a field of a reply may hold megabytes.

    Containers are named, not printed; an integer too long for ``repr()`` (which raises
    past ``sys.get_int_max_str_digits()``) is given by its size; text is ``repr()``'d, so a
    newline or a terminal escape in it cannot forge a log line, and cut at *limit* characters.
    A refused value may be a source URL given to the wrong argument: its user info and
    ``token=`` options are masked (:func:`cache_settings.redact.scrub`). An object whose
    ``repr()`` raises is named by its type.
    """
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # a user's object: its repr() is no reason to raise something else
        return f"a {type(value).__qualname__} object"
    from .redact import scrub

    return cut(scrub(text), limit)


def cut(text: str, limit: int = 80) -> str:
    """Return *text*, or its first ``limit - 20`` characters and its length when over *limit*."""
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def excerpt(text: str, limit: int = 300) -> str:
    """Return free text of a reply (a server's error message) for a message, on one line.

    Runs of white space become one space, any other character that is not printable is
    escaped as ``repr()`` escapes it (quotes are left as they are), and the result is cut at
    *limit* characters. Mask secrets first (:mod:`cache_settings.redact`): a cut could
    split one.
    """
    flat = " ".join(text.split())
    if flat.isprintable():
        return cut(flat, limit)
    shown = _escaped(flat[:limit])  # only what can be shown: megabytes cost no loop
    if len(flat) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[: limit - 20]}... ({len(flat)} characters)"


def one_line(text: str, limit: int) -> str:
    """Return *text* on one printable line of at most *limit* characters, head and tail kept.

    Runs of white space become one space and other characters that are not printable are
    escaped, as :func:`excerpt` does; but a cut removes the middle, since a message names
    the value and where first and says the fix last.
    """
    flat = " ".join(text.split())
    if len(flat) <= limit and flat.isprintable():
        return flat
    size = len(flat)
    if size > 2 * limit:  # only what can be shown is escaped: megabytes cost no loop
        flat = flat[:limit] + flat[-limit:]
    shown = _escaped(flat)
    if size <= limit and len(shown) <= limit:
        return shown
    marker = f" ... ({size:,} characters) ... "
    head = (limit - len(marker)) * 2 // 3
    tail = limit - len(marker) - head
    return f"{shown[:head]}{marker}{shown[len(shown) - tail :]}"


def _escaped(text: str) -> str:
    """Return *text* with each character that is not printable escaped as ``repr()`` does."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def word(value: object) -> str:
    """Return *value* bare when it is one short word (an id, a status), else :func:`brief`.

    A word is at most 64 letters, digits and ``_ . : / @ + -``: nothing that could end a
    line, open a quote or pass for the message's own words. ``cluster mc (available)``
    reads better than ``cluster 'mc' ('available')``; anything else is repr'd and cut.
    """
    if isinstance(value, str) and _WORD.fullmatch(value):
        return value
    return brief(value)


def some(values: Iterable[T], noun: str, *, most: int = 3, show: Callable[[T], str] = brief) -> str:
    """Return a few of *values* for a message: ``3 of 2,000 sources: 'a', 'b', 'c', ...``.

    Each value is shown by *show* (:func:`brief`: repr'd and cut); all of them when there
    are at most *most* (``2 sources: 'a', 'b'``). *noun* is the plural.
    """
    shown: list[str] = []
    count = 0
    for value in values:
        count += 1
        if count <= most:
            shown.append(show(value))
    head = f"{count:,} {noun}" if count <= most else f"{most} of {count:,} {noun}"
    return f"{head}: {', '.join(shown)}{', ...' if count > most else ''}"


def close_matches(word: str, known: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Return up to *n* of *known* that resemble *word*, for an error's "did you mean".

    :func:`difflib.get_close_matches`, imported only once an error needs a guess: a
    settings module that raises nothing does not pay for difflib.
    """
    import difflib

    return difflib.get_close_matches(word, list(known), n=n, cutoff=cutoff)
