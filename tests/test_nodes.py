from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_settings import ConfigurationError, Node, parse_source
from cache_settings.nodes import is_host, parse_node, unique_sorted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cache-1.internal:11212", Node("cache-1.internal", 11212)),
        ("Cache-1.Internal", Node("cache-1.internal", 11211)),
        ("10.0.0.7:11211", Node("10.0.0.7", 11211)),
        ("10.0.0.7", Node("10.0.0.7", 11211)),
        ("[2001:db8::7]:11300", Node("2001:db8::7", 11300)),
        ("[::1]", Node("::1", 11211)),
        ("2001:db8::7", Node("2001:db8::7", 11211)),
        (" memcached_1 ", Node("memcached_1", 11211)),
        ("[2001:DB8::7]:11300", Node("2001:db8::7", 11300)),
        ("[2001:db8:0:0:0:0:0:7]", Node("2001:db8::7", 11211)),
        ("2001:DB8:0::7", Node("2001:db8::7", 11211)),
        ("mc.example.com.", Node("mc.example.com", 11211)),
        ("MC.Example.COM.:11212", Node("mc.example.com", 11212)),
    ],
)
def test_parse_node__accepts_host_port_forms(text: str, expected: Node) -> None:
    assert parse_node(text) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("host:0", "'0'"),
        ("host:65536", "'65536'"),
        ("host:http", "'http'"),
        ("host:", "''"),
        ("host:-1", "'-1'"),
        (":11211", "''"),
        ("bad host:11211", "'bad host'"),
        ("-leading.example:11211", "'-leading.example'"),
        ("[2001:db8::7:11211", "missing ']'"),
        ("[not-v6]:11211", "'not-v6'"),
        ("[::1]11211", "expected ':'"),
        ("2001:db8::zz", "brackets"),
        ("host:\uff11\uff12", "'\uff11\uff12'"),
        ("mc.example.com..:11211", "'mc.example.com..'"),
        (".:11211", "'.'"),
        ("h1:11211;h2:11211", "separate nodes with commas"),
        ("h1:11211 h2:11211", "separate nodes with commas"),
    ],
)
def test_parse_node__names_the_bad_value(text: str, named: str) -> None:
    with pytest.raises(
        ConfigurationError, match=f"LOCATION-X: .*{named}".replace("[", r"\[").replace("(", r"\(")
    ):
        parse_node(text, where="LOCATION-X")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("[2001:db8::1]:11211", "2001:db8:0:0:0:0:0:1"),
        ("2001:DB8::1", "[2001:0db8::0001]"),
        ("[::FFFF:10.0.0.1]", "[::ffff:a00:1]"),
        ("::ffff:10.0.0.1", "[::ffff:a00:1]:11211"),
        ("mc.example.com.", "mc.example.com"),
        ("MC.example.com.:11211", "mc.EXAMPLE.com"),
    ],
)
def test_parse_node__one_server_written_two_ways_is_one_node(one: str, other: str) -> None:
    assert parse_node(one) == parse_node(other)
    assert len(unique_sorted([parse_node(one), parse_node(other)])) == 1


def test_parse_node__ipv6_is_compressed_lower_case() -> None:
    node = parse_node("[2001:0DB8:0000:0000:0000:0000:0000:00AB]:11300")

    assert node == Node("2001:db8::ab", 11300)
    assert node.location == "[2001:db8::ab]:11300"


def test_node_location__prefers_ip_brackets_v6_and_uses_hostname_under_tls() -> None:
    assert Node("a.example", 11211).location == "a.example:11211"
    assert Node("a.example", 11211, ip="10.1.2.3").location == "10.1.2.3:11211"
    assert Node("a.example", 11211, ip="2001:db8::1").location == "[2001:db8::1]:11211"
    assert Node("a.example", 11211, ip="10.1.2.3", tls=True).location == "a.example:11211"


def test_unique_sorted__removes_duplicates_and_ignores_input_order() -> None:
    nodes = [Node("b", 1), Node("a", 2), Node("b", 1), Node("a", 1, ip="10.0.0.1"), Node("a", 1)]

    result = unique_sorted(nodes)

    assert result == (Node("a", 1), Node("a", 1, ip="10.0.0.1"), Node("a", 2), Node("b", 1))
    assert unique_sorted(reversed(nodes)) == result


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"port": 11211},
        {"host": "", "port": 11211},
        {"host": "a", "port": "11211"},
        {"host": "a", "port": True},
        {"host": "a", "port": 70000},
        {"host": "a", "port": 1, "ip": 5},
        {"host": "a", "port": 1, "tls": "yes"},
        {"host": "/tmp/evil.sock", "port": 1},  # pylibmc reads a path as a unix socket
        {"host": "a;b,c", "port": 1},
        {"host": "a:b:c", "port": 1},
        {"host": "a", "port": 1, "ip": "not an ip"},
    ],
)
def test_node_from_dict__rejects_malformed_data(data: object) -> None:
    with pytest.raises(ValueError, match="node"):
        Node.from_dict(data)


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("mc-1.example.com", True),
        ("10.0.0.1", True),
        ("2001:db8::1", True),
        ("fe80::1%eth0", True),
        ("consul_node_1", True),
        ("/tmp/mc.sock", False),
        ("a,b", False),
        ("a;b", False),
        ("a:1", False),
        ("[::1]", False),
        ("", False),
        ("a" * 256, False),
    ],
)
def test_is_host__accepts_what_parse_node_accepts(host: str, valid: bool) -> None:
    assert is_host(host) is valid
    if valid:
        assert parse_node(f"[{host}]" if ":" in host else host).port == 11211


