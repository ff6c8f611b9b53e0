"""``cache-settings resolve|check --probe``: every node asked for ``version``, within the deadline.

Also: a static list is labelled ``static``, never ``live`` (it is read, not contacted).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cache_settings.cli import main
from cache_settings.nodes import Node
from cache_settings.probe import probe
from cache_settings.tls import TLSConfig
from tests.servers.consul import ConsulAgent
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedFactory, MemcachedServer
from tests.servers.tls import TLSFiles


@pytest.fixture(scope="module")
def tls_node(memcached_factory: MemcachedFactory) -> MemcachedServer:
    """One memcached daemon that speaks only TLS (certificate for localhost)."""
    return memcached_factory(tls=True)


def test_resolve_static__status_is_static_not_live(
    faults: Faults, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"memcached://{faults.refused()}"

    status = main(["resolve", url, "--json"])
    table_status = main(["resolve", url])

    out = capsys.readouterr().out
    result = json.loads(out[: out.rindex("}") + 1])["results"][0]
    assert (status, table_status) == (0, 0)  # nothing contacted, nothing failed
    assert result["status"] == "static"
    assert result["probe"] is None
    assert out.splitlines()[-1].split()[:2] == [url, "static"]


def test_resolve_probe__silent_static_node_exits_1_naming_it(
    faults: Faults, fresh_memcached_node: MemcachedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = faults.refused()
    url = f"memcached://{fresh_memcached_node.location},{silent}"

    status = main(["resolve", url, "--probe", "--json"])

    captured = capsys.readouterr()
    result = json.loads(captured.out)["results"][0]
    assert status == 1
    assert result["status"] == "static"
    by_node = {p["node"]: p for p in result["probe"]}
    assert by_node[silent]["error"] == "connection refused"
    assert by_node[fresh_memcached_node.location]["error"] is None
    assert by_node[fresh_memcached_node.location]["version"]
    # One line, naming the node that did not answer and why.
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert f"1 of 2 node(s) did not answer `version`: {silent} (connection refused)" in lines[0]


def test_resolve_probe__answering_nodes_exit_0_with_their_versions(
    fresh_memcached_nodes: list[MemcachedServer], capsys: pytest.CaptureFixture[str]
) -> None:
    url = "memcached://" + ",".join(server.location for server in fresh_memcached_nodes)

    status = main(["resolve", url, "--probe"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0].split()[-1] == "PROBE"
    assert lines[1].endswith("3 answered")


def test_resolve_probe__black_holed_nodes_cost_one_deadline_together(
    faults: Faults, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three nodes that accept and never answer, asked at once: 0.5 s, not 1.5 s."""
    holes = [faults.blackhole() for _ in range(3)]
    started = time.monotonic()

    status = main(["resolve", "memcached://" + ",".join(holes), "--probe", "--deadline", "0.5"])

    elapsed = time.monotonic() - started
    assert status == 1
    assert elapsed < 1.2  # one 0.5 s deadline plus start-up margin; in turn it would be 1.5 s
    assert capsys.readouterr().err.count("(no answer within 0.5 s)") == 3


def test_resolve_probe__asks_the_nodes_a_consul_source_names(
    consul_agent: ConsulAgent,
    fresh_memcached_node: MemcachedServer,
    faults: Faults,
    capsys: pytest.CaptureFixture[str],
) -> None:
    consul_agent.add("memcached", "127.0.0.1", fresh_memcached_node.port, node="up")
    silent = faults.refused()
    consul_agent.add("memcached", "127.0.0.1", int(silent.rpartition(":")[2]), node="down")
    url = f"consul://{consul_agent.address}/memcached"

    status = main(["resolve", url, "--probe", "--json"])

    captured = capsys.readouterr()
    result = json.loads(captured.out)["results"][0]
    assert status == 1
    assert result["status"] == "live"
    assert [p["node"] for p in result["probe"] if p["error"]] == [silent]
    assert f"{url}: 1 of 2 node(s) did not answer" in captured.err


def test_resolve_probe__tls_nodes_are_asked_over_tls(
    tls_node: MemcachedServer, tls_files: TLSFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    trusted = f"pymemcache://localhost:{tls_node.port}?tls=true&ca={tls_files.ca}"
    untrusted = f"pymemcache://localhost:{tls_node.port}?tls=true&ca={tls_files.other_ca}"

    ok = main(["resolve", trusted, "--probe", "--json"])
    answer = json.loads(capsys.readouterr().out)["results"][0]["probe"][0]
    refused = main(["resolve", untrusted, "--probe"])

    assert ok == 0
    assert answer["error"] is None
    assert answer["version"]
    assert refused == 1
    assert "TLS: certificate verify failed" in capsys.readouterr().err


def test_probe__plain_probe_of_a_tls_node_fails_within_the_deadline(
    tls_node: MemcachedServer,
) -> None:
    """The source's traits decide TLS: a node not marked TLS is asked in plain text."""
    node = Node("localhost", tls_node.port, "127.0.0.1")
    started = time.monotonic()

    found = probe([(node, None), (Node("localhost", tls_node.port, tls=True), None)], timeout=0.5)

    assert time.monotonic() - started < 1.0
    plain, tls = found[node, None], found[Node("localhost", tls_node.port, tls=True), None]
    assert not plain.ok
    assert not tls.ok
    assert tls.error is not None
    assert tls.error.startswith("TLS:")


def test_probe__bad_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    from cache_settings.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="TLS settings"):
        probe([(Node("localhost", 1, tls=True), TLSConfig(ca=str(tmp_path / "no.pem")))], timeout=1)


def test_check_probe__silent_node_exits_1_though_the_list_is_the_same(
    faults: Faults, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = faults.refused()
    url = f"memcached://{silent}"
    snapshot = str(tmp_path / "nodes.json")
    assert main(["resolve", url, "--snapshot", snapshot]) == 0

    plain = main(["check", url, "--snapshot", snapshot])
    probed = main(["check", url, "--snapshot", snapshot, "--probe"])

    captured = capsys.readouterr()
    assert plain == 0
    assert probed == 1
    assert f"{url}  same" in captured.out
    assert f"did not answer `version`: {silent} (connection refused)" in captured.err


def test_help__probe_is_documented_for_resolve_and_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["resolve", "--help"]) == 0
    assert main(["check", "--help"]) == 0

    out = capsys.readouterr().out
    assert out.count("--probe") >= 4  # usage line and description, in both verbs
