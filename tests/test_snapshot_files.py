"""Snapshot files among hostile neighbours: special files, planted links, permission bits.

The tests run as root, which ignores permission bits and the sticky bit, so only the
library's own care (O_NOFOLLOW, regular files only, fresh files renamed into place) keeps a
planted link from redirecting a read or a write: the worst case.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cache_settings import ConfigurationError, ResolutionError, SourceError, memcached
from cache_settings.exceptions import SnapshotError
from cache_settings.nodes import Node
from cache_settings.policy import Policy
from cache_settings.resolve import resolve_with
from cache_settings.snapshot import (
    check_snapshot_path,
    load_snapshot,
    read_snapshot,
    write_snapshot,
)
from cache_settings.sources import Traits

SOURCE = "memcached://snapshot-files:11211"
NODES = [Node("10.0.0.1"), Node("10.0.0.2")]
SECRET = b"-----BEGIN PRIVATE KEY----- not for the world"
VICTIM = b"a file of someone else's that must not change\n"
MALFORMED = b'{"format": "cache_settings/1", "sources": '


@pytest.fixture
def area(tmp_path: Path) -> Iterator[Path]:
    """A world-writable sticky directory ``shared`` beside a ``private`` one with a secret."""
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    shared.chmod(0o1777)
    private.mkdir()
    (private / "secret").write_bytes(SECRET)
    (private / "secret").chmod(0o600)
    (private / "victim").write_bytes(VICTIM)
    yield tmp_path
    # A read that blocked on a FIFO (a failing test) is released by a writer showing up.
    for fifo in [p for p in tmp_path.rglob("*") if p.is_fifo()]:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, set explicitly: copying mode bits must not depend on it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under *root*: kind, permission bits, inode, and content or link target."""
    state: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            detail: object = os.readlink(path)
        elif stat.S_ISREG(info.st_mode):
            detail = path.read_bytes()
        else:
            detail = None
        kind = stat.S_IFMT(info.st_mode)
        state[str(path.relative_to(root))] = (kind, stat.S_IMODE(info.st_mode), info.st_ino, detail)
    return state


def _own(name: str) -> Callable[[str], bool]:
    """Whether an entry is the snapshot *name* or one of its own siblings."""
    own = {name, f"{name}.lock", f"{name}.corrupt"}
    directory, base = os.path.split(name)
    temp_prefix = os.path.join(directory, f".{base}.")
    return lambda entry: entry in own or (entry.startswith(temp_prefix) and entry.endswith(".tmp"))


def _assert_only_own_entries_changed(
    before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]], name: str
) -> None:
    own = _own(name)
    changed = {
        entry
        for entry in before.keys() | after.keys()
        if before.get(entry) != after.get(entry) and not own(entry)
    }
    assert changed == set()


def _assert_secret_copied_nowhere(root: Path) -> None:
    secret_inode = (root / "private" / "secret").stat().st_ino
    holders = [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and path.stat().st_ino != secret_inode
        and SECRET in path.read_bytes()
    ]
    assert holders == []


