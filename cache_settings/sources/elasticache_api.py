"""ElastiCache clusters and serverless caches found through the AWS API: ``elasticache-api://NAME``.

Credentials never reach a message or a log line: errors are scrubbed here, and botocore's
own DEBUG records made during our calls (the signed request, the endpoint URL) are masked
by a filter on each of botocore's loggers (see :mod:`._aws` for what it does and leaves).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

from ..attempt import Attempt
from ..exceptions import ConfigurationError, SourceError, brief, cut, excerpt, some, word
from ..nodes import Node, canonical_host, is_host, unique_sorted
from ..redact import environment_secrets, redact_url, scrub
from ..tls import TLSConfig
from . import Traits, _aws
from ._budget import paced
from ._transport import within
from ._url import Query

__all__ = ["ElastiCacheAPI", "nodes_from_clusters", "nodes_from_serverless"]

logger = logging.getLogger(__name__)

_OPTIONS = ("address", "ca", "endpoint_url", "profile", "region")
# ElastiCache cluster ids and serverless cache names: letters, digits and hyphens.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
# botocore's own check of a region ("valid_host_label") ends in "$", which also matches
# before a trailing newline: a region of "\n" reached the request and failed there as a
# "malformed reply". One label of letters, digits and hyphens.
_REGION = re.compile(r"(?![0-9]+\Z)(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# AWS access key ids (long-term AKIA…, temporary ASIA…); scrubbed from every message.
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
# Secret access keys are 40 characters of base64; session tokens are longer.
_SECRET = re.compile(r"[A-Za-z0-9/+=]{40,}")
_NOT_FOUND = {"CacheClusterNotFound", "ServerlessCacheNotFoundFault"}
_INSTALL = 'pip install "django-cache-settings[aws]"'
# What a timeout names while boto3 looks for credentials (botocore's provider chain).
_CREDENTIALS = (
    "boto3's credential lookup: AWS_* variables, config files, then the container "
    "credentials or instance metadata endpoint"
)


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
                f"elasticache-api://: invalid cluster or serverless cache name {brief(self.name)}; "
                "expected letters, digits and hyphens"
            )
        if self.address not in ("ip", "hostname"):
            raise ConfigurationError(
                f"{self.url}: address={brief(self.address)} must be 'ip' or 'hostname'"
            )
        if self.region is not None and not _REGION.fullmatch(self.region):
            raise ConfigurationError(
                f"elasticache-api://{self.name}: region={brief(self.region)} is not an AWS "
                "region name, such as us-east-1"
            )
        for name in ("profile", "ca"):  # its URL would hold ?profile= that no URL may hold
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(
                    f"elasticache-api://{self.name}: {name}={brief(value)} must be a non-empty "
                    f"string, or None for boto3's default"
                )
            if value is not None and value != value.strip():
                raise ConfigurationError(
                    f"elasticache-api://{self.name}: {name}={brief(value)} has white space at "
                    "either end; remove it"
                )
        if self.endpoint_url is not None and not _is_endpoint(self.endpoint_url):
            raise ConfigurationError(
                f"elasticache-api://{self.name}: endpoint_url must be an http(s)://host[:port] "
                "URL, with a port 1..65535"
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
        # The endpoint without user info or secret options (https://h/?token=T), as
        # redact_url() drops them: this URL is the snapshot key and is printed.
        endpoint = None if self.endpoint_url is None else redact_url(self.endpoint_url)
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
        try:
            import boto3  # noqa: F401  (only to fail early, with the fix, when it is missing)
        except ImportError as exc:
            raise ConfigurationError(
                f"{self.url}: the elasticache-api:// source needs boto3: {_INSTALL}"
            ) from exc
        return within(self.url, timeout, self._resolve)

    def _resolve(self, attempt: Attempt) -> list[Node]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            InvalidRegionError,
            NoRegionError,
            ProfileNotFound,
        )

        # boto3 finds credentials as it makes the client (botocore's provider chain, which
        # may ask the instance metadata or container credentials endpoint); then _aws.client
        # names each later step (signing, the API request) in attempt.waiting_on.
        attempt.waiting_on = _CREDENTIALS
        try:
            with (
                _aws.checked_out(self.profile) as session,
                closing(_aws.client(session, attempt, self.region, self.endpoint_url)) as client,
            ):
                self._check_region(client.meta.region_name)
                try:
                    return nodes_from_clusters(
                        client.describe_cache_clusters(
                            CacheClusterId=self.name, ShowCacheNodeInfo=True
                        ),
                        source=self.url,
                        asked=self.name,
                    )
                except ClientError as exc:
                    if _error_code(exc) not in _NOT_FOUND:
                        raise
                logger.debug("%s: no cluster %s, asking for serverless caches", self.url, self.name)
                try:
                    reply = client.describe_serverless_caches(ServerlessCacheName=self.name)
                except ClientError as exc:
                    if _error_code(exc) not in _NOT_FOUND:
                        raise
                    raise SourceError(
                        self.url,
                        f"no ElastiCache cluster or serverless cache named {self.name} "
                        f"in {self.region or client.meta.region_name}",
                    ) from None
                return nodes_from_serverless(reply, source=self.url, asked=self.name)
        except ProfileNotFound:
            raise ConfigurationError(
                f"{self.url}: AWS profile {brief(self.profile)} is not in the AWS config files"
            ) from None
        except InvalidRegionError as exc:  # botocore refused the region its chain found
            raise self._bad_region(exc.kwargs.get("region_name")) from None
        except NoRegionError:
            raise ConfigurationError(
                f"{self.url}: no AWS region; add ?region=… or set AWS_DEFAULT_REGION"
            ) from None
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message") or ""
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise SourceError(
                self.url, self._describe(_error_code(exc), str(message)), permanent=status == 403
            ) from None
        except BotoCoreError as exc:
            raise SourceError(self.url, self._describe(type(exc).__name__, str(exc))) from None
        except (SourceError, ConfigurationError):
            raise
        except UnicodeEncodeError:  # botocore's SigV4 encodes the secret key as UTF-8, strictly
            raise SourceError(
                self.url,
                "the AWS credentials hold bytes that are not UTF-8 text (a variable or file "
                "written in another encoding?), so botocore cannot sign the request; set them "
                "again as plain text",
                permanent=True,
            ) from None
        except Exception as exc:  # botocore meeting a hostile reply: whatever it raises
            raise SourceError(
                self.url, f"malformed ElastiCache API reply ({type(exc).__name__})"
            ) from None

    def _check_region(self, region: object) -> None:
        """Refuse a region from boto3's chain (environment, profile) that is not one label."""
        if self.region is None and not (isinstance(region, str) and _REGION.fullmatch(region)):
            raise self._bad_region(region)

    def _bad_region(self, region: object) -> ConfigurationError:
        where = "" if self.region else " (from AWS_REGION, AWS_DEFAULT_REGION or the profile)"
        return ConfigurationError(
            f"{self.url}: the AWS region {brief(region)}{where} is not a region name, such as "
            "us-east-1"
        )

    def _describe(self, code: str, text: str) -> str:
        """Return a message naming the cluster and the error, with every credential scrubbed."""
        # SignatureDoesNotMatch replies echo the canonical request, which may carry the
        # session token; keep the first line only, then remove any credential we know.
        # Escaped and cut once scrubbed: a cut must not split a credential.
        text = excerpt(_scrub(text.strip().splitlines()[0] if text.strip() else ""))
        hint = ""
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            hint = (
                " (needs IAM permissions elasticache:DescribeCacheClusters and "
                "elasticache:DescribeServerlessCaches)"
            )
        elif code == "NoCredentialsError":
            hint = (
                " (boto3's chain found no credentials: on EKS give the pod's service account an "
                "IAM role, through IRSA or EKS Pod Identity; elsewhere set AWS_PROFILE or an "
                "instance role)"
            )
        reason = f"ElastiCache API error {word(_scrub(code))} for {self.name}"
        return f"{reason}: {text}{hint}" if text else reason + hint


