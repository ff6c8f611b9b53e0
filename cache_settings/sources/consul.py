"""Consul: healthy instances of a service, from ``/v1/health/service/<service>``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from math import inf
from typing import ClassVar
from urllib.parse import SplitResult, quote, unquote, urlencode

from ..attempt import Attempt
from ..exceptions import ConfigurationError, brief
from ..nodes import Node
from ..tls import TLSConfig
from . import Traits
from . import _consul_agent as _agent
from . import _consul_modes as _modes
from ._consul_agent import DEFAULT_AGENT, blocking_timeout, blocking_wait
from ._consul_parse import parse_health_service
from ._transport import within
from ._url import NODE_TLS_OPTIONS, Query, decoded, node_tls_params

__all__ = ["DEFAULT_AGENT", "STATUSES", "Consul", "blocking_wait", "parse_health_service"]

logger = logging.getLogger(__name__)

#: Aggregated instance statuses, as Consul's own API client computes them from the checks.
STATUSES = ("passing", "warning", "critical", "maintenance")
_ADDRESSES = ("node", "service")
_STATUS_FIX = "list some of passing, warning, critical, maintenance, joined by ','"
_OPTIONS = (
    "address", "ca", "cached", "cert", "consistency", "dc", "filter", "key", "near", "node-meta",
    "max_stale", "ns", "passing", "status", "tag", "tls", "token", "verify", "wait",
    *NODE_TLS_OPTIONS,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Consul:
    """Healthy instances of a Consul service (``/v1/health/service``).

    Unset fields default, when the source is asked (not when it is built), to the
    consul CLI's variables: ``CONSUL_HTTP_ADDR`` (then 127.0.0.1:8500),
    ``CONSUL_HTTP_TOKEN_FILE`` (a file holding the token, read at each attempt; it wins over
    ``CONSUL_HTTP_TOKEN``, as in consul's Go client), ``CONSUL_HTTP_TOKEN``,
    ``CONSUL_HTTP_SSL``, ``CONSUL_HTTP_SSL_VERIFY``,
    ``CONSUL_CACERT``, ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``, ``CONSUL_NAMESPACE``.
    The environment is only read, never changed.

    Args:
        agent: ``"host[:port]"``, ``"http://host[:port]"`` or ``"https://host[:port]"``
            (IPv6 in brackets). Without a port: 8500, also under TLS, as with the consul
            CLI; only ``https://host`` defaults to 8501.
        tags: every tag must be on an instance.
        node_meta: ``(key, value)`` pairs every instance's node must carry.
        passing: only instances whose checks all pass; False admits every instance.
        status: the aggregated statuses kept (:data:`STATUSES`), e.g. ``("passing",
            "warning")`` for "everything but critical"; node and service checks both
            count, as in Consul's API client. Overrides *passing* when given.
        filter_expr: a Consul filter expression the agent applies (``filter=``).
        agent_tls: HTTPS to the agent (``tls=``, ``ca=``, ``cert=``, ``key=`` in the URL);
            never TLS to the memcached nodes, which Consul does not describe.
        address: ``"service"`` uses ``Service.Address``, else ``Node.Address``;
            ``"node"`` always uses ``Node.Address``.
        node_tls: the memcached nodes speak only TLS, verified with these settings
            (``node_tls=true&node_ca=…&node_cert=…&node_key=…``): the entry then uses
            pymemcache with a verifying context, and nodes are marked ``tls``.
        consistency: Consul's consistency mode (API docs, "Consistency Modes"):
            ``"default"`` (the leader answers), ``"stale"`` (any server answers; sent as
            ``?stale``) or ``"consistent"`` (the leader checks with a quorum first;
            ``?consistent``). docs/sources.md says what each costs the servers.
        cached: the local agent answers from its cache (``?cached``; API docs, "Agent
            Caching"), kept fresh by one background blocking query per service; not
            with ``consistency="consistent"``, which Consul refuses.
        wait: seconds a blocking query waits for a change (``wait=30s``; 0.001 to 600,
            Consul's maximum); None fits the wait into the watcher's bound (27 s of
            30 s). A refreshing entry's watcher bounds each query by this plus Consul's
            jitter (``wait / 16``) and a margin.
        max_stale: seconds a stale or cached answer may lag (``max_stale=10s``; with
            ``consistency="stale"`` or ``cached``): an answer whose server last heard from
            the leader longer ago (``X-Consul-LastContact``), or whose agent lost the
            servers longer ago (``Age``), is asked again of the leader, as Consul's own DNS
            does with its ``max_stale``; None takes any answer.

    Raises:
        ConfigurationError: an argument out of range, or a combination Consul refuses.
    """

    service: str
    agent: str | None = None
    tags: tuple[str, ...] = ()
    dc: str | None = None
    near: str | None = None
    node_meta: tuple[tuple[str, str], ...] = ()
    passing: bool = True
    status: tuple[str, ...] = ()
    filter_expr: str | None = None
    namespace: str | None = None
    token: str | None = field(default=None, repr=False)
    agent_tls: bool | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True
    address: str = "service"
    node_tls: TLSConfig | None = None
    consistency: str = "default"
    cached: bool = False
    wait: float | None = None
    max_stale: float | None = None

    blocking: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.service or "/" in self.service:
            raise ConfigurationError(f"consul: invalid service name {brief(self.service)}")
        self._check_kinds()
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "node_meta", tuple((k, v) for k, v in self.node_meta))
        self._check_texts()
        if set(self.status) - set(STATUSES):
            statuses = ", ".join(STATUSES)
            raise ConfigurationError(f"consul: status={brief(self.status)} must list {statuses}")
        kept = tuple(s for s in STATUSES if s in self.status)
        object.__setattr__(self, "status", kept or (("passing",) if self.passing else STATUSES))
        object.__setattr__(self, "passing", self.status == ("passing",))
        self._check_agent_tls()
        if self.address not in _ADDRESSES:
            raise ConfigurationError(
                f"consul: address={brief(self.address)} must be one of {', '.join(_ADDRESSES)}"
            )
        wait = _modes.check_modes(self.consistency, self.cached, self.wait, where="consul")
        object.__setattr__(self, "wait", wait)
        bound = _modes.check_max_stale(
            self.max_stale, self.consistency, self.cached, where="consul"
        )
        object.__setattr__(self, "max_stale", bound)
        _agent.check_token(self.token, f"{self.url}: the token")

    def _check_agent_tls(self) -> None:
        """Refuse agent TLS options that a plain-HTTP agent would ignore, or a conflict.

        ``tls=false&ca=…`` or an ``http://`` agent with ``ca=``/``cert=``/``key=``/
        ``verify=false`` spoke plain HTTP without a word; ``https://`` with
        ``agent_tls=False`` spoke HTTPS.
        """
        scheme = None
        if self.agent is not None:
            scheme = _agent.parse_agent(self.agent, where="consul agent")[0]
        if scheme == "https" and self.agent_tls is False:
            raise ConfigurationError(
                f"consul: the agent {brief(self.agent)} is https:// but agent_tls=False (tls="
                "false in a URL); drop one of them"
            )
        given = [
            name
            for name, value in (("ca", self.ca), ("cert", self.cert), ("key", self.key))
            if value is not None
        ] + ([] if self.verify else ["verify=false"])
        if given and (scheme == "http" or (scheme is None and self.agent_tls is False)):
            why = "the agent is http://" if scheme == "http" else "tls=false"
            raise ConfigurationError(
                f"consul: {', '.join(given)} would be ignored: they set HTTPS to the agent, "
                f"but {why}; drop them, or ask the agent over HTTPS (tls=true or an https:// "
                "agent). For TLS to the memcached nodes write node_tls=true&node_ca=…"
            )

    def _check_kinds(self) -> None:
        """Refuse an argument of the wrong kind, which would be read as something else.

        ``tags="prod"`` would be the tags p, r, o, d (and ``status="passing"`` its letters);
        ``node_meta={"az": "a"}`` its keys cut into pairs; ``passing="false"``,
        ``verify="false"`` or ``agent_tls="false"`` true.
        """
        examples = {
            "tags": "('prod',)",
            "node_meta": "(('az', 'eu1a'),)",
            "status": "('passing',)",
        }
        for name, example in examples.items():
            value = getattr(self, name)
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                raise ConfigurationError(
                    f"consul: {name}={brief(value)} must be a tuple, as in {name}={example}"
                )
        for pair in self.node_meta:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ConfigurationError(
                    f"consul: node_meta holds {brief(pair)}; each item is a (key, value) tuple"
                )
        flags = (("passing", False), ("verify", False), ("agent_tls", True))
        for name, may_be_none in flags:
            value = getattr(self, name)
            if not (isinstance(value, bool) or (may_be_none and value is None)):
                allowed = "True, False or None" if may_be_none else "True or False"
                raise ConfigurationError(f"consul: {name}={brief(value)} must be {allowed}")

    def _check_texts(self) -> None:
        """Refuse a name, tag, filter, meta or TLS file that is not printable text, is empty
        or has white space at either end: never meant."""
        texts = [
            ("service", self.service), ("dc", self.dc), ("near", self.near),
            ("namespace", self.namespace), ("filter_expr", self.filter_expr),
            *(("tags", tag) for tag in self.tags),
            *(("node_meta", key) for key, _ in self.node_meta),
            *(("node_meta value", value) for _, value in self.node_meta),
        ]  # fmt: skip
        texts += [("ca", self.ca), ("cert", self.cert), ("key", self.key)]
        for name, text in texts:
            if text is not None and not (isinstance(text, str) and text.isprintable()):
                raise ConfigurationError(
                    f"consul: {name} holds {brief(text)}, which is not printable text (a "
                    "control character, or not a string)"
                )
            if text is None or (not text and name == "node_meta value"):  # Consul takes k:
                continue
            if not text or text != text.strip():
                # An empty dc, namespace or CA reads as none given; " eu1" is no datacenter.
                fix = "give None for none" if name != "node_meta" else "give the key"
                raise ConfigurationError(
                    f"consul: {name} holds {brief(text)}, empty or with white space at either "
                    f"end; {fix}, or the text without the spaces"
                )

    @classmethod
    def from_url(cls, url: SplitResult) -> Consul:
        """Build the source from ``consul://[TOKEN@][agent:port]/SERVICE?tag=…&dc=…``."""
        query = Query(url, _OPTIONS, repeatable=("tag", "node-meta"))
        where = query.where
        if ";" in url.path:
            # consul:///mc;token=T: an option written as a path parameter would be read as
            # part of the service name, which is sent, logged and the snapshot key. A name
            # that really holds ';' is written %3B.
            agent = url.netloc.rpartition("@")[2]  # the path is not quoted: it may hold a token
            raise ConfigurationError(
                f"consul://{agent}/…: the path holds ';'; options go after '?', joined with "
                "'&' (consul:///memcached?tag=prod&token=…)"
            )
        service = decoded(url.path.strip("/"), where, "the service name")
        userinfo, _, hostport = url.netloc.rpartition("@")
        if not service and hostport and not url.path and ":" not in hostport:
            # consul://memcached: two slashes, so "memcached" is the agent, not the service.
            raise ConfigurationError(
                f"{where}: {hostport!r} was read as the agent's host (consul://AGENT/SERVICE) "
                f"and no service is named; for the local agent write consul:///{hostport}"
            )
        if not service or "/" in service:
            raise ConfigurationError(
                f"{where}: expected one service name as the path, as in consul:///memcached"
            )
        meta = []
        for pair in query.all("node-meta"):
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise ConfigurationError(f"{where}: option node-meta={pair!r} must be key:value")
            meta.append((key, value))
        status = tuple(s.strip() for s in (query.get("status") or "").split(",") if s.strip())
        if query.get("status") is not None and not status:
            raise ConfigurationError(f"{where}: option status= names no status; {_STATUS_FIX}")
        if status and query.get("passing") is not None:
            raise ConfigurationError(f"{where}: give status= or passing=, not both")
        if ":" in userinfo:  # the agent takes an ACL token, never a user name and password
            raise ConfigurationError(
                f"{where}: the URL holds a user name and password ('USER:***@'); a Consul agent "
                "takes an ACL token: consul://TOKEN@AGENT/SERVICE, token=, or CONSUL_HTTP_TOKEN"
            )
        if userinfo and query.get("token") is not None:
            raise ConfigurationError(f"{where}: give the token once, before '@' or as token=")
        token = unquote(userinfo) or query.get("token") or None
        _agent.check_token(token, f"{where}: the token in the URL")
        consistency = query.choice("consistency", _modes.CONSISTENCY, "default")
        cached = bool(query.flag("cached", False))
        wait_text = query.get("wait")
        wait = _modes.parse_wait(wait_text, where=where) if wait_text is not None else None
        _modes.check_modes(consistency, cached, wait, where=where)
        stale_text = query.get("max_stale")
        max_stale = None
        if stale_text is not None:
            max_stale = _modes.parse_wait(stale_text, where=where, option="max_stale")
        _modes.check_max_stale(max_stale, consistency, cached, where=where)
        return cls(
            service,
            agent=_agent.parse_agent(hostport, where=where)[1] if hostport else None,
            tags=query.all("tag"),
            dc=query.get("dc") or None,
            near=query.get("near") or None,
            node_meta=tuple(meta),
            passing=bool(query.flag("passing", True)),
            status=status,
            filter_expr=query.get("filter") or None,
            namespace=query.get("ns") or None,
            token=token,
            agent_tls=query.flag("tls"),
            ca=query.get("ca") or None,
            cert=query.get("cert") or None,
            key=query.get("key") or None,
            verify=bool(query.flag("verify", True)),
            address=query.choice("address", _ADDRESSES, "service"),
            node_tls=query.tls("node_"),
            consistency=consistency,
            cached=cached,
            wait=wait,
            max_stale=max_stale,
        )

    @property
    def url(self) -> str:
        """Return the canonical URL without the token; the snapshot key."""
        agent, tls = self.agent or "", self.agent_tls
        if agent:
            scheme, agent = _agent.parse_agent(agent, where="consul agent")
            tls = True if scheme == "https" else tls
        params: list[tuple[str, str]] = [("tag", tag) for tag in sorted(set(self.tags))]
        params += [("node-meta", f"{k}:{v}") for k, v in sorted(set(self.node_meta))]
        status = None if self.passing or self.status == STATUSES else ",".join(self.status)
        options = {
            "dc": self.dc, "near": self.near, "ns": self.namespace,
            "passing": "false" if self.status == STATUSES else None, "status": status,
            "filter": self.filter_expr,
            "address": None if self.address == "service" else self.address,
            "tls": None if tls is None else str(tls).lower(),
            "ca": self.ca, "cert": self.cert, "key": self.key,
            "verify": None if self.verify else "false",
        }  # fmt: skip
        params += [(key, value) for key, value in options.items() if value is not None]
        params += node_tls_params(self.node_tls)
        params += _modes.url_params(self.consistency, self.cached, self.wait, self.max_stale)
        query = f"?{urlencode(params)}" if params else ""
        # Quoted, so that names such as "my svc" or "a?b" parse back (from_url unquotes).
        return f"consul://{agent}/{quote(self.service, safe='')}{query}"

    @property
    def traits(self) -> Traits:
        """TLS nodes if ``node_tls`` says so (``agent_tls`` is the agent's); the token is secret.

        With ``wait`` set, the bound a blocking query needs is declared for the watcher.
        """
        return Traits(
            secrets=(self.token,) if self.token else (),
            node_tls=self.node_tls,
            blocking_timeout=None if self.wait is None else blocking_timeout(self.wait),
            if_empty=self._if_empty(),
        )

    def _if_empty(self) -> str:
        # The health endpoint answers [] for a service it does not know: a misspelt name
        # looks like a service whose instances all fail their checks.
        kept = "passing " if self.status == ("passing",) else ""
        tagged = f" tagged {', '.join(map(brief, self.tags))}" if self.tags else ""
        where = f" in datacenter {brief(self.dc)}" if self.dc else ""
        checked = "service name, tags and filter" if self.filter_expr else "service name and tags"
        return (
            f"the agent knows no {kept}instance of {brief(self.service)}{tagged}{where}; "
            f"check the {checked} (`consul catalog services -tags` lists them)"
        )

    def resolve(self, timeout: float) -> list[Node]:
        """Ask the agent once, within *timeout* seconds, for the service's instances."""
        return within(self.url, timeout, lambda attempt: self._ask(attempt, None, timeout))[1]

    def watch(self, index: int | None, timeout: float) -> tuple[int | None, list[Node]]:
        """Return ``(index, nodes)``, waiting up to *timeout* seconds for a change past *index*.

        Without *index* (or with 0) the agent answers at once. With one, the query waits
        ``wait`` seconds when given and they fit in *timeout* (with Consul's jitter and a
        margin), else as long as fits. The returned index is 0 when the agent's index went
        backwards, so that the next call starts afresh.
        """
        return within(self.url, timeout, lambda attempt: self._ask(attempt, index, timeout))

    def _ask(self, attempt: Attempt, index: int | None, timeout: float) -> tuple[int, list[Node]]:
        agent = _agent.agent_settings(self, os.environ)
        # A follower cut off from the leader answers a blocking query only when its wait
        # ends: waiting at most max_stale finds it out within that bound.
        wanted = self.wait if self.max_stale is None else min(self.wait or inf, self.max_stale)
        wait = blocking_wait(min(timeout, attempt.left()), wanted)[0] if index else None
        received, entries = _agent.ask_health(attempt, self, agent, index=index or None, wait=wait)
        nodes = parse_health_service(
            entries, source=self.url, address=self.address, tags=self.tags, status=self.status
        )
        if self.node_tls is not None:
            nodes = [Node(node.host, node.port, node.ip, tls=True) for node in nodes]
        # Consul docs, "Blocking queries, implementation details": reset an index that
        # went backwards, and never block on an index below 1.
        new_index = 0 if index and received < index else max(received, 1)
        logger.debug("%s: %d nodes at index %d", self.url, len(nodes), new_index)
        return new_index, nodes
