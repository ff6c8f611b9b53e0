"""System checks: one test per id, on real entries made by memcached() and real CACHES."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.cache import CacheHandler
from django.core.checks import ERROR, CheckMessage, run_checks
from django.test import override_settings

import cache_settings
from cache_settings import ConfigurationError, compat
from cache_settings.apps import CacheSettingsConfig
from cache_settings.checks import (
    check_backends,
    check_fallbacks,
    check_hashing,
    check_locations,
    check_pylibmc_clients,
    check_refresh_backends,
    check_snapshots,
)
from cache_settings.compat import SettingsError
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot
from cache_settings.sources import Traits
from tests.servers.faults import Faults

ROOT = Path(__file__).resolve().parent.parent
PYLIBMC = "django.core.cache.backends.memcached.PyLibMCCache"
PYMEMCACHE = "django.core.cache.backends.memcached.PyMemcacheCache"


def about(
    check: Callable[..., list[CheckMessage]], obj: str, needle: str = ""
) -> list[tuple[str, str]]:
    """Return ``(id, msg)`` of *check*'s messages about *obj* whose text has *needle*.

    Entries made by other tests in this process are checked too; they name other objects.
    """
    return [(m.id or "", m.msg) for m in check(None) if m.obj == obj and needle in m.msg]


@dataclass(frozen=True)
class Listed:
    """A remote source as the checks see it (unlike a static list, it may be down)."""

    url: str
    traits = Traits()

    def resolve(self, timeout: float) -> list[Node]:
        return [Node(self.url.removeprefix("listed://"))]


def test_w001__static_list_needs_no_snapshot(tmp_path: Path) -> None:
    url = "memcached://10.31.0.9:11211"
    snapshot = tmp_path / "nodes.json"
    cache_settings.memcached(url, snapshot=snapshot)
    snapshot.unlink()

    assert about(check_snapshots, url) == []


def test_w001__snapshot_file_missing(tmp_path: Path) -> None:
    url = "listed://10.31.0.1"
    snapshot = tmp_path / "nodes.json"
    cache_settings.memcached(Listed(url), snapshot=snapshot)
    snapshot.unlink()

    found = about(check_snapshots, url, str(snapshot))

    assert [id_ for id_, _ in found] == ["cache_settings.W001"]


def test_w001__hint_names_the_settings_module_the_checks_run_on(tmp_path: Path) -> None:
    """The command is meant to be copied: `--settings mysite.settings`, not a placeholder."""
    url = "listed://10.31.0.11"
    snapshot = tmp_path / "nodes.json"
    cache_settings.memcached(Listed(url), snapshot=snapshot)
    snapshot.unlink()

    with override_settings(SETTINGS_MODULE="mysite.settings"):
        hints = [m.hint for m in check_snapshots(None) if m.obj == url]

    assert hints == [
        "Run `cache-settings resolve --settings mysite.settings` (or `manage.py cache_nodes "
        "resolve`) in the release pipeline and ship the snapshot with the release."
    ]


def test_w001__snapshot_file_malformed(tmp_path: Path) -> None:
    url = "listed://10.31.0.2"
    snapshot = tmp_path / "nodes.json"
    cache_settings.memcached(Listed(url), snapshot=snapshot)
    snapshot.write_text("{not json")

    found = about(check_snapshots, url, str(snapshot))

    assert [id_ for id_, _ in found] == ["cache_settings.W001"]
    assert "not valid JSON" in found[0][1]


def test_w001_w002__fresh_snapshot_is_silent(tmp_path: Path) -> None:
    url = "listed://10.31.0.3"
    snapshot = tmp_path / "nodes.json"
    cache_settings.memcached(Listed(url), snapshot=snapshot, max_age=60)

    assert about(check_snapshots, url, str(snapshot)) == []


def test_w002__snapshot_older_than_max_age(tmp_path: Path) -> None:
    url = "listed://10.31.0.4"
    snapshot = tmp_path / "nodes.json"
    cache_settings.memcached(Listed(url), snapshot=snapshot, max_age=60)
    write_snapshot(snapshot, url, [Node("10.31.0.4")], fetched_at=time.time() - 3600)

    found = about(check_snapshots, url, str(snapshot))

    assert [id_ for id_, _ in found] == ["cache_settings.W002"]
    # The words of resolve()'s error when it refuses the entry: "N s old, older than max_age=M s".
    assert re.search(r"is 36\d\d s old, older than max_age=60 s:", found[0][1])


def test_w003__entry_served_from_the_snapshot(faults: Faults, tmp_path: Path) -> None:
    url = f"consul://{faults.refused()}/memcached"
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, url, [Node("10.32.0.1")])
    entry = cache_settings.memcached(url, snapshot=snapshot, deadline=0.5)

    found = about(check_fallbacks, url, str(snapshot))

    assert entry["LOCATION"] == ["10.32.0.1:11211"]
    assert [id_ for id_, _ in found] == ["cache_settings.W003"]


def test_w003__offline_mode_is_silent(
    faults: Faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"consul://{faults.refused()}/memcached"
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, url, [Node("10.32.0.2")])
    monkeypatch.setenv("CACHE_SETTINGS_OFFLINE", "1")
    cache_settings.memcached(url, snapshot=snapshot)

    assert about(check_fallbacks, url) == []


def test_e005__refresh_on_a_stock_backend_is_an_error() -> None:
    caches = {
        "stock": {
            "BACKEND": PYMEMCACHE,
            "LOCATION": ["10.33.0.1:11211"],
            "OPTIONS": {"refresh": 30.0, "snapshot": "/x.json", "no_delay": True},
        },
        "refreshing": {
            "BACKEND": "cache_settings.backends.PyMemcacheCache",
            "LOCATION": "consul:///memcached",
            "OPTIONS": {"refresh": 30.0},
        },
    }

    with override_settings(CACHES=caches):
        messages = check_refresh_backends(None)

    assert [(m.id, m.obj, m.level) for m in messages] == [("cache_settings.E005", "stock", ERROR)]
    assert "OPTIONS hold refresh, snapshot," in messages[0].msg


@pytest.mark.parametrize("backend", [PYLIBMC, PYMEMCACHE])
def test_e005__why_an_error_the_stock_client_refuses_the_keys(backend: str) -> None:
    """Django passes every OPTIONS key to the client: the entry fails at its first use."""
    handler = CacheHandler(
        {
            "default": {
                "BACKEND": backend,
                "LOCATION": ["10.33.0.1:11211"],
                "OPTIONS": {"refresh": 30},
            }
        }
    )

    with pytest.raises(TypeError, match="refresh"):
        handler["default"].get("key")


def test_w005__entry_fell_back_to_a_local_cache(faults: Faults) -> None:
    url = f"consul://{faults.refused()}/memcached"

    entry = cache_settings.memcached(url, on_failure="locmem", deadline=0.5)

    assert entry["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert [id_ for id_, _ in about(check_fallbacks, url)] == ["cache_settings.W005"]


def test_w005__says_why_the_source_failed(faults: Faults) -> None:
    refused = faults.refused()
    url = f"consul://{refused}/memcached"

    cache_settings.memcached(url, on_failure="dummy", deadline=0.5)

    [(_, message)] = about(check_fallbacks, url)
    assert f"cannot reach the agent http://{refused}" in message
    assert "no snapshot file configured" in message
    assert url not in message  # the check framework prints it as the message's object


def manage_py_check(
    source: str, arguments: dict[str, Any] | None = None, *, apps: str = "cache_settings"
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m django check`` on tests.settings.mistake_site with one entry."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings.mistake_site",
        "MISTAKE_SOURCE": source,
        "MISTAKE_ARGUMENTS": json.dumps(arguments or {}),
        "MISTAKE_APPS": apps,
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_e003__failing_source_is_one_check_error_not_a_traceback(faults: Faults) -> None:
    url = f"consul://{faults.refused()}/memcached"

    done = manage_py_check(url, {"deadline": 0.5, "attempts": 1})

    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert "Traceback" not in output
    assert f"{url}: (cache_settings.E003) no node list could be resolved (1 attempt: " in output
    assert output.count("cannot reach the agent") == 1  # the cause once: no log line besides
    assert len(output.splitlines()) <= 8


@pytest.mark.parametrize("apps", ["cache_settings", ""], ids=["installed", "not-installed"])
def test_e003__bad_argument_is_one_check_error(apps: str) -> None:
    done = manage_py_check("memcached://10.36.0.1:11211", {"on_failure": "locmen"}, apps=apps)

    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert "Traceback" not in output
    assert (
        "memcached() in tests.settings.mistake_site: (cache_settings.E003) on_failure must be "
        "'raise', 'locmem' or 'dummy', not 'locmen'"
    ) in output


def test_e003__raised_outside_manage_py_check() -> None:
    """Only `check` reports instead of raising: the site itself must not start."""
    code = "import tests.settings.mistake_site"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "MISTAKE_SOURCE": "memcached://10.36.0.1:11211",
        "MISTAKE_ARGUMENTS": json.dumps({"on_failure": "locmen"}),
    }

    done = subprocess.run(
        [sys.executable, "-c", code, "check"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert "cache_settings.exceptions.ConfigurationError: on_failure must be" in done.stderr


def test_e001__unknown_scheme_in_a_memcached_location() -> None:
    caches = {
        "memcached": {"BACKEND": PYLIBMC, "LOCATION": "redis://cache:6379"},
        "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                  "LOCATION": "redis://cache:6379"},
    }  # fmt: skip

    with override_settings(CACHES=caches):
        messages = check_locations(None)

    assert [(m.id, m.obj) for m in messages] == [("cache_settings.E001", "memcached")]
    assert "'redis://'" in messages[0].msg


def test_e002__source_url_as_a_stock_backend_location() -> None:
    caches = {"default": {"BACKEND": PYLIBMC, "LOCATION": ["consul:///memcached?tag=prod"]}}

    with override_settings(CACHES=caches):
        messages = check_locations(None)

    assert [(m.id, m.obj) for m in messages] == [("cache_settings.E002", "default")]


REFRESHING_PYLIBMC = "cache_settings.backends.PyLibMCCache"


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({}, "'modula'"),
        ({"behaviors": {"tcp_nodelay": True}}, "'modula'"),
        ({"behaviors": {"distribution": "random"}}, "'random'"),
        ({"behaviors": {"ketama": False}}, "'modula'"),
        ({"behaviors": {"ketama": True}}, None),
        ({"behaviors": {"ketama_weighted": True}}, None),
        ({"behaviors": {"distribution": "consistent ketama"}}, None),
    ],
)
def test_w007__a_refreshing_pylibmc_entry_that_hashes_with_modula(
    options: dict[str, Any], warned: str | None
) -> None:
    """A plain refreshing pylibmc entry lost 3,000 of 3,000 keys when one node of three changed."""
    entry = {"BACKEND": REFRESHING_PYLIBMC, "LOCATION": "consul:///mc", "OPTIONS": options}
    caches = {"default": entry, "stock": {"BACKEND": PYLIBMC, "LOCATION": "10.0.0.1:11211"}}

    with override_settings(CACHES=caches):
        messages = check_hashing(None)

    if warned is None:
        assert messages == []
    else:
        assert [(m.id, m.obj) for m in messages] == [("cache_settings.W007", "default")]
        assert f"hashes keys with {warned}" in messages[0].msg


@pytest.mark.parametrize(
    ("location", "warned"),
    [
        (["10.0.0.1:11211", "10.0.0.2:11211"], False),
        ("10.0.0.1:11211;10.0.0.2:11211", False),
        ("memcached://10.0.0.1:11211,10.0.0.2:11211", False),
        ("pylibmc://10.0.0.1:11211", False),
        ("dns+memcached.cache.svc.cluster.local:11211", True),
        (["consul:///mc", "memcached://10.0.0.1:11211"], True),
    ],
)
def test_w007__only_a_location_whose_nodes_can_change(location: Any, warned: bool) -> None:
    """A fixed node list never changes: modula moves no key, and W007 told users it did."""
    entry = {"BACKEND": REFRESHING_PYLIBMC, "LOCATION": location, "OPTIONS": {"refresh": 30}}

    with override_settings(CACHES={"default": entry}):
        messages = check_hashing(None)

    assert [m.id for m in messages] == (["cache_settings.W007"] if warned else [])


def test_w007__memcached_entries_that_refresh_hash_consistently() -> None:
    entry = cache_settings.memcached("memcached://10.0.0.1:11211", backend="pylibmc", refresh=60)

    with override_settings(CACHES={"default": entry}):
        assert check_hashing(None) == []


def test_checks__plain_memcached_caches_are_silent() -> None:
    caches = {"default": {"BACKEND": PYLIBMC, "LOCATION": ["10.34.0.1:11211"]}}

    with override_settings(CACHES=caches):
        messages = check_locations(None) + check_refresh_backends(None)

    assert messages == []


def test_checks__registered_under_the_caches_tag() -> None:
    caches = {"default": {"BACKEND": PYLIBMC, "LOCATION": "bogus://x"}}

    with override_settings(CACHES=caches):
        ids = {m.id for m in run_checks(tags=["caches"])}

    assert "cache_settings.E001" in ids


def test_app_config__installed_app_registers_the_checks() -> None:
    with override_settings(INSTALLED_APPS=["cache_settings"]):
        config = apps.get_app_config("cache_settings")

    assert isinstance(config, CacheSettingsConfig)
    assert config.name == "cache_settings"


def test_manage_py_check__reports_w003_when_the_source_is_down(
    faults: Faults, tmp_path: Path
) -> None:
    snapshot = tmp_path / "nodes.json"
    down = f"consul://{faults.refused()}/memcached"
    write_snapshot(snapshot, down, [Node("10.35.0.1")])
    env: dict[str, Any] = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "CLI_SITE_CONSUL": down,
        "CLI_SITE_STATIC": "memcached://10.35.0.9:11211",
        "CLI_SITE_SNAPSHOT": str(snapshot),
        "CLI_SITE_DEADLINE": "0.5",
    }

    done = subprocess.run(
        [sys.executable, "-m", "django", "check", "--settings", "tests.settings.cli_site"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr  # warnings do not fail `check`
    assert f"{down}: (cache_settings.W003)" in done.stderr + done.stdout
    assert json.loads(snapshot.read_text())["sources"][down]["nodes"] == [
        {"host": "10.35.0.1", "port": 11211}
    ]


# A hand-written entry of a refreshing or compat backend that cannot work: (entry, its cause).
BROKEN_ENTRIES = {
    "refresh-not-a-number": (
        {"BACKEND": "cache_settings.backends.PyLibMCCache", "LOCATION": "consul:///memcached",
         "OPTIONS": {"refresh": "soon"}},
        "OPTIONS refresh must be a positive number of seconds",
    ),
    "refresh-past-the-limit": (
        {"BACKEND": "cache_settings.backends.PyLibMCCache", "LOCATION": "consul:///memcached",
         "OPTIONS": {"refresh": 1e12}},
        "at most 31536000 (365 days)",
    ),
    "snapshot-a-directory": (
        {"BACKEND": "cache_settings.backends.PyLibMCCache", "LOCATION": "consul:///memcached",
         "OPTIONS": {"snapshot": "/tmp"}},
        "snapshot='/tmp' is a directory",
    ),
    "url-option-typo": (
        {"BACKEND": "cache_settings.backends.PyMemcacheCache",
         "LOCATION": "consul:///memcached?tags=x"},
        "unknown option 'tags'; did you mean 'tag'?",
    ),
    "compat-two-endpoints": (
        {"BACKEND": "cache_settings.compat.ElastiCache", "LOCATION": "a.cfg:11211,b.cfg:11211"},
        "LOCATION must be exactly one server",
    ),
    "compat-no-service": (
        {"BACKEND": "cache_settings.compat.ConsulMemcachedCache"},
        "needs CONSUL_SERVICE",
    ),
}  # fmt: skip


def manage_py_check_entry(entry: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m django check`` on tests.settings.mistake_site with a hand-written entry."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings.mistake_site",
        "MISTAKE_ENTRY": json.dumps(entry),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", list(BROKEN_ENTRIES))
def test_e004__broken_backend_entry_is_one_check_error_not_a_traceback(name: str) -> None:
    """Django's own checks build every cache first: building must not raise."""
    entry, cause = BROKEN_ENTRIES[name]

    done = manage_py_check_entry(entry)

    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert "_SettingsError" not in output
    assert output.count("(cache_settings.E004)") == 1, output
    assert output.count(cause) == 1, output


