"""Lean import: settings-time cost, measured in fresh interpreters.

Every ``manage.py`` command and every worker imports settings. README.md, "Install":
``import cache_settings`` pulls in neither boto3, requests nor a Consul client; each source
imports its client library when it first resolves, and a client library is imported when its
backend is first used. tenacity comes only once a retry is due.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.consul import ConsulAgent

ROOT = Path(__file__).resolve().parent.parent
# Client libraries, and tenacity, which only a remote source's retries need. The import
# cost itself is measured in bench/bench_import.py, not asserted here.
HEAVY = ("boto3", "botocore", "requests", "consul", "pylibmc", "pymemcache", "tenacity")


def run_python(code: str, *, env: dict[str, str] | None = None, path: Path | None = None) -> str:
    """Run *code* in a fresh interpreter with the checkout (and *path*) on ``sys.path``."""
    # The checkout goes first on PYTHONPATH rather than relying on the editable install,
    # so the test imports this tree whatever state the install is in.
    search = [str(ROOT)] + ([str(path)] if path else [])
    environ = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(search)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


LOADED = f"""
import json, sys
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""


def loaded_after(code: str, **kwargs: object) -> list[str]:
    """Return which heavy modules are in sys.modules after running *code*."""
    out = run_python(textwrap.dedent(code) + LOADED, **kwargs)  # type: ignore[arg-type]
    return list(json.loads(out.strip().splitlines()[-1]))


def test_import__cache_settings_imports_no_client_library() -> None:
    assert loaded_after("import cache_settings\n") == []


def test_import__settings_module_imports_only_what_its_entries_check(tmp_path: Path) -> None:
    """A whole Django settings module, loaded by django.setup(), as manage.py would.

    The default entry imports pylibmc to learn what this build can do (capabilities.py);
    the pymemcache entry without options has nothing to check and imports nothing.
    """
    (tmp_path / "leansite_settings.py").write_text(
        textwrap.dedent(
            """
            import cache_settings
            SECRET_KEY = "x"
            USE_TZ = True
            CACHES = {
                "default": cache_settings.memcached("memcached://10.0.0.1:11211,10.0.0.2:11211"),
                "sessions": cache_settings.memcached(
                    "pymemcache://10.0.0.3:11211", key_prefix="s"
                ),
            }
            """
        )
    )
    code = """
    import django
    from django.conf import settings
    django.setup()
    assert len(settings.CACHES) == 2, settings.CACHES
    """
    env = {"DJANGO_SETTINGS_MODULE": "leansite_settings"}

    assert loaded_after(code, env=env, path=tmp_path) == ["pylibmc"]


def test_import__client_library_comes_with_first_cache_use(tmp_path: Path) -> None:
    """The backend imports its library only when the cache is first used.

    (``options`` would import it at settings time, to check their names against it.)
    """
    code = """
    import django
    from django.conf import settings
    import cache_settings
    settings.configure(CACHES={"default": cache_settings.memcached("pymemcache://127.0.0.1:1")})
    django.setup()
    from django.core.cache import cache
    before = "pymemcache" in __import__("sys").modules
    cache._cache  # builds the client without touching the network
    print("before", before)
    """
    assert loaded_after(code) == ["pymemcache"]
    assert "before False" in run_python(textwrap.dedent(code))


def test_import__consul_source_does_not_import_boto3(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    code = f"""
    import cache_settings
    entry = cache_settings.memcached("consul://{consul_agent.address}/memcached")
    assert entry["LOCATION"] == ["10.0.0.1:11211"], entry
    """

    loaded = loaded_after(code)

    assert "boto3" not in loaded
    assert "botocore" not in loaded
    assert "consul" in loaded  # the Consul client did the work, and only it


def test_import__tenacity_only_once_a_retry_is_due(consul_agent: ConsulAgent) -> None:
    """Issue 17: a source that answers its first attempt never imports tenacity."""
    consul_agent.add("memcached", "10.0.0.1", 11211)
    answered = f"""
    import cache_settings
    cache_settings.memcached("consul://{consul_agent.address}/memcached")
    """
    retried = """
    import cache_settings
    try:
        cache_settings.resolve("consul://127.0.0.1:1/memcached", attempts=2, deadline=1)
    except cache_settings.ResolutionError:
        pass
    """

    assert "tenacity" not in loaded_after(answered)
    assert "tenacity" in loaded_after(retried)


# What a settings module with stock Django's fixed list loads, to compare ours with.
STOCK_ENTRY = """
import sys
before = set(sys.modules)
import django.conf
{body}
django.conf.settings.configure(CACHES={{"default": ENTRY}})
from django.core.cache import caches
caches["default"]._cache  # the client, as at the first get, without the network
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def modules_after(body: str) -> set[str]:
    """Return the modules a fresh interpreter loads for ``import django.conf`` + *body*."""
    out = run_python("import json\n" + STOCK_ENTRY.format(body=textwrap.dedent(body)))
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import__static_list_loads_nothing_stock_django_does_not_but_our_own() -> None:
    """Issue 17: every stdlib or Django module a static entry loads, stock Django loads too.

    Besides our own modules, only what parsing a node list needs: ``dataclasses`` for our
    records, ``urllib.parse`` for the URL and ``ipaddress`` for the addresses (Django 4.2
    loads the last two itself, Django 6.1 does not), and ``__future__`` for the
    ``from __future__ import annotations`` every module of ours starts with (an editable
    install's finder loads it at start-up, so only an installed wheel, as tox builds,
    shows it; Django itself never imports it). Before: django.core.checks, json,
    tempfile, difflib, decimal and the snapshot modules came with ``import cache_settings``.
    (The time is measured in bench/bench_import.py.)
    """
    location = "10.0.0.1:11211"
    stock = modules_after(
        f"ENTRY = {{'BACKEND': 'django.core.cache.backends.memcached.PyMemcacheCache', "
        f"'LOCATION': [{location!r}]}}"
    )
    ours = modules_after(
        f"import cache_settings\n"
        f"ENTRY = cache_settings.memcached('memcached://{location}', backend='pymemcache')"
    )

    extra = {name for name in ours - stock if name.partition(".")[0] != "cache_settings"}
    needed = {"__future__", "dataclasses", "urllib", "urllib.parse", "ipaddress"}
    assert extra <= needed, sorted(extra)
    ours_loaded = {name for name in ours if name.startswith("cache_settings")}
    assert not ours_loaded & {"cache_settings.snapshot", "cache_settings.checks"}


def test_import__configuration_endpoint_needs_no_http_client(
    config_endpoint: ConfigEndpointServer,
) -> None:
    """Issue 17: http.client, urllib.request and email are the HTTP sources' alone."""
    config_endpoint.set_nodes([("mc1.example", "10.0.0.1", 11211)])
    code = f"""
    import sys
    import cache_settings
    entry = cache_settings.memcached("elasticache://{config_endpoint.address}")
    assert entry["LOCATION"] == ["10.0.0.1:11211"], entry
    http = ("http.client", "urllib.request", "email")
    print(json.dumps(sorted(name for name in http if name in sys.modules)))
    """

    out = run_python("import json\n" + textwrap.dedent(code))

    assert json.loads(out.strip().splitlines()[-1]) == []
