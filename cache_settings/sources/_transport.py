"""Network I/O that ends with its attempt: tracked connections and one bounded HTTP request.

Every socket a source opens is registered with the current :class:`~cache_settings.attempt.Attempt`
(:meth:`~cache_settings.attempt.Attempt.track`), so that cancelling the attempt at its deadline
shuts it down and wakes whatever read is blocked on it; each read's timeout is the time the
attempt has left, and what is read counts against its ``max_reply_size``. A source called
directly, outside :func:`cache_settings.attempt.run`, gets an attempt of its own (:func:`within`).

HTTP goes through :mod:`http.client` rather than a client library's transport: it lets us own
the socket from its creation (the libraries' urllib3 pools do not) and read the body in pieces.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from .. import attempt as _attempt
from ..attempt import Attempt
from ..exceptions import SourceError

__all__ = ["Reply", "connect", "failure", "request", "start_tls", "within"]

T = TypeVar("T")

_CHUNK = 65536
# getaddrinfo errors that say the name does not exist (NXDOMAIN, no address): no retry helps.
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def within(source: str, timeout: float, call: Callable[[Attempt], T]) -> T:
    """Return ``call(attempt)`` under the current attempt, else under a new one of *timeout* s.

    A direct call (no current attempt) is run by :func:`cache_settings.attempt.run`, so
    that it, too, is cancelled at its deadline. Raise SourceError when *timeout* is not
    positive.
    """
    current = _attempt.current()
    if current is not None:
        return call(current)
    if not timeout > 0:
        raise SourceError(source, "no time left for an attempt")
    own = Attempt(source, timeout)
    return _attempt.run(own, lambda: call(own))


def connect(attempt: Attempt, host: str, port: int) -> socket.socket:
    """Return a TCP connection to *host*:*port*, tracked by *attempt*; OSError if none.

    The connect waits at most the time left; so does each later read (the caller sets
    ``settimeout(attempt.check())`` before it).
    """
    sock = socket.create_connection((host, port), timeout=attempt.check())
    attempt.track(sock)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def start_tls(
    attempt: Attempt, sock: socket.socket, context: ssl.SSLContext, hostname: str
) -> ssl.SSLSocket:
    """Return *sock* wrapped in TLS (SNI and verification against *hostname*), still tracked."""
    # The handshake is done after tracking: wrap_socket takes the descriptor over from *sock*.
    tls = context.wrap_socket(sock, server_hostname=hostname, do_handshake_on_connect=False)
    attempt.untrack(sock)
    attempt.track(tls)
    try:
        tls.settimeout(attempt.check())
        tls.do_handshake()
    except BaseException:
        close(attempt, tls)
        raise
    return tls


def close(attempt: Attempt, sock: socket.socket | None) -> None:
    """Close *sock* (if any) and stop tracking it."""
    if sock is not None:
        attempt.untrack(sock)
        sock.close()


def failure(exc: BaseException, attempt: Attempt, peer: str, *, hint: str = "") -> SourceError:
    """Return the SourceError that says what *exc*, raised talking to *peer*, means.

    A name that does not exist is ``permanent``; *hint* (what to check) follows every
    failure to reach *peer*.
    """
    suffix = f" ({hint})" if hint else ""
    # Every timeout is the time the attempt had left, so a timeout is its deadline.
    if attempt.cancelled or isinstance(exc, TimeoutError):
        return SourceError(
            attempt.source, f"no complete answer within {attempt.timeout:.2f} s from {peer}"
        )
    if isinstance(exc, socket.gaierror):
        return SourceError(
            attempt.source,
            f"cannot reach {peer}: unknown host name ({exc.strerror or exc}){suffix}",
            permanent=exc.errno in _NO_SUCH_NAME,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SourceError(
            attempt.source,
            f"TLS with {peer} failed: certificate verify failed: {exc.verify_message}",
        )
    if isinstance(exc, ssl.SSLError):
        return SourceError(attempt.source, f"TLS with {peer} failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return SourceError(attempt.source, f"the connection to {peer} was reset")
    if isinstance(exc, http.client.HTTPException):
        return SourceError(attempt.source, f"malformed HTTP reply from {peer} ({exc!r:.120})")
    if isinstance(exc, OSError):
        return SourceError(attempt.source, f"cannot reach {peer}: {exc.strerror or exc}{suffix}")
    return SourceError(attempt.source, f"{type(exc).__name__} talking to {peer}")


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply: status, headers (case-insensitive) and the whole body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(
    attempt: Attempt,
    method: str,
    url: str,
    *,
    peer: str,
    headers: Mapping[str, str | bytes] | None = None,
    body: bytes | str | None = None,
    context: ssl.SSLContext | None = None,
    hint: str = "",
) -> Reply:
    """Send one HTTP/1.1 request and return the whole reply, within *attempt*.

    *url* must carry no user info. *context* verifies an ``https`` peer. Proxies come
    from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), as with
    requests and botocore; loopback addresses never use one, as with the consul CLI.
    Raise SourceError naming *peer* for every failure; a reply over the attempt's
    ``max_reply_size`` is one.
    """
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = _proxy_for(parts.scheme, host)
    if proxy is not None and not https:
        target = url  # an http proxy takes the absolute URL
    conn = _Connection(attempt, host, port, proxy, context if https else None)
    response: http.client.HTTPResponse | None = None
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", parts.netloc.rpartition("@")[2])
        conn.putheader("Accept-Encoding", "identity")  # no decompression bomb
        if proxy is not None and not https and proxy.auth:
            conn.putheader("Proxy-Authorization", proxy.auth)
        for name, value in (headers or {}).items():
            if name.lower() not in ("host", "accept-encoding"):
                conn.putheader(name, value)
        data = body.encode("utf-8") if isinstance(body, str) else body
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        assert conn.sock is not None
        sock = conn.sock
        sock.settimeout(attempt.check())
        response = conn.getresponse()
        if response.length is not None:
            attempt.check_size(response.length)
        received = bytearray()
        while chunk := response.read1(_CHUNK):
            received += chunk
            attempt.check_size(len(received))
            if response.isclosed():  # Python 3.13 closes the socket with the body's last byte
                break
            sock.settimeout(attempt.check())
        attempt.check()  # a cancelled read looks like the end of the body
        if response.length:  # http.client returns b"" when a reply stops short
            raise http.client.IncompleteRead(bytes(received), response.length)
        return Reply(response.status, response.msg, bytes(received))
    except SourceError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: bad headers
        raise failure(exc, attempt, peer, hint=hint) from None
    finally:
        if response is not None:
            response.close()
        close(attempt, conn.sock)
        conn.sock = None


@dataclass(frozen=True, slots=True)
class _Proxy:
    host: str
    port: int
    auth: str | None  # a Proxy-Authorization value


class _Connection(http.client.HTTPConnection):
    """An HTTP connection whose socket the attempt tracks from the start; TLS and tunnels too."""

    def __init__(
        self,
        attempt: Attempt,
        host: str,
        port: int,
        proxy: _Proxy | None,
        context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port)
        self._attempt, self._proxy, self._context = attempt, proxy, context
        self._target = (host, port)

    def connect(self) -> None:
        host, port = self._target
        if self._proxy is None:
            self.sock = connect(self._attempt, host, port)
        else:
            self.sock = connect(self._attempt, self._proxy.host, self._proxy.port)
            if self._context is not None:
                _tunnel(self._attempt, self.sock, host, port, self._proxy.auth)
        if self._context is not None:
            self.sock = start_tls(self._attempt, self.sock, self._context, host)


def _tunnel(attempt: Attempt, sock: socket.socket, host: str, port: int, auth: str | None) -> None:
    """Ask an http proxy for a tunnel to *host*:*port* (RFC 9110, 9.3.6 CONNECT)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {where} HTTP/1.1", f"Host: {where}"]
    lines += [f"Proxy-Authorization: {auth}"] if auth else []
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        sock.settimeout(attempt.check())
        chunk = sock.recv(4096)
        if not chunk or len(head) > _CHUNK:
            raise http.client.HTTPException("the proxy ended the CONNECT reply early")
        head += chunk
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or status[1] != b"200":
        raise OSError(f"the proxy refused the tunnel ({b' '.join(status[1:]).decode('latin-1')})")


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    try:
        if ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        if host.lower() == "localhost":
            return None
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + b64encode(credentials.encode()).decode()
    return _Proxy(parts.hostname or "", parts.port or 8080, auth)
