"""DNS discovery: ``dns://HOST:PORT`` (A/AAAA), ``dnssrv://NAME`` and ``dnssrvnoa://NAME`` (SRV).

The three kinds are those of Grafana Mimir, Loki, Thanos and Cortex ("About DNS service
discovery" in their documentation), whose spellings ``dns+HOST:PORT``, ``dnssrv+NAME`` and
``dnssrvnoa+NAME`` :func:`~cache_settings.sources.parse_source` accepts as the same sources:

- ``dns``: every A and AAAA record of HOST is a node on PORT (a Kubernetes headless Service
  publishes one per ready pod).
- ``dnssrv``: the SRV records of NAME (RFC 2782); every target of the lowest priority value,
  with its port, then every A and AAAA record of each target.
- ``dnssrvnoa``: the same targets, used as host names (each client resolves them).

An explicit ``:PORT`` on an SRV name replaces the records' ports, as Thanos and dskit do.
Names are fully qualified: search domains are never tried (Mimir documents the same), and
they are looked up in DNS only, never in ``/etc/hosts`` (``dns://localhost`` is NXDOMAIN).

Decisions this module documents:

- dnspython builds, sends and parses the messages (``dns.message``, ``dns.query``), and
  follows CNAME chains (``Message.resolve_chaining``). The retry loop over the nameservers is
  ours: ``Resolver.resolve(lifetime=)`` sleeps its back-off after the last try before it
  checks the lifetime, so it overran ``lifetime=5`` by 0.4 s against a silent server
  (dnspython 2.9; up to 2 s with longer lifetimes). Here no try outlasts the time left.
- Every lookup must succeed: a failed AAAA query or an SRV target without addresses fails the
  attempt, as Thanos does, rather than returning a shorter list.
- Replies use EDNS0 with a 1232-byte payload (DNS Flag Day 2020); a truncated reply is asked
  again over TCP; one truncated over TCP too (TC set, RFC 1035 4.1.1: some records only) fails
  that nameserver. All replies of one attempt together are capped at ``max_reply_size``.
- A UDP datagram that is not the reply (another ID or question, not DNS at all) is dropped
  and the wait goes on, as dnspython's ``Resolver`` and stub resolvers do (RFC 5452 9.1): a
  forged packet cannot fail a nameserver. A TCP connection closed before the reply is whole
  fails that nameserver only.
- An SRV record with port 0 (which RFC 2782 allows) fails the attempt unless the URL gives
  the port: no memcached listens there, and the snapshot refuses such a node.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, quote, unquote

from .. import attempt
from ..exceptions import ConfigurationError, SourceError, excerpt
from ..nodes import DEFAULT_PORT, Node, canonical_host, is_host, is_ip, parse_node, unique_sorted
from ..tls import TLSConfig
from . import Traits
from ._dns_hints import no_records, nxdomain
from ._url import NODE_TLS_OPTIONS, Query, node_tls_params

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["DNS"]

Scheme = Literal["dns", "dnssrv", "dnssrvnoa"]
_SCHEMES: tuple[Scheme, ...] = ("dns", "dnssrv", "dnssrvnoa")
_DNS_PORT = 53
#: Seconds one try waits for one nameserver when the system configuration sets none
#: (dnspython's default, and the spacing of retransmissions over UDP).
TRY_TIMEOUT = 2.0
_EDNS_PAYLOAD = 1232


@dataclass(frozen=True, slots=True)
class DNS:
    """Memcached nodes published in DNS: A/AAAA records, or SRV records.

    Args:
        name: the name to look up, fully qualified (``memcached.cache.svc.cluster.local``,
            ``_memcached._tcp.service.consul``).
        port: the nodes' port for ``dns`` (default 11211); for the SRV kinds, None takes
            each record's port and a number replaces them all.
        scheme: ``"dns"`` (A/AAAA), ``"dnssrv"`` (SRV, then A/AAAA of each target) or
            ``"dnssrvnoa"`` (SRV targets as host names).
        nameserver: ``(ip, port)`` of the server to ask; None reads the system resolver
            configuration (``/etc/resolv.conf``) at every attempt.
        node_tls: the nodes speak only TLS, verified with these settings
            (``node_tls=true&node_ca=…``); SRV nodes are then addressed by target name.
    """

    name: str
    port: int | None = None
    scheme: Scheme = "dns"
    nameserver: tuple[str, int] | None = None
    node_tls: TLSConfig | None = None

    def __post_init__(self) -> None:
        if self.scheme not in _SCHEMES:
            raise ConfigurationError(f"DNS scheme must be one of {', '.join(_SCHEMES)}")
        where = f"{self.scheme}://{self.name}"
        node = parse_node(self.name, where=where)
        if ":" in self.name or is_ip(node.host):
            raise ConfigurationError(
                f"{where}: {self.name!r} is not a DNS name; list fixed addresses with "
                "memcached://HOST:PORT"
            )
        port = DEFAULT_PORT if self.port is None and self.scheme == "dns" else self.port
        if port is not None and (type(port) is not int or not 0 < port < 65536):  # not True
            raise ConfigurationError(f"{where}: port must be 1..65535, not {port!r}")
        object.__setattr__(self, "name", node.host)
        object.__setattr__(self, "port", port)
        if self.nameserver is not None:
            given = self.nameserver
            ip, ns_port = given if isinstance(given, tuple) and len(given) == 2 else ("", 0)
            if not (
                isinstance(ip, str) and is_ip(ip) and type(ns_port) is int and 0 < ns_port < 65536
            ):
                raise ConfigurationError(
                    f"{where}: nameserver must be an (IP address, port) tuple, as in "
                    f"('10.0.0.2', 53), not {excerpt(repr(given), 60)}"
                )
            object.__setattr__(self, "nameserver", (str(ipaddress.ip_address(ip)), ns_port))

    @classmethod
    def from_url(cls, url: SplitResult) -> DNS:
        """Build from ``dns://HOST[:PORT]``, ``dnssrv://NAME[:PORT]``, ``dnssrvnoa://NAME[:PORT]``.

        Options: ``nameserver=IP[:PORT]`` (``[v6]:PORT`` for IPv6; port 53 by default), and
        ``node_tls=true&node_ca=…&node_cert=…&node_key=…`` for nodes that speak only TLS.
        """
        scheme = url.scheme.lower()
        query = Query(url, {"nameserver", *NODE_TLS_OPTIONS})
        where = query.where
        example = "dns://HOST:PORT" if scheme == "dns" else f"{scheme}://_memcached._tcp.NAME"
        if url.path not in ("", "/") or url.fragment or "@" in url.netloc or not url.netloc:
            raise ConfigurationError(f"{where}: expected {example}[?nameserver=IP:PORT]")
        if scheme not in _SCHEMES:
            raise ConfigurationError(f"{where}: not a DNS scheme")
        node = parse_node(unquote(url.netloc), where=where)
        if is_ip(node.host):
            raise ConfigurationError(
                f"{where}: {node.host} is an IP address, not a name to look up; "
                "list fixed addresses with memcached://HOST:PORT"
            )
        explicit = ":" in url.netloc
        nameserver = None
        text = query.get("nameserver")
        if text is not None:
            server = parse_node(text, default_port=_DNS_PORT, where=f"{where}: nameserver")
            if not is_ip(server.host):
                raise ConfigurationError(
                    f"{where}: nameserver={text!r} must be an IP address (and port), "
                    "such as 10.96.0.10 or 127.0.0.1:8600"
                )
            nameserver = (server.host, server.port)
        return cls(
            node.host, node.port if explicit else None, scheme, nameserver, query.tls("node_")
        )

    @property
    def url(self) -> str:
        """Return the canonical URL (also the snapshot key); ``dns+`` spellings become ``dns://``."""
        netloc = self.name if self.port is None else f"{self.name}:{self.port}"
        fields = [f"nameserver={_address(*self.nameserver)}"] if self.nameserver else []
        fields += [f"{k}={quote(v)}" for k, v in node_tls_params(self.node_tls)]
        query = f"?{'&'.join(fields)}" if fields else ""
        return f"{self.scheme}://{netloc}{query}"

    @property
    def traits(self) -> Traits:
        """TLS to the nodes when ``node_tls`` says so; otherwise nothing to declare."""
        return Traits(node_tls=self.node_tls)

    def resolve(self, timeout: float) -> list[Node]:
        """Look the name up once; return within *timeout* seconds or raise SourceError.

        Raises SourceError that says which failure it was: NXDOMAIN (the name does not
        exist), no records of the asked type, a nameserver's SERVFAIL or REFUSED, or no
        answer in time. ConfigurationError when dnspython is not installed.
        """
        modules = _import_dnspython()
        current = attempt.current()
        if current is not None:
            timeout = min(timeout, current.left())
        lookup = _Lookup(modules, self, timeout, current)
        if self.scheme == "dns":
            assert self.port is not None
            nodes = [Node(ip, self.port) for ip in lookup.addresses(self.name)]
        else:
            nodes = []
            addresses: dict[str, list[str]] = {}  # a target listed twice is looked up once
            for target, port in lookup.srv(self.name):
                port = self.port or port
                if not port:  # RFC 2782 allows 0; no memcached listens there
                    raise SourceError(
                        self.url,
                        f"SRV record of {self.name} gives port 0 for {target}; "
                        f"fix the record, or set the port with {self.scheme}://{self.name}:PORT",
                    )
                if self.scheme == "dnssrvnoa":
                    nodes.append(Node(target, port))
                    continue
                if target not in addresses:
                    addresses[target] = lookup.addresses(target, srv_of=self.name)
                nodes.extend(Node(target, port, ip) for ip in addresses[target])
        if self.node_tls is not None:  # addressed by name then (Node.location)
            nodes = [Node(node.host, node.port, node.ip, tls=True) for node in nodes]
        return list(unique_sorted(nodes))


