"""A forked child never reuses the parent's boto3 sessions, whose credential providers keep
connections open (the container and instance metadata services, STS for web identity).

The credentials come from a real HTTP/1.1 keep-alive server playing the container
credentials endpoint (``AWS_CONTAINER_CREDENTIALS_FULL_URI``); the ElastiCache API is the
stand-in in ``tests/servers/elasticache_api.py``.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cache_settings import resolve
from tests.helpers import without_host_aws
from tests.servers.elasticache_api import ElastiCacheAPIServer


class _Credentials(BaseHTTPRequestHandler):
    """Temporary credentials that expire in 5 minutes, so botocore fetches them at each use."""

    protocol_version = "HTTP/1.1"  # keep-alive: botocore's pool keeps the connection
    server: _CredentialsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.peers.append(self.client_address[1])
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
        api = self.server.api
        body = json.dumps(
            {
                "AccessKeyId": api.access_key,
                "SecretAccessKey": api.secret_key,
                "Token": "container-session-token",
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _CredentialsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: ElastiCacheAPIServer) -> None:
        super().__init__(("127.0.0.1", 0), _Credentials)
        self.api = api
        self.peers: list[int] = []  # the client port of each request: one per connection


@pytest.fixture
def container_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, elasticache_api: ElastiCacheAPIServer
) -> Iterator[_CredentialsServer]:
    without_host_aws(monkeypatch, tmp_path)
    server = _CredentialsServer(elasticache_api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/creds")
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_elasticache_api__forked_child__fetches_credentials_on_its_own_connection(
    container_credentials: _CredentialsServer,
    elasticache_api: ElastiCacheAPIServer,
) -> None:
    """A child used the parent's pooled session, and so its keep-alive socket to the
    credentials endpoint: parent and child would interleave requests on one connection."""
    elasticache_api.add_cluster("mc", [("127.0.0.1", 11211)])
    url = f"elasticache-api://mc?region=us-east-1&endpoint_url={elasticache_api.endpoint_url}"
    for _ in range(2):
        assert resolve(url, deadline=5, attempts=1).origin == "live"
    parent = set(container_credentials.peers)
    assert len(parent) == 1  # the pool kept one connection for both resolutions

    result_r, result_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(result_r)
            origin = resolve(url, deadline=5, attempts=1).origin
            os.write(result_w, origin.encode())
        finally:
            os._exit(0)
    os.close(result_w)
    try:
        ready, _, _ = select.select([result_r], [], [], 15)
        reply = os.read(result_r, 100) if ready else b"timeout"
    finally:
        os.close(result_r)
        _, status = os.waitpid(pid, 0)

    assert reply == b"live"
    assert os.waitstatus_to_exitcode(status) == 0
    child = set(container_credentials.peers) - parent
    assert child, "the child fetched its credentials over the parent's connection"