def test_e001__unknown_scheme_of_a_refreshing_backend_is_said_once() -> None:
    entry = {"BACKEND": "cache_settings.backends.PyLibMCCache", "LOCATION": "memcache://h1:11211"}

    done = manage_py_check_entry(entry)

    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert "(cache_settings.E001)" in output
    assert "Did you mean 'memcached://'?" in output
    assert output.count("'memcache://'") == 1, output  # no E004 besides


@pytest.mark.parametrize("name", list(BROKEN_ENTRIES))
def test_e004__broken_backend_raises_configuration_error_at_first_use(name: str) -> None:
    entry, cause = BROKEN_ENTRIES[name]
    handler = CacheHandler({"default": entry})
    cache = handler["default"]  # as Django's checks build it: no error yet

    with pytest.raises(ConfigurationError) as first:
        cache.get("key")
    with pytest.raises(ConfigurationError) as second:
        cache.set("key", 1)
    handler.close_all()  # Django closes caches after each request: that must not raise

    assert cause in str(first.value)
    assert str(second.value) == str(first.value)
    # Public classes: no private name in the traceback a user sees.
    assert type(first.value) in (ConfigurationError, SettingsError)
    assert "SettingsError" in compat.__all__


def test_w001__snapshot_that_cannot_be_written_says_so_and_why() -> None:
    url = "listed://10.31.0.7"
    cache_settings.memcached(Listed(url), snapshot="/proc/cache-settings-nodes.json")

    found = about(check_snapshots, url)

    assert [id_ for id_, _ in found] == ["cache_settings.W001"]
    assert "/proc/cache-settings-nodes.json cannot be written" in found[0][1]
    assert "cannot create a file in /proc: No such file or directory" in found[0][1]
    assert "holds no node list" not in found[0][1]


