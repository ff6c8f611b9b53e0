"""Reading a Consul ``/v1/health/service`` reply: its shape, the filters, the addresses, the order.

Two paths give the same nodes. The usual reply (every entry shaped as the API docs say,
every check passing and none a maintenance check, every port in range, every address a
dotted quad or a host name) is checked whole, one attribute of every entry at a time, by
``map`` and ``set`` over ``dict.get`` at C speed, and needs no decision per instance. Any
other reply (one malformed, failing, filtered or unusable entry is enough) goes through
:func:`_checked`, which decides entry by entry: it raises the SourceError naming the
first malformed entry, leaves out and logs what is unusable, and filters. The short path
only ever answers where :func:`_checked` would give the same pairs without a word, so
errors, warnings and results are those of :func:`_checked` (tests/sources/test_consul_parse.py
holds both to that).
"""

from __future__ import annotations

import logging
import re
import socket
from collections import deque
from collections.abc import Callable, Iterable
from itertools import chain, repeat
from typing import Any

from .. import attempt as _attempt
from ..exceptions import ConfigurationError, SourceError, brief
from ..nodes import Node, is_host, is_nowhere, parse_node
from ._budget import paced

__all__ = ["RANKS", "parse_health_service"]

logger = logging.getLogger("cache_settings.sources.consul")

# Consul's api.HealthChecks.AggregatedStatus, as ranks: the worst check wins, and a status
# it does not know ranks above all (its "" matches no status asked for).
RANKS = ("passing", "warning", "critical", "maintenance", "unknown")
_CHECK_RANK = {"passing": 0, "warning": 1, "critical": 2}
_PASSING, _MAINTENANCE, _UNKNOWN = 0, 3, 4
# Consul's api.HealthChecks.AggregatedStatus: maintenance is marked by these check ids.
_NODE_MAINTENANCE, _SERVICE_MAINTENANCE = "_node_maintenance", "_service_maintenance:"
_STR_OR_NONE = (str, type(None))
# The types the short path admits, as sets of them: nothing else, not even a subclass.
_LIST_OR_NONE: set[type] = {list, type(None)}
_TEXT_OR_NONE: set[type] = {str, type(None)}
_DICT, _STR, _INT = {dict}, {str}, {int}
# A dotted quad no node has (is_nowhere()), found in the NUL-joined hosts at C speed.
_NOWHERE_V4 = re.compile(r"\0(?:0\.0\.0\.0|2(?:2[4-9]|3[0-9])\.)")


def parse_health_service(
    entries: object,
    *,
    source: str,
    address: str = "service",
    tags: Iterable[str] = (),
    status: Iterable[str] = ("passing",),
) -> list[Node]:
    """Return the nodes in a ``/v1/health/service`` reply, de-duplicated and sorted.

    Instances missing any of *tags*, or whose aggregated status (worst of their node
    and service checks; maintenance first, as Consul's API client ranks them) is not in
    *status*, are left out: the agent filters too, but one that ignores ``tag`` or
    ``passing`` must not put a failed node in the list.

    An instance registered without a usable port or address is left out with a
    warning, so that it cannot take the healthy ones with it. A reply not shaped as
    the API docs say (a list of objects with ``Node`` and ``Service`` objects, a
    ``Checks`` list of checks with a string ``Status``, ``Tags`` a list of strings, an
    integer ``Port``, string addresses) raises SourceError, whatever it holds.
    """
    if not isinstance(entries, list):
        raise SourceError(source, f"malformed reply: expected a list, got {type(entries).__name__}")
    wanted = frozenset(tags)
    allowed = frozenset(RANKS.index(s) for s in status if s in RANKS)
    by_service = address == "service"
    plain = _plain(entries, wanted, by_service) if entries and _PASSING in allowed else None
    if plain is None:
        # unique_sorted()'s order, (host, port, ip, tls), is that of the (host, port) pairs
        # here, where no node has an ip or tls yet; sorting the pairs is several times faster.
        pairs = sorted(_checked(entries, wanted, allowed, by_service, source))
        return [Node(host, port) for host, port in pairs]
    hosts, ports = plain
    if len(set(ports)) == 1:  # one port for all (the usual case): the hosts' order is the order
        port = ports[0]
        return [Node(host, port) for host in sorted(set(hosts))]
    return [Node(host, port) for host, port in sorted(set(zip(hosts, ports, strict=True)))]


