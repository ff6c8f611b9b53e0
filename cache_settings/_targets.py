"""What the ``cache-settings`` verbs act on: one :class:`Target` per ``memcached()`` entry.

The entries come from importing a settings module offline (:func:`load_settings`), or from
the calls ``manage.py cache_nodes`` saw Django's own settings import make.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured

from .entries import Entry, collecting, entries, recorded
from .exceptions import CacheSettingsError, ConfigurationError
from .policy import Policy
from .resolve import offline
from .sources import Source
from .tls import TLSConfig

__all__ = [
    "SettingsTargets",
    "Target",
    "UsageError",
    "check_tls",
    "load_settings",
    "targets_from_entries",
]


class UsageError(Exception):
    """Raised for a bad combination of arguments: exit status 2."""


@dataclass(frozen=True, slots=True)
class Target:
    """One source to resolve, show or check, with the policy ``memcached()`` was given.

    ``secrets`` are values from the URL the source was written as, masked in all output.
    """

    source: Source
    policy: Policy = field(default_factory=Policy)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_entry(cls, entry: Entry) -> Target:
        """Return the target of one recorded ``memcached()`` call."""
        return cls(entry.source, entry.policy, entry.secrets)


@dataclass(frozen=True, slots=True)
class SettingsTargets:
    """The targets a settings module declares, and why the list may be incomplete."""

    targets: tuple[Target, ...]
    problems: tuple[str, ...] = ()


def targets_from_entries(recorded: Iterable[Entry]) -> list[Target]:
    """Return one target per distinct (source, snapshot file), in settings order."""
    seen: dict[tuple[str, str | None], Target] = {}
    for entry in recorded:
        seen.setdefault((entry.source.url, entry.policy.snapshot), Target.from_entry(entry))
    return list(seen.values())


def check_tls(settings: Iterable[tuple[str, TLSConfig | None]]) -> None:
    """Build each pair's TLS context, as ``memcached()`` does when the site starts.

    *settings* pairs a redacted source URL with its nodes' TLS settings (None: skipped).
    Raises UsageError (exit status 2: a settings mistake) naming each source whose ``ca=``,
    ``cert=`` or ``key=`` cannot be loaded, and the fix.
    """
    # At start-up this failure is a ConfigurationError (system check E003 under manage.py
    # check): a pre-deploy run that passed would ship a release that cannot start.
    failures: dict[str, None] = {}
    for where, tls in settings:
        if tls is not None:
            try:
                tls.context(where)
            except ConfigurationError as exc:
                failures[str(exc)] = None
    if failures:
        raise UsageError("; ".join(failures))


def load_settings(module: str) -> SettingsTargets:
    """Import the settings *module* and return the targets its ``memcached()`` calls record.

    The module is imported inside :func:`cache_settings.resolve.offline` (as with
    ``CACHE_SETTINGS_OFFLINE=1``) and :func:`cache_settings.entries.collecting`, so the
    import contacts no source and records every entry, even those whose snapshot is
    missing; the verbs then ask each source. Both hold for this thread only: neither
    ``os.environ`` nor logging is changed for the rest of the process.
    """
    start = recorded()
    with offline(), collecting(), _fresh_modules(module):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
                raise UsageError(
                    f"--settings: cannot import {module!r} ({exc}); run from the directory "
                    "that holds it, as manage.py does, or add that directory to PYTHONPATH"
                ) from exc
            raise UsageError(f"--settings: importing {module} failed: {_describe(exc)}") from exc
        except CacheSettingsError as exc:
            # A memcached() argument or URL: its message says what to fix.
            raise UsageError(f"--settings {module}: {exc}") from exc
        except Exception as exc:
            # The settings themselves are broken (a missing variable, a bad import): say
            # so in one line, with the usage status, not as a source failure.
            raise UsageError(f"--settings: importing {module} failed: {_describe(exc)}") from exc
    return SettingsTargets(tuple(targets_from_entries(entries(since=start))))


def _describe(exc: BaseException) -> str:
    """Say what *exc* says, with its type where the message alone would not tell."""
    # Django's ImproperlyConfigured (our ConfigurationError too) is written for the reader;
    # a KeyError's message is only the missing key.
    text = str(exc)
    if isinstance(exc, ImproperlyConfigured) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _fresh_modules(module: str) -> Iterator[None]:
    # The settings module runs its memcached() calls only when executed, so it is imported
    # afresh, as are its submodules and siblings (settings/base.py beside settings/prod.py); they
    # are forgotten afterwards so the next import runs them again. Other packages stay loaded.
    parent = module.rpartition(".")[0]

    def ours(name: str) -> bool:
        return (
            name == module
            or name.startswith(module + ".")
            or bool(parent and name.startswith(parent + "."))
        )

    saved = {name: mod for name, mod in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    # Like ``python -m``: the current directory is importable, as it is for manage.py. The
    # entry added is the one removed: settings that chdir (to BASE_DIR, say) would otherwise
    # leave it in sys.path and remove an entry of the same name as their new directory.
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
