"""Source chains: sources asked in order, the first live answer wins.

``memcached(["consul:///memcached", "elasticache://cfg:11211"])``, ``resolve([...])``,
``cache-settings resolve URL URL`` and a refreshing entry whose ``LOCATION`` is a list of
source URLs all make one :class:`Chain`. Its rules (docs/architecture.md, "Chains"):

- One deadline for the whole chain. A *round* asks the members in order; each gets a fair
  share of the time left (the time left divided by the members not yet asked in this
  round), so a black-holed first member costs its share, never the whole deadline. The
  first live answer wins, and a member that fails fast leaves its share to the next.
- ``resolve_with()`` retries rounds as it retries a single source (``attempts``, the same
  back-off, the deadline); a single source is a round of one. A member whose failure no
  retry can change (a permanent :class:`SourceError`, a static list) is not asked again
  in later rounds of that resolution.
- Each member keeps its own snapshot entry, written under its own URL when it answers;
  when every member fails, the first usable entry in chain order stands in.
- Under ``CACHE_SETTINGS_OFFLINE=1`` the members that need the network are not asked: a
  static member answers as it would live, else the snapshot stands in as above.
- A refreshing backend polls a chain every ``refresh`` seconds (no blocking queries across
  members: a Consul member is asked at once, like any poll) and follows the first member
  that answers; when an earlier member answers again, it moves back to it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from .ask import Answer, ask
from .exceptions import ConfigurationError, SourceError, brief, some
from .nodes import Node
from .policy import Policy
from .sources import Source, Traits, WatchableSource, no_scheme_message, parse_source

__all__ = [
    "Chain",
    "as_source",
    "ask_in_order",
    "chain_url",
    "is_earlier",
    "is_source_url",
    "members",
    "source_urls",
    "versions_grow",
    "written_urls",
]

logger = logging.getLogger(__name__)

# Grafana Mimir, Loki and Thanos spell DNS discovery without "://" (cache_settings/sources).
_DNS_PREFIXES = ("dns+", "dnssrv+", "dnssrvnoa+")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")  # RFC 3986 scheme, then "//"


@dataclass(frozen=True, slots=True)
class Chain:
    """Sources asked in order within one deadline; the first live answer wins.

    A chain is a :class:`~cache_settings.sources.Source` itself: its ``url`` is
    ``[URL1, URL2, …]`` (the members' redacted URLs; never a snapshot key, each member
    keeps its own entry) and its ``traits`` combine the members'. Nested chains are
    flattened.

    Raises:
        ConfigurationError: fewer than two members, a member listed twice, or members
            that disagree on the client (``pylibmc://`` and ``pymemcache://``) or on TLS to
            the nodes: one entry has one client and one TLS setting whichever member answers.
    """

    members: tuple[Source, ...]

    def __post_init__(self) -> None:
        flat = tuple(member for source in self.members for member in members(source))
        object.__setattr__(self, "members", flat)
        urls = [member.url for member in flat]
        if len(flat) < 2:
            raise ConfigurationError(f"A chain of sources needs two or more, not {urls}")
        twice = sorted({url for url in urls if urls.count(url) > 1})
        if twice:
            raise ConfigurationError(f"{self.url}: lists {', '.join(twice)} more than once")
        _combined(self.url, flat)  # the members must agree: refused here, at settings time

    @property
    def url(self) -> str:
        """``[URL1, URL2, …]``: the members' redacted URLs, in chain order."""
        return chain_url([member.url for member in self.members])

    @property
    def traits(self) -> Traits:
        """The members' traits combined: network if any member needs it, their secrets."""
        return _combined(self.url, self.members)

    def resolve(self, timeout: float) -> list[Node]:
        """Ask the members in order (one round) within *timeout* seconds; return the first answer.

        ``resolve_with()`` and the watchers do not call this: they ask the members through
        :func:`ask_in_order` themselves, so that they know which member answered.

        Raises:
            SourceError: every member failed (the last member's error).
        """
        answer = ask_in_order(list(self.members), Policy(), deadline_at=time.monotonic() + timeout)
        return list(answer.nodes)


def _combined(url: str, sources: Sequence[Source]) -> Traits:
    traits = [source.traits for source in sources]
    backends = sorted({t.backend for t in traits if t.backend is not None})
    if len(backends) > 1:
        raise ConfigurationError(
            f"{url}: its sources choose different clients ({' and '.join(backends)}); "
            "one cache entry has one client: write memcached:// for static lists"
        )
    if len({t.node_tls for t in traits}) > 1:
        raise ConfigurationError(
            f"{url}: its sources disagree on TLS to the nodes; a chain's nodes must all "
            "speak TLS with the same settings (tls=, ca=), or none of them"
        )
    if_needed = [t.node_tls_if_needed for t in traits if t.node_tls_if_needed is not None]
    return Traits(
        needs_network=any(t.needs_network for t in traits),
        backend=backends[0] if backends else None,
        node_tls=traits[0].node_tls,
        node_tls_if_needed=if_needed[0] if if_needed else None,
        secrets=tuple(secret for t in traits for secret in t.secrets),
    )


def chain_url(urls: Sequence[str]) -> str:
    """Return the URL of a chain of the sources *urls*: ``[URL1, URL2, …]``."""
    return f"[{', '.join(urls)}]"


def members(source: Source) -> tuple[Source, ...]:
    """Return the sources *source* asks, in order: a chain's members, else *source* alone."""
    return source.members if isinstance(source, Chain) else (source,)


def as_source(value: str | Source | Sequence[str | Source]) -> Source:
    """Return the source *value* names: a URL, a Source, or a list of them (a :class:`Chain`).

    A list of one item is that source itself.

    Raises:
        ConfigurationError: an empty list, an invalid URL, or members that cannot be chained.
    """
    if not isinstance(value, list | tuple):
        return parse_source(cast("str | Source", value))  # any other type: its error
    written = [item for item in value if isinstance(item, str)]
    if written and len(written) == len(value) and not any(map(is_source_url, written)):
        # ["10.0.0.1:11211", "10.0.0.2:11211"]: Django's list of nodes, not a chain.
        raise ConfigurationError(no_scheme_message(written))
    sources = [parse_source(item) for item in value]
    if not sources:
        raise ConfigurationError(
            "An empty list of cache sources; give a source URL, or a list of them to try in order"
        )
    return sources[0] if len(sources) == 1 else Chain(tuple(sources))


def written_urls(value: object) -> list[str]:
    """Return the URL strings *value* (a URL, a Source, or a list of them) was written as.

    The CLI and ``memcached()`` mask the secrets these hold in every output.
    """
    items = value if isinstance(value, list | tuple) else [value]
    return [item for item in items if isinstance(item, str)]


def is_source_url(item: object) -> bool:
    """Return True when *item* is written as a source URL, not as a memcached node address.

    The rule for ``LOCATION`` items: text that starts with ``scheme://``
    (``consul:///memcached``) or with ``dns+``, ``dnssrv+`` or ``dnssrvnoa+`` (Grafana
    Mimir's spellings), case aside. A node address never does (``host:port``,
    ``[v6]:port``, ``unix:/path``).
    """
    if not isinstance(item, str):
        return False
    text = item.strip().lower()
    return _SCHEME.match(text) is not None or text.startswith(_DNS_PREFIXES)


def may_change(item: object) -> bool:
    """Return True when *item* is a source URL whose node list can change at run time.

    A static list (``memcached://``, ``pylibmc://``, ``pymemcache://``) never changes, nor
    does a ``host:port`` node; every other source URL may.
    """
    scheme = item.strip().lower().partition("://")[0] if isinstance(item, str) else ""
    return is_source_url(item) and scheme not in ("memcached", "pylibmc", "pymemcache")


def source_urls(location: object, *, where: str) -> list[str] | None:
    """Return a ``CACHES`` ``LOCATION`` as source URLs, or None when it lists nodes.

    A string that is a source URL is one URL (``memcached://a:11211,b:11211`` holds commas);
    a list is a chain when every item is a source URL (:func:`is_source_url`) and a plain
    node list, as Django reads it, when none is.

    Raises:
        ConfigurationError: source URLs mixed with node addresses; *where* names the entry.
    """
    if isinstance(location, str):
        if is_source_url(location):
            return [location.strip()]
        items: list[object] = list(re.split("[;,]", location))  # as Django splits it
    elif isinstance(location, list | tuple):
        items = list(location)
    else:
        return None
    urls = [item.strip() for item in items if isinstance(item, str) and is_source_url(item)]
    if not urls:
        return None
    if len(urls) < len(items) or isinstance(location, str):
        shown = brief(location) if isinstance(location, str) else some(items, "items")
        raise ConfigurationError(
            f"{where}: LOCATION {shown} mixes source URLs with node addresses; give "
            "source URLs only (a list is a chain: the first that answers wins) or "
            "host:port nodes only"
        )
    return urls


def is_earlier(source: Source, url: str, than: str) -> bool:
    """Return True when the member *url* comes before the member *than* in the chain *source*."""
    order = [member.url for member in members(source)]
    return url in order and than in order and order.index(url) < order.index(than)


def versions_grow(source: Source, url: str | None) -> bool:
    """Return True unless the answers of *source*'s member *url* carry a version that may go back.

    A configuration endpoint's config version only grows; a Consul index may go back (a
    restored agent), so a watcher polling it in a chain must not compare it.
    """
    for member in members(source):
        if member.url == url:
            return not (isinstance(member, WatchableSource) and member.blocking)
    return True


def ask_in_order(
    sources: list[Source],
    policy: Policy,
    *,
    deadline_at: float,
    errors: list[SourceError] | None = None,
) -> Answer:
    """Ask *sources* in order until one answers (one round); return its :class:`Answer`.

    Each source gets a fair share of the time left before *deadline_at* (a
    ``time.monotonic()`` value, seconds): the time left divided by the sources not yet
    asked in this round. ``Answer.source`` names the one that answered. Every failure is
    appended to *errors*; a source whose failure no retry can change (a permanent
    :class:`SourceError`, or one that needs no network) is removed from *sources*, so
    that the next round skips it.

    Raises:
        SourceError: every source failed (the last failure), or no time was left.
        ConfigurationError: a source cannot be asked as configured.
    """
    found = errors if errors is not None else []
    asked = list(sources)
    failure: SourceError | None = None
    for position, source in enumerate(asked):
        left = deadline_at - time.monotonic()
        if left <= 0:
            failure = SourceError(source.url, f"deadline of {policy.deadline:g} s reached")
            found.append(failure)
            break
        try:
            return ask(source, policy, timeout=left / (len(asked) - position))
        except SourceError as exc:
            found.append(exc)
            failure = exc
            if exc.permanent or not source.traits.needs_network:
                sources.remove(source)
            if position + 1 < len(asked):
                logger.debug("%s; asking %s next", exc, asked[position + 1].url)
    if failure is None:
        raise SourceError("[]", "no source left to ask")
    raise failure
