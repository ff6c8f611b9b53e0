"""What ``cache-settings`` prints when it cannot run: one line on stderr, JSON with --json.

A script that runs the command with ``--json`` reads one JSON document from stdout whatever
happened; a value that argparse refuses is quoted in its message, masked as all output is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cache_settings.cli import main
from cache_settings.management.commands.cache_nodes import Command
from tests.helpers import without_host_aws
from tests.servers.elasticache_api import ElastiCacheAPIServer

ROOT = Path(__file__).resolve().parents[1]

SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["resolve", "--json", "--bogus", "x"], "unrecognized arguments", id="parser"),
        pytest.param(["resolve", "--json", "--deadline", "-1", "x"], "--deadline", id="option"),
        pytest.param(["resolve", "redis://cache:6379", "--json"], "Unknown scheme", id="verb"),
    ],
)
def test_cli__usage_error_with_json_prints_one_json_document(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(argv)

    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert status == 2
    assert document["ok"] is False
    assert document["exit"] == 2
    assert says in document["error"]
    assert says in captured.err  # still said where a person reads it


def test_cli__usage_error_without_json_prints_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["resolve", "--bogus", "x"])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([f"consul://agent/memcached?token={SECRET}"], id="url-as-verb"),
        pytest.param(
            ["resolve", "--deadline", f"consul://agent/x?token={SECRET}", "y"], id="value"
        ),
        pytest.param([f"consul://user:{SECRET}@agent/memcached", "--json"], id="userinfo-json"),
    ],
)
def test_cli__a_refused_value_is_quoted_without_its_secret(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse quotes the value it refused: a URL with a token ended on stderr as typed."""
    status = main(argv)

    captured = capsys.readouterr()
    assert status == 2
    assert "consul://" in captured.err  # the value is still named
    assert SECRET not in captured.err
    assert SECRET not in captured.out


# --- manage.py cache_nodes: Django's parser, with the verbs' errors masked as well -----------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([f"consul://agent/memcached?token={SECRET}"], id="url-as-verb"),
        pytest.param(["resolve", "--deadline", f"consul://agent/x?token={SECRET}"], id="value"),
    ],
)
def test_cache_nodes__a_refused_value_is_quoted_without_its_secret(argv: list[str]) -> None:
    """Under call_command, Django's parser raises CommandError with argparse's message."""
    with pytest.raises(CommandError) as raised:
        call_command(Command(), *argv)

    assert "consul://agent/" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_cache_nodes__a_refused_value_is_masked_on_the_command_line(tmp_path: Path) -> None:
    manage = ROOT / "examples" / "mysite" / "manage.py"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "CACHE_SETTINGS_OFFLINE": "1",
        "MYSITE_SNAPSHOT": str(tmp_path / "cache-nodes.json"),
    }

    done = subprocess.run(
        [sys.executable, str(manage), "cache_nodes", f"consul://agent/x?token={SECRET}"],
        env=env,
        cwd=manage.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert "invalid choice: 'consul://agent/x?token=***'" in done.stderr
    assert SECRET not in done.stderr + done.stdout


# --- TLS settings that cannot load: the release must not pass what the site cannot start ----


def _tls_site(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A settings module whose one entry gives a directory as its CA file."""
    directory = tmp_path / "certs"
    directory.mkdir()
    snapshot = tmp_path / "cache-nodes.json"
    (tmp_path / f"{name}.py").write_text(
        "import cache_settings\n"
        'SECRET_KEY = "x"\n'
        'INSTALLED_APPS = ["cache_settings"]\n'
        "CACHES = {'default': cache_settings.memcached(\n"
        f"    'pymemcache://cache.example:11211?tls=true&ca={directory}',\n"
        f"    snapshot={str(snapshot)!r},\n"
        ")}\n"
    )
    return directory, snapshot


@pytest.mark.parametrize("verb", ["resolve", "check"])
def test_resolve_settings__tls_settings_that_cannot_load__exit_2_naming_source_and_fix(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The site's settings import raises here (E003 under manage.py check): so must the run."""
    directory, snapshot = _tls_site(tmp_path, f"badca_{verb}_site")
    sys.path.insert(0, str(tmp_path))
    try:
        status = main([verb, "--settings", f"badca_{verb}_site", "--json"])
    finally:
        sys.path.remove(str(tmp_path))

    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert status == 2
    assert document["exit"] == 2
    assert document["error"].startswith("pymemcache://cache.example:11211?tls=true&ca=")
    assert f"ca='{directory}': cannot read the file" in document["error"]
    assert "a readable PEM file of the CA" in document["error"]  # the fix
    assert not snapshot.exists()  # stopped before anything was written


def test_cache_nodes_resolve__tls_settings_that_cannot_load__exit_2(tmp_path: Path) -> None:
    directory, snapshot = _tls_site(tmp_path, "badca_site")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
        "DJANGO_SETTINGS_MODULE": "badca_site",
    }

    done = subprocess.run(
        [sys.executable, "-m", "django", "cache_nodes", "resolve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert f"ca='{directory}': cannot read the file" in done.stderr
    assert "CommandError: cache_nodes resolve failed (exit status 2)" in done.stderr
    assert not snapshot.exists()


def test_cli_resolve__a_serverless_answer_whose_ca_cannot_load__exit_2(
    elasticache_api: ElastiCacheAPIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The API says only when it answers that the nodes speak TLS: ca= is built then."""
    without_host_aws(monkeypatch, tmp_path)
    for name, value in elasticache_api.credentials_env.items():
        monkeypatch.setenv(name, value)
    elasticache_api.add_serverless("sl", "sl-abc123.serverless.use1.cache.amazonaws.com")
    url = (
        f"elasticache-api://sl?region=us-east-1&endpoint_url={elasticache_api.endpoint_url}"
        f"&ca={tmp_path}"
    )

    status = main(["resolve", url, "--snapshot", str(tmp_path / "nodes.json")])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("cache-settings resolve: error: elasticache-api://sl?")
    assert f"ca='{tmp_path}': cannot read the file" in err
