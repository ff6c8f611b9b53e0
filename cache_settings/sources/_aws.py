"""Talking to the AWS API for ``elasticache-api://``: boto3 sessions and a bounded transport.

boto3 signs and serializes each request and parses its reply; the request itself is sent
by :mod:`._transport`, on sockets the attempt tracks, under its deadline and size cap.

Credentials in botocore's DEBUG logs. Two of botocore's loggers print a signed request:
``botocore.auth`` its canonical request (with ``x-amz-security-token:``) and signature,
``botocore.endpoint`` its headers (``Authorization``, ``X-Amz-Security-Token``); others
print the endpoint URL with its query (``botocore.regions``), which may hold a gateway's
token. A logger's filter sees only that logger's own records, so every ``botocore`` logger
gets one filter, when a session is checked out and again once its client exists (botocore
makes loggers as it imports its modules). While a session is checked out (that is, during
this package's calls, in the thread making them) the filter rewrites the records of those
loggers: the security token, the ``Authorization`` header, the
signature and the access key id become ``***``, as do ``token=`` values, URL user info and
any credential of the AWS environment (:func:`cache_settings.redact.environment_secrets`);
the rest of each line is
kept, so the DEBUG log still shows what was sent. Records of other boto3 users are left as
they are, and the site's logging configuration (levels, handlers) is never changed. A
filter rather than a level: raising those loggers' level would hide them from everyone.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from ..attempt import Attempt
from ..redact import MASK, Scrubber, environment_secrets
from ..tls import TLSConfig
from . import _budget, _http

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest, AWSResponse
    from mypy_boto3_elasticache import ElastiCacheClient

__all__ = ["SIGNING_LOGGERS", "Session", "checked_out", "client", "mask_signed"]

# A boto3 Session loads the shared config files and the service model, and finds credentials
# (possibly from the instance metadata service), once: a client from a used session costs
# ~3 ms instead of ~50-150 ms. Sessions are not thread-safe, so each attempt takes one out
# of this pool and puts it back if it succeeded (see checked_out): no lock is held while a
# session finds credentials, and a lookup that hangs keeps only its own session. The key
# includes a digest of the AWS_* environment, so a changed environment gets new sessions.
# list.pop/append and dict.setdefault are atomic, so the pool needs no lock either.
_idle: dict[tuple[str | None, str], list[Session]] = {}
_IDLE_PER_KEY = 4
_MAX_KEYS = 16

#: The botocore loggers that print signed requests (botocore/auth.py, botocore/endpoint.py).
SIGNING_LOGGERS = ("botocore.auth", "botocore.endpoint")
# How many loggers logging knew when every botocore logger last had its filter.
_filtered_at = 0
# What they print of a signed request, in its two forms: "x-amz-security-token:VALUE" in a
# canonical request, "'X-Amz-Security-Token': b'VALUE'" in a headers dict; "Signature:\nHEX".
_SIGNED = re.compile(
    r"(?P<key>(?:x-amz-security-token|x-amz-signature|x-amz-credential|authorization)"
    r"(?:'?\s*[:=]\s*b?'?))(?P<value>[^'\s,&][^'\n&]*?)(?=['\n&]|$)"
    r"|(?P<key2>signature:\s*|signature=|credential=)(?P<value2>[^\s,'/]+)",
    re.IGNORECASE,
)
_masking: contextvars.ContextVar[Scrubber | None] = contextvars.ContextVar(
    "cache_settings_aws_masking", default=None
)
_install_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A thread that held the lock at the fork does not exist in the child: a fresh lock.
    global _install_lock
    _install_lock = threading.Lock()
    # A session's credential provider keeps its connections open (botocore's urllib3 pool
    # to the container or instance metadata service, or STS): a child that took a parent's
    # session would send on the parent's socket, and their requests and replies would
    # interleave on it. The child makes its own sessions; the parent's are only dropped
    # (closing the child's copies of their sockets sends nothing).
    _idle.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Session:
    """A boto3 session and the TLS context its settings ask for (``ca_bundle``)."""

    def __init__(self, profile: str | None) -> None:
        import boto3.session
        import botocore.session

        self.core = botocore.session.Session()
        self.boto3 = boto3.session.Session(botocore_session=self.core, profile_name=profile)
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """Return a verifying context: ``AWS_CA_BUNDLE``/``ca_bundle``, else botocore's CAs."""
        if self._context is None:
            from botocore.httpsession import get_cert_path

            bundle = self.core.get_config_variable("ca_bundle") or get_cert_path(True)
            self._context = TLSConfig(ca=bundle).context()
        return self._context


@contextmanager
def checked_out(profile: str | None) -> Iterator[Session]:
    """Lend a session to one attempt (see ``_idle``), made afresh when none is idle."""
    environ = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
    key = (profile, hashlib.sha256(repr(environ).encode()).hexdigest())
    try:
        session = _idle[key].pop()
    except (KeyError, IndexError):
        session = Session(profile)
    _install_filter()
    masking = _masking.set(Scrubber(environment_secrets()))
    try:
        yield session
    finally:
        _masking.reset(masking)
    # Only a session whose attempt ended normally is lent again. One that failed may hold
    # credentials that expired or were refused (a session reads the credentials file once,
    # and static keys are never refreshed): the next attempt makes a new session, which
    # reads the chain afresh, so rotated keys are used without a restart.
    if len(_idle) > _MAX_KEYS:
        _idle.clear()
    idle = _idle.setdefault(key, [])
    if len(idle) < _IDLE_PER_KEY:
        idle.append(session)


