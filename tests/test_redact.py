"""Redaction: one home for secrets in URLs, messages and CLI output."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from cache_settings import ConfigurationError, SourceError, parse_source
from cache_settings.redact import (
    Scrubber,
    environment_secrets,
    redact_address,
    redact_url,
    scrub,
    url_secrets,
)
from tests.servers.consul import ConsulAgent

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
        (
            "elasticache-api://c?endpoint_url=https%3A%2F%2Faws.test%2F%3FToken%3Dtok-5678",
            "elasticache-api://c?endpoint_url=https://aws.test/%3FToken%3D***",
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

    # The value of an unknown option is masked: a misspelt secret option is still a secret.
    assert str(unknown.value).startswith("consul:///memcached?tags=***: unknown option 'tags'")
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
        json.dumps(json.dumps(SECRET)[1:-1])[1:-1],  # an agent quoting its JSON error in JSON
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


# --- configuration errors never echo a secret (items of issue 13) ----------------------------

LEAK = "SECRETVALUE"

# One valid URL per scheme; an option is appended to each.
_VALID = [
    "consul://agent/memcached",
    "dns://memcached.test:11211",
    "dnssrv://_memcache._tcp.test",
    "elasticache://cfg.test:11211",
    "elasticache-api://mc?region=us-east-1",
    "file:///etc/memcached-nodes",
    "memcached://10.0.0.1:11211",
    "pymemcache://10.0.0.1:11211",
]


def _message(url: str) -> str:
    with pytest.raises(ConfigurationError) as raised:
        parse_source(url).resolve(timeout=1)
    return str(raised.value)


@pytest.mark.parametrize("url", _VALID)
@pytest.mark.parametrize(
    "option", [f"tokn={LEAK}", f"pasword={LEAK}", LEAK, f"tag=a&{LEAK}", f"{LEAK}&tag=b"]
)
def test_configuration_error__unknown_or_malformed_option_values_are_not_shown(
    url: str, option: str
) -> None:
    joined = f"{url}{'&' if '?' in url else '?'}{option}"

    message = _message(joined)

    assert LEAK not in message
    assert url.partition("?")[0] in message  # the URL is still named


def test_configuration_error__unknown_option_is_named_with_its_value_masked() -> None:
    message = _message(f"consul://AGENT/memcached?tokn={LEAK}")

    assert message.startswith("consul://AGENT/memcached?tokn=***: unknown option 'tokn'")


@pytest.mark.parametrize(
    "address",
    [
        f"http://{LEAK}@127.0.0.1:1",
        f"https://user:{LEAK}@127.0.0.1",
        f"{LEAK}@127.0.0.1:8500",
        f"unix://{LEAK}@/tmp/consul.sock",
        f"http://{LEAK}@[::1",
    ],
)
def test_configuration_error__consul_http_addr_user_info_is_not_shown(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", address)

    message = _message("consul:///memcached")

    assert LEAK not in message
    assert "CONSUL_HTTP_ADDR" in message


@pytest.mark.parametrize(
    ("variable", "address"),
    [("CONSUL_HTTP_SSL", "127.0.0.1:1"), ("CONSUL_HTTP_SSL_VERIFY", "https://127.0.0.1:1")],
)
def test_configuration_error__environment_values_go_through_redaction(
    variable: str, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", f"tok-{LEAK}")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", address)
    monkeypatch.setenv(variable, f"http://u:{LEAK}@h?x=tok-{LEAK}")

    message = _message("consul:///memcached")

    assert LEAK not in message
    assert variable in message


@pytest.mark.parametrize(
    "url", [f"elasticache://{LEAK}@cfg.test:11211", f"memcached://{LEAK}@10.0.0.1"]
)
def test_configuration_error__node_user_info_is_not_shown(url: str) -> None:
    assert LEAK not in _message(url)


def test_redact_url__masks_values_of_options_not_allowed() -> None:
    url = "consul://a/mc?tag=x&tokn=s1&token=s2&bare"

    assert redact_url(url, allowed={"tag", "token"}) == "consul://a/mc?tag=x&tokn=***&***"


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("http://u:p@h:1", "http://h:1"),
        ("u@h", "h"),
        ("h:8500", "h:8500"),
        ("https://h/?token=t", "https://h/"),
        ("http://u@[::1", "[::1"),
    ],
)
def test_redact_address__with_or_without_a_scheme(address: str, shown: str) -> None:
    assert redact_address(address) == shown


# --- masking keeps the library's own advice readable ------------------------------------------


@pytest.mark.parametrize("filtered", [False, True], ids=["403", "acl-filtered"])
def test_scrub__keeps_the_token_advice_of_consul_acl_errors(
    consul_agent: ConsulAgent, filtered: bool
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    if filtered:
        consul_agent.filter_by_acl("9f1c3e1a-5b6d-4c2e-8f00-0123456789ab")
    else:
        consul_agent.require_token("9f1c3e1a-5b6d-4c2e-8f00-0123456789ab")
    with pytest.raises(SourceError) as raised:
        parse_source(f"consul://{consul_agent.address}/memcached").resolve(timeout=2)
    message = str(raised.value)

    assert "token=" in message
    assert scrub(message) == message


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("(CONSUL_HTTP_TOKEN or token=)); retry", "(CONSUL_HTTP_TOKEN or token=)); retry"),
        (
            "token=9f1c3e1a-5b6d-4c2e-8f00-0123456789ab); next",  # a Consul ACL token: a UUID
            "token=***); next",
        ),
        ("(token=IQoJb3JpZ2luX2Vj/ab+c==), next", "(token=***), next"),  # AWS base64
        ("secret=wJalrXUtnFEMI%2FK7MDENG%3D; then", "secret=***; then"),  # percent-encoded
        ("password=ab;c)d. End", "password=***. End"),  # punctuation inside stays masked
        ("token=" + ")" * 50_000 + "x", "token=" + ")" * 50_000 + "x"),  # and linear time
    ],
)
def test_scrub__secret_option_values_stop_before_trailing_punctuation(
    text: str, masked: str
) -> None:
    assert scrub(text) == masked


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_environment_secrets__proxy_password_and_its_basic_header(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy that quotes the credentials it refused must not print them (raw or Basic)."""
    monkeypatch.setenv(variable, "http://alice:pr0xy%40Passw0rd@proxy.internal:3128")
    basic = base64.b64encode(b"alice:pr0xy@Passw0rd").decode()
    text = f"407 Proxy Authentication Required: pr0xy@Passw0rd / Basic {basic}"

    cleaned = scrub(text, environment_secrets())

    assert "Passw0rd" not in cleaned
    assert basic not in cleaned
    assert cleaned.startswith("407 Proxy Authentication Required")


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        # urllib no longer splits on ';': the token would have become part of a tag or a dc.
        ("consul:///memcached?tag=prod;token=tok-5678-abcd", "join options with '&'"),
        ("consul:///memcached?dc=dc1;%20token=tok-5678-abcd", "join options with '&'"),
        ("elasticache-api://mc?region=us-east-1;endpoint_url=https://k:tok-5678-abcd@h",
         "join options with '&'"),
        # consul:///mc;token=T read 'mc;token=T' as the service name: sent, logged, a key.
        ("consul:///memcached;token=tok-5678-abcd", "options go after '?'"),
        ("consul://agent:8500/memcached;tag=prod;token=tok-5678-abcd", "options go after '?'"),
    ],
)  # fmt: skip
def test_parse_source__options_joined_by_a_semicolon_are_refused_without_the_secret(
    url: str, fix: str
) -> None:
    """In the query or in the path, an option after ';' is refused, naming where it goes."""
    with pytest.raises(ConfigurationError) as raised:
        parse_source(url)

    assert fix in str(raised.value)
    assert "tok-5678" not in str(raised.value)


