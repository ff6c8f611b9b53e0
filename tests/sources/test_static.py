from __future__ import annotations

import pytest

from cache_settings import ConfigurationError, Node, parse_source, resolve
from cache_settings.sources.static import Static
from cache_settings.tls import TLSConfig


def test_static__parses_sorts_and_deduplicates_nodes() -> None:
    source = parse_source("memcached://10.0.0.2:11211,10.0.0.1,10.0.0.2:11211,[::1]:11300")

    assert isinstance(source, Static)
    assert source.resolve(timeout=1) == [
        Node("10.0.0.1", 11211),
        Node("10.0.0.2", 11211),
        Node("::1", 11300),
    ]
    assert source.url == "memcached://10.0.0.1:11211,10.0.0.2:11211,[::1]:11300"
    assert source.backend is None


@pytest.mark.parametrize(
    ("scheme", "backend"), [("pylibmc", "pylibmc"), ("pymemcache", "pymemcache")]
)
def test_static__client_schemes_choose_the_backend(scheme: str, backend: str) -> None:
    source = parse_source(f"{scheme}://cache-a:11211")

    assert isinstance(source, Static)
    assert source.backend == backend
    assert source.url == f"{scheme}://cache-a:11211"


def test_static__tls_marks_nodes_and_keeps_tls_settings() -> None:
    source = parse_source("pymemcache://cache-a:11211?tls=true&ca=/etc/ca.pem")

    assert isinstance(source, Static)
    assert source.tls == TLSConfig(ca="/etc/ca.pem")
    assert source.resolve(timeout=1) == [Node("cache-a", 11211, tls=True)]
    assert source.url == "pymemcache://cache-a:11211?tls=true&ca=%2Fetc%2Fca.pem"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://", "no nodes"),
        ("memcached://a:11211/path", "unexpected path"),
        ("memcached://a:99999", "invalid port '99999'"),
        ("memcached://a:11211?weight=2", "unknown option 'weight'"),
        ("memcached://a?tls=maybe", "tls='maybe' must be true or false"),
        ("memcached://a?ca=/x.pem&tls=false", "need tls=true"),
        ("pylibmc://a?tls=true", "pylibmc cannot speak TLS"),
        ("pymemcache://a?tls=true&key=/k.pem", "key= needs cert="),
        ("redis://a:6379", "Unknown scheme 'redis://'. Known schemes: consul, dns, dnssrv"),
        # host:port without a scheme is a node, not the scheme "a" or "memcached" (a
        # Compose service's name): the error gives the memcached:// URL of those nodes.
        (
            "a:11211",
            "'a:11211' has none; for a fixed list of these nodes write memcached://a:11211",
        ),
        ("memcached:11211", "'memcached:11211' has none; .* write memcached://memcached:11211;"),
        ("h1:11211;h2", "'h1:11211;h2' has none; .* write memcached://h1:11211,h2;"),
        ("localhost", "needs a scheme"),
        ("consul:8500/memcached?token=s3", "needs a scheme, .*'consul:' is not followed by '//'"),
        # django-environ's spelling: the near misses are named.
        ("memcache://10.0.0.1:11211", "; did you mean 'memcached://' or 'pymemcache://'?"),
        ("consol:///memcached", "; did you mean 'consul://'?"),
    ],
)
def test_parse_source__bad_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("?", r"\?").replace("(", r"\(")):
        parse_source(url)


def test_parse_source__text_without_scheme_that_is_no_node_list_is_not_quoted() -> None:
    """It may carry a token (``consul:8500/memcached?token=…``): only its scheme is named."""
    with pytest.raises(ConfigurationError) as caught:
        parse_source("consul:8500/memcached?token=s3cret")

    assert "s3cret" not in str(caught.value)
    assert "'consul:' is not followed by '//'" in str(caught.value)


def test_parse_source__returns_source_objects_unchanged() -> None:
    source = Static((Node("a"),))

    assert parse_source(source) is source


def test_parse_source__rejects_other_types() -> None:
    with pytest.raises(ConfigurationError, match="not int"):
        parse_source(11211)  # type: ignore[arg-type]


def test_static__credentials_in_the_url_are_refused_without_being_echoed() -> None:
    for url in (
        "memcached://user:S3CRETPW@10.0.0.1:11211",
        "pymemcache://a:S3CRETPW@h1,h2?tls=true",
    ):
        with pytest.raises(ConfigurationError, match="before '@'") as raised:
            parse_source(url)
        assert "S3CRETPW" not in str(raised.value)


def test_static__an_unspecified_address_is_the_users_own_choice() -> None:
    """Only discovered answers are held to node addresses; 0.0.0.0 here is this host."""
    assert resolve("memcached://0.0.0.0:11211").nodes == (Node("0.0.0.0", 11211),)
