"""Settings-time cost in fresh interpreters: from the settings call to the first get.

Each case is a few statements that build ``CACHES["default"]`` (``ENTRY``), run in a new
interpreter of its own virtualenv after ``import django.conf`` (which every settings
module pays anyway, and which is left out). The clock starts before the case's first
statement (so it includes importing cache_settings, or a peer's backend at first use) and
stops when the first ``get`` through Django's cache has returned; the value is then checked
with a set and a get, outside the clock, so a case that silently failed is reported.
Cases run in interleaved rounds, one interpreter of each per round.

Our package is byte-compiled for each interpreter first, as pip does when it installs a
wheel (and as every installed peer and Django itself are): otherwise, with
``PYTHONDONTWRITEBYTECODE`` set (as on these machines), every fresh interpreter would
compile this checkout's sources again and the figures would measure the compiler.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench._rounds import order

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = """\
import django.conf
import time
_started = time.perf_counter()
try:
{body}
    django.conf.settings.configure(CACHES={{"default": ENTRY}})
    from django.core.cache import caches
    caches["default"].get("bench-probe")
finally:
    print(time.perf_counter() - _started, flush=True)
cache = caches["default"]
cache.set("bench-probe", 1)
assert cache.get("bench-probe") == 1, "the first get did not reach memcached"
"""


@dataclass(frozen=True)
class Case:
    """One way to get a working cache: its interpreter and statements that set ENTRY."""

    python: Path
    statements: str

    def code(self) -> str:
        body = "\n".join("    " + line for line in self.statements.strip().splitlines())
        return TEMPLATE.format(body=body)


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_"))}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's cache_settings, whatever is installed
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


@functools.cache
def compiled(python: Path) -> None:
    """Byte-compile this checkout's cache_settings for *python*, once per benchmark run."""
    subprocess.run(
        [str(python), "-m", "compileall", "-q", str(ROOT / "cache_settings")],
        check=True,
        env=environ(),
        cwd=ROOT,
    )


def run(case: Case, timeout: float = 60.0) -> tuple[float | None, str]:
    """Return (seconds to the first get, "" or the failure) for one fresh interpreter.

    Seconds is None when the interpreter was still waiting after *timeout* seconds.
    """
    compiled(case.python)
    try:
        done = subprocess.run(
            [str(case.python), "-c", case.code()],
            capture_output=True,
            text=True,
            env=environ(),
            cwd=ROOT,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, f"still waiting after {timeout:g} s (killed)"
    lines = done.stdout.strip().splitlines()
    seconds = float(lines[-1]) if lines else None
    failure = done.stderr.strip().splitlines()[-1] if done.returncode else ""
    return seconds, failure


def rounds(cases: Mapping[str, Case], count: int) -> dict[str, list[float]]:
    """Run *count* rounds, one interpreter per case each; return every case's times."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for n in range(count):
        for name in order(list(cases), n):
            seconds, failure = run(cases[name])
            if failure or seconds is None:
                raise RuntimeError(f"{name}: {failure}")
            times[name].append(seconds)
    return times


def importtime(case: Case, top: int = 12) -> list[tuple[float, float, str]]:
    """Return the *top* modules (cumulative ms, self ms, name) imported by *case*'s statements."""
    compiled(case.python)
    done = subprocess.run(
        [str(case.python), "-X", "importtime", "-c", case.code()],
        capture_output=True,
        text=True,
        env=environ(),
        cwd=ROOT,
        check=True,
    )
    rows: list[tuple[float, float, str]] = []
    seen_django_conf = False
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if not seen_django_conf:
            # The preamble, ``import django.conf``, is reported last of its tree.
            seen_django_conf = name == "django.conf" or name.endswith(" django.conf")
            continue
        rows.append((int(cumulative) / 1000, int(own) / 1000, name))
    return sorted(rows, reverse=True)[:top]


STOCK_BACKENDS = {
    "pylibmc": "django.core.cache.backends.memcached.PyLibMCCache",
    "pymemcache": "django.core.cache.backends.memcached.PyMemcacheCache",
    "memcache": "django.core.cache.backends.memcached.MemcachedCache",
}


def stock_case(python: Path, client: str, locations: list[str]) -> Case:
    """Stock Django's backend for *client* with a fixed list of *locations*."""
    backend = STOCK_BACKENDS[client]
    return Case(python, f"ENTRY = {{'BACKEND': {backend!r}, 'LOCATION': {locations!r}}}")


def our_cases(python: Path, locations: list[str], endpoint: str, consul: str) -> dict[str, Case]:
    """Stock Django with a fixed list, and ours from a static list, an endpoint and Consul."""

    def ours(url: str, backend: str) -> Case:
        call = f"cache_settings.memcached({url!r}, backend={backend!r})"
        return Case(python, f"import cache_settings\nENTRY = {call}")

    static = "memcached://" + ",".join(locations)
    return {
        "stock PyMemcacheCache, fixed list": stock_case(python, "pymemcache", locations),
        "stock PyLibMCCache, fixed list": stock_case(python, "pylibmc", locations),
        "ours static list, pymemcache": ours(static, "pymemcache"),
        "ours static list, pylibmc": ours(static, "pylibmc"),
        "ours elasticache://, pymemcache": ours(f"elasticache://{endpoint}", "pymemcache"),
        "ours elasticache://, pylibmc": ours(f"elasticache://{endpoint}", "pylibmc"),
        "ours consul://, pylibmc": ours(f"consul://{consul}/bench", "pylibmc"),
    }


# (subject, baseline) pairs among our_cases.
OUR_PAIRS = [
    ("ours static list, pymemcache", "stock PyMemcacheCache, fixed list"),
    ("ours static list, pylibmc", "stock PyLibMCCache, fixed list"),
    ("ours elasticache://, pymemcache", "stock PyMemcacheCache, fixed list"),
    ("ours elasticache://, pylibmc", "stock PyLibMCCache, fixed list"),
    ("ours consul://, pylibmc", "stock PyLibMCCache, fixed list"),
]
