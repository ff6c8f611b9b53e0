"""Consul: healthy instances of a service, from ``/v1/health/service/<service>``."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import SplitResult, quote, unquote, urlencode

from ..exceptions import ConfigurationError, SourceError
from ..nodes import Node, parse_node, unique_sorted
from . import Traits
from ._url import Query

__all__ = ["Consul", "blocking_wait", "parse_health_service"]

logger = logging.getLogger(__name__)

DEFAULT_AGENT = "127.0.0.1:8500"
_ADDRESSES = ("node", "service")
_OPTIONS = (
    "address", "ca", "cert", "dc", "key", "near", "node-meta", "ns", "passing", "tag", "tls",
    "token", "verify",
)  # fmt: skip
# Seconds allowed on top of a blocking query's wait for the reply to travel back.
_MARGIN = 0.5
# Held while a client is built with the agent variables hidden (see _client), and while
# _settings reads the environment, so that our own threads never see them hidden.
_BUILD_LOCK = threading.Lock()
# What python-consul2's constructor reads and we replace anyway; see _client.
_HIDDEN_VARIABLES = ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY")
# Every variable _settings reads, copied under _BUILD_LOCK.
_ENVIRONMENT = (
    "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_NAMESPACE",
)  # fmt: skip
# The variables hidden right now, with their values, so a forked child can put them back.
_hidden: dict[str, str] = {}
# Go's strconv.ParseBool, which the consul CLI uses for CONSUL_HTTP_SSL(_VERIFY).
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass(frozen=True, slots=True)
class Consul:
    """Healthy instances of a Consul service (``/v1/health/service``).

    Unset fields default, when the source is asked (not when it is built, so the
    order of settings does not matter), to the consul CLI's variables:
    ``CONSUL_HTTP_ADDR`` (then 127.0.0.1:8500), ``CONSUL_HTTP_TOKEN``,
    ``CONSUL_HTTP_SSL``, ``CONSUL_HTTP_SSL_VERIFY``, ``CONSUL_CACERT``,
    ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY`` and ``CONSUL_NAMESPACE``.

    An agent without a port is on 8500, also when ``tls=True`` or
    ``CONSUL_HTTP_SSL=true`` asks for https: as with the consul CLI, TLS changes
    the scheme, not the port. Only an agent written ``https://host`` defaults to
    8501, Consul's usual https port.

    Args:
        agent: ``"host[:port]"``, ``"http://host[:port]"`` or ``"https://host[:port]"``;
            IPv6 addresses in brackets, as ``"[::1]:8500"``.
        tags: every tag must be on an instance.
        node_meta: ``(key, value)`` pairs every instance's node must carry.
        passing: only instances whose checks all pass.
        address: ``"service"`` uses ``Service.Address``, else ``Node.Address``;
            ``"node"`` always uses ``Node.Address``.
    """

    service: str
    agent: str | None = None
    tags: tuple[str, ...] = ()
    dc: str | None = None
    near: str | None = None
    node_meta: tuple[tuple[str, str], ...] = ()
    passing: bool = True
    namespace: str | None = None
    token: str | None = field(default=None, repr=False)
    tls: bool | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True
    address: str = "service"

    blocking: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.service or "/" in self.service:
            raise ConfigurationError(f"consul: invalid service name {self.service!r}")
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "node_meta", tuple((k, v) for k, v in self.node_meta))
        if self.agent is not None:
            _parse_agent(self.agent, where="consul agent")
        if self.address not in _ADDRESSES:
            raise ConfigurationError(
                f"consul: address={self.address!r} must be one of {', '.join(_ADDRESSES)}"
            )

    @classmethod
    def from_url(cls, url: SplitResult) -> Consul:
        """Build the source from ``consul://[TOKEN@][agent:port]/SERVICE?tag=…&dc=…``."""
        query = Query(url, _OPTIONS, repeatable=("tag", "node-meta"))
        where = query.where
        service = unquote(url.path.strip("/"))
        if not service or "/" in service:
            raise ConfigurationError(
                f"{where}: expected one service name as the path, as in consul:///memcached"
            )
        userinfo, _, hostport = url.netloc.rpartition("@")
        meta = []
        for pair in query.all("node-meta"):
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise ConfigurationError(f"{where}: option node-meta={pair!r} must be key:value")
            meta.append((key, value))
        return cls(
            service,
            agent=_parse_agent(hostport, where=where)[1] if hostport else None,
            tags=query.all("tag"),
            dc=query.get("dc") or None,
            near=query.get("near") or None,
            node_meta=tuple(meta),
            passing=bool(query.flag("passing", True)),
            namespace=query.get("ns") or None,
            token=unquote(userinfo) or query.get("token") or None,
            tls=query.flag("tls"),
            ca=query.get("ca") or None,
            cert=query.get("cert") or None,
            key=query.get("key") or None,
            verify=bool(query.flag("verify", True)),
            address=query.choice("address", _ADDRESSES, "service"),
        )

    @property
    def url(self) -> str:
        """Return the canonical URL without the token; the snapshot key."""
        agent = self.agent or ""
        tls = self.tls
        if agent:
            scheme, agent = _parse_agent(agent, where="consul agent")
            tls = True if scheme == "https" else tls
        params: list[tuple[str, str]] = [("tag", tag) for tag in sorted(set(self.tags))]
        params += [("node-meta", f"{k}:{v}") for k, v in sorted(set(self.node_meta))]
        options = {
            "dc": self.dc, "near": self.near, "ns": self.namespace,
            "passing": None if self.passing else "false",
            "address": None if self.address == "service" else self.address,
            "tls": None if tls is None else str(tls).lower(),
            "ca": self.ca, "cert": self.cert, "key": self.key,
            "verify": None if self.verify else "false",
        }  # fmt: skip
        params += [(key, value) for key, value in options.items() if value is not None]
        query = f"?{urlencode(params)}" if params else ""
        # Quoted, so that names such as "my svc" or "a?b" parse back (from_url unquotes).
        return f"consul://{agent}/{quote(self.service, safe='')}{query}"

    @property
    def traits(self) -> Traits:
        """Consul lists plain memcached nodes; ``agent_tls`` is TLS to the agent only."""
        return Traits()

    def resolve(self, timeout: float) -> list[Node]:
        """Ask the agent once, within *timeout* seconds, for the service's instances."""
        return self._ask(None, timeout)[1]

    def watch(self, index: int | None, timeout: float) -> tuple[int | None, list[Node]]:
        """Return ``(index, nodes)``, waiting up to *timeout* seconds for a change past *index*.

        Without *index* (or with 0) the agent answers at once. The returned index is 0
        when the agent's index went backwards, so that the next call starts afresh.
        """
        return self._ask(index or None, timeout)

    def _ask(self, index: int | None, timeout: float) -> tuple[int | None, list[Node]]:
        try:
            import consul
            import requests
        except ImportError as exc:
            raise ConfigurationError(
                f"{self.url}: the Consul client is not installed ({exc}); "
                'pip install "django-cache-settings[consul]"'
            ) from None
        started = time.monotonic()
        if timeout <= 0:
            raise SourceError(self.url, "no time left for an attempt")
        settings = self._settings()
        wait, request_timeout = blocking_wait(timeout) if index else (None, timeout)
        client = _client(consul, settings, deadline=started + request_timeout)
        # KeyError and TypeError: python-consul2 reading a reply without X-Consul-Index.
        failures = (
            consul.ConsulException,
            requests.RequestException,
            ValueError,
            KeyError,
            TypeError,
        )
        try:
            received, entries = client.health.service(
                self.service,
                index=index,
                wait=f"{wait}s" if wait else None,
                passing=self.passing,
                tag=self.tags[0] if self.tags else None,
                dc=self.dc,
                near=self.near,
                node_meta=dict(self.node_meta) or None,
            )
            if entries is None:  # python-consul2 turns a 404 into (index, None)
                raise SourceError(self.url, "the agent answered 404 Not Found")
            new_index = int(received)
        except consul.ACLPermissionDenied as exc:
            raise SourceError(
                self.url,
                f"permission denied by the agent ({_clean(exc, settings)}); "
                "check the token (CONSUL_HTTP_TOKEN or token=)",
            ) from None
        except requests.RequestException as exc:
            elapsed = time.monotonic() - started
            raise SourceError(self.url, _describe(exc, elapsed, requests, settings)) from None
        except failures as exc:
            elapsed = time.monotonic() - started
            raise SourceError(
                self.url,
                f"{type(exc).__name__} after {elapsed:.2f}s: {_clean(exc, settings)}",
            ) from None
        finally:
            client.http.close()
        nodes = parse_health_service(
            entries, source=self.url, address=self.address, tags=self.tags, passing=self.passing
        )
        # Consul docs, "Blocking queries, implementation details": reset an index that
        # went backwards, and never block on an index below 1.
        if index and new_index < index:
            new_index = 0
        elif new_index < 1:
            new_index = 1
        logger.debug("%s: %d nodes at index %d", self.url, len(nodes), new_index)
        return new_index, nodes

    def _settings(self) -> _Settings:
        # Under the lock: another of our threads may be building a client in _client,
        # with the agent variables hidden from os.environ.
        with _BUILD_LOCK:
            env = {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ}
        agent = self.agent or env.get("CONSUL_HTTP_ADDR") or DEFAULT_AGENT
        where = "consul agent" if self.agent else "CONSUL_HTTP_ADDR"
        scheme, hostport = _parse_agent(agent, where=where)
        if scheme is None:
            tls = self.tls if self.tls is not None else _go_bool(env, "CONSUL_HTTP_SSL", False)
            scheme = "https" if tls else "http"
        node = parse_node(hostport, default_port=8500, where=where)
        return _Settings(
            scheme=scheme,
            host=node.host,
            port=node.port,
            token=self.token or env.get("CONSUL_HTTP_TOKEN") or None,
            namespace=self.namespace or env.get("CONSUL_NAMESPACE") or None,
            verify=self.verify and _go_bool(env, "CONSUL_HTTP_SSL_VERIFY", True),
            ca=self.ca or env.get("CONSUL_CACERT") or None,
            cert=self.cert or env.get("CONSUL_CLIENT_CERT") or None,
            key=self.key or env.get("CONSUL_CLIENT_KEY") or None,
            extra_tags=self.tags[1:],
        )


