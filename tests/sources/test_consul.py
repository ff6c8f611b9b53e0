from __future__ import annotations

import logging
import os
import re
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cache_settings import ConfigurationError, Node, SourceError, memcached, parse_source
from cache_settings.sources.consul import STATUSES, Consul, blocking_wait, parse_health_service
from tests.servers.consul import ConsulAgent, ConsulServer, parse_duration
from tests.servers.tls import TLSFiles

TOKEN = "b1gs3cr3t-0000-4c0c-a1b2-c3d4e5f60718"


def entry(
    address: str = "10.0.0.1",
    port: Any = 11211,
    *,
    node_address: Any = "10.9.9.9",
    tags: Any = (),
    statuses: tuple[str, ...] = ("passing", "passing"),
) -> dict[str, Any]:
    """One ``/v1/health/service`` entry shaped as in the API docs."""
    return {
        "Node": {"ID": "40e4a748", "Node": "n1", "Address": node_address, "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": node_address}, "Meta": {}},
        "Service": {"ID": "memcached-1", "Service": "memcached", "Tags": list(tags),
                    "Address": address, "Port": port, "Meta": {}},
        "Checks": [
            {"Node": "n1", "CheckID": f"c{n}", "Name": "check", "Status": status,
             "ServiceID": "" if n == 0 else "memcached-1", "ServiceName": "memcached"}
            for n, status in enumerate(statuses)
        ],
    }  # fmt: skip


# --- resolve against the agent ----------------------------------------------------------------


def test_consul__passing_instances_only(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211, status="passing")
    consul_agent.add("memcached", "10.0.0.2", 11211, status="critical")
    consul_agent.add("memcached", "10.0.0.3", 11211, status="warning")
    consul_agent.add("other", "10.0.0.4", 11211)

    nodes = Consul("memcached", agent=consul_agent.address).resolve(timeout=1)

    assert nodes == [Node("10.0.0.1", 11211)]


def test_consul__passing_false_returns_every_instance(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211, status="passing")
    consul_agent.add("memcached", "10.0.0.2", 11211, status="critical")

    nodes = Consul("memcached", agent=consul_agent.address, passing=False).resolve(timeout=1)

    assert nodes == [Node("10.0.0.1", 11211), Node("10.0.0.2", 11211)]


