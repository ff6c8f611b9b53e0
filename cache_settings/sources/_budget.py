"""CPU work on a reply that ends with its attempt: estimated before a C parser runs, paced in ours.

The transport ends an attempt's I/O at its deadline (:mod:`._transport`), but decoding a reply
is CPU work that no socket shutdown interrupts, and a C parser holds the GIL for its whole
call: while ``json.loads`` turns a fast 30 MB body into objects, even the thread waiting for
the attempt (:func:`cache_settings.attempt.run`) cannot return its timeout. So:

- Before a reply goes to a C parser (the JSON decoder the consul client calls, the XML parser
  botocore calls), :func:`afford` compares an estimate of the work, from counts taken at C
  speed, with the time the attempt has left, and refuses the reply (SourceError) when it
  does not fit. The estimates are upper bounds measured on the slowest shapes of input found
  (see the constants); a Consul-shaped reply costs about a third of its estimate.
- JSON nested deeper than :data:`MAX_JSON_DEPTH` levels is refused before decoding
  (:func:`check_json_nesting`): the C decoder recurses once per level, and the RecursionError
  that should stop it is not enough alone. Measured with a 100,000-deep array decoded in a
  thread: CPython 3.10.13, 3.11.7, 3.12.1 and 3.13.0 raise RecursionError with an 8 MiB
  thread stack (glibc's default here), but with a 1 MiB one 3.13.0 crashes (SIGSEGV): its
  guard allows thousands of C levels (``Py_C_RECURSION_LIMIT``), and some platforms give
  threads less stack than that needs. RecursionError stays the backstop.
- Our own loops over a reply's items go through :func:`paced`, which checks the deadline
  every few hundred items, so a cancelled attempt's thread stops within milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TypeVar

from .. import attempt as _attempt
from ..attempt import Attempt
from ..exceptions import SourceError

__all__ = [
    "MAX_JSON_DEPTH",
    "afford",
    "check_json",
    "check_json_nesting",
    "json_seconds",
    "paced",
    "xml_seconds",
]

T = TypeVar("T")

#: Nesting levels a JSON reply may have: a Consul health entry needs 6, a proxy's opaque
#: config a few more.
MAX_JSON_DEPTH = 64

# Costs measured with Python 3.11 on the project's 2-core machine (shared, so these are the
# worst of 3 runs), for bodies of 8 and 30 MB: decoding to text, the nesting scan below,
# json.loads, and freeing the result. Consul-shaped replies (/v1/health/service entries with
# one check each) decode at 16-25 MB/s (31.5 MB in 1.94 s). The slowest shapes per byte are
# objects with unique keys (30.3 MB in 3.8 s: 8 MB/s, 125 ns a byte); per container, nested
# objects and arrays (6.0 million in 8.2 s: 1.4 us each, most of it the garbage collector,
# whose share grows with the containers alive). The constants round those up, so that a
# machine somewhat slower than this one still finishes within the deadline.
_JSON_PER_BYTE = 150e-9
_JSON_PER_CONTAINER = 2e-6
# botocore's query-protocol parser (expat, then a walk in Python) on 4 MB bodies:
# DescribeCacheClusters replies 2 MB/s (10.6 us per "<"), empty elements 8.5 us per "<",
# attributes 160 ns a byte.
_XML_PER_BYTE = 250e-9
_XML_PER_TAG = 20e-6
# Checking the deadline every this many items costs nothing measurable and stops a loop of
# ours (5-20 us an item) within a few milliseconds of the deadline.
_PACE = 256

# The nesting scan: escaped backslashes, then escaped quotes go first, so every quote left
# delimits a string; then every byte but brackets and quotes.
_NOT_SHAPE = bytes(set(range(256)) - set(b'[]{}"'))
_STRING = re.compile(rb'"[^"]*"')
_SQUARE = bytes.maketrans(b"{}", b"[]")


def json_seconds(body: bytes) -> float:
    """Return an upper bound of the seconds decoding the JSON *body* takes (see above)."""
    return _json_cost(len(body), body.count(b"[") + body.count(b"{"))


def _json_cost(size: int, containers: int) -> float:
    return size * _JSON_PER_BYTE + containers * _JSON_PER_CONTAINER


def xml_seconds(body: bytes) -> float:
    """Return an upper bound of the seconds botocore takes to parse the XML *body*."""
    return len(body) * _XML_PER_BYTE + body.count(b"<") * _XML_PER_TAG


def afford(attempt: Attempt, seconds: float, what: str) -> None:
    """Raise SourceError unless *seconds* of work on a reply fit in the time *attempt* has left.

    *what* names the reply and its size for the message, as in ``"a JSON reply of 3 bytes"``.
    """
    left = attempt.check()
    if seconds > left:
        raise SourceError(
            attempt.source,
            f"{what} would take up to {seconds:.2f} s to decode, more than the {left:.2f} s "
            "left before the deadline; a reply this large is unusual (raise deadline= if "
            "the source really lists that much)",
        )


def check_json(body: bytes, attempt: Attempt | None, *, source: str) -> None:
    """Raise SourceError unless the JSON *body* may be decoded within *attempt*.

    It must fit in the time left (:func:`json_seconds`) and nest at most
    :data:`MAX_JSON_DEPTH` levels. Without an attempt only the nesting is checked.
    """
    # One pass over the body: the brackets are counted in its shape, which holds all of them
    # (braces as square brackets).
    shape = _shape(body)
    if attempt is not None:
        containers = shape.count(b"[")
        afford(attempt, _json_cost(len(body), containers), f"a JSON reply of {len(body)} bytes")
    _check_nesting(shape, source=source, attempt=attempt)


def check_json_nesting(body: bytes, *, source: str, attempt: Attempt | None = None) -> None:
    """Raise SourceError when the JSON *body* nests deeper than :data:`MAX_JSON_DEPTH` levels.

    Only brackets outside strings count. Unbalanced JSON passes when the decoder would meet
    its error within the limit (it then raises ValueError). All of it runs at C speed:
    ``bytes.replace``/``translate`` and one regular expression strip everything but the
    brackets outside strings, then each round removes the innermost pairs, so text nested
    d levels deep is gone after d rounds. The deadline of *attempt* is checked between
    rounds.
    """
    _check_nesting(_shape(body), source=source, attempt=attempt)


def _shape(body: bytes) -> bytes:
    """Return the brackets (braces as square ones) and the unescaped quotes of *body*, in order."""
    if b"\\" in body:  # the escape passes copy the whole body: only when there is one
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return body.translate(_SQUARE, _NOT_SHAPE)


def _check_nesting(shape: bytes, *, source: str, attempt: Attempt | None) -> None:
    # Two adjacent quotes are an empty string or the end and start of two strings; either
    # way removing them leaves every bracket inside or outside a string as it was.
    brackets = shape.translate(None, b'"')
    if len(shape) - len(brackets) == 2 * shape.count(b'""'):
        # Every quote is in such a pair (no string holds a bracket): dropping them all is
        # cheaper than replacing each pair.
        shape = brackets
    else:
        shape = shape.replace(b'""', b"")
        if b'"' in shape:
            shape = _STRING.sub(b"", shape)  # what is left of the strings holds only brackets
    rounds = 0
    while shape and rounds < MAX_JSON_DEPTH:
        if attempt is not None:
            attempt.check()
        shorter = shape.replace(b"[]", b"")
        if len(shorter) == len(shape):
            # No pair left, only unmatched brackets, closers first ("]][["): the decoder
            # stops at the first closer, or at the end, inside every opener left.
            if rounds + shape.count(b"[") <= MAX_JSON_DEPTH:
                return
            break
        shape, rounds = shorter, rounds + 1
    if shape:
        raise SourceError(source, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")


def paced(items: Iterable[T], every: int = _PACE) -> Iterator[T]:
    """Yield *items*, checking the current attempt's deadline every *every* items.

    Raise SourceError once the attempt is past its deadline or cancelled; outside an
    attempt (a parser called directly) the items are yielded unchecked.
    """
    current = _attempt.current()
    if current is None:
        yield from items
        return
    for count, item in enumerate(items):
        if not count % every:
            current.check()
        yield item
