"""resolve(): retries, deadline, min_nodes, snapshot fallback, offline mode."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cache_settings import (
    ConfigurationError,
    Node,
    ResolutionError,
    SourceError,
    memcached,
    resolve,
)
from cache_settings.snapshot import read_snapshot, write_snapshot
from cache_settings.sources import Traits
from tests.helpers import LATE, Hanging, Scripted, django_cache
from tests.servers.consul import ConsulAgent
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

NODES = [Node("10.0.0.2", 11211), Node("10.0.0.1", 11211)]


def test_resolve__live_answer_is_sorted_and_written_to_the_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"

    resolution = resolve(Scripted([NODES]), snapshot=snapshot)

    assert resolution.origin == "live"
    assert resolution.nodes == (Node("10.0.0.1", 11211), Node("10.0.0.2", 11211))
    assert resolution.source == "scripted://cluster"
    entry = read_snapshot(snapshot, "scripted://cluster")
    assert entry is not None
    assert entry.nodes == resolution.nodes


def test_resolve__retries_until_an_attempt_succeeds() -> None:
    source = Scripted(["connection refused", "connection refused", NODES])

    resolution = resolve(source, attempts=3, deadline=5)

    assert len(source.calls) == 3
    assert resolution.origin == "live"
    assert [str(e) for e in resolution.errors] == ["scripted://cluster: connection refused"] * 2


def test_resolve__gives_up_after_attempts_and_names_every_cause() -> None:
    source = Scripted(["refused", "reset", "timed out", NODES])

    with pytest.raises(ResolutionError) as raised:
        resolve(source, attempts=3)

    assert len(source.calls) == 3
    message = str(raised.value)
    assert message.startswith("scripted://cluster: ")
    assert "(3 attempts: refused; reset; timed out)" in message
    assert "no snapshot file configured" in message
    assert len(raised.value.errors) == 3


@pytest.mark.usefixtures("without_collections")
def test_resolve__each_attempt_gets_only_the_time_left() -> None:
    source = Hanging()
    started = time.monotonic()

    with pytest.raises(ResolutionError):
        resolve(source, attempts=10, deadline=1.0)

    elapsed = time.monotonic() - started
    assert elapsed <= 1.0 + LATE, elapsed
    assert source.calls[0] == pytest.approx(1.0, abs=0.05)
    assert sum(source.calls) <= 1.0 + 0.01


def test_resolve__deadline_falls_back_to_the_snapshot_in_time(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "hanging://registry", NODES, version=7)
    started = time.monotonic()

    resolution = resolve(Hanging(), deadline=2.0, snapshot=snapshot)

    assert time.monotonic() - started <= 2.4
    assert resolution.origin == "snapshot"
    assert resolution.nodes == (Node("10.0.0.1", 11211), Node("10.0.0.2", 11211))
    assert resolution.version == 7
    assert len(resolution.errors) == 1


def test_resolve__too_few_nodes_is_a_failure_never_an_empty_list(tmp_path: Path) -> None:
    source = Scripted([[]])

    with pytest.raises(ResolutionError, match="answered 0 node\\(s\\), fewer than min_nodes=1"):
        resolve(source, attempts=2, snapshot=tmp_path / "nodes.json")

    assert not (tmp_path / "nodes.json").exists()


def test_resolve__min_nodes_falls_back_to_a_snapshot_that_has_enough(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "scripted://cluster", NODES)

    resolution = resolve(Scripted([NODES[:1]]), attempts=1, min_nodes=2, snapshot=snapshot)

    assert resolution.origin == "snapshot"
    assert len(resolution.nodes) == 2


def test_resolve__snapshot_with_too_few_nodes_is_not_trusted(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "scripted://cluster", NODES[:1])

    with pytest.raises(ResolutionError, match="fewer than min_nodes=2"):
        resolve(Scripted(["down"]), attempts=1, min_nodes=2, snapshot=snapshot)


def test_resolve__snapshot_older_than_max_age_is_not_trusted(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "scripted://cluster", NODES, fetched_at=time.time() - 3600)

    with pytest.raises(ResolutionError, match="no usable entry in the snapshot"):
        resolve(Scripted(["down"]), attempts=1, snapshot=snapshot, max_age=60)

    assert resolve(Scripted(["down"]), attempts=1, snapshot=snapshot, max_age=7200).origin == (
        "snapshot"
    )


def test_resolve__offline_mode_reads_the_snapshot_without_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "scripted://cluster", NODES)
    monkeypatch.setenv("CACHE_SETTINGS_OFFLINE", "1")
    source = Scripted([[Node("10.9.9.9")]])

    resolution = resolve(source, snapshot=snapshot)

    assert source.calls == []
    assert resolution.origin == "snapshot"
    with pytest.raises(
        ResolutionError, match="CACHE_SETTINGS_OFFLINE=1; the snapshot holds no list for"
    ):
        resolve(Scripted([NODES], url="scripted://other"), snapshot=snapshot)


def test_resolve__live_only_never_reads_the_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "scripted://cluster", NODES)

    with pytest.raises(ResolutionError):
        resolve(Scripted(["down"]), attempts=1, snapshot=snapshot, live_only=True)


def test_resolve__any_exception_of_a_source_becomes_a_source_error_naming_it() -> None:
    """Only the library's own exceptions leave it; the original stays the cause."""
    calls: list[float] = []

    @dataclass
    class Broken:
        url: str = "broken://x"
        traits = Traits()

        def resolve(self, timeout: float) -> list[Node]:
            calls.append(timeout)
            raise KeyError("bug")

    with pytest.raises(ResolutionError) as raised:
        resolve(Broken(), attempts=2)

    assert (
        "broken://x: no node list could be resolved (2 attempts: unexpected KeyError: 'bug')"
        in str(raised.value)
    )
    assert isinstance(raised.value.errors[0].__cause__, KeyError)
    assert len(calls) == 2


