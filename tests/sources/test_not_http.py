"""An HTTP source pointed at something that does not speak HTTP says so.

The usual mistake is a Consul URL with a memcached node's address (``consul://mc1:11211/…``):
memcached answers an HTTP request line with ``ERROR`` (protocol.txt, "Error strings"), and
the error read "malformed reply ... BadStatusLine('ERROR\\r\\n')".
"""

from __future__ import annotations

import pytest

from cache_settings.exceptions import SourceError
from cache_settings.sources import parse_source
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer


@pytest.mark.parametrize(
    "url", ["consul://{address}/memcached", "elasticache-api://mc?endpoint_url=http://{address}"]
)
def test_http_source__a_memcached_answer_names_a_memcached_address(
    faults: Faults, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE12")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 40)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    address = faults.endless(b"ERROR\r\n", b"ERROR\r\n")  # memcached, line after line

    with pytest.raises(SourceError) as raised:
        parse_source(url.format(address=address)).resolve(2.0)

    message = str(raised.value)
    assert "does not speak HTTP: its reply began 'ERROR'" in message
    assert "a memcached node's, not the HTTP API's" in message


def test_http_source__a_real_memcached_node_is_named_as_one(
    memcached_node: MemcachedServer,
) -> None:
    """Against the daemon itself the request may also be cut off (reset): either says why."""
    with pytest.raises(SourceError) as raised:
        parse_source(f"consul://{memcached_node.location}/memcached").resolve(2.0)

    message = str(raised.value)
    assert "memcached node's" in message or "was reset" in message


def test_http_source__another_protocol_is_quoted_with_what_to_check(faults: Faults) -> None:
    message = _refusal(faults.endless(b"SSH-2.0-OpenSSH_9.6\r\n"))
    assert "does not speak HTTP: its reply began 'SSH-2.0-OpenSSH_9.6'" in message
    assert "check the address and port" in message


def test_http_source__an_unprintable_first_line_is_escaped(faults: Faults) -> None:
    message = _refusal(faults.endless(b"\x1b[31m\x00\xff junk\r\n"))
    assert "does not speak HTTP" in message
    assert "\x1b" not in message
    assert "\x00" not in message
    assert message.isprintable()


def _refusal(address: str) -> str:
    """The error of a Consul source whose agent address is *address*."""
    with pytest.raises(SourceError) as raised:
        parse_source(f"consul://{address}/memcached").resolve(2.0)
    return str(raised.value)