def test_node_as_dict__round_trips() -> None:
    for node in (Node("a", 1), Node("a", 2, ip="::1"), Node("a", 3, tls=True)):
        assert Node.from_dict(node.as_dict()) == node


@pytest.mark.parametrize(
    ("text", "says", "not_said"),
    [
        ("host:11211:1", "too many ':' (expected host:port)", "brackets"),
        ("cfg.example.com:11211:1", "too many ':'", "brackets"),
        ("h1:11211;h2:11211", "separate nodes with commas", "brackets"),
        ("h1;h2", "separate nodes with commas", "is not a host name"),
        ("2001:db8::zz", "write IPv6 addresses in brackets", None),
        ("cafe:beef:1", "write IPv6 addresses in brackets", None),
    ],
)
def test_parse_node__hint_fits_the_mistake(text: str, says: str, not_said: str | None) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_node(text, where="LOCATION-X")

    assert says in str(raised.value)
    if not_said is not None:
        assert not_said not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["elasticache://cfg.example:11211:1", "memcached://h1:11211;h2:11211"]
)
def test_parse_source__no_ipv6_hint_for_urls_that_are_not_ipv6(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_source(url)

    assert "IPv6" not in str(raised.value)


# Text shaped like node addresses: host names with long labels, IPv6 with zones, ports.
_LABEL = st.text(alphabet="abcXYZ019-_", min_size=1, max_size=70)
_HOSTS = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=6).map(".".join),
    st.lists(st.text(alphabet="abc019", min_size=50, max_size=63), min_size=3, max_size=6).map(
        ".".join
    ),
    st.builds(
        "[fe80::{:x}%{}]".format,
        st.integers(0, 0xFFFF),
        st.text(alphabet="eth0abc;,.%-", min_size=1, max_size=300)
        | st.text(alphabet="eth0", min_size=50, max_size=300),
    ),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
    st.text(max_size=300),
)
_NODE_TEXT = st.builds(
    lambda host, port: host if port is None else f"{host}:{port}",
    _HOSTS,
    st.none() | st.integers(1, 65535),
)


@given(_NODE_TEXT)
@settings(max_examples=400, deadline=None)
def test_parse_node__every_node_it_accepts_reads_back_from_a_snapshot(text: str) -> None:
    """One rule for hosts: a live answer's node must survive its snapshot (Node.from_dict).

    Before: a 261-character host name, or an IPv6 address with a 60-character zone, was
    served live and refused on read-back, so its snapshot could never be written.
    """
    refused = ""
    try:
        node = parse_node(text)
    except ConfigurationError as exc:
        refused = str(exc)
    if refused:
        assert len(refused) < 400  # a bounded message, whatever the text
        return
    assert is_host(node.host)
    assert Node.from_dict(node.as_dict()) == node


def test_parse_node__host_over_255_characters_is_refused() -> None:
    long_name = ".".join(["a" * 63] * 4) + ".example"  # 263 characters

    with pytest.raises(ConfigurationError, match="at most 253"):
        parse_node(long_name)
    with pytest.raises(ConfigurationError, match="at most 255"):
        parse_node("[fe80::1%" + "e" * 260 + "]")


# Four labels of 63, 63, 63 and 62 characters: 254 characters, 256 octets on the wire.
NAME_254 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62])


def test_parse_node__a_name_longer_than_dns_allows_is_refused() -> None:
    """RFC 1035: 253 characters at most (255 octets on the wire); 254 and 255 were accepted."""
    longest = NAME_254[1:]

    assert parse_node(longest).host == longest
    assert parse_node(longest + ".").host == longest
    assert is_host(longest)
    with pytest.raises(ConfigurationError, match="at most 253 characters"):
        parse_node(NAME_254 + ":11211")
    assert not is_host(NAME_254)
    with pytest.raises(ValueError, match="host"):
        Node.from_dict({"host": NAME_254, "port": 11211})


def test_parse_node__quotes_a_long_or_hostile_text_briefly_on_one_line() -> None:
    hostile = "x" * 100_000 + "\nCRITICAL django.security: forged"

    with pytest.raises(ConfigurationError) as raised:
        parse_node(hostile)

    message = str(raised.value)
    assert len(message) < 300
    assert "\n" not in message


