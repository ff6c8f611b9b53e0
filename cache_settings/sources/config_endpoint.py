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

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import SplitResult, quote, urlencode

from ..attempt import DEFAULT_MAX_REPLY_SIZE, Attempt
from ..exceptions import ConfigurationError, SourceError, brief
from ..nodes import DEFAULT_PORT, Node, canonical_host, parse_node, unique_sorted
from ..tls import TLSConfig
from . import Traits
from ._budget import paced
from ._transport import close, connect, failure, start_tls, within
from ._url import Query

__all__ = ["ConfigEndpoint", "parse_cluster_config"]

logger = logging.getLogger(__name__)

_MAX_HEADER = 256
_TRAILER = b"\r\nEND\r\n"
_CONFIG_GET = b"config get cluster\r\n"
_LEGACY_GET = b"get AmazonElastiCache:cluster\r\n"
_HEADERS = {b"CONFIG": b"cluster", b"VALUE": b"AmazonElastiCache:cluster"}
_ENTRY = re.compile(rb"[^ ]+")
# A cluster with in-transit encryption answers only TLS: plain text gets a TLS alert or a
# hang-up. Said when a plain attempt ends so; the first bytes of a TLS record (handshake 22,
# alert 21, then major version 3) identify an answer in TLS.
_TLS_HINT = " (if the cluster has in-transit encryption, add ?tls=true)"
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")


class _FallbackState:
    """Whether a ``fallback=single`` source's last answer came from a plain memcached server."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False


class _NotAnEndpoint(SourceError):
    """Raised when a plain memcached server answers instead of a configuration endpoint."""


def parse_cluster_config(
    reply: bytes, *, source: str = "elasticache", max_size: int = DEFAULT_MAX_REPLY_SIZE
) -> tuple[int, list[Node]]:
    """Return ``(config version, nodes)`` from one whole ``config get cluster`` reply.

    Raise SourceError, naming *source*, for anything that is not exactly one well-formed
    reply of at most *max_size* data bytes (an empty node list is returned as ``[]``: the
    resolver enforces ``min_nodes``).
    """
    header, sep, rest = reply.partition(b"\r\n")
    if not sep:
        raise SourceError(source, f"reply has no complete first line: {_show(reply)}")
    length = _parse_header(header, source=source, command=_CONFIG_GET, max_size=max_size)
    if len(rest) < length:
        raise SourceError(source, f"reply ended after {len(rest)} of {length} bytes")
    data, trailer = rest[:length], rest[length:]
    if trailer != _TRAILER:
        # Either the declared length is wrong or the reply does not end in END.
        raise SourceError(
            source,
            f"reply does not end with \\r\\nEND\\r\\n right after its {length} data bytes "
            f"(found {_show(trailer)}): wrong length or truncated reply",
        )
    return _parse_data(data, source=source)


def _parse_header(line: bytes, *, source: str, command: bytes, max_size: int) -> int:
    """Return the data length a reply's first line (without ``\\r\\n``) announces."""
    words = line.split(b" ")
    if line in (b"ERROR", b"END"):
        # Plain memcached: "config" is an unknown command, the legacy key is a miss.
        raise _NotAnEndpoint(
            source,
            f"not an ElastiCache configuration endpoint: it answered {line.decode()!r} to "
            f"{command.decode().strip()!r}; use memcached://HOST:PORT for a plain memcached "
            "server, or add ?fallback=single to use it as the only node",
            permanent=True,
        )
    if words[0] in (b"SERVER_ERROR", b"CLIENT_ERROR"):
        raise SourceError(source, f"server answered {_show(line)}")
    if (
        len(words) != 4
        or _HEADERS.get(words[0]) != words[1]
        or not _is_number(words[2])
        or not _is_number(words[3])
    ):
        raise SourceError(
            source, f"unexpected reply {_show(line)}; expected 'CONFIG cluster 0 <length>'"
        )
    length = int(words[3])
    if length > max_size:
        raise SourceError(
            source, f"reply of {length} bytes is larger than {max_size} bytes (max_reply_size)"
        )
    return length


def _parse_data(data: bytes, *, source: str) -> tuple[int, list[Node]]:
    """Parse ``<version>\\n<host>|<ip>|<port> ...\\n`` into the version and the nodes."""
    # partition, not split: a hostile reply of 32 MB of newlines or spaces must not become a
    # list of millions of objects in one C call that no deadline interrupts.
    version_line, sep, rest = data.partition(b"\n")
    node_line, end, tail = rest.partition(b"\n")
    if not sep or not end or tail:
        raise SourceError(
            source, f"expected a version line and a node line, each ending in \\n: {_show(data)}"
        )
    # The guide ends both lines with a bare LF; some stand-ins send CRLF. Accept either.
    version_text, node_text = (line.removesuffix(b"\r") for line in (version_line, node_line))
    if not _is_number(version_text) or len(version_text) > 19:
        raise SourceError(source, f"config version {_show(version_text)} is not an integer")
    entries = (match.group() for match in _ENTRY.finditer(node_text))
    nodes = [_parse_entry(entry, source=source) for entry in paced(entries)]
    return int(version_text), nodes


