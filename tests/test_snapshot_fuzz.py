"""Property: whatever bytes a snapshot file holds, a read gives valid entries or SnapshotError.

Hypothesis feeds random bytes, random JSON, and valid snapshots with one field replaced by
something hostile (another type, a huge or non-finite number as raw text, deep nesting,
invalid UTF-8). Each read must end within a time bound.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_settings.exceptions import SnapshotError
from cache_settings.snapshot import MAX_SIZE, SnapshotEntry, load_snapshot, read_snapshot

T = TypeVar("T")
SOURCE = "consul:///memcached?tag=prod"
# Seconds per read. CPU time is what a hostile file can make a read spend (the slowest case
# here, 200,000 levels of nesting, takes about 0.2 s); wall-clock time, on a machine shared
# with other test runs, is held to resolve()'s default deadline.
CPU_BOUND, WALL_BOUND = 1.0, 5.0
# The largest valid file: 62,000 nodes, each held to the rules of a live answer (the host rule,
# one spelling, no key named twice). About 0.45 s of CPU on this 2-core machine when quiet,
# 1.10-1.15 s while both corners of ./run test ran: a bound of 2 s still refuses any work
# that grows faster than the file (quadratic would be minutes).
LARGEST_CPU_BOUND = 2.0
PLACEHOLDER = "@@HOSTILE@@"

FUZZ = settings(
    max_examples=300,
    deadline=None,  # the time bound is asserted below, with a margin for a loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _raw_number() -> st.SearchStrategy[str]:
    """Number-like JSON text that json.dumps would never write."""
    return (
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999"])
        | (st.integers(min_value=20, max_value=4400).map(lambda n: "9" * n))
        | st.integers(min_value=20, max_value=4400).map(lambda n: "-1" + "0" * n)
    )


def _deep() -> st.SearchStrategy[str]:
    return st.tuples(st.integers(min_value=1, max_value=200_000), st.sampled_from("[{")).map(
        lambda case: (
            ("[" * case[0] + "]" * case[0])
            if case[1] == "["
            else ('{"k":' * case[0] + "0" + "}" * case[0])
        )
    )


hostile_text = (
    json_values.map(json.dumps)
    | _raw_number()
    | _deep()
    | st.sampled_from(['"\\ud800"', '"\\u0000"', '"a b"', '""', '"\\n"', "[]", "{}", "null"])
)

# Where in a valid snapshot the hostile text goes: every field, at every level.
FIELDS = [
    "top",
    "format",
    "sources",
    "entry",
    "nodes",
    "node",
    "host",
    "port",
    "ip",
    "tls",
    "fetched_at",
    "version",
    "extra",
]


def _snapshot_with(field: str) -> str:
    node: dict[str, Any] = {"host": "10.0.0.1", "port": 11211, "ip": "10.0.0.1", "tls": False}
    entry: dict[str, Any] = {"nodes": [node], "fetched_at": 1700000000.0, "version": 7}
    data: dict[str, Any] = {"format": "cache_settings/1", "sources": {SOURCE: entry}}
    if field == "top":
        return PLACEHOLDER
    target = {"format": data, "sources": data, "entry": data["sources"], "nodes": entry}
    target |= {"node": entry["nodes"], "extra": entry, "fetched_at": entry, "version": entry}
    target |= {"host": node, "port": node, "ip": node, "tls": node}
    key = {"entry": SOURCE, "node": 0}.get(field, field)
    target[field][key] = PLACEHOLDER
    return json.dumps(data).replace(json.dumps(PLACEHOLDER), PLACEHOLDER)


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "nodes.json"


def _check_read(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    entries = _timed(lambda: _load_or_error(path))
    assert _timed(lambda: read_snapshot(path, SOURCE)) is None or entries is not None
    for source, entry in (entries or {}).items():
        _assert_valid(source, entry)


def _load_or_error(path: Path) -> dict[str, SnapshotEntry] | None:
    """The entries, or None after a SnapshotError that names the file; nothing else."""
    try:
        return load_snapshot(path)
    except SnapshotError as exc:
        error = exc
    assert str(error).startswith(f"{path}: ")
    return None


def _timed(call: Callable[[], T], cpu_bound: float = CPU_BOUND) -> T:
    wall, cpu = time.monotonic(), time.thread_time()
    result = call()
    wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
    assert cpu < cpu_bound, f"{cpu:.2f} s of CPU time"
    assert wall < WALL_BOUND, f"{wall:.2f} s"
    return result


def _assert_valid(source: str, entry: SnapshotEntry) -> None:
    assert isinstance(entry, SnapshotEntry)
    assert entry.source == source
    assert isinstance(entry.fetched_at, float)
    assert math.isfinite(entry.fetched_at)
    assert 0 <= entry.fetched_at <= 253402300799
    assert entry.version is None or (
        type(entry.version) is int and -(2**63) <= entry.version < 2**64
    )
    assert entry.nodes
    for node in entry.nodes:
        assert type(node.host) is str
        assert 0 < len(node.host) <= 255
        assert node.host.isprintable()
        assert " " not in node.host
        assert type(node.port) is int
        assert 0 < node.port < 65536
        assert node.ip is None or type(node.ip) is str
        assert type(node.tls) is bool
        assert node.location  # usable as a LOCATION


@FUZZ
@given(content=st.binary(max_size=2000))
def test_load_snapshot__random_bytes__entries_or_snapshot_error(path: Path, content: bytes) -> None:
    _check_read(path, content)


@FUZZ
@given(value=json_values)
def test_load_snapshot__random_json__entries_or_snapshot_error(path: Path, value: object) -> None:
    _check_read(path, json.dumps(value).encode())


@FUZZ
@given(field=st.sampled_from(FIELDS), text=hostile_text)
def test_load_snapshot__one_field_hostile__entries_or_snapshot_error(
    path: Path, field: str, text: str
) -> None:
    _check_read(path, _snapshot_with(field).replace(PLACEHOLDER, text).encode())


@FUZZ
@given(
    field=st.sampled_from(FIELDS),
    text=hostile_text,
    cut=st.integers(min_value=0),
    garbage=st.binary(min_size=1, max_size=8),
)
def test_load_snapshot__invalid_utf8_or_truncated__entries_or_snapshot_error(
    path: Path, field: str, text: str, cut: int, garbage: bytes
) -> None:
    content = _snapshot_with(field).replace(PLACEHOLDER, text).encode()
    cut %= len(content) + 1
    _check_read(path, content[:cut] + b"\xff" + garbage + content[cut:])
    _check_read(path, content[:cut])


def test_load_snapshot__every_field_accepts_its_valid_value(path: Path) -> None:
    """The placeholder mechanics: with valid text in place, every variant reads back."""
    valid = {
        "top": _snapshot_with("extra").replace(PLACEHOLDER, "1"),
        "format": '"cache_settings/1"',
        "sources": json.dumps({SOURCE: {"nodes": [{"host": "h", "port": 1}], "fetched_at": 1}}),
        "entry": json.dumps({"nodes": [{"host": "h", "port": 1}], "fetched_at": 1}),
        "nodes": json.dumps([{"host": "h", "port": 1}]),
        "node": json.dumps({"host": "h", "port": 1}),
        "host": '"cache-1.example"',
        "port": "11211",
        "ip": '"::1"',
        "tls": "true",
        "fetched_at": "1",
        "version": "null",
        "extra": '{"any": [1, 2, {"x": null}]}',
    }
    for field in FIELDS:
        path.write_bytes(_snapshot_with(field).replace(PLACEHOLDER, valid[field]).encode())

        assert list(load_snapshot(path)) == [SOURCE], field


def test_load_snapshot__largest_accepted_file__within_the_time_bound(path: Path) -> None:
    """A file of MAX_SIZE bytes of valid nodes reads well within the bound."""
    node = '{"host": "node-0000000.example", "ip": "10.0.0.1", "port": 11211}, '
    count = (MAX_SIZE - 200) // len(node)
    nodes = ", ".join([node.removesuffix(", ")] * count)
    content = f'{{"format": "cache_settings/1", "sources": {{"{SOURCE}": '
    content += f'{{"nodes": [{nodes}], "fetched_at": 1}}}}}}'
    assert len(content) <= MAX_SIZE

    path.write_text(content)

    entries = _timed(lambda: load_snapshot(path), LARGEST_CPU_BOUND)

    assert len(entries[SOURCE].nodes) == 1