def _within(seconds: float, call: Callable[[], object]) -> object:
    """Run *call* in a thread; fail the test if it has not returned after *seconds*."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} seconds"
    assert time.monotonic() - started < seconds
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def _valid_snapshot() -> bytes:
    entry = {"nodes": [{"host": "10.9.9.9", "port": 11211}], "fetched_at": 1700000000.0}
    return json.dumps({"format": "cache_settings/1", "sources": {SOURCE: entry}}).encode()


# -- special files at the snapshot path ---------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays


def _directory(path: Path) -> None:
    path.mkdir()


def _zero_device(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("creating device nodes is not permitted here")


def _link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _link_to_secret(path: Path) -> None:
    path.symlink_to(path.parent.parent / "private" / "secret")


def _link_to_valid_snapshot(path: Path) -> None:
    target = path.parent.parent / "private" / "victim"
    target.write_bytes(_valid_snapshot())
    path.symlink_to(target)


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.parent.parent / "private" / "created-through-link.json")


SPECIAL = [
    pytest.param(_fifo, "is a FIFO", id="fifo"),
    pytest.param(_socket, "is a socket", id="socket"),
    pytest.param(_directory, "is a directory", id="directory"),
    pytest.param(_zero_device, "is a character device", id="char-device"),
    pytest.param(_link_to_dev_zero, "is a symbolic link", id="symlink-dev-zero"),
    pytest.param(_link_to_secret, "is a symbolic link", id="symlink-private-file"),
    pytest.param(_link_to_valid_snapshot, "is a symbolic link", id="symlink-valid-snapshot"),
    pytest.param(_dangling_link, "is a symbolic link", id="dangling-symlink"),
]


@pytest.mark.parametrize(("make", "words"), SPECIAL)
def test_load_snapshot__special_file__snapshot_error_without_blocking(
    area: Path, make: Callable[[Path], None], words: str
) -> None:
    path = area / "shared" / "nodes.json"
    make(path)
    before = _tree(area)

    with pytest.raises(SnapshotError) as info:
        _within(2.0, lambda: load_snapshot(path))

    assert str(info.value).startswith(f"{path}: cannot be read ({words}")
    assert (info.value.path, info.value.readable) == (str(path), False)
    assert _tree(area) == before


@pytest.mark.parametrize(("make", "words"), SPECIAL)
def test_read_snapshot__special_file__none_and_warning(
    area: Path, make: Callable[[Path], None], words: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = area / "shared" / "nodes.json"
    make(path)
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")

    assert _within(2.0, lambda: read_snapshot(path, SOURCE)) is None

    assert words in caplog.text
    assert str(path) in caplog.text


@pytest.mark.parametrize(("make", "words"), SPECIAL)
def test_write_snapshot__special_file__false_nothing_created_or_changed(
    area: Path, make: Callable[[Path], None], words: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = area / "shared" / "nodes.json"
    make(path)
    before = _tree(area)
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")

    assert _within(2.0, lambda: write_snapshot(path, SOURCE, NODES)) is False

    assert _tree(area) == before  # not even a .lock beside it
    assert words in caplog.text
    _assert_secret_copied_nowhere(area)


def test_load_snapshot__dev_zero_itself__refused_without_reading() -> None:
    """A device read to the end would never end (MemoryError through on_failure before)."""
    with pytest.raises(SnapshotError, match="is a character device, not a regular file"):
        _within(2.0, lambda: load_snapshot("/dev/zero"))


# -- planted siblings in a world-writable directory ----------------------------------------------


def test_write_snapshot__planted_corrupt_symlink__target_unchanged(
    area: Path, umask_022: None
) -> None:
    path = area / "shared" / "nodes.json"
    path.write_bytes(MALFORMED)
    Path(f"{path}.corrupt").symlink_to(area / "private" / "victim")
    before = _tree(area)

    assert write_snapshot(path, SOURCE, NODES)

    _assert_only_own_entries_changed(before, _tree(area), "shared/nodes.json")
    assert (area / "private" / "victim").read_bytes() == VICTIM
    corrupt = Path(f"{path}.corrupt")
    assert not corrupt.is_symlink()
    assert corrupt.read_bytes() == MALFORMED
    assert list(load_snapshot(path)) == [SOURCE]


def test_write_snapshot__planted_corrupt_hard_link__linked_file_unchanged(area: Path) -> None:
    """Writing into an existing .corrupt would change every file linked to it."""
    path = area / "shared" / "nodes.json"
    path.write_bytes(MALFORMED)
    os.link(area / "private" / "victim", f"{path}.corrupt")

    assert write_snapshot(path, SOURCE, NODES)

    assert (area / "private" / "victim").read_bytes() == VICTIM
    assert Path(f"{path}.corrupt").read_bytes() == MALFORMED


def test_write_snapshot__corrupt_is_a_fifo__replaced_without_blocking(area: Path) -> None:
    path = area / "shared" / "nodes.json"
    path.write_bytes(MALFORMED)
    os.mkfifo(f"{path}.corrupt")

    assert _within(2.0, lambda: write_snapshot(path, SOURCE, NODES)) is True

    assert Path(f"{path}.corrupt").read_bytes() == MALFORMED
    assert list(load_snapshot(path)) == [SOURCE]


@pytest.mark.parametrize("target", ["created-by-lock", "victim"])
def test_write_snapshot__planted_lock_symlink__false_and_target_untouched(
    area: Path, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A dangling .lock link creates nothing at its target; a live one is not opened."""
    path = area / "shared" / "nodes.json"
    Path(f"{path}.lock").symlink_to(area / "private" / target)
    before = _tree(area)
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")

    assert write_snapshot(path, SOURCE, NODES) is False

    assert _tree(area) == before
    assert not (area / "private" / "created-by-lock").exists()
    assert "is a symbolic link" in caplog.text


