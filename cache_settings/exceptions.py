"""The errors cache_settings raises.

::

    CacheSettingsError
    ├── ConfigurationError   bad URL or argument (also django ImproperlyConfigured)
    ├── SourceError          one attempt failed; .source is the redacted URL
    ├── ResolutionError      no trustworthy node list; .source, .errors (every attempt)
    └── SnapshotError        a snapshot file cannot be read or is malformed
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """Raised when one attempt to ask a source for its nodes fails."""

    def __init__(self, source: str, reason: str, *, permanent: bool = False) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.permanent = permanent


class ResolutionError(CacheSettingsError):
    """Raised when no trustworthy node list can be had: every attempt failed and no snapshot."""

    def __init__(self, source: str, errors: Sequence[BaseException], detail: str = "") -> None:
        causes = "; ".join(
            f"attempt {n}: {getattr(e, 'reason', None) or e}" for n, e in enumerate(errors, 1)
        )
        message = f"{source}: no node list could be resolved"
        if causes:
            message += f" ({causes})"
        if detail:
            message += f"; {detail}"
        super().__init__(message)
        self.source = source
        self.errors = tuple(errors)


class SnapshotError(CacheSettingsError):
    """Raised when a snapshot file cannot be read or is malformed."""
