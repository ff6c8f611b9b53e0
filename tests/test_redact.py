"""Redaction: one home for secrets in URLs, messages and CLI output."""

from __future__ import annotations

import pytest

from cache_settings import ConfigurationError, parse_source
from cache_settings.redact import Scrubber, redact_url, scrub, url_secrets

SECRET = "s3cr3t-p@ss\nword/+"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("consul:///memcached?tag=prod", "consul:///memcached?tag=prod"),
        ("consul://tok-123@10.0.0.9:8500/mc", "consul://10.0.0.9:8500/mc"),
        ("consul:///mc?token=abc&tag=a", "consul:///mc?tag=a"),
        ("consul:///mc?Password=abc&secret=x", "consul:///mc"),
        ("memcached://", "memcached://"),
        (
            "elasticache-api://c?endpoint_url=https%3A%2F%2Fkey%3Asecret%40aws.test",
            "elasticache-api://c?endpoint_url=https://aws.test",
        ),
    ],
)
def test_redact_url__drops_secrets_and_keeps_the_double_slash(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_redact_url__messages_show_the_url_as_written() -> None:
    """Issue 15: ``consul:///memcached?tags=prod`` was printed as ``consul:/memcached?...``."""
    with pytest.raises(ConfigurationError) as unknown:
        parse_source("consul:///memcached?tags=prod")
    with pytest.raises(ConfigurationError) as empty:
        parse_source("memcached://")

    assert str(unknown.value).startswith("consul:///memcached?tags=prod: unknown option 'tags'")
    assert str(empty.value).startswith("memcached://: ")
    assert "memcached::" not in str(empty.value)


def test_url_secrets__user_info_secret_options_and_nested_urls() -> None:
    url = "consul://user:pw-1234@agent/mc?token=tok-5678&endpoint_url=https://ak:sk-9012@h"

    found = url_secrets(url)

    assert {"user:pw-1234", "pw-1234", "tok-5678", "sk-9012"} <= set(found)


@pytest.mark.parametrize(
    "shown",
    [
        SECRET,
        repr(SECRET),  # a client's error that repr()s the value
        "s3cr3t-p%40ss%0Aword%2F%2B",  # percent-encoded in a URL
        "s3cr3t-p%40ss%0Aword%2F%2B".replace("%2F", "/"),
    ],
)
def test_scrubber__masks_every_printed_form_of_a_secret(shown: str) -> None:
    text = f"agent said: bad credentials {shown} (401)"

    cleaned = Scrubber([SECRET]).scrub(text)

    assert "s3cr3t" not in cleaned
    assert "***" in cleaned
    assert cleaned.endswith(" (401)")


def test_scrub__user_info_and_secret_options_in_free_text() -> None:
    text = "GET https://ak:sk-9012@aws.test/?Action=x&token=tok-5678 failed"

    cleaned = scrub(text)

    assert "sk-9012" not in cleaned
    assert "tok-5678" not in cleaned
    assert "https://aws.test/?Action=x&token=***" in cleaned


def test_scrubber__short_values_are_left_alone() -> None:
    assert Scrubber(["ab"]).scrub("a cab") == "a cab"
