"""Source constructors refuse an argument of another kind with a ConfigurationError."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cache_settings import ConfigurationError, Node, parse_source
from cache_settings.sources import DNS, ConfigEndpoint, ElastiCacheAPI, Static
from cache_settings.sources.file import File


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ConfigEndpoint("elasticache://mc.cfg.use1.cache.amazonaws.com:11211"),
         r"host 'elasticache://mc.cfg.* is not a host name or IP address"),
        (lambda: ConfigEndpoint("mc.cfg.example:11211"), r"give the host alone and the port as"),
        (lambda: ConfigEndpoint(" mc.cfg.example"), r"host ' mc.cfg.example' is not a host"),
        (lambda: DNS("mc.example", nameserver="10.0.0.2"),  # type: ignore[arg-type]
         r"nameserver must be an \(IP address, port\) tuple, as in \('10.0.0.2', 53\)"),
        (lambda: DNS("mc.example", nameserver=("10.0.0.2", "53")),  # type: ignore[arg-type]
         r"nameserver must be an \(IP address, port\) tuple, .* not \('10.0.0.2', '53'\)"),
        (lambda: Static("10.0.0.1:11211"),  # type: ignore[arg-type]
         r"takes a tuple of Node objects; .* parse_source\('memcached://10.0.0.1:11211'\)"),
        (lambda: Static(Node("10.0.0.1", 11211)),  # type: ignore[arg-type]
         r"takes a tuple of Node objects"),
        (lambda: Static((Node("a", 11211),), backend="PYLIBMC"),  # type: ignore[arg-type]
         r"backend='PYLIBMC' must be None, 'pylibmc' or 'pymemcache'"),
        (lambda: ElastiCacheAPI("mc", profile=""), r"profile='' must be a non-empty string"),
        (lambda: ElastiCacheAPI("mc", ca=""), r"ca='' must be a non-empty string"),
        (lambda: ElastiCacheAPI("mc", ca=5), r"ca=5 must be a non-empty string"),  # type: ignore[arg-type]
        (lambda: ElastiCacheAPI("mc", profile=" prod"), r"profile=' prod' has white space"),
        (lambda: File("/srv/nodes.json", source=""), r"source='' must name one source's URL"),
    ],
)  # fmt: skip
def test_source_arguments__wrong_kind_is_a_configuration_error(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_source_arguments__right_kinds_are_kept() -> None:
    assert ConfigEndpoint("MC.cfg.example", 11212).url == "elasticache://mc.cfg.example:11212"
    assert ConfigEndpoint("::1").url == "elasticache://[::1]:11211"
    assert DNS("mc.example", nameserver=("10.0.0.2", 53)).nameserver == ("10.0.0.2", 53)
    nodes = (Node(host, 11211) for host in ("b", "a"))
    assert Static(nodes).url == "memcached://a:11211,b:11211"  # type: ignore[arg-type]


def test_source_arguments__every_url_a_source_writes_parses_back() -> None:
    """A source's URL is the refreshing backend's LOCATION and the snapshot key: one that
    parse_source refuses (``?profile=``, which an empty profile wrote) breaks both."""
    sources = [
        ElastiCacheAPI("mc", profile="prod", ca="/etc/ca.pem", region="eu-west-1"),
        File("/srv/nodes.json", source="consul:///mc"),
        ConfigEndpoint("mc.cfg.example", 11212),
    ]

    for source in sources:
        assert parse_source(source.url).url == source.url
