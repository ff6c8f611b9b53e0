"""Twenty typical mistakes, tried as a new user would: one short message each, no traceback.

Each mistake is made where users make it: in a ``memcached()`` call of a settings module,
seen by ``manage.py check`` (a real ``python -m django check`` process on
``tests.settings.mistake_site``), or on the ``cache-settings`` command line. Its message
must name the cause once and say what to do, in at most a few lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from cache_settings.cli import main
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

ROOT = Path(__file__).resolve().parent.parent
SITE = "tests.settings.mistake_site"
# `manage.py check` prints the header, a blank line, ERRORS:, the message, its hint, a
# blank line and the count.
CHECK_LINES = 7


@dataclass(frozen=True)
class Mistake:
    """One mistake: where it is made, what is written, and what the message must say.

    ``given`` is the source URL (``check``) or the command line (``cli``); ``{refused}``,
    ``{snapshot}`` and ``{memcached}`` in it, in ``arguments`` values and in ``says`` are
    filled in at run time. Every text of ``says`` must appear exactly once.
    """

    where: Literal["check", "cli"]
    given: str
    says: tuple[str, ...]
    arguments: dict[str, Any] = field(default_factory=dict)
    status: int = 1
    lines: int = CHECK_LINES
    uninstalled: str | None = None  # a client library the process cannot import


MISTAKES = {
    # --- URLs -------------------------------------------------------------------------------
    "scheme-typo": Mistake(
        "cli", "resolve consull:///memcached",
        ("Unknown scheme 'consull://'; did you mean 'consul://'?",), status=2, lines=1,
    ),
    "option-typo": Mistake(
        "check", "consul:///memcached?tags=prod",
        ("unknown option 'tags'; did you mean 'tag'?",),
    ),
    "port-typo": Mistake(
        "cli", "resolve memcached://127.0.0.1:112111",
        ("invalid port '112111': expected an integer 1..65535",), status=2, lines=1,
    ),
    "node-separator": Mistake(
        "check", "memcached://10.0.0.1:11211;10.0.0.2:11211",
        ("separate nodes with commas, as h1:11211,h2:11211",),
    ),
    "no-scheme": Mistake(
        "check", "10.0.0.1:11211",
        ("needs a scheme, such as consul:///memcached or memcached://127.0.0.1:11211",),
    ),
    "two-slashes": Mistake(
        "cli", "resolve consul://memcached",
        ("'memcached' was read as the agent's host (consul://AGENT/SERVICE) and no service is "
         "named; for the local agent write consul:///memcached",), status=2, lines=1,
    ),
    "boolean-typo": Mistake(
        "cli", "resolve consul:///memcached?passing=ture",
        ("option passing='ture' must be true or false",), status=2, lines=1,
    ),
    "tls-with-pylibmc": Mistake(
        "check", "pylibmc://10.0.0.1:11211?tls=true",
        ("pylibmc cannot speak TLS; use pymemcache://",),
    ),
    # --- memcached() keywords and options ---------------------------------------------------
    "keyword-typo": Mistake(
        "check", "memcached://10.0.0.1:11211",
        ("unknown argument(s) 'backnd' (did you mean 'backend'?)",),
        arguments={"backnd": "pymemcache"},
    ),
    "upper-case-django-key": Mistake(
        "check", "memcached://10.0.0.1:11211",
        ("'TIMEOUT' (did you mean 'timeout'?)", "written in lower case"),
        arguments={"TIMEOUT": 300},
    ),
    "on-failure-typo": Mistake(
        "check", "memcached://10.0.0.1:11211",
        ("on_failure must be 'raise', 'locmem' or 'dummy', not 'locmen'",),
        arguments={"on_failure": "locmen"},
    ),
    "backend-typo": Mistake(
        "check", "memcached://10.0.0.1:11211",
        ("backend must be 'pylibmc' or 'pymemcache', not 'memcache'",),
        arguments={"backend": "memcache"},
    ),
    # --- sources that do not answer ---------------------------------------------------------
    "agent-down-first-deploy": Mistake(
        "check", "consul://{refused}/memcached",
        (
            "cannot reach the agent http://{refused}",
            f"snapshot {{snapshot}} does not exist; "
            f"run `cache-settings resolve --settings {SITE}` to create it",
        ),
        arguments={"snapshot": "{snapshot}", "deadline": 0.5, "attempts": 2},
    ),
    "agent-down-stale-snapshot": Mistake(
        "check", "consul://{refused}/memcached",
        ("older than max_age=60 s", "to refresh it"),
        arguments={"snapshot": "{stale}", "deadline": 0.5, "attempts": 1, "max_age": 60},
    ),
    "unknown-host": Mistake(
        "cli", "resolve elasticache://no-such-host.invalid:11211 --deadline 2",
        ("FAILED elasticache://no-such-host.invalid:11211", "(1 attempt: ", "unknown host name"),
        lines=1,
    ),
    "not-a-configuration-endpoint": Mistake(
        "cli", "resolve elasticache://{memcached} --deadline 2",
        ("not an ElastiCache configuration endpoint",), lines=1,
    ),
    "missing-extra": Mistake(
        "check", "consul://{refused}/memcached",
        ("the Consul client is not installed", 'pip install "django-cache-settings[consul]"'),
        uninstalled="consul",
    ),
    # --- the command line -------------------------------------------------------------------
    "settings-from-the-wrong-directory": Mistake(
        "cli", "resolve --settings mysite.settings",
        ("cannot import 'mysite.settings'", "add that directory to PYTHONPATH"),
        status=2, lines=1,
    ),
    "snapshot-never-written": Mistake(
        "cli", f"show --settings {SITE}",
        ("no entry in {snapshot}", f"run `cache-settings resolve --settings {SITE}`"), lines=1,
    ),
    "node-down-in-a-static-list": Mistake(
        "cli", "resolve memcached://{refused} --probe",
        ("did not answer `version`: {refused} (connection refused)",), lines=1,
    ),
}  # fmt: skip


@pytest.fixture
def places(faults: Faults, memcached_node: MemcachedServer, tmp_path: Path) -> dict[str, str]:
    """What the placeholders of MISTAKES stand for in this test."""
    refused = faults.refused()
    stale = tmp_path / "stale.json"
    write_snapshot(
        stale,
        f"consul://{refused}/memcached",
        [Node("10.0.0.1")],
        fetched_at=time.time() - 2 * 86400,
    )
    return {
        "refused": refused,
        "memcached": memcached_node.location,
        "snapshot": str(tmp_path / "cache-nodes.json"),
        "stale": str(stale),
    }


def fill(value: Any, places: dict[str, str]) -> Any:
    return value.format(**places) if isinstance(value, str) else value


def manage_py_check(
    mistake: Mistake, places: dict[str, str], tmp_path: Path
) -> tuple[int, str, str]:
    paths = [str(ROOT)]
    if mistake.uninstalled:
        # What `pip uninstall` leaves: importing the client fails as for any missing module.
        shadow = tmp_path / "uninstalled" / mistake.uninstalled
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text(
            f"raise ModuleNotFoundError({'No module named ' + repr(mistake.uninstalled)!r}, "
            f"name={mistake.uninstalled!r})\n"
        )
        paths.insert(0, str(shadow.parent))
    arguments = {key: fill(value, places) for key, value in mistake.arguments.items()}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(paths),
        "DJANGO_SETTINGS_MODULE": SITE,
        "MISTAKE_SOURCE": fill(mistake.given, places),
        "MISTAKE_ARGUMENTS": json.dumps(arguments),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    return done.returncode, output, output


def command_line(
    mistake: Mistake,
    places: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str, str]:
    # show --settings imports the site: its one entry is a Consul source without a snapshot.
    monkeypatch.setenv("MISTAKE_SOURCE", f"consul://{places['refused']}/memcached")
    monkeypatch.setenv("MISTAKE_ARGUMENTS", json.dumps({"snapshot": places["snapshot"]}))
    status = main(fill(mistake.given, places).split())
    captured = capsys.readouterr()
    # The message is what goes to stderr; stdout holds the table, if any.
    return status, captured.err, captured.out + captured.err


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistake__one_short_message_with_the_cause_once_and_what_to_do(
    name: str,
    places: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mistake = MISTAKES[name]

    if mistake.where == "check":
        status, message, everything = manage_py_check(mistake, places, tmp_path)
    else:
        status, message, everything = command_line(mistake, places, capsys, monkeypatch)

    assert status == mistake.status, everything
    assert "Traceback" not in everything
    assert len(message.strip().splitlines()) <= mistake.lines, message
    for text in mistake.says:
        assert everything.count(fill(text, places)) == 1, (text, everything)
    if mistake.where == "check":
        assert "(cache_settings.E003)" in message
