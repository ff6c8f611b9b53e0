"""The file source: formats, refusals, and a file rewritten in place while it is read."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from cache_settings import (
    ConfigurationError,
    Node,
    ResolutionError,
    SourceError,
    parse_source,
    resolve,
)
from cache_settings.attempt import Attempt, run
from cache_settings.nodes import parse_node, unique_sorted
from cache_settings.policy import Policy
from cache_settings.snapshot import write_snapshot
from cache_settings.sources.file import QUIET, File, parse_node_list
from cache_settings.watch import Watcher
from tests.helpers import wait_until

NODES = [Node("10.0.0.1", 11211), Node("10.0.0.2", 11211), Node("::1", 11300)]


def file_source(path: Path, query: str = "") -> File:
    built = parse_source(f"file://{path}{query}")
    assert isinstance(built, File)
    return built


def aged(path: Path) -> Path:
    """Date *path* back one second, as a file written before the site started."""
    past = time.time() - 1
    os.utime(path, (past, past))
    return path


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///srv/n%E9.txt", "file:///srv/nodes?source=%FF"])
def test_file__percent_encoded_bytes_that_are_not_utf8_are_refused(url: str) -> None:
    """They were decoded as U+FFFD: /srv/n\ufffd.txt, another file, missing at every attempt."""
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        parse_source(url)


def test_file__a_utf8_percent_encoded_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "nodes-\u00e9"
    path.write_text("10.0.0.1:11211\n")
    aged(path)

    assert resolve(f"file://{tmp_path}/nodes-%C3%A9").nodes == (Node("10.0.0.1", 11211),)


@pytest.mark.parametrize(
    "nowhere",
    ["0.0.0.0:11211", "[::]:11211", "239.1.2.3:11211", "[::ffff:0.0.0.0]:11211"],
)
def test_file__an_address_no_node_has_fails_the_attempt(tmp_path: Path, nowhere: str) -> None:
    """0.0.0.0 or :: reach each client's own host, a multicast group no server: never a node."""
    path = tmp_path / "nodes"
    path.write_text(f"10.0.0.1:11211\n{nowhere}\n")
    aged(path)

    with pytest.raises(ResolutionError, match="no memcached node has") as raised:
        resolve(f"file://{path}", attempts=1, deadline=1)

    assert nowhere.rpartition(":")[0].strip("[]") in str(raised.value)


@pytest.mark.parametrize(
    "content",
    [
        '["10.0.0.2:11211", "10.0.0.1:11211", "[::1]:11300", "10.0.0.1:11211"]',
        '[{"targets": ["10.0.0.1:11211", "10.0.0.2:11211"], "labels": {"az": "a"}},'
        ' {"targets": ["[::1]:11300"]}]',
        "# rendered by consul-template\n10.0.0.2:11211\n\n  10.0.0.1  # default port\n"
        "[::1]:11300\r\n",
    ],
    ids=["json-list", "prometheus-file-sd", "lines"],
)
def test_file__each_format_lists_sorted_unique_nodes(tmp_path: Path, content: str) -> None:
    path = tmp_path / "nodes"
    path.write_text(content)
    aged(path)

    assert file_source(path).resolve(timeout=1) == NODES


@pytest.mark.parametrize(
    "first", ["[::1]:11300", "[2001:db8::7]:11211", "[::ffff:10.0.0.1]", "  [fe80::1%eth0]:11211"]
)
def test_file__a_line_list_starting_with_an_ipv6_node_is_read_as_lines(
    tmp_path: Path, first: str
) -> None:
    """'[' first was taken for JSON: a valid list failed as 'not valid JSON (Expecting
    value: line 1 column 2)', on every attempt, while the same lines in another order read."""
    path = tmp_path / "nodes"
    path.write_text(f"{first}\n10.0.0.1:11211\n")
    aged(path)

    nodes = file_source(path).resolve(timeout=1)

    assert nodes == list(unique_sorted([parse_node(first), Node("10.0.0.1", 11211)]))
    assert len(nodes) == 2


def test_file__snapshot_format_with_one_source(tmp_path: Path) -> None:
    path = tmp_path / "cache-nodes.json"
    write_snapshot(path, "consul:///memcached", NODES)
    aged(path)

    assert file_source(path).resolve(timeout=1) == NODES


