"""DNS sources against hostile nameservers: dnsmasq where it can say it, else a scripted responder.

Whatever a nameserver sends, a lookup gives nodes or a SourceError naming the nameserver and
what it did, on one printable line, within its timeout.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import pytest

from cache_settings import ConfigurationError, Node, SourceError, parse_source
from cache_settings.exceptions import LONGEST_MESSAGE
from cache_settings.sources.dns import DNS
from tests.servers.dns import DNSServer
from tests.servers.dns_scripted import Script, ScriptedDNS, answer

Start = Callable[[Script], ScriptedDNS]


def source(url: str, nameserver: str) -> DNS:
    built = parse_source(f"{url}?nameserver={nameserver}")
    assert isinstance(built, DNS)
    return built


def _name(query: dns.message.Message) -> str:
    return str(query.question[0].name)


def _type(query: dns.message.Message) -> str:
    return str(dns.rdatatype.to_text(query.question[0].rdtype))


def one_address(query: dns.message.Message, tcp: bool) -> list[bytes]:
    """The honest server: 10.0.0.1 for every A question, no AAAA records."""
    if _type(query) == "A":
        return [answer(query, f"{_name(query)} 60 IN A 10.0.0.1")]
    return [answer(query)]


def _failure(lookup: DNS, timeout: float = 2.0) -> SourceError:
    with pytest.raises(SourceError) as raised:
        lookup.resolve(timeout=timeout)
    message = str(raised.value)
    assert message.isprintable()
    assert len(message) <= LONGEST_MESSAGE
    return raised.value


# --- a forged or stray datagram ------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(lambda wire: bytes([wire[0] ^ 0xFF]) + wire[1:], id="another-id"),
        pytest.param(lambda wire: b"\x00" * 5, id="not-dns"),
    ],
)
def test_dns__a_forged_datagram_before_the_reply_is_ignored(
    scripted_dns: Start, forged: Callable[[bytes], bytes]
) -> None:
    """An off-path sender that guesses the port must not fail the nameserver (RFC 5452 9.1)."""

    def script(query: dns.message.Message, tcp: bool) -> list[bytes]:
        replies = one_address(query, tcp)
        return [forged(replies[0]), *replies]

    server = scripted_dns(script)

    assert source("dns://mc.test:11211", server.address).resolve(timeout=2) == [
        Node("10.0.0.1", 11211)
    ]


def test_dns__a_reply_to_another_question_is_not_taken_for_the_answer(scripted_dns: Start) -> None:
    def script(query: dns.message.Message, tcp: bool) -> list[bytes]:
        other = dns.message.make_query("evil.test.", _type(query))
        other.id = query.id
        return one_address(other, tcp)

    server = scripted_dns(script)
    error = _failure(source("dns://mc.test:11211", server.address), timeout=0.5)

    assert "timeout" in error.reason
    assert server.address in error.reason


# --- TCP after a truncated reply -----------------------------------------------------------


def _truncated_then(tcp_replies: Script) -> Script:
    def script(query: dns.message.Message, tcp: bool) -> list[bytes]:
        if tcp:
            return tcp_replies(query, tcp)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC
        return [reply.to_wire()]

    return script


def test_dns__a_tcp_connection_closed_without_a_reply_is_a_source_error(
    scripted_dns: Start,
) -> None:
    server = scripted_dns(_truncated_then(lambda query, tcp: []))

    error = _failure(source("dns://mc.test:11211", server.address))

    assert f"{server.address} closed the TCP connection before its reply was whole" in str(error)


def test_dns__the_tcp_answer_after_a_truncated_one_is_the_answer(scripted_dns: Start) -> None:
    server = scripted_dns(_truncated_then(one_address))

    nodes = source("dns://mc.test:11211", server.address).resolve(timeout=2)

    assert nodes == [Node("10.0.0.1", 11211)]
    assert ("mc.test.", "A", True) in server.queries


def test_dns__a_tcp_reply_truncated_too_is_a_source_error_not_a_shorter_list(
    scripted_dns: Start,
) -> None:
    """A server whose answer does not fit even over TCP sets TC there too and sends some of
    its records (RFC 1035 4.1.1); those were taken as all of them: one node of many."""

    def cut_over_tcp(query: dns.message.Message, tcp: bool) -> list[bytes]:
        if _type(query) == "AAAA":
            return [answer(query)]
        reply = dns.message.from_wire(answer(query, f"{_name(query)} 60 IN A 10.0.0.1"))
        reply.flags |= dns.flags.TC
        return [reply.to_wire()]

    server = scripted_dns(_truncated_then(cut_over_tcp))

    error = _failure(source("dns://mc.test:11211", server.address))

    assert f"{server.address} sent a truncated reply over TCP too" in str(error)
    assert ("mc.test.", "A", True) in server.queries


# --- SRV records ---------------------------------------------------------------------------


def test_dnssrv__a_record_with_port_0_fails_the_attempt(dns_server: DNSServer) -> None:
    """RFC 2782 lets a port be 0; no memcached listens there, and a snapshot refuses it."""
    target, service = dns_server.name("node"), f"_memcached._tcp.{dns_server.name('svc')}"
    dns_server.set_addresses(target, ["10.0.2.1"])
    dns_server.set_srv(service, [(target, 0, 0, 0)])

    for scheme in ("dnssrv", "dnssrvnoa"):
        error = _failure(source(f"{scheme}://{service}", dns_server.address))
        assert f"gives port 0 for {target}" in error.reason
        assert f"{scheme}://{service}:PORT" in error.reason

    # An explicit port replaces the records' ports, so theirs does not matter.
    assert source(f"dnssrv://{service}:11211", dns_server.address).resolve(timeout=2) == [
        Node(target, 11211, "10.0.2.1")
    ]


def test_dns__nxdomain_for_aaaa_beside_a_records_is_that_servers_mistake(
    scripted_dns: Start,
) -> None:
    """Some servers answer NXDOMAIN for the type they do not serve (RFC 8020 says it means
    no records of any type): the lookup failed, for good, though the A records were there."""

    def script(query: dns.message.Message, tcp: bool) -> list[bytes]:
        if _type(query) == "A":
            return [answer(query, f"{_name(query)} 60 IN A 10.0.0.1")]
        return [answer(query, rcode=dns.rcode.NXDOMAIN)]

    server = scripted_dns(script)

    assert source("dns://mc.test:11211", server.address).resolve(timeout=2) == [
        Node("10.0.0.1", 11211)
    ]


def test_dns__nxdomain_for_both_types_is_still_permanent(scripted_dns: Start) -> None:
    server = scripted_dns(lambda query, tcp: [answer(query, rcode=dns.rcode.NXDOMAIN)])

    with pytest.raises(SourceError, match="NXDOMAIN: mc.test does not exist") as raised:
        source("dns://mc.test:11211", server.address).resolve(timeout=2)
    assert raised.value.permanent


# --- names DNS cannot carry ----------------------------------------------------------------


def test_dns__a_name_too_long_for_dns_is_a_configuration_error() -> None:
    """254 characters pass the label rules; dnspython raised NameTooLong on every attempt."""
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62])

    for url in (f"dns://{name}:11211", f"dnssrv+{name}", f"dnssrvnoa://{name}."):
        with pytest.raises(ConfigurationError, match="at most 253 characters"):
            parse_source(f"{url}?nameserver=127.0.0.1:53")


def test_dns__the_longest_name_dns_allows_is_looked_up(scripted_dns: Start) -> None:
    """253 characters is a name like any other."""
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    server = scripted_dns(one_address)

    nodes = source(f"dns://{name}:11211", server.address).resolve(timeout=2)

    assert nodes == [Node("10.0.0.1", 11211)]
