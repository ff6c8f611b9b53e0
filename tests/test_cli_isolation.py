"""The command line changes nothing process-wide: no environment variable, no logging level.

``manage.py cache_nodes`` (and ``call_command``) runs inside the site's own process, and
``cache-settings --settings`` imports the site's settings in its own: importing them offline
must hold for that import alone (:func:`cache_settings.resolve.offline`,
:func:`cache_settings.entries.collecting`), never through ``os.environ`` or
``logging.disable``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from cache_settings.cli import main
from cache_settings.management.commands.cache_nodes import Command
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot
from tests.servers.faults import Faults

SITE = "tests.settings.observing_site"


@pytest.fixture
def observed(tmp_path: Path, faults: Faults, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the observing site writes what it saw; its source is a Consul agent that is down."""
    monkeypatch.setenv("OBSERVE_FILE", str(tmp_path / "observed.json"))
    monkeypatch.setenv("OBSERVE_SOURCE", f"consul://{faults.refused()}/memcached")
    return tmp_path / "observed.json"


def test_cli_settings_import__offline_for_that_import_only(
    observed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ, disable = dict(os.environ), logging.root.manager.disable

    status = main(["show", "--settings", SITE])

    seen = json.loads(observed.read_text())
    assert status == 0, capsys.readouterr().err  # no snapshot configured: nothing missing
    assert seen["this_thread"] == {"offline": True, "collecting": True}
    # Not through the process: the variable and logging stay as they were, during and after.
    assert seen["environ"] is None
    assert seen["logging_disable"] == disable
    assert seen["other_thread"] == {"offline": False, "collecting": False}
    assert dict(os.environ) == environ
    assert logging.root.manager.disable == disable


def test_cli_settings_import__settings_that_change_directory__sys_path_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The directory made importable for the settings is the one taken out again: settings
    that chdir left it in sys.path, and took out an entry naming their new directory."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site.mkdir()
    elsewhere.mkdir()
    (site / "chdir_settings.py").write_text(f"import os\nos.chdir({str(elsewhere)!r})\n")
    monkeypatch.chdir(site)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(site))])
    sys.path.append(str(elsewhere))  # someone's entry that happens to name that directory
    before = list(sys.path)

    status = main(["show", "--settings", "chdir_settings"])

    assert status == 1, capsys.readouterr().err  # the settings call memcached() nowhere
    assert sys.path == before


def test_call_command_cache_nodes__leaves_environ_and_logging_as_they_were(
    tmp_path: Path,
) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "memcached://10.5.0.9:11211", [Node("10.5.0.9")])
    package = logging.getLogger("cache_settings")
    environ, disable = dict(os.environ), logging.root.manager.disable
    level, handlers = package.level, list(package.handlers)

    call_command(Command(), "show", str(snapshot), verbosity=2, stdout=io.StringIO())

    assert dict(os.environ) == environ
    assert logging.root.manager.disable == disable
    assert (package.level, package.handlers) == (level, handlers)
