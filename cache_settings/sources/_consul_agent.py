"""Talking to a Consul agent: where it is, and the consul client's health API over our transport.

The agent's address, token and TLS come from the source's arguments, else from the consul
CLI's variables, which are read and never changed (the token: ``CONSUL_HTTP_TOKEN_FILE``, read
at each attempt so that a rotated token is used, then ``CONSUL_HTTP_TOKEN``). The request
itself is built and its reply decoded by the installed consul client library (python-consul2
or py-consul): its ``Health.service`` sends the documented parameters and its callback turns
the HTTP status into ``consul`` exceptions and the body into JSON. Only the library's ``http``
object is ours (:class:`_AgentHTTP`): one bounded request per call (:mod:`._transport`),
because the library's own constructor reads and trusts the environment, and its requests
session neither ends at a deadline nor caps a reply.
"""

from __future__ import annotations

import logging
import math
import os
import re
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from ..attempt import Attempt
from ..exceptions import ConfigurationError, SourceError, brief, excerpt
from ..nodes import parse_node
from ..redact import environment_secrets, redact_address, scrub
from ..tls import TLSConfig
from ._budget import check_json
from ._consul_modes import go_duration, mode_params, staleness
from ._http import check_status, request

if TYPE_CHECKING:
    from .consul import Consul

__all__ = [
    "DEFAULT_AGENT",
    "Agent",
    "agent_settings",
    "ask_health",
    "blocking_timeout",
    "blocking_wait",
    "check_token",
    "parse_agent",
]

logger = logging.getLogger("cache_settings.sources.consul")

DEFAULT_AGENT = "127.0.0.1:8500"
# Seconds allowed on top of a blocking query's wait for the reply to travel back.
_MARGIN = 0.5
# Go's strconv.ParseBool, which the consul CLI uses for CONSUL_HTTP_SSL(_VERIFY).
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
# A token goes into an HTTP header: printable ASCII only (a stray newline is refused).
_TOKEN = re.compile(r"[\x21-\x7e]+")
# Bytes read of CONSUL_HTTP_TOKEN_FILE: an ACL token is a 36-character UUID.
_TOKEN_FILE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Agent:
    """The agent to ask, after the environment is applied."""

    url: str  # scheme://host:port, IPv6 in brackets
    token: str | None = field(repr=False)
    namespace: str | None
    context: ssl.SSLContext | None  # for https
    hint: str  # what to check when the agent cannot be reached


def agent_settings(source: Consul, environ: Mapping[str, str]) -> Agent:
    """Return the agent *source* asks: its arguments, else the consul CLI's variables."""
    agent, token = source.agent, source.token
    address = agent or environ.get("CONSUL_HTTP_ADDR") or ""
    if agent:
        where, hint = source.url, "check the agent address in the URL"
    elif address:
        where, hint = "CONSUL_HTTP_ADDR", "check CONSUL_HTTP_ADDR"
    else:
        where, hint = "consul agent", "set CONSUL_HTTP_ADDR or put the agent in the URL"
        address = DEFAULT_AGENT
    scheme, hostport = parse_agent(address, where=where)
    if scheme is None:
        tls = source.agent_tls
        tls = _go_bool(environ, "CONSUL_HTTP_SSL", False) if tls is None else tls
        scheme = "https" if tls else "http"
    if token is None:
        # As consul's Go API client (api/api.go, NewClient): the file's token, trimmed of
        # white space, wins over CONSUL_HTTP_TOKEN unless it is empty.
        path = environ.get("CONSUL_HTTP_TOKEN_FILE")
        where = f"{source.url}: CONSUL_HTTP_TOKEN_FILE ({brief(path)})"
        token = _token_in_file(path, where) if path else None
        if token is None:
            token, where = (
                environ.get("CONSUL_HTTP_TOKEN") or None,
                f"{source.url}: CONSUL_HTTP_TOKEN",
            )
        check_token(token, where)
    context = None
    if scheme == "https":
        context = TLSConfig(
            source.ca or environ.get("CONSUL_CACERT") or None,
            source.cert or environ.get("CONSUL_CLIENT_CERT") or None,
            source.key or environ.get("CONSUL_CLIENT_KEY") or None,
        ).context()
        if not (source.verify and _go_bool(environ, "CONSUL_HTTP_SSL_VERIFY", True)):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return Agent(
        f"{scheme}://{hostport}",
        token,
        source.namespace or environ.get("CONSUL_NAMESPACE") or None,
        context,
        hint,
    )


