"""Secrets kept out of every message, log line, snapshot key and CLI output.

One home for redaction: :func:`redact_url` gives the URL a source shows (no user info, no
``token=``/``password=``/``secret=`` option, no user info in a URL given as an option value
such as ``endpoint_url=``), :func:`url_secrets` the secret values a URL carries, and
:class:`Scrubber` masks known secrets in free text in every form a client library may
print them: as written, escaped as ``repr()`` or JSON escape them, and percent-encoded.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Collection, Iterable
from urllib.parse import SplitResult, parse_qsl, quote, quote_plus, unquote, urlsplit

__all__ = [
    "MASK",
    "PROXY_VARIABLES",
    "SECRET_KEYS",
    "SECRET_VARIABLES",
    "Scrubber",
    "basic_credentials",
    "environment_secrets",
    "proxy_url",
    "redact_address",
    "redact_url",
    "scrub",
    "url_secrets",
]

#: Query options whose values are secrets: dropped from redacted URLs, masked in text.
SECRET_KEYS = frozenset({"token", "password", "secret"})
#: Environment variables whose values must never be printed, even inside a client's error.
SECRET_VARIABLES = (
    "CONSUL_HTTP_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
#: Proxy variables (read by urllib, requests, botocore and sources/_http.py): the user info
#: of their URL is a secret, and so is the Basic ``Proxy-Authorization`` made from it.
PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)
MASK = "***"
# Values this short are left alone: masking "a" would garble every line.
_SHORTEST = 4

# "scheme://user:password@" anywhere in a text; the user info is what goes.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#@\s'\"]*@")
# "token=VALUE" (also after "?" or "&", percent-encoded or not) anywhere in a text. The
# value runs to a delimiter (space, quote, "&", "#"), less trailing punctuation: Consul ACL
# tokens are UUIDs (hex and "-"), AWS keys and session tokens base64 ("A-Za-z0-9/+="), so
# neither begins or ends with ")", ";", ",", "." and the like. Those end a sentence instead,
# as in the library's own advice "(CONSUL_HTTP_TOKEN or token=)", which stays readable;
# inside a value (a password "ab;cd") they are masked with it.
_VALUE_EDGE = r"[^\s&#'\"()\[\]{}<>;,.:!?]"
_SECRET_OPTION = re.compile(
    r"(?P<key>\b(?:"
    + "|".join(sorted(SECRET_KEYS))
    + r")(?:=|%3D))"
    + _VALUE_EDGE
    + r"(?:[^\s&#'\"]*"
    + _VALUE_EDGE
    + r")?",
    re.IGNORECASE,
)


def redact_url(url: str | SplitResult, *, allowed: Collection[str] | None = None) -> str:
    """Return *url* without user info, secret options, or user info inside option values.

    With *allowed* (the options a scheme accepts), the value of any other option is masked
    too, and a query field without ``=`` is masked whole: a misspelt secret option
    (``tokn=…``) is still a secret. The ``//`` after the scheme is kept even without a host
    (``consul:///memcached``), so the URL reads back as it was written.
    """
    parts = urlsplit(url) if isinstance(url, str) else url
    netloc = parts.netloc.rpartition("@")[2]
    fields = []
    for part in parts.query.split("&"):
        key, sep, _ = part.partition("=")
        name = unquote(key).lower()
        if not part or name in SECRET_KEYS:
            continue
        if allowed is not None and (not sep or unquote(key) not in allowed):
            fields.append(f"{key}={MASK}" if sep else MASK)
        else:
            fields.append(_without_userinfo(part))
    query = "&".join(fields)
    text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    return f"{text}?{query}" if query else text


def redact_address(text: str) -> str:
    """Return an address (``[scheme://][user@]host[:port][/path]``) without its user info.

    For addresses given outside a URL, such as ``CONSUL_HTTP_ADDR``: with or without a
    scheme, whatever precedes ``@`` in the authority is removed, and secret options too.
    """
    try:
        return redact_url(text if "://" in text else f"//{text}")
    except ValueError:  # not even URL-shaped (an unclosed "["): keep what follows any "@"
        return text.rpartition("@")[2]


def url_secrets(url: str | None) -> list[str]:
    """Return the secrets *url* carries: its user info and the values of secret options."""
    if not url:
        return []
    try:
        parts = urlsplit(url.strip())
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return []
    found: list[str] = []
    userinfo = unquote(parts.netloc.rpartition("@")[0])
    if userinfo:
        found += [userinfo, *userinfo.split(":")]
    for key, value in pairs:
        if key.lower() in SECRET_KEYS:
            found.append(value)
        elif "://" in value:
            found += url_secrets(value)  # endpoint_url=https://key:secret@host
    return [secret for secret in found if secret]


def environment_secrets() -> list[str]:
    """Return the secrets the environment holds for this process's requests.

    The values of :data:`SECRET_VARIABLES` that are set, and the password of each proxy URL
    of :data:`PROXY_VARIABLES` with the base64 ``user:password`` of the Basic
    ``Proxy-Authorization`` header built from it (RFC 7617).
    """
    found = [os.environ[name] for name in SECRET_VARIABLES if os.environ.get(name)]
    for name in PROXY_VARIABLES:
        value = os.environ.get(name) or ""
        if "@" in value:
            found += _proxy_secrets(value)
    return found


def proxy_url(proxy: str) -> SplitResult:
    """Return a proxy variable's value as a URL (``host:port`` alone means ``http://``).

    Raises:
        ValueError: it is not a URL (a malformed IPv6 literal, as :func:`urlsplit` says).
    """
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def basic_credentials(proxy: SplitResult) -> str | None:
    """Return the Basic ``Proxy-Authorization`` credentials of *proxy*'s user info (RFC 7617).

    ``base64("user:password")``, as the header carries it after ``Basic``; None without user
    info. It is a secret: :func:`environment_secrets` masks it.
    """
    if proxy.username is None:
        return None
    credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
    # The environment's bytes as they were: os.environ holds bytes that are not UTF-8 as
    # lone surrogates, which a strict encode refuses with a UnicodeEncodeError.
    return base64.b64encode(credentials.encode(errors="surrogateescape")).decode()


def _proxy_secrets(proxy: str) -> list[str]:
    try:
        parts = proxy_url(proxy)
    except ValueError:
        return []
    basic = basic_credentials(parts)
    if basic is None:
        return []
    password = unquote(parts.password or "")
    credentials = f"{unquote(parts.username or '')}:{password}"
    return [secret for secret in (password, credentials, basic) if secret]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Return *text* without URL user info, secret options, or any of *secrets*."""
    return Scrubber(secrets).scrub(text)


class Scrubber:
    """Masks known secrets, URL user info and secret options in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask *secrets* too from now on, in each form they may be printed in."""
        forms = set(self._forms)
        for secret in secrets:
            if len(secret) >= _SHORTEST:
                forms.update(form for form in _forms(secret) if len(form) >= _SHORTEST)
        # Longest first, so that a secret containing another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """Return *text* with every known secret replaced by ``***``."""
        for form in self._forms:
            text = text.replace(form, MASK)
        text = _USERINFO.sub(lambda m: f"{m.group('scheme') or ''}//", text)
        return _SECRET_OPTION.sub(lambda m: f"{m.group('key')}{MASK}", text)


def _forms(secret: str) -> set[str]:
    # As written; escaped as repr() and JSON show it (a newline as \n); percent-encoded as
    # a URL or a form carries it, byte for byte also when the environment's bytes were not
    # UTF-8 (lone surrogates in os.environ). (json only now: most settings hold no secret.)
    import json

    return {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret)[1:-1])[1:-1],  # JSON quoted inside JSON
        quote(secret, safe="", errors="surrogateescape"),
        quote(secret, errors="surrogateescape"),
        quote_plus(secret, safe="", errors="surrogateescape"),
    }


def _without_userinfo(part: str) -> str:
    # A URL given as an option value (endpoint_url=) loses its user info and the values of
    # its own secret options (https://h/?token=T), as url_secrets() finds them.
    key, sep, value = part.partition("=")
    text = unquote(value)
    cleaned = _USERINFO.sub(lambda m: f"{m.group('scheme') or ''}//", text)
    cleaned = _SECRET_OPTION.sub(lambda m: f"{m.group('key')}{MASK}", cleaned)
    return part if cleaned == text else f"{key}{sep}{quote(cleaned, safe=':/*')}"
