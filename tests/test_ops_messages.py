"""What an operator sees after the usual deployment slips: each message names the fix.

Kubernetes volumes, DNS names written for a resolver with search domains, TLS files that
are not where the URL says, AWS pods without credentials, a snapshot on a read-only mount.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import cache_settings
from cache_settings import ConfigurationError, Node, Source, SourceError, parse_source
from cache_settings.cli import main
from tests.servers.dns import DNSServer
from tests.servers.elasticache_api import ElastiCacheAPIServer
from tests.servers.tls import TLSFiles


def _aged(path: Path) -> Path:
    """Date *path* back one second, as a file written before the site started."""
    past = time.time() - 1
    os.utime(path, (past, past))
    return path


# --- file:// ------------------------------------------------------------------------------


def test_file_configmap_key_link__names_the_data_path_that_follows_updates(
    tmp_path: Path,
) -> None:
    # The layout the kubelet gives a ConfigMap volume: KEY -> ..data/KEY, ..data -> ..<stamp>.
    version = tmp_path / "..2024_05_01_10_00_00.123456789"
    version.mkdir()
    (version / "nodes").write_text("10.0.0.1:11211\n")
    _aged(version / "nodes")
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "nodes").symlink_to("..data/nodes")

    with pytest.raises(SourceError) as caught:
        parse_source(f"file://{tmp_path}/nodes").resolve(timeout=1)

    assert f"write file://{tmp_path}/..data/nodes, which follows updates" in caught.value.reason
    assert version.name not in caught.value.reason  # the path the next update removes
    data_path = parse_source(f"file://{tmp_path}/..data/nodes")
    assert data_path.resolve(timeout=1) == [Node("10.0.0.1", 11211)]


def test_file_last_line_without_newline__message_says_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nodes"
    path.write_bytes(b"10.0.0.1:11211\n10.0.0.2:11211")
    _aged(path)

    with pytest.raises(SourceError) as caught:
        parse_source(f"file://{path}").resolve(timeout=1)

    assert "end every line with a newline (in a ConfigMap, a `|` block, not `|-`)" in str(
        caught.value
    )


# --- dns://, dnssrv:// ----------------------------------------------------------------------


def _dns(url: str, server: DNSServer) -> Source:
    return parse_source(f"{url}?nameserver={server.address}")


def test_dnssrv_name_without_service_labels__names_the_srv_form(dns_server: DNSServer) -> None:
    # A Kubernetes Service name written where its SRV name belongs.
    name = dns_server.name("memcached")
    dns_server.set_addresses(name, ["10.0.7.1"])

    with pytest.raises(SourceError) as caught:
        _dns(f"dnssrv+{name}", dns_server).resolve(timeout=2)

    reason = caught.value.reason
    assert "SRV names start with _SERVICE._PROTO." in reason
    assert f"write dns+{name}:PORT" in reason


def test_dns_srv_name_asked_for_addresses__says_to_write_dnssrv(dns_server: DNSServer) -> None:
    name = f"_memcache._tcp.{dns_server.name('svc')}"
    dns_server.set_srv(name, [("node.test", 11211, 0, 0)])

    with pytest.raises(SourceError) as caught:
        _dns(f"dns+{name}:11211", dns_server).resolve(timeout=2)

    assert f"looks like an SRV name: write dnssrv+{name}" in caught.value.reason


def test_dns_short_name__says_search_domains_are_not_tried(dns_server: DNSServer) -> None:
    # Thanos and Go resolvers complete "memcached.cache" with /etc/resolv.conf's search list.
    with pytest.raises(SourceError) as caught:
        _dns("dns+memcached.test:11211", dns_server).resolve(timeout=2)

    reason = caught.value.reason
    assert "as written, without search domains (write the whole name" in reason
    assert "memcached.test.svc.cluster.local" in reason


def test_dnssrv_target_nxdomain__names_the_srv_record_that_gave_it(dns_server: DNSServer) -> None:
    service = f"_memcache._tcp.{dns_server.name('svc')}"
    gone = dns_server.name("gone")
    dns_server.set_srv(service, [(gone, 11211, 0, 0)])

    with pytest.raises(SourceError) as caught:
        _dns(f"dnssrv+{service}", dns_server).resolve(timeout=2)

    reason = caught.value.reason
    assert f"yet the SRV records of {service} name it as a target" in reason
    assert "/etc/hosts" not in reason  # not the fix for a record that names a missing host


# --- TLS files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_ca", "why"),
    [
        (lambda d: d / "missing.pem", "cannot read the file (No such file or directory)"),
        (lambda d: d, "cannot read the file (Is a directory)"),
        (lambda d: d / "key.pem", "not a usable PEM file (NO_CERTIFICATE_OR_CRL_FOUND)"),
    ],
)
def test_memcached_tls_ca_wrong__names_source_file_and_fix(
    tmp_path: Path, tls_files: TLSFiles, make_ca: Callable[[Path], Path], why: str
) -> None:
    shutil.copy(tls_files.key, tmp_path / "key.pem")  # a private key where the CA belongs
    ca = make_ca(tmp_path)
    url = f"pymemcache://127.0.0.1:11211?tls=true&ca={ca}"

    with pytest.raises(ConfigurationError) as caught:
        cache_settings.memcached(url)

    message = str(caught.value)
    assert message.startswith("pymemcache://127.0.0.1:11211?tls=true&ca=")  # the source
    assert f"TLS settings ca='{ca}': {why}; give ca= " in message
    assert "_ssl.c" not in message  # no C-library location


# --- the pre-deploy command ------------------------------------------------------------------


def test_cli_resolve_unwritable_snapshot__json_error_says_why_and_where_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc takes no new file, even for root: the read-only mount of a container's image.
    nodes = tmp_path / "nodes"
    nodes.write_text("10.0.0.1:11211\n")
    _aged(nodes)
    snapshot = "/proc/cache-settings-nodes.json"

    status = main(["resolve", f"file://{nodes}", "--snapshot", snapshot, "--json"])

    document = json.loads(capsys.readouterr().out)
    assert status == 1
    assert document["ok"] is False
    error = document["results"][0]["error"]
    assert f"could not write snapshot {snapshot} (cannot create a file in /proc: " in error
    assert "a path in a directory this user can write, such as an emptyDir volume" in error


# --- elasticache-api:// ------------------------------------------------------------------------


def test_elasticache_api_without_credentials__says_where_pods_get_them(
    elasticache_api: ElastiCacheAPIServer,
) -> None:
    # No keys, no profile, instance metadata off (the autouse fixture): boto3 finds nothing.
    elasticache_api.add_cluster("sessions", [("node1.cache.test", 11211)])
    url = f"elasticache-api://sessions?region=eu-west-1&endpoint_url={elasticache_api.endpoint_url}"

    with pytest.raises(SourceError) as caught:
        parse_source(url).resolve(timeout=2)

    reason = caught.value.reason
    assert "NoCredentialsError for sessions: Unable to locate credentials" in reason
    assert "IAM role, through IRSA or EKS Pod Identity" in reason
    assert elasticache_api.actions() == []  # nothing unsigned was sent
