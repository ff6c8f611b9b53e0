"""Settings-time import cost of cache_settings against ``import django.conf``.

Run: ``.venv/bin/python bench/bench_import.py [--runs 9] [--importtime CASE]``.

Every manage.py command and every worker imports settings, so what a settings module pays
for ``cache_settings`` matters. Each case runs in a fresh interpreter and times its own
statements with ``time.perf_counter()`` (interpreter start-up is the same for all and left
out). Cases run interleaved, one of each per round, so they share the machine's load of
the moment; the table shows medians:

- ``cold``: the statements in a fresh interpreter (includes Django where the case imports it);
- ``+django``: the same statements after ``import django.conf``, i.e. what a settings
  module adds on top of Django, which every settings import pays anyway;
- ``ratio``: ``cold`` divided by ``import django.conf`` alone.

The consul case is what a Consul source adds when it first resolves (its client library);
the boto3 case is what an ``elasticache-api://`` source adds. ``--importtime CASE`` prints
the slowest modules of one case from ``python -X importtime``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES: dict[str, str] = {
    "django.conf": "import django.conf",
    "cache_settings": "import cache_settings",
    "static memcached()": (
        "import cache_settings; "
        "cache_settings.memcached('memcached://10.0.0.1:11211,10.0.0.2:11211')"
    ),
    "consul source": (
        "import cache_settings; cache_settings.parse_source('consul:///memcached'); "
        "import consul, requests"
    ),
    "boto3": "import boto3; boto3.session.Session",
}
DJANGO = "import django.conf"


def _environ() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_"))}
    # Import this checkout first, whatever state an editable install is in.
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return environ


def time_once(statements: str, preamble: str = "") -> float:
    """Return the seconds *statements* take in a fresh interpreter after *preamble*."""
    code = (
        f"{preamble}\nimport time\n_started = time.perf_counter()\n{statements}\n"
        "print(time.perf_counter() - _started)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=_environ(),
        cwd=ROOT,
    )
    return float(done.stdout.strip().splitlines()[-1])


def measure(runs: int) -> dict[str, tuple[float, float]]:
    """Return ``{case: (median cold seconds, median seconds after django.conf)}``."""
    cold: dict[str, list[float]] = {name: [] for name in CASES}
    warm: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, statements in CASES.items():
            cold[name].append(time_once(statements))
            warm[name].append(time_once(statements, DJANGO))
    return {name: (statistics.median(cold[name]), statistics.median(warm[name])) for name in CASES}


# Issue 8: import cache_settings + memcached() with a static source, on top of django.conf.
BUDGET = 0.025


def importtime(case: str, top: int = 15) -> None:
    """Print the *top* modules of *case* by cumulative import time (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"{DJANGO}\n{CASES[case]}"],
        capture_output=True,
        text=True,
        check=True,
        env=_environ(),
        cwd=ROOT,
    )
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        # "import time:  self_us | cumulative_us | <indent>module"
        self_us, cumulative_us, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        rows.append((int(cumulative_us), int(self_us), name))
    print(f"-X importtime, {case!r} after {DJANGO!r} (the whole process):")
    for cumulative, own, module in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative / 1000:8.1f} ms cumulative {own / 1000:7.1f} ms self  {module}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="interpreters per case (median)")
    parser.add_argument("--importtime", choices=sorted(CASES), help="break one case down")
    args = parser.parse_args(argv)
    if args.importtime:
        importtime(args.importtime)
        return 0
    results = measure(args.runs)
    django_cold = results["django.conf"][0]
    print(f"median of {args.runs} fresh interpreters, {sys.version.split()[0]}")
    print(f"{'case':<20} {'cold ms':>9} {'+django ms':>11} {'ratio':>7}")
    for name, (cold, warm) in results.items():
        on_top = "-" if name == "django.conf" else f"{warm * 1000:.1f}"
        print(f"{name:<20} {cold * 1000:>9.1f} {on_top:>11} {cold / django_cold:>7.2f}")
    static = results["static memcached()"][1]
    verdict = "within" if static <= BUDGET else "OVER"
    print(
        f"import cache_settings + static memcached() after django.conf: {static * 1000:.1f} ms, "
        f"{verdict} the {BUDGET * 1000:.0f} ms budget (issue 8)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