def blocking_wait(timeout: float) -> tuple[int, float]:
    """Return ``(wait, request timeout)`` in seconds for a blocking query given *timeout*.

    Consul holds a blocking query for ``wait`` plus up to ``wait / 16`` of jitter
    (API docs, "Blocking Queries"), and the reply needs a moment to travel back, so
    the wait is the largest whole second that fits in *timeout* with both; at least 1 s.
    The request timeout never exceeds *timeout*.
    """
    wait = max(1, math.floor((timeout - _MARGIN) * 16 / 17))
    return wait, min(wait + wait / 16 + _MARGIN, timeout)


def parse_health_service(
    entries: object,
    *,
    source: str,
    address: str = "service",
    tags: Iterable[str] = (),
    passing: bool = True,
) -> list[Node]:
    """Return the nodes in a ``/v1/health/service`` reply, de-duplicated and sorted.

    Instances missing any of *tags*, or, with *passing*, with any check not
    ``"passing"`` are left out: the agent filters too, but an agent or proxy that
    ignores ``tag``/``passing`` must not put a failed node in the list.

    An instance registered without a usable port (Consul accepts ``Port`` 0) or
    address is left out with a warning, so that it cannot take the healthy ones
    with it. A reply that is not shaped as the API docs say (not a list of objects
    with ``Node`` and ``Service`` objects, ``Checks`` and ``Tags`` lists, checks
    with a ``Status``, an integer ``Port``, string addresses) raises SourceError.
    """
    if not isinstance(entries, list):
        raise SourceError(source, f"malformed reply: expected a list, got {type(entries).__name__}")
    wanted = set(tags)
    nodes = []
    for n, entry in enumerate(entries):
        where = f"malformed reply: entry {n}"
        if not isinstance(entry, Mapping):
            raise SourceError(source, f"{where} is not an object")
        node, service, checks = entry.get("Node"), entry.get("Service"), entry.get("Checks")
        if not isinstance(node, Mapping) or not isinstance(service, Mapping):
            raise SourceError(source, f"{where} lacks a Node or Service object")
        if not isinstance(checks, list | None):
            raise SourceError(source, f"{where} has Checks that are not a list")
        service_tags = service.get("Tags") or []
        if not isinstance(service_tags, list):
            raise SourceError(source, f"{where} has Service.Tags that are not a list")
        if not wanted.issubset(service_tags):
            continue
        if passing and not all(_passes(check, where, source) for check in checks or ()):
            continue
        found = _node(node, service, address, where, source)
        if isinstance(found, str):
            logger.warning(
                "%s: skipping instance %r on node %r: %s",
                source, service.get("ID"), node.get("Node"), found,
            )  # fmt: skip
        else:
            nodes.append(found)
    return list(unique_sorted(nodes))


