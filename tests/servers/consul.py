"""A stand-in of the Consul HTTP API, or a real agent when ``CONSUL_HTTP_ADDR`` is set.

The stand-in follows the API docs (https://developer.hashicorp.com/consul/api-docs):
``GET /v1/health/service/:service`` (``passing``, repeatable ``tag``, ``dc``, ``near``,
``node-meta``, ``ns``; blocking ``index``/``wait``), ``PUT /v1/catalog/register``,
``PUT /v1/catalog/deregister`` and ``GET /v1/status/leader``, with the ``X-Consul-*``
headers and ACL answers of a real agent: 403 ``ACL not found`` for an unknown token, and,
on list endpoints, results the token may not read left out with
``X-Consul-Results-Filtered-By-ACLs: true`` ("Results Filtered by ACLs" in the API docs).
``filter=`` takes a subset of Consul's filter expressions (see ``tests/servers/consul_filter.py``).
Tests add instances through the catalog API, so the same helper drives a real agent.

Read modes, as the API docs describe them ("Consistency Modes", "Agent Caching"), each
read by its presence in the query: ``?stale`` is answered as by a follower (also without a
leader), ``X-Consul-LastContact`` telling how far behind it is; ``?consistent`` and the
default need a leader (500 ``No cluster leader`` otherwise); ``X-Consul-KnownLeader`` and
``X-Consul-Effective-Consistency`` say which. ``?cached`` is answered by the agent's cache
(``X-Cache: MISS`` the first time a query is asked, ``HIT`` with ``Age`` after), whose own
reads are stale; ``?stale`` or ``?cached`` with ``?consistent`` is a 400, as in Consul.

Fixtures: ``consul_server`` (session), ``consul_agent`` (per test, state reset) and
``consul_tls_address`` (an https listener sharing the stand-in's state).
"""

from __future__ import annotations

import json
import os
import random
import re
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from tests.servers.consul_filter import FilterError, evaluate
from tests.servers.tls import TLSFiles

__all__ = [
    "REAL_CONSUL",
    "ConsulAgent",
    "ConsulServer",
    "ConsulState",
    "Instance",
    "Request",
    "consul_agent",
    "consul_server",
    "consul_tls_address",
    "parse_duration",
]

# Read at import: tests/conftest.py removes CONSUL_* variables before every test.
REAL_CONSUL = os.environ.get("CONSUL_HTTP_ADDR") or None
_REAL_TOKEN = os.environ.get("CONSUL_HTTP_TOKEN") or None
_REAL_CACERT = os.environ.get("CONSUL_CACERT") or None
# Credentials the sources under test need to talk to the real agent, put back for each test.
_REAL_ENV = {
    name: os.environ[name]
    for name in ("CONSUL_HTTP_TOKEN", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
                 "CONSUL_HTTP_SSL_VERIFY")
    if REAL_CONSUL and os.environ.get(name)
}  # fmt: skip

_DEFAULT_WAIT = 5 * 60.0  # API docs, "Blocking Queries": wait defaults to 5 minutes ...
_MAX_WAIT = 10 * 60.0  # ... and is capped at 10 minutes.
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_STATUSES = ("passing", "warning", "critical")


def parse_duration(text: str) -> float:
    """Return a Go duration ("10s", "500ms", "1m30s") in seconds; raise ValueError if invalid."""
    if not text or _DURATION.sub("", text):
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


