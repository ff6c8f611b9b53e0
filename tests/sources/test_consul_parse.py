"""parse_health_service's short cuts give what parse_node() and unique_sorted() would."""

from __future__ import annotations

import random
from typing import Any

import pytest

from cache_settings import ConfigurationError, Node
from cache_settings.nodes import parse_node, unique_sorted
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
