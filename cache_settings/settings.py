"""memcached(): one Django ``CACHES`` entry for the nodes of a source."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, ParamSpec, TypedDict, cast

from .attempt import DEFAULT_MAX_REPLY_SIZE
from .chain import as_source, members, written_urls
from .clients import BACKENDS, choose_client, client_defaults
from .entries import Entry, is_collecting, management_command, record, report
from .exceptions import (
    CacheSettingsError,
    ConfigurationError,
    ResolutionError,
    brief,
    close_matches,
)
from .forking import install as _install_fork_guard
from .policy import Policy, Rejoin, as_path
from .redact import url_secrets
from .resolve import resolve_with
from .sources import Source
from .tls import TLSConfig

__all__ = ["BACKENDS", "REFRESHING_BACKENDS", "CacheConfig", "client_defaults", "memcached"]

logger = logging.getLogger(__name__)

Backend = Literal["pylibmc", "pymemcache"]
OnFailure = Literal["raise", "locmem", "dummy"]


class CacheConfig(TypedDict, total=False):
    """One entry of Django's ``CACHES`` setting, as :func:`memcached` returns it."""

    BACKEND: str
    LOCATION: list[str] | str
    OPTIONS: dict[str, Any]
    TIMEOUT: float | None
    KEY_PREFIX: str
    VERSION: int
    KEY_FUNCTION: str | Callable[..., str]


# refresh=N: the subclasses that follow the source's changes at run time.
REFRESHING_BACKENDS: dict[str, str] = {
    "pylibmc": "cache_settings.backends.PyLibMCCache",
    "pymemcache": "cache_settings.backends.PyMemcacheCache",
}
_FALLBACKS: dict[str, str] = {
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
    "dummy": "django.core.cache.backends.dummy.DummyCache",
}

P = ParamSpec("P")


def _reported_under_check(make: Callable[P, CacheConfig]) -> Callable[P, CacheConfig]:
    # Under `manage.py check`, an error of memcached() becomes system check E003 (under
    # `manage.py cache_nodes`, the command's error): one message with the cause and what to
    # do, instead of an exception that Python prints with Django's traceback before any check
    # or command can run. Everywhere else it is raised, as documented.
    @functools.wraps(make)
    def memcached(*args: P.args, **kwargs: P.kwargs) -> CacheConfig:
        try:
            _check_positional(args, kwargs)
            return make(*args, **kwargs)
        except CacheSettingsError as exc:
            if management_command() is None or _as_backend(args):
                raise
            # Registers E003 also when "cache_settings" is not in INSTALLED_APPS.
            from . import checks  # noqa: F401

            report(exc)
            return _fallback("dummy", exc.source if isinstance(exc, ResolutionError) else "", {})

    return memcached


def _as_backend(args: tuple[object, ...]) -> bool:
    # Django builds a BACKEND as backend(LOCATION, params), params a dict of the other keys.
    return len(args) == 2 and isinstance(args[1], Mapping)


def _check_positional(args: tuple[object, ...], kwargs: Mapping[str, object]) -> None:
    # Python's TypeError ("takes 1 positional argument but 2 were given") names neither the
    # mistake nor the fix, and under `manage.py check` it is a traceback.
    if _as_backend(args):
        raise ConfigurationError(
            "cache_settings.memcached is not a BACKEND: it returns a whole CACHES entry; "
            "write CACHES = {'default': cache_settings.memcached('consul:///memcached', ...)}, "
            "or BACKEND 'cache_settings.backends.PyLibMCCache' (or PyMemcacheCache) with the "
            "source URL as LOCATION"
        )
    if len(args) > 1:
        extra = ", ".join(brief(arg) for arg in args[1:])
        raise ConfigurationError(
            f"memcached() takes the source as its only positional argument, and got "
            f"{len(args) - 1} more ({extra}); pass the others by keyword, "
            "as snapshot=PATH, refresh=SECONDS, ..."
        )
    if not args and "source" not in kwargs:
        raise ConfigurationError(
            "memcached() needs the source as its first argument, "
            "as memcached('consul:///memcached') or memcached('memcached://HOST:PORT')"
        )


