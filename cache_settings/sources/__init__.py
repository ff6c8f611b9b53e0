"""Where node lists come from: the Source protocol and the URL scheme table."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..nodes import Node
    from .config_endpoint import ConfigEndpoint
    from .consul import Consul
    from .elasticache_api import ElastiCacheAPI
    from .static import Static

__all__ = [
    "SCHEMES",
    "ConfigEndpoint",
    "Consul",
    "ElastiCacheAPI",
    "Source",
    "Static",
    "WatchableSource",
    "parse_source",
    "register",
]

# The source classes are imported on first access (``cache_settings.sources.Consul``), so
# that importing this package costs nothing for the sources a site does not use.
_LAZY = {
    "Consul": "consul",
    "ConfigEndpoint": "config_endpoint",
    "ElastiCacheAPI": "elasticache_api",
    "Static": "static",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


@runtime_checkable
class Source(Protocol):
    """Where a list of memcached nodes comes from.

    Optional attributes that ``memcached()`` and ``resolve()`` read when present:
    ``backend`` (``"pylibmc"``/``"pymemcache"``: the URL chose the client), ``tls``
    (a ``TLSConfig``: every node speaks TLS), ``tls_config`` (how to verify nodes that
    turn out to need TLS, such as a serverless cache) and ``local`` (True: resolving does
    no I/O, so it is allowed under ``CACHE_SETTINGS_OFFLINE``).
    """

    @property
    def url(self) -> str:
        """Canonical URL without secrets; also the snapshot key."""

    def resolve(self, timeout: float) -> list[Node]:
        """Ask once. Return within ``timeout`` seconds or raise SourceError."""


@runtime_checkable
class WatchableSource(Source, Protocol):
    """A source that versions its answers and may wait for them to change.

    ``watch(index, timeout)`` returns ``(index, nodes)``.  With ``blocking`` true
    (Consul), a call with a known *index* waits until the answer changes or
    *timeout* seconds pass; otherwise it answers at once and *index* is the
    answer's version (an ElastiCache config version), which only ever grows.
    """

    blocking: ClassVar[bool]

    def watch(self, index: int | None, timeout: float) -> tuple[int | None, list[Node]]:
        """Ask once, waiting for a change past *index* when the source can."""


def _static(url: SplitResult) -> Source:
    from .static import Static

    return Static.from_url(url)


def _consul(url: SplitResult) -> Source:
    from .consul import Consul

    return Consul.from_url(url)


def _config_endpoint(url: SplitResult) -> Source:
    from .config_endpoint import ConfigEndpoint

    return ConfigEndpoint.from_url(url)


def _elasticache_api(url: SplitResult) -> Source:
    from .elasticache_api import ElastiCacheAPI

    return ElastiCacheAPI.from_url(url)


# The modules are imported by their factory so that parsing one scheme never pulls in
# another's client library.
SCHEMES: dict[str, Callable[[SplitResult], Source]] = {
    "consul": _consul,
    "elasticache": _config_endpoint,
    "elasticache-api": _elasticache_api,
    "memcached": _static,
    "pylibmc": _static,
    "pymemcache": _static,
}


def register(scheme: str, factory: Callable[[SplitResult], Source]) -> None:
    """Make ``scheme://`` URLs resolve through *factory* (a third-party source)."""
    SCHEMES[scheme.lower()] = factory


def parse_source(url: str | Source) -> Source:
    """Return the source a URL names; a Source object is returned as it is."""
    if not isinstance(url, str):
        if isinstance(url, Source):
            return url
        raise ConfigurationError(
            f"A cache source must be a URL string or a Source object, not {type(url).__name__}"
        )
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigurationError(f"Invalid cache source URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigurationError(
            "A cache source URL needs a scheme, such as consul:///memcached or "
            f"memcached://127.0.0.1:11211; known schemes: {', '.join(sorted(SCHEMES))}"
        )
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"Unknown scheme '{scheme}://'. Known schemes: {', '.join(sorted(SCHEMES))}"
        )
    return factory(parts)