def _plain(
    entries: list[Any], wanted: frozenset[str], by_service: bool
) -> tuple[list[str], list[int]] | None:
    """Return the hosts and ports of every entry if none needs a decision of its own, else None.

    That is: entries, nodes, services and checks are dicts; ``Checks`` and ``Tags`` lists
    (or null), tags strings and all of *wanted* on every instance; every check ``passing``
    and no check id a maintenance one; every port an integer in 1..65535; addresses strings
    (or null), and the one :func:`_address` picks a dotted quad or a host name, as is.
    """
    get: Callable[[Any, str], Any] = dict.get  # each list is checked to hold only dicts first
    try:
        if set(map(type, entries)) != _DICT:
            return None
        nodes = list(map(get, entries, repeat("Node")))
        services = list(map(get, entries, repeat("Service")))
        checks = list(map(get, entries, repeat("Checks")))
        if set(map(type, nodes)) != _DICT or set(map(type, services)) != _DICT:
            return None
        if not set(map(type, checks)) <= _LIST_OR_NONE:
            return None
        tags = list(map(get, services, repeat("Tags")))
        if not set(map(type, tags)) <= _LIST_OR_NONE:
            return None
        if not set(map(type, chain.from_iterable(filter(None, tags)))) <= _STR:
            return None
        if wanted and (None in tags or not all(map(wanted.issubset, tags))):
            return None
        _pace()
        every_check = list(chain.from_iterable(filter(None, checks)))
        if not set(map(type, every_check)) <= _DICT:
            return None
        statuses = list(map(get, every_check, repeat("Status")))
        if statuses.count("passing") != len(statuses):  # no set: hashing each costs more
            return None
        check_ids = list(map(get, every_check, repeat("CheckID")))
        if not set(map(type, check_ids)) <= _STR:
            return None
        # Every id follows a NUL in the joined text, so a maintenance id cannot be missed
        # (an id holding a NUL at worst sends the reply the long way).
        joined = "\0" + "\0".join(check_ids) + "\0"
        if f"\0{_NODE_MAINTENANCE}\0" in joined or f"\0{_SERVICE_MAINTENANCE}" in joined:
            return None
        _pace()
        ports = list(map(get, services, repeat("Port")))
        if set(map(type, ports)) != _INT or min(ports) < 1 or max(ports) > 65535:
            return None
        hosts = list(map(get, nodes, repeat("Address")))
        service_hosts = list(map(get, services, repeat("Address")))
        if not set(map(type, hosts)) <= _TEXT_OR_NONE:
            return None
        if not set(map(type, service_hosts)) <= _TEXT_OR_NONE:
            return None
        if by_service and any(service_hosts):
            hosts = [
                service_host or host
                for service_host, host in zip(service_hosts, hosts, strict=True)
            ]
        if set(map(type, hosts)) != _STR:
            return None
    except TypeError:  # an unhashable value in a set
        return None
    try:  # dotted quads, which parse_node() keeps as they are, read by inet_pton as it does
        deque(map(socket.inet_pton, repeat(socket.AF_INET), hosts), 0)
    except (OSError, ValueError):  # not all of them (ValueError: a NUL in one)
        pass
    else:
        return None if _NOWHERE_V4.search("\0" + "\0".join(hosts)) else (hosts, ports)
    names = list(map(_plain_host, hosts))
    if None in names:
        return None
    return names, ports  # type: ignore[return-value]  # None is not in names


def _plain_host(text: str) -> str | None:
    """Return what :func:`_address` makes of *text* when it is a host as is, else None."""
    if ":" not in text and is_host(text) and not is_nowhere(text):
        return text.lower().removesuffix(".")
    return None


def _pace() -> None:
    """Raise SourceError once the current attempt is past its deadline (see ``paced``)."""
    current = _attempt.current()
    if current is not None:
        current.check()


