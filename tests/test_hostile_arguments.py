"""Hostile settings: whatever an argument or a URL holds, one short printable ConfigurationError.

Each keyword of ``memcached()`` and each place a URL's value is quoted gets values a
settings file can hold by mistake or from the environment: integers past a float's range,
unhashable containers, megabytes of text with a forged log line in them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cache_settings
from cache_settings.exceptions import (
    LONGEST_MESSAGE,
    CacheSettingsError,
    ConfigurationError,
    ResolutionError,
)
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot

# A value that could forge a log line and fill a screen, if quoted as it is.
FORGED = "x\nCRITICAL django.security: forged line \x1b[2J" + "h" * 100_000
# A message quoting such a value briefly: the value cut at 80 characters, and the fix.
SHORT = 400
STATIC = "memcached://127.0.0.1:11211"


def _message(error: BaseException) -> str:
    text = str(error)
    assert text.isprintable(), text[:500]
    return text


@pytest.mark.parametrize("name", ["deadline", "max_age", "refresh"])
def test_memcached_seconds__an_integer_past_float_range_is_a_configuration_error(
    name: str,
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cache_settings.memcached(STATIC, **{name: 10**400})

    assert f"{name} must be a positive number of seconds" in _message(raised.value)
    assert "an integer of 1329 bits" in str(raised.value)


@pytest.mark.parametrize("value", [[], {}, {"pylibmc"}, ["pylibmc"]])
def test_memcached_backend__an_unhashable_value_is_a_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="backend must be 'pylibmc' or 'pymemcache'"):
        cache_settings.memcached(STATIC, backend=value)


@pytest.mark.parametrize(
    "name",
    [
        "backend",
        "snapshot",
        "attempts",
        "deadline",
        "max_age",
        "min_nodes",
        "max_reply_size",
        "on_failure",
        "refresh",
        "rejoin",
    ],
)
def test_memcached_arguments__a_forged_value_is_quoted_on_one_short_line(name: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cache_settings.memcached(STATIC, **{name: FORGED})

    text = _message(raised.value)
    assert name in text
    assert len(text) <= SHORT, text


# Arguments mixed up in a settings file: the source URL, token and all, given to another one.
MISPLACED = "consul://ops:agentpassword@agent:8500/memcached?token=0f1e2d3c-aaaa-bbbb"


@pytest.mark.parametrize(
    "name",
    ["backend", "attempts", "deadline", "max_age", "min_nodes", "on_failure", "refresh", "rejoin"],
)
def test_memcached_arguments__a_source_url_given_to_another_is_quoted_without_its_secrets(
    name: str,
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cache_settings.memcached(STATIC, **{name: MISPLACED})

    text = _message(raised.value)
    assert name in text
    assert "agent:8500/memcached" in text
    assert "0f1e2d3c" not in text, text
    assert "agentpassword" not in text, text


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("a repr that fails")


@pytest.mark.parametrize("name", ["backend", "attempts", "deadline", "snapshot", "on_failure"])
def test_memcached_arguments__a_value_whose_repr_raises_is_named_by_its_type(name: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cache_settings.memcached(STATIC, **{name: _Unprintable()})

    assert f"{name} must be" in str(raised.value)
    assert "_Unprintable object" in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        f"consul:///memcached?status={FORGED[:300]}",
        "elasticache-api://" + "n" * 5000,
        "pymemcache://mc.example:11211?tls=true&ca=/tmp/%0aforged%1b[2J",
        "pymemcache://mc.example:11211?tls=true&ca=/tmp/" + "c" * 5000,
    ],
    ids=["consul-status", "aws-name", "tls-ca-escape", "tls-ca-long"],
)
def test_source_options__a_forged_value_is_quoted_on_one_short_line(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cache_settings.memcached(url)

    assert len(_message(raised.value)) <= SHORT, str(raised.value)


def test_snapshot_path__a_forged_directory_name_is_quoted_on_one_short_line(
    tmp_path: Path,
) -> None:
    directory = tmp_path / ("forged\n\x1b[2J" + "d" * 200)
    directory.mkdir()

    with pytest.raises(ConfigurationError) as raised:
        cache_settings.memcached(STATIC, snapshot=directory)

    assert "holds a control character" in _message(raised.value)
    assert len(str(raised.value)) <= SHORT + 300


def test_error_message__one_printable_line_of_bounded_length_head_and_tail_kept() -> None:
    error = CacheSettingsError(f"consul:///{FORGED}: write the service name without it")

    text = _message(error)

    assert len(text) == LONGEST_MESSAGE
    assert text.startswith("consul:///x CRITICAL django.security: forged line \\x1b[2J")
    assert text.endswith("write the service name without it")


def test_resolution_error__a_megabyte_source_url_gives_a_bounded_message(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/" + "a" * 100_000

    with pytest.raises(ResolutionError) as raised:
        cache_settings.resolve(url, attempts=1, deadline=1)

    text = _message(raised.value)
    assert len(text) <= LONGEST_MESSAGE
    assert text.startswith(f"file://{tmp_path}/aaa")
    assert text.endswith("(snapshot=PATH keeps a last-known-good list)")
    assert raised.value.source.endswith("a" * 1000)  # the attribute keeps the whole URL


@pytest.mark.parametrize(
    "proxy",
    [
        "http://alice:pr0xyPassw0rd@proxy.internal:99999",
        "http://alice:pr0xyPassw0rd@proxy.internal:port",
        "http://alice:pr0xyPassw0rd@[::1",
        "socks5://alice:pr0xyPassw0rd@proxy.internal:1080",
    ],
    ids=["port-range", "port-text", "ipv6-open", "socks"],
)
@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("HTTP_PROXY", "consul://agent.example:8500/memcached"),
        ("https_proxy", "consul://agent.example:8501/memcached?tls=true"),
        ("HTTPS_PROXY", "elasticache-api://mc?region=us-east-1"),
    ],
)
def test_proxy_variable__a_malformed_one_is_a_configuration_error_naming_it(
    variable: str, url: str, proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was "malformed reply from http://agent…: ValueError", retried as if the peer erred."""
    monkeypatch.setenv(variable, proxy)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ConfigurationError) as raised:
        cache_settings.resolve(url, attempts=3, deadline=5)

    text = _message(raised.value)
    assert f"{variable.upper()} (or {variable.lower()})" in text
    assert "pr0xyPassw0rd" not in text
    assert "write http://host:port" in text


