"""ElastiCache for Memcached Auto Discovery: the nodes a configuration endpoint lists.

AWS ElastiCache guide, "Adding Auto Discovery to your client library"
(https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/AutoDiscovery.AddingToYourClientLibrary.html).
The endpoint answers ``config get cluster`` (engine 1.4.14 and later) or, on older engines,
``get AmazonElastiCache:cluster``, with::

    CONFIG cluster 0 <len>\\r\\n
    <version>\\n
    <host>|<ip>|<port> <host>|<ip>|<port> ...\\n
    \\r\\n
    END\\r\\n

(``VALUE AmazonElastiCache:cluster 0 <len>`` heads the legacy reply.)  ``<len>`` counts the
data block exactly as memcached's ``VALUE <key> <flags> <bytes>`` does: the version line and
the node line with their ``\\n``, but not the ``\\r\\n`` that closes every data block.
AWS's own client reads it that way (aws-elasticache-cluster-client-libmemcached,
``libmemcached/response.cc``: ``CONFIG`` goes through ``textual_fetch``, which reads
``<len> + 2`` bytes), and replies recorded from real clusters in public client tests agree:
``CONFIG cluster 0 74`` heads ``1\\n`` + a 71-byte node line + ``\\n``.  The guide's own
example says 147 for a 136-byte block, a typo: a client that trusted it would wait for 11
bytes that never come.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import SplitResult, quote, urlencode

from ..attempt import Attempt
from ..exceptions import ConfigurationError, SourceError, brief
from ..nodes import DEFAULT_PORT, Node, is_host, parse_node, unique_sorted
from ..tls import TLSConfig
from . import Traits
from ._cluster_config import CONFIG_GET, LEGACY_GET, NotAnEndpoint, Reader, parse_cluster_config
from ._transport import close, connect, failure, start_tls, within
from ._url import Query

__all__ = ["ConfigEndpoint", "parse_cluster_config"]

logger = logging.getLogger(__name__)

# A cluster with in-transit encryption answers only TLS: plain text gets a TLS alert (the
# reader says so) or a hang-up (a reset, or a close with no reply), after which this is
# said. A refused connection never reached a TLS listener: it says nothing of TLS.
_TLS_HINT = " (if the cluster has in-transit encryption, add ?tls=true)"
_HANG_UPS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class _FallbackState:
    """Whether a ``fallback=single`` source's last answer came from a plain memcached server."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False


