"""Refreshing backends: Django's memcached backends that follow a source's node changes.

``memcached(..., refresh=N)`` selects these and puts the source under
``OPTIONS["cache_settings"]``::

    {"source": Source, "refresh": 30.0, "min_nodes": 1, "snapshot": "/app/nodes.json",
     "deadline": 5.0, "attempts": 3, "nodes": (Node, ...), "version": 12}

``nodes`` and ``version`` are the settings-time answer the watcher starts from. Django
copies ``CACHES[alias]`` shallowly and builds one backend per thread or async context
from the same ``OPTIONS`` dict, so each backend copies ``OPTIONS`` without that key and
never changes the shared dict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.core.cache.backends import memcached

from .exceptions import ConfigurationError, ResolutionError
from .settings import CONFIG_KEY
from .watch import Watcher, get_watcher

__all__ = ["CONFIG_KEY", "PyLibMCCache", "PyMemcacheCache"]


# pylibmc clients inherited through fork(): freeing one would make libmemcached send
# "quit" on connections the parent still uses, so a child keeps them instead (one per
# backend instance per fork, and only once the node list or the process changed).
_inherited: list[Any] = []


class _RefreshingCache(memcached.BaseMemcachedCache):
    """What both refreshing backends add to Django's: the servers come from a watcher."""

    # Set by Django's BaseMemcachedCache.__init__ (untyped in django-stubs).
    _class: Any
    _options: dict[str, Any]
    _watcher: Watcher
    _generation: int
    _client: Any
    _client_pid: int
    _locations: list[str]

    def __init__(self, server: str | Sequence[str], params: dict[str, Any]) -> None:
        params = dict(params)
        params["OPTIONS"] = dict(params.get("OPTIONS") or {})
        config = self._cache_settings_config(server, params)
        params["OPTIONS"].pop(CONFIG_KEY, None)
        # The next class in the MRO is Django's PyLibMCCache or PyMemcacheCache, whose
        # __init__ takes (server, params); mypy sees BaseMemcachedCache's here.
        super().__init__(server, params)  # type: ignore[call-arg]
        self._watcher = _watcher_for(config)
        self._generation = -1  # no client yet: the first operation builds one
        self._client = None
        self._client_pid = os.getpid()
        self._locations = []

    def _cache_settings_config(
        self, server: str | Sequence[str], params: dict[str, Any]
    ) -> dict[str, Any]:
        """Return the watcher's configuration (the dict ``memcached(refresh=N)`` writes).

        Subclasses that accept other settings (``cache_settings.compat``) override this to
        build it from LOCATION and OPTIONS: *params* is this backend's own copy, whose
        ``OPTIONS`` dict they may change (remove their own keys). Without ``nodes`` the
        first use resolves once, bounded by ``deadline``, falling back to ``snapshot``.
        """
        config = params["OPTIONS"].get(CONFIG_KEY)
        if not isinstance(config, dict) or "source" not in config:
            raise ConfigurationError(
                f"{type(self).__module__}.{type(self).__name__} needs OPTIONS[{CONFIG_KEY!r}]; "
                "build the CACHES entry with cache_settings.memcached(..., refresh=SECONDS)"
            )
        return config

    @property
    def client_servers(self) -> list[str]:
        """The watcher's node list as client addresses, as of this instance's client."""
        return self._locations

    # Django's BaseMemcachedCache builds its client once, in the ``_cache``
    # cached_property, and every operation (sync, and async through sync_to_async) goes
    # through ``self._cache``. Overriding that one property, and ``client_servers`` that
    # it reads, is all it takes to swap servers: every operation keeps Django's own code,
    # and the request path gains one integer comparison, no lock, DNS or I/O.
    @property
    def _cache(self) -> Any:
        if self._generation != self._watcher.generation:
            self._rebuild_client()
        return self._client

    def _rebuild_client(self) -> None:
        watcher = self._watcher
        watcher.start()  # first use in this process: start (or restart) the watcher
        generation, nodes = watcher.state  # one read: nodes match their generation
        if not nodes:
            # Only a backend configured without a settings-time answer (compat) gets here:
            # its first resolution failed and no snapshot had the nodes. An empty list
            # would reach the client as "empty server list"; say what happened instead.
            error = watcher.error
            raise ResolutionError(
                watcher.url,
                error.errors if error is not None else (),
                f"no memcached nodes yet: the first resolution (up to {watcher.deadline:g} s) "
                f"failed and no snapshot had them; the source is asked again within "
                f"{watcher.refresh:g} s",
            )
        old, old_pid = self._client, self._client_pid
        self._locations = [node.location for node in nodes]
        # The same construction as Django's _cache.
        self._client = self._class(self.client_servers, **self._options)
        self._client_pid = os.getpid()
        self._generation = generation
        if old is not None:
            self._retire_client(old, inherited=old_pid != self._client_pid)

    def _retire_client(self, client: Any, *, inherited: bool) -> None:
        """Let go of a client built for an older node list (or in the parent process)."""

    def close(self, **kwargs: Any) -> None:
        """Close the client's connections; a backend never used has none to close."""
        # Django closes every initialized cache after each request; building a client
        # (and starting a watcher, perhaps resolving) only to disconnect it helps no one.
        if self._client is not None:
            super().close(**kwargs)


class PyLibMCCache(_RefreshingCache, memcached.PyLibMCCache):
    """Django's ``PyLibMCCache`` whose servers follow a source (``memcached(refresh=N)``)."""

    def _retire_client(self, client: Any, *, inherited: bool) -> None:
        # Freed here, libmemcached closes its connections (after a "quit"); in a forked
        # child those connections are the parent's too, so the client is kept instead.
        if inherited:
            _inherited.append(client)


class PyMemcacheCache(_RefreshingCache, memcached.PyMemcacheCache):
    """Django's ``PyMemcacheCache`` whose servers follow a source (``memcached(refresh=N)``).

    ``OPTIONS["tls_context"]`` is passed to every client, before and after a swap.
    """

    def _retire_client(self, client: Any, *, inherited: bool) -> None:
        # Closing pymemcache sockets sends nothing, so it is safe in a forked child too,
        # and leaves no socket for the garbage collector to warn about.
        client.disconnect_all()


def _watcher_for(config: dict[str, Any]) -> Watcher:
    refresh = config.get("refresh")
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or not refresh > 0:
        raise ConfigurationError(
            f"OPTIONS[{CONFIG_KEY!r}]['refresh'] must be a positive number of seconds, "
            f"not {refresh!r}"
        )
    return get_watcher(
        config["source"],
        refresh=float(refresh),
        min_nodes=config.get("min_nodes", 1),
        snapshot=config.get("snapshot"),
        deadline=config.get("deadline", 5.0),
        attempts=config.get("attempts", 3),
        nodes=config.get("nodes") or (),
        version=config.get("version"),
    )