def _fallback(kind: str, source: str, django: CacheConfig) -> CacheConfig:
    entry: CacheConfig = {"BACKEND": _FALLBACKS[kind], "LOCATION": f"cache_settings:{source}"}
    entry.update(django)
    return entry


@_reported_under_check
def memcached(
    source: str | Source | Sequence[str | Source],
    *,
    backend: Backend | None = None,
    snapshot: str | os.PathLike[str] | None = None,
    attempts: int = 3,
    deadline: float = 5.0,
    max_age: float | None = None,
    min_nodes: int = 1,
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    on_failure: OnFailure = "raise",
    refresh: float | None = None,
    rejoin: Rejoin = "flush",
    options: Mapping[str, Any] | None = None,
    **django_keys: Any,
) -> CacheConfig:
    """Return one CACHES entry for the memcached nodes of *source*.

    *source* is a URL (``consul:///memcached?tag=prod``, ``elasticache://…``,
    ``elasticache-api://…``, ``memcached://h1,h2``) or a Source object, or a list of
    them: a chain, asked in order, whose first live answer wins
    (:mod:`cache_settings.chain`). The nodes are resolved now, as
    :func:`cache_settings.resolve` does, with *attempts*, *deadline* (seconds),
    *snapshot*, *max_age* (seconds), *min_nodes* and *max_reply_size* (bytes).

    Args:
        backend: ``"pylibmc"`` (the default) or ``"pymemcache"`` (the default,
            and the only choice, when the nodes speak TLS).
        on_failure: ``"raise"`` raises :class:`ResolutionError`; ``"locmem"`` and
            ``"dummy"`` log the error and return a working local cache instead.
        refresh: seconds; selects a refreshing backend
            (:mod:`cache_settings.backends`) that follows the source's changes at run
            time: Consul by blocking queries, other sources polled every *refresh*
            seconds ± 10 % (a chain is always polled). The entry is then plain data:
            ``LOCATION`` is the source's redacted URL (a chain: the list of its members'
            URLs) and the policy sits in ``OPTIONS`` (see :mod:`cache_settings.policy`).
        rejoin: with *refresh*, what happens to a node that returns to the list after
            leaving it: ``"flush"`` (the default) sends it ``flush_all`` before it takes
            keys again, so it never serves values from before it left; ``"keep"`` uses
            it as it is (see :mod:`cache_settings.rejoin`).
        options: the entry's ``OPTIONS``; each key overrides our defaults, and a
            ``behaviors`` dict is merged key by key.
        django_keys: ``timeout`` (seconds, or None: never expire), ``key_prefix`` (str),
            ``version`` (int), ``key_function`` (a callable or its dotted path); each is
            checked as Django reads it, which it does only when it builds the backend.

    Raises:
        ResolutionError: with ``on_failure="raise"``, when neither the source nor the
            snapshot gave a node list.
        ConfigurationError: an invalid URL or argument.

    Under ``manage.py check`` neither is raised: each becomes system check
    ``cache_settings.E003``, and the entry a dummy cache. Under ``manage.py cache_nodes``
    no source is asked here (the command asks each one itself) and an error is the
    command's.
    """
    src = as_source(source)
    policy = Policy(
        attempts,
        deadline,
        min_nodes,
        max_age,
        as_path(snapshot),
        refresh,
        max_reply_size,
        rejoin,
    )
    django = _django_keys(django_keys)
    if on_failure not in ("raise", "locmem", "dummy"):
        raise ConfigurationError(
            f"on_failure must be 'raise', 'locmem' or 'dummy', not {brief(on_failure)}"
        )
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError(f"options must be a dict, not {type(options).__name__}")
    tls = src.traits.node_tls
    chosen, _ = choose_client(src, backend, tls, (), options or {})
    secrets = tuple(secret for url in written_urls(source) for secret in url_secrets(url))
    if is_collecting():
        # The command line (cache-settings --settings, manage.py cache_nodes) only learns the
        # entries here; its verbs ask each source and report each failure themselves.
        record(Entry(src, policy, chosen, None, secrets))
        return _fallback("dummy", src.url, django)
    try:
        resolution = resolve_with(src, policy, in_settings=True)
    except ResolutionError as exc:
        record(Entry(src, policy, chosen, None, secrets, exc))
        if on_failure == "raise":
            raise
        if management_command() != "check":  # there, system check W005 says it
            logger.error("%s; using a %s cache instead of memcached", exc, on_failure)
        return _fallback(on_failure, src.url, django)

    if tls is None and any(node.tls for node in resolution.nodes):
        # A serverless cache: the source learnt only now that its endpoint speaks TLS.
        tls = src.traits.node_tls_if_needed or TLSConfig()
    # The nodes are known now: a client that cannot reach one of them is not chosen.
    chosen, entry_options = choose_client(src, backend, tls, resolution.nodes, options or {})
    record(Entry(src, policy, chosen, resolution, secrets))
    if tls is not None:
        entry_options.setdefault("tls_context", tls.context(src.url))
    entry: CacheConfig = {
        "BACKEND": BACKENDS[chosen],
        "LOCATION": resolution.locations,
        "OPTIONS": entry_options,
    }
    if refresh is not None:
        # Plain data that cache_settings.backends reads and removes before Django's client
        # sees OPTIONS. The backend finds the Source object (and its token) and this
        # settings-time answer again through cache_settings.entries, by the URL.
        entry["BACKEND"] = REFRESHING_BACKENDS[chosen]
        urls = [member.url for member in members(src)]
        entry["LOCATION"] = urls[0] if len(urls) == 1 else urls
        entry_options.update(policy.as_options())
    entry.update(django)
    # A forked child must not use or free the clients built from this entry before the
    # fork: cache_settings/forking.py detaches them in the child.
    _install_fork_guard()
    return entry


