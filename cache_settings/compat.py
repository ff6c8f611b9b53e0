"""Drop-in backends for sites configured for django-elasticache or django-memcached-consul.

Only ``BACKEND`` changes; every other key of the ``CACHES`` entry is read as the old
package read it (django-elasticache 1.0.3, gusdan/django-elasticache@5f93c06;
django-memcached-consul 0.2.0, criteo/django-memcached-consul@c2c4402)::

    django_elasticache.memcached.ElastiCache         -> cache_settings.compat.ElastiCache
    django_memcached_consul.memcached.MemcachedCache -> cache_settings.compat.ConsulMemcachedCache

Both are :class:`cache_settings.backends.PyLibMCCache`: the nodes are resolved on the
first cache operation (never at import, nor when Django builds the backend: its system
checks build every cache), bounded by a deadline and falling back to a snapshot file, and
then follow the source from a watcher thread. Until a first list exists, every operation
raises :class:`ResolutionError` at once, never a cache on no servers.

Our own optional keys, in ``OPTIONS`` of either backend (upper case, as
``IGNORE_CLUSTER_ERRORS``): ``REFRESH`` (seconds between polls, default 60, or
``CONSUL_TTL``), ``SNAPSHOT`` (path of the last-known-good JSON file) and ``DEADLINE``
(seconds the first resolution may take, default 5); seconds may be written as text
(``"30"``). A key of the old packages that is accepted but not honoured is reported with a
:class:`UserWarning`, never ignored silently. Settings that cannot work do not stop Django
from building the backend: ``manage.py check`` reports them (``cache_settings.E004``) and
every cache operation raises :class:`SettingsError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from django.core.cache import InvalidCacheBackendError

from .backends import PyLibMCCache
from .clients import _merge_options, client_defaults
from .exceptions import ConfigurationError, brief, close_matches, cut, some
from .nodes import Node, is_host, parse_node, parse_port
from .policy import DEFAULT_REFRESH, Policy, check_seconds
from .redact import redact_address, scrub
from .sources import Source
from .sources.config_endpoint import ConfigEndpoint
from .sources.consul import Consul

__all__ = ["SNAPSHOT_NAME", "ConsulMemcachedCache", "ElastiCache", "SettingsError"]

logger = logging.getLogger(__name__)

#: File name of the snapshot kept in the directory of a ``CONSUL_CACHE`` file-based cache.
#: FileBasedCache lists, culls and clears only ``*.djcache`` files, so it never touches it.
SNAPSHOT_NAME = "cache_settings_nodes.json"

# pylibmc.Client(servers, behaviors=None, binary=False, username=None, password=None):
# the keys Django's PyLibMCCache passes as arguments; any other key is a behavior.
_CLIENT_ARGUMENTS = frozenset({"behaviors", "binary", "username", "password"})
# python-memcached 1.59 memcache.Client.__init__ arguments, which Django's MemcachedCache
# (django-memcached-consul's base) passed from OPTIONS; pylibmc has none of them.
_PYTHON_MEMCACHED_OPTIONS = frozenset(
    {
        "debug", "pickleProtocol", "pickler", "unpickler", "compressor", "decompressor",
        "pload", "pid", "server_max_key_length", "server_max_value_length", "dead_retry",
        "socket_timeout", "cache_cas", "flush_on_reconnect", "check_keys",
    }
)  # fmt: skip
#: The OPTIONS keys of both backends that are ours, not pylibmc's (_CompatCache._policy).
_OWN_KEYS = ("REFRESH", "SNAPSHOT", "DEADLINE")
_FILE_BASED = "django.core.cache.backends.filebased.FileBasedCache"
_LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


class SettingsError(ConfigurationError, InvalidCacheBackendError):
    """Raised when the old settings cannot work, at the first cache operation.

    A :class:`~cache_settings.ConfigurationError` that is also Django's
    ``InvalidCacheBackendError``, which the old packages raised; ``manage.py check``
    reports it as ``cache_settings.E004``.
    """


class _CompatCache(PyLibMCCache):
    """What both drop-ins add to the refreshing backend: OPTIONS REFRESH, SNAPSHOT and DEADLINE."""

    def _policy(self, params: dict[str, Any], *, refresh: float) -> Policy:
        """Pop REFRESH, SNAPSHOT and DEADLINE from OPTIONS; return the policy they make."""
        options: dict[str, Any] = params["OPTIONS"]
        values = {
            "refresh": _seconds(options.pop("REFRESH", refresh), "OPTIONS['REFRESH']"),
            "deadline": _seconds(options.pop("DEADLINE", 5.0), "OPTIONS['DEADLINE']"),
            "snapshot": options.pop("SNAPSHOT", None),
        }
        try:
            return Policy(**values)
        except ConfigurationError as exc:
            raise SettingsError(f"{type(self).__name__}: OPTIONS {exc}") from None


class ElastiCache(_CompatCache):
    """django-elasticache's ``ElastiCache`` settings on a refreshing pylibmc backend.

    ``LOCATION`` is the cluster's configuration endpoint (``HOST:PORT``, exactly one).
    ``OPTIONS["IGNORE_CLUSTER_ERRORS"]`` uses a plain memcached server there as the only
    node. Every other ``OPTIONS`` key is a pylibmc behavior, flat as the old package
    took them, or a ``pylibmc.Client`` argument (``behaviors``, ``binary``, ``username``,
    ``password``) as Django takes them; our bounded client defaults sit under them.
    The node list is polled every ``OPTIONS["REFRESH"]`` seconds (default 60).
    """

    def _cache_settings_source(
        self, server: str | Sequence[str], params: dict[str, Any]
    ) -> tuple[Source, Policy]:
        where = f"{__name__}.ElastiCache"
        endpoint = _one_endpoint(server, where)
        options: dict[str, Any] = params["OPTIONS"]
        ignore = options.pop("IGNORE_CLUSTER_ERRORS", False)
        if not isinstance(ignore, bool):
            # The old package tested its truth value; its README shows "[True,False]".
            warnings.warn(
                f"{where}: OPTIONS['IGNORE_CLUSTER_ERRORS'] should be True or False, not "
                f"{cut(scrub(repr(ignore)))}; read as {bool(ignore)}",
                UserWarning,
                stacklevel=2,
            )
        if "BINARY" in params:
            # django-elasticache set params["BINARY"] but built its client without
            # binary=True, so its sites always spoke the text protocol, as these do.
            warnings.warn(
                f"{where}: the BINARY key is ignored (django-elasticache never passed it to "
                "pylibmc either): the text protocol is used, since libmemcached 1.0's binary "
                "mode breaks incr/decr on missing keys and touch; OPTIONS={'binary': True} "
                "opts in",
                UserWarning,
                stacklevel=2,
            )
        policy = self._policy(params, refresh=DEFAULT_REFRESH)
        _replace(options, _pylibmc_options(options, where, ours=("IGNORE_CLUSTER_ERRORS",)))
        source = ConfigEndpoint(
            endpoint.host, endpoint.port, fallback="single" if ignore else "none"
        )
        return source, policy


class ConsulMemcachedCache(_CompatCache):
    """django-memcached-consul's ``MemcachedCache`` settings on a refreshing pylibmc backend.

    Reads the same top-level keys of the ``CACHES`` entry: ``CONSUL_SERVICE`` (required),
    ``CONSUL_HOST`` and ``CONSUL_PORT`` (the agent; default ``CONSUL_HTTP_ADDR``, then
    127.0.0.1:8500), ``CONSUL_TTL`` (seconds; caps the retry interval while Consul is down,
    since changes arrive by blocking queries), ``CONSUL_CACHE`` (a file-based cache's
    directory holds our snapshot) and ``CONSUL_ALT_TTL`` (accepted, not enforced: warned).
    Only instances whose checks pass are used, at ``Service.Address`` else ``Node.Address``.
    """

    def _cache_settings_source(
        self, server: str | Sequence[str], params: dict[str, Any]
    ) -> tuple[Source, Policy]:
        service = params.get("CONSUL_SERVICE")
        if not isinstance(service, str) or not service:
            raise SettingsError(
                f"{__name__}.ConsulMemcachedCache needs CONSUL_SERVICE, the Consul service "
                "name of the memcached nodes, in its CACHES entry"
            )
        where = f"{__name__}.ConsulMemcachedCache (CONSUL_SERVICE={service!r})"
        options: dict[str, Any] = params["OPTIONS"]
        if server:
            # The old package replaced LOCATION with Consul's answer, unread.
            warnings.warn(
                f"{where}: LOCATION {_shown(server)} is ignored; the nodes come from Consul",
                UserWarning,
                stacklevel=2,
            )
        ttl = params.get("CONSUL_TTL")
        policy = self._policy(
            params,
            refresh=DEFAULT_REFRESH if ttl is None else _seconds(ttl, "CONSUL_TTL"),
        )
        if "CONSUL_ALT_TTL" in params:
            _seconds(params["CONSUL_ALT_TTL"], "CONSUL_ALT_TTL")
            warnings.warn(
                f"{where}: CONSUL_ALT_TTL={brief(params['CONSUL_ALT_TTL'])} is not enforced: while "
                "Consul is down each process keeps the last node list Consul gave it, and a "
                "new process uses the snapshot file whatever its age; remove CONSUL_ALT_TTL "
                "to silence this warning",
                UserWarning,
                stacklevel=2,
            )
        alias = params.get("CONSUL_CACHE")
        if alias is not None and policy.snapshot is None:
            policy = replace(policy, snapshot=_snapshot_for_cache(str(alias), where))
        ignored = sorted(_PYTHON_MEMCACHED_OPTIONS & set(options))
        if ignored:
            warnings.warn(
                f"{where}: python-memcached OPTIONS {', '.join(ignored)} have no pylibmc "
                "equivalent and are ignored (I/O is bounded at 0.5 s and a failed node "
                "is left out for 30 s; tune pylibmc through OPTIONS['behaviors'])",
                UserWarning,
                stacklevel=2,
            )
            for key in ignored:
                del options[key]
        _replace(options, _pylibmc_options(options, where))
        return Consul(service, agent=_agent(params, where)), policy


def _one_endpoint(server: str | Sequence[str], where: str) -> Node:
    # Django splits a LOCATION string on ";" and ","; the old package then refused more
    # than one server, and anything but HOST:PORT.
    if isinstance(server, str):
        locations = re.split("[;,]", server)
    elif isinstance(server, list | tuple) and all(isinstance(item, str) for item in server):
        locations = list(server)
    else:
        raise SettingsError(
            f"{where}: LOCATION must be the cluster's configuration endpoint as text, "
            f"'HOST:PORT', not {_shown(server)}"
        )
    locations = [location.strip() for location in locations if location.strip()]
    if any("://" in location for location in locations):
        raise SettingsError(
            f"{where}: LOCATION {_shown(server)} is a URL; django-elasticache's LOCATION is the "
            "configuration endpoint as HOST:PORT, without a scheme (a source URL is what "
            "cache_settings.memcached() takes)"
        )
    if len(locations) != 1:
        raise SettingsError(
            f"{where}: LOCATION must be exactly one server, the cluster's configuration "
            f"endpoint, as 'NAME.xxxxxx.cfg.use1.cache.amazonaws.com:11211'; got {_shown(server)}"
        )
    try:
        return parse_node(locations[0], where=f"{where}: LOCATION")
    except ConfigurationError as exc:
        raise SettingsError(str(exc)) from None


def _agent(params: Mapping[str, Any], where: str) -> str | None:
    # django-memcached-consul: consul.Consul(host=CONSUL_HOST, port=CONSUL_PORT), which
    # writes "http://HOST:PORT"; a scheme or a port in CONSUL_HOST never worked there.
    host, port = params.get("CONSUL_HOST"), params.get("CONSUL_PORT")
    if host is None and port is None:
        return None  # CONSUL_HTTP_ADDR, then 127.0.0.1:8500, as the consul CLI does
    if host is None:
        host = "127.0.0.1"
    if isinstance(host, str) and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # "[::1]": an IPv6 address, bracketed as in a URL
    if not isinstance(host, str) or not is_host(host):
        # User info is masked whole: it is no URL's, so brief() would not find it.
        shown = brief(redact_address(host)) if isinstance(host, str) else brief(host)
        extra = " (user info removed: the token comes from CONSUL_HTTP_TOKEN)"
        raise SettingsError(
            f"{where}: CONSUL_HOST must be the agent's host name or IP address, not "
            f"{shown}{extra if isinstance(host, str) and '@' in host else ''}; the port "
            "goes in CONSUL_PORT, and no scheme is needed (or leave both out to use "
            "CONSUL_HTTP_ADDR)"
        )
    if port is None:
        port = 8500
    if (
        not isinstance(port, str | int)
        or isinstance(port, bool)
        or port == ""
        or (isinstance(port, int) and not 0 < port < 65536)
    ):
        raise SettingsError(f"{where}: CONSUL_PORT must be a port 1..65535, not {brief(port)}")
    try:
        number = parse_port(str(port), where=f"{where}: CONSUL_PORT")
    except ConfigurationError as exc:
        raise SettingsError(str(exc)) from None
    return f"[{host}]:{number}" if ":" in host else f"{host}:{number}"


def _snapshot_for_cache(alias: str, where: str) -> str | None:
    """Return the snapshot path that stands in for the ``CONSUL_CACHE`` cache *alias*."""
    from django.conf import settings

    entry = settings.CACHES.get(alias)
    backend = entry.get("BACKEND") if isinstance(entry, Mapping) else None
    if backend == _FILE_BASED and entry is not None and entry.get("LOCATION"):
        # Shared by every worker on the host and kept across restarts, as the old "alt"
        # copy was: the nearest equivalent is our snapshot file, next to that cache.
        directory = os.path.abspath(os.fspath(entry["LOCATION"]))
        try:
            os.makedirs(directory, 0o700, exist_ok=True)  # as FileBasedCache does
        except OSError as exc:
            logger.warning("%s: cannot create %s (%s)", where, directory, exc)
        return os.path.join(directory, SNAPSHOT_NAME)
    if backend == _LOCMEM:
        return None  # per process, as each watcher's own last good list is
    warnings.warn(
        f"{where}: CONSUL_CACHE={brief(alias)} "
        + ("is not in CACHES" if backend is None else f"is a {backend}")
        + "; it is not used: each process keeps its own node list, and "
        "OPTIONS['SNAPSHOT'] names a file that keeps it across restarts",
        UserWarning,
        stacklevel=3,
    )
    return None


def _pylibmc_options(
    options: Mapping[str, Any], where: str, *, ours: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Return pylibmc Client arguments: flat behaviors gathered, our defaults under them.

    *ours* are this backend's own upper-case keys, besides ``REFRESH``, ``SNAPSHOT`` and
    ``DEADLINE``: an unknown key is named with the closest of all of them.
    """
    try:
        import pylibmc
    except ImportError as exc:
        raise SettingsError(
            f"{where} runs on pylibmc, which is not installed ({exc}); "
            'pip install "django-cache-settings[pylibmc]"'
        ) from None

    flat = {key: value for key, value in options.items() if key not in _CLIENT_ARGUMENTS}
    given = {key: value for key, value in options.items() if key in _CLIENT_ARGUMENTS}
    nested = given.get("behaviors")
    if nested is not None and not isinstance(nested, Mapping):
        raise SettingsError(f"{where}: OPTIONS['behaviors'] must be a dict, not {brief(nested)}")
    if nested and flat:  # (our backend gives every entry an empty behaviors dict)
        # django-elasticache set client.behaviors = OPTIONS.get("behaviors", OPTIONS): with
        # a behaviors dict, the flat keys were never read. Still not read, but said.
        warnings.warn(
            f"{where}: OPTIONS {', '.join(map(repr, sorted(flat)))} are ignored beside "
            "OPTIONS['behaviors'], as django-elasticache ignored them; move them into it",
            UserWarning,
            stacklevel=3,
        )
        flat = {}
    unknown = sorted(set(flat) - set(pylibmc.all_behaviors) - {"_retry_timeout"}, key=repr)
    if unknown:
        known = [*pylibmc.all_behaviors, *_CLIENT_ARGUMENTS, *_OWN_KEYS, *ours]
        raise SettingsError(
            f"{where}: OPTIONS {', '.join(map(repr, unknown))} are neither pylibmc behaviors "
            f"nor pylibmc.Client arguments ({', '.join(sorted(_CLIENT_ARGUMENTS))})"
            + "".join(_guess(key, known) for key in unknown)
        )
    if flat:
        given["behaviors"] = {**flat, **(nested or {})}
    return _merge_options(client_defaults("pylibmc"), given)


def _guess(key: object, known: Sequence[str]) -> str:
    # Case aside: our own keys are upper case ("REFRESH"), pylibmc's lower ("ketama").
    by_lower = {name.lower(): name for name in known}
    close = close_matches(key.lower(), by_lower) if isinstance(key, str) else []
    return f"; for {key!r}, did you mean {by_lower[close[0]]!r}?" if close else ""


def _shown(location: object) -> str:
    # A LOCATION for a message, as Django splits it, each server briefly and without user
    # info or token= options: a message must not print "user:password@host".
    if isinstance(location, str):
        location = re.split("[;,]", location)
    if not isinstance(location, list | tuple):
        return brief(location)
    shown = [redact_address(item.strip()) if isinstance(item, str) else item for item in location]
    return brief(shown[0]) if len(shown) == 1 else some(shown, "servers")


def _replace(target: dict[str, Any], new: Mapping[str, Any]) -> None:
    target.clear()
    target.update(new)


def _seconds(value: Any, name: str) -> float:
    # As Policy.from_options: a number written as text ("30", from the environment) is one.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    try:
        return check_seconds(value, name)
    except ConfigurationError as exc:
        raise SettingsError(str(exc)) from None
