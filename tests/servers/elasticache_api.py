"""A stand-in of the ElastiCache Query API that real boto3 talks to over HTTP.

It follows botocore's service model (``botocore/data/elasticache/2015-02-02/service-2.json``):
``POST /`` with a form body ``Action=DescribeCacheClusters&Version=2015-02-02&…``, XML
replies wrapped in ``<ActionResponse><ActionResult>``, and query-protocol errors
``<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>``
with the model's HTTP status (404 for ``CacheClusterNotFound`` and
``ServerlessCacheNotFoundFault``). Every request must carry a valid SigV4 signature made
with the configured key pair, as AWS checks it.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = ["CacheNode", "ElastiCacheAPIServer", "Request", "elasticache_api"]

XMLNS = "http://elasticache.amazonaws.com/doc/2015-02-02/"
ACCESS_KEY = "AKIASTANDIN7EXAMPLE1"
SECRET_KEY = "stand-in/Secret+Key/0123456789abcdefABCDEFG"
ACCOUNT = "123456789012"

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
    r"Signature=(?P<sig>[0-9a-f]+)"
)


@dataclass(frozen=True)
class CacheNode:
    """One node of a provisioned cluster, as DescribeCacheClusters lists it."""

    address: str
    port: int = 11211
    status: str = "available"


@dataclass(frozen=True)
class Request:
    """One signed request the stand-in received."""

    action: str
    params: dict[str, str]
    access_key: str
    region: str
    user_agent: str


@dataclass
class _Cluster:
    name: str
    engine: str
    status: str
    nodes: list[CacheNode]


@dataclass
class _Serverless:
    name: str
    address: str
    port: int
    engine: str
    status: str


@dataclass
class ElastiCacheAPIServer:
    """The stand-in's state; tests add clusters and pick failure modes through it."""

    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    clusters: dict[str, _Cluster] = field(default_factory=dict)
    serverless: dict[str, _Serverless] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    mode: str | None = None  # None, "throttle", "access_denied", "hang"
    raw: tuple[int, bytes] | None = None  # (status, body) answered to every signed request
    mode_actions: frozenset[str] | None = None  # None: every action
    # An emulator or proxy that ignores CacheClusterId / ServerlessCacheName: every cluster
    # (every serverless cache) is listed whatever was asked.
    ignore_names: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    endpoint_url: str = ""

    @property
    def credentials_env(self) -> dict[str, str]:
        """Return the AWS_* variables that make boto3 sign with the accepted key pair."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def add_cluster(
        self,
        name: str,
        nodes: Iterable[CacheNode | tuple[str, int] | tuple[str, int, str]],
        *,
        engine: str = "memcached",
        status: str = "available",
    ) -> None:
        """List a provisioned cluster; *nodes* are ``(address, port[, status])`` or CacheNode."""
        listed = [n if isinstance(n, CacheNode) else CacheNode(*n) for n in nodes]
        with self.lock:
            self.clusters[name] = _Cluster(name, engine, status, listed)

    def add_serverless(
        self,
        name: str,
        address: str,
        port: int = 11211,
        *,
        engine: str = "memcached",
        status: str = "available",
    ) -> None:
        """List a serverless cache with one endpoint."""
        with self.lock:
            self.serverless[name] = _Serverless(name, address, port, engine, status)

    def fail(self, mode: str | None, actions: Iterable[str] | None = None) -> None:
        """Answer *actions* (default all) with ``throttle``, ``access_denied`` or ``hang``."""
        assert mode in (None, "throttle", "access_denied", "hang"), mode
        self.mode = mode
        self.mode_actions = frozenset(actions) if actions is not None else None

    def set_raw(self, status: int, body: bytes) -> None:
        """Answer every signed request with exactly *body* (``text/xml``) and *status*."""
        self.raw = (status, body)

    def actions(self) -> list[str]:
        """Return the actions received so far, in order."""
        with self.lock:
            return [r.action for r in self.requests]

    def reset(self) -> None:
        """Forget clusters, requests and modes; let hung requests go."""
        self.release.set()
        with self.lock:
            self.clusters.clear()
            self.serverless.clear()
            self.requests.clear()
        self.mode = None
        self.mode_actions = None
        self.ignore_names = False
        self.raw = None
        self.release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        action = params.pop("Action", "")
        if state.mode == "hang" and (state.mode_actions is None or action in state.mode_actions):
            # Accept, read, and never answer: a black-holed API endpoint.
            state.release.wait(60)
            self.close_connection = True
            return
        auth = _AUTH.fullmatch(self.headers.get("Authorization", ""))
        if auth is None:
            return self._error(
                403, "MissingAuthenticationToken", "Request is missing Authentication Token"
            )
        if auth["key"] != state.access_key:
            return self._error(
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            )
        canonical, expected = self._signature(auth, body, state)
        if auth["sig"] != expected:
            return self._error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.\n\n"
                f"The Canonical String for this request should have been\n'{canonical}'",
            )
        with state.lock:
            state.requests.append(
                Request(
                    action, params, auth["key"], auth["region"], self.headers.get("User-Agent", "")
                )
            )
        if state.raw is not None:
            return self._send(state.raw[0], state.raw[1], str(uuid.uuid4()))
        if state.mode and (state.mode_actions is None or action in state.mode_actions):
            if state.mode == "throttle":
                return self._error(400, "Throttling", "Rate exceeded")
            return self._error(
                403,
                "AccessDenied",
                f"User: arn:aws:iam::{ACCOUNT}:user/stand-in is not authorized to perform: "
                f"elasticache:{action} on resource: "
                f"arn:aws:elasticache:{auth['region']}:{ACCOUNT}:cluster:*",
            )
        if params.get("Version") != "2015-02-02":
            return self._error(400, "InvalidParameterValue", "Unsupported Version")
        if action == "DescribeCacheClusters":
            return self._describe_cache_clusters(params)
        if action == "DescribeServerlessCaches":
            return self._describe_serverless_caches(params)
        return self._error(400, "InvalidAction", f"Could not find operation {action}")

    def _signature(
        self, auth: re.Match[str], body: bytes, state: ElastiCacheAPIServer
    ) -> tuple[str, str]:
        signed = auth["signed"].split(";")
        headers = {name: self.headers.get(name, "") for name in signed}
        request = AWSRequest(
            # The path and query as sent: SigV4 signs both (a gateway's endpoint may hold them).
            method="POST",
            url=f"http://{self.headers['Host']}{self.path}",
            data=body,
            headers=headers,
        )
        request.context["timestamp"] = self.headers.get("X-Amz-Date", "")
        token = self.headers.get("X-Amz-Security-Token")
        signer = SigV4Auth(
            Credentials(state.access_key, state.secret_key, token), auth["service"], auth["region"]
        )
        canonical = signer.canonical_request(request)
        return canonical, signer.signature(signer.string_to_sign(request, canonical), request)

    def _describe_cache_clusters(self, params: dict[str, str]) -> None:
        name = params.get("CacheClusterId", "")
        state = self.server.state
        with state.lock:
            cluster = state.clusters.get(name)
            listed = list(state.clusters.values()) if state.ignore_names else [cluster]
        if cluster is None and not (state.ignore_names and listed):
            return self._error(404, "CacheClusterNotFound", f"CacheCluster not found: {name}")
        show_nodes = params.get("ShowCacheNodeInfo") == "true"
        xml = "".join(_cluster_xml(each, show_nodes) for each in listed if each is not None)
        self._reply("DescribeCacheClusters", f"<CacheClusters>{xml}</CacheClusters>")

    def _describe_serverless_caches(self, params: dict[str, str]) -> None:
        name = params.get("ServerlessCacheName", "")
        state = self.server.state
        with state.lock:
            cache = state.serverless.get(name)
            if cache is None and state.ignore_names and state.serverless:
                cache = next(iter(state.serverless.values()))
                name = cache.name
        if cache is None:
            return self._error(
                404, "ServerlessCacheNotFoundFault", f"Serverless cache {name} not found"
            )
        endpoint = f"<Address>{escape(cache.address)}</Address><Port>{cache.port}</Port>"
        # ServerlessCacheList members carry no locationName in the model: <member>.
        xml = (
            "<ServerlessCaches><member>"
            f"<ServerlessCacheName>{escape(cache.name)}</ServerlessCacheName>"
            "<CreateTime>2024-05-01T10:00:00.000Z</CreateTime>"
            f"<Status>{escape(cache.status)}</Status>"
            f"<Engine>{escape(cache.engine)}</Engine>"
            "<MajorEngineVersion>1.6</MajorEngineVersion><FullEngineVersion>1.6.22</FullEngineVersion>"
            + (
                f"<Endpoint>{endpoint}</Endpoint><ReaderEndpoint>{endpoint}</ReaderEndpoint>"
                if cache.status == "available"
                else ""
            )
            + f"<ARN>arn:aws:elasticache:us-east-1:{ACCOUNT}:serverlesscache:{escape(name)}</ARN>"
            "</member></ServerlessCaches>"
        )
        self._reply("DescribeServerlessCaches", xml)

    def _reply(self, action: str, result: str) -> None:
        request_id = str(uuid.uuid4())
        body = (
            f'<{action}Response xmlns="{XMLNS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</{action}Response>"
        ).encode()
        self._send(200, body, request_id)

    def _error(self, status: int, code: str, message: str) -> None:
        request_id = str(uuid.uuid4())
        kind = "Receiver" if status >= 500 else "Sender"
        body = (
            f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>{kind}</Type><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        self._send(status, body, request_id)

    def _send(self, status: int, body: bytes, request_id: str) -> None:
        self.send_response(status)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _cluster_xml(cluster: _Cluster, show_nodes: bool) -> str:
    nodes = "".join(_cache_node_xml(i, node) for i, node in enumerate(cluster.nodes, 1))
    return (
        "<CacheCluster>"
        f"<CacheClusterId>{escape(cluster.name)}</CacheClusterId>"
        "<ConfigurationEndpoint>"
        f"<Address>{escape(cluster.name)}.abc123.cfg.use1.cache.amazonaws.com</Address>"
        "<Port>11211</Port></ConfigurationEndpoint>"
        "<CacheNodeType>cache.t4g.micro</CacheNodeType>"
        f"<Engine>{escape(cluster.engine)}</Engine><EngineVersion>1.6.22</EngineVersion>"
        f"<CacheClusterStatus>{escape(cluster.status)}</CacheClusterStatus>"
        f"<NumCacheNodes>{len(cluster.nodes)}</NumCacheNodes>"
        "<PreferredAvailabilityZone>Multiple</PreferredAvailabilityZone>"
        "<CacheClusterCreateTime>2024-05-01T10:00:00.000Z</CacheClusterCreateTime>"
        + (f"<CacheNodes>{nodes}</CacheNodes>" if show_nodes else "")
        + "<AutoMinorVersionUpgrade>true</AutoMinorVersionUpgrade>"
        "<TransitEncryptionEnabled>false</TransitEncryptionEnabled>"
        f"<ARN>arn:aws:elasticache:us-east-1:{ACCOUNT}:cluster:{escape(cluster.name)}</ARN>"
        "</CacheCluster>"
    )


def _cache_node_xml(index: int, node: CacheNode) -> str:
    # DescribeCacheClusters: nodes still being provisioned are listed without an endpoint.
    endpoint = (
        f"<Endpoint><Address>{escape(node.address)}</Address><Port>{node.port}</Port></Endpoint>"
        if node.status != "creating"
        else ""
    )
    return (
        f"<CacheNode><CacheNodeId>{index:04d}</CacheNodeId>"
        f"<CacheNodeStatus>{escape(node.status)}</CacheNodeStatus>"
        "<CacheNodeCreateTime>2024-05-01T10:00:00.000Z</CacheNodeCreateTime>"
        f"{endpoint}<ParameterGroupStatus>in-sync</ParameterGroupStatus>"
        "<CustomerAvailabilityZone>us-east-1a</CustomerAvailabilityZone></CacheNode>"
    )


class _HTTPServer(ThreadingHTTPServer):
    state: ElastiCacheAPIServer


@pytest.fixture(scope="session")
def _elasticache_api_server() -> Iterator[ElastiCacheAPIServer]:
    server = _HTTPServer(("127.0.0.1", 0), _Handler)
    state = ElastiCacheAPIServer()
    server.state = state
    state.endpoint_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="elasticache-api", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def elasticache_api(
    _elasticache_api_server: ElastiCacheAPIServer,
) -> Iterator[ElastiCacheAPIServer]:
    """The ElastiCache API stand-in, empty and answering normally; ``.endpoint_url`` for boto3."""
    _elasticache_api_server.reset()
    try:
        yield _elasticache_api_server
    finally:
        _elasticache_api_server.reset()
