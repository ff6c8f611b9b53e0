"""The errors cache_settings raises.

::

    CacheSettingsError
    ├── ConfigurationError   bad URL or argument (also django ImproperlyConfigured)
    ├── SourceError          one attempt failed; .source is the redacted URL
    ├── ResolutionError      no trustworthy node list; .source, .errors (every attempt)
    └── SnapshotError        a snapshot file cannot be read or is malformed
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "CacheSettingsError",
    "ConfigurationError",
    "ResolutionError",
    "SnapshotError",
    "SourceError",
]


class CacheSettingsError(Exception):
    """Raised for every error of cache_settings; catch this to catch them all."""


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
    """Raised when a snapshot file cannot be read or is malformed."""


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


def brief(value: object) -> str:
    """Return *value* for an error message, briefly: a field of a reply may hold megabytes.

    Containers are named, not printed; an integer too long for ``repr()`` (which raises
    past ``sys.get_int_max_str_digits()``) is given by its size; text is cut at 80 characters.
    """
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    return cut(repr(value))


def cut(text: str) -> str:
    """Return *text*, or its first 60 characters and its length when over 80."""
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def close_matches(word: str, known: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Return up to *n* of *known* that resemble *word*, for an error's "did you mean".

    :func:`difflib.get_close_matches`, imported only once an error needs a guess: a
    settings module that raises nothing does not pay for difflib.
    """
    import difflib

    return difflib.get_close_matches(word, list(known), n=n, cutoff=cutoff)