def _passes(check: object, where: str, source: str) -> bool:
    if not isinstance(check, Mapping) or not isinstance(check.get("Status"), str):
        raise SourceError(source, f"{where} has a check without a Status")
    return bool(check["Status"] == "passing")


def _node(
    node: Mapping[str, Any], service: Mapping[str, Any], address: str, where: str, source: str
) -> Node | str:
    """Return the instance's node, or why the instance cannot be used.

    Raise SourceError if the entry is not shaped as documented.
    """
    port = service.get("Port")
    if isinstance(port, bool) or not isinstance(port, int):
        raise SourceError(source, f"{where} has a Service.Port that is not an integer ({port!r})")
    for name, value in (("Service", service.get("Address")), ("Node", node.get("Address"))):
        if not isinstance(value, str | None):
            raise SourceError(source, f"{where} has a {name}.Address that is not a string")
    if not 0 < port < 65536:
        return f"no usable Service.Port ({port})"
    text = service.get("Address") if address == "service" else None
    if not text or not text.strip():
        text = node.get("Address")
    if not text or not text.strip():
        return "no Service.Address or Node.Address"
    text = text.strip().strip("[]")
    try:
        return parse_node(f"[{text}]" if ":" in text else text, default_port=port)
    except ConfigurationError:
        return f"unusable address {text!r}"