@pytest.mark.parametrize("make", [_fifo, _directory, _socket])
def test_write_snapshot__lock_not_a_regular_file__false_without_blocking(
    area: Path, make: Callable[[Path], None]
) -> None:
    path = area / "shared" / "nodes.json"
    make(Path(f"{path}.lock"))
    before = _tree(area)

    assert _within(2.0, lambda: write_snapshot(path, SOURCE, NODES)) is False

    assert _tree(area) == before


def test_write_snapshot__planted_temp_symlink__only_the_link_removed(area: Path) -> None:
    """A planted look-alike of a leftover temp file loses its entry; its target stays."""
    path = area / "shared" / "nodes.json"
    planted = area / "shared" / ".nodes.json.0123456789abcdef.tmp"
    planted.symlink_to(area / "private" / "victim")

    assert write_snapshot(path, SOURCE, NODES)

    assert not planted.is_symlink()
    assert (area / "private" / "victim").read_bytes() == VICTIM
    assert list(load_snapshot(path)) == [SOURCE]


def test_write_snapshot__every_plant_at_once__only_own_paths_change(area: Path) -> None:
    """The snapshot path itself free; every sibling name planted with a link elsewhere."""
    path = area / "shared" / "nodes.json"
    Path(f"{path}.corrupt").symlink_to(area / "private" / "secret")
    (area / "shared" / ".nodes.json.feedfacecafebeef.tmp").symlink_to(area / "private" / "victim")
    (area / "shared" / "other.json").symlink_to(area / "private" / "secret")
    before = _tree(area)

    assert write_snapshot(path, SOURCE, NODES)
    assert write_snapshot(path, "memcached://second:11211", NODES)
    path.write_bytes(MALFORMED)  # the next write moves it aside over the planted .corrupt
    assert write_snapshot(path, SOURCE, NODES)

    _assert_only_own_entries_changed(before, _tree(area), "shared/nodes.json")
    _assert_secret_copied_nowhere(area)
    assert (area / "private" / "secret").read_bytes() == SECRET
    assert (area / "private" / "victim").read_bytes() == VICTIM


