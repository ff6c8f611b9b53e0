"""Options are checked against the client at settings time; missing clients name their extra.

Issue 15: a typo in ``options`` fails when settings are read, naming the closest match
(pylibmc: its Client arguments and behavior names; pymemcache: HashClient's arguments),
and a missing client library names ``pip install "django-cache-settings[...]"`` instead of
"No module named 'pylibmc'". The pylibmc clients here are real, built without connecting.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pylibmc
import pytest

from cache_settings import ConfigurationError, memcached
from cache_settings.clients import BACKENDS
from tests.helpers import django_cache
from tests.servers.memcached import MemcachedServer

ROOT = Path(__file__).resolve().parent.parent
URL = "memcached://127.0.0.1:11211"


# --- options are checked against the client ---------------------------------------------


@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        (None, {"behaviours": {"ketama": True}},
         "'behaviours' is not a pylibmc option; did you mean 'behaviors'?"),
        ("pylibmc", {"behaviors": {"ketamma": True}},
         "'ketamma' is not a pylibmc behavior; did you mean 'ketama'?"),
        ("pylibmc", {"binery": True}, "did you mean 'binary'?"),
        ("pymemcache", {"conect_timeout": 1.0},
         "'conect_timeout' is not a pymemcache option; did you mean 'connect_timeout'?"),
        ("pymemcache", {"behaviors": {}},
         r"'behaviors' is not a pymemcache option \(it takes "),
        (None, {"behaviors": None}, r"options\['behaviors'\] must be a dict, not NoneType"),
        (None, {"behaviors": {"ketama": "yes"}},
         "pylibmc refuses options.'behaviors'.: behavior ketama must be int, not str"),
    ],
)  # fmt: skip
def test_options__mistake_is_a_configuration_error_naming_the_fix(
    backend: str | None, options: dict[str, Any], message: str
) -> None:
    url = "memcached://127.0.0.1:11211"
    with pytest.raises(ConfigurationError, match=message) as raised:
        memcached(url, backend=backend, options=options)  # type: ignore[arg-type]

    assert str(raised.value).startswith("memcached://127.0.0.1:11211: ")
    assert str(raised.value).count(";") <= 1  # one cause, said once


WAIT = r"must be seconds, 0 or more"
COUNT = r"must be an integer, {} or more"


@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        ("pymemcache", {"connect_timeout": math.nan},
         r"options\['connect_timeout'\]=nan " + WAIT + r" \(or None for no limit\)"),
        ("pymemcache", {"timeout": -1}, r"options\['timeout'\]=-1 " + WAIT),
        ("pymemcache", {"timeout": "0.5"}, r"options\['timeout'\]='0.5' " + WAIT),
        ("pymemcache", {"dead_timeout": math.inf}, r"options\['dead_timeout'\]=inf " + WAIT + "$"),
        ("pymemcache", {"dead_timeout": None}, r"options\['dead_timeout'\]=None " + WAIT),
        ("pymemcache", {"retry_timeout": True}, r"options\['retry_timeout'\]=True " + WAIT),
        ("pymemcache", {"retry_attempts": -1}, r"\['retry_attempts'\]=-1 " + COUNT.format(0)),
        ("pymemcache", {"retry_attempts": 1.5}, COUNT.format(0)),
        ("pymemcache", {"max_pool_size": 0}, r"\['max_pool_size'\]=0 " + COUNT.format(1)),
        ("pylibmc", {"behaviors": {"connect_timeout": -5}},
         "behavior 'connect_timeout'=-5 must be 0 or more: libmemcached's behaviors are unsigned"),
        ("pylibmc", {"behaviors": {"dead_timeout": -1}}, "must be 0 or more"),
        (None, {"behaviors": {"_poll_timeout": -500}}, "'_poll_timeout'=-500 must be 0 or more"),
        # 0 is no wait: every request fails (BlockingIOError; libmemcached's TIMEOUT)
        ("pymemcache", {"timeout": 0}, r"options\['timeout'\]=0 must be more than 0 seconds"),
        ("pymemcache", {"connect_timeout": 0.0}, r"\['connect_timeout'\]=0 must be more than"),
        ("pylibmc", {"behaviors": {"_poll_timeout": 0}}, "'_poll_timeout'=0 must be more than 0"),
    ],
)  # fmt: skip
def test_options__a_wait_or_count_the_client_would_misread_is_refused(
    backend: str | None, options: dict[str, Any], message: str
) -> None:
    """Not accepted here to fail on the first request (pymemcache) or to wait for 2**64 ms."""
    with pytest.raises(ConfigurationError, match=message):
        memcached(URL, backend=backend, options=options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        ("pymemcache", {"timeout": None, "connect_timeout": None}),
        ("pymemcache", {"timeout": 0.5, "dead_timeout": 0, "retry_attempts": 2,
                        "max_pool_size": None}),
        ("pylibmc", {"behaviors": {"connect_timeout": 0, "ketama": True, "hash": "md5"}}),
    ],
)  # fmt: skip
def test_options__waits_and_counts_in_range_are_taken(
    backend: str, options: dict[str, Any]
) -> None:
    entry = memcached(URL, backend=backend, options=options)  # type: ignore[arg-type]

    for name, value in options.items():
        if name == "behaviors":
            assert value.items() <= entry["OPTIONS"]["behaviors"].items()
        else:
            assert entry["OPTIONS"][name] == value


def test_options__pymemcache_arguments_choose_pymemcache() -> None:
    """No backend chosen and options only pymemcache takes: the entry is a pymemcache one."""
    entry = memcached("memcached://127.0.0.1:11211", options={"timeout": 2.0})

    assert entry["BACKEND"] == BACKENDS["pymemcache"]
    assert entry["OPTIONS"]["timeout"] == 2.0
    assert entry["OPTIONS"]["connect_timeout"] == 0.5  # pymemcache's defaults, not pylibmc's


def test_options__valid_ones_reach_the_client_unchanged(memcached_node: MemcachedServer) -> None:
    options = {"behaviors": {"_retry_timeout": 3, "hash": "md5"}, "binary": False}
    entry = dict(memcached(f"memcached://{memcached_node.location}", options=options))

    with django_cache(entry) as cache:
        cache.set("k", 1)
        behaviors = cache._cache.behaviors  # type: ignore[attr-defined]

    assert (behaviors["retry_timeout"], behaviors["hash"]) == (3, "md5")


# --- behaviors read back from the real client -------------------------------------------


def test_behaviors__remove_failed_sets_failure_limit_on_every_libmemcached(
    memcached_node: MemcachedServer,
) -> None:
    """pylibmc documents remove_failed=N as N failures; libmemcached 1.1 forgot that."""
    options = {"behaviors": {"remove_failed": 3}}
    entry = dict(memcached(f"memcached://{memcached_node.location}", options=options))

    with django_cache(entry) as cache:
        cache.set("k", 1)
        behaviors = cache._cache.behaviors  # type: ignore[attr-defined]

    assert (behaviors["auto_eject"], behaviors["failure_limit"]) == (1, 3)


@pytest.mark.parametrize(
    ("url", "behaviors", "dropped"),
    [
        # libmemcached keeps dead_timeout in 32 bits.
        ("memcached://127.0.0.1:11211", {"dead_timeout": 2**32 + 5},
         "dead_timeout=4294967301 (reads 5)"),
        # The later of two contradicting behaviors wins in pylibmc's table order.
        ("pylibmc://127.0.0.1:11211", {"ketama": True, "distribution": "modula"},
         "ketama=True (reads 0)"),
    ],
)  # fmt: skip
def test_behaviors__not_applied_is_a_configuration_error(
    url: str, behaviors: dict[str, Any], dropped: str
) -> None:
    with pytest.raises(ConfigurationError, match="did not apply the behaviors") as raised:
        memcached(url, options={"behaviors": behaviors})

    assert dropped in str(raised.value)
    assert f"libmemcached {pylibmc.libmemcached_version}" in str(raised.value)


# --- missing client libraries -----------------------------------------------------------


def run_without(
    tmp_path: Path, missing: tuple[str, ...], code: str
) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter whose site-packages lacks the *missing* libraries.

    As after ``pip install django-cache-settings`` without the extras: every other
    installed distribution is there (linked), the checkout first on ``sys.path``.
    """
    site = Path(pytest.__file__).resolve().parent.parent
    lib = tmp_path / "site-packages"
    lib.mkdir()
    for entry in site.iterdir():
        if not entry.name.lstrip("_").lower().startswith(missing):
            (lib / entry.name).symlink_to(entry)
    return subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{lib}", "PATH": "/usr/bin:/bin"},
        check=False,
    )


