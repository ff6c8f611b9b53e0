"""The last-known-good snapshot file: format, validation, atomic and concurrent writes."""

from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_settings import snapshot
from cache_settings.exceptions import SnapshotError
from cache_settings.nodes import Node
from cache_settings.snapshot import (
    FORMAT,
    SnapshotEntry,
    load_snapshot,
    read_snapshot,
    write_snapshot,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "consul:///memcached?tag=prod"
NODES = [Node("10.0.0.2", 11211), Node("10.0.0.1", 11212, ip="10.0.0.1")]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache-nodes.json"


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")
    return caplog


def _python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args], cwd=ROOT, text=True, **kwargs
    )


# -- format and round trip ---------------------------------------------------------------------


def test_write_snapshot__round_trip(path: Path) -> None:
    assert write_snapshot(path, SOURCE, NODES, version=12, fetched_at=1700000000.0)

    entries = load_snapshot(path)

    assert entries == {
        SOURCE: SnapshotEntry(SOURCE, (NODES[1], NODES[0]), 1700000000.0, 12),
    }
    assert read_snapshot(path, SOURCE) == entries[SOURCE]


def test_write_snapshot__nodes_stored_unique_and_sorted(path: Path) -> None:
    write_snapshot(path, SOURCE, [Node("b"), Node("a"), Node("b"), Node("a", 11212)])

    stored = json.loads(path.read_text())["sources"][SOURCE]["nodes"]

    assert stored == [
        {"host": "a", "port": 11211},
        {"host": "a", "port": 11212},
        {"host": "b", "port": 11211},
    ]


def test_write_snapshot__plain_json_in_documented_format(path: Path) -> None:
    """The file is JSON (no pickle) in the format of DESIGN.md, with a human-readable time."""
    write_snapshot(path, SOURCE, [Node("h", tls=True)], version=12, fetched_at=1700000000.0)

    data = json.loads(path.read_bytes())

    assert data == {
        "format": FORMAT,
        "sources": {
            SOURCE: {
                "nodes": [{"host": "h", "port": 11211, "tls": True}],
                "fetched_at": 1700000000.0,
                "fetched": "2023-11-14T22:13:20Z",
                "version": 12,
            }
        },
    }


def test_write_snapshot__other_sources_kept(path: Path) -> None:
    sources = [f"memcached://h{n}:11211" for n in range(5)]
    for n, source in enumerate(sources):
        write_snapshot(path, source, [Node(f"h{n}")], version=n)
    write_snapshot(path, sources[2], [Node("new")], version=99)

    entries = load_snapshot(path)

    assert sorted(entries) == sorted(sources)
    assert entries[sources[0]].nodes == (Node("h0"),)
    assert entries[sources[2]].nodes == (Node("new"),)
    assert entries[sources[2]].version == 99


def test_write_snapshot__same_entry_refreshes_fetched_at(path: Path) -> None:
    """Documented choice: fetched_at always records the last live confirmation."""
    write_snapshot(path, SOURCE, NODES, version=3, fetched_at=1000.0)
    write_snapshot(path, SOURCE, NODES, version=3, fetched_at=2000.0)

    assert load_snapshot(path)[SOURCE].fetched_at == 2000.0


def test_write_snapshot__fetched_at_defaults_to_now(path: Path) -> None:
    before = time.time()
    write_snapshot(path, SOURCE, NODES)

    entry = load_snapshot(path)[SOURCE]

    assert before <= entry.fetched_at <= time.time()
    assert entry.version is None


