"""``--probe``: ask memcached nodes for their ``version``, all at once, within one deadline.

A source's answer says where the nodes should be, not that they answer: a static list is
never contacted at all. :func:`probe` sends each node the text protocol's ``version``
command (memcached ``doc/protocol.txt``: ``version\\r\\n`` -> ``VERSION <version>\\r\\n``),
over TLS where the node speaks it. Each node is asked in its own thread; one shared
:class:`~cache_settings.attempt.Attempt` bounds them all, so a probe of any number of nodes
returns within its *timeout* (plus :data:`~cache_settings.attempt.GRACE`), black-holed
nodes included.

The standard library is used rather than a memcached client: the command line must probe
with whichever client extra is installed, or none (a static list needs no client to resolve),
and ``version`` is one line each way.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from .attempt import GRACE, Attempt
from .exceptions import SourceError
from .nodes import Node
from .tls import TLSConfig

__all__ = ["Probe", "probe", "unanswered"]

# The longest line a node may answer: "VERSION 1.6.21\r\n" is 16 bytes.
_MAX_REPLY = 256


@dataclass(frozen=True, slots=True)
class Probe:
    """What one node said: its ``version``, or why it gave none (``error``)."""

    node: Node
    version: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Return True when the node answered ``version``."""
        return self.error is None

    def as_dict(self) -> dict[str, object]:
        """Return the result as plain JSON-ready data."""
        return {"node": self.node.location, "version": self.version, "error": self.error}


def probe(
    nodes: Iterable[tuple[Node, TLSConfig | None]], *, timeout: float
) -> dict[tuple[Node, TLSConfig | None], Probe]:
    """Ask every node for its ``version`` in parallel; return within *timeout* seconds.

    *nodes* pairs each node with how to verify it when it speaks TLS (``Node.tls``);
    None means the default trust store. Each distinct pair is asked once; the result
    maps it to what the node said.

    Raises:
        ConfigurationError: a TLS setting (``ca=``, ``cert=``) cannot be loaded.
    """
    pairs = list(dict.fromkeys(nodes))
    # Built before any thread starts: a bad ca= is a ConfigurationError, not a node's failure.
    contexts = {tls: (tls or TLSConfig()).context() for node, tls in pairs if node.tls}
    attempt = Attempt("probe", timeout)
    results: dict[tuple[Node, TLSConfig | None], Probe] = {}
    lock = threading.Lock()

    def ask(pair: tuple[Node, TLSConfig | None]) -> None:
        node, tls = pair
        try:
            found = Probe(node, version=_version(node, contexts.get(tls), attempt))
        except (OSError, SourceError, ValueError) as exc:
            found = Probe(node, error=_reason(exc, attempt))
        with lock:
            results[pair] = found

    threads = [
        threading.Thread(
            target=ask, args=(pair,), name=f"cache_settings probe {pair[0].location}", daemon=True
        )
        for pair in pairs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(attempt.left() + GRACE)
    if any(thread.is_alive() for thread in threads):
        # Every socket can be shut down, which ends its thread; a name lookup cannot.
        attempt.cancel()
        for thread in threads:
            thread.join(GRACE)
    with lock:
        return {
            pair: results.get(pair) or Probe(pair[0], error=_no_answer(timeout)) for pair in pairs
        }


def _no_answer(timeout: float) -> str:
    return f"no answer within {timeout:g} s"


def unanswered(probes: Iterable[Probe]) -> list[str]:
    """Return ``"host:port (reason)"`` for each node that did not answer."""
    return [f"{p.node.location} ({p.error})" for p in probes if not p.ok]


def _version(node: Node, context: ssl.SSLContext | None, attempt: Attempt) -> str:
    # A TLS node is addressed by the name its certificate carries, as Node.location does.
    host = node.host if node.tls or not node.ip else node.ip
    sock = socket.create_connection((host, node.port), timeout=attempt.check())
    attempt.track(sock)
    try:
        if context is not None:
            sock.settimeout(attempt.check())
            plain, sock = sock, context.wrap_socket(sock, server_hostname=node.host)
            attempt.untrack(plain)
            attempt.track(sock)
        sock.settimeout(attempt.check())
        sock.sendall(b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            sock.settimeout(attempt.check())
            chunk = sock.recv(_MAX_REPLY)
            if not chunk:
                raise ValueError("closed the connection without answering")
            reply += chunk
            if len(reply) > _MAX_REPLY:
                raise ValueError("answered more than one line: not a memcached node?")
    finally:
        attempt.untrack(sock)
        sock.close()
    line = reply.decode("ascii", "replace").strip().partition("\r\n")[0]
    if not line.startswith("VERSION "):
        raise ValueError(f"answered {line[:40]!r}, not VERSION: not a memcached node?")
    return line.removeprefix("VERSION ").strip()


def _reason(exc: BaseException, attempt: Attempt) -> str:
    if attempt.cancelled or isinstance(exc, (TimeoutError, SourceError)):
        return _no_answer(attempt.timeout)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror}"
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc) or type(exc).__name__).lower()
    return str(exc)