# Text that glibc's getaddrinfo() (through inet_aton()) reads as an IPv4 address other than
# it shows, or that ends in a number without being an address (RFC 1123, 2.1).
_NUMERIC_NAMES = [
    "010.0.0.1",  # octal: 8.0.0.1
    "01.2.3.4",
    "1.2.3",  # 1.2.0.3
    "10.1",  # 10.0.0.1
    "2130706433",  # 127.0.0.1
    "0x7f.1",  # 127.0.0.1
    "0X7F.0.0.1",
    "999.1.1.1",
    "256.0.0.1",
    "mc.example.123",
    "mc.0x1f",
    "1.2.3.4.5",
]


@pytest.mark.parametrize("host", _NUMERIC_NAMES)
def test_parse_node__a_name_ending_in_a_number_must_be_a_dotted_quad(host: str) -> None:
    with pytest.raises(ConfigurationError, match="ends in a number"):
        parse_node(f"{host}:11211")
    assert not is_host(host)
    with pytest.raises(ValueError, match="host"):
        Node.from_dict({"host": host, "port": 11211})


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "255.255.255.255", "127.0.0.1."])
def test_parse_node__dotted_quads_stay_addresses(host: str) -> None:
    assert parse_node(host).host == host.removesuffix(".")
    assert is_host(host)


@pytest.mark.parametrize("host", ["mc-1.example", "0x7f.example", "123abc", "mc.1e5", "a1.b2"])
def test_parse_node__names_with_digits_that_do_not_end_in_a_number_stay_names(host: str) -> None:
    assert parse_node(host).host == host
    assert is_host(host)


@given(
    st.lists(
        st.sampled_from(["0", "1", "01", "010", "255", "256", "0x7f", "0x", "4294967295", "a"]),
        min_size=1,
        max_size=5,
    ).map(".".join)
)
@settings(max_examples=300, deadline=None)
def test_parse_node__a_host_the_resolver_reads_as_ipv4_is_that_address(text: str) -> None:
    """Whatever parse_node accepts, the clients' resolver reads as the same address or a name.

    Before: "010.0.0.1" was a node named 010.0.0.1, which libmemcached and pymemcache
    (getaddrinfo, through inet_aton) connect to as 8.0.0.1.
    """
    try:
        node = parse_node(text)
    except ConfigurationError:
        return
    try:
        packed = socket.inet_aton(node.host)
    except OSError:
        return  # a name the resolver looks up in DNS
    assert socket.inet_ntoa(packed) == node.host


@pytest.mark.parametrize(
    "text", ["[::ffff:10.0.0.1]", "[::ffff:a00:1]", "[::FFFF:0a00:0001]", "::ffff:10.0.0.1"]
)
def test_parse_node__an_ipv4_mapped_address_has_one_spelling_on_every_python(text: str) -> None:
    """RFC 5952, section 5: mixed notation. ipaddress wrote ::ffff:a00:1 before Python 3.13."""
    assert parse_node(text).host == "::ffff:10.0.0.1"


def test_node_from_dict__reads_back_any_spelling_of_a_host_as_its_one_spelling() -> None:
    """A snapshot written by another Python version (or by hand) names the server as live."""
    node = Node.from_dict({"host": "::ffff:a00:1", "port": 11211, "ip": "2001:DB8:0::1"})

    assert node == Node("::ffff:10.0.0.1", 11211, "2001:db8::1")
    assert Node.from_dict({"host": "MC-1.Example.", "port": 1}) == Node("mc-1.example", 1)


@pytest.mark.parametrize(
    ("host", "read_as"),
    [("010.0.0.1", "8.0.0.1"), ("1.2.3", "1.2.0.3"), ("0x7f.1", "127.0.0.1"), ("999.1.1.1", None)],
)
def test_parse_node__a_numeric_name_error_says_what_the_resolver_reads(
    host: str, read_as: str | None
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_node(host)

    reading = "resolvers read it as"
    if read_as is None:
        assert reading not in str(raised.value)
    else:
        assert str(raised.value).endswith(f"{reading} {read_as}")


@pytest.mark.parametrize("zone", ["a;b", "a,b", "x]", "a:b", "eth0/1", "é"])
def test_is_host__an_ipv6_zone_with_a_separator_is_refused_as_parse_node_refuses_it(
    zone: str,
) -> None:
    """A snapshot or an API reply (is_host) took any zone ipaddress takes ("fe80::1%a;b",
    two servers to Django; "::1%x]", a LOCATION no client reads), and parse_node took
    "[fe80::1%a,b]"; a zone is an interface name or index, as fe80::1%eth0.100."""
    host = f"fe80::1%{zone}"

    assert not is_host(host)
    with pytest.raises(ValueError, match="host name or an IP"):
        Node.from_dict({"host": host, "port": 11211})
    with pytest.raises(ConfigurationError, match="not an IPv6 address|separate nodes|after .]."):
        parse_node(f"[{host}]:11211")
    assert is_host("fe80::1%eth0.100")
    assert is_host("fe80::1%br-x_1")
    assert is_host("fe80::1%3")