@pytest.mark.parametrize(
    "source",
    [
        "consul://user:s3cr3t@agent:8500/memcached",
        "consul:///memcached?tag=prod&token=s3cr3t",
        "consul:///memcached?Token=s3cr3t",
        "elasticache-api://name?password=s3cr3t",
    ],
)
def test_write_snapshot__key_with_credentials__value_error(path: Path, source: str) -> None:
    with pytest.raises(ValueError, match="credentials") as info:
        write_snapshot(path, source, NODES)

    assert "s3cr3t" not in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nodes": []}, "empty node list"),
        ({"version": "12"}, "version"),
        ({"version": True}, "version"),
        ({"fetched_at": math.nan}, "fetched_at"),
        ({"fetched_at": "now"}, "fetched_at"),
    ],
)
def test_write_snapshot__bad_arguments__value_error(
    path: Path, kwargs: dict[str, object], match: str
) -> None:
    arguments: dict[str, object] = {"nodes": NODES, **kwargs}

    with pytest.raises(ValueError, match=match):
        write_snapshot(path, SOURCE, **arguments)  # type: ignore[arg-type]

    assert not path.exists()


# -- reading: missing, absent, max_age ---------------------------------------------------------


def test_load_snapshot__missing_file__empty(path: Path) -> None:
    assert load_snapshot(path) == {}
    assert read_snapshot(path, SOURCE) is None


def test_read_snapshot__other_source__none(path: Path) -> None:
    write_snapshot(path, "memcached://other:11211", NODES)

    assert read_snapshot(path, SOURCE) is None


def test_snapshot_entry__age_in_seconds() -> None:
    entry = SnapshotEntry(SOURCE, tuple(NODES), fetched_at=1000.0)

    before = time.time()
    age = entry.age()
    after = time.time()

    assert entry.age(now=1250.5) == 250.5
    assert before - 1000.0 <= age <= after - 1000.0


def test_snapshot_entry__fetched_at_in_the_future__age_zero() -> None:
    entry = SnapshotEntry(SOURCE, tuple(NODES), fetched_at=1000.0)

    assert entry.age(now=990.0) == 0.0


def test_read_snapshot__fetched_at_far_in_the_future__none_and_warning(
    path: Path, warnings_logged: pytest.LogCaptureFixture
) -> None:
    """A hand-edited or skewed entry would otherwise pass any max_age forever."""
    write_snapshot(path, SOURCE, NODES, fetched_at=time.time() + 3600)

    assert read_snapshot(path, SOURCE, max_age=60) is None
    assert read_snapshot(path, SOURCE) is None

    assert "in the future" in warnings_logged.text
    assert str(path) in warnings_logged.text
    assert SOURCE in warnings_logged.text


def test_read_snapshot__fetched_at_slightly_in_the_future__entry_aged_zero(
    path: Path, warnings_logged: pytest.LogCaptureFixture
) -> None:
    """Small clock skew between writer and reader (up to 300 s) is tolerated."""
    write_snapshot(path, SOURCE, NODES, fetched_at=time.time() + 100)

    entry = read_snapshot(path, SOURCE, max_age=60)

    assert entry is not None
    assert entry.age() == 0.0
    assert warnings_logged.records == []


def test_read_snapshot__older_than_max_age__none_and_warning(
    path: Path, warnings_logged: pytest.LogCaptureFixture
) -> None:
    write_snapshot(path, SOURCE, NODES, fetched_at=time.time() - 100)

    assert read_snapshot(path, SOURCE, max_age=50) is None

    assert "is 100 seconds old" in warnings_logged.text
    assert str(path) in warnings_logged.text
    assert SOURCE in warnings_logged.text


def test_read_snapshot__within_max_age__entry(path: Path) -> None:
    write_snapshot(path, SOURCE, NODES, fetched_at=time.time() - 100)

    entry = read_snapshot(path, SOURCE, max_age=200)

    assert entry is not None
    assert 99 < entry.age() < 110
    assert load_snapshot(path)[SOURCE] == entry


# -- malformed files ---------------------------------------------------------------------------


def _file(entry: object = None, **top: object) -> bytes:
    data: dict[str, object] = {"format": FORMAT, "sources": {SOURCE: entry}}
    data.update(top)
    return json.dumps(data).encode()