CHECK_SITE = """
import django
from django.conf import settings
from django.core.management import execute_from_command_line
import cache_settings
settings.configure(CACHES={{"default": cache_settings.memcached(
    "memcached://127.0.0.1:11211", backend={backend!r})}})
execute_from_command_line(["manage.py", "check"])
print(settings.CACHES["default"]["BACKEND"])
"""
INSTALL = 'pip install "django-cache-settings[{}]"'


@pytest.mark.parametrize(
    ("missing", "backend", "expected"),
    [
        (("pylibmc",), None, BACKENDS["pymemcache"]),
        (("pylibmc",), "pylibmc", "pylibmc is not installed: " + INSTALL.format("pylibmc")),
        (("pymemcache",), "pymemcache", "pymemcache is not installed: "
         + INSTALL.format("pymemcache")),
        (("pylibmc", "pymemcache"), None, "no memcached client is installed: "
         + INSTALL.format("pylibmc")),
    ],
)  # fmt: skip
def test_missing_client__django_check_names_the_extra(
    tmp_path: Path, missing: tuple[str, ...], backend: str | None, expected: str
) -> None:
    """Issue 15: no "No module named 'pylibmc'"; pymemcache is used when it is the one there."""
    done = run_without(tmp_path, missing, CHECK_SITE.format(backend=backend))

    assert "No module named" not in done.stderr
    if expected in BACKENDS.values():
        assert done.returncode == 0, done.stderr
        assert "System check identified no issues" in done.stdout
        assert done.stdout.strip().endswith(expected)
    else:
        assert done.returncode != 0
        assert f"ConfigurationError: memcached://127.0.0.1:11211: {expected}" in done.stderr
