"""A subset of Consul's filter expressions (``?filter=``) for the stand-in.

API docs, "Filtering": matching operators ``==``, ``!=``, ``is empty``, ``is not empty``,
``"v" in Sel``, ``"v" not in Sel``, ``Sel contains "v"``, ``Sel not contains "v"``,
``Sel matches "re"``, ``Sel not matches "re"``; ``and``, ``or``, ``not`` and parentheses.
Selectors are dotted paths into one ``/v1/health/service`` entry (``Service.Tags``,
``Node.Meta.rack``, ``Checks.Status``); a path through a list (``Checks``) selects the
collection of its members' values. Equality on a collection is refused, as this subset does
not model go-bexpr's rules for it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["FilterError", "evaluate"]

_TOKEN = re.compile(r'\s*(==|!=|\(|\)|"(?:[^"\\]|\\.)*"|`[^`]*`|[^\s()"`=!]+)')
_KEYWORDS = {"and", "or", "not", "in", "contains", "matches", "is", "empty"}


class FilterError(ValueError):
    """Raised for an expression outside the subset, as Consul answers 400 for a bad filter."""


def evaluate(expression: str, entry: dict[str, Any]) -> bool:
    """Return whether *entry* matches *expression*."""
    tokens = _tokenize(expression)
    result, rest = _or(tokens, entry)
    if rest:
        raise FilterError(f"unexpected {rest[0]!r}")
    return result


def _tokenize(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        found = _TOKEN.match(text, position)
        if found is None:
            raise FilterError(f"cannot parse {text[position:]!r}")
        tokens.append(found.group(1))
        position = found.end()
    return tokens


def _or(tokens: list[str], entry: dict[str, Any]) -> tuple[bool, list[str]]:
    result, tokens = _and(tokens, entry)
    while tokens[:1] == ["or"]:
        right, tokens = _and(tokens[1:], entry)
        result = result or right
    return result, tokens


def _and(tokens: list[str], entry: dict[str, Any]) -> tuple[bool, list[str]]:
    result, tokens = _unary(tokens, entry)
    while tokens[:1] == ["and"]:
        right, tokens = _unary(tokens[1:], entry)
        result = result and right
    return result, tokens


def _unary(tokens: list[str], entry: dict[str, Any]) -> tuple[bool, list[str]]:
    if tokens[:1] == ["not"]:
        result, rest = _unary(tokens[1:], entry)
        return not result, rest
    if tokens[:1] == ["("]:
        result, rest = _or(tokens[1:], entry)
        if rest[:1] != [")"]:
            raise FilterError("missing ')'")
        return result, rest[1:]
    return _match(tokens, entry)


def _match(tokens: list[str], entry: dict[str, Any]) -> tuple[bool, list[str]]:
    if tokens and _is_value(tokens[0]):
        value, rest = _value(tokens[0]), tokens[1:]
        negate = rest[:1] == ["not"]
        rest = rest[1:] if negate else rest
        if rest[:1] != ["in"] or len(rest) < 2:
            raise FilterError("expected 'in' after a value")
        return _contains(_select(entry, rest[1]), value) != negate, rest[2:]
    if not tokens:
        raise FilterError("expected a selector")
    field, rest = _select(entry, tokens[0]), tokens[1:]
    negate = rest[:1] == ["not"]
    rest = rest[1:] if negate else rest
    if rest[:1] in (["=="], ["!="]) and len(rest) >= 2 and not negate:
        if isinstance(field, list | dict):
            raise FilterError(f"{tokens[0]} is a collection; use contains or in")
        equal = _text(field) == _value(rest[1])
        return equal if rest[0] == "==" else not equal, rest[2:]
    if rest[:1] == ["is"]:
        negate = rest[1:2] == ["not"]
        rest = rest[2:] if negate else rest[1:]
        if rest[:1] != ["empty"]:
            raise FilterError("expected 'empty'")
        return (not field) != negate, rest[1:]
    if rest[:1] == ["contains"] and len(rest) >= 2:
        return _contains(field, _value(rest[1])) != negate, rest[2:]
    if rest[:1] == ["matches"] and len(rest) >= 2:
        found = any(re.search(_value(rest[1]), _text(v)) for v in _members(field))
        return found != negate, rest[2:]
    raise FilterError(f"unsupported expression near {tokens[:4]!r}")


def _select(entry: dict[str, Any], selector: str) -> Any:
    if selector in _KEYWORDS or _is_value(selector):
        raise FilterError(f"expected a selector, got {selector!r}")
    current: Any = entry
    for part in selector.split("."):
        if isinstance(current, list):
            current = [item.get(part) if isinstance(item, dict) else None for item in current]
        elif isinstance(current, dict):
            current = current.get(part)
        else:
            current = None
    return current


def _contains(field: Any, value: str) -> bool:
    if isinstance(field, str):
        return value in field
    if isinstance(field, dict):
        return value in field
    return value in [_text(v) for v in _members(field)]


def _members(field: Any) -> list[Any]:
    return list(field) if isinstance(field, list) else [field]


def _is_value(token: str) -> bool:
    return token[:1] in ('"', "`") or bool(re.fullmatch(r"-?\d+(\.\d+)?", token))


def _value(token: str) -> str:
    if token[:1] == '"':
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    if token[:1] == "`":
        return token[1:-1]
    return token


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)