class _Lookup:
    """The queries of one attempt: one deadline, one reply budget, the nameservers to ask."""

    def __init__(
        self, dns: ModuleType, source: DNS, timeout: float, budget: attempt.Attempt | None
    ) -> None:
        self.dns = dns
        self.source = source.url
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.max_size = budget.max_reply_size if budget else attempt.DEFAULT_MAX_REPLY_SIZE
        self.size = 0
        self.try_timeout = TRY_TIMEOUT
        if source.nameserver is not None:
            self.servers = [source.nameserver]
        else:
            self.servers = self._system_servers()

    def _system_servers(self) -> list[tuple[str, int]]:
        dns = self.dns
        try:
            config = dns.resolver.Resolver()
        except dns.exception.DNSException as exc:
            raise SourceError(
                self.source,
                f"cannot read the system resolver configuration ({exc}); "
                "name a server with ?nameserver=IP:PORT",
            ) from None
        self.try_timeout = float(config.timeout)
        servers = []
        for server in config.nameservers:
            if isinstance(server, str) and is_ip(server):
                servers.append((server, int(config.nameserver_ports.get(server, config.port))))
            elif isinstance(server, dns.nameserver.Do53Nameserver):
                servers.append((server.address, int(server.port)))
        if not servers:
            raise SourceError(
                self.source,
                "the system resolver configuration names no nameserver; "
                "name one with ?nameserver=IP:PORT",
            )
        return servers

    def addresses(self, name: str, srv_of: str | None = None) -> list[str]:
        """Return every A and AAAA address of *name*; SourceError when it has none.

        *srv_of* is the SRV name whose record gave *name* as a target, for the messages.

        NXDOMAIN for one type while the other has records is that server's mistake (RFC
        8020: NXDOMAIN says the name has no records of any type); the records are used.
        """
        found: list[str] = []
        missing: SourceError | None = None
        for rdtype in ("A", "AAAA"):
            try:
                found += [record.address for record in self.query(name, rdtype, srv_of) or ()]
            except SourceError as exc:
                if not exc.permanent:  # only NXDOMAIN is
                    raise
                missing = exc
        if not found:
            raise missing or SourceError(self.source, no_records(name, "A or AAAA"))
        return [canonical_host(address) for address in found]  # dnspython gives valid ones

    def srv(self, name: str) -> list[tuple[str, int]]:
        """Return ``(target, port)`` of every SRV record with the lowest priority value."""
        records = list(self.query(name, "SRV") or ())
        # RFC 2782: a lone record with target "." says the service is not offered here.
        usable = [record for record in records if record.target.to_text() != "."]
        if not usable:
            raise SourceError(self.source, no_records(name, "SRV", only_dot=bool(records)))
        lowest = min(record.priority for record in usable)
        targets = [
            (record.target.to_text(omit_final_dot=True).lower(), int(record.port))
            for record in usable
            if record.priority == lowest
        ]
        for target, _ in targets:
            if not is_host(target):  # a label with odd bytes shows as "\\047" and the like
                raise SourceError(
                    self.source, f"SRV target {target!r:.100} of {name} is not a host name"
                )
        return targets

    def query(self, name: str, rdtype: str, srv_of: str | None = None) -> Any:
        """Return the answer RRset of *name*/*rdtype*, or None when it has no such records.

        Each nameserver is tried in turn until one answers, the way a stub resolver does;
        a server that fails (SERVFAIL, REFUSED, refused connection, garbage) is not asked
        again in this lookup; one that is silent is asked again until the deadline.
        """
        dns = self.dns
        qname = dns.name.from_text(name)  # absolute: no search domains
        failures: dict[str, str] = {}
        live = list(self.servers)
        while live:
            for server in list(live):
                where = _address(*server)
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(self.source, self._timeout(name, rdtype, failures))
                request = dns.message.make_query(qname, rdtype, use_edns=0, payload=_EDNS_PAYLOAD)
                try:
                    response = self._ask(request, server, min(left, self.try_timeout))
                except dns.exception.Timeout:
                    failures[where] = "no answer"
                    continue
                except (OSError, EOFError, dns.exception.DNSException) as exc:
                    # EOFError: a TCP connection closed before the whole reply came.
                    failures[where] = _describe(exc)
                    live.remove(server)
                    continue
                self.size += len(response.wire or b"")
                if self.size > self.max_size:
                    raise SourceError(
                        self.source,
                        f"replies larger than {self.max_size} bytes (max_reply_size)",
                    )
                if response.flags & dns.flags.TC:  # only a TCP reply gets here with it
                    failures[where] = "sent a truncated reply over TCP too (TC bit set)"
                    live.remove(server)
                    continue
                rcode = response.rcode()
                if rcode == dns.rcode.NXDOMAIN:
                    # Retrying within this resolution cannot make the name exist.
                    raise SourceError(
                        self.source, nxdomain(name, where, srv_of=srv_of), permanent=True
                    )
                if rcode != dns.rcode.NOERROR:
                    failures[where] = f"answered {dns.rcode.to_text(rcode)}"
                    live.remove(server)
                    continue
                try:
                    return response.resolve_chaining().answer
                except dns.exception.DNSException as exc:
                    failures[where] = _describe(exc)
                    live.remove(server)
        answers = "; ".join(f"{where} {what}" for where, what in failures.items())
        kind = "SERVFAIL" if "SERVFAIL" in answers else "no usable answer"
        raise SourceError(
            self.source, f"{kind}: no nameserver answered {name} {rdtype} ({answers})"
        )

    def _ask(self, request: Any, server: tuple[str, int], timeout: float) -> Any:
        dns = self.dns
        ip, port = server
        try:
            return dns.query.udp(
                request,
                ip,
                timeout=timeout,
                port=port,
                ignore_unexpected=True,
                raise_on_truncation=True,
                ignore_errors=True,  # a stray datagram is dropped (module docstring)
            )
        except dns.message.Truncated:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise dns.exception.Timeout() from None
            return dns.query.tcp(request, ip, timeout=min(left, self.try_timeout), port=port)

    def _timeout(self, name: str, rdtype: str, failures: dict[str, str]) -> str:
        servers = ", ".join(f"{where} {what}" for where, what in failures.items())
        return f"timeout: no answer for {name} {rdtype} within {self.timeout:.2f} s ({servers})"


def _import_dnspython() -> ModuleType:
    try:
        import dns.exception
        import dns.flags
        import dns.message
        import dns.name
        import dns.nameserver
        import dns.query
        import dns.rcode
        import dns.resolver
    except ImportError as exc:
        raise ConfigurationError(
            f'DNS sources need dnspython ({exc}); pip install "django-cache-settings[dns]"'
        ) from None
    return dns


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(exc, EOFError):
        return "closed the TCP connection before its reply was whole"
    if isinstance(exc, OSError):
        return f"cannot be reached ({exc.strerror or exc})"
    return f"sent a malformed reply ({excerpt(str(exc), 120)})"
