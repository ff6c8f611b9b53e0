"""parse_health_service's short cuts give what parse_node() and unique_sorted() would."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_settings import ConfigurationError, Node, SourceError
from cache_settings.nodes import parse_node, unique_sorted
from cache_settings.sources import _consul_parse
from cache_settings.sources.consul import STATUSES, parse_health_service


def entry(address: str, port: int = 11211, *, check_id: str = "c1", status: str = "passing"
          ) -> dict[str, Any]:  # fmt: skip
    return {
        "Node": {"Node": "n1", "Address": "10.9.9.9"},
        "Service": {"ID": "memcached-1", "Tags": [], "Address": address, "Port": port},
        "Checks": [{"CheckID": check_id, "Status": status}],
    }


ADDRESSES = [
    "10.0.0.1", "127.1.0.250", "999.1.1.1", "1.2.3.4.5", "01.2.3.4", "1.2.3", "1.2.3.",
    "Cache-A.Example.", "cache-a.example", "a_b", "-bad", "bad-", "a..b", "bad host",
    "x" * 63 + ".example", "x" * 64, ".".join(["a" * 60] * 5), "é.example", "[10.0.0.1]",
    "2001:DB8::1", "[2001:db8::1]", "::ffff:10.0.0.1", "fe80::1%eth0", "1:2:3",
    " 10.0.0.2 ", "10.0.0.1\n",
]  # fmt: skip


@pytest.mark.parametrize("address", ADDRESSES)
def test_parse_health_service__address_parses_as_parse_node_does(address: str) -> None:
    text = address.strip().strip("[]")
    try:
        expected = [parse_node(f"[{text}]" if ":" in text else text, default_port=11300)]
    except ConfigurationError:
        expected = []

    assert parse_health_service([entry(address, 11300)], source="s") == expected


def test_parse_health_service__order_is_unique_sorted_order() -> None:
    rng = random.Random(17)
    hosts = ["10.0.0.1", "10.0.0.10", "10.0.0.9", "cache-b", "cache-a.example", "2001:db8::2"]
    entries = [entry(rng.choice(hosts), rng.choice([11211, 9000, 11300])) for _ in range(60)]

    nodes = parse_health_service(entries, source="s")

    assert nodes == list(unique_sorted(nodes))
    assert len(nodes) == len({(node.host, node.port) for node in nodes})
    assert all(node == Node(node.host, node.port) for node in nodes)


@pytest.mark.parametrize(
    ("checks", "status"),
    [
        ([], "passing"),
        ([("c", "passing"), ("d", "warning")], "warning"),
        ([("c", "warning"), ("d", "critical")], "critical"),
        ([("_node_maintenance", "critical"), ("d", "passing")], "maintenance"),
        ([("_service_maintenance:m1", "critical")], "maintenance"),
        ([("_node_maintenanceX", "critical")], "critical"),
        ([("_service_maintenance:m1", "critical"), ("d", "bogus")], None),
        ([("c", "maintenance")], None),
    ],
)
def test_parse_health_service__aggregated_status_as_consuls_api_client(
    checks: list[tuple[str, str]], status: str | None
) -> None:
    """api.HealthChecks.AggregatedStatus: unknown > maintenance > critical > warning."""
    reply = [entry("10.0.0.1")]
    reply[0]["Checks"] = [{"CheckID": c, "Status": s} for c, s in checks]

    kept = {s for s in STATUSES if parse_health_service(reply, source="s", status=(s,))}

    assert kept == ({status} if status else set())


def _plain_entry(n: int) -> dict[str, Any]:
    """An entry as Consul sends one: node and service objects, two passing checks."""
    return {
        "Node": {"Node": f"node-{n}", "Address": f"10.0.{n // 250}.{n % 250}", "Meta": {}},
        "Service": {"ID": f"mc-{n}", "Tags": ["mc"], "Address": "", "Port": 11211},
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []},
            {"CheckID": f"service:mc-{n}", "Status": "passing", "ServiceTags": ["mc"]},
        ],
    }


# Each makes the reply need a decision for one entry: the short path must leave it alone.
_ODD: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("entry without node or service", lambda e: e.clear() or e.update({"x": 1})),
    ("node not an object", lambda e: e.update(Node=[])),
    ("service missing", lambda e: e.pop("Service")),
    ("checks an object", lambda e: e.update(Checks={})),
    ("checks null", lambda e: e.update(Checks=None)),
    ("a check not an object", lambda e: e["Checks"].append("passing")),
    ("warning", lambda e: e["Checks"][1].update(Status="warning")),
    ("status a list", lambda e: e["Checks"][1].update(Status=["passing"])),
    ("node maintenance", lambda e: e["Checks"][0].update(CheckID="_node_maintenance")),
    ("service maintenance", lambda e: e["Checks"][1].update(CheckID="_service_maintenance:m")),
    ("id null", lambda e: e["Checks"][1].update(CheckID=None)),
    ("tags a string", lambda e: e["Service"].update(Tags="mc")),
    ("tag not a string", lambda e: e["Service"].update(Tags=[1])),
    ("tag missing", lambda e: e["Service"].update(Tags=["other"])),
    ("port true", lambda e: e["Service"].update(Port=True)),
    ("port 0", lambda e: e["Service"].update(Port=0)),
    ("port a string", lambda e: e["Service"].update(Port="11211")),
    ("service address a number", lambda e: e["Service"].update(Address=1)),
    ("node address null", lambda e: e["Node"].update(Address=None)),
    ("service address blank", lambda e: e["Service"].update(Address=" ")),
    ("host name", lambda e: e["Service"].update(Address="Cache-A.Example.")),
    ("leading zero", lambda e: e["Node"].update(Address="010.0.0.1")),
    ("ipv6", lambda e: e["Node"].update(Address="2001:DB8::1")),
    ("bracketed", lambda e: e["Node"].update(Address="[10.0.0.1]")),
    ("spaces", lambda e: e["Node"].update(Address=" 10.0.0.1 ")),
    ("NUL", lambda e: e["Node"].update(Address="10.0.0.1\0")),
    ("unusable", lambda e: e["Node"].update(Address="bad host")),
    ("other port", lambda e: e["Service"].update(Port=9000)),
    ("duplicate", lambda e: e["Node"].update(Address="10.0.0.2")),
]


def _reference(entries: list[Any], **options: Any) -> list[Node] | str:
    """What deciding entry by entry gives: the nodes, or the SourceError's reason."""
    try:
        pairs = _consul_parse._checked(
            entries,
            frozenset(options.get("tags", ())),
            frozenset(_consul_parse.RANKS.index(s) for s in options.get("status", ("passing",))),
            options.get("address", "service") == "service",
            "s",
        )
    except SourceError as exc:
        return exc.reason
    return [Node(host, port) for host, port in sorted(pairs)]