@pytest.mark.parametrize(
    "query",
    [
        "region=%0A",
        "region=us-east-1%0A",
        "region=us east 1",
        "region=us-east-1&endpoint_url=http://[::1",
        "region=us-east-1&endpoint_url=http://127.0.0.1:99999",
        "region=us-east-1&endpoint_url=http://127.0.0.1:port",
    ],
)
def test_elasticache_api_options__a_malformed_region_or_endpoint_is_a_configuration_error(
    query: str,
) -> None:
    """They raised ValueError, or failed each attempt as a "malformed ElastiCache API reply"."""
    with pytest.raises(ConfigurationError) as raised:
        cache_settings.resolve(f"elasticache-api://mc?{query}", attempts=1, deadline=2)

    text = _message(raised.value)
    assert any(says in text for says in ("must be", "is not an AWS region", "not printable"))


def test_cli_output__a_forged_snapshot_path_stays_in_its_row_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A newline and a terminal escape in --snapshot went raw into the table and the errors.

    Such a path is refused as a snapshot= (a control character), so the file shown is one
    another program wrote there.
    """
    from cache_settings.cli import main

    forged = str(tmp_path / "nodes\nFORGED ROW  ok\x1b[2J.json")
    missing = str(tmp_path / "missing\nforged\x1b[2J.json")
    assert write_snapshot(forged, "memcached://127.0.0.1:11211", [Node("127.0.0.1", 11211)])

    resolved = main(["resolve", "memcached://127.0.0.1:11211", "--snapshot", forged])
    shown = main(["show", forged])
    not_found = main(["show", missing])

    out, err = capsys.readouterr()
    assert (resolved, shown, not_found) == (2, 0, 1)
    assert "\x1b" not in out + err
    assert out.count("\n") == 2  # one table of a header and one row
    assert "nodes\\nFORGED ROW  ok\\x1b[2J.json" in out
    assert err.count("\n") == 2
    assert "holds a control character" in err
    assert "missing forged\\x1b[2J.json: no such snapshot file" in err


@pytest.mark.parametrize(
    "url",
    [
        "consul:///memcached?tag=prod%0A",
        "consul:///memcached?dc=dc1%00",
        "consul:///memcached?node-meta=rack:a%1B%5B2J",
        "elasticache-api://mc?profile=dev%0D",
        "memcached://127.0.0.1:11211?tls=true%0A",
        "dns://mc.example:11211?nameserver=127.0.0.1%0A",
    ],
)
def test_parse_source__an_option_with_a_control_character_is_refused_for_every_scheme(
    url: str,
) -> None:
    """Sent percent-encoded and shown escaped before, but never what was meant."""
    with pytest.raises(ConfigurationError, match="holds a character that is not printable"):
        cache_settings.parse_source(url)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"service": "mem\ncached"},
        {"service": "mc", "tags": ("prod\x00",)},
        {"service": "mc", "dc": "dc1\r"},
        {"service": "mc", "near": "\x1b[2J"},
        {"service": "mc", "node_meta": (("rack", "a\n"),)},
        {"service": "mc", "namespace": "ns\u202e"},
        {"service": "mc", "filter_expr": "Service.Port == 1\n"},
        {"service": "mc", "dc": 3},
    ],
)
def test_consul_source__a_name_tag_or_filter_that_is_not_printable_text_is_refused(
    kwargs: dict[str, Any],
) -> None:
    """Sent percent-encoded and shown escaped before: no leak, but never what was meant."""
    from cache_settings.sources.consul import Consul

    with pytest.raises(ConfigurationError, match="which is not printable text") as raised:
        Consul(**kwargs)

    assert str(raised.value).isprintable()


def test_consul_url__a_service_name_with_a_control_character_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="service holds 'mem\\\\ncached'"):
        cache_settings.parse_source("consul:///mem%0Acached")


@pytest.mark.parametrize(
    "url",
    [
        "file:///var/run/memcached\tnodes",
        "dns+mc.te\nst:11211",
        "consul://s3cr3t-token@127.0.0.1:8500/mem\rcached",
        "memcached://10.0.0.1:11211,\n10.0.0.2:11211",
    ],
)
def test_parse_source__a_tab_or_line_break_inside_a_url_is_refused_not_dropped(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """urlsplit() drops them: file:///a<TAB>b read /ab, dns://mc.te<LF>st asked mc.test."""
    from cache_settings.cli import main

    index = next(i for i, char in enumerate(url) if char in "\t\r\n")
    where = f"{url[index]!r} at character {index + 1}"

    with pytest.raises(ConfigurationError, match="would silently drop") as raised:
        cache_settings.parse_source(url)
    status = main(["resolve", url, "--json"])

    text = _message(raised.value)
    assert where in text
    assert "s3cr3t" not in text
    _, err = capsys.readouterr()
    assert status == 2
    assert where in err
    assert "s3cr3t" not in err