def nodes_from_clusters(
    reply: Mapping[str, Any], *, source: str, asked: str | None = None
) -> list[Node]:
    """Return the available nodes of a ``DescribeCacheClusters`` reply (a memcached cluster).

    Nodes that are being created, rebooted or removed are left out. A reply with no
    available node, a non-memcached engine or an unexpected shape raises SourceError, and
    so does one that lists a cluster other than *asked* (when given).
    """
    clusters = reply.get("CacheClusters")
    if not isinstance(clusters, list) or not clusters:
        raise SourceError(source, "DescribeCacheClusters reply lists no cluster")
    nodes: list[Node] = []
    for cluster in clusters:
        if not isinstance(cluster, Mapping):
            raise SourceError(
                source, f"DescribeCacheClusters reply has a malformed cluster {brief(cluster)}"
            )
        _check_name(cluster.get("CacheClusterId"), asked, source, "cluster")
        name = word(cluster.get("CacheClusterId", "?"))
        _check_engine(cluster, source, f"cluster {name}")
        # A cluster that is still being created lists no CacheNodes at all.
        cache_nodes = cluster.get("CacheNodes", [])
        if not isinstance(cache_nodes, list):
            raise SourceError(source, f"cluster {name}: CacheNodes is not a list")
        available: list[Node] = []
        statuses: list[str] = []
        for item in paced(cache_nodes):
            if not isinstance(item, Mapping) or not isinstance(item.get("CacheNodeStatus"), str):
                raise SourceError(source, f"cluster {name}: malformed cache node {brief(item)}")
            statuses.append(f"{word(item.get('CacheNodeId', '?'))} {word(item['CacheNodeStatus'])}")
            # DescribeCacheClusters: only "available" nodes serve; the others are being
            # created, rebooted, modified or deleted (and may list no Endpoint yet).
            if item["CacheNodeStatus"] == "available":
                available.append(_endpoint(item.get("Endpoint"), source, f"cluster {name}"))
        if not available:
            status = word(cluster.get("CacheClusterStatus", "unknown"))
            detail = some(statuses, "nodes", show=cut) if statuses else "no nodes listed"
            raise SourceError(source, f"cluster {name} ({status}) has no available node ({detail})")
        nodes.extend(available)
    return list(unique_sorted(nodes))


