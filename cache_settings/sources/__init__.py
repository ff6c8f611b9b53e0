"""Where node lists come from: the Source protocol and the URL scheme table."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, cast, runtime_checkable
from urllib.parse import SplitResult, urlsplit

from ..exceptions import ConfigurationError, close_matches
from ..tls import TLSConfig

if TYPE_CHECKING:
    from ..nodes import Node
    from .config_endpoint import ConfigEndpoint
    from .consul import Consul
    from .dns import DNS
    from .elasticache_api import ElastiCacheAPI
    from .file import File
    from .static import Static

__all__ = [
    "DNS",
    "SCHEMES",
    "ConfigEndpoint",
    "Consul",
    "ElastiCacheAPI",
    "File",
    "Source",
    "Static",
    "Traits",
    "WatchableSource",
    "no_scheme_message",
    "parse_source",
    "register",
]

# The source classes are imported on first access (``cache_settings.sources.Consul``), so
# that importing this package costs nothing for the sources a site does not use.
_LAZY = {
    "Consul": "consul",
    "ConfigEndpoint": "config_endpoint",
    "DNS": "dns",
    "ElastiCacheAPI": "elasticache_api",
    "File": "file",
    "Static": "static",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    # dir() and tab completion list the lazily loaded sources too (PEP 562).
    return sorted({*globals(), *_LAZY})


@dataclass(frozen=True, slots=True)
class Traits:
    """What a source tells ``memcached()`` and ``resolve()`` besides its nodes.

    Attributes:
        needs_network: False when resolving does no I/O (a static list): it is then
            asked once, without retries, also under ``CACHE_SETTINGS_OFFLINE``.
        backend: ``"pylibmc"`` or ``"pymemcache"`` when the URL chose the client
            (``pymemcache://``), else None.
        node_tls: every node speaks TLS, verified with these settings. This is TLS to
            the memcached nodes, never to the registry (see ``Consul.agent_tls``).
        node_tls_if_needed: how to verify nodes that the source finds to speak TLS
            (``Node.tls``), such as a serverless cache; None means the default trust store.
        secrets: values the source holds outside its URL (a token given as an argument)
            that no output may show; :mod:`cache_settings.redact` masks them.
        blocking_timeout: seconds one blocking query of this source may take (Consul's
            ``wait=`` with its jitter and a margin); a refreshing entry's watcher bounds
            each one by it. None: the watcher's own bound (30 s).
        if_empty: what an answer without a node may mean, and what to check, for the
            error that follows it (Consul: a misspelt service name or tag); None: nothing
            to add.
    """

    needs_network: bool = True
    backend: Literal["pylibmc", "pymemcache"] | None = None
    node_tls: TLSConfig | None = None
    node_tls_if_needed: TLSConfig | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    blocking_timeout: float | None = None
    if_empty: str | None = None


@runtime_checkable
class Source(Protocol):
    """Where a list of memcached nodes comes from.

    ``url`` is the canonical URL without secrets (also the snapshot key), ``traits``
    what ``memcached()`` must know about the nodes (:class:`Traits`), and ``resolve()``
    asks once.
    """

    @property
    def url(self) -> str:
        """Canonical URL without secrets; also the snapshot key."""

    @property
    def traits(self) -> Traits:
        """What the source declares about its nodes (TLS, client, network)."""

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


def _factory(name: str) -> Callable[[SplitResult], Source]:
    """Return the ``from_url`` of the source class *name*, imported on its first call."""

    def build(url: SplitResult) -> Source:
        source_class: Any = __getattr__(name)
        return cast(Source, source_class.from_url(url))

    return build


# The modules are imported by their factory so that parsing one scheme never pulls in
# another's client library.
SCHEMES: dict[str, Callable[[SplitResult], Source]] = {
    "consul": _factory("Consul"),
    "dns": _factory("DNS"),
    "dnssrv": _factory("DNS"),
    "dnssrvnoa": _factory("DNS"),
    "elasticache": _factory("ConfigEndpoint"),
    "elasticache-api": _factory("ElastiCacheAPI"),
    "file": _factory("File"),
    "memcached": _factory("Static"),
    "pylibmc": _factory("Static"),
    "pymemcache": _factory("Static"),
}


def register(scheme: str, factory: Callable[[SplitResult], Source]) -> None:
    """Make ``scheme://`` URLs resolve through *factory* (a third-party source)."""
    SCHEMES[scheme.lower()] = factory


_DROPPED_BY_URLSPLIT = re.compile("[\t\r\n]")


# Nodes written without a scheme, as Django's LOCATION takes them: host names or IPv4
# addresses with optional ports, separated by commas or semicolons. Such text holds no secret,
# so an error may quote it.
_NODE_LIST = re.compile(r"[\w.-]+(?::\d+)?(?:[,;][\w.-]+(?::\d+)?)*\Z")


def no_scheme_message(items: list[str]) -> str:
    """Return the error for source URLs *items* written without ``scheme://``.

    When every item is a node list (``10.0.0.1:11211``), the message quotes them and gives
    the ``memcached://`` URL of those nodes; other text may hold a token and is not quoted.
    """
    head = (
        "A cache source URL needs a scheme, such as consul:///memcached or "
        "memcached://127.0.0.1:11211"
    )
    known = f"known schemes: {', '.join(sorted(SCHEMES))}"
    if all(_NODE_LIST.match(item.strip()) for item in items):
        nodes = ",".join(part for item in items for part in re.split("[,;]", item.strip()))
        what = f"{items[0]!r} has none" if len(items) == 1 else f"{items!r} lists nodes"
        fix = f"for a fixed list of these nodes write memcached://{nodes}"
        return f"{head}, and {what}; {fix}; {known}"
    prefix, colon, _ = items[0].strip().partition(":")
    if colon and prefix[:1].isalpha() and re.fullmatch(r"[\w+.-]+", prefix):
        return f"{head} ('{prefix}:' is not followed by '//'); {known}"
    return f"{head}; {known}"


def parse_source(url: str | Source) -> Source:
    """Return the source a URL names; a Source object is returned as it is.

    *url* is one source URL (``consul:///memcached?tag=prod``, ``dns+NAME:PORT``, ...; see
    docs/sources.md). Nothing is contacted and no client is imported here.

    Raises:
        ConfigurationError: not text, no or an unknown scheme (naming the closest), an
            unknown or malformed option, or a value the scheme cannot take.
    """
    if not isinstance(url, str):
        if isinstance(url, Source):
            return url
        raise ConfigurationError(
            f"A cache source must be a URL string or a Source object, not {type(url).__name__}"
        )
    # Grafana Mimir, Loki and Thanos write DNS discovery as dns+HOST:PORT, dnssrv+NAME and
    # dnssrvnoa+NAME; they name the same sources as the dns:// URLs.
    url = url.strip()
    # urlsplit() drops every tab, CR and LF inside a URL (the WHATWG rule), so "file:///a\tb"
    # would read /ab and "dns://mc.te\nst" ask mc.test: refused rather than altered. The
    # URL itself is not quoted, since it may carry a token.
    dropped = _DROPPED_BY_URLSPLIT.search(url)
    if dropped:
        raise ConfigurationError(
            f"A cache source URL holds {dropped.group()!r} at character {dropped.start() + 1}, "
            "which URL parsing would silently drop; remove it (or percent-encode it if it is "
            "meant)"
        )
    prefix, plus, rest = url.partition("+")
    if plus and prefix.lower() in ("dns", "dnssrv", "dnssrvnoa"):
        url = f"{prefix}://{rest}"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"Invalid cache source URL: {exc}") from exc
    scheme = parts.scheme.lower()
    # RFC 3986, 3.1: a scheme starts with a letter. Python 3.10's urlsplit reads the
    # "10.0.0.1" of "10.0.0.1:11211" as one; 3.11 and later do not. Every source URL is
    # written scheme://... (the LOCATION rule of cache_settings.chain.is_source_url), so
    # "localhost:11211" or "memcached:11211" (a Compose service) is a node, not a scheme.
    if not scheme or not scheme[0].isalpha() or not url[len(scheme) + 1 :].startswith("//"):
        raise ConfigurationError(no_scheme_message([url]))
    factory = SCHEMES.get(scheme)
    if factory is None:
        # django-environ spells memcached "memcache://": every near miss is named.
        close = close_matches(scheme, SCHEMES, n=3, cutoff=0.75)
        names = " or ".join(f"'{name}://'" for name in close)
        guess = f"; did you mean {names}?" if close else "."
        raise ConfigurationError(
            f"Unknown scheme '{scheme}://'{guess} Known schemes: {', '.join(sorted(SCHEMES))}"
        )
    return factory(parts)