@dataclass(frozen=True, slots=True)
class ConfigEndpoint:
    """The nodes an ElastiCache for Memcached configuration endpoint lists (Auto Discovery).

    Args:
        host: the configuration endpoint, ``NAME.xxxxxx.cfg.REGION.cache.amazonaws.com``.
        tls: how to verify the endpoint when the cluster has in-transit encryption;
            the nodes are then marked TLS and addressed by host name.
        address: ``"ip"`` lets clients connect to the listed IPs (no DNS per connection);
            ``"hostname"`` uses the node names instead.
        fallback: ``"single"`` treats a plain memcached server at the address as the only
            node (django-elasticache's ``IGNORE_CLUSTER_ERRORS``); ``"none"`` is an error.
    """

    host: str
    port: int = DEFAULT_PORT
    tls: TLSConfig | None = None
    address: str = "ip"
    fallback: str = "none"
    # Polling a plain memcached server with fallback=single logs one WARNING when it starts
    # answering so, then DEBUG until it answers as an endpoint again: one per outage, not
    # one per poll. The state lives in the source (one per watcher), not in the module, so
    # that two sources never share it and nothing process-wide changes.
    _fallback: _FallbackState = field(
        default_factory=_FallbackState, init=False, repr=False, compare=False
    )

    # Auto Discovery has no blocking query: watch() answers at once, and polls.
    blocking: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigurationError("ConfigEndpoint needs the configuration endpoint's host")
        if not (isinstance(self.host, str) and is_host(self.host)):
            # A URL, host:port or a padded name went into the URL and the snapshot key as
            # elasticache://[elasticache://…]:11211 and failed only when asked.
            raise ConfigurationError(
                f"ConfigEndpoint host {brief(self.host)} is not a host name or IP address; give "
                "the host alone and the port as port= (or parse_source('elasticache://HOST:PORT'))"
            )
        if (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 0 < self.port < 65536
        ):
            raise ConfigurationError(f"ConfigEndpoint port must be 1..65535, not {self.port!r}")
        if self.address not in ("ip", "hostname"):
            raise ConfigurationError(f"address={self.address!r} must be 'ip' or 'hostname'")
        if self.fallback not in ("none", "single"):
            raise ConfigurationError(f"fallback={self.fallback!r} must be 'none' or 'single'")
        object.__setattr__(self, "host", self.host.lower())

    @classmethod
    def from_url(cls, url: SplitResult) -> ConfigEndpoint:
        """Build from ``elasticache://HOST[:PORT]?tls=..&ca=..&cert=..&key=..&address=..&fallback=..``."""
        query = Query(url, {"tls", "ca", "cert", "key", "address", "fallback"})
        where = query.where
        if url.path not in ("", "/") or url.fragment or "@" in url.netloc:
            raise ConfigurationError(
                f"{where}: expected elasticache://CONFIGURATION-ENDPOINT:PORT and nothing else"
            )
        if not url.netloc:
            raise ConfigurationError(
                f"{where}: no host; write elasticache://NAME.xxxxxx.cfg.REGION.cache.amazonaws.com:11211"
            )
        node = parse_node(url.netloc, where=where)
        ca, cert, key = query.get("ca"), query.get("cert"), query.get("key")
        use_tls = query.flag("tls", default=bool(ca or cert or key))
        if not use_tls and (ca or cert or key):
            raise ConfigurationError(f"{where}: ca=, cert= and key= need tls=true")
        address = query.choice("address", ("ip", "hostname"), "ip")
        if use_tls and query.get("address") == "ip":
            raise ConfigurationError(
                f"{where}: address=ip cannot be used with TLS: certificates name hosts, not IPs"
            )
        return cls(
            node.host,
            node.port,
            tls=TLSConfig(ca or None, cert or None, key or None) if use_tls else None,
            address=address,
            fallback=query.choice("fallback", ("none", "single"), "none"),
        )

    @property
    def url(self) -> str:
        """Return the canonical ``elasticache://`` URL (also the snapshot key)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        options: list[tuple[str, str]] = []
        if self.tls is not None:
            options.append(("tls", "true"))
            options.extend(
                (name, value)
                for name, value in (
                    ("ca", self.tls.ca),
                    ("cert", self.tls.cert),
                    ("key", self.tls.key),
                )
                if value
            )
        if self.address != "ip" and self.tls is None:
            options.append(("address", self.address))
        if self.fallback != "none":
            options.append(("fallback", self.fallback))
        query = f"?{urlencode(options, quote_via=quote, safe='/')}" if options else ""
        return f"elasticache://{host}:{self.port}{query}"

    @property
    def traits(self) -> Traits:
        """With ``tls=true`` every node speaks TLS, verified as the endpoint is."""
        return Traits(node_tls=self.tls)

    def resolve(self, timeout: float) -> list[Node]:
        """Ask the endpoint once; return within *timeout* seconds or raise SourceError."""
        return self.watch(None, timeout)[1]

    def watch(self, index: int | None, timeout: float) -> tuple[int | None, list[Node]]:
        """Return ``(config version, nodes)`` at once; *index* is ignored (no blocking query).

        The version is None when ``fallback=single`` used a plain memcached server.
        """
        return within(self.url, timeout, self._ask)

    def _ask(self, attempt: Attempt) -> tuple[int | None, list[Node]]:
        conn = None
        try:
            # A fresh connection, hence a fresh DNS lookup, every attempt: the endpoint is
            # a CNAME to one of the nodes, and AWS repoints it when that node goes away.
            conn = connect(attempt, self.host, self.port)
            if self.tls is not None:  # SNI and certificate verification use the endpoint's name
                conn = start_tls(attempt, conn, self.tls.context(self.url), self.host)
            reader = Reader(conn, attempt, hang_up_hint="" if self.tls else _TLS_HINT)
            try:
                version, nodes = reader.ask(CONFIG_GET)
            except NotAnEndpoint:
                # Engines before 1.4.14 have no "config" command (AWS guide); they keep
                # the same reply under this key.
                logger.debug("%s: no 'config' command, trying the legacy key", self.url)
                try:
                    version, nodes = reader.ask(LEGACY_GET)
                except NotAnEndpoint as exc:
                    raise NotAnEndpoint(
                        self.url,
                        "not an ElastiCache configuration endpoint: 'config get cluster' is "
                        "an unknown command there and 'get AmazonElastiCache:cluster' "
                        f"{'misses' if 'END' in exc.reason else 'fails'} (a plain memcached "
                        "server?); use memcached://HOST:PORT for a single server, or add "
                        "?fallback=single to use it as the only node",
                        permanent=True,
                    ) from None
        except NotAnEndpoint:
            if self.fallback != "single":
                raise
            level = logging.DEBUG if self._fallback.active else logging.WARNING
            self._fallback.active = True
            logger.log(
                level,
                "%s: not an ElastiCache configuration endpoint; using it as the only node "
                "(fallback=single; said once until it answers as an endpoint)",
                self.url,
            )
            return None, [Node(self.host, self.port, tls=self.tls is not None)]
        except (OSError, UnicodeError) as exc:  # ssl.SSLError is an OSError; IDNA: Unicode
            error = failure(exc, attempt, "the endpoint")
            if self.tls is None and isinstance(exc, _HANG_UPS) and not attempt.cancelled:
                error = SourceError(error.source, error.reason + _TLS_HINT)
            raise error from None
        finally:
            close(attempt, conn)
        if self._fallback.active:
            self._fallback.active = False
            logger.info("%s: answers as a configuration endpoint again", self.url)
        if self.tls is not None:
            nodes = [Node(n.host, n.port, n.ip, tls=True) for n in nodes]
        elif self.address == "hostname":
            nodes = [Node(n.host, n.port) for n in nodes]
        return version, list(unique_sorted(nodes))
