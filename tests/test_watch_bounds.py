"""Watchers ask through the one bounded attempt: a reply that never ends, max_age, back-off."""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cache_settings import Node, memcached, parse_source
from cache_settings.policy import Policy
from cache_settings.snapshot import write_snapshot
from cache_settings.watch import BLOCKING_TIMEOUT, Watcher
from tests.helpers import django_cache, wait_until
from tests.servers.consul import ConsulAgent
from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedServer

TRICKLE_PAUSE = 0.05  # seconds between the bytes of a reply that never ends


class TricklingFront(ThreadingHTTPServer):
    """An HTTP front for a Consul agent whose first blocking query never completes.

    Every request is passed to the agent, except the first one with ``index=``: that one
    gets its status line and headers, then one byte every 50 ms, for as long as the front
    runs. Each byte arrives well within any read timeout, so only a bound on the whole
    request can end it.
    """

    daemon_threads = True

    def __init__(self, agent: str) -> None:
        super().__init__(("127.0.0.1", 0), _FrontHandler)
        self.agent = agent
        self.address = f"127.0.0.1:{self.server_address[1]}"
        self.trickling = threading.Event()
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> TricklingFront:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        self.shutdown()
        self.server_close()
        self._thread.join()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client cut off mid-reply is what these tests do


class _FrontHandler(BaseHTTPRequestHandler):
    server: TricklingFront

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if "index" in query and not self.server.trickling.is_set():
            self.server.trickling.set()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Consul-Index", query["index"][0])
            self.send_header("Content-Length", str(10**8))
            self.end_headers()
            while not self.server.stopped.wait(TRICKLE_PAUSE):
                self.wfile.write(b" ")
                self.wfile.flush()
            return
        host, _, port = self.server.agent.rpartition(":")
        upstream = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            upstream.request("GET", self.path, headers=dict(self.headers))
            reply = upstream.getresponse()
            body = reply.read()
        finally:
            upstream.close()
        self.send_response(reply.status)
        for name in ("Content-Type", "X-Consul-Index"):
            if reply.getheader(name):
                self.send_header(name, reply.getheader(name, ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_watcher__blocking_query_that_never_completes_is_cut_off_at_its_bound(
    consul_agent: ConsulAgent, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    """Issue 12, judged 3: the next query after the bound answers with the change."""
    if "://" in consul_agent.address:
        pytest.skip("the front speaks plain HTTP to the agent")
    first, second, _ = fresh_memcached_nodes
    service = f"mc-{uuid.uuid4().hex[:8]}"
    consul_agent.add(service, first.host, first.port, node="n1")
    bound = 2.0
    with TricklingFront(consul_agent.address) as front:
        source = parse_source(f"consul://{front.address}/{service}")
        watcher = Watcher(
            source,
            Policy(refresh=60, deadline=2.0),
            nodes=[Node(first.host, first.port)],
            blocking_timeout=bound,
        )
        watcher.start()
        try:
            assert front.trickling.wait(3.0)  # the first blocking query hangs on its reply
            consul_agent.add(service, second.host, second.port, node="n2")
            changed = time.monotonic()

            assert watcher.wait_for_generation(1, bound + 3.0)
            elapsed = time.monotonic() - changed
            assert [node.port for node in watcher.nodes] == sorted([first.port, second.port])
            assert elapsed < bound + 1.5, elapsed
        finally:
            watcher.stop(timeout=2.0)


def test_watcher__defaults_bound_a_change_within_35_seconds() -> None:
    """docs/refresh.md and watch.py: a blocking query is cut off at 30 s, then one short back-off.

    The query after it answers at once (no index), so 30 s + 0.05 s (attempt.GRACE) +
    at most 0.2 s, plus that answer's round trip, stays within the documented 35 s.
    """
    watcher = Watcher(parse_source("consul://127.0.0.1:1/mc"), Policy(refresh=60))

    assert watcher.blocking_timeout == BLOCKING_TIMEOUT == 30.0
    assert max(watcher._backoff(1) for _ in range(50)) <= 0.2  # type: ignore[attr-defined]


def test_watcher__first_resolution_keeps_max_age(faults: Faults, tmp_path: Path) -> None:
    """max_age holds on the refresh path too: a stale snapshot never primes a watcher."""
    source = parse_source(f"elasticache://{faults.refused()}")
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, source.url, [Node("127.0.0.1", 11299)], fetched_at=time.time() - 600)
    policy = Policy(refresh=60, deadline=0.5, max_age=60, snapshot=str(snapshot))
    watcher = Watcher(source, policy)

    watcher.start()
    try:
        assert watcher.nodes == ()
        assert watcher.error is not None
        assert "older than max_age=60 s" in str(watcher.error)
    finally:
        watcher.stop(timeout=2.0)


def test_watcher__backs_off_as_resolve_retries_capped_by_refresh(faults: Faults) -> None:
    watcher = Watcher(parse_source(f"consul://{faults.refused()}/mc"), Policy(refresh=0.5))

    waits = [watcher._backoff(n) for n in range(1, 8)]  # type: ignore[attr-defined]

    assert 0.1 <= waits[0] <= 0.2
    assert waits[1] > waits[0]
    assert max(waits) <= 0.5 + 0.1


def test_watcher__static_list_has_no_thread() -> None:
    watcher = Watcher(parse_source("memcached://10.0.0.1"), Policy(refresh=1))

    watcher.start()

    assert [node.location for node in watcher.nodes] == ["10.0.0.1:11211"]
    assert not watcher.running
    assert wait_until(lambda: watcher.generation == 1, 0.1)


@pytest.mark.parametrize("scheme", ["elasticache", "consul"])
def test_watcher__stop_cancels_the_question_in_flight(faults: Faults, scheme: str) -> None:
    """A source that accepts and never answers held stop() for the attempt's deadline (4.6 s
    of 5), and a Consul blocking query for up to its bound (30 s): stop(5) returned False."""
    address = faults.blackhole()
    url = f"elasticache://{address}" if scheme == "elasticache" else f"consul://{address}/mc"
    watcher = Watcher(
        parse_source(url), Policy(refresh=0.05, deadline=10.0), nodes=[Node("10.0.0.1", 11211)]
    )
    watcher.start()
    time.sleep(0.5)  # the first question is in flight: connected, waiting for a reply

    def ours() -> list[str]:
        return [thread.name for thread in threading.enumerate() if address in thread.name]

    asking = ours()
    started = time.monotonic()
    stopped = watcher.stop(timeout=3.0)
    took = time.monotonic() - started

    assert any(name.startswith("cache_settings attempt") for name in asking), asking
    assert stopped
    assert took < 1.0, took
    assert wait_until(lambda: not ours(), 2.0), ours()


@pytest.mark.parametrize("client", ["pylibmc", "pymemcache"])
def test_backend__an_entry_sharing_a_watcher_follows_within_its_own_shorter_refresh(
    client: str, fresh_memcached_nodes: list[MemcachedServer], tmp_path: Path
) -> None:
    """Two entries on one rendered file, refresh=30 used first, then refresh=0.5: they share
    one watcher, which was told the shorter interval but slept out the longer one, so the
    second entry followed a change after 32.7 s instead of within its own 0.5 s."""
    rendered = tmp_path / "nodes.txt"
    first, second, third = fresh_memcached_nodes
    rendered.write_text(f"{first.location}\n{second.location}\n")
    url = f"file://{rendered}"
    with django_cache(dict(memcached(url, backend=client, refresh=30))) as slow:
        slow.set("k", 1)  # the watcher starts, waiting 30 s ± 10 % for its next poll
        time.sleep(0.2)
        # Django builds a backend at its alias's first use: this one joins a running watcher.
        with django_cache(dict(memcached(url, backend=client, refresh=0.5))) as fast:
            fast.set("k", 2)
            watcher: Watcher = fast._watcher  # type: ignore[attr-defined]
            assert watcher is slow._watcher  # type: ignore[attr-defined]
            temporary = tmp_path / "nodes.new"
            temporary.write_text(f"{first.location}\n{second.location}\n{third.location}\n")
            temporary.replace(rendered)
            started = time.monotonic()

            assert wait_until(lambda: len(watcher.nodes) == 3, 10.0)
            took = time.monotonic() - started

    assert took < 0.5 * 1.1 + 1.0, took