def _parse_entry(entry: bytes, *, source: str) -> Node:
    """Parse one ``host|ip|port`` entry; the IP may be empty (``host||port``)."""
    parts = entry.split(b"|")
    if len(parts) != 3 or not entry.isascii():
        raise SourceError(source, f"node entry {_show(entry)} is not host|ip|port")
    host, ip, port = (part.decode("ascii") for part in parts)
    try:
        node = parse_node(host, where=source)
    except ConfigurationError:
        raise SourceError(
            source, f"node entry {_show(entry)}: bad host name {brief(host)}"
        ) from None
    if node.host != host.lower():  # "a:1", "[::1]" or padding: not a plain host name
        raise SourceError(source, f"node entry {_show(entry)}: bad host name {brief(host)}")
    if not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        raise SourceError(source, f"node entry {_show(entry)}: bad port {brief(port)}")
    if ip:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise SourceError(source, f"node entry {_show(entry)}: bad IP {brief(ip)}") from None
        # A node's IP is one a client can connect to: not 0.0.0.0 or :: (this very host), not
        # a multicast group, and without a zone (the sender's interface name, meaningless here).
        if address.is_unspecified or address.is_multicast or "%" in ip:
            raise SourceError(
                source, f"node entry {_show(entry)}: bad IP {brief(ip)} (not a node's address)"
            )
        ip = canonical_host(str(address))
    return Node(node.host, int(port), ip or None)


def _is_number(text: bytes) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20


def _show(data: bytes | bytearray, limit: int = 80) -> str:
    return repr(bytes(data[:limit])) + ("..." if len(data) > limit else "")


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
                conn = start_tls(attempt, conn, self.tls.context(), self.host)
            reader = _Reader(conn, attempt)
            try:
                version, nodes = reader.ask(_CONFIG_GET)
            except _NotAnEndpoint:
                # Engines before 1.4.14 have no "config" command (AWS guide); they keep
                # the same reply under this key.
                logger.debug("%s: no 'config' command, trying the legacy key", self.url)
                try:
                    version, nodes = reader.ask(_LEGACY_GET)
                except _NotAnEndpoint as exc:
                    raise _NotAnEndpoint(
                        self.url,
                        "not an ElastiCache configuration endpoint: 'config get cluster' is "
                        "an unknown command there and 'get AmazonElastiCache:cluster' "
                        f"{'misses' if 'END' in exc.reason else 'fails'} (a plain memcached "
                        "server?); use memcached://HOST:PORT for a single server, or add "
                        "?fallback=single to use it as the only node",
                        permanent=True,
                    ) from None
        except _NotAnEndpoint:
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
            if self.tls is None and isinstance(exc, ConnectionError) and not attempt.cancelled:
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


class _Reader:
    """Send commands and read replies on one connection, all within one attempt."""

    def __init__(self, conn: socket.socket, attempt: Attempt) -> None:
        self._conn = conn
        self._attempt = attempt
        self._source = attempt.source
        self._buffer = bytearray()  # appended in place: a 30 MB reply is not copied per read

    def ask(self, command: bytes) -> tuple[int, list[Node]]:
        self._conn.settimeout(self._attempt.check())
        self._conn.sendall(command)
        # Read the header line, then exactly <len> bytes and the trailer, however the
        # bytes are split into TCP segments; never more, so a second command can follow.
        while b"\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HEADER:
                raise SourceError(self._source, f"reply line too long: {_show(self._buffer)}")
            if not self._receive():
                if self._buffer.startswith(_TLS_RECORDS):
                    raise SourceError(self._source, "the endpoint answered in TLS; add ?tls=true")
                raise SourceError(
                    self._source,
                    f"connection closed before a complete reply line ({_show(self._buffer)})",
                )
        end = self._buffer.index(b"\r\n")
        header = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        limit = self._attempt.max_reply_size
        length = _parse_header(header, source=self._source, command=command, max_size=limit)
        need = length + len(_TRAILER)
        while len(self._buffer) < need:
            if not self._receive():
                got = len(self._buffer)
                raise SourceError(
                    self._source,
                    f"reply ended after {min(got, length)} of {length} bytes"
                    if got < length
                    else "reply ended before its END line",
                )
        reply = header + b"\r\n" + self._buffer[:need]
        del self._buffer[:need]
        return parse_cluster_config(reply, source=self._source, max_size=limit)

    def _receive(self) -> bool:
        self._conn.settimeout(self._attempt.check())
        chunk = self._conn.recv(65536)
        self._attempt.check()  # a cancelled attempt's read ends as if the peer closed
        self._buffer += chunk
        return bool(chunk)