def client(
    session: Session, attempt: Attempt, region: str | None, endpoint_url: str | None
) -> ElastiCacheClient:
    """Return an ElastiCache client whose every request is sent within *attempt*."""
    from botocore.config import Config

    config = Config(
        # Our resolver retries with back-off under a deadline, so botocore must not retry
        # too; total_max_attempts counts the first call.
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra="django-cache-settings",
    )
    # None for region_name / endpoint_url leaves boto3's own chain in charge (AWS_REGION,
    # AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_ELASTICACHE, profiles). The endpoint's user info
    # never reaches botocore, which would log it; AWS requests carry their SigV4 signature
    # where basic authentication would go, so it was never sent anyway.
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        endpoint_url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    made = session.boto3.client(
        "elasticache", region_name=region, endpoint_url=endpoint_url, config=config
    )
    # botocore's documented "before-send" event ("Botocore Events"): a handler that returns
    # an AWSResponse fulfils the request, which botocore has signed and serialized, and
    # botocore parses that reply as usual. It is the one public hook that lets the request
    # run on sockets the attempt tracks; the alternative replaces the urllib3 pool classes
    # inside the client's private endpoint object. The stubs type handlers as returning None.
    handler = cast("Callable[..., None]", _Sender(attempt, session))
    made.meta.events.register("before-send.elasticache", handler)
    # Signing comes after "before-sign" and may refresh expiring credentials (botocore's
    # RequestSigner.sign): a timeout there names that, not the API endpoint.
    made.meta.events.register("before-sign.elasticache", _Signing(attempt))
    _install_filter()  # the loggers of the modules botocore imported to make the client
    return made


class _Signing:
    """A ``before-sign`` handler: the attempt now waits on signing (and credential refresh)."""

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt

    def __call__(self, **kwargs: object) -> None:
        self._attempt.waiting_on = "boto3 signing the request (refreshing its credentials)"


class _Sender:
    """A ``before-send`` handler: sends botocore's signed request within one attempt."""

    def __init__(self, attempt: Attempt, session: Session) -> None:
        self._attempt, self._session = attempt, session

    def __call__(self, request: AWSPreparedRequest, **kwargs: object) -> AWSResponse:
        from botocore.awsrequest import AWSResponse
        from botocore.compat import HTTPHeaders

        parts = urlsplit(request.url)
        peer = f"the ElastiCache API endpoint {parts.scheme}://{parts.netloc}"
        self._attempt.waiting_on = peer
        body = request.body
        if body is not None and not isinstance(body, bytes | bytearray | str):
            body = body.read()
        reply = _http.request(
            self._attempt,
            request.method,
            request.url,
            peer=peer,
            headers=dict(request.headers.items()),
            body=bytes(body) if isinstance(body, bytearray) else body,
            context=self._session.context() if parts.scheme == "https" else None,
            hint="check endpoint_url, AWS_ENDPOINT_URL_ELASTICACHE and the region",
        )
        # botocore parses the reply next, in C and then in Python, with no deadline of its own.
        _budget.afford(
            self._attempt,
            _budget.xml_seconds(reply.body),
            f"an ElastiCache API reply of {len(reply.body)} bytes",
        )
        headers = HTTPHeaders()
        for name, value in reply.headers.items():
            headers[name] = value
        return AWSResponse(request.url, reply.status, headers, _Body(reply.body))


class _Body:
    """The ``raw`` of an AWSResponse whose body is already read."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **kwargs: object) -> Iterator[bytes]:
        yield self._data


class _MaskSigned(logging.Filter):
    """Masks credentials in the records of :data:`SIGNING_LOGGERS` made during our calls."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrubber = _masking.get()
        if scrubber is None:
            return True  # not one of ours
        try:
            text = record.getMessage()
        except Exception:  # botocore's own formatting bug: show nothing of its arguments
            text = str(record.msg)
        record.msg = scrubber.scrub(mask_signed(text))
        record.args = ()
        return True


def mask_signed(text: str) -> str:
    """Return *text* with the credentials and signature of a signed AWS request masked."""
    return _SIGNED.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    return f"{match.group('key') or match.group('key2')}{MASK}"


def _install_filter() -> None:
    """Add :class:`_MaskSigned` to every ``botocore`` logger that has none yet."""
    global _filtered_at
    known = logging.Logger.manager.loggerDict
    if len(known) == _filtered_at:
        return  # no logger was made since the last pass
    with _install_lock:
        for name in (*SIGNING_LOGGERS, *list(known)):
            if name == "botocore" or name.startswith("botocore."):
                target = logging.getLogger(name)
                if not any(isinstance(f, _MaskSigned) for f in target.filters):
                    target.addFilter(_MaskSigned())
        _filtered_at = len(known)
