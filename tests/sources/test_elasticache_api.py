"""ElastiCacheAPI: real boto3 against the ElastiCache Query API stand-in (and real AWS, opt-in)."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from cache_settings import resolve
from cache_settings.exceptions import ConfigurationError, ResolutionError, SourceError
from cache_settings.nodes import Node
from cache_settings.sources import parse_source
from cache_settings.sources.elasticache_api import (
    ElastiCacheAPI,
    nodes_from_clusters,
    nodes_from_serverless,
)
from tests.helpers import LATE, without_host_aws
from tests.servers.elasticache_api import CacheNode, ElastiCacheAPIServer
from tests.servers.faults import Faults

# tests/conftest.py clears AWS_* for every test, so the opt-in real-AWS settings are
# captured when this module is imported.
_REAL_AWS = {
    k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "CACHE_SETTINGS_AWS_CLUSTER"
}

SOURCE = "elasticache-api://mc"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEStandInSessionToken" + "Zz9" * 40


@pytest.fixture
def aws_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, elasticache_api: ElastiCacheAPIServer
) -> ElastiCacheAPIServer:
    """Credentials the stand-in accepts, and nothing else from the host's AWS setup."""
    without_host_aws(monkeypatch, tmp_path)
    for name, value in elasticache_api.credentials_env.items():
        monkeypatch.setenv(name, value)
    return elasticache_api