def test_resolve__a_source_bug_never_shows_its_secrets_in_any_form() -> None:
    """An unexpected exception's text was masked of URL secrets only, not of the source's own."""
    token = 'sec"ret\\tok-5f3e9a'

    @dataclass
    class Leaky:
        url: str = "leaky://x"
        traits = Traits(secrets=(token,))

        def resolve(self, timeout: float) -> list[Node]:
            raise RuntimeError(f"rejected {token!r}, {json.dumps(token)}\nsecond line")

    with pytest.raises(ResolutionError) as raised:
        resolve(Leaky(), attempts=1)

    assert "(1 attempt: unexpected RuntimeError: rejected '***', \"***\"); no" in str(raised.value)
    assert "5f3e9a" not in str(raised.value)


def test_resolve__logs_source_duration_and_fallback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = tmp_path / "nodes.json"
    caplog.set_level(logging.INFO, logger="cache_settings")

    resolve(Scripted([NODES]), snapshot=snapshot)
    resolve(Scripted(["refused"]), attempts=1, snapshot=snapshot)

    messages = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("cache_settings")
    ]
    assert any(
        level == logging.INFO and "scripted://cluster: resolved 2 node(s) in" in text
        for level, text in messages
    )
    # The cause, then what stands in; no "source failed" clause, which adds nothing.
    assert [text for level, text in messages if level == logging.WARNING] == [
        f"scripted://cluster: refused; using 2 node(s) from snapshot {snapshot} (0 s old)"
    ]
    assert json.loads(snapshot.read_text())  # still valid JSON after both calls


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be a positive integer"),
        ({"attempts": 1.5}, "attempts must be a positive integer"),
        ({"deadline": 0}, "deadline must be a positive number"),
        ({"deadline": "5"}, "deadline must be a positive number"),
        ({"min_nodes": 0}, "min_nodes must be a positive integer"),
        ({"max_age": -1}, "max_age must be a positive number"),
    ],
)
def test_resolve__bad_arguments_are_configuration_errors(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve(Scripted([NODES]), **kwargs)  # type: ignore[arg-type]


# --- through the real Consul client, against the stand-in (or CONSUL_HTTP_ADDR) ---------------


def test_resolve__consul_lists_passing_tagged_instances_in_a_stable_order(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    consul_agent.add("memcached", "10.1.0.3", 11211, tags=["prod"])
    consul_agent.add("memcached", "10.1.0.1", 11211, tags=["prod", "az-a"])
    consul_agent.add("memcached", "10.1.9.9", 11211, tags=["prod"], status="critical")
    consul_agent.add("memcached", "10.1.8.8", 11211, tags=["staging"])
    consul_agent.add("memcached", "10.1.0.2", 11299, tags=["prod"], service_address="")
    url = f"consul://{consul_agent.address}/memcached?tag=prod"

    resolution = resolve(url, snapshot=tmp_path / "nodes.json")

    assert resolution.locations == ["10.1.0.1:11211", "10.1.0.2:11299", "10.1.0.3:11211"]
    assert resolution.origin == "live"
    assert resolution.version is not None


@pytest.mark.parametrize("with_snapshot", [True, False])
def test_resolve__hung_consul_is_bounded_by_the_deadline(
    consul_agent: ConsulAgent, tmp_path: Path, with_snapshot: bool
) -> None:
    consul_agent.add("memcached", "10.1.0.1", 11211)
    url = f"consul://{consul_agent.address}/memcached"
    snapshot = tmp_path / "nodes.json"
    if with_snapshot:
        resolve(url, snapshot=snapshot)
    consul_agent.pause()
    started = time.monotonic()

    if with_snapshot:
        resolution = resolve(url, deadline=2.0, snapshot=snapshot)
        assert resolution.origin == "snapshot"
        assert resolution.locations == ["10.1.0.1:11211"]
    else:
        with pytest.raises(ResolutionError, match=f"^consul://{consul_agent.address}/memcached: "):
            resolve(url, deadline=2.0, snapshot=snapshot)

    assert time.monotonic() - started <= 2.4


def test_resolve__black_holed_consul_is_bounded_by_the_deadline(faults: Faults) -> None:
    url = f"consul://{faults.blackhole()}/memcached"
    started = time.monotonic()

    with pytest.raises(ResolutionError, match="consul://127.0.0.1:"):
        resolve(url, deadline=1.5)

    assert time.monotonic() - started <= 1.5 * 1.2


def test_resolve__consul_with_no_passing_node_never_gives_an_empty_list(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    instance = consul_agent.add("memcached", "10.1.0.1", 11211)
    url = f"consul://{consul_agent.address}/memcached"
    snapshot = tmp_path / "nodes.json"
    resolve(url, snapshot=snapshot)
    consul_agent.set_status(instance, "critical")

    assert resolve(url, snapshot=snapshot, attempts=1).locations == ["10.1.0.1:11211"]
    with pytest.raises(ResolutionError, match="fewer than min_nodes=1"):
        resolve(url, attempts=1)


def test_resolve__consul_token_is_sent_and_never_written_or_logged(
    consul_agent: ConsulAgent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "3f9d1c2e-token-never-printed"
    state = consul_agent.needs_standin("token checks")
    consul_agent.add("memcached", "10.1.0.1", 11211)
    consul_agent.require_token(token)
    caplog.set_level(logging.DEBUG)
    snapshot = tmp_path / "nodes.json"
    url = f"consul://{consul_agent.address}/memcached"

    with pytest.raises(ResolutionError) as refused:
        resolve(url, attempts=2, deadline=2)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", token)
    resolution = resolve(url, snapshot=snapshot)
    state.hang = True
    fallback = resolve(url, snapshot=snapshot, deadline=0.5)

    assert resolution.origin == "live"
    assert fallback.origin == "snapshot"
    assert any(r.headers.get("x-consul-token") == token for r in consul_agent.requests)
    for text in (str(refused.value), snapshot.read_text(), caplog.text, resolution.source):
        assert token not in text
    assert "permission denied by the agent" in str(refused.value)


def test_resolve__offline_mode_still_reads_a_static_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_SETTINGS_OFFLINE", "1")

    resolution = resolve("memcached://10.0.0.2,10.0.0.1")

    assert resolution.origin == "live"
    assert resolution.locations == ["10.0.0.1:11211", "10.0.0.2:11211"]


def test_resolve__consul_trickling_its_reply_is_bounded_by_the_deadline(
    consul_agent: ConsulAgent, faults: Faults
) -> None:
    """Each byte arrives before the read timeout, so only the deadline can stop the wait."""
    consul_agent.needs_standin("a proxy in front of the agent")
    consul_agent.add("memcached", "10.1.0.1", 11211)
    trickle = faults.proxy(consul_agent.address, chunk=2)  # 5 ms between 2-byte pieces
    started = time.monotonic()

    with pytest.raises(ResolutionError, match="no complete answer within"):
        resolve(f"consul://{trickle.address}/memcached", deadline=1.0)

    assert time.monotonic() - started <= 1.0 * 1.2


def test_memcached__consul_entry_stores_and_reads_through_django(
    consul_agent: ConsulAgent, memcached_nodes: list[MemcachedServer], tmp_path: Path
) -> None:
    for n, server in enumerate(memcached_nodes):
        consul_agent.add("memcached", server.host, server.port, tags=["prod"], node=f"mc-{n}")
    consul_agent.add("memcached", "10.1.9.9", 11211, tags=["prod"], status="critical", node="sick")
    url = f"consul://{consul_agent.address}/memcached?tag=prod"

    entry = memcached(url, snapshot=tmp_path / "nodes.json", key_prefix="judged")

    assert sorted(entry["LOCATION"]) == sorted(server.location for server in memcached_nodes)
    with django_cache(dict(entry)) as cache:
        cache.set_many({f"k{i}": i for i in range(20)})
        assert cache.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(20)}


# --- messages: each cause once, what to do next ----------------------------------------------


def test_resolve__permanent_error_is_not_retried() -> None:
    @dataclass
    class Unknown:
        url: str = "unknown://host"
        traits = Traits()
        calls: list[float] = field(default_factory=list)

        def resolve(self, timeout: float) -> list[Node]:
            self.calls.append(timeout)
            raise SourceError(self.url, "unknown host name", permanent=True)

    source = Unknown()
    started = time.monotonic()

    with pytest.raises(ResolutionError, match=r"\(1 attempt: unknown host name\)"):
        resolve(source, attempts=5)

    assert len(source.calls) == 1
    assert time.monotonic() - started < 0.5


def test_resolve__the_same_cause_is_said_once_with_a_count() -> None:
    source = Scripted(["connection refused after 0.01 s", "connection refused after 0.02 s"])

    with pytest.raises(ResolutionError) as raised:
        resolve(source, attempts=3)

    message = str(raised.value)
    assert "(3 attempts: connection refused after 0.01 s)" in message
    assert message.count("connection refused") == 1
    assert len(raised.value.errors) == 3


def test_resolve__mixed_causes_each_counted() -> None:
    with pytest.raises(ResolutionError, match=r"\(3 attempts: refused \(2 times\); reset\)"):
        resolve(Scripted(["refused", "reset", "refused"]), attempts=3)


def test_resolve__stale_snapshot_says_its_age_and_max_age(tmp_path: Path) -> None:
    """Issue 15: the reason was only in a WARNING log line."""
    snapshot = tmp_path / "fb.json"
    write_snapshot(snapshot, "scripted://cluster", NODES, fetched_at=time.time() - 3600)

    with pytest.raises(ResolutionError) as raised:
        resolve(Scripted(["down"]), attempts=1, snapshot=snapshot, max_age=60)

    message = str(raised.value)
    assert (
        "no usable entry in the snapshot: its list is 3600 s old, older than max_age=60 s"
        in message
    )
    # resolve() was called directly: --settings would not find it; its URL and file do.
    assert f"run `cache-settings resolve scripted://cluster --snapshot {snapshot}`" in message
    assert message.count(str(snapshot)) == 1


def test_resolve__missing_snapshot_entry_says_how_to_add_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    snapshot = tmp_path / "fb.json"
    write_snapshot(snapshot, "scripted://other", NODES)

    with pytest.raises(ResolutionError) as raised:
        resolve(Scripted(["down"]), attempts=1, snapshot=snapshot)

    assert str(raised.value).endswith(
        "(1 attempt: down); the snapshot holds no list for this source; "
        f"run `cache-settings resolve scripted://cluster --snapshot {snapshot}` to add it"
    )


def test_resolve__missing_snapshot_file_says_how_to_create_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    snapshot = tmp_path / "fb.json"

    with pytest.raises(ResolutionError) as raised:
        resolve(Scripted(["down"]), attempts=1, snapshot=snapshot)

    assert str(raised.value) == (
        "scripted://cluster: no node list could be resolved (1 attempt: down); "
        "the snapshot does not exist; "
        f"run `cache-settings resolve scripted://cluster --snapshot {snapshot}` to create it"
    )


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            b"{",
            "is malformed: not valid JSON (brackets unbalanced or nested deeper than 16 levels)",
        ),
        (
            b'{"format": "cache_settings/1", "sources": {"other://x": {"nodes": []}}}',
            "is malformed: entry 'other://x': missing 'fetched_at'",
        ),
    ],
    ids=["not-json", "another-entry"],
)
def test_resolve__malformed_snapshot_file_said_once_with_how_to_replace_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, said: str
) -> None:
    """A file that exists but is corrupt was "no usable entry in snapshot P: P: ... create it"."""
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    snapshot = tmp_path / "fb.json"
    snapshot.write_bytes(content)

    with pytest.raises(ResolutionError) as raised:
        resolve(Scripted(["down"]), attempts=1, snapshot=snapshot)

    message = str(raised.value)
    assert f"(1 attempt: down); the snapshot {said}" in message
    assert message.count(str(snapshot)) == 1
    assert message.endswith(
        f"; run `cache-settings resolve scripted://cluster --snapshot {snapshot}` to replace it"
    )