def _token_in_file(path: str, where: str) -> str | None:
    """Return the token in the file at *path*, or None when it holds only white space.

    The file may be a symbolic link (Kubernetes mounts secrets so); a FIFO or device is
    refused without blocking (``O_NONBLOCK``), and so is a file over 4 KiB.

    Raises:
        ConfigurationError: the file cannot be read, is not a regular file, or is too large.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            data = os.read(fd, _TOKEN_FILE_LIMIT + 1) if regular else b""
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read the file ({exc.strerror or exc})") from None
    if not regular or len(data) > _TOKEN_FILE_LIMIT:
        raise ConfigurationError(
            f"{where} is not a token file: give the path of a file holding the ACL token alone"
        )
    return data.decode("utf-8", "replace").strip() or None


def parse_agent(text: str, *, where: str) -> tuple[str | None, str]:
    """Split ``[scheme://]host[:port]`` into the scheme (or None) and ``host:port``.

    Messages show *text* without user info (it may come from ``CONSUL_HTTP_ADDR``).
    """
    shown = redact_address(text.strip())
    scheme, sep, rest = text.strip().rpartition("://")
    if sep and scheme.lower() not in ("http", "https"):
        raise ConfigurationError(
            f"{where}: {brief(shown)} is not supported; use host:port, http://host:port "
            "or https://host:port (unix sockets are not supported)"
        )
    if "@" in rest:
        raise ConfigurationError(
            f"{where}: the agent address {brief(shown)} carried user info ('...@'), which is "
            "not used; give the token with CONSUL_HTTP_TOKEN or token="
        )
    try:
        node = parse_node(
            rest.rstrip("/"), default_port=8501 if scheme.lower() == "https" else 8500
        )
    except ConfigurationError:
        raise ConfigurationError(
            f"{where}: the agent address {brief(shown)} is not host[:port] (a port 1..65535), "
            "http://host[:port] or https://host[:port]"
        ) from None
    return (scheme.lower() or None), node.location


def check_token(token: str | None, what: str) -> None:
    """Raise ConfigurationError, without echoing *token*, when it cannot be an HTTP header."""
    if token is not None and not _TOKEN.fullmatch(token):
        raise ConfigurationError(
            f"{what} holds spaces, control characters (a trailing newline?) or non-ASCII "
            "characters, so it is not sent; write the token without them"
        )


def blocking_wait(timeout: float, wanted: float | None = None) -> tuple[float, float]:
    """Return ``(wait, request timeout)`` in seconds for a blocking query given *timeout*.

    Consul holds a blocking query for ``wait`` plus up to ``wait / 16`` of jitter
    (API docs, "Blocking Queries"), and the reply needs a moment to travel back, so
    the wait is *wanted* if it fits in *timeout* with both, else the largest whole
    second that does (at least 1 s, and never more than *wanted*). The request timeout
    never exceeds *timeout*.
    """
    room = (timeout - _MARGIN) * 16 / 17
    if wanted is not None and wanted <= room:
        wait = wanted
    else:
        wait = max(1, math.floor(room))
        wait = wait if wanted is None else min(wait, wanted)
    return wait, min(wait + wait / 16 + _MARGIN, timeout)


def blocking_timeout(wait: float) -> float:
    """Return the seconds an attempt needs for a blocking query that waits *wait* seconds.

    The wait, Consul's jitter (up to ``wait / 16``), the reply's margin, and as much again
    for connecting and the attempt's own start: :func:`blocking_wait` given this returns
    *wait* itself.
    """
    return wait + wait / 16 + 2 * _MARGIN


def ask_health(
    attempt: Attempt, source: Consul, agent: Agent, *, index: int | None, wait: float | None
) -> tuple[int, Any]:
    """Return ``(X-Consul-Index, decoded entries)`` of one query for *source*'s instances.

    An empty answer that the agent's ACLs filtered (``X-Consul-Results-Filtered-By-ACLs``,
    API docs, "Results Filtered by ACLs") is a permanent SourceError naming the fix. A stale
    or cached answer older than ``source.max_stale`` (or that does not say how old it is)
    is asked again of the leader at once, within the same attempt.
    """
    modes = (source.consistency, source.cached)
    received, entries, age = _ask(attempt, source, agent, modes, index=index, wait=wait)
    if source.max_stale is None or (age is not None and age <= source.max_stale):
        return received, entries
    logger.warning(
        "%s: the answer is %s old, more than max_stale=%gs; asking the leader",
        source.url, "of unknown age" if age is None else f"{age:g}s", source.max_stale,
    )  # fmt: skip
    received, entries, _ = _ask(attempt, source, agent, ("default", False), index=None, wait=None)
    return received, entries


def _ask(
    attempt: Attempt,
    source: Consul,
    agent: Agent,
    modes: tuple[str, bool],
    *,
    index: int | None,
    wait: float | None,
) -> tuple[int, Any, float | None]:
    """Ask once in *modes* (consistency, cached); return the index, the entries, their age."""
    url, consul, health, response_type = source.url, *_library(source.url)
    # Neither client sends a namespace or a filter, and python-consul2 sends one tag only;
    # the endpoint takes ns, filter and repeated tag (API docs, "List Service Instances").
    extra = [("tag", tag) for tag in source.tags[1:]]
    extra += [("ns", agent.namespace)] if agent.namespace else []
    extra += [("filter", source.filter_expr)] if source.filter_expr else []
    # Neither client takes a consistency mode or ?cached on Health.service (python-consul2
    # sends ?stale/?consistent on other endpoints only): sent here, as the Go client does.
    extra += mode_params(*modes)
    http = _AgentHTTP(attempt, agent, response_type, extra)
    try:
        received, entries = health(_Client(http)).service(
            source.service,
            index=index,
            wait=go_duration(wait) if wait else None,
            passing=source.passing,
            tag=source.tags[0] if source.tags else None,
            dc=source.dc,
            near=source.near,
            token=agent.token,
            node_meta=dict(source.node_meta) or None,
        )
    except (SourceError, ConfigurationError):  # ours, from the transport (a proxy variable)
        raise
    except consul.ACLPermissionDenied as exc:
        raise SourceError(
            url,
            f"permission denied by the agent {agent.url} ({_clean(exc, agent)}); use a token "
            f"with service:read on {brief(source.service)} (CONSUL_HTTP_TOKEN or token=)",
            permanent=True,
        ) from None
    except consul.ConsulException as exc:
        raise SourceError(url, f"the agent {agent.url} answered {_clean(exc, agent)}") from None
    except Exception as exc:  # whatever the library meets decoding a hostile reply
        raise SourceError(
            url, f"malformed reply from {agent.url}: {type(exc).__name__}: {_clean(exc, agent)}"
        ) from None
    if entries is None:  # python-consul2 turns a 404 into (index, None)
        raise SourceError(url, f"the agent {agent.url} answered 404 Not Found")
    if not (isinstance(received, str) and received.isascii() and received.isdigit()):
        raise SourceError(url, f"the agent {agent.url} sent no valid X-Consul-Index")
    if len(received) > 20 or int(received) >= 2**64:  # Consul's indexes are uint64
        raise SourceError(url, f"the agent {agent.url} sent an X-Consul-Index out of range")
    if http.filtered and entries == []:
        sent = "no token was sent" if agent.token is None else "the token sent cannot read them"
        raise SourceError(
            url,
            f"the agent {agent.url} answered no instance: its ACLs hid them ({sent}); set "
            f"CONSUL_HTTP_TOKEN or token= to a token with service:read on {brief(source.service)}",
            permanent=True,
        )
    if http.filtered:
        logger.warning("%s: the agent's ACLs hid some instances from this token", url)
    return int(received), entries, http.age


def _library(source: str) -> tuple[Any, Any, Any]:
    try:
        import consul
        import consul.base
    except ImportError as exc:
        raise ConfigurationError(
            f"{source}: the Consul client is not installed ({exc}); "
            'pip install "django-cache-settings[consul]"'
        ) from None
    # py-consul has the class as consul.base.Health, python-consul2 as Consul.Health.
    health = getattr(consul.base, "Health", None) or consul.base.Consul.Health
    return consul, health, consul.base.Response


class _Client:
    """What the clients' ``Health`` API reads of a ``consul.Consul``; never its constructor."""

    dc = None
    token = None
    consistency = "default"

    def __init__(self, http: _AgentHTTP) -> None:
        self.http = http

    def prepare_headers(self, token: str | None = None) -> dict[str, str]:
        return {"X-Consul-Token": token} if token else {}


