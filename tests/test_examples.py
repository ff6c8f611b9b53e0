"""The examples a newcomer runs first: ``./run demo`` and ``examples/predeploy.sh``.

Issue 15: every demo run left its temporary directory behind, and predeploy.sh failed
with "cache-settings: not found" unless a virtualenv was activated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo__passes_and_removes_its_temporary_directory(tmp_path: Path) -> None:
    environ = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("demo ok")
    assert list(tmp_path.iterdir()) == []


def test_predeploy__runs_without_an_activated_virtualenv(tmp_path: Path) -> None:
    """No VIRTUAL_ENV, no cache-settings on PATH: only a plain ``python3`` and /usr/bin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper, not a symlink: a venv's interpreter finds its site-packages from its path.
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "DJANGO_SETTINGS_MODULE")
    }
    environ.update(PATH=f"{bin_dir}:/usr/bin:/bin", MYSITE_SNAPSHOT=str(tmp_path / "nodes.json"))

    done = subprocess.run(
        ["sh", str(ROOT / "examples" / "predeploy.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "not found" not in done.stderr
    assert "System check identified no issues" in done.stdout
    assert (tmp_path / "nodes.json").exists()
