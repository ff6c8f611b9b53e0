"""What each memcached client can do here, found out from the installed build itself.

pylibmc 1.6.3 ships wheels up to Python 3.11 that bundle libmemcached 1.0.16; on Python
3.12 and later pip builds it against the system's libmemcached (1.1.4 on Debian 12). The
two differ in what reaches the network, so the facts are read from ``pylibmc`` at run
time, never from the Python version. pymemcache (pure Python) can do all of it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings

from .nodes import Node

if TYPE_CHECKING:
    from django.core.checks import CheckMessage

__all__ = [
    "cannot_reach",
    "check_pylibmc_clients",
    "ejects_silent_nodes",
    "pylibmc_build",
    "unapplied_behaviors",
]


def cannot_reach(backend: str, nodes: Iterable[Node]) -> list[Node]:
    """Return the *nodes* that *backend*'s client cannot connect to on this interpreter.

    pylibmc's wheels (up to Python 3.11) bundle libmemcached 1.0.16, which fails every
    operation on an IPv6 literal with ``HOSTNAME LOOKUP FAILURE``; libmemcached 1.1
    connects to them (both measured against a memcached on ``[::1]``). pymemcache reaches
    every node. Nodes addressed by host name are not looked up here.
    """
    if backend != "pylibmc":
        return []
    ipv6 = [node for node in nodes if _is_ipv6(node)]
    if not ipv6 or _libmemcached_version() >= (1, 1):
        return []
    return ipv6


# A server that is never contacted: reading behaviors back makes libmemcached ask the first
# server for its socket buffer sizes, so the probe names a UNIX socket that cannot exist.
_PROBE_SERVER = "/nonexistent/cache-settings-probe.sock"
# Behaviors that libmemcached stores as a flag and reads back as 0 or 1 (or, for
# remove_failed, as failure_limit in 1.0 and auto_eject in 1.1).
_FLAGS = {
    "no_block",
    "tcp_nodelay",
    "tcp_keepalive",
    "ketama",
    "ketama_weighted",
    "cas",
    "buffer_requests",
    "verify_keys",
    "auto_eject",
    "remove_failed",
    "_hash_with_prefix_key",
    "_noreply",
    "_sort_hosts",
}


def unapplied_behaviors(behaviors: Mapping[str, Any], binary: bool) -> dict[str, str]:
    """Return the *behaviors* a pylibmc client built with them does not apply.

    The client is built without connecting and its ``behaviors`` read back, once per
    distinct request in a process; the answer maps each name to ``"name=value (reads
    X)"``. Raises ValueError with pylibmc's reason when pylibmc refuses *behaviors*.
    """
    try:
        return dict(_unapplied(tuple(sorted(behaviors.items())), binary))
    except TypeError:  # an unhashable or unsortable behavior: pylibmc will say what it is
        return dict(_unapplied.__wrapped__(tuple(behaviors.items()), binary))


@lru_cache(maxsize=32)
def _unapplied(behaviors: tuple[tuple[str, Any], ...], binary: bool) -> tuple[tuple[str, str], ...]:
    import pylibmc

    asked = dict(behaviors)
    if "_retry_timeout" in asked:  # pylibmc's alias, as pylibmc/client.py translates it
        asked.setdefault("retry_timeout", asked.pop("_retry_timeout"))
    try:
        client = pylibmc.Client([_PROBE_SERVER], binary=binary, behaviors=asked)
        applied = client.behaviors
    except (TypeError, ValueError, OverflowError, pylibmc.Error) as exc:
        raise ValueError(f"pylibmc refuses options['behaviors']: {exc}") from None
    names = {"hash": pylibmc.hashers, "ketama_hash": pylibmc.hashers}
    names["distribution"] = pylibmc.distributions
    dropped: list[tuple[str, str]] = []
    for name, value in asked.items():
        if name not in applied:  # callbacks (namespace) are not read back
            continue
        want, got = value, applied[name]
        if name in names:
            want, got = names[name].get(want, want), names[name].get(got, got)
        if name in _FLAGS:
            want, got = bool(want), bool(got)
        if want != got:
            dropped.append((name, f"{name}={value!r} (reads {applied[name]!r})"))
    return tuple(dropped)


def _is_ipv6(node: Node) -> bool:
    host = node.location.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:  # a host name
        return False


def pylibmc_build() -> str:
    """Return which pylibmc this is: ``"pylibmc 1.6.3 (libmemcached 1.0.16)"``."""
    import pylibmc

    return f"pylibmc {pylibmc.__version__} (libmemcached {pylibmc.libmemcached_version})"


def _libmemcached_version() -> tuple[int, ...]:
    import pylibmc

    return tuple(int(part) for part in str(pylibmc.libmemcached_version).split(".")[:2])


def ejects_silent_nodes() -> bool:
    """Return whether this pylibmc drops a node whose reads time out from its hash ring.

    Measured with one black-holed node of three and the default behaviors: libmemcached
    1.0.16 (pylibmc's wheels) times out once and then skips the node for dead_timeout;
    libmemcached 1.1.4 (Debian 12, which pylibmc builds against on Python >= 3.12)
    counts read timeouts only towards server_timeout_limit, a behavior pylibmc 1.6 does
    not expose, so every operation on that node waits _poll_timeout.
    """
    return _libmemcached_version() < (1, 1)


_EJECTION = ("remove_failed", "auto_eject")
_PYLIBMC_BACKENDS = ("PyLibMCCache", "ElastiCache", "ConsulMemcachedCache")


def entry_behaviors(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return the pylibmc behaviors a ``CACHES`` entry asks for ({} for none), or None when
    its ``OPTIONS`` or their ``behaviors`` are not dicts (the backend says so, not a check)."""
    options = config.get("OPTIONS") or {}
    behaviors = (options.get("behaviors") or {}) if isinstance(options, Mapping) else None
    return behaviors if isinstance(behaviors, Mapping) else None


def check_pylibmc_clients(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W006: a pylibmc entry asks to eject failed nodes from a pylibmc that cannot.

    ``memcached()`` with no backend chosen picks pymemcache there; this names the entries
    that chose pylibmc anyway (``backend="pylibmc"``, ``pylibmc://``, pylibmc options)
    or were written by hand. Silence it with ``SILENCED_SYSTEM_CHECKS``.
    """
    from django.core.checks import Warning  # only a check run needs the checks framework

    messages: list[CheckMessage] = []
    caches = getattr(settings, "CACHES", None) or {}
    for alias, config in caches.items():
        if not isinstance(config, dict):
            continue
        backend = str(config.get("BACKEND", ""))
        behaviors = entry_behaviors(config)
        if not backend.endswith(_PYLIBMC_BACKENDS) or behaviors is None:
            continue
        if not any(behaviors.get(name) for name in _EJECTION) or ejects_silent_nodes():
            continue
        poll = behaviors.get("_poll_timeout", 5000)
        messages.append(
            Warning(
                f"CACHES[{alias!r}] asks pylibmc to eject a failed node, but {pylibmc_build()} "
                f"does not eject a node that stops answering: every operation on it waits "
                f"_poll_timeout ({poll} ms), not only the first.",
                hint='Use backend="pymemcache" (what memcached() picks here when no '
                "backend is chosen), or a pylibmc linked against libmemcached 1.0 "
                "(pylibmc's wheels, Python <= 3.11).",
                obj=str(alias),
                id="cache_settings.W006",
            )
        )
    return messages