def test_resolve__failure_carries_no_chained_traceback() -> None:
    """A failing source at settings import prints one exception, not a chain of them."""
    with pytest.raises(ResolutionError) as raised:
        resolve(Scripted(["down"]), attempts=1)

    assert raised.value.__suppress_context__ or raised.value.__context__ is None
    assert raised.value.__cause__ is None


def test_ask__policy_max_reply_size_reaches_the_attempt() -> None:
    """The cap a source's transport reads under (attempt.current()) is the policy's."""
    from cache_settings.ask import ask
    from cache_settings.attempt import current
    from cache_settings.policy import Policy

    seen: list[int] = []

    @dataclass
    class Reading:
        url: str = "reading://x"
        traits = Traits()

        def resolve(self, timeout: float) -> list[Node]:
            attempt = current()
            assert attempt is not None
            seen.append(attempt.max_reply_size)
            attempt.check_size(2048)
            return NODES

    with pytest.raises(SourceError, match="reply larger than 1024 bytes"):
        ask(Reading(), Policy(max_reply_size=1024), timeout=1.0)
    assert ask(Reading(), Policy(), timeout=1.0).nodes == (NODES[1], NODES[0])
    assert seen == [1024, 32 * 1024 * 1024]


def test_resolve__the_command_an_error_names_writes_the_snapshot_that_then_stands_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry no memcached() call made (resolve(), CACHES written as data, compat): the
    error named `cache-settings resolve --settings …`, which does not find such entries."""
    import shlex

    from cache_settings.cli import main

    listing = tmp_path / "nodes.txt"
    url, snapshot = f"file://{listing}", tmp_path / "snap shot.json"

    with pytest.raises(ResolutionError) as raised:
        resolve(url, attempts=1, snapshot=snapshot)
    command = str(raised.value).split("`")[1]
    listing.write_text("10.0.0.1:11211\n")
    written = main(shlex.split(command)[1:])
    listing.unlink()
    fallback = resolve(url, attempts=1, snapshot=snapshot)

    assert command.startswith("cache-settings resolve ")
    assert "--settings" not in command
    assert written == 0, capsys.readouterr()
    assert (fallback.origin, fallback.nodes) == ("snapshot", (Node("10.0.0.1", 11211),))


def test_resolve__the_snapshot_command_names_the_file_absolutely_and_the_missing_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command is run elsewhere: a relative snapshot= wrote another file there, and the
    redacted URL asked the agent without its token (an ACL-protected service: denied)."""
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ResolutionError) as raised:
        resolve(
            "consul://127.0.0.1:1/mc?token=s3cret", snapshot="rel/nodes.json", deadline=1,
            attempts=1,
        )  # fmt: skip

    message = str(raised.value)
    assert message.endswith(
        f"run `cache-settings resolve consul://127.0.0.1:1/mc --snapshot "
        f"{tmp_path / 'rel' / 'nodes.json'}` (with the token left out here) to create it"
    )
    assert "s3cret" not in message