def test_write_snapshot__hard_link_to_private_file__moved_aside_never_copied(
    area: Path, umask_022: None
) -> None:
    """What the reader rejects is renamed, not copied: the 0600 content gets no new copy."""
    path = area / "shared" / "nodes.json"
    os.link(area / "private" / "secret", path)

    assert write_snapshot(path, SOURCE, NODES)

    corrupt = Path(f"{path}.corrupt")
    assert corrupt.stat().st_ino == (area / "private" / "secret").stat().st_ino
    assert stat.S_IMODE(corrupt.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (area / "private" / "secret").read_bytes() == SECRET
    _assert_secret_copied_nowhere(area)


# -- permission bits --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o666])
def test_write_snapshot__replaced_file_keeps_its_permission_bits(
    tmp_path: Path, umask_022: None, mode: int
) -> None:
    path = tmp_path / "nodes.json"
    write_snapshot(path, SOURCE, NODES)
    path.chmod(mode)

    assert write_snapshot(path, SOURCE, NODES, version=2)

    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert load_snapshot(path)[SOURCE].version == 2


def test_write_snapshot__malformed_private_file__copy_and_new_file_stay_private(
    tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "nodes.json"
    path.write_bytes(MALFORMED)
    path.chmod(0o600)

    assert write_snapshot(path, SOURCE, NODES)

    assert stat.S_IMODE(Path(f"{path}.corrupt").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_snapshot__new_file__umask_applies(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "nodes.json"

    assert write_snapshot(path, SOURCE, NODES)

    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# -- check_snapshot_path ------------------------------------------------------------------------


def test_check_snapshot_path__regular_or_missing__absolute_normalised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nodes.json").write_bytes(_valid_snapshot())

    assert check_snapshot_path("nodes.json") == str(tmp_path / "nodes.json")
    assert check_snapshot_path(tmp_path / "var" / ".." / "x.json") == str(tmp_path / "x.json")
    assert check_snapshot_path("var/deep/nodes.json") == str(tmp_path / "var/deep/nodes.json")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(_directory, "is a directory", id="directory"),
        pytest.param(_fifo, "is not a regular file", id="fifo"),
        pytest.param(_socket, "is not a regular file", id="socket"),
        pytest.param(_zero_device, "is not a regular file", id="char-device"),
        pytest.param(_link_to_secret, "is a symbolic link", id="symlink"),
        pytest.param(_dangling_link, "is a symbolic link", id="dangling-symlink"),
    ],
)
def test_check_snapshot_path__not_a_regular_file__configuration_error(
    area: Path, make: Callable[[Path], None], words: str
) -> None:
    path = area / "shared" / "nodes.json"
    make(path)

    with pytest.raises(ConfigurationError, match=words) as info:
        check_snapshot_path(path)

    assert str(path) in str(info.value)


def test_check_snapshot_path__parent_is_a_file__configuration_error(tmp_path: Path) -> None:
    (tmp_path / "release").write_text("not a directory")

    with pytest.raises(ConfigurationError, match="a parent of it is not a directory"):
        check_snapshot_path(tmp_path / "release" / "nodes.json")
    with pytest.raises(ConfigurationError, match="a parent of it is not a directory"):
        check_snapshot_path(tmp_path / "release" / "var" / "nodes.json")


@pytest.mark.parametrize("value", ["", "nodes\x00.json", b"nodes.json", 12, None])
def test_check_snapshot_path__not_a_path__configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError, match="snapshot must be the path of a JSON file"):
        check_snapshot_path(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "consul://agent:8500/memcached?token=S3CRET-TOKEN",
        "consul:///svc?token=S3CRET-TOKEN",
        "elasticache://cfg.example.com:11211",
        "file:///srv/nodes.json",
        "https://user:S3CRET-TOKEN@example.com/nodes.json",
        "dns+srv://_memcached._tcp.example.com",
    ],
)
def test_check_snapshot_path__a_url__configuration_error_naming_it_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A source URL in the path's place would become a directory named ``consul:`` and a file
    named after the URL's query, token included; it is refused, and nothing is created."""
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigurationError, match="is a URL; snapshot takes the path") as info:
        check_snapshot_path(value)

    assert "S3CRET" not in str(info.value)
    assert value.split("?")[0].split("@")[-1] in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("~/nodes.json", "starts with '~', which is not expanded"),
        ("~deploy/var/nodes.json", "starts with '~', which is not expanded"),
        ("$HOME/nodes.json", "holds '$HOME', which is not expanded"),
        ("${BASE_DIR}/var/nodes.json", "holds '${BASE_DIR}', which is not expanded"),
        ("var/$RELEASE/nodes.json", "holds '$RELEASE', which is not expanded"),
        (" var/nodes.json", "starts or ends with a space"),
        ("var/nodes.json ", "starts or ends with a space"),
        ("var/nodes.json\n", "holds a control character"),
        ("var/\tnodes.json", "holds a control character"),
    ],
)
def test_check_snapshot_path__written_for_a_shell__configuration_error_nothing_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    """Python expands neither "~" nor "$NAME", and keeps a newline read with a variable: each
    became a file or directory of that literal name under the working directory ("./~/",
    "./$HOME/", "./ var/"), so the snapshot was written where nobody looks for it."""
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigurationError, match=re.escape(says)) as info:
        memcached("memcached://127.0.0.1:11211", snapshot=value)

    assert str(info.value).isprintable()
    assert list(tmp_path.iterdir()) == []