class _AgentHTTP:
    """The clients' ``http`` interface: one GET within the attempt, its reply handed back."""

    def __init__(
        self,
        attempt: Attempt,
        agent: Agent,
        response_type: Any,
        extra: list[tuple[str, str]],
    ) -> None:
        self._attempt, self._agent, self._response, self._extra = (
            attempt, agent, response_type, extra,
        )  # fmt: skip
        self.filtered = False
        self.age: float | None = None

    def get(
        self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False
    ) -> Any:
        query = [*(params or ()), *self._extra]
        url = self._agent.url + quote(path, safe="/:") + (f"?{urlencode(query)}" if query else "")
        peer, context = f"the agent {self._agent.url}", self._agent.context
        reply = request(
            self._attempt, "GET", url, peer=peer, headers=headers, context=context,
            hint=self._agent.hint,
        )  # fmt: skip
        # The clients raise for 4xx and 5xx only: any other body would be decoded as the answer.
        check_status(reply, self._attempt.source, peer, "in the URL or in CONSUL_HTTP_ADDR")
        marker = reply.headers.get("X-Consul-Results-Filtered-By-ACLs") or ""
        self.filtered = marker.strip().lower() == "true"
        self.age = staleness(reply.headers)
        if 200 <= reply.status < 300:
            # The client decodes the body next, in C: only a body that fits in the time left.
            check_json(reply.body, self._attempt, source=self._attempt.source)
        try:
            text = reply.body.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(self._attempt.source, "malformed reply: not UTF-8") from None
        values = {
            "code": reply.status,
            "headers": reply.headers,
            "body": text,
            "content": reply.body,
        }
        return callback(self._response(*(values[name] for name in self._response._fields)))


def _go_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if not value:
        return default
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ConfigurationError(
        f"{name}={scrub(value, environment_secrets())!r} must be true or false"
    )


def _clean(exc: BaseException, agent: Agent) -> str:
    """Return the agent's error text on one escaped line, cut, without the token in any form.

    The token is masked as written, escaped (an agent may quote it as Go's ``%q`` or JSON
    does) and percent-encoded, by :mod:`cache_settings.redact`, before the text is cut.
    """
    secrets = [agent.token] if agent.token else []
    return excerpt(scrub(str(exc), [*secrets, *environment_secrets()])) or type(exc).__name__
