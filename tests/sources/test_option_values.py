"""Option values a source URL would read as absent, or as something else, are refused."""

from __future__ import annotations

import pytest

from cache_settings import ConfigurationError, parse_source

SECRET = "s3cr3t-b1g-t0ken"


@pytest.mark.parametrize(
    "url",
    [
        "consul:///mc?tag=",
        "consul:///mc?dc=",
        "consul:///mc?near=",
        "consul:///mc?filter=",
        "consul:///mc?ns=",
        "consul:///mc?token=",
        "consul:///mc?tls=true&ca=",
        "elasticache-api://c?region=",
        "elasticache-api://c?profile=",
        "elasticache-api://c?ca=",
        "elasticache://cfg.example:11211?ca=",
        "memcached://a:11211?ca=",
        "memcached://a:11211?tls=true&ca=",
        "file:///etc/nodes?node_ca=",
        "dns://mc.example?node_ca=",
    ],
)
def test_source_url__empty_option_is_refused_naming_it(url: str) -> None:
    option = url.rpartition("?")[2].rpartition("&")[2].rstrip("=")
    with pytest.raises(ConfigurationError, match=rf"option {option}= is empty"):
        parse_source(url)


@pytest.mark.parametrize(
    "url",
    [
        "consul:///mc?tag=%20prod",
        "consul:///mc?tag=prod+",
        "consul:///mc?dc=eu1%20",
        "consul:///mc?ns=%20team",
        "elasticache-api://c?profile=prod%20",
        "memcached://a:11211?tls=true&ca=/etc/ca.pem+",
    ],
)
def test_source_url__value_with_space_at_either_end_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="white space at either end"):
        parse_source(url)


def test_source_url__token_with_spaces_is_refused_unquoted() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_source(f"consul:///mc?token={SECRET}%20")

    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.args)


def test_consul_url__status_naming_no_status_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="status= names no status"):
        parse_source("consul:///mc?status=,")