_DJANGO_KEYS = {
    "timeout": "TIMEOUT",
    "key_prefix": "KEY_PREFIX",
    "version": "VERSION",
    "key_function": "KEY_FUNCTION",
}


def _django_keys(given: Mapping[str, Any]) -> CacheConfig:
    unknown = sorted(set(given) - set(_DJANGO_KEYS))
    if unknown:
        # A misspelt argument of memcached() itself lands here too: name the closest of all.
        known = [*inspect.signature(memcached).parameters, *_DJANGO_KEYS]
        known = [name for name in known if name not in ("source", "django_keys")]
        guesses = [
            ["source"] if name.lower() == "location" else close_matches(name.lower(), known, n=1)
            for name in unknown
        ]
        named = ", ".join(
            f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
            for name, close in zip(unknown, guesses, strict=True)
        )
        hint = "" if all(guesses) else f"; it takes {', '.join(known)}"
        if any(name != name.lower() for name in unknown):
            hint += "; Django's keys (TIMEOUT, KEY_PREFIX, ...) are written in lower case here"
        raise ConfigurationError(f"memcached() got unknown argument(s) {named}{hint}")
    for key, value in given.items():
        _check_django_key(key, value)
    return cast(CacheConfig, {_DJANGO_KEYS[key]: value for key, value in given.items()})


def _check_django_key(key: str, value: Any) -> None:
    # Django reads these only when it builds the backend, and reads some of them leniently:
    # BaseCache.__init__ turns a TIMEOUT that int() refuses into 300 seconds without a word,
    # and a VERSION or KEY_FUNCTION of the wrong type fails at the first cache operation.
    if key == "timeout":
        number = value
        if isinstance(value, str):  # Django applies int(): "300" works, "5m" does not
            try:
                number = int(value)
            except ValueError:
                number = None
        if value is None or (
            isinstance(number, int | float)
            and not isinstance(number, bool)
            and math.isfinite(number)
        ):
            return
        problem = "seconds (a number; 0 expires at once) or None (never expires)"
    elif key == "version":
        if isinstance(value, int) and not isinstance(value, bool):
            return
        problem = "an integer (Django adds to it for incr_version)"
    elif key == "key_prefix":
        if isinstance(value, str):
            return
        problem = "a string"
    else:  # key_function
        if callable(value) or (isinstance(value, str) and value.strip()):
            return
        problem = "a callable or the dotted path of one, e.g. 'mysite.cache.make_key'"
    raise ConfigurationError(f"memcached(): {key} must be {problem}, not {brief(value)}")
