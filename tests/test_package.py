"""The distribution: what the sdist and the wheel carry, its metadata, and the tested matrix.

Issue 15: a LICENSE, project URLs, classifiers that say what tox tests, an sdist whose
test tree runs, ``cache-settings --version``. The sdist and the wheel are built once per
module with ``python -m build`` (no isolation: the test environment has setuptools).
"""

from __future__ import annotations

import configparser
import email
import itertools
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from importlib import metadata
from pathlib import Path

import pytest

import cache_settings.sources
from cache_settings.cli import main

ROOT = Path(__file__).resolve().parent.parent
NAME = "django_cache_settings"
# What a test run needs besides tests/test_*.py (issue 15: the sdist shipped none of it).
TEST_TREE = [
    "tests/conftest.py",
    "tests/helpers.py",
    "tests/servers/memcached.py",
    "tests/servers/consul.py",
    "tests/sources/test_static.py",
    "tests/settings/__init__.py",
    "tests/typing/readme_settings.py",
    "examples/demo.py",
    "examples/predeploy.sh",
    "tox.ini",
    "LICENSE",
    "docs/reference.md",  # and the documentation that the README and the tests point to
]


# Never part of a release: virtualenvs, caches, build output.
SCRATCH = (".git", ".venv*", ".tox", "*_cache", "__pycache__", "*.egg-info", "build", "dist")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the sdist, then the wheel from it, as ``python -m build`` does."""
    out = tmp_path_factory.mktemp("dist")
    # From a copy: setuptools writes its egg-info into the tree it builds, and ./run test
    # runs two corners at once.
    tree = tmp_path_factory.mktemp("tree") / "checkout"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*SCRATCH))
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def sdist_names(dist: Path) -> list[str]:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        return [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]


def wheel_metadata(dist: Path) -> tuple[list[str], Message]:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        return names, email.message_from_bytes(archive.read(meta))


def test_sdist__ships_a_complete_test_tree(dist: Path) -> None:
    names = sdist_names(dist)

    assert [path for path in TEST_TREE if path not in names] == []
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    shipped = {name for name in names if name.startswith("tests/") and name.endswith(".py")}
    in_checkout = {str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("*.py")}
    assert shipped == in_checkout


def test_sdist__its_tests_run_from_the_unpacked_tree(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.iterdir()

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_nodes.py",
         "tests/sources/test_static.py", "tests/test_public_api.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tree,
        check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"^\d+ passed", done.stdout.splitlines()[-1])
    # The unpacked package was tested, not the checkout's.
    probe = [sys.executable, "-c", "import cache_settings; print(cache_settings.__file__)"]
    where = subprocess.run(probe, capture_output=True, text=True, cwd=tree, check=True)
    assert where.stdout.startswith(str(tree))


def test_wheel__license_urls_and_no_tests(dist: Path) -> None:
    names, meta = wheel_metadata(dist)

    assert f"{NAME}-0.1.0.dist-info/licenses/LICENSE" in names
    assert "cache_settings/py.typed" in names
    assert not [name for name in names if name.startswith(("tests/", "examples/"))]
    assert meta["License-Expression"] == "BSD-3-Clause"
    urls = dict(value.split(", ", 1) for value in meta.get_all("Project-URL") or [])
    assert sorted(urls) == ["Changelog", "Documentation", "Issues", "Source"]
    assert all(url.startswith("https://github.com/django-cache-settings/") for url in urls.values())
    license_text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in license_text
    assert "Copyright (c) The django-cache-settings authors" in license_text


def expand(pattern: str) -> list[str]:
    """Expand tox's ``{a,b}`` factor groups: ``py{310,311}-dj42`` → two names."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[part] if i % 2 == 0 else part.split(",") for i, part in enumerate(parts)]
    return ["".join(combination) for combination in itertools.product(*choices)]


def tox_envs() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "tox.ini")
    lines = config["tox"]["env_list"].split()
    return [name for line in lines for name in expand(line.strip().rstrip(","))]


def test_classifiers__match_what_tox_tests(dist: Path) -> None:
    _, meta = wheel_metadata(dist)
    classifiers = meta.get_all("Classifier") or []
    pairs = {
        (f"3.{m[1][1:]}", f"{m[2][0]}.{m[2][1:]}")
        for m in (re.fullmatch(r"py(\d+)-dj(\d+)-consul(2|py)", env) for env in tox_envs())
        if m
    }

    pythons = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c)}
    djangos = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r".*Django :: \d\.\d", c)}
    assert pythons == {python for python, _ in pairs} == {"3.10", "3.11", "3.12", "3.13"}
    assert djangos == {django for _, django in pairs} == {"4.2", "5.2", "6.0", "6.1"}
    # Django's own support: 4.2 up to Python 3.12, 6.x from 3.12 on.
    assert max(py for py, dj in pairs if dj == "4.2") == "3.12"
    assert min(py for py, dj in pairs if dj.startswith("6.")) == "3.12"
    assert {"typing", "lint"} <= set(tox_envs())


def test_run__test_corners_are_tox_environments() -> None:
    """./run test runs the oldest and the newest corner of tox's matrix."""
    run = (ROOT / "run").read_text()
    corners = re.findall(r"^(?:OLDEST|NEWEST)=\(\.venv-(\S+) ", run, re.MULTILINE)

    assert corners == ["py310-dj42-consul2", "py313-dj61-consulpy"]
    assert set(corners) <= set(tox_envs())


def test_cli__version_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--version"])

    assert status == 0
    assert (
        capsys.readouterr().out == f"cache-settings {metadata.version('django-cache-settings')}\n"
    )


def test_sources__dir_lists_the_lazily_loaded_sources() -> None:
    names = dir(cache_settings.sources)

    assert {"Consul", "ConfigEndpoint", "ElastiCacheAPI", "Static", "parse_source"} <= set(names)
    assert names == sorted(names)
