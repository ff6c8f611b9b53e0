"""The test infrastructure itself: memcached daemons, TLS files and loopback faults."""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import pylibmc
import pytest
from pymemcache.client.base import Client

from tests.servers.faults import Faults
from tests.servers.memcached import MemcachedFactory, MemcachedServer
from tests.servers.tls import TLSFiles

MARGIN = 0.05  # seconds: sleep/timer slack allowed below a configured delay
SLACK = 1.0  # seconds: scheduling slack allowed above it on a loaded machine
VALUE = b"x" * 100
# memcached's reply to "get k" once k holds VALUE (protocol.txt, "Retrieval command").
GET_REPLY = b"VALUE k 0 100\r\n" + VALUE + b"\r\nEND\r\n"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _pymemcache(address: str, **kwargs: object) -> Client:
    return Client(_split(address), connect_timeout=2, timeout=2, **kwargs)


def _get_pieces(address: str) -> list[bytes]:
    """Send ``get k`` over a raw socket; return every recv() result until EOF or END."""
    pieces: list[bytes] = []
    with socket.create_connection(_split(address), timeout=2) as sock:
        sock.sendall(b"get k\r\n")
        while not b"".join(pieces).endswith(b"END\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            pieces.append(data)
    return pieces


def _store_value(server: MemcachedServer) -> None:
    client = _pymemcache(server.location)
    try:
        client.set("k", VALUE, noreply=False)
    finally:
        client.close()


# --- memcached daemons ---------------------------------------------------------------


def test_memcached_nodes__pymemcache_stores_and_reads(
    fresh_memcached_nodes: list[MemcachedServer],
) -> None:
    node = fresh_memcached_nodes[0]
    client = _pymemcache(node.location)
    try:
        client.set("greeting", b"hello")
        value = client.get("greeting")
    finally:
        client.close()

    assert value == b"hello"
    assert node.keys() == ["greeting"]
    assert [other.keys_count() for other in fresh_memcached_nodes[1:]] == [0, 0]


def test_memcached_node__pylibmc_stores_and_reads(fresh_memcached_node: MemcachedServer) -> None:
    key = f"answer-{uuid.uuid4().hex}"
    # behaviors={}: with behaviors=None, pylibmc 1.6.3's C code asks None for each of its
    # 31 behavior names, which Python 3.13 reports as 31 "Exception ignored" tracebacks.
    client = pylibmc.Client([fresh_memcached_node.location], behaviors={})
    try:
        client.set(key, 42)
        value = client.get(key)
    finally:
        client.disconnect_all()

    assert value == 42
    assert key in fresh_memcached_node.keys()


def test_memcached_nodes__three_distinct_running_servers(
    memcached_nodes: list[MemcachedServer], memcached_node: MemcachedServer
) -> None:
    locations = {node.location for node in [*memcached_nodes, memcached_node]}

    assert len(memcached_nodes) == 3
    assert len(locations) == 4
    assert all(location.startswith("127.0.0.1:") for location in locations)
    assert not any(node.tls for node in memcached_nodes)


def test_memcached_server__restart_keeps_port(memcached_factory: MemcachedFactory) -> None:
    server = memcached_factory()
    port = server.port
    _store_value(server)

    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, port), timeout=1).close()
    server.start()

    assert server.port == port
    assert server.running
    assert server.keys() == []  # a new process: the old items are gone
    _store_value(server)
    assert server.keys() == ["k"]


def test_memcached_server__flush_empties_it(fresh_memcached_node: MemcachedServer) -> None:
    _store_value(fresh_memcached_node)
    assert fresh_memcached_node.keys_count() == 1

    fresh_memcached_node.flush()

    assert fresh_memcached_node.keys_count() == 0
    assert fresh_memcached_node.stats()["cmd_flush"] != "0"


def test_fresh_memcached_nodes__restarts_and_flushes(
    memcached_nodes: list[MemcachedServer], request: pytest.FixtureRequest
) -> None:
    _store_value(memcached_nodes[0])
    memcached_nodes[1].stop()

    fresh = request.getfixturevalue("fresh_memcached_nodes")

    assert fresh == memcached_nodes
    assert all(node.running for node in fresh)
    assert [node.keys_count() for node in fresh] == [0, 0, 0]


# --- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_memcached(memcached_factory: MemcachedFactory) -> MemcachedServer:
    return memcached_factory(tls=True)


def test_tls_memcached__pymemcache_with_trusted_ca(
    tls_memcached: MemcachedServer, tls_files: TLSFiles
) -> None:
    client = _pymemcache(tls_memcached.location, tls_context=tls_files.client_context())
    try:
        client.set("secret", b"value")
        value = client.get("secret")
    finally:
        client.close()

    assert tls_memcached.tls
    assert value == b"value"
    stored = tls_memcached.keys()  # the raw-socket helpers speak TLS too
    assert "secret" in stored


