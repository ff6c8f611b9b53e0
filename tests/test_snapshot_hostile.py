"""Hostile snapshot content: whatever the file holds, only SnapshotError comes out of a read.

Each case once raised something else (OverflowError, RecursionError, TypeError...) past
every fallback, or was accepted although no writer of this library could have written it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from cache_settings import ResolutionError, SourceError, memcached, resolve
from cache_settings.cli import main
from cache_settings.exceptions import SnapshotError
from cache_settings.nodes import Node
from cache_settings.snapshot import (
    FORMAT,
    MAX_DEPTH,
    MAX_SIZE,
    load_snapshot,
    read_snapshot,
    write_snapshot,
)
from cache_settings.sources import Traits

SOURCE = "down://cluster"
NODE = {"host": "10.0.0.1", "port": 11211}


def _raw(entry: str) -> bytes:
    """A snapshot whose one entry is the raw JSON text *entry*."""
    return f'{{"format": "{FORMAT}", "sources": {{"{SOURCE}": {entry}}}}}'.encode()


def _fields(text: str) -> bytes:
    """A snapshot whose one entry holds a valid node and the raw JSON members *text*."""
    return _raw(f'{{"nodes": [{json.dumps(NODE)}], {text}}}')


def _entry(**fields: object) -> bytes:
    entry: dict[str, object] = {"nodes": [NODE], "fetched_at": 1700000000.0}
    entry.update(fields)
    return json.dumps({"format": FORMAT, "sources": {SOURCE: entry}}).encode()


def _node(**fields: object) -> bytes:
    return _entry(nodes=[{**NODE, **fields}])


DEEP = 100_000

BAD_HOST = "node host must be a host name or an IP"
HOSTILE = [
    # Numbers out of range or not finite.
    pytest.param(_fields(f'"fetched_at": 1{"0" * 400}'),
                 "'fetched_at' must be Unix time", id="fetched-at-400-digits"),
    pytest.param(_fields('"fetched_at": 1e999'),
                 "number '1e999' is out of range", id="fetched-at-1e999"),
    pytest.param(_fields('"fetched_at": -Infinity'),
                 "-Infinity is not a number JSON allows", id="fetched-at-minus-infinity"),
    pytest.param(_entry(fetched_at=-1.0), "'fetched_at' must be Unix", id="fetched-at-negative"),
    pytest.param(_entry(fetched_at=1e300), "'fetched_at' must be Unix time", id="fetched-at-1e300"),
    pytest.param(_entry(fetched_at=[1]), "'fetched_at' must be Unix time", id="fetched-at-list"),
    pytest.param(_entry(version=2**64), "'version' must be within", id="version-2-64"),
    pytest.param(_entry(version=-(2**63) - 1), "'version' must be within", id="version-below"),
    pytest.param(_fields(f'"fetched_at": 1, "version": 1{"0" * 400}'),
                 "an integer of 1329 bits", id="version-400-digits"),
    pytest.param(_fields(f'"fetched_at": 1, "version": 1{"0" * 5000}'),
                 "not valid JSON", id="version-5000-digits"),
    pytest.param(_fields('"fetched_at": 1, "x": NaN'),
                 "NaN is not a number JSON allows", id="nan-in-an-unread-field"),
    pytest.param(_node(port=2**70), "node port must be an integer in 1..65535", id="port-huge"),
    pytest.param(_node(port=-1), "node port", id="port-negative"),
    pytest.param(_node(port=1e3), "node port", id="port-float"),
    # Nesting.
    pytest.param(b"[" * DEEP + b"]" * DEEP, f"nested deeper than {MAX_DEPTH} levels",
                 id="array-100000-deep"),
    pytest.param(b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nested deeper", id="object-100000-deep"),
    pytest.param(b"[" * DEEP, "unbalanced", id="array-100000-open"),
    pytest.param(_raw('{"nodes": [' + "[" * DEEP + "]" * DEEP + '], "fetched_at": 1}'),
                 "nested deeper", id="deep-inside-nodes"),
    pytest.param(_entry(nodes=[NODE], extra=json.loads("[" * 20 + "]" * 20)),
                 "nested deeper", id="deep-in-an-unread-field"),
    pytest.param(b'"' + b"\\" * DEEP, "not valid JSON", id="backslashes"),
    pytest.param(b'"\\"' * DEEP, "not valid JSON", id="escaped-quotes"),
    # Wrong types where strings belong, and strings that are not host names or IPs.
    pytest.param(_node(host={}), BAD_HOST, id="host-object"),
    pytest.param(_node(host=["h"]), BAD_HOST, id="host-list"),
    pytest.param(_node(host=""), BAD_HOST, id="host-empty"),
    pytest.param(_node(host="a b"), BAD_HOST, id="host-space"),
    pytest.param(_node(host="h\n11211"), BAD_HOST, id="host-newline"),
    pytest.param(_node(host="h\x00"), BAD_HOST, id="host-nul"),
    pytest.param(_node(host="h" * 256), BAD_HOST, id="host-256-characters"),
    pytest.param(_raw('{"nodes": [{"host": "\\ud800", "port": 1}], "fetched_at": 1}'),
                 BAD_HOST, id="host-lone-surrogate"),
    # Hosts the live parsers refuse: a path pylibmc reads as a unix socket, LOCATION lists.
    pytest.param(_node(host="/tmp/evil.sock"), BAD_HOST,
                 id="host-unix-socket-path"),
    pytest.param(_node(host="a;b,c"), BAD_HOST, id="host-list-text"),
    pytest.param(_node(host="a:b:c"), BAD_HOST, id="host-colons"),
    pytest.param(_node(host="h:11211"), BAD_HOST, id="host-port"),
    pytest.param(_node(host="[::1]"), BAD_HOST, id="host-brackets"),
    pytest.param(_node(ip="not an ip"), "node ip must be an IP address", id="ip-text"),
    pytest.param(_node(ip=10), "node ip must be an IP address", id="ip-int"),
    pytest.param(_node(ip={"v4": 1}), "node ip must be an IP address", id="ip-object"),
    pytest.param(_node(tls="true"), "node tls must be true or false", id="tls-string"),
    pytest.param(_entry(nodes={"0": NODE}), "'nodes' must be a non-empty list", id="nodes-object"),
    pytest.param(_raw("null"), "must be an object, not NoneType", id="entry-null"),
    # Encodings and sizes.
    pytest.param(_entry().decode().encode("utf-16"), "not UTF-8", id="utf-16"),
    pytest.param(b"\xc3\x28" + _entry(), "not UTF-8", id="invalid-utf-8"),
    pytest.param(b"\xef\xbb\xbf" + _entry(), "not valid JSON", id="utf-8-bom"),
    pytest.param(_entry(padding=" " * MAX_SIZE), f"larger than {MAX_SIZE} bytes", id="too-large"),
]  # fmt: skip


def _cases(*ids: str) -> list[object]:
    return [case for case in HOSTILE if case.id in ids]


# What the issue saw: OverflowError and RecursionError tracebacks past every fallback.
ISSUE_CASES = _cases("fetched-at-400-digits", "array-100000-deep", "object-100000-deep")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "nodes.json"


@pytest.mark.parametrize(("content", "words"), HOSTILE)
def test_load_snapshot__hostile_content__snapshot_error_naming_file_and_cause(
    path: Path, content: bytes, words: str
) -> None:
    path.write_bytes(content)
    started = time.monotonic()

    with pytest.raises(SnapshotError) as info:
        load_snapshot(path)

    assert time.monotonic() - started < 2.0
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)
    assert len(str(info.value)) < 400 + len(str(path))


@pytest.mark.parametrize(("content", "words"), HOSTILE)
def test_write_snapshot__over_hostile_content__moved_aside_and_replaced(
    path: Path, content: bytes, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    path.write_bytes(content)
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")

    assert write_snapshot(path, SOURCE, [Node("10.0.0.9")])

    assert load_snapshot(path)[SOURCE].nodes == (Node("10.0.0.9"),)
    assert Path(f"{path}.corrupt").read_bytes() == content
    assert words in caplog.text
    assert caplog.text.count(str(path)) == 1, caplog.text  # in "moved to <path>.corrupt"


class _Down:
    """A source that is always down, so that every resolution reads the snapshot."""

    url = SOURCE
    traits = Traits()

    def resolve(self, timeout: float) -> list[Node]:
        raise SourceError(self.url, "connection refused")


@pytest.mark.parametrize(("content", "words"), ISSUE_CASES)
def test_resolve__hostile_snapshot__resolution_error_says_why_once(
    path: Path,
    content: bytes,
    words: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's cases: OverflowError, RecursionError, TypeError skipped the fallback.

    Why the file is refused is said in the error, once, and not logged as well.
    """
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    path.write_bytes(content)
    caplog.set_level(logging.WARNING)

    with pytest.raises(ResolutionError) as raised:
        resolve(_Down(), attempts=1, deadline=0.5, snapshot=path)

    message = str(raised.value)
    assert message.count(words) == 1
    assert message.count(str(path)) == 1
    assert message.endswith(
        f"; run `cache-settings resolve {SOURCE} --snapshot {path}` to replace it"
    )
    assert words not in caplog.text


