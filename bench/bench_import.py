"""Settings-time cost of a memcached() entry against stock Django with a fixed list.

Run: ``.venv/bin/python bench/bench_import.py [--rounds 9] [--repeats 3] [--importtime]``.

Every manage.py command, worker and test run imports settings, so what ``memcached()``
costs there matters. Each case runs in a fresh interpreter (``bench/_settings_time.py``):
the clock starts at the settings statements (after ``import django.conf``, which every
settings module pays anyway) and stops when the first ``get`` through Django's cache has
returned: imports, resolving the nodes, building the client, connecting. Sources are the
stand-ins of ``tests/servers`` on loopback with three real memcached daemons. Cases run in
interleaved rounds; the figures are medians of per-round ratios to stock Django's backend
for the same client with the same three nodes written out, and medians of the per-round
differences in milliseconds. Issue 17's targets: a static list <= 1.1x stock; a
configuration endpoint <= 5 ms over stock. (Consul against django-memcached-consul is in
``bench_peers.py``, which installs it.)

Each run also times the floor of the static and endpoint cases (``bench/_floor.py``):
stock Django's entry after importing as many plain modules, shaped like the ones of ours
the case imports, as the case imports. It shows what the targets leave room for.

``--importtime`` breaks each of our cases down with ``python -X importtime``: the modules
its statements import, slowest first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _floor
from bench import _settings_time as st
from bench._rounds import paired, ratio_cell
from bench._standins import ConsulServer, MemoConsulState, config_endpoint, daemons, register

STATIC_LIMIT = 1.1  # x stock
ENDPOINT_LIMIT = 0.005  # seconds over stock


# The floor of the static and endpoint cases (bench/_floor.py), each against its baseline.
FLOOR_PAIRS = [
    ("floor of ours static list, pymemcache", "stock PyMemcacheCache, fixed list"),
    ("floor of ours static list, pylibmc", "stock PyLibMCCache, fixed list"),
    ("floor of ours elasticache://, pymemcache", "stock PyMemcacheCache, fixed list"),
]


def _floor_cases(cases: dict[str, st.Case], parent: Path) -> dict[str, st.Case]:
    """Return, for each subject of FLOOR_PAIRS, its baseline with a package of plain modules.

    The packages are written under *parent*.
    """
    floors = {}
    for subject, baseline in FLOOR_PAIRS:
        ours = cases[subject.removeprefix("floor of ")]
        modules = _floor.imported_modules(ours)
        where = _floor.build(modules, ours.python, parent)
        floors[subject] = _floor.floor_case(cases[baseline], where)
        print(f"{subject}: {len(modules)} plain modules shaped like ours")
    return floors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=9, help="interpreters per case and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--importtime", action="store_true", help="break each case down")
    args = parser.parse_args(argv)
    consul = ConsulServer(MemoConsulState()).start()
    endpoint = config_endpoint()
    ok = True
    try:
        with daemons(3) as servers, tempfile.TemporaryDirectory() as floor_dir:
            nodes = [(f"mc{s.port}.bench.test", s.host, s.port) for s in servers]
            endpoint.set_nodes(nodes, version=1)
            register(consul.state, "bench", nodes)
            cases = st.our_cases(
                Path(sys.executable),
                [server.location for server in servers],
                endpoint.address,
                consul.address,
            )
            cases.update(_floor_cases(cases, Path(floor_dir)))
            if args.importtime:
                for name, case in cases.items():
                    if name.startswith("ours"):
                        print(f"\n-X importtime, {name}: modules its statements import")
                        for cumulative, own, module in st.importtime(case):
                            print(f"  {cumulative:7.1f} ms cumulative {own:6.1f} ms self  {module}")
                return 0
            print(
                f"settings call to first get, fresh interpreters, Python {sys.version.split()[0]} "
                f"(median of {args.rounds} interleaved rounds per repeat)"
            )
            rows: dict[str, list[str]] = {}
            all_times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.repeats):
                times = st.rounds(cases, args.rounds)
                for name, values in times.items():
                    all_times[name].extend(values)
                for subject, baseline in [*st.OUR_PAIRS, *FLOOR_PAIRS]:
                    ratio = paired(times, subject, baseline)
                    added = statistics.median(
                        a - b for a, b in zip(times[subject], times[baseline], strict=True)
                    )
                    if subject.startswith("floor"):
                        within = True  # the floor is reported, not judged
                    elif "static" in subject:
                        within = ratio <= STATIC_LIMIT
                    elif "elasticache" in subject:
                        within = added <= ENDPOINT_LIMIT
                    else:
                        within = True  # judged against django-memcached-consul (bench_peers)
                    ok = ok and within
                    cell = f"{ratio_cell(ratio)} {added * 1000:+.1f} ms{'' if within else ' OVER'}"
                    rows.setdefault(f"{subject}  /  {baseline}", []).append(cell)
            width = max(len(name) for name in rows) + 2
            print(f"  {'subject / baseline':<{width}}" + "".join(
                f"{f'repeat {n + 1}':>21}" for n in range(args.repeats)))  # fmt: skip
            for name, cells in rows.items():
                print(f"  {name:<{width}}" + "".join(f"{cell:>21}" for cell in cells))
            print("  medians over all repeats, for reference (absolute times move with the load):")
            for name, values in all_times.items():
                print(f"    {name:<36} {statistics.median(values) * 1000:7.1f} ms")
            print(
                f"targets (static <= {STATIC_LIMIT}x stock, endpoint <= "
                f"+{ENDPOINT_LIMIT * 1000:.0f} ms) met in every repeat: {ok}"
            )
    finally:
        endpoint.close()
        consul.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