def test_file__snapshot_format_with_several_sources_needs_source(tmp_path: Path) -> None:
    path = tmp_path / "cache-nodes.json"
    write_snapshot(path, "consul:///memcached", NODES)
    write_snapshot(path, "dns://mc.test:11211", [Node("10.0.9.9", 11211)])
    aged(path)

    with pytest.raises(
        SourceError,
        match=r"holds 2 sources: 'consul:///memcached', 'dns://mc.test:11211'; "
        r"choose one with \?source=URL",
    ):
        file_source(path).resolve(timeout=1)
    # The Mimir spelling names the same source as the canonical key in the file.
    chosen = file_source(path, "?source=dns%2Bmc.test%3A11211")
    assert chosen.resolve(timeout=1) == [Node("10.0.9.9", 11211)]
    assert chosen.url == f"file://{path}?source=dns%3A%2F%2Fmc.test%3A11211"


def test_file__canonical_url_and_bad_urls(tmp_path: Path) -> None:
    assert parse_source("file://localhost/etc/memcached%20nodes").url == (
        "file:///etc/memcached%20nodes"
    )
    for url, message in [
        ("file://etc/nodes", "three slashes"),
        ("file://", "no absolute path"),
        ("file:///etc/nodes?format=json", "unknown option 'format'"),
        ("file:///etc/nodes?source=redis://x", "Unknown scheme 'redis://'"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            parse_source(url)


@pytest.mark.parametrize("path", ["/tmp/a%00b", "/tmp/a%0Ab", "/etc/nodes%1B[2J"])
def test_file__a_control_character_in_the_path_is_a_configuration_error(path: str) -> None:
    """The path was not checked as the options are: a NUL failed every attempt as an
    'unexpected ValueError: embedded null byte' (retried, never a settings error)."""
    with pytest.raises(ConfigurationError, match="not printable"):
        parse_source(f"file://{path}")
    with pytest.raises(ConfigurationError, match="not printable"):
        File(unquote(path))


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b"# nothing yet\n", "the file lists no nodes"),
        (b"[]", "the file lists no nodes"),
        (b'["10.0.0.1:11211", "10.0.0.2:11', "not valid JSON .*partly written"),
        (b"10.0.0.1:11211\n10.0.0.2:112", "last line '10.0.0.2:112' does not end with a newline"),
        (b"10.0.0.1:11211\nnot a node!\n", "line 2: invalid node 'not a node!'"),
        (b"10.0.0.1:99999\n", "line 1: invalid port '99999'"),
        (b'["10.0.0.1:11211", 11211]', 'item 1: expected a "host:port" string'),
        (b'{"nodes": ["10.0.0.1:11211"]}', 'must be a snapshot with "format"'),
        (b'"10.0.0.1:11211"\n', "line 1: invalid port"),
        (b"\xff\xfe10.0.0.1\n", "not UTF-8 text"),
        (
            b'{"format": "cache_settings/1", "sources": {"a": {"nodes": [{"host": "x"}]}}}',
            "snapshot entry 'a': node port must be an integer",
        ),
    ],
)
def test_parse_node_list__refuses_empty_partial_and_malformed_content(
    content: bytes, message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        parse_node_list(content, source="file:///nodes")


FORGED = "x\nCRITICAL django.security: forged line"
LONG = "h" * 100_000


def _snapshot_text(sources: dict[str, object]) -> bytes:
    return json.dumps({"format": "cache_settings/1", "sources": sources}).encode()


@pytest.mark.parametrize(
    "content",
    [
        _snapshot_text({FORGED: {"nodes": [{"host": "mc1"}]}}),
        _snapshot_text({FORGED: {"nodes": [{"host": "mc1", "port": 1}]}, "b": {}}),
        _snapshot_text({FORGED: {}}),
        json.dumps({"format": FORGED + LONG}).encode(),
        f"10.0.0.1:11211\n{LONG}\n".encode(),
        f"{LONG}:11211\n".encode(),
        f"10.0.0.1:11211\n{LONG}".encode(),
        json.dumps([FORGED + LONG]).encode(),
        json.dumps([{"targets": [LONG]}]).encode(),
        json.dumps([[FORGED + LONG]]).encode(),
    ],
    ids=[
        "entry-key",
        "several-keys",
        "entry-without-nodes",
        "format",
        "line",
        "host",
        "last-line",
        "json-item",
        "target",
        "json-item-not-a-string",
    ],
)
def test_parse_node_list__messages_quote_the_file_briefly_and_escaped(content: bytes) -> None:
    """What the file holds is quoted repr'd and cut: no forged log line, no megabyte message."""
    with pytest.raises(SourceError) as raised:
        parse_node_list(content, source="file:///nodes")

    message = str(raised.value)
    assert message.isprintable(), message
    assert len(message) < 300, message


def test_file__several_sources_named_by_a_few_and_a_count(tmp_path: Path) -> None:
    """A file of 2,001 sources gave a 163,137-character message, one key forging a log line."""
    path = tmp_path / "cache-nodes.json"
    sources = {f"consul://agent-{i:05d}:8500/memcached": {} for i in range(2000)}
    path.write_bytes(_snapshot_text({**sources, FORGED: {}}))
    aged(path)

    with pytest.raises(SourceError) as raised:
        file_source(path).resolve(timeout=2)

    assert raised.value.reason == (
        "the snapshot holds 3 of 2,001 sources: 'consul://agent-00000:8500/memcached', "
        "'consul://agent-00001:8500/memcached', 'consul://agent-00002:8500/memcached', ...; "
        "choose one with ?source=URL"
    )


def test_file__missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        file_source(tmp_path / "absent").resolve(timeout=1)


def test_file__symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "nodes"
    target.write_text("10.0.0.1:11211\n")
    aged(target)
    link = tmp_path / "link"
    link.symlink_to(target)

    with pytest.raises(SourceError, match="is a symbolic link"):
        file_source(link).resolve(timeout=1)


def test_file__fifo_and_directory_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever

    for path in (fifo, tmp_path):
        started = time.monotonic()
        with pytest.raises(SourceError, match="not a regular file|cannot open"):
            file_source(path).resolve(timeout=1)
        assert time.monotonic() - started < 0.5


def test_file__larger_than_max_reply_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nodes"
    path.write_text("10.0.0.1:11211\n10.0.0.2:11211\n")
    aged(path)
    built = file_source(path)

    with pytest.raises(SourceError, match="larger than 16 bytes"):
        run(Attempt(built.url, 1, max_reply_size=16), lambda: built.resolve(timeout=1))


def test_file__a_fresh_file_is_read_after_it_settles(tmp_path: Path) -> None:
    path = tmp_path / "nodes"
    path.write_text("10.0.0.1:11211\n")

    started = time.monotonic()
    nodes = file_source(path).resolve(timeout=1)

    assert nodes == [Node("10.0.0.1", 11211)]
    assert time.monotonic() - started >= QUIET * 0.9


# --- a writer that rewrites in place -------------------------------------------------------


def rewrite_in_place(path: Path, lists: list[list[str]], times: int, stop: threading.Event) -> None:
    """Truncate and rewrite *path* line by line, with stalls mid-write and between writes."""
    chance = random.Random(16)
    for n in range(times):
        if stop.is_set():
            return
        with open(path, "w") as file:  # truncates: the file is empty for a moment
            for line in lists[n % len(lists)]:
                file.write(f"{line}\n")
                file.flush()  # each line its own write: readers can see every prefix
                if chance.random() < 0.02:
                    time.sleep(chance.uniform(0.001, QUIET / 5))
        time.sleep(QUIET * 2 if n % 100 == 99 else chance.uniform(0, 0.001))


@pytest.fixture
def writer_stop() -> Iterator[threading.Event]:
    stop = threading.Event()
    yield stop
    stop.set()


def test_file__rewritten_in_place_never_yields_an_empty_or_partial_list(
    tmp_path: Path, writer_stop: threading.Event
) -> None:
    lists = [[f"10.0.0.{i}:11211" for i in range(1, 9)], [f"10.0.1.{i}:11211" for i in range(1, 7)]]
    whole = {tuple(sorted(lines)) for lines in lists}
    path = tmp_path / "nodes"
    path.write_text("".join(f"{line}\n" for line in lists[0]))
    built = file_source(path)
    writer = threading.Thread(target=rewrite_in_place, args=(path, lists, 1000, writer_stop))
    writer.start()

    answers, errors = [], []
    while writer.is_alive():
        try:
            nodes = built.resolve(timeout=0.2)
        except SourceError as exc:
            errors.append(exc.reason)
        else:
            answers.append(tuple(sorted(node.location for node in nodes)))
    writer.join()

    partial = [answer for answer in answers if answer not in whole]
    assert partial == []
    assert len(answers) >= 5, errors[:5]  # it did read whole lists during the rewrites


def test_watcher__polling_a_rewritten_file_holds_only_whole_lists(
    tmp_path: Path, writer_stop: threading.Event
) -> None:
    lists = [["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"], ["10.0.1.1:11211"]]
    whole = {tuple(sorted(lines)) for lines in lists}
    path = tmp_path / "nodes"
    path.write_text("".join(f"{line}\n" for line in lists[0]))
    watcher = Watcher(file_source(path), Policy(refresh=0.1, deadline=0.5))
    watcher.start()
    seen: set[tuple[str, ...]] = set()
    writer = threading.Thread(target=rewrite_in_place, args=(path, lists, 1000, writer_stop))
    writer.start()
    try:
        while writer.is_alive():
            seen.add(tuple(node.location for node in watcher.nodes))
            time.sleep(0.001)
        writer.join()
        path.write_text(json.dumps(lists[1]))
        assert wait_until(lambda: [n.location for n in watcher.nodes] == lists[1], timeout=2)
    finally:
        watcher.stop()

    assert seen <= whole


@pytest.mark.parametrize("host", ["/tmp/evil.sock", "a;b,c", "a:b:c"])
def test_file__snapshot_format_hosts_follow_the_live_rules(tmp_path: Path, host: str) -> None:
    path = tmp_path / "nodes.json"
    entry = {"nodes": [{"host": host, "port": 11211}], "fetched_at": 1}
    path.write_text(json.dumps({"format": "cache_settings/1", "sources": {"x://y": entry}}))
    aged(path)

    with pytest.raises(SourceError, match="node host must be a host name or an IP"):
        file_source(path).resolve(timeout=2)


def _failure(path: Path, max_reply_size: int = 1 << 20) -> SourceError:
    built = file_source(path)
    with pytest.raises(SourceError) as raised:
        run(Attempt(built.url, 1, max_reply_size=max_reply_size), lambda: built.resolve(1))
    return raised.value


def test_file__failures_no_retry_can_fix_are_permanent(tmp_path: Path) -> None:
    target = tmp_path / "nodes"
    target.write_text("10.0.0.1:11211\n" * 10)
    aged(target)
    (tmp_path / "link").symlink_to(target)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "latin-1").write_bytes("caf\xe9.example:11211\n".encode("latin-1"))
    aged(tmp_path / "latin-1")

    assert _failure(tmp_path / "link").permanent
    assert _failure(tmp_path / "fifo").permanent
    assert _failure(target, max_reply_size=16).permanent
    assert _failure(tmp_path / "latin-1").permanent


