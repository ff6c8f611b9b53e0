"""ElastiCache clusters and serverless caches found through the AWS API: ``elasticache-api://NAME``."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

from ..exceptions import ConfigurationError, SourceError
from ..nodes import Node, unique_sorted
from ..tls import TLSConfig
from . import Traits
from ._url import Query

if TYPE_CHECKING:
    import boto3.session
    from mypy_boto3_elasticache import ElastiCacheClient

__all__ = ["ElastiCacheAPI", "nodes_from_clusters", "nodes_from_serverless"]

logger = logging.getLogger(__name__)

_OPTIONS = ("address", "ca", "endpoint_url", "profile", "region")
# ElastiCache cluster ids and serverless cache names: letters, digits and hyphens.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
# AWS access key ids (long-term AKIA…, temporary ASIA…); scrubbed from every message.
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
# Secret access keys are 40 characters of base64; session tokens are longer.
_SECRET = re.compile(r"[A-Za-z0-9/+=]{40,}")
_NOT_FOUND = {"CacheClusterNotFound", "ServerlessCacheNotFoundFault"}
_INSTALL = 'pip install "django-cache-settings[aws]"'

# boto3 Sessions load the shared config files and discover credentials (possibly from the
# instance metadata service) once; clients made from a cached session cost ~3 ms instead of
# ~50-150 ms. A Session is not thread-safe, so clients are created under the lock. The key
# includes a digest of the AWS_* environment, so a changed environment gets a new session.
_sessions: dict[tuple[str | None, str], boto3.session.Session] = {}
_sessions_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ElastiCacheAPI:
    """The available nodes of an ElastiCache memcached cluster, or one serverless cache.

    Asks ``DescribeCacheClusters`` (IAM: ``elasticache:DescribeCacheClusters``) and, when
    no cluster has that name, ``DescribeServerlessCaches``
    (``elasticache:DescribeServerlessCaches``). Credentials, region and endpoint come
    from boto3's standard chain; ``region``, ``profile`` and ``endpoint_url`` override it.
    The API names nodes by host name only, so ``address`` (``"ip"`` or ``"hostname"``)
    changes nothing here; it is accepted so URLs read like ``elasticache://`` ones.
    ``ca`` is the CA file that verifies a serverless cache's TLS endpoint.
    """

    name: str
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = field(default=None, repr=False)  # may carry credentials
    address: str = "ip"
    ca: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"elasticache-api://: invalid cluster or serverless cache name {self.name!r}; "
                "expected letters, digits and hyphens"
            )
        if self.address not in ("ip", "hostname"):
            raise ConfigurationError(
                f"{self.url}: address={self.address!r} must be 'ip' or 'hostname'"
            )
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    f"elasticache-api://{self.name}: endpoint_url must be an http(s):// URL"
                )
        object.__setattr__(self, "name", self.name.lower())

    @classmethod
    def from_url(cls, url: SplitResult) -> ElastiCacheAPI:
        """Build the source from ``elasticache-api://NAME?region=…&profile=…&endpoint_url=…``."""
        query = Query(url, _OPTIONS)
        where = query.where
        if "@" in url.netloc:
            raise ConfigurationError(
                f"{where}: credentials do not belong in the URL; use a profile= or "
                "boto3's environment variables"
            )
        name = unquote(url.netloc)
        path = url.path.strip("/")
        if name and path:
            raise ConfigurationError(f"{where}: unexpected path {url.path!r}")
        name = name or path
        if not name:
            raise ConfigurationError(f"{where}: no name; write elasticache-api://CLUSTER-ID")
        return cls(
            name,
            region=query.get("region") or None,
            profile=query.get("profile") or None,
            endpoint_url=query.get("endpoint_url") or None,
            address=query.choice("address", {"ip", "hostname"}, "ip"),
            ca=query.get("ca") or None,
        )

    @property
    def url(self) -> str:
        """Return the canonical URL: the name, then the options that were given, sorted."""
        endpoint = None
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            endpoint = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        params = {
            "address": None if self.address == "ip" else self.address,
            "ca": self.ca,
            "endpoint_url": endpoint,
            "profile": self.profile,
            "region": self.region,
        }
        query = urlencode({k: v for k, v in params.items() if v is not None}, safe="/:")
        return f"elasticache-api://{self.name}" + (f"?{query}" if query else "")

    @property
    def traits(self) -> Traits:
        """A serverless endpoint speaks TLS, verified with ``ca`` (else the default trust store)."""
        return Traits(node_tls_if_needed=TLSConfig(ca=self.ca))

    def resolve(self, timeout: float) -> list[Node]:
        """Ask the ElastiCache API once; return within *timeout* seconds or raise SourceError."""
        deadline = time.monotonic() + timeout
        try:
            import boto3  # noqa: F401  (only to fail early, with the fix, when it is missing)
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise ConfigurationError(
                f"{self.url}: the elasticache-api:// source needs boto3: {_INSTALL}"
            ) from exc

        try:
            with closing(self._client(deadline)) as client:
                try:
                    reply: Mapping[str, Any] = client.describe_cache_clusters(
                        CacheClusterId=self.name, ShowCacheNodeInfo=True
                    )
                except ClientError as exc:
                    if _error_code(exc) not in _NOT_FOUND:
                        raise
                else:
                    return nodes_from_clusters(reply, source=self.url)
            logger.debug("%s: no cluster %s, asking for a serverless cache", self.url, self.name)
            # No such cluster: maybe a serverless cache. The client's timeouts were fitted
            # to the whole attempt, so the second call gets a client fitted to what is left.
            with closing(self._client(deadline)) as client:
                try:
                    reply = client.describe_serverless_caches(ServerlessCacheName=self.name)
                except ClientError as exc:
                    if _error_code(exc) not in _NOT_FOUND:
                        raise
                    raise SourceError(
                        self.url,
                        f"no ElastiCache cluster or serverless cache named {self.name} "
                        f"in {self._region(client)}",
                    ) from None
                return nodes_from_serverless(reply, source=self.url)
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message") or ""
            raise SourceError(self.url, self._describe(_error_code(exc), message)) from None
        except BotoCoreError as exc:
            raise SourceError(self.url, self._describe(type(exc).__name__, str(exc))) from None

    def _client(self, deadline: float) -> ElastiCacheClient:
        """Return a new client whose timeouts fit in the time left before *deadline*."""
        import boto3.session
        from botocore.exceptions import NoRegionError, ProfileNotFound

        started = time.monotonic()
        if started >= deadline or not _sessions_lock.acquire(timeout=deadline - started):
            raise SourceError(self.url, "timed out before the ElastiCache API was asked")
        try:
            environ = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
            key = (self.profile, hashlib.sha256(repr(environ).encode()).hexdigest())
            session = _sessions.get(key)
            if session is None:
                if len(_sessions) >= 16:
                    _sessions.clear()
                session = _sessions[key] = boto3.session.Session(profile_name=self.profile)
            client = self._fitted_client(session, deadline)
            if time.monotonic() - started > 0.05 * (deadline - started):
                # A new session spent a noticeable share of the time loading the service
                # model and finding credentials after the timeouts were fixed; both are
                # cached now, so a second client (~3 ms) gets timeouts that still fit.
                client.close()
                client = self._fitted_client(session, deadline)
        except ProfileNotFound:
            raise ConfigurationError(
                f"{self.url}: AWS profile {self.profile!r} is not in the AWS config files"
            ) from None
        except NoRegionError:
            raise ConfigurationError(
                f"{self.url}: no AWS region; add ?region=… or set AWS_DEFAULT_REGION"
            ) from None
        finally:
            _sessions_lock.release()
        if time.monotonic() >= deadline:
            client.close()
            raise SourceError(self.url, "timed out while creating the ElastiCache client")
        return client

    def _region(self, client: ElastiCacheClient) -> str:
        return self.region or client.meta.region_name

    def _fitted_client(self, session: boto3.session.Session, deadline: float) -> ElastiCacheClient:
        from botocore.config import Config

        # Our resolver retries with back-off under a deadline, so botocore must not
        # retry too: one attempt, and timeouts that add up to the time left. The
        # connect share is small because a healthy endpoint connects in milliseconds.
        left = max(deadline - time.monotonic(), 0.001)
        config = Config(
            connect_timeout=left * 0.3,
            read_timeout=left * 0.7,
            # total_max_attempts counts the first call; max_attempts would count retries.
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent_extra="django-cache-settings",
        )
        # None for region_name / endpoint_url leaves boto3's own chain in charge
        # (AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_ELASTICACHE, profiles).
        return session.client(
            "elasticache", region_name=self.region, endpoint_url=self.endpoint_url, config=config
        )

    def _describe(self, code: str, text: str) -> str:
        """Return a message naming the cluster and the error, with every credential scrubbed."""
        # SignatureDoesNotMatch replies echo the canonical request, which may carry the
        # session token; keep the first line only, then remove any credential we know.
        text = _scrub(text.strip().splitlines()[0] if text.strip() else "")[:300]
        hint = ""
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            hint = (
                " (needs IAM permissions elasticache:DescribeCacheClusters and "
                "elasticache:DescribeServerlessCaches)"
            )
        reason = f"ElastiCache API error {code} for {self.name}"
        return f"{reason}: {text}{hint}" if text else reason + hint


