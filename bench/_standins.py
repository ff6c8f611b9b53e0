"""The network parts the benchmarks run against: the stand-ins of ``tests/servers``.

Real ``memcached`` daemons, the configuration-endpoint stand-in and the Consul stand-in,
started in this (the driver's) process; the peers' processes connect to them over loopback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tests.servers.config_endpoint import ConfigEndpointServer
from tests.servers.consul import ConsulServer, ConsulState
from tests.servers.memcached import MemcachedServer

__all__ = [
    "ConsulServer",
    "MemoConsulState",
    "config_endpoint",
    "daemons",
    "fake_nodes",
    "register",
]


@contextmanager
def daemons(count: int) -> Iterator[list[MemcachedServer]]:
    """Yield *count* running memcached daemons (one worker thread each); stop them after."""
    servers = [MemcachedServer() for _ in range(count)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def config_endpoint() -> ConfigEndpointServer:
    """Return a running configuration-endpoint stand-in (it reads django-elasticache's ``\\n``)."""
    return ConfigEndpointServer()


def fake_nodes(count: int) -> list[tuple[str, str, int]]:
    """Return *count* ``(host, ip, port)`` nodes on loopback addresses (never contacted)."""
    return [
        (f"n{i}.bench.cache.test", f"127.1.{i // 250}.{i % 250 + 1}", 11211) for i in range(count)
    ]


def register(state: ConsulState, service: str, nodes: Sequence[tuple[str, str, int]]) -> None:
    """Replace *service*'s instances in the Consul stand-in by *nodes*, all passing.

    Each instance gets a node of its own, named after the service, so that replacing one
    service's instances leaves the others' alone.
    """
    with state.cond:
        for (node, service_id), _ in list(state.services.items()):
            if state.services[(node, service_id)]["Service"] == service:
                state.deregister({"Node": node})
    for host, ip, port in nodes:
        body: dict[str, Any] = {
            "Node": f"{service}.{host}",
            "Address": ip,
            "Service": {"ID": f"{service}-{port}", "Service": service, "Port": port},
            "Check": {
                "Node": f"{service}.{host}",
                "CheckID": f"service:{service}-{port}",
                "Name": "check",
                "Status": "passing",
                "ServiceID": f"{service}-{port}",
            },
        }
        state.register(body)


class MemoConsulState(ConsulState):
    """The Consul stand-in's catalog, answering health queries in linear time, from a memo.

    ``ConsulState.health_service`` scans every check for every service: seconds per query
    at 5,000 instances, which would drown the clients' own cost. This override applies the
    same filters (tags, node-meta, passing) with the checks grouped by node once, and keeps
    the answer, and its JSON text, until the index moves.
    """

    _memo: tuple[Any, list[dict[str, Any]]] | None = None
    _body: tuple[list[dict[str, Any]], str] | None = None

    def health_service(self, name: str, query: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        asked = tuple(pair for pair in query if pair[0] not in ("index", "wait"))
        key = (name, asked, self.index, self.generation)
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, self._health(name, asked))
        return self._memo[1]

    def encode(self, entries: list[dict[str, Any]]) -> str:
        if self._body is None or self._body[0] is not entries:
            self._body = (entries, super().encode(entries))
        return self._body[1]

    def _health(self, name: str, query: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        params: dict[str, list[str]] = {}
        for key, value in query:
            params.setdefault(key, []).append(value)
        tags = set(params.get("tag", []))
        meta = [pair.partition(":")[::2] for pair in params.get("node-meta", [])]
        passing = params.get("passing", [None])[0] not in (None, "0", "false")
        by_node: dict[str, list[dict[str, Any]]] = {}
        for (node_name, _), check in sorted(self.checks.items()):
            by_node.setdefault(node_name, []).append(check)
        entries = []
        for (node_name, service_id), service in sorted(self.services.items()):
            node = self.nodes[node_name]
            if service["Service"] != name or not tags <= set(service["Tags"]):
                continue
            if any(node["Meta"].get(k) != v for k, v in meta):
                continue
            checks = [c for c in by_node.get(node_name, []) if c["ServiceID"] in ("", service_id)]
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            entries.append({"Node": node, "Service": service, "Checks": checks})
        return entries
