"""The reply of an ElastiCache configuration endpoint: reading it off a socket, parsing it.

The format, and why ``<len>`` counts the data block as memcached's ``VALUE`` does, is in
:mod:`cache_settings.sources.config_endpoint`; that module asks, this one reads and checks.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import NoReturn

from ..attempt import DEFAULT_MAX_REPLY_SIZE, Attempt
from ..exceptions import ConfigurationError, SourceError, brief
from ..nodes import Node, canonical_host, is_nowhere, parse_node
from ._budget import paced

__all__ = ["CONFIG_GET", "LEGACY_GET", "NotAnEndpoint", "Reader", "parse_cluster_config"]

_MAX_HEADER = 256
_TRAILER = b"\r\nEND\r\n"
CONFIG_GET = b"config get cluster\r\n"
LEGACY_GET = b"get AmazonElastiCache:cluster\r\n"
_HEADERS = {b"CONFIG": b"cluster", b"VALUE": b"AmazonElastiCache:cluster"}
_ENTRY = re.compile(rb"[^ ]+")
# The first bytes of a TLS record (alert 21 or handshake 22, then major version 3): what a
# cluster with in-transit encryption sends back to a plain command.
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")
# The first byte of every RESP reply (Redis's protocol: "*0" for CONFIG GET of an unknown
# parameter, "-ERR ..." or "-NOAUTH ..."): an ElastiCache Redis or Valkey endpoint.
_RESP = frozenset(b"*-+$:")


class NotAnEndpoint(SourceError):
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
    length = _parse_header(header, source=source, command=CONFIG_GET, max_size=max_size)
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
    foreign = _foreign(line)
    if foreign:
        raise SourceError(source, f"{foreign} (it answered {_show(line)})", permanent=True)
    words = line.split(b" ")
    if line in (b"ERROR", b"END"):
        # Plain memcached: "config" is an unknown command, the legacy key is a miss.
        raise NotAnEndpoint(
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
        # a multicast group, in any spelling (is_nowhere: ::ffff:0.0.0.0 too), and without a
        # zone (the sender's interface name, meaningless here).
        if is_nowhere(ip) or "%" in ip:
            raise SourceError(
                source, f"node entry {_show(entry)}: bad IP {brief(ip)} (not a node's address)"
            )
        ip = canonical_host(str(address))
    return Node(node.host, int(port), ip or None)


def _is_number(text: bytes) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20


def _foreign(data: bytes | bytearray) -> str | None:
    """Name the protocol a peer that is no memcached server speaks, from its first bytes."""
    if data.startswith(b"HTTP/") or data.lstrip()[:1] == b"<":
        return (
            "not a configuration endpoint: it speaks HTTP (a Consul agent, a web server?); "
            "elasticache:// takes the cluster's configuration endpoint and its memcached port, "
            "as in elasticache://mycluster.xxxxxx.cfg.use1.cache.amazonaws.com:11211"
        )
    if data[:1] and data[0] in _RESP:
        return (
            "not a configuration endpoint: it speaks Redis's protocol (an ElastiCache Redis "
            "or Valkey endpoint?); cache_settings finds memcached nodes only"
        )
    return None


def _show(data: bytes | bytearray, limit: int = 80) -> str:
    return repr(bytes(data[:limit])) + ("..." if len(data) > limit else "")


class Reader:
    """Send commands and read replies on one connection, all within one attempt."""

    def __init__(self, conn: socket.socket, attempt: Attempt, *, hang_up_hint: str = "") -> None:
        # hang_up_hint follows "connection closed" when the peer sent nothing at all.
        self._hang_up_hint = hang_up_hint
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
            too_long = len(self._buffer) > _MAX_HEADER
            if too_long or not self._receive():
                self._refuse(too_long=too_long)
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

    def _refuse(self, *, too_long: bool) -> NoReturn:
        """Raise SourceError for a reply with no complete first line, naming its protocol."""
        foreign = _foreign(self._buffer)  # an HTML page has no \r\n; a peer may close
        if foreign:
            raise SourceError(
                self._source, f"{foreign} (it answered {_show(self._buffer)})", permanent=True
            )
        if self._buffer.startswith(_TLS_RECORDS):
            raise SourceError(self._source, "the endpoint answered in TLS; add ?tls=true")
        if too_long:
            raise SourceError(self._source, f"reply line too long: {_show(self._buffer)}")
        hint = "" if self._buffer else self._hang_up_hint
        raise SourceError(
            self._source,
            f"connection closed before a complete reply line ({_show(self._buffer)}){hint}",
        )

    def _receive(self) -> bool:
        self._conn.settimeout(self._attempt.check())
        chunk = self._conn.recv(65536)
        self._attempt.check()  # a cancelled attempt's read ends as if the peer closed
        self._buffer += chunk
        return bool(chunk)