def nodes_from_clusters(reply: Mapping[str, Any], *, source: str) -> list[Node]:
    """Return the available nodes of a ``DescribeCacheClusters`` reply (a memcached cluster).

    Nodes that are being created, rebooted or removed are left out. A reply with no
    available node, a non-memcached engine or an unexpected shape raises SourceError.
    """
    clusters = reply.get("CacheClusters")
    if not isinstance(clusters, list) or not clusters:
        raise SourceError(source, "DescribeCacheClusters reply lists no cluster")
    nodes: list[Node] = []
    for cluster in clusters:
        if not isinstance(cluster, Mapping):
            raise SourceError(
                source, f"DescribeCacheClusters reply has a malformed cluster {cluster!r}"
            )
        name = cluster.get("CacheClusterId", "?")
        _check_engine(cluster, source, f"cluster {name}")
        # A cluster that is still being created lists no CacheNodes at all.
        cache_nodes = cluster.get("CacheNodes", [])
        if not isinstance(cache_nodes, list):
            raise SourceError(source, f"cluster {name}: CacheNodes is not a list")
        available: list[Node] = []
        statuses: list[str] = []
        for item in cache_nodes:
            if not isinstance(item, Mapping) or not isinstance(item.get("CacheNodeStatus"), str):
                raise SourceError(source, f"cluster {name}: malformed cache node {item!r}")
            statuses.append(f"{item.get('CacheNodeId', '?')} {item['CacheNodeStatus']}")
            # DescribeCacheClusters: only "available" nodes serve; the others are being
            # created, rebooted, modified or deleted (and may list no Endpoint yet).
            if item["CacheNodeStatus"] == "available":
                available.append(_endpoint(item.get("Endpoint"), source, f"cluster {name}"))
        if not available:
            status = cluster.get("CacheClusterStatus", "unknown")
            detail = f"nodes: {', '.join(statuses)}" if statuses else "no nodes listed"
            raise SourceError(source, f"cluster {name} ({status}) has no available node ({detail})")
        nodes.extend(available)
    return list(unique_sorted(nodes))


