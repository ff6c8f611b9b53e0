"""Refreshing backends: Django's memcached backends that follow a source's node changes.

A ``CACHES`` entry for these backends is plain data::

    CACHES = {"default": {
        "BACKEND": "cache_settings.backends.PyMemcacheCache",
        "LOCATION": "consul://127.0.0.1:8500/memcached?tag=prod",   # a source URL
        "OPTIONS": {"refresh": 30, "snapshot": "/app/cache-nodes.json"},
    }}

- ``LOCATION`` a source URL (one of :data:`cache_settings.sources.SCHEMES`): the nodes come
  from a per-process watcher of that source (:mod:`cache_settings.watch`). The policy keys
  of ``OPTIONS`` (:data:`cache_settings.policy.OPTION_KEYS`: ``refresh`` (default 60),
  ``snapshot``, ``deadline``, ``attempts``, ``min_nodes``, ``max_age``,
  ``max_reply_size``, ``rejoin``) are removed before Django's client sees ``OPTIONS``; every other
  key goes to the client as with Django's own backend. A source that declares TLS nodes
  gets a verifying ``tls_context`` unless ``OPTIONS`` has one. An unknown scheme is a
  :class:`~cache_settings.ConfigurationError`.
- ``LOCATION`` a list of source URLs: a chain (:mod:`cache_settings.chain`), polled every
  ``refresh`` seconds; the backend follows the first source that answers and moves back
  to an earlier one when it answers again.
- ``LOCATION`` a plain node list (``"h1:11211;h2:11211"``, a list, ``unix:/path``): exactly
  Django's stock backend (the policy keys, if any, are dropped). The rule: an item holding
  ``://`` or starting with ``dns+``, ``dnssrv+`` or ``dnssrvnoa+`` is a source URL
  (:func:`cache_settings.chain.is_source_url`); source URLs mixed with node addresses are
  a :class:`~cache_settings.ConfigurationError`.

``memcached(..., refresh=N)`` writes such an entry with ``LOCATION`` the source's redacted
URL. When that URL is one ``memcached()`` recorded in this process
(:func:`cache_settings.entries.latest`), the backend uses that Source object (with its
token) and starts from its settings-time answer; any other URL is parsed as written and
resolved on first use, bounded by ``deadline`` and falling back to ``snapshot``.

An entry that cannot work (an unknown scheme, a bad policy key, a misspelt URL option) does
not make building the backend fail: Django builds every cache in its own system checks,
before ``cache_settings.checks`` can report it as ``cache_settings.E004`` (one message,
no traceback). The backend keeps the :class:`~cache_settings.ConfigurationError` and
raises it at its first cache operation; ``close()`` does nothing.

Django copies ``CACHES[alias]`` shallowly and builds one backend per thread or async
context from the same ``OPTIONS`` dict, so each backend copies ``OPTIONS`` before it
removes its keys and never changes the shared dict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.cache.backends import memcached
from django.core.cache.backends.base import BaseCache

from . import forking
from .capabilities import cannot_reach
from .chain import as_source, chain_url, source_urls
from .clients import unknown_option
from .entries import latest
from .exceptions import ConfigurationError, ResolutionError
from .nodes import Node
from .policy import DEFAULT_REFRESH, OPTION_KEYS, Policy
from .sources import Source
from .watch import Watcher
from .watchers import get_watcher

logger = logging.getLogger(__name__)

__all__ = ["PyLibMCCache", "PyMemcacheCache"]


class _RefreshingCache(memcached.BaseMemcachedCache):
    """What both refreshing backends add to Django's: the servers may come from a watcher."""

    # Set by Django's BaseMemcachedCache.__init__ (untyped in django-stubs).
    _class: Any
    _options: dict[str, Any]
    _watcher: Watcher | None
    _generation: int
    _client: Any
    _client_pid: int
    _locations: list[str]
    #: Why this entry cannot work: raised at the first cache operation, reported by
    #: system check E004 (cache_settings.checks). None for a working entry.
    cache_settings_error: ConfigurationError | None

    def __init__(self, server: str | Sequence[str], params: dict[str, Any]) -> None:
        params = dict(params)
        given = params.get("OPTIONS") or {}
        params["OPTIONS"] = dict(given) if isinstance(given, Mapping) else {}
        forking.install()  # a forked child never uses or frees a client built before
        self._watcher = None
        self._generation = -1  # no client yet: the first operation builds one
        self._client = None
        self._client_pid = os.getpid()
        self._locations = []
        self.cache_settings_error = None
        try:
            if not isinstance(given, Mapping):
                raise ConfigurationError(
                    f"{self._where}: OPTIONS must be a dict, not {type(given).__name__}"
                )
            found = self._cache_settings_source(server, params)
            if found is not None:
                self._check_client(found[0])
                self._add_tls(found[0], params["OPTIONS"])
                self._watcher = self._watch(*found)
            if self._watcher is not None:
                server = [node.location for node in self._watcher.nodes]
            # The next class in the MRO is Django's PyLibMCCache or PyMemcacheCache, whose
            # __init__ takes (server, params) and imports the client library; mypy sees
            # BaseMemcachedCache's here.
            super().__init__(server, params)  # type: ignore[call-arg]
        except ConfigurationError as exc:
            # Django builds every cache in its own system checks (and for each thread):
            # raising here would be a traceback before our check could say what is wrong.
            self._keep(exc, params)
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != self._library:
                raise  # not the client (a KEY_FUNCTION that does not import, ...)
            missing = ConfigurationError(
                f"{self._where} needs {self._library}, which is not installed; "
                f'pip install "django-cache-settings[{self._library}]"'
            )
            self._keep(missing, params)

    #: The client library Django's backend imports, and the extra that installs it.
    _library = ""

    def _watch(self, source: Source, policy: Policy) -> Watcher:
        """Return this process's watcher of *source*, seeded with its settings-time answer."""
        seed = latest(source.url)
        resolution = seed.resolution if seed is not None and seed.source is source else None
        # A snapshot's config version orders no live answer (it may predate the cluster),
        # and its nodes were not written now: only a live answer gives both.
        live = resolution if resolution is not None and resolution.origin == "live" else None
        return get_watcher(
            source,
            policy,
            nodes=resolution.nodes if resolution is not None else (),
            version=live.version if live is not None else None,
            answered_by=resolution.source if resolution is not None else None,
            written_at=live.fetched_at if live is not None else None,
        )

    def _keep(self, error: ConfigurationError, params: dict[str, Any]) -> None:
        """Be a cache that raises *error* at every operation: never build a client."""
        self.cache_settings_error = error
        self._watcher = None
        # Django's BaseCache only (key prefix, version, timeout): its memcached __init__
        # imports the client library, which may be what is missing.
        BaseCache.__init__(self, params)
        self._servers: list[str] = []
        self._options = {}

    def _cache_settings_source(
        self, server: str | Sequence[str], params: dict[str, Any]
    ) -> tuple[Source, Policy] | None:
        """Return the source and policy of this entry, or None for a plain node list.

        *params* is this backend's own copy, whose ``OPTIONS`` dict this removes the
        policy keys from. Subclasses that accept other settings (``cache_settings.compat``)
        override this to build both from their own keys.
        """
        policy = Policy.from_options(params["OPTIONS"], where=self._where, refresh=DEFAULT_REFRESH)
        urls = source_urls(server, where=self._where)
        if urls is None:
            return None
        # What is left goes to the client, which would refuse a misspelt key ("refesh") only
        # at the first operation, with a TypeError that names neither the entry nor the fix.
        unknown = unknown_option(self._library, params["OPTIONS"], also=OPTION_KEYS)
        if unknown:
            raise ConfigurationError(f"{self._where}: OPTIONS {unknown}")
        seed = latest(urls[0] if len(urls) == 1 else chain_url(urls))
        # The recorded Source object keeps what its redacted URL cannot (a token).
        return (seed.source if seed is not None else as_source(urls)), policy

    @property
    def _where(self) -> str:
        """This backend's dotted path, as messages name it."""
        return f"{type(self).__module__}.{type(self).__name__}"

    def _check_client(self, source: Source) -> None:
        """Refuse a URL that names the other client (``pymemcache://`` under pylibmc)."""
        implied = source.traits.backend
        if implied is not None and implied != self._library:
            other = "PyMemcacheCache" if implied == "pymemcache" else "PyLibMCCache"
            raise ConfigurationError(
                f"{source.url}: the URL asks for {implied} but BACKEND is {self._where}; "
                "use BACKEND "
                f"cache_settings.backends.{other}, or a memcached:// URL"
            )

    def _add_tls(self, source: Source, options: dict[str, Any]) -> None:
        """Give a source's TLS nodes a verifying context, unless OPTIONS has one."""
        tls = source.traits.node_tls
        if tls is not None and "tls_context" not in options:
            options["tls_context"] = tls.context(source.url)

    @property
    def client_servers(self) -> list[str]:
        """The watcher's node list as client addresses, as of this instance's client."""
        if self._watcher is None:
            return list(super().client_servers)
        return self._locations

    # Django's BaseMemcachedCache builds its client once, in the ``_cache``
    # cached_property, and every operation (sync, and async through sync_to_async) goes
    # through ``self._cache``. Overriding that one property, and ``client_servers`` that
    # it reads, is all it takes to swap servers: every operation keeps Django's own code,
    # and the request path gains one integer comparison, no lock, DNS or I/O.
    @property
    def _cache(self) -> Any:
        watcher = self._watcher
        if watcher is not None and self._generation == watcher.generation:
            return self._client  # the request path: one comparison
        if watcher is not None:
            self._rebuild_client(watcher)
            return self._client
        error = self.cache_settings_error
        if error is not None:
            raise error.with_traceback(None)  # the same message at every operation
        # A plain node list: Django's client, built once and kept where Django's
        # cached_property keeps it, so that cache_settings/forking.py detaches it in a
        # forked child exactly as it does Django's own backends' clients.
        client = self.__dict__.get("_cache")
        if client is None:
            client = self._class(self.client_servers, **self._options)
            self.__dict__["_cache"] = client
        return client

    def _rebuild_client(self, watcher: Watcher) -> None:
        watcher.start()  # first use in this process: start (or restart) the watcher
        generation, nodes = watcher.state  # one read: nodes match their generation
        if not nodes:
            # Only a backend without a settings-time answer gets here: its first
            # resolution failed and no snapshot had the nodes. An empty list would reach
            # the client as "empty server list"; say what happened instead.
            error = watcher.error
            raise ResolutionError(
                watcher.url,
                error.errors if error is not None else (),
                f"no memcached nodes yet: the first resolution (up to "
                f"{watcher.policy.deadline:g} s) failed and no snapshot had them; the "
                f"source is asked again within {watcher.refresh:g} s",
            )
        unreachable = self._unreachable(nodes)
        if unreachable:
            # A node the client cannot connect to would fail every key that hashes to it:
            # leave it out (its keys go to the others), and say so when the client is built.
            nodes = tuple(node for node in nodes if node not in unreachable)
            logger.warning(
                "%s: %s cannot connect to %s; serving from the other %d node(s) "
                '(use backend "pymemcache" to reach them)',
                watcher.url,
                self._library,
                ", ".join(node.location for node in unreachable),
                len(nodes),
            )
            if not nodes:
                raise ConfigurationError(
                    f"{watcher.url}: {self._library} cannot connect to any node; "
                    'use backend "pymemcache"'
                )
        old, old_pid = self._client, self._client_pid
        self._locations = [node.location for node in nodes]
        # The same construction as Django's _cache.
        self._client = self._class(self.client_servers, **self._options)
        self._client_pid = os.getpid()
        self._generation = generation
        if old is None:
            return
        if old_pid != self._client_pid:
            forking.release_inherited(old)  # the parent's: send nothing on its connections
        else:
            self._retire_client(old)

    def _unreachable(self, nodes: Sequence[Node]) -> list[Node]:
        """Return the *nodes* this backend's client cannot connect to (none by default)."""
        return []

    def _retire_client(self, client: Any) -> None:
        """Let go of a client built for an older node list in this process.

        Nothing to do for pylibmc: freed, libmemcached closes its connections itself.
        """

    def close(self, **kwargs: Any) -> None:
        """Close the client's connections, as Django's backend does, without asking a source."""
        # Django closes every initialized cache after each request. A backend never used
        # has no client: building one would start a watcher (and perhaps resolve) only to
        # disconnect it, so an unused client is closed without that (_close_unused).
        if self.cache_settings_error is not None:
            return  # no client was ever built; the error is raised by the operations
        if self._watcher is not None and self._client is None:
            self._close_unused(self._watcher)
        else:
            super().close(**kwargs)

    def _close_unused(self, watcher: Watcher) -> None:
        """Close what Django's ``close()`` would for a client not built yet."""