def test_check_snapshot_path__tilde_or_dollar_inside_a_name__still_a_path(tmp_path: Path) -> None:
    """Only what a shell would expand is refused: "~" starting a later name, or a "$" not
    followed by a variable name, is part of the file's name."""
    for name in ("var/~backup/nodes.json", "nodes~.json", "price$.json", "a$-b.json"):
        assert check_snapshot_path(tmp_path / name) == str(tmp_path / name)


def test_check_snapshot_path__colon_in_a_file_name__still_a_path(tmp_path: Path) -> None:
    """Only "scheme://" is a URL: a name such as "nodes:prod.json" is a file."""
    assert check_snapshot_path(tmp_path / "nodes:prod.json") == str(tmp_path / "nodes:prod.json")
    assert check_snapshot_path(tmp_path / "http:" / "x.json") == str(tmp_path / "http:/x.json")


@pytest.mark.parametrize("suffix", ["/", "/.", "/.."])
def test_check_snapshot_path__name_of_a_directory__configuration_error(
    tmp_path: Path, suffix: str
) -> None:
    """Also when nothing exists there yet: "var/" can only ever be a directory."""
    with pytest.raises(ConfigurationError, match="names a directory"):
        check_snapshot_path(f"{tmp_path}/var{suffix}")


@pytest.mark.parametrize("suffix", ["/", "/.", "/.."])
def test_write_snapshot__name_of_a_directory__false_and_nothing_created(
    tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "var").mkdir()
    before = _tree(tmp_path)
    caplog.set_level(logging.WARNING, logger="cache_settings.snapshot")

    assert write_snapshot(f"{tmp_path}/var/new{suffix}", SOURCE, NODES) is False

    assert _tree(tmp_path) == before
    assert "names a directory" in caplog.text


def test_check_snapshot_path__directory__message_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_snapshot_path(tmp_path)

    assert repr(str(tmp_path / "cache-nodes.json")) in str(info.value)


# -- through memcached(): the fallback path --------------------------------------------------------


class _Down:
    """A source that is always down."""

    url = "down://cluster"
    traits = Traits()

    def resolve(self, timeout: float) -> list[Node]:
        raise SourceError(self.url, "connection refused")


def test_memcached__snapshot_symlinked_to_dev_zero__refused_at_once(area: Path) -> None:
    """The issue's case: MemoryError escaped through on_failure="locmem".

    The policy's validation (cache_settings/policy.py) runs check_snapshot_path, so the
    settings are refused at once with a ConfigurationError naming the link.
    """
    path = area / "shared" / "nodes.json"
    path.symlink_to("/dev/zero")
    started = time.monotonic()

    with pytest.raises(ConfigurationError, match="symbolic link"):
        memcached(_Down(), snapshot=path, attempts=1, deadline=0.5, on_failure="locmem")

    assert time.monotonic() - started < 2.0


def test_resolve__snapshot_linked_to_dev_zero_after_start__resolution_error(area: Path) -> None:
    """A link planted after the settings were read: the fallback read refuses it in time."""
    path = area / "shared" / "nodes.json"
    policy = Policy(attempts=1, deadline=0.5, snapshot=str(path))
    path.symlink_to("/dev/zero")
    started = time.monotonic()

    with pytest.raises(ResolutionError) as raised:
        resolve_with(_Down(), policy)

    assert str(raised.value).endswith(
        f"; snapshot {path} cannot be read (is a symbolic link, which is never followed); "
        "it must be a regular file this user can read"
    )

    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "text",
    [
        # Two entries for one source: which list is the last good one?
        '{"format": "cache_settings/1", "sources": {"s://a": ENTRY, "s://a": ENTRY}}',
        '{"format": "cache_settings/1", "sources": {"s://a": {"nodes": [{"host": "a", '
        '"host": "b", "port": 1}], "fetched_at": 1, "version": null}}}',
    ],
)
def test_load_snapshot__an_object_naming_a_key_twice_is_refused(tmp_path: Path, text: str) -> None:
    """json.loads kept the last of the two silently, as in a rendered node file."""
    entry = '{"nodes": [{"host": "a", "port": 1}], "fetched_at": 1, "version": null}'
    path = tmp_path / "snap.json"
    path.write_text(text.replace("ENTRY", entry))

    with pytest.raises(SnapshotError, match=r"names the key '(s://a|host)' twice"):
        load_snapshot(path)