def test_file__failures_a_retry_may_fix_are_not_permanent(tmp_path: Path) -> None:
    cut = tmp_path / "cut"  # a writer stalled inside a two-byte character
    cut.write_bytes("10.0.0.1:11211\ncaf\xe9".encode()[:-1])
    aged(cut)

    assert not _failure(tmp_path / "absent").permanent
    assert not _failure(cut).permanent


def test_file__permanent_failure_is_asked_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")

    with pytest.raises(ResolutionError, match="1 attempt"):
        resolve(f"file://{tmp_path / 'fifo'}", attempts=3, deadline=2)


def test_file__deep_json_is_a_clear_source_error(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    aged(path)

    with pytest.raises(SourceError, match="nested deeper than 64 levels"):
        file_source(path).resolve(timeout=2)


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ('[{"targets": ["10.0.0.1:11211"], "targets": ["10.0.0.2:11211"]}]', "targets"),
        (
            '{"format": "cache_settings/1", "sources": {"memcached://10.0.0.1:11211": '
            '{"nodes": [{"host": "10.0.0.1", "port": 11211}], '
            '"nodes": [{"host": "10.0.0.2", "port": 11211}]}}}',
            "nodes",
        ),
    ],
    ids=["file-sd-targets", "snapshot-nodes"],
)
def test_file__a_json_key_given_twice_is_refused_not_last_wins(
    tmp_path: Path, content: str, key: str
) -> None:
    """json.loads kept the last: the first list's nodes vanished without a word."""
    path = tmp_path / "nodes.json"
    path.write_text(content)
    aged(path)

    error = _failure(path)

    assert f"names the key '{key}' twice" in error.reason


def test_file__a_loop_of_links_among_the_directories_is_not_called_a_link(tmp_path: Path) -> None:
    """Only the last part of the path must not be a link; a loop above it is another fault."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")

    error = _failure(tmp_path / "a" / "nodes")

    assert "is a symbolic link" not in error.reason
    assert "Too many levels of symbolic links" in error.reason