def nodes_from_serverless(
    reply: Mapping[str, Any], *, source: str, asked: str | None = None
) -> list[Node]:
    """Return the one TLS endpoint of a ``DescribeServerlessCaches`` reply.

    Serverless caches accept only TLS, so the node has ``tls=True``; a cache whose
    status is not ``available``, or that is not *asked* (when given), raises SourceError.
    """
    caches = reply.get("ServerlessCaches")
    if not isinstance(caches, list) or len(caches) != 1 or not isinstance(caches[0], Mapping):
        raise SourceError(source, "DescribeServerlessCaches reply does not list exactly one cache")
    cache = caches[0]
    _check_name(cache.get("ServerlessCacheName"), asked, source, "serverless cache")
    name = word(cache.get("ServerlessCacheName", "?"))
    _check_engine(cache, source, f"serverless cache {name}")
    status = cache.get("Status")
    if status != "available":
        shown = word(status) if status else "of unknown status"
        raise SourceError(source, f"serverless cache {name} is {shown}")
    node = _endpoint(cache.get("Endpoint"), source, f"serverless cache {name}")
    return [Node(node.host, node.port, tls=True)]


def _check_name(listed: object, asked: str | None, source: str, kind: str) -> None:
    """Raise SourceError when a reply lists another cache than *asked* (names: any case).

    AWS answers only the one named in the request; an endpoint that ignores the name (an
    emulator, a proxy, a wrong ``endpoint_url``) would add another cache's nodes.
    """
    if asked is not None and not (isinstance(listed, str) and listed.lower() == asked.lower()):
        raise SourceError(
            source,
            f"the reply lists {kind} {brief(listed)}, not {asked}, which was asked for: "
            "does endpoint_url name an ElastiCache API that honours the name?",
        )


def _check_engine(item: Mapping[str, Any], source: str, what: str) -> None:
    engine = item.get("Engine")
    if not isinstance(engine, str):
        raise SourceError(source, f"{what}: reply names no Engine")
    if engine.lower() != "memcached":
        shown = word(engine)
        raise SourceError(
            source, f"{what} runs {shown}, not memcached; use a {shown} cache backend instead"
        )


def _endpoint(endpoint: object, source: str, what: str) -> Node:
    if not isinstance(endpoint, Mapping):
        raise SourceError(source, f"{what}: available node without an Endpoint")
    address, port = endpoint.get("Address"), endpoint.get("Port")
    if not isinstance(address, str) or not address:
        raise SourceError(source, f"{what}: Endpoint without an Address ({brief(address)})")
    if not is_host(address):  # never a path or a list a client would read otherwise
        raise SourceError(
            source, f"{what}: Endpoint Address {brief(address)} is not a host name or IP"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SourceError(source, f"{what}: Endpoint {address} has an invalid Port {brief(port)}")
    return Node(canonical_host(address), port)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or type(exc).__name__)


def _scrub(text: str) -> str:
    """Remove anything shaped like an AWS credential, and the environment's own, from *text*."""
    text = scrub(_aws.mask_signed(text), environment_secrets())
    return _SECRET.sub("***", _ACCESS_KEY_ID.sub("***", text))


def _is_endpoint(url: str) -> bool:
    """Return True when *url* is ``http(s)://host[:port]…`` that urllib can take apart."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError past 65535 or for text
    except ValueError:  # an unclosed "[" of an IPv6 literal
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0