def _entry(**fields: object) -> bytes:
    entry: dict[str, object] = {"nodes": [{"host": "h", "port": 11211}], "fetched_at": 1.0}
    entry.update(fields)
    return _file({k: v for k, v in entry.items() if v is not ...})


MALFORMED_FILES = [
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(_entry()[:-7], "not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe{}", "not valid JSON", id="not-utf8"),
    pytest.param(b"[]", "expected a JSON object, not list", id="not-an-object"),
    pytest.param(b'"cache_settings/1"', "expected a JSON object", id="a-string"),
    pytest.param(_file(format="cache_settings/2"), "format is 'cache_settings/2'", id="format-2"),
    pytest.param(json.dumps({"sources": {}}).encode(), "format is None", id="no-format"),
    pytest.param(_file(sources=[]), "'sources' must be an object", id="sources-list"),
    pytest.param(_file(sources=None), "'sources' must be an object", id="no-sources"),
    pytest.param(_file(["h:11211"]), "must be an object, not list", id="entry-list"),
    pytest.param(_entry(nodes=...), "missing 'nodes'", id="no-nodes"),
    pytest.param(_entry(fetched_at=...), "missing 'fetched_at'", id="no-fetched-at"),
    pytest.param(_entry(nodes=[]), "non-empty list", id="nodes-empty"),
    pytest.param(_entry(nodes="h:11211"), "non-empty list", id="nodes-string"),
    pytest.param(_entry(nodes=["h:11211"]), "node must be an object", id="node-string"),
    pytest.param(_entry(nodes=[{"host": 1, "port": 1}]), "host", id="host-int"),
    pytest.param(_entry(nodes=[{"port": 11211}]), "host", id="no-host"),
    pytest.param(_entry(nodes=[{"host": "h"}]), "port", id="no-port"),
    pytest.param(_entry(nodes=[{"host": "h", "port": 0}]), "port", id="port-0"),
    pytest.param(_entry(nodes=[{"host": "h", "port": 65536}]), "port", id="port-65536"),
    pytest.param(_entry(nodes=[{"host": "h", "port": "11211"}]), "port", id="port-string"),
    pytest.param(_entry(nodes=[{"host": "h", "port": True}]), "port", id="port-bool"),
    pytest.param(_entry(nodes=[{"host": "h", "port": 1.5}]), "port", id="port-float"),
    pytest.param(_entry(nodes=[{"host": "h", "port": 1, "tls": "y"}]), "tls", id="tls-string"),
    pytest.param(_entry(fetched_at="2023-11-14"), "fetched_at", id="fetched-at-string"),
    pytest.param(_entry(fetched_at=None), "fetched_at", id="fetched-at-null"),
    pytest.param(_entry().replace(b"1.0", b"NaN"), "NaN is not a number", id="fetched-at-nan"),
    pytest.param(_entry(version="12"), "version", id="version-string"),
    pytest.param(_entry(version=1.5), "version", id="version-float"),
]


@pytest.mark.parametrize(("content", "reason"), MALFORMED_FILES)
def test_load_snapshot__malformed__snapshot_error(path: Path, content: bytes, reason: str) -> None:
    path.write_bytes(content)

    with pytest.raises(SnapshotError) as info:
        load_snapshot(path)

    assert str(path) in str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize(("content", "reason"), MALFORMED_FILES)