# os.environ holds the bytes of a variable that are not UTF-8 as lone surrogates ("\udcff").
NOT_UTF8 = "tok\udcffen-9876"


def test_environment_secrets__a_value_that_is_not_utf8_is_masked_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", NOT_UTF8)
    monkeypatch.setenv("HTTPS_PROXY", f"http://alice:{NOT_UTF8}@proxy.internal:3128")
    basic = base64.b64encode(b"alice:tok\xffen-9876").decode()

    cleaned = scrub(f"sent ?token=x tok%FFen-9876 / Basic {basic}", environment_secrets())

    assert "en-9876" not in cleaned
    assert basic not in cleaned


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONSUL_HTTP_TOKEN", NOT_UTF8),
        ("HTTPS_PROXY", f"http://alice:{NOT_UTF8}@127.0.0.1:9"),
        ("AWS_SECRET_ACCESS_KEY", NOT_UTF8),
    ],
)
def test_cli__a_secret_variable_that_is_not_utf8_gives_a_message_not_a_traceback(
    variable: str, value: str
) -> None:
    """The command line masks the environment's secrets: making their forms must not raise."""
    result = subprocess.run(
        [sys.executable, "-m", "cache_settings", "resolve", "--deadline", "0.5",
         "--attempts", "1", "consul://127.0.0.1:9/memcached"],
        env={"PATH": "/usr/bin:/bin", variable: value},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 2)
    assert "consul://127.0.0.1:9/memcached" in result.stderr


def test_parse_source__a_file_path_that_is_not_utf8_is_refused_with_its_bytes() -> None:
    """A path from a command line in another encoding: the message shows its bytes."""
    with pytest.raises(ConfigurationError, match="file:///srv/%FF: the path holds a character"):
        parse_source("file:///srv/\udcff")


def test_parse_source__a_service_name_holding_a_semicolon_is_written_escaped() -> None:
    assert parse_source("consul:///mem%3Bcached").url == "consul:///mem%3Bcached"