@dataclass(frozen=True, slots=True)
class _Settings:
    """The agent's address and credentials after the environment is applied."""

    scheme: str
    host: str
    port: int
    token: str | None = field(repr=False)
    namespace: str | None
    verify: bool
    ca: str | None
    cert: str | None
    key: str | None
    extra_tags: tuple[str, ...]

    @property
    def agent(self) -> str:
        """Return the agent as ``scheme://host:port``, IPv6 addresses in brackets."""
        return f"{self.scheme}://{Node(self.host, self.port).location}"


def _client(consul: Any, settings: _Settings, *, deadline: float) -> Any:
    """Return a consul client that uses *settings* exactly and gives up at *deadline*."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    # python-consul2's constructor parses CONSUL_HTTP_ADDR with split(":") even when
    # given a host, raising for valid forms such as "[::1]:8500" or "localhost", and
    # lets CONSUL_HTTP_SSL(_VERIFY) override the scheme and verification. _settings has
    # already read them, and everything the constructor derives from them is replaced
    # below, so the constructor runs with them hidden. The lock keeps our threads from
    # seeing them hidden (_settings reads under it) and from racing on the filters:
    # python-consul2 warns about its legacy ACL API, never used here, on every build.
    with _BUILD_LOCK, _hidden_environment(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.Consul(host=host, port=settings.port, scheme=settings.scheme)
    # Both clients let CONSUL_HTTP_TOKEN override an explicit token: rebuild the
    # transport and set the token from the settings resolved above.
    client.http.session.close()
    verify: bool | str = settings.ca if settings.verify and settings.ca else settings.verify
    cert: str | tuple[str, str] | None = (
        (settings.cert, settings.key) if settings.cert and settings.key else settings.cert
    )
    http = client.http_connect(host, settings.port, settings.scheme, verify, cert)
    adapter = _deadline_adapter(deadline)
    http.session.mount("http://", adapter)
    http.session.mount("https://", adapter)
    client.http = _HTTP(http, settings)
    client.token = settings.token
    return client


@contextmanager
def _hidden_environment() -> Iterator[None]:
    """Remove the variables in ``_HIDDEN_VARIABLES`` from ``os.environ`` until the exit.

    Only call it holding ``_BUILD_LOCK``. Each value is recorded before it is removed,
    so that a child forked meanwhile can put it back (_after_fork_in_child).
    """
    try:
        for name in _HIDDEN_VARIABLES:
            value = os.environ.get(name)
            if value is not None:
                _hidden[name] = value
                del os.environ[name]
        yield
    finally:
        for name, value in list(_hidden.items()):
            os.environ[name] = value
            del _hidden[name]


def _after_fork_in_child() -> None:
    """Give a forked child a free lock and the environment as the program set it.

    A fork while another thread held ``_BUILD_LOCK`` copies the lock held, with no
    thread left to release it, and may copy the agent variables hidden.
    """
    global _BUILD_LOCK
    _BUILD_LOCK = threading.Lock()
    for name, value in list(_hidden.items()):
        os.environ.setdefault(name, value)
    _hidden.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _HTTP:
    """The client's HTTP transport, adding what neither client's health API can send.

    Neither client sends a namespace, and python-consul2 sends one tag only; the
    health endpoint accepts ``ns`` and repeated ``tag`` (API docs, "List Service
    Instances for Service").
    """

    def __init__(self, http: Any, settings: _Settings) -> None:
        self._http = http
        self._settings = settings

    def get(self, callback: Any, path: str, params: Any = None, **kwargs: Any) -> Any:
        params = list(params or ())
        params += [("tag", tag) for tag in self._settings.extra_tags]
        if self._settings.namespace:
            params.append(("ns", self._settings.namespace))
        return self._http.get(callback, path, params=params, **kwargs)

    def close(self) -> None:
        self._http.session.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._http, name)


def _deadline_adapter(deadline: float) -> Any:
    """Return a requests transport whose every request gives up at *deadline*.

    The clients pass requests their own timeouts (none, or py-consul's 30 s plus
    the wait); a transport adapter replaces them with the time left, for the
    connection and for each read.
    """
    import requests
    from requests.adapters import HTTPAdapter

    class DeadlineAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            left = deadline - time.monotonic()
            if left <= 0:
                raise requests.Timeout("no time left before the deadline")
            kwargs["timeout"] = (left, left)
            return super().send(request, *args, **kwargs)

    return DeadlineAdapter(max_retries=0)


def _parse_agent(text: str, *, where: str) -> tuple[str | None, str]:
    """Split ``[scheme://]host[:port]`` into the scheme (or None) and ``host:port``."""
    scheme, sep, rest = text.strip().rpartition("://")
    if sep and scheme.lower() not in ("http", "https"):
        raise ConfigurationError(
            f"{where}: {text!r} is not supported; use host:port, http://host:port "
            "or https://host:port (unix sockets are not supported)"
        )
    rest = rest.rstrip("/")
    node = parse_node(rest, default_port=8500 if scheme.lower() != "https" else 8501, where=where)
    return (scheme.lower() or None), node.location


def _go_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if not value:
        return default
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ConfigurationError(f"{name}={value!r} must be true or false")


# The operating system's reason inside urllib3's wrapped errors, e.g. "[Errno 111] ...".
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _describe(exc: BaseException, elapsed: float, requests: Any, settings: _Settings) -> str:
    """Return a short reason for a failed request: what went wrong, not urllib3's repr."""
    agent = settings.agent
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS with the agent {agent} failed after {elapsed:.2f}s: {_clean(exc, settings)}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"ConnectTimeout: no connection to the agent {agent} within {elapsed:.2f}s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"ReadTimeout: the agent {agent} did not answer within {elapsed:.2f}s"
    if isinstance(exc, requests.exceptions.ConnectionError):
        found = _ERRNO.search(str(exc))
        reason = found.group(1).strip() if found else _clean(exc, settings)
        return f"ConnectionError: cannot reach the agent {agent}: {reason}"
    return f"{type(exc).__name__} after {elapsed:.2f}s: {_clean(exc, settings)}"


def _clean(exc: BaseException, settings: _Settings) -> str:
    """Return the error's text, shortened and without the token."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if settings.token:
        text = text.replace(settings.token, "<token>")
    return text[:300]