def test_resolve__hostile_snapshot_entry__said_once_and_briefly(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's case: 482 characters, the path twice, and "to create it" for a file there."""
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    path.write_bytes(_node(host="x" * 300))

    with pytest.raises(ResolutionError) as raised:
        resolve(_Down(), attempts=1, deadline=0.5, snapshot=path)

    assert str(raised.value) == (
        f"{SOURCE}: no node list could be resolved (1 attempt: connection refused); "
        "its entry in the snapshot is malformed: node host must be a host name or an IP "
        f"address, not '{'x' * 59}... (302 characters); "
        f"run `cache-settings resolve {SOURCE} --snapshot {path}` to replace it"
    )


@pytest.mark.parametrize(("content", "words"), ISSUE_CASES)
def test_memcached__hostile_snapshot__on_failure_locmem(
    path: Path, content: bytes, words: str
) -> None:
    path.write_bytes(content)

    entry = memcached(_Down(), snapshot=path, attempts=1, deadline=0.5, on_failure="locmem")

    assert entry["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


def test_read_snapshot__hostile_content__none(path: Path) -> None:
    path.write_bytes(_fields(f'"fetched_at": 1{"0" * 400}'))

    assert read_snapshot(path, SOURCE) is None


# -- the writer never writes what the reader refuses ----------------------------------------------


@pytest.mark.parametrize(
    "node",
    [Node("a b"), Node("h\n"), Node("h" * 256), Node("h", ip="not-an-ip")],
    ids=["space", "newline", "long", "ip"],
)
def test_write_snapshot__node_the_reader_would_refuse__false_and_file_kept(
    path: Path, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """One bad node from a source must not cost every other source in the file its fallback."""
    write_snapshot(path, "memcached://other:11211", [Node("10.0.0.1")])
    before = path.read_bytes()
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")

    assert write_snapshot(path, SOURCE, [node]) is False

    assert path.read_bytes() == before
    assert "would not read back" in caplog.text
    assert caplog.text.count(str(path)) == 1, caplog.text


def test_write_snapshot__larger_than_the_cap__false_and_file_kept(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_snapshot(path, "memcached://other:11211", [Node("10.0.0.1")])
    before = path.read_bytes()
    many = [Node(f"node-{i}.example", 11211, ip=f"10.{i // 62500}.{i // 250 % 250}.{i % 250}")
            for i in range(50_000)]  # fmt: skip
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")

    assert write_snapshot(path, SOURCE, many) is False

    assert path.read_bytes() == before
    assert f"more than {MAX_SIZE}" in caplog.text


def test_write_snapshot__cap_holds_a_large_cluster(path: Path) -> None:
    """The cap leaves room: 30,000 nodes with IPs fit in one file."""
    many = [Node(f"node-{i}.example", 11211, ip=f"10.{i // 62500}.{i // 250 % 250}.{i % 250}")
            for i in range(30_000)]  # fmt: skip

    assert write_snapshot(path, SOURCE, many)

    assert len(load_snapshot(path)[SOURCE].nodes) == 30_000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fetched_at": 1e300}, "fetched_at"),
        ({"fetched_at": -5.0}, "fetched_at"),
        ({"version": 2**64}, "version"),
    ],
)
def test_write_snapshot__out_of_range_arguments__value_error(
    path: Path, kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        write_snapshot(path, SOURCE, [Node("10.0.0.1")], **kwargs)  # type: ignore[arg-type]

    assert not path.exists()


@pytest.mark.parametrize(("content", "words"), ISSUE_CASES)
def test_cli_show__hostile_snapshot__exit_1_with_one_line(
    path: Path, content: bytes, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cache-settings show`` reports the file and the cause, without a traceback."""
    path.write_bytes(content)

    status = main(["show", str(path)])

    err = capsys.readouterr().err
    assert status == 1
    assert f"{path}: " in err
    assert words in err
    assert "Traceback" not in err