def test_read_snapshot__malformed__none_and_warning(
    path: Path, warnings_logged: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    path.write_bytes(content)

    assert read_snapshot(path, SOURCE) is None

    assert [r.levelno for r in warnings_logged.records] == [logging.WARNING]
    assert str(path) in warnings_logged.text
    assert reason in warnings_logged.text


def test_load_snapshot__unreadable__snapshot_error(path: Path) -> None:
    """A directory where the file should be cannot be read, even by root."""
    path.mkdir()

    with pytest.raises(SnapshotError, match="cannot be read"):
        load_snapshot(path)


@pytest.mark.parametrize(("content", "reason"), MALFORMED_FILES[:6])
def test_write_snapshot__over_malformed_file__replaced_and_moved_aside(
    path: Path, warnings_logged: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    path.write_bytes(content)

    assert write_snapshot(path, SOURCE, NODES, version=1)

    assert list(load_snapshot(path)) == [SOURCE]
    assert Path(f"{path}.corrupt").read_bytes() == content
    assert "replacing malformed snapshot" in warnings_logged.text
    assert reason in warnings_logged.text


# -- unwritable locations ----------------------------------------------------------------------

# Tests run as root, which ignores permission bits, so chmod 0o555 proves nothing. These
# locations fail for every user: a parent that is a regular file (ENOTDIR when creating the
# lock file) and a directory where the data file should be (EISDIR when reading it).


def test_write_snapshot__parent_is_a_file__false_and_warning(
    tmp_path: Path, warnings_logged: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "release").write_text("not a directory")
    path = tmp_path / "release" / "cache-nodes.json"

    assert write_snapshot(path, SOURCE, NODES) is False

    assert "cannot write snapshot" in warnings_logged.text
    assert str(path) in warnings_logged.text
    assert "Not a directory" in warnings_logged.text


def test_write_snapshot__missing_parent_directories__created(tmp_path: Path) -> None:
    """BASE_DIR / "var" / "cache-nodes.json" in a fresh checkout, before "var" exists."""
    path = tmp_path / "var" / "deep" / "cache-nodes.json"

    assert write_snapshot(path, SOURCE, NODES, version=3)

    assert load_snapshot(path)[SOURCE].version == 3


def test_write_snapshot__grandparent_is_a_file__false_and_warning(
    tmp_path: Path, warnings_logged: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "release").write_text("not a directory")
    path = tmp_path / "release" / "var" / "cache-nodes.json"

    assert write_snapshot(path, SOURCE, NODES) is False

    assert "cannot write snapshot" in warnings_logged.text
    assert str(path) in warnings_logged.text
    assert "Not a directory" in warnings_logged.text


def test_write_snapshot__directory_in_the_way__false_and_warning(
    path: Path, warnings_logged: pytest.LogCaptureFixture
) -> None:
    path.mkdir()

    assert write_snapshot(path, SOURCE, NODES) is False

    assert str(path) in warnings_logged.text
    assert "is a directory, not a regular file" in warnings_logged.text
    assert path.is_dir()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


# -- concurrency and crashes -------------------------------------------------------------------

_WRITER = """
import sys
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot
path, n = sys.argv[1], int(sys.argv[2])
source = f"memcached://w{n}:11211"
for i in range(50):
    if not write_snapshot(path, source, [Node(f"10.0.{n}.{i % 7 + 1}")], version=i):
        sys.exit(f"writer {n}: write {i} failed")
"""

_READER = """
import json, os, sys
from cache_settings.snapshot import load_snapshot
path, stop = sys.argv[1], sys.argv[2]
reads, errors, shrunk, seen = 0, [], 0, set()
print("ready", flush=True)
while not os.path.exists(stop):
    try:
        with open(path, "rb") as f:
            json.loads(f.read())
        keys = set(load_snapshot(path))
    except FileNotFoundError:
        continue
    except Exception as exc:
        errors.append(repr(exc))
        continue
    reads += 1
    shrunk += not keys >= seen
    seen = keys
print(json.dumps({"reads": reads, "errors": errors[:5], "shrunk": shrunk}))
"""


def test_write_snapshot__concurrent_writers__all_kept_and_never_torn(tmp_path: Path) -> None:
    """8 processes write 50 times each while a reader polls: no torn file, no lost key."""
    path, stop = tmp_path / "cache-nodes.json", tmp_path / "stop"
    with _python(_READER, str(path), str(stop), stdout=subprocess.PIPE) as reader:
        assert reader.stdout is not None
        assert reader.stdout.readline() == "ready\n"
        writers = [_python(_WRITER, str(path), str(n)) for n in range(8)]
        codes = [w.wait(timeout=30) for w in writers]
        stop.touch()
        report = json.loads(reader.stdout.read())

    assert codes == [0] * 8
    entries = load_snapshot(path)
    assert sorted(entries) == [f"memcached://w{n}:11211" for n in range(8)]
    assert {e.version for e in entries.values()} == {49}
    assert report["errors"] == []
    assert report["shrunk"] == 0
    assert report["reads"] > 10


_LOOPING_WRITER = """
import sys
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot
nodes = [Node(f"node-{i}.example", 11211, ip=f"10.1.{i // 250}.{i % 250}") for i in range(2000)]
i = 0
while True:
    write_snapshot(sys.argv[1], "memcached://crash:11211", nodes, version=i)
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def test_write_snapshot__writer_killed__file_stays_valid(path: Path) -> None:
    """SIGKILL at random points of a write loop leaves the old or the new file, never a torn one."""
    write_snapshot(path, SOURCE, NODES, version=1)
    versions = []
    for delay in (0.01, 0.05, 0.13, 0.21):
        with _python(_LOOPING_WRITER, str(path), stdout=subprocess.PIPE) as writer:
            assert writer.stdout is not None
            assert writer.stdout.readline() == "ready\n"
            time.sleep(delay)
            writer.send_signal(signal.SIGKILL)
            assert writer.wait(timeout=5) == -signal.SIGKILL

        entries = load_snapshot(path)

        assert entries[SOURCE].version == 1
        assert len(entries["memcached://crash:11211"].nodes) == 2000
        versions.append(entries["memcached://crash:11211"].version)
    assert all(isinstance(v, int) and v >= 0 for v in versions)


def test_write_snapshot__leftover_temp_files__ignored_then_removed(path: Path) -> None:
    """What a killed writer leaves (a half-written temp file) is never read as the snapshot."""
    write_snapshot(path, SOURCE, NODES, version=1)
    leftover = path.parent / f".{path.name}.0123456789abcdef.tmp"
    leftover.write_bytes(path.read_bytes()[:40])
    unrelated = path.parent / "other.json.tmp"
    unrelated.write_text("{}")

    assert load_snapshot(path)[SOURCE].version == 1
    assert write_snapshot(path, SOURCE, NODES, version=2)

    assert not leftover.exists()
    assert unrelated.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "cache-nodes.json",
        "cache-nodes.json.lock",
        "other.json.tmp",
    ]
    assert os.stat(path).st_size > 0


def test_write_snapshot__files_that_only_share_the_temp_prefix__kept(path: Path) -> None:
    """Only temp files of this snapshot's own writers are stale: others sharing the prefix stay.

    The snapshot ``cache-nodes.json.d`` in the same directory writes its temp files as
    ``.cache-nodes.json.d.<hex>.tmp`` under a lock of its own, so one may be in flight.
    """
    in_flight = path.parent / f".{path.name}.d.0123456789abcdef.tmp"
    in_flight.write_text("another snapshot's write in progress")
    users = path.parent / f".{path.name}.bak.tmp"
    users.write_text("a user's copy")
    short = path.parent / f".{path.name}.0123.tmp"
    short.write_text("not a name a writer makes")

    assert write_snapshot(path, SOURCE, NODES, version=1)

    assert in_flight.read_text() == "another snapshot's write in progress"
    assert users.read_text() == "a user's copy"
    assert short.exists()


# -- locking: threads, fork, bounded wait ------------------------------------------------------


def test_write_snapshot__concurrent_threads__all_kept(path: Path) -> None:
    """Record locks do not exclude threads of one process; the in-process lock must."""
    errors: list[str] = []

    def writer(n: int) -> None:
        for i in range(20):
            if not write_snapshot(path, f"memcached://t{n}:11211", [Node(f"h{i}")], version=i):
                errors.append(f"thread {n}: write {i} failed")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    entries = load_snapshot(path)
    assert sorted(entries) == sorted(f"memcached://t{n}:11211" for n in range(8))
    assert {e.version for e in entries.values()} == {19}


@pytest.fixture
def lock_held_by_thread(path: Path) -> Iterator[threading.Event]:
    """A thread of this process inside the write path (holding every lock) until set."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with snapshot._locked(str(path), 5.0):
            held.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(timeout=5)
    try:
        yield release
    finally:
        release.set()
        thread.join(timeout=10)


def _read_line(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 100) if ready else b"timeout"


_THIRD_WRITER = """
import sys
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot
sys.exit(0 if write_snapshot(sys.argv[1], "memcached://third:11211", [Node("h3")]) else 1)
"""


def test_write_snapshot__forked_while_a_thread_held_the_lock__nobody_blocked(
    path: Path, lock_held_by_thread: threading.Event
) -> None:
    """A worker forked mid-write neither keeps the lock nor is stuck on a copy of it.

    With ``flock`` the child kept the parent's lock for its whole life: its own writes,
    the parent's and other processes' all blocked forever.
    """
    lockname = os.path.realpath(f"{path}.lock")
    result_r, result_w = os.pipe()
    exit_r, exit_w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; forking a process with a
        # watcher thread is exactly the case under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(result_r)
            os.close(exit_w)
            inherited = [
                fd
                for fd in os.listdir("/proc/self/fd")
                if os.path.realpath(f"/proc/self/fd/{fd}") == lockname
            ]
            ok = write_snapshot(path, "memcached://child:11211", [Node("h1")])
            os.write(result_w, f"{ok} {len(inherited)}".encode())
            os.read(exit_r, 1)  # a long-lived worker: alive until the parent is done
            code = 0
        finally:
            os._exit(code)
    os.close(result_w)
    os.close(exit_r)
    try:
        # The parent's thread still holds the lock: the child waits for it.
        assert _read_line(result_r, 0.3) == b"timeout"
        lock_held_by_thread.set()
        assert _read_line(result_r, 5) == b"True 0"

        # While the child lives: the parent and a third process write at once.
        started = time.monotonic()
        assert write_snapshot(path, "memcached://parent:11211", [Node("h2")])
        with _python(_THIRD_WRITER, str(path)) as third:
            assert third.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        os.close(exit_w)
        os.close(result_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(load_snapshot(path)) == [
        "memcached://child:11211",
        "memcached://parent:11211",
        "memcached://third:11211",
    ]


_LOCK_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + ".lock", os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_write_snapshot__lock_held_by_another_process__false_within_bound(
    path: Path, warnings_logged: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "LOCK_TIMEOUT", 0.5)
    write_snapshot(path, SOURCE, NODES, version=1)
    holder = _python(_LOCK_HOLDER, str(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"

        started = time.monotonic()
        written = write_snapshot(path, SOURCE, NODES, version=2)
        elapsed = time.monotonic() - started

        holder.stdin.close()
        assert holder.wait(timeout=5) == 0

    assert written is False
    assert 0.5 <= elapsed < 1.5
    assert f"{path}.lock held by another process for 0.5 seconds" in warnings_logged.text
    assert SOURCE in warnings_logged.text
    assert load_snapshot(path)[SOURCE].version == 1
    assert write_snapshot(path, SOURCE, NODES, version=3)
    assert load_snapshot(path)[SOURCE].version == 3


def test_write_snapshot__lock_held_by_another_thread__false_within_bound(
    path: Path,
    lock_held_by_thread: threading.Event,
    warnings_logged: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshot, "LOCK_TIMEOUT", 0.3)

    started = time.monotonic()
    written = write_snapshot(path, SOURCE, NODES)
    elapsed = time.monotonic() - started

    assert written is False
    assert 0.3 <= elapsed < 1.3
    assert "another thread held the lock for 0.3 seconds" in warnings_logged.text
    assert str(path) in warnings_logged.text
    lock_held_by_thread.set()
