"""Memcached nodes: parsing ``host:port`` and ``[v6]:port``, de-duplicating, sorting."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from .exceptions import ConfigurationError, brief
from .redact import redact_address

__all__ = [
    "DEFAULT_PORT", "Node", "canonical_host", "is_host", "is_ip", "is_nowhere", "parse_node",
    "parse_port", "unique_sorted",
]  # fmt: skip

DEFAULT_PORT = 11211

# What could be an IPv6 address, perhaps with a port: hex digits, ':', '.', a zone.
_IPV6ISH = re.compile(r"[0-9A-Fa-f:.]+(%[\w.-]+)?")
# An IPv6 zone (RFC 4007, 11): an interface name or index. ipaddress takes any text without
# '%' after it, so "fe80::1%a;b" and "::1%x]" were addresses to a snapshot or an API reply
# (is_host) that parse_node refused ('a;b' is two servers to Django); one rule for both.
_ZONE = re.compile(r"[A-Za-z0-9_.-]+")
# RFC 1123 host names; underscores are tolerated because Docker and Consul node names use them.
# No host longer than this is accepted, live or from a file (RFC 1035 allows 253 in text).
_LONGEST_HOST = 255
# RFC 1035, 3.1: a name is at most 255 octets on the wire (each label's length byte and the
# root's), so at most 253 characters as text without its trailing dot. A longer one passes
# the label rules but no resolver looks it up (dnspython: NameTooLong on every attempt; glibc's
# getaddrinfo() for both clients: a failure on every connect), so it is refused when set.
_LONGEST_NAME = 253
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")
# RFC 1123, 2.1: a host name's last label is never all-numeric, so that dotted-decimal text is
# always an address. Resolvers read more than dotted quads as IPv4 (glibc's getaddrinfo(), for
# both clients, through inet_aton()): "010.0.0.1" is 8.0.0.1 (octal), "1.2.3" is 1.2.0.3,
# "2130706433" and "0x7f.1" are 127.0.0.1. A host whose last label is such a number (the
# WHATWG URL Standard's "ends in a number") is therefore accepted only as a dotted quad that
# inet_pton() reads, where the clients, the snapshot and a reader of the list all agree.
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
# What may be an address no node has (is_nowhere()): 0.0.0.0, an IPv4 multicast group, or
# any IPv6 text. ipaddress, ten times slower, decides only for these.
_MAYBE_NOWHERE = re.compile(r"0\.0\.0\.0|2(?:2[4-9]|3[0-9])\.[0-9.]+|[^:]*:.*")


@dataclass(frozen=True, slots=True)
class Node:
    """One memcached server: its name, port and, when known, its IP address.

    ``tls`` is true when the node accepts only TLS connections (ElastiCache with
    in-transit encryption, serverless caches).
    """

    host: str
    port: int = DEFAULT_PORT
    ip: str | None = None
    tls: bool = False

    @property
    def location(self) -> str:
        """Return the address a client connects to: ``"host:port"`` or ``"[v6]:port"``.

        The IP is used when known, so a client skips DNS; TLS nodes are always
        addressed by host name, because the certificate names the host.
        """
        address = self.host if self.tls or not self.ip else self.ip
        if ":" in address:
            return f"[{address}]:{self.port}"
        return f"{address}:{self.port}"

    def as_dict(self) -> dict[str, object]:
        """Return the node as plain JSON-ready data (snapshots, ``--json`` output)."""
        data: dict[str, object] = {"host": self.host, "port": self.port}
        if self.ip:
            data["ip"] = self.ip
        if self.tls:
            data["tls"] = True
        return data

    @classmethod
    def from_dict(cls, data: object) -> Node:
        """Build a node from :meth:`as_dict` output; raise ``ValueError`` on anything else.

        The rules of live answers (:func:`parse_node`): a snapshot or a rendered file must
        not smuggle in a LOCATION that a client reads otherwise (``/tmp/evil.sock`` is a
        unix socket to pylibmc, ``a;b,c`` two servers to Django). Messages show the
        offending value briefly (:func:`cache_settings.exceptions.brief`).
        """
        if not isinstance(data, dict):
            raise ValueError(f"node must be an object, not {type(data).__name__}")
        host, port, ip, tls = data.get("host"), data.get("port"), data.get("ip"), data.get("tls")
        if not isinstance(host, str) or not is_host(host):
            raise ValueError(f"node host must be a host name or an IP address, not {brief(host)}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"node port must be an integer in 1..65535, not {brief(port)}")
        if ip is not None and ip != "" and not (isinstance(ip, str) and is_ip(ip)):
            raise ValueError(f"node ip must be an IP address, not {brief(ip)}")
        if tls is not None and not isinstance(tls, bool):
            raise ValueError(f"node tls must be true or false, not {brief(tls)}")
        # A dotted quad that is_ip() took is written one way already; only IPv6 may vary.
        ip = canonical_host(ip) if ip and ":" in ip else ip or None
        return cls(canonical_host(host), port, ip, bool(tls))


def parse_port(text: str, *, where: str = "") -> int:
    """Return *text* as a TCP port, or raise ConfigurationError naming it."""
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        prefix = f"{where}: " if where else ""
        raise ConfigurationError(
            f"{prefix}invalid port {brief(text)}: expected an integer 1..65535"
        )
    return int(text)


def parse_node(text: str, *, default_port: int = DEFAULT_PORT, where: str = "") -> Node:
    """Parse ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` into a :class:`Node`.

    Equal servers give equal nodes, so that de-duplication and the order clients
    hash on do not depend on spelling: host names are lower-cased without the one
    trailing dot of a fully qualified name, and IPv6 addresses are written as RFC 5952
    says, on every Python version (:func:`canonical_host`).
    *where* names the setting or URL the text came from, for the error message.
    """
    prefix = f"{where}: " if where else ""
    value = text.strip()
    port = default_port
    if "@" in value:  # what precedes "@" may be a password: never shown
        raise ConfigurationError(
            f"{prefix}invalid node {redact_address(value)!r}: user info ('...@') is not "
            "supported in a node address"
        )
    parts = value.split()
    if ";" in value or (len(parts) > 1 and all(":" in part for part in parts)):
        raise ConfigurationError(
            f"{prefix}invalid node {brief(text)}: separate nodes with commas, as h1:11211,h2:11211"
        )
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            raise ConfigurationError(f"{prefix}invalid node {brief(text)}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigurationError(
                    f"{prefix}invalid node {brief(text)}: expected ':' after ']'"
                )
            port = parse_port(rest[1:], where=where)
        address = _ipv6(host)
        if address is None:
            raise ConfigurationError(
                f"{prefix}invalid node {brief(text)}: {brief(host)} is not an IPv6 address"
            )
        return _checked(Node(address, port), text, prefix)
    if value.count(":") > 1:
        address = _ipv6(value)
        if address is not None:
            return _checked(Node(address, port), text, prefix)
        # Brackets are the fix only for what may be an IPv6 address ("2001:db8::1:11211").
        hint = (
            "; write IPv6 addresses in brackets, as [::1]:11211"
            if "::" in value or _IPV6ISH.fullmatch(value)
            else ""
        )
        raise ConfigurationError(
            f"{prefix}invalid node {brief(text)}: too many ':' (expected host:port){hint}"
        )
    host, sep, port_text = value.partition(":")
    if sep:
        port = parse_port(port_text, where=where)
    if not host or not _HOSTNAME.fullmatch(host):
        raise ConfigurationError(
            f"{prefix}invalid node {brief(text)}: {brief(host)} is not a host name or IP"
        )
    if len(host.removesuffix(".")) > _LONGEST_NAME:
        raise ConfigurationError(
            f"{prefix}invalid node {brief(text)}: a host name is at most {_LONGEST_NAME} "
            f"characters (RFC 1035), not {len(host.removesuffix('.'))}; no resolver looks up a "
            "longer one"
        )
    if _ends_in_number(host):
        try:  # what glibc's resolver makes of it, as the clients would connect
            reading = f"; resolvers read it as {socket.inet_ntoa(socket.inet_aton(host))}"
        except OSError:
            reading = ""
        raise ConfigurationError(
            f"{prefix}invalid node {brief(text)}: {brief(host)} ends in a number but is not "
            "an IPv4 address a.b.c.d (each part 0..255, no leading zeros), and a host "
            f"name's last label is never a number (RFC 1123){reading}"
        )
    # "mc.example.com." and "mc.example.com" name the same server (RFC 1034, 3.1).
    return _checked(Node(host.lower().removesuffix("."), port), text, prefix)


def _checked(node: Node, text: str, prefix: str) -> Node:
    # One rule for hosts, live or read back from a snapshot (Node.from_dict): a node whose
    # snapshot could not be read back would have no fallback. parse_node() has matched the
    # host as a name or an IPv6 address already, so of is_host() only what those matches
    # leave open is checked here: the length, and (in an IPv6 zone) printable, no spaces.
    host = node.host
    if len(host) > _LONGEST_HOST or not host.isprintable() or " " in host:
        raise ConfigurationError(
            f"{prefix}invalid node {brief(text)}: a host is at most {_LONGEST_HOST} "
            "characters, printable, without spaces"
        )
    return node


def is_host(text: str) -> bool:
    """Return True when *text* is what :func:`parse_node` accepts as a host.

    That is an RFC 1123 host name (underscores allowed) of at most 253 characters without
    its trailing dot (RFC 1035) or an IP address, IPv6 without
    brackets: never a path (``/tmp/mc.sock``, which clients read as a unix socket), a
    list (``a,b``, ``a;b``) or ``host:port``. Sources whose replies name hosts without
    going through :func:`parse_node` (the AWS API, SRV targets, snapshot files) check
    them with this.
    """
    if len(text) > _LONGEST_HOST:
        return False
    if _HOSTNAME.fullmatch(text):
        return len(text.removesuffix(".")) <= _LONGEST_NAME and not _ends_in_number(text)
    return is_ip(text)


def _ends_in_number(name: str) -> bool:
    """Return True when *name* (matched as a host name) ends in a number but is no IPv4 address.

    See ``_NUMBER``: such a name is read by resolvers as an address other than it shows.
    """
    last = name.removesuffix(".").rpartition(".")[2]
    # Every number starts with a digit ("0x7f" too): most names are settled without a regex.
    if not ("0" <= last[:1] <= "9") or not _NUMBER.fullmatch(last):
        return False
    try:
        socket.inet_pton(socket.AF_INET, name.removesuffix("."))
    except OSError:
        return True
    return False


def is_nowhere(text: str) -> bool:
    """Return True when *text* is an IP address that no memcached node has.

    That is the unspecified address (``0.0.0.0``, ``::``: a client connecting to it reaches
    its own host, so each web server would use a cache of its own) or a multicast group
    (``224.0.0.0/4``, ``ff00::/8``: no TCP server). A source that answers one (a service
    registered with its bind address, a DNS filter's ``0.0.0.0``) is not telling where a
    node is. An IPv4-mapped IPv6 address is the IPv4 address it maps (RFC 4291, 2.5.5.2):
    ``::ffff:0.0.0.0`` reaches this host as ``0.0.0.0`` does (Linux connects an IPv6 socket
    to it over IPv4), though ``ipaddress`` calls it neither unspecified nor multicast on any
    Python version up to 3.13.
    """
    if not _MAYBE_NOWHERE.fullmatch(text):
        return False
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_unspecified or address.is_multicast


def unique_sorted(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """Return *nodes* without duplicates, in one stable order.

    Every process must list the servers in the same order so that clients whose
    hashing depends on it (modula) send a key to the same server everywhere.
    """
    return tuple(sorted(set(nodes), key=_sort_key))


def _sort_key(node: Node) -> tuple[str, int, str, bool]:
    return (node.host, node.port, node.ip or "", node.tls)


def _ipv6(text: str) -> str | None:
    """Return *text* as one canonical IPv6 address text, or None if it is not one."""
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    if address.scope_id is not None and not _ZONE.fullmatch(address.scope_id):
        return None
    return _ipv6_text(address)


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    # RFC 5952: compressed, lower case, and an IPv4-mapped address in mixed notation (section
    # 5), as inet_ntop() writes it. ipaddress writes ::ffff:a00:1 before Python 3.13 and
    # ::ffff:10.0.0.1 from 3.13 on; processes on two versions would name, and so hash, one
    # server two ways.
    mapped = address.ipv4_mapped
    if mapped is None:
        return str(address)
    return f"::ffff:{mapped}" + (f"%{address.scope_id}" if address.scope_id else "")


def canonical_host(host: str) -> str:
    """Return the one spelling of *host* (which :func:`is_host` accepts) that nodes carry.

    Host names lower case without the trailing dot of a fully qualified name (RFC 1034,
    3.1); IP addresses as RFC 5952 writes them, on every Python version (``2001:DB8:0::1``
    is ``2001:db8::1``, ``::ffff:a00:1`` is ``::ffff:10.0.0.1``). Sources whose replies do not
    go through :func:`parse_node` (the AWS API, DNS) and snapshots read back use it, so that
    one server is one node whichever path named it.
    """
    if ":" in host:
        return _ipv6(host) or host
    return host.lower().removesuffix(".")


def is_ip(text: str) -> bool:
    """Return True when *text* is an IPv4 or IPv6 address (with a zone: ``fe80::1%eth0``;
    a zone is letters, digits, ``_``, ``.`` and ``-``).

    Fast for the common case (``inet_pton``, in C: a large file or reply holds many), and
    bounded: longer than 255 characters (the longest host :func:`is_host` takes), or
    holding a space or a control character, it is not one.
    """
    if len(text) > _LONGEST_HOST or not text.isprintable() or " " in text:
        return False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except OSError:
            pass
    return _ipv6(text) is not None  # what inet_pton refuses: an IPv6 address with a zone
