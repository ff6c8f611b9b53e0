"""What parsing and filtering a large Consul answer adds to fetching and decoding it.

Run: ``.venv/bin/python bench/bench_consul.py [--instances 5000] [--rounds 30] [--repeats 3]``.

It registers *instances* passing instances of one service in the Consul stand-in
(``tests/servers/consul.py``, with the linear-time catalog of ``bench/_standins.py``) and
times, in interleaved rounds (``bench/_rounds.py``), two ways to get the same answer:

- ``fetch + json.loads``: one ``GET /v1/health/service/<service>?passing=1`` with
  ``http.client`` and ``json.loads`` of the body, nothing else (the baseline);
- ``Consul.resolve``: the whole source, ``Consul(service, agent=...).resolve(timeout)``:
  the consul client's request over our bounded transport, the reply checks, and
  ``parse_health_service`` (the shape checks, tags, aggregated status, addresses, sorting);
- ``parse_health_service``, alone on the decoded entries, as a ratio to the baseline too.

The stand-in runs in a process of its own (as an agent would), so that its threads do not
compete with the timed code for this interpreter's lock; it encodes the answer once and
then serves the same text, as a real agent answers quickly, so that the baseline is mostly
the transfer and the decoding. Issue 17's
target: the source costs at most 1.10x the baseline, in every repeat. ``--profile`` prints
where the source's time goes instead (cProfile, sorted by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import http.client
import json
import multiprocessing
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._rounds import Repeats, interleaved, ratio_cell, summary
from bench._standins import ConsulServer, MemoConsulState, fake_nodes, register
from cache_settings import attempt
from cache_settings.sources.consul import Consul, parse_health_service

LIMIT = 1.10  # issue 17: parsing and filtering add at most 10 % to fetch + json.loads
SERVICE = "bench"


def fetch_and_decode(address: str, service: str) -> list[object]:
    """Return the decoded ``/v1/health/service`` answer, fetched with ``http.client``."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", f"/v1/health/service/{service}?passing=1")
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"the stand-in answered {reply.status}")
    finally:
        conn.close()
    entries = json.loads(body)
    assert isinstance(entries, list)
    return entries


def serve(conn: Connection, instances: int) -> None:
    """Run the stand-in with *instances* instances of SERVICE until *conn* says stop."""
    server = ConsulServer(MemoConsulState()).start()
    try:
        register(server.state, SERVICE, fake_nodes(instances))
        conn.send(server.address)
        conn.recv()
    finally:
        server.stop()


@contextmanager
def standin(instances: int) -> Iterator[str]:
    """Yield the address of a Consul stand-in running in a child process."""
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=serve, args=(theirs, instances), daemon=True
    )
    child.start()
    try:
        started = time.monotonic()
        while not ours.poll(0.1):
            if not child.is_alive() or time.monotonic() - started > 120:
                raise RuntimeError("the Consul stand-in did not start")
        address: str = ours.recv()
        yield address
    finally:
        ours.send("stop")
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


def timed(call: Callable[[], object], count: int) -> Callable[[], float]:
    """Return a batch: *count* calls of *call*, its cost the seconds per call.

    A full collection first, untimed: each batch then pays for the collections its own
    allocations set off, and none of those the previous subject's garbage was due.
    """

    def batch() -> float:
        gc.collect()
        started = time.perf_counter()
        for _ in range(count):
            call()
        return (time.perf_counter() - started) / count

    return batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=30, help="rounds per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="calls per subject per round")
    parser.add_argument("--profile", action="store_true", help="profile the source instead")
    args = parser.parse_args(argv)
    with standin(args.instances) as address:
        source = Consul(SERVICE, agent=address)
        entries = fetch_and_decode(address, SERVICE)
        nodes = source.resolve(timeout=30)
        if len(entries) != args.instances or len(nodes) != args.instances:
            raise RuntimeError(f"{len(entries)} entries, {len(nodes)} nodes")
        if args.profile:
            return profile(source, args.rounds)
        subjects = {
            "fetch + json.loads": timed(lambda: fetch_and_decode(address, SERVICE), args.batch),
            "Consul.resolve": timed(lambda: source.resolve(timeout=30), args.batch),
            "parse_health_service": timed(
                lambda: parse_health_service(entries, source=source.url), args.batch
            ),
        }  # fmt: skip
        results: Repeats = []
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            results.append(summary(interleaved(subjects, "fetch + json.loads", args.rounds,
                                               times=times)))  # fmt: skip
    base = sorted(times["fetch + json.loads"])[len(times["fetch + json.loads"]) // 2]
    print(f"{args.instances} Consul instances, ratio to fetch + json.loads (median of "
          f"{args.rounds} interleaved rounds of {args.batch}; baseline median "
          f"{base * 1000:.1f} ms)")  # fmt: skip
    for name in subjects:
        cells = "  ".join(f"{ratio_cell(result[name]):>7}" for result in results)
        print(f"  {name:<24} {cells}")
    ok = all(result["Consul.resolve"] <= LIMIT for result in results)
    print(f"Consul.resolve within {LIMIT:.2f}x of fetch + json.loads in every repeat: {ok}")
    return 0 if ok else 1


def profile(source: Consul, rounds: int) -> int:
    """Profile *rounds* resolutions, run in this thread (cProfile sees only its own thread)."""
    profiler = cProfile.Profile()
    for _ in range(rounds):
        # Made current here, the attempt runs the source in this thread, not in a worker.
        token = attempt._current.set(attempt.Attempt(source.url, 30))
        try:
            profiler.enable()
            source.resolve(timeout=30)
            profiler.disable()
        finally:
            attempt._current.reset(token)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
