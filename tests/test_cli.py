"""The `cache-settings` command and `manage.py cache_nodes`, in process and as real processes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command

from cache_settings import memcached
from cache_settings._report import Output
from cache_settings.cli import main
from cache_settings.management.commands.cache_nodes import Command
from cache_settings.nodes import Node
from cache_settings.snapshot import load_snapshot, write_snapshot
from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.consul import ConsulAgent
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

ROOT = Path(__file__).resolve().parent.parent
SITE = "tests.settings.cli_site"
CONSOLE_SCRIPT = Path(sys.executable).parent / "cache-settings"
TOKEN = "0b4c7d1e-secret-token-5a9f"
OTHER_TOKEN = "ffee1234-another-secret-77aa"


def run(
    *args: str, env: dict[str, str], script: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cache_settings`` (or the console script) in a clean environment."""
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **env,
    }
    command = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "cache_settings"]
    return subprocess.run(
        [*command, *args],
        env=full_env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def python(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` with the same clean environment as :func:`run`."""
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    return subprocess.run(
        [sys.executable, *args],
        env=full_env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def site(
    consul_agent: ConsulAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """tests.settings.cli_site pointed at the Consul stand-in: its environment variables."""
    consul_agent.add("memcached", "10.7.0.2", 11211, node="mc-b")
    consul_agent.add("memcached", "10.7.0.1", 11211, node="mc-a")
    env = {
        "CLI_SITE_CONSUL": f"consul://{consul_agent.address}/memcached",
        "CLI_SITE_STATIC": "memcached://10.8.0.1:11211,10.8.0.2:11211",
        "CLI_SITE_SNAPSHOT": str(tmp_path / "cache-nodes.json"),
        "CLI_SITE_DEADLINE": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def consul_url(agent: ConsulAgent) -> str:
    return f"consul://{agent.address}/memcached"


# --- resolve URL ------------------------------------------------------------------------------


def test_resolve_url__prints_nodes_as_json_and_writes_the_snapshot(
    consul_agent: ConsulAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    consul_agent.add("memcached", "10.7.0.2", 11211, node="mc-b")
    consul_agent.add("memcached", "10.7.0.1", 11211, node="mc-a")
    snapshot = tmp_path / "nodes.json"

    status = main(["resolve", consul_url(consul_agent), "--snapshot", str(snapshot), "--json"])

    out = json.loads(capsys.readouterr().out)
    assert status == 0
    assert out["ok"] is True
    assert out["results"][0]["locations"] == ["10.7.0.1:11211", "10.7.0.2:11211"]
    assert out["results"][0]["nodes"][0] == {"host": "10.7.0.1", "port": 11211}
    stored = load_snapshot(snapshot)[consul_url(consul_agent)]
    assert [n.location for n in stored.nodes] == ["10.7.0.1:11211", "10.7.0.2:11211"]


def test_resolve_url__a_url_given_as_snapshot__exit_2_masked_and_no_file_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two arguments swapped: the token must reach neither the output nor a file name."""
    monkeypatch.chdir(tmp_path)

    status = main(
        ["resolve", "memcached://10.0.0.1:11211", "--snapshot", "consul://a/mc?token=S3CRET"]
    )

    captured = capsys.readouterr()
    assert status == 2
    assert "is a URL; snapshot takes the path of a JSON file" in captured.err
    assert "S3CRET" not in captured.out + captured.err
    assert list(tmp_path.iterdir()) == []


def test_resolve_url__console_script_prints_json_and_writes_the_snapshot(tmp_path: Path) -> None:
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed")
    snapshot = tmp_path / "nodes.json"

    done = run(
        "resolve", "memcached://10.9.0.2:11211,10.9.0.1", "--snapshot", str(snapshot), "--json",
        env={}, script=True,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["locations"] == [
        "10.9.0.1:11211",
        "10.9.0.2:11211",
    ]
    assert "memcached://10.9.0.1:11211,10.9.0.2:11211" in load_snapshot(snapshot)


def test_resolve_url__table_by_default(
    consul_agent: ConsulAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    consul_agent.add("memcached", "10.7.0.1", 11211)

    status = main(["resolve", consul_url(consul_agent), "--snapshot", str(tmp_path / "s.json")])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0].split() == ["SOURCE", "STATUS", "NODES", "VERSION", "SNAPSHOT"]
    assert lines[1].split()[:3] == [consul_url(consul_agent), "live", "10.7.0.1:11211"]
    # Aligned: every column starts at the same offset on each line.
    assert lines[1].index("live") == lines[0].index("STATUS")


def test_resolve_url__unreachable_source_exits_1_within_the_deadline(
    faults: Faults, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"consul://{faults.blackhole()}/memcached"
    snapshot = tmp_path / "nodes.json"
    started = time.monotonic()

    status = main(["resolve", url, "--snapshot", str(snapshot), "--deadline", "0.5"])

    elapsed = time.monotonic() - started
    assert status == 1
    assert f"FAILED {url}" in capsys.readouterr().err
    assert elapsed < 2.0  # 0.5 s deadline plus start-up margin
    assert not snapshot.exists()


def test_resolve_url__unreachable_source_exits_1_as_a_process(faults: Faults) -> None:
    url = f"consul://{faults.refused()}/memcached"

    done = run("resolve", url, "--deadline", "1", env={})

    assert done.returncode == 1
    assert url in done.stderr


def test_resolve_url__below_min_nodes_exits_1(
    consul_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    consul_agent.add("memcached", "10.7.0.1", 11211)

    status = main(["resolve", consul_url(consul_agent), "--min-nodes", "2", "--deadline", "0.5"])

    assert status == 1
    assert "fewer than min_nodes=2" in capsys.readouterr().err


def test_resolve_url__unknown_scheme_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["resolve", "redis://cache:6379"])

    assert status == 2
    assert "Unknown scheme 'redis://'" in capsys.readouterr().err


def test_resolve_url__unknown_scheme_exits_2_as_a_process() -> None:
    done = run("resolve", "rediss://cache:6379", env={})

    assert done.returncode == 2
    assert "'rediss://'" in done.stderr


def test_resolve__bad_argument_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["resolve", "memcached://10.0.0.1", "--attempts", "0"])

    assert status == 2
    assert "--attempts" in capsys.readouterr().err


def test_resolve__url_and_settings_together_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["resolve", "memcached://10.0.0.1", "--settings", SITE])

    assert status == 2
    assert "not both" in capsys.readouterr().err


def test_resolve__nothing_to_resolve_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["resolve"])

    assert status == 2
    assert "DJANGO_SETTINGS_MODULE" in capsys.readouterr().err


def test_resolve__missing_settings_module_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["resolve", "--settings", "no_such_site.settings"])

    assert status == 2
    assert "no_such_site.settings" in capsys.readouterr().err


def test_help__python_m_exits_0() -> None:
    done = run("--help", env={})

    assert done.returncode == 0
    assert "usage: cache-settings" in done.stdout
    assert all(verb in done.stdout for verb in ("resolve", "show", "check"))


def test_help__main_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "--help"]) == 0
    assert "--snapshot" in capsys.readouterr().out


# --- resolve --settings -----------------------------------------------------------------------


def test_resolve_settings__writes_the_snapshot_of_every_alias(
    site: dict[str, str],
    config_endpoint: ConfigEndpointServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A first deploy: no snapshot yet, every alias resolved live and written."""
    config_endpoint.set_nodes([("cfg-1.example", "10.6.0.1", 11211)], version=4)
    monkeypatch.setenv("CLI_SITE_ELASTICACHE", f"elasticache://{config_endpoint.address}")

    status = main(["resolve", "--settings", SITE, "--json"])

    out = json.loads(capsys.readouterr().out)
    stored = load_snapshot(site["CLI_SITE_SNAPSHOT"])
    assert status == 0, out
    assert [r["status"] for r in out["results"]] == ["live", "static", "live"]
    assert [n.location for n in stored[site["CLI_SITE_CONSUL"]].nodes] == [
        "10.7.0.1:11211",
        "10.7.0.2:11211",
    ]
    assert [n.location for n in stored["memcached://10.8.0.1:11211,10.8.0.2:11211"].nodes] == [
        "10.8.0.1:11211",
        "10.8.0.2:11211",
    ]
    assert stored[f"elasticache://{config_endpoint.address}"].version == 4


def test_resolve_settings__uses_django_settings_module(
    site: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", SITE)

    status = main(["resolve"])

    assert status == 0
    assert site["CLI_SITE_CONSUL"] in load_snapshot(site["CLI_SITE_SNAPSHOT"])
    assert "10.7.0.1:11211" in capsys.readouterr().out


def test_resolve_settings__source_down_exits_1_even_though_snapshots_exist(
    site: dict[str, str], consul_agent: ConsulAgent
) -> None:
    first = run("resolve", "--settings", SITE, env=site)
    written = load_snapshot(site["CLI_SITE_SNAPSHOT"])[site["CLI_SITE_CONSUL"]]
    consul_agent.pause()

    second = run("resolve", "--settings", SITE, env=site)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    assert f"FAILED {site['CLI_SITE_CONSUL']}" in second.stderr
    # The static alias still resolved; the Consul entry kept its last good answer.
    assert "memcached://10.8.0.1:11211,10.8.0.2:11211  static" in second.stdout
    assert load_snapshot(site["CLI_SITE_SNAPSHOT"])[site["CLI_SITE_CONSUL"]] == written


def test_resolve_settings__source_down_on_first_deploy_exits_1(
    site: dict[str, str], consul_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    consul_agent.pause()

    status = main(["resolve", "--settings", SITE])

    err = capsys.readouterr().err
    assert status == 1
    assert site["CLI_SITE_CONSUL"] in err
    # The source that is down hides no other entry: the static alias is still written.
    written = load_snapshot(site["CLI_SITE_SNAPSHOT"])
    assert site["CLI_SITE_CONSUL"] not in written
    assert any(url.startswith("memcached://") for url in written)


def test_offline_import__uses_the_snapshots_without_contacting_any_source(
    site: dict[str, str], consul_agent: ConsulAgent
) -> None:
    resolved = run("resolve", "--settings", SITE, env=site)
    asked = len(consul_agent.health_requests("memcached"))
    code = (
        "import json, tests.settings.cli_site as s; "
        "print(json.dumps({a: c['LOCATION'] for a, c in s.CACHES.items()}))"
    )

    done = python("-c", code, env={**site, "CACHE_SETTINGS_OFFLINE": "1"})

    assert resolved.returncode == 0, resolved.stderr
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "default": ["10.7.0.1:11211", "10.7.0.2:11211"],
        "sessions": ["10.8.0.1:11211", "10.8.0.2:11211"],
    }
    assert len(consul_agent.health_requests("memcached")) == asked


# --- show -------------------------------------------------------------------------------------


def test_show__lists_nodes_age_and_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(
        snapshot,
        "elasticache://cfg.example:11211",
        [Node("b.example", 11211, "10.5.0.2"), Node("a.example", 11211, "10.5.0.1")],
        version=7,
        fetched_at=time.time() - 3 * 3600,
    )

    status = main(["show", str(snapshot)])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0].split() == ["SOURCE", "NODES", "AGE", "VERSION", "STATUS", "SNAPSHOT"]
    assert lines[1].split() == [
        "elasticache://cfg.example:11211",
        "10.5.0.1:11211,",
        "10.5.0.2:11211",
        "3h",
        "7",
        "ok",
        str(snapshot),
    ]


def test_show__json_holds_plain_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "memcached://10.5.0.1:11211", [Node("10.5.0.1")], fetched_at=1e9)

    status = main(["show", str(snapshot), "--json"])

    entry = json.loads(capsys.readouterr().out)["entries"][0]
    assert status == 0
    assert entry["nodes"] == [{"host": "10.5.0.1", "port": 11211}]
    assert entry["fetched_at"] == 1e9
    assert entry["age_seconds"] > 1e8


def test_show__missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["show", str(tmp_path / "absent.json")])

    assert status == 1
    assert "no such snapshot file" in capsys.readouterr().err


def test_show__nothing_to_show_asks_for_snapshot_files_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """show takes files, not a source URL; the verb is named once."""
    status = main(["show"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [
        "cache-settings show: error: give snapshot FILEs to show, or --settings MODULE "
        "(or set DJANGO_SETTINGS_MODULE) for its memcached() entries"
    ]


def test_show_settings__missing_entry_exits_1_without_contacting_the_source(
    site: dict[str, str], consul_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["show", "--settings", SITE])

    assert status == 1
    assert f"{site['CLI_SITE_CONSUL']}: no entry in" in capsys.readouterr().err
    assert consul_agent.health_requests("memcached") == []


# --- check ------------------------------------------------------------------------------------


def test_check__equal_lists_exit_0(
    consul_agent: ConsulAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    consul_agent.add("memcached", "10.7.0.1", 11211)
    snapshot = str(tmp_path / "nodes.json")
    assert main(["resolve", consul_url(consul_agent), "--snapshot", snapshot]) == 0
    before = Path(snapshot).read_bytes()

    status = main(["check", consul_url(consul_agent), "--snapshot", snapshot])

    assert status == 0
    assert f"{consul_url(consul_agent)}  same" in capsys.readouterr().out
    assert Path(snapshot).read_bytes() == before  # check never rewrites the snapshot


def test_check__changed_list_exits_1_naming_added_and_removed(
    consul_agent: ConsulAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = consul_agent.add("memcached", "10.7.0.1", 11211, node="old")
    snapshot = str(tmp_path / "nodes.json")
    assert main(["resolve", consul_url(consul_agent), "--snapshot", snapshot]) == 0
    consul_agent.remove(old)
    consul_agent.add("memcached", "10.7.0.9", 11211, node="new")
    capsys.readouterr()

    status = main(["check", consul_url(consul_agent), "--snapshot", snapshot, "--json"])

    result = json.loads(capsys.readouterr().out)["results"][0]
    assert status == 1
    assert result["status"] == "changed"
    assert (result["added"], result["removed"]) == (["10.7.0.9:11211"], ["10.7.0.1:11211"])


def test_check__source_down_exits_1(
    consul_agent: ConsulAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    consul_agent.add("memcached", "10.7.0.1", 11211)
    snapshot = str(tmp_path / "nodes.json")
    assert main(["resolve", consul_url(consul_agent), "--snapshot", snapshot]) == 0
    consul_agent.pause()

    status = main(["check", consul_url(consul_agent), "--snapshot", snapshot, "--deadline", "0.5"])

    assert status == 1
    assert f"{consul_url(consul_agent)}  failed" in capsys.readouterr().out


def test_check__missing_snapshot_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["check", "memcached://10.0.0.1", "--snapshot", str(tmp_path / "none.json")])

    assert status == 1
    assert "missing" in capsys.readouterr().out


def test_check__url_without_snapshot_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["check", "memcached://10.0.0.1"])

    assert status == 2
    assert "--snapshot" in capsys.readouterr().err


def test_check_settings__exit_status_follows_the_source(
    site: dict[str, str], consul_agent: ConsulAgent
) -> None:
    assert run("resolve", "--settings", SITE, env=site).returncode == 0
    same = run("check", "--settings", SITE, env=site)
    consul_agent.add("memcached", "10.7.0.3", 11211, node="mc-c")

    changed = run("check", "--settings", SITE, env=site)

    assert same.returncode == 0, same.stdout + same.stderr
    assert changed.returncode == 1
    assert "+10.7.0.3:11211" in changed.stdout


# --- secrets ----------------------------------------------------------------------------------


def test_token__never_printed_from_the_environment(
    consul_agent: ConsulAgent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    consul_agent.require_token(TOKEN)
    consul_agent.add("memcached", "10.7.0.1", 11211)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)
    snapshot = tmp_path / "nodes.json"

    statuses = [
        main(["resolve", consul_url(consul_agent), "--snapshot", str(snapshot), "--json", "-v"]),
        main(["resolve", consul_url(consul_agent), "--snapshot", str(snapshot), "-v"]),
        main(["show", str(snapshot), "--json"]),
        main(["check", consul_url(consul_agent), "--snapshot", str(snapshot), "--json", "-v"]),
    ]

    captured = capsys.readouterr()
    assert statuses == [0, 0, 0, 0]
    assert "10.7.0.1:11211" in captured.out
    assert TOKEN not in captured.out + captured.err
    assert TOKEN not in snapshot.read_text()


def test_token__never_printed_from_the_url_when_refused(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    consul_agent.require_token(TOKEN)
    consul_agent.add("memcached", "10.7.0.1", 11211)
    url = f"consul://{consul_agent.address}/memcached?token={OTHER_TOKEN}"

    done = run(
        "resolve", url, "--snapshot", str(tmp_path / "s.json"), "--json", "-v", "--deadline", "1",
        env={"CONSUL_HTTP_TOKEN": TOKEN},
    )  # fmt: skip

    assert done.returncode == 1
    assert "permission denied" in done.stderr
    assert OTHER_TOKEN not in done.stdout + done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert json.loads(done.stdout)["results"][0]["source"] == consul_url(consul_agent)


def test_token__quoted_escaped_by_the_agent_never_printed_as_json(
    consul_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent quoting the token JSON-style made --json print it, escaped a second time."""
    token = 'sec"ret\\tok-5f3e9a'
    consul_agent.filter_by_acl(TOKEN)
    consul_agent.echo_tokens()
    url = f"consul://{consul_agent.address}/memcached?token={quote(token, safe='')}"

    status = main(["resolve", url, "--json", "--attempts", "1"])

    captured = capsys.readouterr()
    assert status == 1
    (result,) = json.loads(captured.out)["results"]
    assert '(ACL not found (token "***"))' in result["error"]
    assert "5f3e9a" not in captured.out + captured.err


def test_json_output__strings_are_masked_before_they_are_serialised() -> None:
    """Masking the serialised text missed a secret that was escaped before JSON escaped it."""
    token = 'sec"ret\\tok-5f3e9a'
    escaped = json.dumps(token)[1:-1]  # sec\"ret\\tok-5f3e9a, as an agent may quote it
    stdout, stderr = io.StringIO(), io.StringIO()

    Output(stdout, stderr, [token]).report(
        True, {"results": [{"error": f"token {escaped}", escaped: None}]}, [], []
    )

    assert json.loads(stdout.getvalue()) == {"results": [{"error": "token ***", "***": None}]}


def test_token__never_printed_from_settings(
    site: dict[str, str], consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    consul_agent.require_token(TOKEN)
    env = {**site, "CLI_SITE_CONSUL": f"consul://{TOKEN}@{consul_agent.address}/memcached"}

    done = run("resolve", "--settings", SITE, "--json", "-v", env=env)

    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert TOKEN not in Path(site["CLI_SITE_SNAPSHOT"]).read_text()


# --- manage.py cache_nodes --------------------------------------------------------------------


def test_cache_nodes_show__lists_the_nodes_of_the_example_site(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    consul_agent.add("memcached", "10.7.0.1", 11211)
    manage = ROOT / "examples" / "mysite" / "manage.py"
    env = {
        "MYSITE_CONSUL_URL": f"consul://{consul_agent.address}/memcached",
        "MYSITE_SNAPSHOT": str(tmp_path / "cache-nodes.json"),
    }

    resolved = python(str(manage), "cache_nodes", "resolve", env=env, cwd=manage.parent)
    shown = python(str(manage), "cache_nodes", "show", env=env, cwd=manage.parent)

    assert resolved.returncode == 0, resolved.stderr
    assert shown.returncode == 0, shown.stderr
    assert f"{consul_url(consul_agent)}  10.7.0.1:11211" in shown.stdout
    assert "memcached://127.0.0.1:11211" in shown.stdout


def test_cache_nodes_check__exits_1_when_the_list_changed(
    site: dict[str, str], consul_agent: ConsulAgent
) -> None:
    command = ("-m", "django", "cache_nodes")
    resolved = python(*command, "resolve", "--settings", SITE, env=site)
    consul_agent.add("memcached", "10.7.0.3", 11211, node="mc-c")

    # OFFLINE: the settings import must not rewrite the snapshot before it is compared.
    checked = python(
        *command, "check", "--settings", SITE, env={**site, "CACHE_SETTINGS_OFFLINE": "1"}
    )

    assert resolved.returncode == 0, resolved.stderr
    assert checked.returncode == 1
    assert "+10.7.0.3:11211" in checked.stdout
    assert "CommandError" in checked.stderr


def test_cache_nodes_check__default_invocation_compares_live_with_the_shipped_snapshot(
    site: dict[str, str], consul_agent: ConsulAgent
) -> None:
    """No CACHE_SETTINGS_OFFLINE needed: under manage.py cache_nodes the settings import asks
    no source, so it cannot rewrite the snapshot that check compares with."""
    command = ("-m", "django", "cache_nodes")
    resolved = python(*command, "resolve", "--settings", SITE, env=site)
    before = Path(site["CLI_SITE_SNAPSHOT"]).read_bytes()
    consul_agent.add("memcached", "10.7.0.3", 11211, node="mc-c")

    checked = python(*command, "check", "--settings", SITE, env=site)

    assert resolved.returncode == 0, resolved.stderr
    assert checked.returncode == 1, checked.stderr
    assert "+10.7.0.3:11211" in checked.stdout
    assert Path(site["CLI_SITE_SNAPSHOT"]).read_bytes() == before


def test_cache_nodes_show__settings_import_asks_no_source(
    site: dict[str, str], consul_agent: ConsulAgent
) -> None:
    command = ("-m", "django", "cache_nodes")
    resolved = python(*command, "resolve", "--settings", SITE, env=site)
    asked = len(consul_agent.health_requests("memcached"))

    shown = python(*command, "show", "--settings", SITE, env=site)

    assert resolved.returncode == 0, resolved.stderr
    assert shown.returncode == 0, shown.stderr
    assert "10.7.0.1:11211, 10.7.0.2:11211" in shown.stdout
    assert len(consul_agent.health_requests("memcached")) == asked


def test_cache_nodes__bad_settings_argument_is_one_line_and_exit_2(site: dict[str, str]) -> None:
    env = {**site, "CLI_SITE_CONSUL": "consul:///memcached?tags=prod"}

    done = python("-m", "django", "cache_nodes", "resolve", "--settings", SITE, env=env)

    lines = done.stderr.splitlines()
    assert done.returncode == 2
    assert lines[0].startswith(
        "cache-settings resolve: error: consul:///memcached?tags=***: unknown option 'tags'"
    )
    assert lines[1:] == ["CommandError: cache_nodes resolve failed (exit status 2)"]


def test_cache_nodes_check__call_command_refuses_to_compare_live_with_live(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    """In a process whose settings import rewrote a snapshot, check must not say "same"."""
    consul_agent.add("memcached", "10.7.0.1", 11211)
    memcached(consul_url(consul_agent), snapshot=tmp_path / "nodes.json")

    with pytest.raises(CommandError) as raised:
        call_command(Command(), "check", stdout=_Buffer(), stderr=_Buffer())

    assert raised.value.returncode == 2
    assert "run `manage.py cache_nodes check` as a command of its own" in str(raised.value)


def test_resolve_settings__broken_settings_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "brokensite.py").write_text(
        'import os\nSECRET_KEY = os.environ["BROKENSITE_SECRET_KEY"]\n'
    )
    sys.path.insert(0, str(tmp_path))
    try:
        status = main(["resolve", "--settings", "brokensite", "--json"])
    finally:
        sys.path.remove(str(tmp_path))

    err = capsys.readouterr().err
    assert status == 2
    assert "importing brokensite failed: KeyError: 'BROKENSITE_SECRET_KEY'" in err
    assert "Traceback" not in err


def test_resolve_settings__settings_error_is_its_message_not_a_repr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "unconfiguredsite.py").write_text(
        "from django.core.exceptions import ImproperlyConfigured\n"
        'raise ImproperlyConfigured("Set the CACHE_HOST environment variable.")\n'
    )
    sys.path.insert(0, str(tmp_path))
    try:
        status = main(["resolve", "--settings", "unconfiguredsite"])
    finally:
        sys.path.remove(str(tmp_path))

    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        "cache-settings resolve: error: --settings: importing unconfiguredsite failed: "
        "Set the CACHE_HOST environment variable."
    ]


def test_usage_errors__argparse_and_our_own_are_one_line_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No usage block for one kind of mistake and none for the other."""
    assert main(["resolve", "--attempts", "zero", "memcached://10.0.0.1:11211"]) == 2
    assert main(["resolve", "redis://10.0.0.1:6379"]) == 2

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("cache-settings resolve: error: argument --attempts: ")
    assert lines[1].startswith("cache-settings resolve: error: Unknown scheme 'redis://'")


def test_resolve_settings__bad_memcached_argument_is_its_own_message_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MISTAKE_SOURCE", "memcached://10.0.0.1:11211")
    monkeypatch.setenv("MISTAKE_ARGUMENTS", json.dumps({"backnd": "pymemcache"}))

    status = main(["resolve", "--settings", "tests.settings.mistake_site"])

    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        "cache-settings resolve: error: --settings tests.settings.mistake_site: memcached() "
        "got unknown argument(s) 'backnd' (did you mean 'backend'?)"
    ]


@pytest.mark.parametrize(
    "options",
    [["-v", "2"], ["--verbosity=2", "--traceback", "--no-color"], ["-v2", "--force-color"]],
)
def test_cache_nodes__django_default_options_work_after_the_verb(options: list[str]) -> None:
    """``manage.py migrate app -v 2`` is how Django users write it; after a verb too."""
    manage = ROOT / "examples" / "mysite" / "manage.py"
    url = "memcached://10.5.0.1:11211"

    after = python(str(manage), "cache_nodes", "resolve", url, *options, cwd=manage.parent, env={})
    quiet = python(str(manage), "cache_nodes", "-v", "2", "resolve", url, "-v", "0",
                   cwd=manage.parent, env={})  # fmt: skip

    assert after.returncode == 0, after.stderr
    assert f"INFO: {url}: resolved 1 node(s)" in after.stderr  # verbosity 2: each resolution
    assert quiet.returncode == 0, quiet.stderr
    assert "resolved 1 node(s)" not in quiet.stderr  # given after the verb, it wins


def test_cache_nodes__call_command_shows_a_snapshot_file(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "memcached://10.5.0.1:11211", [Node("10.5.0.1")], version=3)
    out = _Buffer()

    call_command(Command(), "show", str(snapshot), stdout=out)

    assert "memcached://10.5.0.1:11211  10.5.0.1:11211" in out.text


def test_cache_nodes__failure_raises_command_error_with_status_1(
    faults: Faults, tmp_path: Path
) -> None:
    url = f"consul://{faults.refused()}/memcached"

    with pytest.raises(CommandError) as raised:
        call_command(
            Command(), "resolve", url, "--deadline", "0.5", stdout=_Buffer(), stderr=_Buffer()
        )

    assert raised.value.returncode == 1


class _Buffer:
    """A text stream for call_command's stdout/stderr."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_show__never_prints_credentials_held_in_a_foreign_files_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "foreign.json"
    key = "consul://tok-secret-zzz@10.0.0.9:8500/mc"
    snapshot.write_text(
        json.dumps(
            {
                "format": "cache_settings/1",
                "sources": {
                    key: {"nodes": [{"host": "10.5.0.1", "port": 11211}], "fetched_at": 1.0}
                },
            }
        )
    )

    main(["show", str(snapshot)])
    main(["show", str(snapshot), "--json"])

    out = capsys.readouterr().out
    assert "consul://10.0.0.9:8500/mc" in out
    assert "tok-secret-zzz" not in out


def test_check_settings__static_list_without_snapshot_is_ok(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A static list is read from the settings: no snapshot is missing."""
    monkeypatch.setenv("MISTAKE_SOURCE", "memcached://10.0.0.1:11211")
    monkeypatch.setenv("MISTAKE_ARGUMENTS", "{}")

    status = main(["check", "--settings", "tests.settings.mistake_site", "--json"])

    [result] = json.loads(capsys.readouterr().out)["results"]
    assert status == 0
    assert (result["status"], result["detail"]) == ("static", "a static list needs no snapshot")


def _documented_json_fields() -> dict[str, tuple[set[str], set[str]]]:
    """docs/reference.md's table of each verb's JSON: (document keys, row keys)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "reference.md").read_text()
    fields = {}
    for verb, document, row in re.findall(r"^\| `(\w+)` \| (.*?) \| (.*?) \|$", text, re.M):
        row = re.sub(r"\([^)]*\)", "", row)  # status values and notes, not fields
        fields[verb] = (set(re.findall(r"`(\w+)`", document)), set(re.findall(r"`(\w+)`", row)))
    return fields


def test_reference_json_fields__match_what_each_verb_prints(
    memcached_node: MemcachedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON of resolve, show and check was documented as 'plain data', its fields nowhere."""
    url, snapshot = f"memcached://{memcached_node.location}", str(tmp_path / "nodes.json")
    documented = _documented_json_fields()
    printed = {}
    for verb, arguments in [
        ("resolve", [url, "--snapshot", snapshot, "--probe"]),
        ("show", [snapshot]),
        ("check", [url, "--snapshot", snapshot, "--probe"]),
    ]:
        assert main([verb, "--json", *arguments]) == 0
        printed[verb] = json.loads(capsys.readouterr().out)

    for verb, document in printed.items():
        rows = document["results" if verb != "show" else "entries"]
        assert documented[verb] == (set(document), set(rows[0])), verb
    probe = printed["check"]["results"][0]["probe"][0]
    assert set(probe) == {"node", "version", "error"}