def _checked(
    entries: list[Any], wanted: frozenset[str], allowed: frozenset[int], by_service: bool,
    source: str,
) -> set[tuple[str, int]]:  # fmt: skip
    """Return the ``(host, port)`` pairs of the entries kept, deciding entry by entry.

    No work per instance that a 5,000-instance answer would feel: JSON objects are dicts
    (no ABC checks), messages are built only on failure, and the addresses parse_node()
    would accept unchanged skip it (bench/bench_consul.py).
    """
    found: set[tuple[str, int]] = set()
    for n, entry in enumerate(paced(entries)):
        if not isinstance(entry, dict):
            raise SourceError(source, f"{_at(n)} is not an object")
        node, service, checks = entry.get("Node"), entry.get("Service"), entry.get("Checks")
        if not isinstance(node, dict) or not isinstance(service, dict):
            raise SourceError(source, f"{_at(n)} lacks a Node or Service object")
        if checks is not None and not isinstance(checks, list):
            raise SourceError(source, f"{_at(n)} has Checks that are not a list")
        service_tags = service.get("Tags") or ()
        if service_tags and (
            not isinstance(service_tags, list) or not all(type(t) is str for t in service_tags)
        ):
            raise SourceError(source, f"{_at(n)} has Service.Tags that are not a list of strings")
        if wanted and not wanted.issubset(service_tags):
            continue
        if (_aggregated(checks, n, source) if checks else _PASSING) not in allowed:
            continue
        found_or_why = _address(node, service, by_service, n, source)
        if isinstance(found_or_why, str):
            logger.warning(
                "%s: skipping instance %r on node %r: %s",
                source, _name(service.get("ID")), _name(node.get("Node")), found_or_why,
            )  # fmt: skip
        else:
            found.add(found_or_why)
    return found


def _aggregated(checks: list[Any], n: int, source: str) -> int:
    """Return the instance's status rank (an index into ``RANKS``)."""
    rank = _PASSING
    for check in checks:
        state = check.get("Status") if isinstance(check, dict) else None
        if not isinstance(state, str):
            raise SourceError(source, f"{_at(n)} has a check without a Status")
        check_id = check.get("CheckID")
        if isinstance(check_id, str) and (
            check_id == _NODE_MAINTENANCE or check_id.startswith(_SERVICE_MAINTENANCE)
        ):
            this = _MAINTENANCE
        else:
            this = _CHECK_RANK.get(state, _UNKNOWN)
        if this > rank:
            rank = this
    return rank


def _address(
    node: dict[str, Any], service: dict[str, Any], by_service: bool, n: int, source: str
) -> tuple[str, int] | str:
    """Return the instance's ``(host, port)`` as parse_node() gives it, or why it is unusable.

    Raise SourceError if the entry is not shaped as documented.
    """
    port = service.get("Port")
    if isinstance(port, bool) or not isinstance(port, int):
        raise SourceError(
            source, f"{_at(n)} has a Service.Port that is not an integer ({brief(port)})"
        )
    service_address, node_address = service.get("Address"), node.get("Address")
    if not isinstance(service_address, _STR_OR_NONE):
        raise SourceError(source, f"{_at(n)} has a Service.Address that is not a string")
    if not isinstance(node_address, _STR_OR_NONE):
        raise SourceError(source, f"{_at(n)} has a Node.Address that is not a string")
    if not 0 < port < 65536:
        return f"no usable Service.Port ({port if abs(port) < 10**9 else 'out of range'})"
    text = service_address.strip() if by_service and service_address else ""
    if not text:
        text = node_address.strip() if node_address else ""
    if not text:
        return "no Service.Address or Node.Address"
    text = text.strip("[]")
    # What parse_node() makes of an IPv4 address (unchanged) or of a host name (lower case,
    # no trailing dot), without its other checks: most addresses in a reply are these.
    host = _plain_host(text)
    if host is not None:
        return host, port
    try:
        parsed = parse_node(f"[{text}]" if ":" in text else text, default_port=port)
    except ConfigurationError:
        return f"unusable address {brief(text)}"
    if is_nowhere(parsed.host):
        return f"unusable address {brief(text)} (no node has it: unspecified or multicast)"
    return parsed.host, parsed.port


def _at(n: int) -> str:
    return f"malformed reply: entry {n}"


def _name(value: object) -> str | None:
    return value[:100] if isinstance(value, str) else None