class PyLibMCCache(_RefreshingCache, memcached.PyLibMCCache):
    """Django's ``PyLibMCCache`` whose servers follow a source (``memcached(refresh=N)``)."""

    _library = "pylibmc"

    def __init__(self, server: str | Sequence[str], params: dict[str, Any]) -> None:
        # pylibmc 1.6.3 on Python 3.13 prints 31 "Exception ignored" tracebacks for each
        # client built with behaviors=None (capabilities.py); {} asks for the same.
        given = params.get("OPTIONS") or {}
        if isinstance(given, Mapping):  # else the base class refuses it
            params = {**params, "OPTIONS": {"behaviors": {}, **given}}
        super().__init__(server, params)

    def _unreachable(self, nodes: Sequence[Node]) -> list[Node]:
        # IPv6 literals on libmemcached 1.0 (pylibmc's wheels): capabilities.py measured it.
        return cannot_reach("pylibmc", nodes)

    def _add_tls(self, source: Source, options: dict[str, Any]) -> None:
        if source.traits.node_tls is not None:
            raise ConfigurationError(
                f"{source.url}: pylibmc cannot speak TLS (libmemcached has no TLS); use "
                "BACKEND cache_settings.backends.PyMemcacheCache"
            )


class PyMemcacheCache(_RefreshingCache, memcached.PyMemcacheCache):
    """Django's ``PyMemcacheCache`` whose servers follow a source (``memcached(refresh=N)``).

    ``OPTIONS["tls_context"]`` is passed to every client, before and after a swap.
    """

    _library = "pymemcache"

    def _retire_client(self, client: Any) -> None:
        # Closing the sockets now leaves none for the garbage collector to warn about.
        client.disconnect_all()

    def _close_unused(self, watcher: Watcher) -> None:
        # Django's close() builds the client and disconnects it (BaseMemcachedCache.close);
        # the same, from the nodes known now, without starting the watcher. The client has
        # connected nowhere yet, so this sends nothing.
        nodes = watcher.nodes
        if nodes:
            self._class([node.location for node in nodes], **self._options).disconnect_all()