def _source(api: ElastiCacheAPIServer, name: str = "mc", **kwargs: Any) -> ElastiCacheAPI:
    return ElastiCacheAPI(name, region="us-east-1", endpoint_url=api.endpoint_url, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_no_secret(
    api: ElastiCacheAPIServer, error: BaseException, source: ElastiCacheAPI
) -> None:
    for text in (str(error), repr(error), source.url, repr(source)):
        assert api.access_key not in text
        assert api.secret_key not in text
        assert SESSION_TOKEN not in text
        assert "Zz9Zz9" not in text


# --- provisioned clusters -------------------------------------------------------------------


def test_elasticache_api__available_nodes_only(aws_env: ElastiCacheAPIServer) -> None:
    aws_env.add_cluster(
        "mc",
        [
            ("mc.abc123.0001.use1.cache.amazonaws.com", 11211, "available"),
            ("mc.abc123.0002.use1.cache.amazonaws.com", 11211, "rebooting"),
            ("mc.abc123.0003.use1.cache.amazonaws.com", 11211, "creating"),
            ("mc.abc123.0004.use1.cache.amazonaws.com", 11211, "available"),
            ("mc.abc123.0005.use1.cache.amazonaws.com", 11211, "deleting"),
        ],
        status="modifying",
    )

    nodes = _source(aws_env).resolve(timeout=5)

    assert nodes == [
        Node("mc.abc123.0001.use1.cache.amazonaws.com", 11211),
        Node("mc.abc123.0004.use1.cache.amazonaws.com", 11211),
    ]
    assert [n.location for n in nodes] == [
        "mc.abc123.0001.use1.cache.amazonaws.com:11211",
        "mc.abc123.0004.use1.cache.amazonaws.com:11211",
    ]


def test_elasticache_api__node_order_does_not_matter(aws_env: ElastiCacheAPIServer) -> None:
    listed = [
        ("c.example", 11211),
        ("a.example", 11213),
        ("b.example", 11211),
        ("a.example", 11212),
    ]
    aws_env.add_cluster("one", listed)
    aws_env.add_cluster("two", reversed(listed))

    first = _source(aws_env, "one").resolve(timeout=5)
    second = _source(aws_env, "two").resolve(timeout=5)

    assert first == second
    assert [n.location for n in first] == [
        "a.example:11212",
        "a.example:11213",
        "b.example:11211",
        "c.example:11211",
    ]


def test_elasticache_api__sends_documented_query(aws_env: ElastiCacheAPIServer) -> None:
    aws_env.add_cluster("mc", [("a.example", 11211)])

    _source(aws_env).resolve(timeout=5)

    (request,) = aws_env.requests
    assert request.action == "DescribeCacheClusters"
    assert request.params == {
        "Version": "2015-02-02",
        "CacheClusterId": "mc",
        "ShowCacheNodeInfo": "true",
    }
    assert request.region == "us-east-1"
    assert "django-cache-settings" in request.user_agent


def test_elasticache_api__no_available_node_raises_source_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    aws_env.add_cluster("mc", [("a.example", 11211, "rebooting"), ("b.example", 11211, "creating")])

    with pytest.raises(SourceError, match=r"cluster mc \(available\) has no available node") as err:
        _source(aws_env).resolve(timeout=5)

    assert "0001 rebooting" in str(err.value)


@pytest.mark.parametrize("engine", ["redis", "valkey"])
def test_elasticache_api__non_memcached_cluster_raises_source_error(
    aws_env: ElastiCacheAPIServer, engine: str
) -> None:
    aws_env.add_cluster("mc", [("a.example", 6379)], engine=engine)

    with pytest.raises(SourceError, match=f"cluster mc runs {engine}, not memcached"):
        _source(aws_env).resolve(timeout=5)


def test_elasticache_api__unknown_name_raises_source_error_naming_it(
    aws_env: ElastiCacheAPIServer,
) -> None:
    with pytest.raises(SourceError) as err:
        _source(aws_env, "ghost").resolve(timeout=5)

    assert err.value.reason == "no ElastiCache cluster or serverless cache named ghost in us-east-1"
    assert (
        err.value.source
        == f"elasticache-api://ghost?endpoint_url={aws_env.endpoint_url}&region=us-east-1"
    )
    assert aws_env.actions() == ["DescribeCacheClusters", "DescribeServerlessCaches"]


def test_elasticache_api__a_reply_listing_other_clusters_too_is_a_source_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    """An endpoint that ignores CacheClusterId (an emulator, a proxy) lists every cluster:
    the nodes of 'other' were added to those of 'mc'."""
    aws_env.add_cluster("mc", [("a.example", 11211)])
    aws_env.add_cluster("other", [("b.example", 11211)])
    aws_env.ignore_names = True

    with pytest.raises(SourceError, match="lists cluster 'other', not mc, which was asked for"):
        _source(aws_env).resolve(timeout=5)


def test_elasticache_api__a_reply_naming_another_cluster_is_a_source_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    """Its nodes were taken as those of the cluster asked for."""
    aws_env.add_cluster("other", [("b.example", 11211)])
    aws_env.ignore_names = True

    with pytest.raises(SourceError, match="lists cluster 'other', not mc"):
        _source(aws_env).resolve(timeout=5)
    assert _source(aws_env, "OTHER").resolve(timeout=5) == [Node("b.example", 11211)]


def test_elasticache_api__a_serverless_reply_naming_another_cache_is_a_source_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    aws_env.add_serverless("other", "other-x.serverless.use1.cache.amazonaws.com")
    aws_env.ignore_names = True

    with pytest.raises(SourceError, match="lists serverless cache 'other', not sl"):
        _source(aws_env, "sl").resolve(timeout=5)


@pytest.mark.parametrize(
    ("variable", "metadata_disabled"),
    [
        pytest.param("AWS_CONTAINER_CREDENTIALS_FULL_URI", "true", id="container"),
        pytest.param("AWS_EC2_METADATA_SERVICE_ENDPOINT", "false", id="instance-metadata"),
    ],
)
def test_elasticache_api__hung_credential_lookup__timeout_names_the_lookup(
    variable: str,
    metadata_disabled: str,
    faults: Faults,
    elasticache_api: ElastiCacheAPIServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A credentials endpoint that accepts and never answers: the API was never asked."""
    without_host_aws(monkeypatch, tmp_path)
    monkeypatch.setenv(variable, f"http://{faults.blackhole()}/")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", metadata_disabled)
    monkeypatch.setenv("AWS_METADATA_SERVICE_TIMEOUT", "30")
    monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1")
    elasticache_api.add_cluster("mc", [("10.0.0.1", 11211)])

    with pytest.raises(SourceError) as caught:
        _source(elasticache_api).resolve(timeout=1)

    assert caught.value.reason.startswith(
        "no complete answer within 1.00 s (waiting on boto3's credential lookup:"
    )
    assert elasticache_api.requests == []


# --- serverless caches ----------------------------------------------------------------------


def test_elasticache_api__serverless_fallback_yields_one_tls_node(
    aws_env: ElastiCacheAPIServer,
) -> None:
    aws_env.add_serverless("sl", "sl-abc123.serverless.use1.cache.amazonaws.com", 11211)

    nodes = _source(aws_env, "sl").resolve(timeout=5)

    assert nodes == [Node("sl-abc123.serverless.use1.cache.amazonaws.com", 11211, tls=True)]
    assert nodes[0].location == "sl-abc123.serverless.use1.cache.amazonaws.com:11211"
    assert aws_env.actions() == ["DescribeCacheClusters", "DescribeServerlessCaches"]
    assert aws_env.requests[1].params == {"Version": "2015-02-02", "ServerlessCacheName": "sl"}


@pytest.mark.parametrize("status", ["creating", "modifying", "deleting", "create-failed"])
def test_elasticache_api__serverless_not_available_raises_source_error(
    aws_env: ElastiCacheAPIServer, status: str
) -> None:
    aws_env.add_serverless("sl", "sl.example", status=status)

    with pytest.raises(SourceError, match=f"serverless cache sl is {status}$"):
        _source(aws_env, "sl").resolve(timeout=5)


def test_elasticache_api__serverless_valkey_raises_source_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    aws_env.add_serverless("sl", "sl.example", 6379, engine="valkey")

    with pytest.raises(SourceError, match="serverless cache sl runs valkey, not memcached"):
        _source(aws_env, "sl").resolve(timeout=5)


def test_elasticache_api__traits_verify_tls_nodes_with_ca(tmp_path: Path) -> None:
    source = ElastiCacheAPI("sl", ca=str(tmp_path / "ca.pem"))

    tls = source.traits.node_tls_if_needed
    assert tls is not None
    assert tls.ca == str(tmp_path / "ca.pem")
    assert source.traits.node_tls is None  # a cluster's nodes are plain until found otherwise
    default = ElastiCacheAPI("sl").traits.node_tls_if_needed
    assert default is not None
    assert default.ca is None


# --- API errors: named, never leaking a credential -------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code"), [("throttle", "Throttling"), ("access_denied", "AccessDenied")]
)
def test_elasticache_api__api_error_raises_source_error_without_secrets(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch, mode: str, code: str
) -> None:
    aws_env.add_cluster("mc", [("a.example", 11211)])
    aws_env.fail(mode)
    source = _source(aws_env)

    with pytest.raises(SourceError, match=f"ElastiCache API error {code} for mc") as err:
        source.resolve(timeout=5)

    assert err.value.source == source.url
    assert err.value.__cause__ is None
    _assert_no_secret(aws_env, err.value, source)
    assert aws_env.actions() == ["DescribeCacheClusters"], "botocore must not retry"


def test_elasticache_api__access_denied_names_iam_permissions(
    aws_env: ElastiCacheAPIServer,
) -> None:
    aws_env.fail("access_denied", actions=["DescribeServerlessCaches"])

    with pytest.raises(SourceError, match="AccessDenied") as err:
        _source(aws_env, "sl").resolve(timeout=5)

    assert "elasticache:DescribeServerlessCaches" in str(err.value)
    assert "elasticache:DescribeCacheClusters" in str(err.value)


def test_elasticache_api__wrong_secret_raises_source_error_without_secrets(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SignatureDoesNotMatch replies echo the canonical request, session token included."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "Wrong/Secret+Key/0123456789abcdefABCDEFG")
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    source = _source(aws_env)

    with pytest.raises(SourceError, match="SignatureDoesNotMatch for mc") as err:
        source.resolve(timeout=5)

    _assert_no_secret(aws_env, err.value, source)
    assert "Wrong/Secret" not in str(err.value)


def test_elasticache_api__unknown_access_key_raises_source_error(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000001")

    with pytest.raises(SourceError, match="InvalidClientTokenId for mc") as err:
        _source(aws_env).resolve(timeout=5)

    assert "AKIAUNKNOWNKEY000001" not in str(err.value)


def test_elasticache_api__no_credentials_raises_source_error(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(SourceError, match="NoCredentialsError for mc"):
        _source(aws_env).resolve(timeout=5)

    assert aws_env.requests == []


# --- boto3's standard configuration chain ---------------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_ELASTICACHE", "AWS_ENDPOINT_URL"])
def test_elasticache_api__standard_chain_supplies_endpoint_region_credentials(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, aws_env.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    aws_env.add_cluster("mc", [("a.example", 11211)])
    source = parse_source(SOURCE)

    nodes = source.resolve(timeout=5)

    assert nodes == [Node("a.example", 11211)]
    assert source.url == SOURCE
    (request,) = aws_env.requests
    assert (request.region, request.access_key) == ("eu-west-1", aws_env.access_key)


@pytest.mark.parametrize("region", ["us-east-1\n", "us east 1", "-us", "eu-west-1/x"])
def test_elasticache_api__a_bad_region_from_the_environment_is_a_configuration_error(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch, region: str
) -> None:
    """Not a "malformed reply" retried until the deadline: the setting is what is wrong."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_ELASTICACHE", aws_env.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    aws_env.add_cluster("mc", [("a.example", 11211)])

    with pytest.raises(ConfigurationError, match="AWS_DEFAULT_REGION or the profile") as info:
        parse_source(SOURCE).resolve(timeout=5)

    assert str(info.value).isprintable()
    assert aws_env.requests == []


def test_elasticache_api__url_options_win_over_environment(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ELASTICACHE", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    aws_env.add_cluster("mc", [("a.example", 11211)])
    source = parse_source(f"{SOURCE}?region=ap-south-1&endpoint_url={aws_env.endpoint_url}")

    nodes = source.resolve(timeout=5)

    assert nodes == [Node("a.example", 11211)]
    assert [r.region for r in aws_env.requests] == ["ap-south-1"]


def test_elasticache_api__profile_from_shared_files(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text(
        f"[profile standin]\nregion = ap-southeast-2\nendpoint_url = {aws_env.endpoint_url}\n"
    )
    credentials.write_text(
        f"[standin]\naws_access_key_id = {aws_env.access_key}\n"
        f"aws_secret_access_key = {aws_env.secret_key}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    aws_env.add_cluster("mc", [("a.example", 11211)])

    nodes = parse_source(f"{SOURCE}?profile=standin").resolve(timeout=5)

    assert nodes == [Node("a.example", 11211)]
    assert [r.region for r in aws_env.requests] == ["ap-southeast-2"]


def test_elasticache_api__rotated_credentials_file_is_read_after_a_failure(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A session whose credentials were refused is not lent again: the next attempt reads
    the credentials file afresh (rotated keys, an SSO or vault helper rewriting it)."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIAEXPIREDKEY000001\n"
        f"aws_secret_access_key = {aws_env.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    aws_env.add_cluster("mc", [("a.example", 11211)])
    source = _source(aws_env)
    with pytest.raises(SourceError, match="InvalidClientTokenId"):
        source.resolve(timeout=5)

    credentials.write_text(
        f"[default]\naws_access_key_id = {aws_env.access_key}\n"
        f"aws_secret_access_key = {aws_env.secret_key}\n"
    )

    assert source.resolve(timeout=5) == [Node("a.example", 11211)]


def test_elasticache_api__unknown_profile_raises_configuration_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    with pytest.raises(ConfigurationError, match="AWS profile 'nobody' is not in the AWS config"):
        _source(aws_env, profile="nobody").resolve(timeout=5)


def test_elasticache_api__no_region_raises_configuration_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    with pytest.raises(ConfigurationError, match=r"no AWS region; add \?region="):
        ElastiCacheAPI("mc", endpoint_url=aws_env.endpoint_url).resolve(timeout=5)


# --- time limits ----------------------------------------------------------------------------


@pytest.mark.usefixtures("without_collections")
def test_elasticache_api__hung_endpoint_raises_within_timeout(
    aws_env: ElastiCacheAPIServer,
) -> None:
    aws_env.fail("hang")
    timeout = 1.0

    started = time.monotonic()
    with pytest.raises(SourceError, match="no complete answer within 1.00 s from the ElastiCache"):
        _source(aws_env).resolve(timeout=timeout)
    elapsed = time.monotonic() - started

    assert elapsed < timeout + LATE


@pytest.mark.usefixtures("without_collections")
def test_elasticache_api__serverless_fallback_shares_the_timeout(
    aws_env: ElastiCacheAPIServer,
) -> None:
    """The second call gets only the time the first one left."""
    aws_env.fail("hang", actions=["DescribeServerlessCaches"])
    timeout = 1.0

    started = time.monotonic()
    # From the transport's read bound, or, on a loaded machine, from the attempt's own.
    with pytest.raises(SourceError, match="no complete answer within 1.00 s"):
        _source(aws_env, "sl").resolve(timeout=timeout)
    elapsed = time.monotonic() - started

    assert elapsed < timeout + LATE


def test_elasticache_api__refused_connection_raises_source_error(
    aws_env: ElastiCacheAPIServer,
) -> None:
    source = ElastiCacheAPI(
        "mc", region="us-east-1", endpoint_url=f"http://127.0.0.1:{_free_port()}"
    )

    with pytest.raises(SourceError, match="cannot reach the ElastiCache API endpoint .*refused"):
        source.resolve(timeout=2)


def test_elasticache_api__no_time_left_raises_source_error(aws_env: ElastiCacheAPIServer) -> None:
    with pytest.raises(SourceError, match="no time left"):
        _source(aws_env).resolve(timeout=0)

    assert aws_env.requests == []


# --- end to end with real memcached ---------------------------------------------------------


def test_elasticache_api__pylibmc_uses_resolved_nodes(
    aws_env: ElastiCacheAPIServer, memcached_nodes: list[Any]
) -> None:
    import pylibmc

    aws_env.add_cluster(
        "mc",
        [CacheNode("127.0.0.1", server.port) for server in memcached_nodes]
        + [CacheNode("127.0.0.1", _free_port(), status="rebooting")],
    )

    nodes = _source(aws_env).resolve(timeout=5)

    assert [n.location for n in nodes] == sorted(s.location for s in memcached_nodes)
    client = pylibmc.Client([n.location for n in nodes], behaviors={"ketama": True})
    try:
        values = {f"key-{i}": f"value-{i}" for i in range(30)}
        client.set_multi(values)
        assert client.get_multi(list(values)) == values
    finally:
        client.disconnect_all()


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected", "canonical"),
    [
        ("elasticache-api://mc", ElastiCacheAPI("mc"), "elasticache-api://mc"),
        ("elasticache-api://MC-Prod", ElastiCacheAPI("mc-prod"), "elasticache-api://mc-prod"),
        ("elasticache-api:///mc", ElastiCacheAPI("mc"), "elasticache-api://mc"),
        (
            "elasticache-api://mc?region=eu-west-1&profile=ops",
            ElastiCacheAPI("mc", region="eu-west-1", profile="ops"),
            "elasticache-api://mc?profile=ops&region=eu-west-1",
        ),
        (
            "elasticache-api://mc?endpoint_url=http%3A%2F%2F127.0.0.1%3A4566&address=hostname",
            ElastiCacheAPI("mc", endpoint_url="http://127.0.0.1:4566", address="hostname"),
            "elasticache-api://mc?address=hostname&endpoint_url=http://127.0.0.1:4566",
        ),
        (
            "elasticache-api://sl?ca=/etc/ssl/aws.pem&address=ip",
            ElastiCacheAPI("sl", ca="/etc/ssl/aws.pem"),
            "elasticache-api://sl?ca=/etc/ssl/aws.pem",
        ),
    ],
)
def test_elasticache_api__from_url(url: str, expected: ElastiCacheAPI, canonical: str) -> None:
    source = parse_source(url)

    assert source == expected
    assert source.url == canonical
    assert parse_source(source.url) == source


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "elasticache-api://mc?regoin=eu-west-1",
            "unknown option 'regoin'; did you mean 'region'? elasticache-api:// accepts "
            "address, ca, endpoint_url, profile, region",
        ),
        ("elasticache-api://", "no name"),
        ("elasticache-api://mc/extra", "unexpected path"),
        ("elasticache-api://mc:11211", "invalid cluster or serverless cache name 'mc:11211'"),
        ("elasticache-api://mc_1", "invalid cluster or serverless cache name"),
        ("elasticache-api://mc?address=dns", "address='dns' must be one of hostname, ip"),
        ("elasticache-api://mc?endpoint_url=localhost:4566", "endpoint_url must be an http"),
        ("elasticache-api://mc?region=a&region=b", "option 'region' given more than once"),
        (
            "elasticache-api://AKIASTANDIN7EXAMPLE1:topsecretvalue@mc",
            "credentials do not belong in the URL",
        ),
    ],
)
def test_elasticache_api__from_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("?", r"\?")) as err:
        ElastiCacheAPI.from_url(urlsplit(url))

    assert "topsecretvalue" not in str(err.value)
    assert "AKIASTANDIN7EXAMPLE1" not in str(err.value)


def test_elasticache_api__url_hides_endpoint_user_info() -> None:
    source = ElastiCacheAPI("mc", endpoint_url="https://user:topsecretvalue@proxy.example:8443")

    assert source.url == "elasticache-api://mc?endpoint_url=https://proxy.example:8443"


def test_elasticache_api__url_hides_secret_options_of_the_endpoint() -> None:
    """The endpoint's own query (a gateway's ``?token=``) is as secret as its user info."""
    source = parse_source(
        "elasticache-api://mc?endpoint_url=https%3A%2F%2Fgw.example%2Fv1%3Ftoken%3Dtopsecretvalue"
    )

    assert source.url == "elasticache-api://mc?endpoint_url=https://gw.example/v1"


def test_elasticache_api__a_secret_key_that_is_not_utf8_is_named_as_the_cause(
    aws_env: ElastiCacheAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte that is not UTF-8 in the variable ("\\udcff" in os.environ) fails SigV4 signing."""
    aws_env.add_cluster("mc", [("a.example", 11211)])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stand-in\udcffkey")

    with pytest.raises(SourceError, match="credentials hold bytes that are not UTF-8") as raised:
        _source(aws_env).resolve(5.0)

    assert raised.value.permanent
    assert aws_env.actions() == []


def test_elasticache_api__import_does_not_import_boto3() -> None:
    code = (
        "import sys, cache_settings.sources.elasticache_api; "
        "print('boto3' in sys.modules, 'botocore' in sys.modules)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.split() == ["False", "False"]


# --- pure reply parsers ---------------------------------------------------------------------

_NODE = {"CacheNodeId": "0001", "CacheNodeStatus": "available"}
_ENDPOINT = {"Address": "a.example", "Port": 11211}


def _cluster(**fields: Any) -> dict[str, Any]:
    cluster = {
        "CacheClusterId": "mc",
        "Engine": "memcached",
        "CacheClusterStatus": "available",
        "CacheNodes": [{**_NODE, "Endpoint": _ENDPOINT}],
    }
    cluster.update(fields)
    return {"CacheClusters": [cluster]}


MALFORMED_CLUSTER_REPLIES = {
    "no CacheClusters": {},
    "empty CacheClusters": {"CacheClusters": []},
    "CacheClusters not a list": {"CacheClusters": {"mc": {}}},
    "cluster not a dict": {"CacheClusters": ["mc"]},
    "no Engine": {"CacheClusters": [{"CacheClusterId": "mc", "CacheNodes": []}]},
    "redis": _cluster(Engine="redis"),
    "CacheNodes not a list": _cluster(CacheNodes={"0001": {}}),
    "no CacheNodes (creating)": {
        "CacheClusters": [{"CacheClusterId": "mc", "Engine": "memcached"}]
    },
    "node not a dict": _cluster(CacheNodes=["a.example:11211"]),
    "node without status": _cluster(CacheNodes=[{"Endpoint": _ENDPOINT}]),
    "available node without Endpoint": _cluster(CacheNodes=[_NODE]),
    "Endpoint not a dict": _cluster(CacheNodes=[{**_NODE, "Endpoint": "a.example:11211"}]),
    "Endpoint without Address": _cluster(CacheNodes=[{**_NODE, "Endpoint": {"Port": 11211}}]),
    "empty Address": _cluster(CacheNodes=[{**_NODE, "Endpoint": {"Address": "", "Port": 1}}]),
    "Endpoint without Port": _cluster(CacheNodes=[{**_NODE, "Endpoint": {"Address": "a"}}]),
    "Port a string": _cluster(CacheNodes=[{**_NODE, "Endpoint": {"Address": "a", "Port": "1"}}]),
    "Port a bool": _cluster(CacheNodes=[{**_NODE, "Endpoint": {"Address": "a", "Port": True}}]),
    "Port 0": _cluster(CacheNodes=[{**_NODE, "Endpoint": {"Address": "a", "Port": 0}}]),
    "Port too big": _cluster(CacheNodes=[{**_NODE, "Endpoint": {"Address": "a", "Port": 70000}}]),
    "only rebooting nodes": _cluster(
        CacheNodes=[{**_NODE, "CacheNodeStatus": "rebooting", "Endpoint": _ENDPOINT}]
    ),
}


@pytest.mark.parametrize("reply", MALFORMED_CLUSTER_REPLIES.values(), ids=MALFORMED_CLUSTER_REPLIES)
def test_nodes_from_clusters__malformed_reply_raises_source_error(reply: dict[str, Any]) -> None:
    with pytest.raises(SourceError) as err:
        nodes_from_clusters(reply, source=SOURCE)

    assert err.value.source == SOURCE


def test_nodes_from_clusters__deduplicates_and_sorts() -> None:
    reply = _cluster(
        CacheNodes=[
            {**_NODE, "Endpoint": {"Address": "B.example", "Port": 11211}},
            {**_NODE, "CacheNodeStatus": "creating"},
            {**_NODE, "Endpoint": {"Address": "a.example", "Port": 11211}},
            {**_NODE, "Endpoint": {"Address": "b.example", "Port": 11211}},
        ]
    )

    assert nodes_from_clusters(reply, source=SOURCE) == [
        Node("a.example", 11211),
        Node("b.example", 11211),
    ]


def _serverless(**fields: Any) -> dict[str, Any]:
    cache = {
        "ServerlessCacheName": "sl",
        "Engine": "memcached",
        "Status": "available",
        "Endpoint": _ENDPOINT,
    }
    cache.update(fields)
    return {"ServerlessCaches": [cache]}


MALFORMED_SERVERLESS_REPLIES = {
    "no ServerlessCaches": {},
    "empty ServerlessCaches": {"ServerlessCaches": []},
    "two caches": {"ServerlessCaches": [_serverless(), _serverless()]},
    "cache not a dict": {"ServerlessCaches": ["sl"]},
    "no Engine": _serverless(Engine=None),
    "redis": _serverless(Engine="redis"),
    "no Status": _serverless(Status=None),
    "creating": _serverless(Status="creating"),
    "no Endpoint": _serverless(Endpoint=None),
    "Endpoint without Port": _serverless(Endpoint={"Address": "sl.example"}),
    "Port a string": _serverless(Endpoint={"Address": "sl.example", "Port": "11211"}),
}


@pytest.mark.parametrize(
    "reply", MALFORMED_SERVERLESS_REPLIES.values(), ids=MALFORMED_SERVERLESS_REPLIES
)
def test_nodes_from_serverless__malformed_reply_raises_source_error(reply: dict[str, Any]) -> None:
    with pytest.raises(SourceError) as err:
        nodes_from_serverless(reply, source=SOURCE)

    assert err.value.source == SOURCE


def test_nodes_from_serverless__one_tls_node() -> None:
    assert nodes_from_serverless(_serverless(), source=SOURCE) == [
        Node("a.example", 11211, tls=True)
    ]


# --- real AWS (opt-in) ----------------------------------------------------------------------


@pytest.mark.real_aws
@pytest.mark.skipif(
    not _REAL_AWS.get("CACHE_SETTINGS_AWS_CLUSTER"),
    reason="set CACHE_SETTINGS_AWS_CLUSTER (and AWS credentials/region) to test against real AWS",
)
def test_elasticache_api__real_aws_lists_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _REAL_AWS.items():
        monkeypatch.setenv(name, value)
    source = parse_source(f"elasticache-api://{_REAL_AWS['CACHE_SETTINGS_AWS_CLUSTER']}")

    nodes = source.resolve(timeout=10)

    assert nodes
    assert all(n.host.endswith(".amazonaws.com") and 0 < n.port < 65536 for n in nodes)


def test_elasticache_api__credentials_in_endpoint_url_stay_out_of_repr_url_and_errors() -> None:
    url = "elasticache-api://mc?endpoint_url=http%3A%2F%2FAKIAXX%3AS3CRETPW%40localhost%3A1"
    source = parse_source(url)

    with pytest.raises(ConfigurationError) as raised:
        parse_source(url + "&colour=blue")

    for text in (repr(source), source.url, str(raised.value)):
        assert "S3CRETPW" not in text
        assert "AKIAXX" not in text


# --- endpoint_url user info never leaves the source (issue 13) -------------------------------

USER_INFO = "mc-user:Pa55w0rd%21Secret"


@pytest.mark.parametrize("endpoint", ["stand-in", "refused"])
def test_elasticache_api__endpoint_user_info_stays_in_the_source(
    aws_env: ElastiCacheAPIServer, caplog: pytest.LogCaptureFixture, endpoint: str
) -> None:
    """Not in exceptions, messages, logs at DEBUG (botocore's included), nor on the wire."""
    aws_env.add_cluster("mc", [("a.example", 11211)])
    host = (
        aws_env.endpoint_url.split("//", 1)[1]
        if endpoint == "stand-in"
        else (f"127.0.0.1:{_free_port()}")
    )
    url = f"elasticache-api://mc?region=us-east-1&endpoint_url=http://{USER_INFO}@{host}"
    caplog.set_level(logging.DEBUG)

    if endpoint == "stand-in":
        outcome: object = resolve(url, attempts=1, deadline=5)
    else:
        with pytest.raises(ResolutionError) as raised:
            resolve(url, attempts=1, deadline=5)
        outcome = raised.value
        assert "cannot reach the ElastiCache API endpoint" in str(outcome)

    source = parse_source(url)
    for text in (str(outcome), repr(outcome), caplog.text, source.url, repr(source)):
        for secret in ("Pa55w0rd", "mc-user", "Pa55w0rd%21", "Pa55w0rd!"):
            assert secret not in text
    assert any(r.name.startswith("botocore") for r in caplog.records), "botocore logged nothing"


def test_elasticache_api__access_denied_is_permanent_and_throttling_is_not(
    aws_env: ElastiCacheAPIServer,
) -> None:
    aws_env.fail("access_denied")
    with pytest.raises(SourceError) as denied:
        _source(aws_env).resolve(timeout=5)
    aws_env.fail("throttle")
    with pytest.raises(SourceError) as throttled:
        _source(aws_env).resolve(timeout=5)

    assert denied.value.permanent
    assert not throttled.value.permanent


def test_elasticache_api__unknown_endpoint_host_is_permanent(aws_env: ElastiCacheAPIServer) -> None:
    source = ElastiCacheAPI(
        "mc", region="us-east-1", endpoint_url="http://no-such-endpoint.invalid:4566"
    )

    with pytest.raises(SourceError, match="unknown host name") as info:
        source.resolve(timeout=3)

    assert info.value.permanent


# --- botocore's own DEBUG logs during our calls (issue 13) ------------------------------------

_SIGNATURE = re.compile(r"Signature[=:]\s*[0-9a-f]{64}", re.IGNORECASE)


def _assert_no_credentials(api: ElastiCacheAPIServer, text: str) -> None:
    for secret in (SESSION_TOKEN, api.access_key, api.secret_key):
        assert text.count(secret) == 0
    assert not _SIGNATURE.search(text)


@pytest.mark.parametrize("where", ["environment", "profile"])
def test_elasticache_api__botocore_debug_logs_hold_no_credential(
    aws_env: ElastiCacheAPIServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    """Root at DEBUG, a session token set: botocore still logs the request, masked."""
    if where == "environment":
        monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    else:  # credentials the environment does not name: masked by their shape
        credentials = tmp_path / "credentials"
        credentials.write_text(
            f"[standin]\naws_access_key_id = {aws_env.access_key}\n"
            f"aws_secret_access_key = {aws_env.secret_key}\n"
            f"aws_session_token = {SESSION_TOKEN}\n"
        )
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    aws_env.add_cluster("mc", [("a.example", 11211)])
    profile = "" if where == "environment" else "&profile=standin"
    caplog.set_level(logging.DEBUG)

    resolve(f"{SOURCE}?region=us-east-1&endpoint_url={aws_env.endpoint_url}{profile}", attempts=1)

    _assert_no_credentials(aws_env, caplog.text)
    signed = "\n".join(
        r.getMessage() for r in caplog.records if r.name in ("botocore.auth", "botocore.endpoint")
    )
    assert "x-amz-security-token:***" in signed  # the canonical request, masked
    assert "'X-Amz-Security-Token': b'***', 'Authorization': b'***'" in signed  # the headers
    assert "Signature:\n***" in signed


def test_elasticache_api__botocore_debug_logs_hold_no_token_of_the_endpoint_url(
    aws_env: ElastiCacheAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway's ``?token=`` in endpoint_url: botocore.regions logs the endpoint it resolves,
    and every logger of botocore's is masked, not only the two that print signatures."""
    aws_env.add_cluster("mc", [("a.example", 11211)])
    caplog.set_level(logging.DEBUG)
    endpoint = quote(f"{aws_env.endpoint_url}/?token=topsecretvalue", safe="")

    answer = resolve(f"{SOURCE}?region=us-east-1&endpoint_url={endpoint}", attempts=1)

    assert answer.nodes == (Node("a.example", 11211),)  # signed with its query, as SigV4 does
    assert "topsecretvalue" not in caplog.text
    regions = [r.getMessage() for r in caplog.records if r.name == "botocore.regions"]
    assert any("token=***" in message for message in regions)


def test_elasticache_api__log_masking_touches_only_our_calls(
    aws_env: ElastiCacheAPIServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    aws_env.add_cluster("mc", [("a.example", 11211)])
    _source(aws_env).resolve(timeout=5)  # installs the filter
    caplog.set_level(logging.DEBUG)
    theirs = boto3.session.Session().client(
        "elasticache", region_name="us-east-1", endpoint_url=aws_env.endpoint_url
    )

    theirs.describe_cache_clusters(CacheClusterId="mc")

    assert f"x-amz-security-token:{SESSION_TOKEN}" in caplog.text


@pytest.mark.parametrize(
    ("address", "host"),
    [("MC-1.Example.", "mc-1.example"), ("2001:DB8:0::1", "2001:db8::1"),
     ("::ffff:a00:1", "::ffff:10.0.0.1")],
)  # fmt: skip
def test_elasticache_api__endpoint_address_is_named_as_parse_node_names_it(
    aws_env: ElastiCacheAPIServer, address: str, host: str
) -> None:
    aws_env.add_cluster("mc", [(address, 11211)])

    assert _source(aws_env).resolve(timeout=5) == [Node(host, 11211)]


@pytest.mark.parametrize("address", ["/tmp/evil.sock", "a;b,c", "a:b:c", "010.0.0.1"])
def test_elasticache_api__endpoint_address_must_be_a_host(
    aws_env: ElastiCacheAPIServer, address: str
) -> None:
    aws_env.add_cluster("mc", [(address, 11211)])

    with pytest.raises(SourceError, match="is not a host name or IP"):
        _source(aws_env).resolve(timeout=5)