@dataclass(frozen=True)
class Request:
    """One request the stand-in received."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]  # lower-case names

    def params(self, name: str) -> list[str]:
        """Return every value of query parameter *name*."""
        return [value for key, value in self.query if key == name]

    def has(self, name: str) -> bool:
        """Return True when the query names *name*, with any value (as Consul reads flags)."""
        return any(key == name for key, _ in self.query)


class ConsulState:
    """The catalog, its Raft-like index and the stand-in's fault switches."""

    datacenter = "dc1"

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.generation = 0
        self.released = threading.Event()
        self.reset()

    def reset(self) -> None:
        """Forget every node, request and switch; wake blocked and hung requests."""
        with self.cond:
            self.index = 10
            self.nodes: dict[str, dict[str, Any]] = {}
            self.services: dict[tuple[str, str], dict[str, Any]] = {}
            self.checks: dict[tuple[str, str], dict[str, Any]] = {}
            self.service_index: dict[str, int] = {}
            self.requests: list[Request] = []
            self.token: str | None = None
            self.acl_filters = False  # anonymous requests: filtered list, not 403
            self.echo_tokens = False  # a 403 quotes the unknown token, escaped as Go's %q
            self.shuffle = False
            # A hostile health reply: body, headers, status.
            self.raw: tuple[bytes, dict[str, str], int] | None = None
            self.ignore_passing = False
            self.generation += 1
            self.released.set()
            self.released = threading.Event()
            self.hang = False
            self.leader = True  # a leader is known
            self.last_contact = 0  # ms since a follower last heard from the leader
            self.cached: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
            self.cache_age = 0  # s the agent's cache has been cut off from the servers
            self.cond.notify_all()

    # --- writes (catalog API) -------------------------------------------------------------

    def _bump(self, names: Sequence[str]) -> None:
        self.index += 1
        for name in names:
            self.service_index[name] = self.index
        self.cond.notify_all()

    def _services_on(self, node: str) -> list[str]:
        return [s["Service"] for (n, _), s in self.services.items() if n == node]

    def register(self, body: Mapping[str, Any]) -> None:
        """Apply ``PUT /v1/catalog/register``; raise ValueError with Consul's 400 message."""
        node, address = body.get("Node"), body.get("Address")
        if not node:
            raise ValueError("Must provide node")
        with self.cond:
            index = self.index + 1
            if not body.get("SkipNodeUpdate") or node not in self.nodes:
                if not address:
                    raise ValueError("Must provide address if SkipNodeUpdate is not set")
                old = self.nodes.get(node, {})
                self.nodes[node] = {
                    "ID": body.get("ID") or str(uuid.uuid5(uuid.NAMESPACE_DNS, node)),
                    "Node": node,
                    "Address": address,
                    "Datacenter": self.datacenter,
                    "TaggedAddresses": body.get("TaggedAddresses")
                    or {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address},
                    "Meta": body.get("NodeMeta") or {},
                    "CreateIndex": old.get("CreateIndex", index),
                    "ModifyIndex": index,
                }
                # Agents carry the Serf health check; keep it for catalog nodes too, as the
                # API docs' example reply shows.
                self.checks.setdefault((node, "serfHealth"), self._check(node, {
                    "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                    "Output": "Agent alive and reachable",
                }, index))  # fmt: skip
            touched = self._services_on(node)
            service = body.get("Service")
            if service:
                if not service.get("Service"):
                    raise ValueError("Must provide service name")
                service_id = service.get("ID") or service["Service"]
                old = self.services.get((node, service_id), {})
                self.services[(node, service_id)] = {
                    "ID": service_id,
                    "Service": service["Service"],
                    "Tags": list(service.get("Tags") or []),
                    "Address": service.get("Address", ""),
                    "TaggedAddresses": service.get("TaggedAddresses") or {},
                    "Meta": service.get("Meta") or {},
                    "Port": service.get("Port", 0),
                    "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": False,
                    "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                    "Connect": {},
                    "PeerName": "",
                    "CreateIndex": old.get("CreateIndex", index),
                    "ModifyIndex": index,
                }
                touched.append(service["Service"])
            checks = list(body.get("Checks") or []) + ([body["Check"]] if body.get("Check") else [])
            for check in checks:
                if check.get("Status", "critical") not in _STATUSES:
                    raise ValueError(f"Invalid check status: {check.get('Status')!r}")
                record = self._check(node, check, index)
                self.checks[(node, record["CheckID"])] = record
            self._bump(touched)

    def _check(self, node: str, check: Mapping[str, Any], index: int) -> dict[str, Any]:
        service_id = check.get("ServiceID", "")
        service = self.services.get((node, service_id), {})
        return {
            "Node": node,
            "CheckID": check.get("CheckID") or check.get("Name"),
            "Name": check.get("Name") or check.get("CheckID"),
            "Status": check.get("Status", "critical"),
            "Notes": check.get("Notes", ""),
            "Output": check.get("Output", ""),
            "ServiceID": service_id,
            "ServiceName": service.get("Service", ""),
            "ServiceTags": service.get("Tags", []),
            "Type": check.get("Type", ""),
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": check.get("Definition", {}),
            "CreateIndex": index,
            "ModifyIndex": index,
        }

    def deregister(self, body: Mapping[str, Any]) -> None:
        """Apply ``PUT /v1/catalog/deregister``."""
        node = body.get("Node")
        if not node:
            raise ValueError("Must provide node")
        with self.cond:
            touched = self._services_on(node)
            if body.get("ServiceID"):
                self.services.pop((node, body["ServiceID"]), None)
                for key in [
                    k for k, c in self.checks.items() if c["ServiceID"] == body["ServiceID"]
                ]:
                    del self.checks[key]
            elif body.get("CheckID"):
                self.checks.pop((node, body["CheckID"]), None)
            else:
                self.nodes.pop(node, None)
                for table in (self.services, self.checks):
                    for key in [k for k in table if k[0] == node]:
                        del table[key]
            self._bump(touched)

    # --- reads ----------------------------------------------------------------------------

    def encode(self, entries: list[dict[str, Any]]) -> str:
        """Return the JSON body of a health answer (benchmarks keep it between queries)."""
        return json.dumps(entries)

    def health_service(self, name: str, query: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """Return ``/v1/health/service/:name`` entries filtered as the API docs describe."""
        params: dict[str, list[str]] = {}
        for key, value in query:
            params.setdefault(key, []).append(value)
        tags = params.get("tag", [])
        meta = [pair.partition(":")[::2] for pair in params.get("node-meta", [])]
        passing = params.get("passing", [None])[0] not in (None, "0", "false")
        if "filter" in params:
            evaluate(params["filter"][0], {})  # a bad expression is an error, matches or not
        entries = []
        for (node_name, service_id), service in sorted(self.services.items()):
            node = self.nodes[node_name]
            if service["Service"] != name or not set(tags) <= set(service["Tags"]):
                continue
            if any(node["Meta"].get(k) != v for k, v in meta):
                continue
            checks = [
                c for (n, _), c in sorted(self.checks.items())
                if n == node_name and c["ServiceID"] in ("", service_id)
            ]  # fmt: skip
            if (
                passing
                and not self.ignore_passing
                and any(c["Status"] != "passing" for c in checks)
            ):
                continue
            entry = {"Node": node, "Service": service, "Checks": checks}
            if "filter" in params and not evaluate(params["filter"][0], entry):
                continue
            entries.append(entry)
        if self.shuffle:
            random.shuffle(entries)
        return entries


class _Handler(BaseHTTPRequestHandler):
    server: ConsulServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        query = tuple(parse_qsl(parts.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        with state.cond:
            state.requests.append(Request(self.command, unquote(parts.path), query, headers))
            hang, released = state.hang, state.released
        if hang:
            # Accept and never answer (until the test ends): a black-holed agent.
            released.wait()
            self.close_connection = True
            return
        anonymous = False
        if state.token is not None and self._token(query, headers) != state.token:
            if self._token(query, headers):
                said = f" (token {json.dumps(self._token(query, headers))})"
                body = "ACL not found" + (said if state.echo_tokens else "")
                return self._reply(403, body, content_type="text/plain")
            if not state.acl_filters:
                return self._reply(
                    403,
                    "Permission denied: anonymous token lacks permission 'service:read'",
                    content_type="text/plain",
                )
            anonymous = True  # the anonymous token reads nothing: every result is filtered
        path = unquote(parts.path)
        if self.command == "GET" and path.startswith("/v1/health/service/"):
            return self._health(path.removeprefix("/v1/health/service/"), query, anonymous)
        if self.command == "GET" and path == "/v1/status/leader":
            return self._reply(200, json.dumps("127.0.0.1:8300"))
        if self.command == "PUT" and path in ("/v1/catalog/register", "/v1/catalog/deregister"):
            try:
                data = json.loads(body or b"{}")
                if path.endswith("/register"):
                    state.register(data)
                else:
                    state.deregister(data)
            except (ValueError, AttributeError, TypeError) as exc:
                return self._reply(400, f"Bad request: {exc}", content_type="text/plain")
            return self._reply(200, "true")
        return self._reply(404, "", content_type="text/plain")

    @staticmethod
    def _token(query: Sequence[tuple[str, str]], headers: Mapping[str, str]) -> str | None:
        # API docs, "Authentication": X-Consul-Token, "Authorization: Bearer", or ?token=.
        if headers.get("x-consul-token"):
            return headers["x-consul-token"]
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            return value
        return dict(query).get("token") or None

    def _health(self, name: str, query: tuple[tuple[str, str], ...], anonymous: bool) -> None:
        state = self.server.state
        if state.raw is not None:
            return self._send_raw(*state.raw)
        params = dict(query)
        stale, consistent, cached = ("stale" in params, "consistent" in params,
                                     "cached" in params)  # fmt: skip
        for other, given in (("stale", stale), ("cached", cached)):
            if given and consistent:
                return self._reply(
                    400, f"Cannot specify ?{other} with ?consistent, conflicting semantics.",
                    content_type="text/plain",
                )  # fmt: skip
        if not (stale or cached or state.leader):
            return self._reply(500, "No cluster leader", content_type="text/plain")
        # The cache's own queries to the servers are stale reads (agent/cache-types).
        follower = stale or cached
        meta = {
            "X-Consul-Knownleader": str(state.leader).lower(),
            "X-Consul-Lastcontact": str(state.last_contact if follower else 0),
            "X-Consul-Effective-Consistency":
                "stale" if follower else "consistent" if consistent else "leader",
        }  # fmt: skip
        if cached:
            key = (name, tuple(sorted(p for p in query if p[0] not in ("index", "wait"))))
            with state.cond:
                hit = key in state.cached
                state.cached.add(key)
            meta["X-Cache"] = "HIT" if hit else "MISS"
            if hit:
                meta["Age"] = str(state.cache_age)
        if params.get("dc") not in (None, "", state.datacenter):
            return self._reply(500, "No path to datacenter", content_type="text/plain")
        try:
            index = int(params["index"]) if params.get("index") else 0
        except ValueError:
            return self._reply(400, "Invalid index", content_type="text/plain")
        try:
            wait = min(
                parse_duration(params["wait"]) if "wait" in params else _DEFAULT_WAIT, _MAX_WAIT
            )
        except ValueError:
            return self._reply(400, "Invalid wait time", content_type="text/plain")
        with state.cond:
            generation = state.generation
            if index:
                # Blocking query: answer once the service's index moves past ``index``.
                state.cond.wait_for(
                    lambda: (
                        state.service_index.get(name, 1) > index or state.generation != generation
                    ),
                    timeout=wait,
                )
            try:
                entries = state.health_service(name, query)
            except FilterError as exc:
                return self._reply(
                    400, f"Failed to create evaluator: {exc}", content_type="text/plain"
                )
            current = max(state.service_index.get(name, 1), 1)
        filtered = anonymous and bool(entries)
        return self._reply(200, "[]" if anonymous else state.encode(entries), index=current,
                           filtered=filtered, headers=meta)  # fmt: skip

    def _send_raw(self, body: bytes, headers: Mapping[str, str], status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in {"X-Consul-Index": "7", **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _reply(
        self,
        status: int,
        body: str,
        *,
        index: int | None = None,
        content_type: str = "application/json",
        filtered: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Vary", "Accept-Encoding")
        if index is not None:
            self.send_header("X-Consul-Index", str(index))
            meta = headers or {"X-Consul-Knownleader": "true", "X-Consul-Lastcontact": "0",
                               "X-Consul-Effective-Consistency": "leader"}  # fmt: skip
            for name, value in meta.items():
                self.send_header(name, value)
        if filtered:
            self.send_header("X-Consul-Results-Filtered-By-ACLs", "true")
        self.end_headers()
        self.wfile.write(data)


class ConsulServer(ThreadingHTTPServer):
    """The stand-in: a threaded HTTP (or, with *context*, HTTPS) server on 127.0.0.1:0."""

    daemon_threads = True

    def __init__(self, state: ConsulState, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.context = context
        self.address = f"127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, name="consul", daemon=True)

    def start(self) -> ConsulServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.released.set()
        self.shutdown()
        self.server_close()
        self._thread.join()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            return super().finish_request(request, client_address)
        # The TLS handshake happens in the request's thread, so a client that never
        # completes it cannot stall the accept loop.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return None
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are expected here


@dataclass(frozen=True)
class Instance:
    """One registered service instance, as ``ConsulAgent.add`` registered it."""

    service: str
    node: str
    node_address: str
    service_id: str
    service_address: str
    port: int
    tags: tuple[str, ...]
    node_meta: Mapping[str, str] = field(default_factory=dict)


class ConsulAgent:
    """Drives the stand-in, or a real agent, through the catalog API."""

    def __init__(self, address: str, state: ConsulState | None, token: str | None = None) -> None:
        self.address = address
        self.state = state
        self.real = state is None
        self._token = token
        self._instances: list[Instance] = []

    @property
    def datacenter(self) -> str | None:
        """The stand-in's datacenter; None for a real agent."""
        return None if self.state is None else self.state.datacenter

    def add(
        self,
        service: str,
        address: str,
        port: int,
        *,
        status: str = "passing",
        tags: Sequence[str] = (),
        node: str | None = None,
        node_meta: Mapping[str, str] | None = None,
        service_address: str | None = None,
    ) -> Instance:
        """Register *service* on a node at *address* with one check in *status*.

        ``Service.Address`` is *service_address*, which defaults to *address*; pass
        ``""`` to leave it empty, so that clients fall back to ``Node.Address``.
        """
        name = node or "node-" + re.sub(r"[^A-Za-z0-9]+", "-", address).strip("-")
        instance = Instance(
            service=service,
            node=name,
            node_address=address,
            service_id=f"{service}-{name}-{port}",
            service_address=address if service_address is None else service_address,
            port=port,
            tags=tuple(tags),
            node_meta=dict(node_meta or {}),
        )
        self._register(instance, status)
        self._instances.append(instance)
        return instance

    def set_status(self, instance: Instance, status: str) -> None:
        """Set the instance's check to *status* (passing, warning or critical)."""
        self._register(instance, status)

    def set_node_status(self, instance: Instance, status: str) -> None:
        """Give the instance's node a node-level check (no ServiceID) in *status*."""
        self._put("/v1/catalog/register", {
            "Node": instance.node, "Address": instance.node_address, "SkipNodeUpdate": True,
            "Check": {"Node": instance.node, "CheckID": "node-disk", "Name": "Disk space",
                      "Status": status},
        })  # fmt: skip

    def set_maintenance(self, instance: Instance) -> None:
        """Put the instance in maintenance, as ``consul maint -service`` does (a critical check)."""
        self._put("/v1/catalog/register", {
            "Node": instance.node, "Address": instance.node_address, "SkipNodeUpdate": True,
            "Check": {"Node": instance.node, "ServiceID": instance.service_id,
                      "CheckID": f"_service_maintenance:{instance.service_id}",
                      "Name": "Service Maintenance Mode", "Status": "critical"},
        })  # fmt: skip

    def remove(self, instance: Instance) -> None:
        """Deregister the instance (its service and check)."""
        self._put(
            "/v1/catalog/deregister", {"Node": instance.node, "ServiceID": instance.service_id}
        )

    def reset(self) -> None:
        """Remove everything this helper registered (real agent) or reset the stand-in."""
        if self.state is not None:
            self.state.reset()
        else:
            for node in {i.node for i in self._instances}:
                self._put("/v1/catalog/deregister", {"Node": node})
        self._instances.clear()

    # --- stand-in only ----------------------------------------------------------------------

    def needs_standin(self, feature: str) -> ConsulState:
        """Return the stand-in's state, or skip the test when driving a real agent."""
        return self._standin(feature)

    def _standin(self, feature: str) -> ConsulState:
        if self.state is None:
            pytest.skip(f"{feature} needs the Consul stand-in, not a real agent")
        return self.state

    def require_token(self, token: str) -> None:
        """Answer 403 to every request without *token* (stand-in only)."""
        self._standin("require_token").token = token
        self._token = token

    def filter_by_acl(self, token: str) -> None:
        """Act as an agent whose ACLs default to deny (stand-in only).

        Requests with *token* read everything; an unknown token gets 403 ``ACL not found``;
        without a token (the anonymous token, which may read nothing) the health endpoint
        answers 200 with an empty list and ``X-Consul-Results-Filtered-By-ACLs: true``.
        """
        state = self._standin("filter_by_acl")
        state.token, state.acl_filters = token, True
        self._token = token

    def echo_tokens(self) -> None:
        """Quote an unknown token in the 403, escaped as Go's ``%q`` does (stand-in only).

        Consul does not, but an agent or a proxy in front of it may: a token holding a
        quote or a backslash then reaches the client only in its escaped form.
        """
        self._standin("echo_tokens").echo_tokens = True

    def shuffle(self) -> None:
        """Return entries in a random order (stand-in only)."""
        self._standin("shuffle").shuffle = True

    def answer_raw(
        self, body: bytes, headers: Mapping[str, str] | None = None, status: int = 200
    ) -> None:
        """Answer every health query *status* with exactly *body* (stand-in only)."""
        self._standin("answer_raw").raw = (body, dict(headers or {}), status)

    def ignore_passing(self) -> None:
        """Act as an agent that ignores ``?passing`` (stand-in only)."""
        self._standin("ignore_passing").ignore_passing = True

    def pause(self) -> None:
        """Accept connections and never answer them (stand-in only)."""
        self._standin("pause").hang = True

    def lose_leader(self, last_contact: int = 0) -> None:
        """Act as a cluster without a leader (stand-in only): only stale and cached reads work.

        *last_contact* (milliseconds) is what stale reads report in ``X-Consul-LastContact``.
        """
        state = self._standin("lose_leader")
        state.leader, state.last_contact = False, last_contact

    def fall_behind(self, last_contact: int) -> None:
        """Act as a follower *last_contact* ms behind a leader that is still there (stand-in only).

        Stale and cached reads report it in ``X-Consul-LastContact``; the leader answers the rest.
        """
        self._standin("fall_behind").last_contact = last_contact

    def cut_off_cache(self, age: int) -> None:
        """Act as an agent cut off from the servers for *age* seconds (stand-in only).

        Cache hits then carry ``Age: <age>``, as the API docs' "Agent Caching" says.
        """
        self._standin("cut_off_cache").cache_age = age

    @property
    def requests(self) -> list[Request]:
        """Every request the stand-in received (stand-in only)."""
        with self._standin("requests").cond:
            return list(self._standin("requests").requests)

    def health_requests(self, service: str) -> list[Request]:
        """The ``/v1/health/service/<service>`` requests received (stand-in only)."""
        return [r for r in self.requests if r.path == f"/v1/health/service/{service}"]

    # --- catalog API ------------------------------------------------------------------------

    def _register(self, instance: Instance, status: str) -> None:
        self._put(
            "/v1/catalog/register",
            {
                "Node": instance.node,
                "Address": instance.node_address,
                "NodeMeta": dict(instance.node_meta),
                "Service": {
                    "ID": instance.service_id,
                    "Service": instance.service,
                    "Tags": list(instance.tags),
                    "Address": instance.service_address,
                    "Port": instance.port,
                },
                "Check": {
                    "Node": instance.node,
                    "CheckID": f"service:{instance.service_id}",
                    "Name": f"Service '{instance.service}' check",
                    "Status": status,
                    "ServiceID": instance.service_id,
                },
            },
        )

    def _put(self, path: str, body: Mapping[str, Any]) -> None:
        address = self.address if "://" in self.address else f"http://{self.address}"
        request = urllib.request.Request(
            address + path, data=json.dumps(body).encode(), method="PUT"
        )
        if self._token:
            request.add_header("X-Consul-Token", self._token)
        context = ssl.create_default_context(cafile=_REAL_CACERT) if _REAL_CACERT else None
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            reply.read()


@pytest.fixture(scope="session")
def consul_server() -> Iterator[ConsulServer | None]:
    """The session's Consul stand-in; None when a real agent (CONSUL_HTTP_ADDR) is used."""
    if REAL_CONSUL:
        yield None
        return
    server = ConsulServer(ConsulState()).start()
    yield server
    server.stop()


@pytest.fixture
def consul_agent(
    consul_server: ConsulServer | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConsulAgent]:
    """A Consul agent with an empty catalog: the stand-in, or the real one.

    With a real agent, its token and TLS files are put back into the environment
    (conftest clears CONSUL_* for every test), but not CONSUL_HTTP_ADDR: tests pass
    ``consul_agent.address`` explicitly.
    """
    if consul_server is None:
        assert REAL_CONSUL is not None
        for name, value in _REAL_ENV.items():
            monkeypatch.setenv(name, value)
        agent = ConsulAgent(REAL_CONSUL, None, _REAL_TOKEN)
    else:
        consul_server.state.reset()
        agent = ConsulAgent(consul_server.address, consul_server.state)
    yield agent
    agent.reset()


@pytest.fixture(scope="session")
def _consul_tls_server(
    consul_server: ConsulServer | None, tls_files: TLSFiles
) -> Iterator[ConsulServer | None]:
    if consul_server is None:
        yield None
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    server = ConsulServer(consul_server.state, context).start()
    yield server
    server.stop()


@pytest.fixture
def consul_tls_address(_consul_tls_server: ConsulServer | None, consul_agent: ConsulAgent) -> str:
    """``127.0.0.1:PORT`` of an https stand-in serving ``consul_agent``'s catalog."""
    if _consul_tls_server is None:
        pytest.skip("the https listener is part of the stand-in, not a real agent")
    return _consul_tls_server.address