def _parsed(entries: list[Any], **options: Any) -> list[Node] | str:
    try:
        return parse_health_service(entries, source="s", **options)
    except SourceError as exc:
        return exc.reason


@pytest.mark.parametrize(("what", "change"), _ODD, ids=[what for what, _ in _ODD])
@pytest.mark.parametrize("address", ["service", "node"])
def test_parse_health_service__short_path_only_where_each_entry_needs_no_decision(
    what: str, change: Callable[[dict[str, Any]], None], address: str
) -> None:
    entries = [_plain_entry(n) for n in range(5)]
    assert _consul_parse._plain(entries, frozenset({"mc"}), address == "service") is not None
    change(entries[3])

    short = _consul_parse._plain(entries, frozenset({"mc"}), address == "service")
    options: dict[str, Any] = {"tags": ("mc",), "address": address}

    # What the short path takes as it is (a host name is looked at per entry, not decided).
    plain = {"checks null", "other port", "duplicate", "host name"}
    plain |= {"service address blank"} if address == "node" else set()
    assert (short is None) == (what not in plain)
    assert _parsed(entries, **options) == _reference(entries, **options)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_ODD) - 1), st.integers(0, 5)),
        max_size=3,
        unique_by=lambda change: change[1],  # one change an entry
    ),
    st.sampled_from(["service", "node"]),
    st.sampled_from([(), ("mc",)]),
    st.sampled_from([("passing",), ("passing", "warning"), STATUSES, ("critical",)]),
)
def test_parse_health_service__short_path_gives_what_deciding_each_entry_gives(
    changes: list[tuple[int, int]], address: str, tags: tuple[str, ...], status: tuple[str, ...]
) -> None:
    entries = [_plain_entry(n) for n in range(6)]
    for which, n in changes:
        _ODD[which][1](entries[n])
    options: dict[str, Any] = {"tags": tags, "address": address, "status": status}

    assert _parsed(entries, **options) == _reference(entries, **options)