def test_tls_memcached__unknown_ca_fails(
    tls_memcached: MemcachedServer, other_ca_file: str, tls_files: TLSFiles
) -> None:
    context = ssl.create_default_context(cafile=other_ca_file)
    client = _pymemcache(tls_memcached.location, tls_context=context)

    with pytest.raises(ssl.SSLCertVerificationError):
        client.get("anything")
    client.close()
    assert tls_files.other_ca == other_ca_file


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "node-1.cache.test"])
def test_tls_files__certificate_names(
    tls_memcached: MemcachedServer, tls_files: TLSFiles, name: str
) -> None:
    context = tls_files.client_context()
    with (
        socket.create_connection((tls_memcached.host, tls_memcached.port), timeout=2) as raw,
        context.wrap_socket(raw, server_hostname=name) as sock,
    ):
        sock.sendall(b"version\r\n")
        reply = sock.recv(100)

    assert reply.startswith(b"VERSION 1.")


def test_tls_files__wrong_name_fails(tls_memcached: MemcachedServer, tls_files: TLSFiles) -> None:
    context = tls_files.client_context()
    with (
        socket.create_connection((tls_memcached.host, tls_memcached.port), timeout=2) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="other.example")


# --- faults --------------------------------------------------------------------------


def test_blackhole__connects_and_never_answers(faults: Faults) -> None:
    address = faults.blackhole()
    socks = [socket.create_connection(_split(address), timeout=1) for _ in range(20)]
    try:
        socks[0].sendall(b"stats\r\n")
        socks[0].settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            socks[0].recv(1)
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()

    assert 0.2 - MARGIN <= elapsed < 0.2 + SLACK


def test_proxy__transparent_by_default(
    faults: Faults, fresh_memcached_node: MemcachedServer
) -> None:
    proxy = faults.proxy(fresh_memcached_node.location)
    _store_value(fresh_memcached_node)

    assert b"".join(_get_pieces(proxy.address)) == GET_REPLY
    assert proxy.accepted == 1


def test_proxy__chunk_fragments_reply(
    faults: Faults, fresh_memcached_node: MemcachedServer
) -> None:
    _store_value(fresh_memcached_node)
    proxy = faults.proxy(fresh_memcached_node.location, chunk=10)

    pieces = _get_pieces(proxy.address)

    assert b"".join(pieces) == GET_REPLY
    # 129 bytes in 10-byte chunks 5 ms apart: 13 segments; allow some to coalesce.
    assert len(pieces) >= 5
    assert max(map(len, pieces)) <= 30


def test_proxy__cut_after_closes_early(
    faults: Faults, fresh_memcached_node: MemcachedServer
) -> None:
    _store_value(fresh_memcached_node)
    proxy = faults.proxy(fresh_memcached_node.location, cut_after=12)

    pieces = _get_pieces(proxy.address)

    assert b"".join(pieces) == GET_REPLY[:12]


def test_proxy__delay_slows_each_reply(
    faults: Faults, fresh_memcached_node: MemcachedServer
) -> None:
    proxy = faults.proxy(fresh_memcached_node.location, delay=0.3)
    client = _pymemcache(proxy.address)
    try:
        started = time.monotonic()
        client.set("k", b"v", noreply=False)
        client.get("k")
        elapsed = time.monotonic() - started
    finally:
        client.close()

    assert 2 * 0.3 - MARGIN <= elapsed < 2 * 0.3 + SLACK


def test_proxy__reset_sends_rst(faults: Faults, memcached_node: MemcachedServer) -> None:
    proxy = faults.proxy(memcached_node.location, reset=True)

    # On loopback the RST may even beat connect() back to the caller; either way it is
    # a reset, never EOF (b"") and never a timeout.
    with pytest.raises(ConnectionResetError):
        _get_pieces(proxy.address)
    assert proxy.accepted == 1


def test_proxy__set_switches_mode_at_run_time(
    faults: Faults, fresh_memcached_node: MemcachedServer
) -> None:
    proxy = faults.proxy(fresh_memcached_node.location)
    client = Client(_split(proxy.address), connect_timeout=0.3, timeout=0.3)
    try:
        client.set("k", b"v", noreply=False)

        proxy.set(blackhole=True)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.get("k")
        elapsed = time.monotonic() - started

        proxy.set()
        value = client.get("k")
    finally:
        client.close()

    assert 0.3 - MARGIN <= elapsed < 0.3 + SLACK
    assert value == b"v"


def test_proxy__carries_tls(
    faults: Faults, tls_memcached: MemcachedServer, tls_files: TLSFiles
) -> None:
    proxy = faults.proxy(tls_memcached.location, chunk=256)
    client = _pymemcache(proxy.address, tls_context=tls_files.client_context())
    try:
        client.set("k", VALUE, noreply=False)
        value = client.get("k")
    finally:
        client.close()

    assert value == VALUE


def test_faults__refused_address(faults: Faults) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(_split(faults.refused()), timeout=1).close()


def test_faults__close_ends_held_connections() -> None:
    toolkit = Faults()
    address = toolkit.blackhole()
    with socket.create_connection(_split(address), timeout=2) as sock:
        time.sleep(0.1)  # let the black hole accept it

        toolkit.close()

        assert sock.recv(1) == b""  # closed by the black hole: EOF, no data ever