def test_stale_snapshot_and_local_fallback__the_cause_once_per_channel(
    faults: Faults, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One log line where the error is swallowed; one check (W005 then, not W002 too)."""
    url = f"consul://{faults.refused()}/memcached"
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, url, [Node("10.37.0.1")], fetched_at=time.time() - 90062)
    caplog.set_level(logging.DEBUG, logger="cache_settings")

    cache_settings.memcached(
        url, snapshot=snapshot, max_age=86400, on_failure="locmem", deadline=0.5, attempts=1
    )

    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    checked = [m for m in check_snapshots(None) + check_fallbacks(None) if m.obj == url]
    assert [m.id for m in checked] == ["cache_settings.W005"]
    assert len(logged) == 1
    for text in (logged[0], checked[0].msg):
        assert text.count("older than max_age") == 1
        assert re.search(r"is 900\d\d s old, older than max_age=86400 s;", text), text


@pytest.mark.parametrize(
    ("library", "entry"),
    [
        ("pylibmc", {"BACKEND": "cache_settings.compat.ElastiCache", "LOCATION": "cfg.example:1"}),
        ("pylibmc", {"BACKEND": "cache_settings.backends.PyLibMCCache",
                     "LOCATION": "consul:///memcached"}),
        ("pymemcache", {"BACKEND": "cache_settings.backends.PyMemcacheCache",
                        "LOCATION": "consul:///memcached"}),
    ],
)  # fmt: skip
def test_e004__backend_whose_client_is_not_installed_is_one_check_error(
    library: str, entry: dict[str, Any], tmp_path: Path
) -> None:
    """What `pip uninstall` leaves: importing the client fails, as for any missing module."""
    shadow = tmp_path / "uninstalled" / library
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{library}'\", name={library!r})\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "tests.settings.mistake_site",
        "MISTAKE_ENTRY": json.dumps(entry),
    }

    done = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert "(cache_settings.E004)" in output
    assert f'pip install "django-cache-settings[{library}]"' in output


@pytest.mark.parametrize("options", [["ketama"], "ketama=1", 3])
@pytest.mark.parametrize("backend", [REFRESHING_PYLIBMC, PYLIBMC])
def test_checks__options_that_are_not_a_dict_do_not_crash_the_checks(
    options: object, backend: str
) -> None:
    """The checks read OPTIONS['behaviors']: an AttributeError ended `manage.py check`."""
    entry = {"BACKEND": backend, "LOCATION": "memcached://10.0.0.1:11211", "OPTIONS": options}

    with override_settings(CACHES={"default": entry}):
        messages = check_hashing(None) + check_pylibmc_clients(None) + check_backends(None)

    expected = ["cache_settings.E004"] if backend == REFRESHING_PYLIBMC else []
    assert [m.id for m in messages] == expected
    assert all("OPTIONS must be a dict" in m.msg for m in messages)
