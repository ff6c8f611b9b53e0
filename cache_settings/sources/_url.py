"""Query-string reading shared by the sources: unknown or repeated keys are errors."""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import SplitResult, parse_qsl, unquote

from ..exceptions import ConfigurationError, brief, close_matches, excerpt
from ..redact import redact_url
from ..tls import TLSConfig

__all__ = ["NODE_TLS_OPTIONS", "Query", "decoded", "node_tls_params", "redact"]

#: The options that declare TLS to the nodes of a discovery source (consul, dns*, file).
NODE_TLS_OPTIONS = ("node_ca", "node_cert", "node_key", "node_tls")
_TRUE = {"1", "true", "yes", "on"}
_SEMICOLON_OPTION = re.compile(r";\s*([\w-]+)=")
_FALSE = {"0", "false", "no", "off"}
# urllib decodes percent-escapes that are not UTF-8 as U+FFFD by default: file:///srv/n%E9
# read /srv/n\ufffd and consul:///%FF asked for service "\ufffd", each failing only when
# asked. Decoded strictly here, and refused when set.
_NOT_UTF8 = (
    "holds percent-encoded bytes that are not UTF-8 ({reason}); percent-encode the text's "
    "UTF-8 bytes (é is %C3%A9)"
)


def decoded(text: str, where: str, what: str) -> str:
    """Return *text* (*what* of the URL *where*) percent-decoded as UTF-8.

    Raises ConfigurationError, naming *where*, when the decoded bytes are not UTF-8.
    """
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{where}: {what} {_NOT_UTF8.format(reason=exc.reason)}") from None


def _check_blank(where: str, key: str, value: str) -> None:
    """Refuse an empty *value* of option *key*, or one with white space at either end.

    ``?dc=`` read as "no datacenter" and ``?tag=`` as a tag no instance carries; ``?dc=+eu1``
    (a space, as '+' or %20) named a datacenter Consul does not know. The value is never
    quoted: the option may be a secret.
    """
    if not value:
        raise ConfigurationError(
            f"{where}: option {key}= is empty; give it a value or leave the option out"
        )
    if value != value.strip():
        raise ConfigurationError(
            f"{where}: option {key} has white space at either end (a '+' or %20 in the URL); "
            "remove it"
        )


class Query:
    """The query string of a source URL, checked against the keys a scheme accepts."""

    def __init__(
        self, url: SplitResult, allowed: Collection[str], *, repeatable: Collection[str] = ()
    ):
        # The values of unknown options are masked: a misspelt "token" is still a secret.
        # Bounded and printable: a URL is a setting, but messages go to logs whatever it holds.
        self.where = excerpt(redact_url(url, allowed=allowed), 200)
        self._values: dict[str, list[str]] = {}
        try:
            pairs = parse_qsl(
                url.query,
                keep_blank_values=True,
                strict_parsing=bool(url.query),
                errors="strict",
            )
        except UnicodeDecodeError as exc:  # never quoted: the option may hold a secret
            raise ConfigurationError(
                f"{self.where}: the query string {_NOT_UTF8.format(reason=exc.reason)}"
            ) from None
        except ValueError:  # its message quotes the field, which may be a secret
            raise ConfigurationError(
                f"{self.where}: malformed query string; write key=value options joined by '&'"
            ) from None
        for key, value in pairs:
            if key not in allowed:
                close = close_matches(key.lower(), allowed, n=1)
                guess = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigurationError(
                    f"{self.where}: unknown option {brief(key)}; {guess}"
                    f"{url.scheme}:// accepts {', '.join(sorted(allowed)) or 'no options'}"
                )
            if key in self._values and key not in repeatable:
                raise ConfigurationError(f"{self.where}: option {brief(key)} given more than once")
            after = _SEMICOLON_OPTION.search(value)
            if after is not None and after[1] in allowed:
                # "tag=a;token=T": an older separator, which urllib no longer splits on. The
                # option after it (a token, too) would be read as part of this value.
                raise ConfigurationError(
                    f"{self.where}: option {key} holds ';' before another option; "
                    "join options with '&'"
                )
            if not value.isprintable():  # never quoted: the option may hold a secret
                raise ConfigurationError(
                    f"{self.where}: option {key} holds a character that is not printable (a "
                    "control character such as %0A or %00 once percent-decoded); remove it"
                )
            _check_blank(self.where, key, value)
            self._values.setdefault(key, []).append(value)

    def all(self, key: str) -> tuple[str, ...]:
        """Return every value of *key*, in URL order."""
        return tuple(self._values.get(key, ()))

    def get(self, key: str) -> str | None:
        """Return the value of *key*, or None when absent."""
        values = self._values.get(key)
        return values[0] if values else None

    def flag(self, key: str, default: bool | None = None) -> bool | None:
        """Return *key* as a boolean (true/false, 1/0, yes/no, on/off)."""
        value = self.get(key)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigurationError(f"{self.where}: option {key}={brief(value)} must be true or false")

    def number(self, key: str, default: float | None = None) -> float | None:
        """Return *key* as a float, or *default* when absent."""
        value = self.get(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise ConfigurationError(
                f"{self.where}: option {key}={brief(value)} must be a number"
            ) from None

    def tls(self, prefix: str = "") -> TLSConfig | None:
        """Return the TLS settings of ``tls=true&ca=…&cert=…&key=…``, or None without TLS.

        With *prefix* ``"node_"`` the options are ``node_tls``, ``node_ca``, ``node_cert``
        and ``node_key``: TLS to the memcached nodes of a source whose own ``tls=`` means
        something else (the Consul agent), or that has none (DNS, a file).
        """
        ca, cert, key = (self.get(f"{prefix}{name}") for name in ("ca", "cert", "key"))
        p = prefix
        if not self.flag(f"{p}tls", default=bool(ca or cert)):
            if ca or cert or key:
                raise ConfigurationError(
                    f"{self.where}: {p}ca=, {p}cert= and {p}key= need {p}tls=true"
                )
            return None
        if key and not cert:
            raise ConfigurationError(
                f"{self.where}: {p}key= needs {p}cert= (the client certificate)"
            )
        return TLSConfig(ca=ca, cert=cert, key=key)

    def choice(self, key: str, choices: Collection[str], default: str) -> str:
        """Return *key*, which must be one of *choices*."""
        value = self.get(key)
        if value is None:
            return default
        if value not in choices:
            raise ConfigurationError(
                f"{self.where}: option {key}={brief(value)} must be one of "
                f"{', '.join(sorted(choices))}"
            )
        return value


def redact(url: SplitResult) -> str:
    """Return *url* without secrets, as :func:`cache_settings.redact.redact_url` does.

    Kept for the sources of this package; everything else imports ``cache_settings.redact``.
    """
    return redact_url(url)


def node_tls_params(tls: TLSConfig | None) -> list[tuple[str, str]]:
    """Return the ``node_tls=true&node_ca=…`` query pairs of *tls* (none without TLS)."""
    if tls is None:
        return []
    given = (("node_ca", tls.ca), ("node_cert", tls.cert), ("node_key", tls.key))
    return [("node_tls", "true"), *((name, value) for name, value in given if value)]