def test_consul__failing_checks_filtered_even_when_agent_ignores_passing(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.ignore_passing()
    consul_agent.add("memcached", "10.0.0.1", 11211, status="passing")
    consul_agent.add("memcached", "10.0.0.2", 11211, status="critical")

    nodes = Consul("memcached", agent=consul_agent.address).resolve(timeout=1)

    assert nodes == [Node("10.0.0.1", 11211)]
    assert consul_agent.health_requests("memcached")[-1].params("passing") == ["1"]


def test_consul__every_tag_must_match(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211, tags=["prod", "eu", "extra"])
    consul_agent.add("memcached", "10.0.0.2", 11211, tags=["prod"])
    consul_agent.add("memcached", "10.0.0.3", 11211, tags=["eu"])

    nodes = Consul("memcached", agent=consul_agent.address, tags=("prod", "eu")).resolve(timeout=1)

    assert nodes == [Node("10.0.0.1", 11211)]


def test_consul__sends_every_tag_and_the_options(consul_agent: ConsulAgent) -> None:
    consul_agent.needs_standin("recorded requests")
    consul_agent.add("memcached", "10.0.0.1", 11211, tags=["prod", "eu"])
    source = Consul(
        "memcached", agent=consul_agent.address, tags=("prod", "eu"), dc="dc1", near="_agent",
        namespace="team-a",
    )  # fmt: skip

    assert source.resolve(timeout=1) == [Node("10.0.0.1", 11211)]

    request = consul_agent.health_requests("memcached")[-1]
    assert request.method == "GET"
    assert sorted(request.params("tag")) == ["eu", "prod"]
    assert request.params("dc") == ["dc1"]
    assert request.params("near") == ["_agent"]
    assert request.params("ns") == ["team-a"]
    assert request.params("passing") == ["1"]
    assert "index" not in dict(request.query)


def test_consul__namespace_from_environment(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    consul_agent.needs_standin("recorded requests")
    monkeypatch.setenv("CONSUL_NAMESPACE", "team-b")

    Consul("memcached", agent=consul_agent.address).resolve(timeout=1)

    assert consul_agent.health_requests("memcached")[-1].params("ns") == ["team-b"]


def test_consul__unknown_datacenter_is_a_source_error(consul_agent: ConsulAgent) -> None:
    source = Consul("memcached", agent=consul_agent.address, dc="nowhere-dc")

    with pytest.raises(SourceError, match="No path to datacenter") as info:
        source.resolve(timeout=1)

    assert info.value.source == source.url


def test_consul__node_meta_filters(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211, node_meta={"rack": "r1", "az": "a"})
    consul_agent.add("memcached", "10.0.0.2", 11211, node_meta={"rack": "r2", "az": "a"})

    source = Consul("memcached", agent=consul_agent.address, node_meta=(("rack", "r1"),))

    assert source.resolve(timeout=1) == [Node("10.0.0.1", 11211)]


def test_consul__empty_service_address_falls_back_to_node_address(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211, service_address="")
    consul_agent.add("memcached", "10.0.0.2", 11212, service_address="10.1.1.2")

    nodes = Consul("memcached", agent=consul_agent.address).resolve(timeout=1)
    node_nodes = Consul("memcached", agent=consul_agent.address, address="node").resolve(timeout=1)

    assert nodes == [Node("10.0.0.1", 11211), Node("10.1.1.2", 11212)]
    assert node_nodes == [Node("10.0.0.1", 11211), Node("10.0.0.2", 11212)]


def test_consul__ipv6_addresses(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "2001:db8::1", 11211)

    nodes = Consul("memcached", agent=consul_agent.address).resolve(timeout=1)

    assert nodes == [Node("2001:db8::1", 11211)]
    assert nodes[0].location == "[2001:db8::1]:11211"


def test_consul__order_does_not_depend_on_the_agent(consul_agent: ConsulAgent) -> None:
    consul_agent.shuffle()
    for n in range(8):
        consul_agent.add("memcached", f"10.0.0.{8 - n}", 11211)
    source = Consul("memcached", agent=consul_agent.address)

    answers = {tuple(source.resolve(timeout=1)) for _ in range(10)}

    assert answers == {tuple(Node(f"10.0.0.{n}", 11211) for n in range(1, 9))}


def test_consul__port_zero_instance_is_skipped_and_the_healthy_ones_kept(
    consul_agent: ConsulAgent, caplog: pytest.LogCaptureFixture
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    consul_agent.add("memcached", "10.0.0.2", 11212)
    bad = consul_agent.add("memcached", "10.0.0.3", 0)  # Consul accepts a service without a port

    with caplog.at_level(logging.WARNING, logger="cache_settings.sources.consul"):
        nodes = Consul("memcached", agent=consul_agent.address).resolve(timeout=1)

    assert nodes == [Node("10.0.0.1", 11211), Node("10.0.0.2", 11212)]
    [message] = [record.getMessage() for record in caplog.records]
    assert f"skipping instance {bad.service_id!r} on node {bad.node!r}" in message
    assert "no usable Service.Port (0)" in message


def test_consul__unknown_service_is_empty(consul_agent: ConsulAgent) -> None:
    assert Consul("nothing-here", agent=consul_agent.address).resolve(timeout=1) == []


# --- environment and token --------------------------------------------------------------------


def test_consul__agent_and_token_from_environment(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    consul_agent.require_token(TOKEN)
    consul_agent.add("memcached", "10.0.0.1", 11211)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", f"http://{consul_agent.address}")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)
    source = Consul("memcached")

    assert source.resolve(timeout=1) == [Node("10.0.0.1", 11211)]
    assert consul_agent.health_requests("memcached")[-1].headers["x-consul-token"] == TOKEN
    assert TOKEN not in source.url
    assert TOKEN not in repr(source)


def test_consul__explicit_agent_and_token_win_over_environment(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    consul_agent.require_token(TOKEN)
    consul_agent.add("memcached", "10.0.0.1", 11211)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "wrong-token")
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")

    source = Consul("memcached", agent=consul_agent.address, token=TOKEN, agent_tls=False)

    assert source.resolve(timeout=1) == [Node("10.0.0.1", 11211)]
    assert consul_agent.health_requests("memcached")[-1].headers["x-consul-token"] == TOKEN


def test_consul__token_file_wins_over_the_token_variable_and_is_read_each_time(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As consul's Go client: the file's token, trimmed, wins; a rotated file is used at once.
    The file is reached through a symbolic link, as Kubernetes mounts a secret."""
    consul_agent.add("memcached", "10.0.0.1", 11211)
    secret = tmp_path / "..data" / "token"
    secret.parent.mkdir()
    secret.write_text(f"{TOKEN}\n")
    (tmp_path / "token").symlink_to(secret)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "variable-token")
    source = Consul("memcached", agent=consul_agent.address)

    source.resolve(timeout=2)
    secret.write_text("rotated-token")
    source.resolve(timeout=2)
    secret.write_text(" \n")  # only white space: the variable's token
    source.resolve(timeout=2)

    sent = [r.headers["x-consul-token"] for r in consul_agent.health_requests("memcached")]
    assert sent == [TOKEN, "rotated-token", "variable-token"]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _large(path: Path) -> None:
    path.write_text(TOKEN * 200)


def _spaced(path: Path) -> None:
    path.write_text(f"{TOKEN} {TOKEN}\n")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda path: None, "cannot read the file"),
        (_fifo, "is not a token file"),
        (_large, "is not a token file"),
        (_spaced, "holds spaces"),
    ],
    ids=["missing", "fifo", "large", "spaced"],
)
def test_consul__unusable_token_file__configuration_error_naming_it_sending_nothing(
    consul_agent: ConsulAgent,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make: Any,
    words: str,
) -> None:
    """Refused at once (a FIFO never blocks the open), with the variable and the path, and
    never the token; the agent is not asked with another token instead."""
    path = tmp_path / "token"
    make(path)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(path))
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)
    source = Consul("memcached", agent=consul_agent.address)

    with pytest.raises(ConfigurationError, match=words) as info:
        source.resolve(timeout=2)

    assert f"CONSUL_HTTP_TOKEN_FILE ('{path}')" in str(info.value)
    assert TOKEN not in str(info.value)
    assert consul_agent.state is None or consul_agent.requests == [], "a request was sent"


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_consul__forbidden_is_a_source_error_without_the_token(
    consul_agent: ConsulAgent, token: str | None
) -> None:
    consul_agent.require_token(TOKEN)
    source = Consul("memcached", agent=consul_agent.address, token=token)

    with pytest.raises(SourceError, match="permission denied") as info:
        source.resolve(timeout=1)

    assert TOKEN not in str(info.value)
    assert "wrong-token" not in str(info.value)
    assert info.value.source == f"consul://{consul_agent.address}/memcached"


@pytest.mark.parametrize(
    "url", ["consul:///%FF", "consul:///memcached?tag=pr%F6d", "consul:///memcached?dc=%C3"]
)
def test_consul__percent_encoded_bytes_that_are_not_utf8_are_refused(url: str) -> None:
    """Decoded as U+FFFD, they asked for another service, tag or dc: an empty answer, late."""
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        parse_source(url)


def test_consul__a_utf8_percent_encoded_tag_is_asked_for(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached-utf8", "10.0.0.1", 11211, tags=["pr\u00f6d"])
    consul_agent.add("memcached-utf8", "10.0.0.2", 11211, tags=["prod"])

    nodes = parse_source(f"consul://{consul_agent.address}/memcached-utf8?tag=pr%C3%B6d").resolve(
        timeout=2
    )

    assert nodes == [Node("10.0.0.1", 11211)]


def test_consul__unix_socket_address_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "unix:///var/run/consul.sock")

    with pytest.raises(ConfigurationError, match="unix sockets are not supported"):
        Consul("memcached").resolve(timeout=1)


def test_consul__environment_is_read_when_asked_not_when_built(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_agent.address)

    assert source.resolve(timeout=1) == [Node("10.0.0.1", 11211)]


@pytest.mark.parametrize(
    "variable", ["[::1]:8500", "localhost", "http://[::1]:8500", "https://localhost", "[::1]"]
)
def test_consul__consul_http_addr_forms_do_not_break_an_explicit_agent(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """python-consul2's constructor rejects these forms; they must not reach it."""
    consul_agent.add("memcached", "10.0.0.1", 11211)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", variable)
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
    source = Consul.from_url(urlsplit(f"consul://{consul_agent.address}/memcached"))

    assert source.resolve(timeout=1) == [Node("10.0.0.1", 11211)]
    assert os.environ["CONSUL_HTTP_ADDR"] == variable
    assert os.environ["CONSUL_HTTP_SSL_VERIFY"] == "false"


class _IPv6ConsulServer(ConsulServer):
    """The stand-in, listening on the IPv6 loopback instead of 127.0.0.1."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.server_address = ("::1", 0)
        # TCPServer's bind only: HTTPServer's would look the address up in DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]


@pytest.fixture
def consul_ipv6_address(consul_agent: ConsulAgent) -> Iterator[str]:
    """``[::1]:PORT`` of a stand-in serving ``consul_agent``'s catalog."""
    if consul_agent.state is None:
        pytest.skip("the IPv6 listener is part of the stand-in, not a real agent")
    try:
        server = _IPv6ConsulServer(consul_agent.state)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    server.start()
    yield f"[::1]:{server.server_address[1]}"
    server.stop()


@pytest.mark.parametrize("form", ["{}", "http://{}", "http://{}/"])
def test_consul__ipv6_consul_http_addr_alone_reaches_the_agent(
    consul_agent: ConsulAgent,
    consul_ipv6_address: str,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", form.format(consul_ipv6_address))

    assert Consul("memcached").resolve(timeout=1) == [Node("10.0.0.1", 11211)]
    assert consul_agent.health_requests("memcached"), "the request went elsewhere"


def test_consul__ipv6_agent_is_named_in_brackets_in_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "[::1]:1")  # nothing listens there

    with pytest.raises(SourceError, match=r"the agent http://\[::1\]:1: "):
        Consul("memcached").resolve(timeout=1)


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        (Consul("memcached", agent="127.0.0.1", agent_tls=True), {}),
        (Consul("memcached"), {"CONSUL_HTTP_ADDR": "127.0.0.1", "CONSUL_HTTP_SSL": "true"}),
        (Consul("memcached", agent_tls=True), {"CONSUL_HTTP_ADDR": "127.0.0.1"}),
    ],
)
def test_consul__tls_without_a_port_stays_on_8500(
    monkeypatch: pytest.MonkeyPatch, source: Consul, variables: dict[str, str]
) -> None:
    """As with the consul CLI, CONSUL_HTTP_SSL changes the scheme, not the port."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    # Whether or not something listens on 8500 here, the error names the agent asked.
    with pytest.raises(SourceError, match=r"the agent https://127\.0\.0\.1:8500\b"):
        source.resolve(timeout=1)


def test_consul__https_agent_without_a_port_uses_8501() -> None:
    with pytest.raises(SourceError, match=r"the agent https://127\.0\.0\.1:8501\b"):
        Consul("memcached", agent="https://127.0.0.1").resolve(timeout=1)


def test_consul__environment_is_never_changed_while_resolving(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread of the site reading CONSUL_HTTP_ADDR never finds it gone (issue 12)."""
    consul_agent.add("memcached", "10.0.0.1", 11211)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "[::1]:8500")  # a form python-consul2 rejects
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    source = Consul.from_url(urlsplit(f"consul://{consul_agent.address}/memcached?tls=false"))
    done = threading.Event()
    missing: list[str] = []

    def read() -> None:
        while not done.is_set():
            for name in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL"):
                if name not in os.environ:
                    missing.append(name)

    reader = threading.Thread(target=read)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over often, so a brief removal is seen
    reader.start()
    try:
        answers = [source.resolve(timeout=2) for _ in range(100)]
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(switch)

    assert answers == [[Node("10.0.0.1", 11211)]] * 100
    assert missing == []


# --- health policy (issue 14, item 5) -----------------------------------------------------------


def test_consul__status_passing_warning_keeps_warning_and_drops_critical(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    consul_agent.add("memcached", "10.0.0.2", 11211, status="warning")
    consul_agent.add("memcached", "10.0.0.3", 11211, status="critical")
    on_warning_node = consul_agent.add("memcached", "10.0.0.4", 11211)
    consul_agent.set_node_status(on_warning_node, "warning")
    on_critical_node = consul_agent.add("memcached", "10.0.0.5", 11211)
    consul_agent.set_node_status(on_critical_node, "critical")
    in_maintenance = consul_agent.add("memcached", "10.0.0.6", 11211)
    consul_agent.set_maintenance(in_maintenance)
    url = f"consul://{consul_agent.address}/memcached?status=passing,warning"

    nodes = parse_source(url).resolve(timeout=2)
    default = Consul("memcached", agent=consul_agent.address).resolve(timeout=2)

    assert nodes == [Node(f"10.0.0.{n}", 11211) for n in (1, 2, 4)]
    assert default == [Node("10.0.0.1", 11211)]
    if not consul_agent.real:  # the agent cannot filter on "passing or warning": not asked to
        assert "passing" not in dict(consul_agent.health_requests("memcached")[-2].query)


def test_consul__maintenance_is_its_own_status(consul_agent: ConsulAgent) -> None:
    """As Consul's API client aggregates: maintenance outranks the other statuses."""
    consul_agent.add("memcached", "10.0.0.1", 11211, status="critical")
    in_maintenance = consul_agent.add("memcached", "10.0.0.2", 11211)
    consul_agent.set_maintenance(in_maintenance)

    critical = Consul("memcached", agent=consul_agent.address, status=("critical",))
    maintenance = Consul("memcached", agent=consul_agent.address, status=("maintenance",))

    assert critical.resolve(timeout=2) == [Node("10.0.0.1", 11211)]
    assert maintenance.resolve(timeout=2) == [Node("10.0.0.2", 11211)]


@pytest.mark.parametrize(
    ("url", "status", "canonical"),
    [
        (
            "consul:///mc?status=warning,passing",
            ("passing", "warning"),
            "?status=passing%2Cwarning",
        ),
        ("consul:///mc?status=passing", ("passing",), ""),
        ("consul:///mc?passing=false", STATUSES, "?passing=false"),
        ("consul:///mc?status=maintenance,critical,warning,passing", STATUSES, "?passing=false"),
    ],
)
def test_consul_url__status_round_trips(url: str, status: tuple[str, ...], canonical: str) -> None:
    source = parse_source(url)

    assert isinstance(source, Consul)
    assert source.status == status
    assert source.url == f"consul:///mc{canonical}"
    assert parse_source(source.url) == source


def test_consul__filter_expression_is_passed_to_the_agent(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211, node_meta={"rack": "r1"})
    consul_agent.add("memcached", "10.0.0.2", 11211, node_meta={"rack": "r2"})
    url = f"consul://{consul_agent.address}/memcached?filter=Node.Meta.rack%20%3D%3D%20%22r2%22"
    source = parse_source(url)

    assert source.resolve(timeout=2) == [Node("10.0.0.2", 11211)]
    assert source.url.endswith("/memcached?filter=Node.Meta.rack+%3D%3D+%22r2%22")
    if not consul_agent.real:
        sent = consul_agent.health_requests("memcached")[-1].params("filter")
        assert sent == ['Node.Meta.rack == "r2"']


def test_consul__bad_filter_expression_is_named(consul_agent: ConsulAgent) -> None:
    source = Consul("memcached", agent=consul_agent.address, filter_expr="Node.Meta ==")

    with pytest.raises(SourceError, match="answered 400"):
        source.resolve(timeout=2)


# --- ACL answers (issue 14, item 6) -----------------------------------------------------------


def test_consul__acl_filtered_empty_answer_names_the_token(consul_agent: ConsulAgent) -> None:
    consul_agent.filter_by_acl(TOKEN)
    consul_agent.add("memcached", "10.0.0.1", 11211)

    with pytest.raises(SourceError) as info:
        Consul("memcached", agent=consul_agent.address).resolve(timeout=2)
    allowed = Consul("memcached", agent=consul_agent.address, token=TOKEN).resolve(timeout=2)

    assert "ACLs hid them (no token was sent)" in info.value.reason
    assert "token with service:read on 'memcached'" in info.value.reason
    assert "CONSUL_HTTP_TOKEN or token=" in info.value.reason
    assert info.value.permanent
    assert allowed == [Node("10.0.0.1", 11211)]
    assert consul_agent.health_requests("memcached")[0].headers.get("x-consul-token") is None


def test_consul__acl_filtered_answer_with_a_token_never_prints_it(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent filters for a token it knows that may not read; the message says so."""
    consul_agent.answer_raw(b"[]", {"X-Consul-Results-Filtered-By-ACLs": "true"})
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)

    with pytest.raises(SourceError, match="the token sent cannot read them") as info:
        Consul("memcached", agent=consul_agent.address).resolve(timeout=2)

    assert TOKEN not in str(info.value)


def test_consul__empty_service_without_the_acl_header_is_just_empty(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.filter_by_acl(TOKEN)  # nothing registered: nothing to filter, no header

    source = Consul("memcached", agent=consul_agent.address)

    assert source.resolve(timeout=2) == []


def test_consul__unknown_token_is_permanently_refused(consul_agent: ConsulAgent) -> None:
    consul_agent.filter_by_acl(TOKEN)

    with pytest.raises(SourceError, match="permission denied by the agent .*ACL not found") as info:
        Consul("memcached", agent=consul_agent.address, token="wrong-token").resolve(timeout=2)

    assert info.value.permanent
    assert "wrong-token" not in str(info.value)


# A token may hold a quote and a backslash (printable ASCII): an agent that quotes it as Go's
# %q or JSON does sends back sec\"ret\\tok-5f3e9a, which is not the token as written.
ODD_TOKEN = 'sec"ret\\tok-5f3e9a'


def test_consul__token_quoted_escaped_by_the_agent_is_masked(consul_agent: ConsulAgent) -> None:
    consul_agent.filter_by_acl(TOKEN)
    consul_agent.echo_tokens()

    with pytest.raises(SourceError) as info:
        Consul("memcached", agent=consul_agent.address, token=ODD_TOKEN).resolve(timeout=2)

    assert "permission denied by the agent" in info.value.reason
    assert '(ACL not found (token "***"))' in info.value.reason
    assert "5f3e9a" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"consul://{TOKEN}%0A@127.0.0.1:8500/memcached",
        f"consul://127.0.0.1:8500/memcached?token={TOKEN}%0D",
        f"consul://127.0.0.1:8500/memcached?token={TOKEN}%0D%0AX-Evil:%201",
        f"consul://127.0.0.1:8500/memcached?token=%20{TOKEN}",
    ],
)
def test_consul__token_with_control_characters_is_refused_unechoed(url: str) -> None:
    refused = r"token( in the URL)? holds|option token has white space at either end"
    with pytest.raises(ConfigurationError, match=refused) as info:
        parse_source(url)

    for text in (str(info.value), repr(info.value)):
        assert TOKEN not in text
        assert TOKEN.replace("-", "%2D") not in text


@pytest.mark.parametrize("value", [f"{TOKEN}\n", f"{TOKEN}\r", f"{TOKEN}\r\n", f"\t{TOKEN}"])
def test_consul__environment_token_with_control_characters_is_refused_unechoed(
    consul_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", value)
    source = Consul("memcached", agent=consul_agent.address)

    with pytest.raises(ConfigurationError, match="CONSUL_HTTP_TOKEN holds") as info:
        source.resolve(timeout=2)

    assert TOKEN not in str(info.value)
    assert consul_agent.state is None or consul_agent.requests == [], "the token was sent"


def test_consul__explicit_token_with_control_characters_is_refused_unechoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        Consul("memcached", token=f"{TOKEN}\n")

    assert TOKEN not in str(info.value)


# --- HTTPS agent, plain memcached nodes (issue 12, judged 4) ----------------------------------


def test_memcached__https_agent_gives_a_plain_pylibmc_entry(
    consul_agent: ConsulAgent,
    consul_tls_address: str,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tls=true`` is TLS to the agent; the memcached nodes stay plain TCP."""
    consul_agent.add("memcached", "10.0.0.1", 11211)
    monkeypatch.setenv("CONSUL_CACERT", tls_files.ca)

    entry = memcached(f"consul://{consul_tls_address}/memcached?tls=true", backend="pylibmc")

    assert entry["BACKEND"] == "django.core.cache.backends.memcached.PyLibMCCache"
    assert entry["LOCATION"] == ["10.0.0.1:11211"]
    assert "tls_context" not in entry.get("OPTIONS", {})


# --- failures and deadlines -------------------------------------------------------------------


def test_consul__refused_connection_is_a_source_error() -> None:
    with pytest.raises(SourceError) as info:
        Consul("memcached", agent="127.0.0.1:1").resolve(timeout=1)

    assert info.value.reason == (
        "cannot reach the agent http://127.0.0.1:1: Connection refused "
        "(check the agent address in the URL)"
    )
    assert not info.value.permanent


def test_consul__default_agent_unreachable_says_where_to_set_it() -> None:
    """The message names the agent asked and the two ways to name another one."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8500)) == 0:
            pytest.skip("something listens on 127.0.0.1:8500 here")

    with pytest.raises(SourceError) as info:
        Consul("memcached").resolve(timeout=1)

    assert info.value.reason.startswith("cannot reach the agent http://127.0.0.1:8500: ")
    assert info.value.reason.endswith("(set CONSUL_HTTP_ADDR or put the agent in the URL)")


def test_consul__unknown_agent_host_name_is_permanent() -> None:
    source = Consul("memcached", agent="no-such-agent.invalid:8500")

    with pytest.raises(SourceError, match="unknown host name") as info:
        source.resolve(timeout=2)

    assert info.value.permanent


def test_consul__hung_agent_fails_within_the_timeout(consul_agent: ConsulAgent) -> None:
    consul_agent.pause()
    source = Consul("memcached", agent=consul_agent.address)

    started = time.monotonic()
    with pytest.raises(SourceError, match="no complete answer within 0.50 s"):
        source.resolve(timeout=0.5)
    elapsed = time.monotonic() - started

    assert 0.45 <= elapsed < 0.5 + 0.3


def test_consul__hung_agent_bounds_a_watch_too(consul_agent: ConsulAgent) -> None:
    consul_agent.pause()
    source = Consul("memcached", agent=consul_agent.address)

    started = time.monotonic()
    with pytest.raises(SourceError):
        source.watch(7, timeout=0.8)

    assert time.monotonic() - started < 0.8 + 0.3


def test_consul__no_time_left_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="no time left"):
        Consul("memcached", agent="127.0.0.1:1").resolve(timeout=0)


# --- watch (blocking queries) -----------------------------------------------------------------


def test_consul__watch_without_index_answers_at_once(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=consul_agent.address)

    started = time.monotonic()
    index, nodes = source.watch(None, timeout=5)

    assert time.monotonic() - started < 0.5
    assert nodes == [Node("10.0.0.1", 11211)]
    assert isinstance(index, int)
    assert index >= 1


@pytest.fixture
def later() -> Iterator[list[threading.Timer]]:
    """Timers to run a change from another thread; joined at the end of the test."""
    timers: list[threading.Timer] = []
    yield timers
    for timer in timers:
        timer.cancel()
        timer.join()


def test_consul__watch_with_index_returns_soon_after_a_change(
    consul_agent: ConsulAgent, later: list[threading.Timer]
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=consul_agent.address)
    index, _ = source.watch(None, timeout=5)
    changed_at: list[float] = []

    def change() -> None:
        changed_at.append(time.monotonic())  # before: the reply may beat add()'s own reply
        consul_agent.add("memcached", "10.0.0.2", 11211)

    later.append(threading.Timer(0.7, change))
    later[0].start()
    started = time.monotonic()
    new_index, nodes = source.watch(index, timeout=10)
    returned = time.monotonic()

    assert returned - started >= 0.6, "the query did not block"
    assert changed_at
    assert returned - changed_at[0] < 0.5
    assert nodes == [Node("10.0.0.1", 11211), Node("10.0.0.2", 11211)]
    assert new_index is not None
    assert index is not None
    assert new_index > index
    if not consul_agent.real:
        request = consul_agent.health_requests("memcached")[-1]
        assert request.params("index") == [str(index)]
        assert request.params("wait") == ["8s"]


def test_consul__watch_without_change_returns_after_the_wait(consul_agent: ConsulAgent) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=consul_agent.address)
    index, _ = source.watch(None, timeout=5)

    started = time.monotonic()
    new_index, nodes = source.watch(index, timeout=2)
    elapsed = time.monotonic() - started

    # timeout=2 allows wait=1s (plus Consul's wait/16 jitter and a margin).
    assert 0.9 <= elapsed < 2
    assert new_index == index
    assert nodes == [Node("10.0.0.1", 11211)]


def test_consul__watch_resets_an_index_that_went_backwards(consul_agent: ConsulAgent) -> None:
    """API docs, "Blocking queries": an index lower than ours means start afresh (0)."""
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=consul_agent.address)

    index, nodes = source.watch(10**9, timeout=1.5)

    assert index == 0
    assert nodes == [Node("10.0.0.1", 11211)]


@pytest.mark.parametrize(
    ("timeout", "wait", "request_timeout"),
    [
        (0.5, 1, 0.5),
        (1.0, 1, 1.0),
        (2.0, 1, 1.5625),
        (10.0, 8, 9.0),
        (60.0, 56, 60.0),
        (600.0, 564, 599.75),
    ],
)
def test_blocking_wait__fits_wait_and_jitter_into_the_timeout(
    timeout: float, wait: int, request_timeout: float
) -> None:
    assert blocking_wait(timeout)[0] == wait
    assert blocking_wait(timeout)[1] == pytest.approx(request_timeout)
    assert blocking_wait(timeout)[1] <= timeout


# --- TLS to the agent -------------------------------------------------------------------------


def test_consul__https_agent_with_ca(
    consul_agent: ConsulAgent, consul_tls_address: str, tls_files: TLSFiles
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=f"https://{consul_tls_address}", ca=tls_files.ca)

    assert source.resolve(timeout=2) == [Node("10.0.0.1", 11211)]
    assert source.url == f"consul://{consul_tls_address}/memcached?tls=true&ca=" + (
        tls_files.ca.replace("/", "%2F")
    )


def test_consul__https_agent_from_environment(
    consul_agent: ConsulAgent,
    consul_tls_address: str,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_tls_address)
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    monkeypatch.setenv("CONSUL_CACERT", tls_files.ca)

    assert Consul("memcached").resolve(timeout=2) == [Node("10.0.0.1", 11211)]


def test_consul__https_agent_with_unknown_ca_is_a_source_error(
    consul_agent: ConsulAgent, consul_tls_address: str, tls_files: TLSFiles
) -> None:
    source = Consul("memcached", agent=consul_tls_address, agent_tls=True, ca=tls_files.other_ca)

    with pytest.raises(SourceError, match="TLS with the agent .* failed.*certificate verify"):
        source.resolve(timeout=2)


def test_consul__https_agent_without_verification(
    consul_agent: ConsulAgent, consul_tls_address: str
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    source = Consul("memcached", agent=consul_tls_address, agent_tls=True, verify=False)

    nodes = source.resolve(timeout=2)

    assert nodes == [Node("10.0.0.1", 11211)]


# --- parse_health_service ---------------------------------------------------------------------


def test_parse_health_service__documented_reply() -> None:
    entries = [
        entry("10.0.0.2"),
        entry("", node_address="10.0.0.1"),
        entry("2001:DB8::5", 11300),
        entry("cache-A.example", 11212),
        entry("10.0.0.2"),  # the same instance twice
        entry("10.0.0.9", statuses=("passing", "critical")),
        entry("10.0.0.8", tags=["prod"]),
    ]

    nodes = parse_health_service(entries, source="consul:///memcached", address="service", tags=())

    assert nodes == [
        Node("10.0.0.1", 11211),
        Node("10.0.0.2", 11211),
        Node("10.0.0.8", 11211),
        Node("2001:db8::5", 11300),
        Node("cache-a.example", 11212),
    ]


def test_parse_health_service__tags_and_passing() -> None:
    entries = [entry("10.0.0.1", tags=["a", "b"]), entry("10.0.0.2", tags=["a"]),
               entry("10.0.0.3", tags=["a", "b"], statuses=("warning",))]  # fmt: skip

    strict = parse_health_service(entries, source="s", address="service", tags=("b", "a"))
    loose = parse_health_service(entries, source="s", tags=("a",), status=STATUSES)

    assert strict == [Node("10.0.0.1", 11211)]
    assert loose == [Node(f"10.0.0.{n}", 11211) for n in (1, 2, 3)]


# Instances Consul accepts but nobody can connect to: left out, with a warning.
UNUSABLE_INSTANCES = [
    pytest.param(entry(port=0), r"no usable Service.Port \(0\)", id="port-zero"),
    pytest.param(entry(port=70000), r"no usable Service.Port \(70000\)", id="port-too-big"),
    pytest.param(entry("", node_address=""), "no Service.Address or Node.Address", id="no-address"),
    pytest.param(entry("", node_address=None), "no Service.Address", id="null-address"),
    pytest.param(entry("  ", node_address=" "), "no Service.Address", id="blank-address"),
    pytest.param(entry("bad host!"), "unusable address 'bad host!'", id="bad-host"),
    pytest.param(entry("1:2:3"), "unusable address '1:2:3'", id="bad-ipv6"),
    # Registered with a bind address or a group: each client would reach its own host.
    pytest.param(entry("0.0.0.0"), "unusable address '0.0.0.0' .no node", id="unspecified"),
    pytest.param(entry("::"), "unusable address '::' .no node", id="unspecified-v6"),
    pytest.param(entry("", node_address="0.0.0.0"), "'0.0.0.0' .no node", id="node-unspecified"),
    pytest.param(entry("224.0.0.5"), "unusable address '224.0.0.5' .no node", id="multicast"),
    pytest.param(entry("FF02::1"), "unusable address 'FF02::1' .no node", id="multicast-v6"),
    # IPv4-mapped: connects over IPv4 to 0.0.0.0 (this host) or to the group.
    pytest.param(
        entry("::ffff:0.0.0.0"), "unusable address '::ffff:0.0.0.0' .no node", id="mapped-any"
    ),
    pytest.param(
        entry("::FFFF:E000:5"), "unusable address '::FFFF:E000:5' .no node", id="mapped-multicast"
    ),
]


@pytest.mark.parametrize(("bad", "reason"), UNUSABLE_INSTANCES)
def test_parse_health_service__unusable_instance_is_skipped_with_a_warning(
    bad: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad["Node"]["Node"] = "bad-node"
    bad["Service"]["ID"] = "memcached-bad"
    entries = [entry("10.0.0.1"), bad, entry("10.0.0.2")]

    with caplog.at_level(logging.WARNING, logger="cache_settings.sources.consul"):
        nodes = parse_health_service(entries, source="consul:///memcached")

    assert nodes == [Node("10.0.0.1", 11211), Node("10.0.0.2", 11211)]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("consul:///memcached: skipping instance 'memcached-bad'")
    assert "on node 'bad-node'" in message
    assert re.search(reason, message), message


MALFORMED_REPLIES = [
    pytest.param({"Node": {}}, "expected a list", id="object"),
    pytest.param(None, "expected a list, got NoneType", id="null"),
    pytest.param(["x"], "entry 0 is not an object", id="string-entry"),
    pytest.param([{"Node": {"Address": "10.0.0.1"}}], "lacks a Node or Service", id="no-service"),
    pytest.param([entry(), {**entry(), "Node": None}], "entry 1 lacks a Node", id="null-node"),
    pytest.param([entry(port=None)], "Service.Port that is not an integer", id="no-port"),
    pytest.param([entry(port="11211")], r"not an integer \('11211'\)", id="port-string"),
    pytest.param([entry(port=True)], "Service.Port that is not an integer", id="port-bool"),
    pytest.param([entry(5)], "Service.Address that is not a string", id="address-number"),
    pytest.param([entry(node_address=[])], "Node.Address that is not a string", id="node-list"),
    pytest.param([{**entry(), "Checks": "passing"}], "Checks that are not a list", id="checks"),
    pytest.param([{**entry(), "Checks": [{"Name": "x"}]}], "without a Status", id="no-status"),
    pytest.param([{**entry(), "Checks": ["passing"]}], "without a Status", id="string-check"),
    pytest.param(
        [{**entry(), "Service": {**entry()["Service"], "Tags": "prod"}}], "Tags", id="tags-string"
    ),
]


@pytest.mark.parametrize(("reply", "message"), MALFORMED_REPLIES)
def test_parse_health_service__malformed_replies_are_source_errors(
    reply: object, message: str
) -> None:
    with pytest.raises(SourceError, match=message) as info:
        parse_health_service(reply, source="consul:///memcached", address="service", tags=())

    assert info.value.source == "consul:///memcached"


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected", "canonical"),
    [
        ("consul:///memcached", Consul("memcached"), "consul:///memcached"),
        (
            "consul://consul.service:8500/memcached?tag=prod&tag=eu&dc=dc2",
            Consul("memcached", agent="consul.service:8500", tags=("prod", "eu"), dc="dc2"),
            "consul://consul.service:8500/memcached?tag=eu&tag=prod&dc=dc2",
        ),
        (
            "consul://[::1]:8500/memcached?near=_agent&node-meta=rack:r1&node-meta=az:a",
            Consul(
                "memcached",
                agent="[::1]:8500",
                near="_agent",
                node_meta=(("rack", "r1"), ("az", "a")),
            ),
            "consul://[::1]:8500/memcached?node-meta=az%3Aa&node-meta=rack%3Ar1&near=_agent",
        ),
        (
            "consul://agent/memcached?passing=false&ns=team&address=node&verify=false",
            Consul(
                "memcached",
                agent="agent:8500",
                passing=False,
                namespace="team",
                address="node",
                verify=False,
            ),
            "consul://agent:8500/memcached?ns=team&passing=false&address=node&verify=false",
        ),
        (
            "consul://agent:8501/memcached?tls=true&ca=/ca.pem&cert=/c.pem&key=/k.pem",
            Consul(
                "memcached",
                agent="agent:8501",
                agent_tls=True,
                ca="/ca.pem",
                cert="/c.pem",
                key="/k.pem",
            ),
            "consul://agent:8501/memcached?tls=true&ca=%2Fca.pem&cert=%2Fc.pem&key=%2Fk.pem",
        ),
        (
            f"consul://{TOKEN}@agent:8500/memcached",
            Consul("memcached", agent="agent:8500", token=TOKEN),
            "consul://agent:8500/memcached",
        ),
        (
            f"consul:///memcached?token={TOKEN}",
            Consul("memcached", token=TOKEN),
            "consul:///memcached",
        ),
    ],
)
def test_consul_from_url__good_urls(url: str, expected: Consul, canonical: str) -> None:
    source = parse_source(url)

    assert source == expected
    assert source.url == canonical
    assert TOKEN not in source.url
    assert TOKEN not in repr(source)
    assert parse_source(source.url).url == canonical


@pytest.mark.parametrize("service", ["my svc", "a?b", "a#b", "50%", "caf\u00e9", "a&b=c"])
def test_consul_url__odd_service_names_parse_back(service: str) -> None:
    source = Consul(service, agent="agent:8500", tags=("prod",))

    assert parse_source(source.url) == source
    assert parse_source(source.url).url == source.url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("consul://admin:pa55word@agent:8500/mc", "holds a user name and password"),
        (f"consul://{TOKEN}@agent:8500/mc?token=other", "give the token once"),
    ],
)
def test_consul_url__user_info_that_is_no_single_token__refused_unechoed(
    url: str, words: str
) -> None:
    """The user info was sent as the token ('admin:pa55word'), and won over token=."""
    with pytest.raises(ConfigurationError, match=words) as info:
        parse_source(url)

    assert "pa55word" not in str(info.value)
    assert TOKEN not in str(info.value)


def test_consul_url__https_agent_is_written_as_tls() -> None:
    assert Consul("memcached", agent="https://agent:8501").url == (
        "consul://agent:8501/memcached?tls=true"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("consul://", "one service name"),
        ("consul://agent:8500/", "one service name"),
        (
            "consul://memcached",
            r"'memcached' was read as the agent's host .* write consul:///memcached$",
        ),
        ("consul://memcached?tag=a", "write consul:///memcached$"),
        ("consul://agent/a/b", "one service name"),
        ("consul://agent:99999/memcached", r"agent address 'agent:99999' is not host\[:port\]"),
        ("consul://bad host/memcached", r"agent address 'bad host' is not host\[:port\]"),
        (
            "consul://127.0.0.1:8500:99/memcached",
            r"^consul://127.0.0.1:8500:99/memcached: the agent address '127.0.0.1:8500:99' is not "
            r"host\[:port\] \(a port 1..65535\), http://host\[:port\] or https://host\[:port\]$",
        ),
        ("consul:///memcached?status=passing,sick", "status=.*must list"),
        ("consul:///memcached?status=warning&passing=false", "give status= or passing=, not both"),
        ("consul:///memcached?passing=maybe", "passing='maybe' must be true or false"),
        ("consul:///memcached?tls=2", "tls='2' must be true or false"),
        ("consul:///memcached?node-meta=rack", "node-meta='rack' must be key:value"),
        ("consul:///memcached?dc=a&dc=b", "'dc' given more than once"),
        ("consul:///memcached?wait=5d", "option wait='5d' must be seconds or a duration"),
        ("consul:///memcached?stale=true", "unknown option 'stale'"),
        ("consul:///memcached?address=wan", "address='wan' must be one of node, service"),
    ],
)
def test_consul_from_url__bad_urls_name_the_value(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_source(url)


def test_consul_from_url__errors_never_show_the_token() -> None:
    with pytest.raises(ConfigurationError) as info:
        Consul.from_url(urlsplit(f"consul://agent/memcached?token={TOKEN}&bogus=1"))

    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("agent", ["unix:///tmp/consul.sock", "ftp://agent:21", "bad host:1"])
def test_consul__bad_agent_is_a_configuration_error(agent: str) -> None:
    with pytest.raises(ConfigurationError):
        Consul("memcached", agent=agent)


# --- the stand-in's own parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("500ms", 0.5), ("1m", 60), ("1m30s", 90), ("2h", 7200)]
)
def test_standin_parse_duration__go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "5 s", "1d"])
def test_standin_parse_duration__rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