def nodes_from_serverless(reply: Mapping[str, Any], *, source: str) -> list[Node]:
    """Return the one TLS endpoint of a ``DescribeServerlessCaches`` reply.

    Serverless caches accept only TLS, so the node has ``tls=True``; a cache whose
    status is not ``available`` raises SourceError naming the status.
    """
    caches = reply.get("ServerlessCaches")
    if not isinstance(caches, list) or len(caches) != 1 or not isinstance(caches[0], Mapping):
        raise SourceError(source, "DescribeServerlessCaches reply does not list exactly one cache")
    cache = caches[0]
    name = cache.get("ServerlessCacheName", "?")
    _check_engine(cache, source, f"serverless cache {name}")
    status = cache.get("Status")
    if status != "available":
        raise SourceError(source, f"serverless cache {name} is {status or 'of unknown status'}")
    node = _endpoint(cache.get("Endpoint"), source, f"serverless cache {name}")
    return [Node(node.host, node.port, tls=True)]


def _check_engine(item: Mapping[str, Any], source: str, what: str) -> None:
    engine = item.get("Engine")
    if not isinstance(engine, str):
        raise SourceError(source, f"{what}: reply names no Engine")
    if engine.lower() != "memcached":
        raise SourceError(
            source, f"{what} runs {engine}, not memcached; use a {engine} cache backend instead"
        )


def _endpoint(endpoint: object, source: str, what: str) -> Node:
    if not isinstance(endpoint, Mapping):
        raise SourceError(source, f"{what}: available node without an Endpoint")
    address, port = endpoint.get("Address"), endpoint.get("Port")
    if not isinstance(address, str) or not address:
        raise SourceError(source, f"{what}: Endpoint without an Address ({endpoint!r})")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SourceError(source, f"{what}: Endpoint {address} has an invalid Port {port!r}")
    return Node(address.lower(), port)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or type(exc).__name__)


def _scrub(text: str) -> str:
    """Remove anything shaped like an AWS credential, and the environment's own, from *text*."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _SECRET.sub("***", _ACCESS_KEY_ID.sub("***", text))
