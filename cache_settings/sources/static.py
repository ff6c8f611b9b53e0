"""A fixed list of nodes: ``memcached://h1:11211,h2:11211`` (also ``pylibmc://``, ``pymemcache://``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal
from urllib.parse import SplitResult, unquote, urlencode

from ..exceptions import ConfigurationError
from ..nodes import Node, parse_node, unique_sorted
from ..tls import TLSConfig
from . import Traits
from ._url import Query

__all__ = ["Static"]


@dataclass(frozen=True, slots=True)
class Static:
    """Nodes written in the settings; resolving them never touches the network.

    ``pylibmc://`` and ``pymemcache://`` also choose the client library, as
    django-environ users expect; ``memcached://`` leaves the choice to ``memcached()``.
    """

    nodes: tuple[Node, ...]
    backend: Literal["pylibmc", "pymemcache"] | None = None
    tls: TLSConfig | None = None

    _BACKENDS: ClassVar[dict[str, Literal["pylibmc", "pymemcache"] | None]] = {
        "memcached": None,
        "pylibmc": "pylibmc",
        "pymemcache": "pymemcache",
    }

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, (str, Node)):
            object.__setattr__(self, "nodes", tuple(self.nodes))  # a generator is read once
        if isinstance(self.nodes, (str, Node)) or not all(
            isinstance(node, Node) for node in self.nodes
        ):
            raise ConfigurationError(
                "Static(nodes=…) takes a tuple of Node objects; for text such as "
                "'10.0.0.1:11211' write parse_source('memcached://10.0.0.1:11211')"
            )
        if self.backend not in (None, "pylibmc", "pymemcache"):
            raise ConfigurationError(
                f"Static backend={self.backend!r} must be None, 'pylibmc' or 'pymemcache'"
            )
        if not self.nodes:
            raise ConfigurationError("A static cache source needs at least one node")
        nodes = unique_sorted(
            Node(n.host, n.port, n.ip, tls=self.tls is not None) for n in self.nodes
        )
        object.__setattr__(self, "nodes", nodes)

    @classmethod
    def from_url(cls, url: SplitResult) -> Static:
        """Build the source from ``scheme://host[:port][,host[:port]…][?tls=true&ca=…]``."""
        scheme = url.scheme.lower()
        query = Query(url, {"tls", "ca", "cert", "key"})
        where = query.where
        if url.path not in ("", "/"):
            raise ConfigurationError(
                f"{where}: unexpected path {url.path!r}; list nodes as {scheme}://host:port,host:port"
            )
        if "@" in url.netloc:
            # Django's memcached backends take no credentials in LOCATION; and the part
            # before "@" is a secret that must not reach an error message.
            raise ConfigurationError(
                f"{where}: a user name or password in the URL is not supported; "
                "remove the part before '@' (pylibmc takes username/password in options)"
            )
        hosts = [part for part in unquote(url.netloc).split(",") if part.strip()]
        if not hosts:
            raise ConfigurationError(f"{where}: no nodes; write {scheme}://host:port,host:port")
        nodes = tuple(parse_node(part, where=where) for part in hosts)
        tls = query.tls()
        if tls is not None and scheme == "pylibmc":
            raise ConfigurationError(
                f"{where}: pylibmc cannot speak TLS; use pymemcache://… for TLS nodes"
            )
        return cls(nodes, cls._BACKENDS[scheme], tls)

    @property
    def url(self) -> str:
        """Return the canonical URL: the scheme, then the sorted nodes."""
        scheme = self.backend or "memcached"
        url = f"{scheme}://{','.join(node.location for node in self.nodes)}"
        if self.tls is not None:
            params = {"tls": "true", "ca": self.tls.ca, "cert": self.tls.cert, "key": self.tls.key}
            url += "?" + urlencode({k: v for k, v in params.items() if v})
        return url

    @property
    def traits(self) -> Traits:
        """A static list does no I/O (so it is read under ``CACHE_SETTINGS_OFFLINE``)."""
        return Traits(needs_network=False, backend=self.backend, node_tls=self.tls)

    def resolve(self, timeout: float) -> list[Node]:
        """Return the configured nodes (no I/O, so *timeout* seconds is never reached)."""
        return list(self.nodes)
