"""The ``cache-settings`` verbs: resolve, show and check, over targets from a URL or settings.

:mod:`cache_settings.cli` parses the command line and runs one of :data:`VERBS`; what is
printed lives in ``_report``, the targets and the offline settings import in ``_targets``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ._report import (
    CHECK_COLUMNS,
    PROBE_COLUMN,
    PROG,
    RESOLVE_COLUMNS,
    SHOW_COLUMNS,
    Column,
    Output,
    age,
    secrets,
)
from ._snapshot_path import snapshot_unwritable
from ._targets import SettingsTargets, Target, UsageError, check_tls, load_settings
from .chain import as_source, members
from .exceptions import ResolutionError, SnapshotError
from .nodes import Node
from .policy import Policy
from .probe import probe, unanswered
from .redact import redact_url
from .resolve import Resolution, resolve_with
from .snapshot import SnapshotEntry, load_snapshot, read_snapshot
from .sources import Source
from .tls import TLSConfig

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "VERBS", "Context"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Options of resolve and check that apply to a source URL only: settings entries carry the
# arguments given to memcached(). Unset ones keep the Policy defaults.
_URL_OPTIONS = ("snapshot", "attempts", "deadline", "min_nodes", "max_reply_size")


@dataclass(slots=True)
class Context:
    """One run of a verb: its arguments, where it prints, and the problems found."""

    args: argparse.Namespace
    output: Output
    settings_targets: Callable[[], SettingsTargets] | None
    problems: list[str] = field(default_factory=list)


def _settings_targets(ctx: Context) -> list[Target]:
    if ctx.settings_targets is not None:
        found = ctx.settings_targets()
    else:
        module = getattr(ctx.args, "settings", None) or os.environ.get("DJANGO_SETTINGS_MODULE")
        if not module:
            # The verb is in the prefix already ("cache-settings show: error: ...").
            what = "snapshot FILEs to show" if ctx.args.verb == "show" else "a source URL"
            raise UsageError(
                f"give {what}, or --settings MODULE (or set DJANGO_SETTINGS_MODULE) "
                "for its memcached() entries"
            )
        found = load_settings(module)
    ctx.problems.extend(found.problems)
    if not found.targets and not found.problems:
        ctx.problems.append("the settings call cache_settings.memcached() nowhere")
    return list(found.targets)


def _live_targets(ctx: Context, *, needs_snapshot: bool = False) -> list[Target]:
    # The targets of resolve and check: the source URL's, or every settings entry's.
    args = ctx.args
    if args.url and getattr(args, "settings", None):
        raise UsageError("give a source URL or --settings, not both")
    given = {name: getattr(args, name) for name in _URL_OPTIONS if getattr(args, name) is not None}
    if not args.url and given:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise UsageError(
            f"{flag} applies to a source URL; settings entries use the "
            "arguments given to memcached()"
        )
    if args.url and needs_snapshot and args.snapshot is None:
        raise UsageError("a source URL needs --snapshot FILE to compare with")
    # Several URLs are one chain.
    targets = [Target(as_source(args.url), Policy(**given))] if args.url else _settings_targets(ctx)
    ctx.output.add_secrets(secrets(args.url, [target.source for target in targets]))
    ctx.output.add_secrets(secret for target in targets for secret in target.secrets)
    # Before any source is asked: an entry whose nodes' TLS settings cannot load never works.
    check_tls((m.url, m.traits.node_tls) for t in targets for m in members(t.source))
    return targets


def _finish(
    ctx: Context,
    key: str,
    rows: list[dict[str, Any]],
    columns: Sequence[Column],
    *,
    ok: bool,
    errors: Iterable[str],
) -> int:
    # Every verb prints {"ok", key: rows, "problems"} or a table, then one line per error.
    ok = ok and not ctx.problems
    ctx.output.report(ctx.args.json, {"ok": ok, key: rows, "problems": ctx.problems}, rows, columns)
    for error in errors:
        ctx.output.err(f"{PROG}: {error}")
    return EXIT_OK if ok else EXIT_FAILED


def _live(target: Target, *, snapshot: str | None) -> Resolution:
    # live_only: a snapshot answer would hide the outage these verbs exist to catch.
    policy = replace(target.policy, snapshot=snapshot)
    return resolve_with(target.source, policy, live_only=True)


def _locations(nodes: Iterable[Node]) -> list[str]:
    return [node.location for node in nodes]


def _nodes_json(nodes: Iterable[Node]) -> list[dict[str, object]]:
    return [node.as_dict() for node in nodes]


def _cmd_resolve(ctx: Context) -> int:
    resolved = [_resolve_one(target) for target in _live_targets(ctx)]
    _check_answer_tls(resolved)
    if ctx.args.probe:
        _probe_all(resolved)
    results = [result for result, *_ in resolved]
    failed = [r["error"] for r in results if r["error"]]
    errors = [f"FAILED {text}" for text in [*failed, *ctx.problems]]
    columns = (*RESOLVE_COLUMNS, PROBE_COLUMN) if ctx.args.probe else RESOLVE_COLUMNS
    return _finish(ctx, "results", results, columns, ok=not failed, errors=errors)


# One target's result row, the target, the nodes it resolved and how to verify them when they
# speak TLS (for --probe).
_Resolved = tuple[dict[str, Any], Target, tuple[Node, ...], TLSConfig | None]


def _resolve_one(target: Target) -> _Resolved:
    result: dict[str, Any] = {
        "source": target.source.url,
        "snapshot": target.policy.snapshot,
        "status": "failed",
        "nodes": [],
        "locations": [],
        "version": None,
        "fetched_at": None,
        "answered_by": None,  # a chain: the member whose answer this is
        "probe": None,
        "error": None,
    }
    try:
        resolution = _live(target, snapshot=target.policy.snapshot)
    except ResolutionError as exc:
        result["error"] = str(exc)
        return result, target, (), None
    result.update(
        nodes=_nodes_json(resolution.nodes),
        locations=resolution.locations,
        version=resolution.version,
        fetched_at=resolution.fetched_at,
        answered_by=resolution.source,
    )
    if target.policy.snapshot is not None and not _written(target.policy.snapshot, resolution):
        # write_snapshot() only logs when it cannot write; a release must not ship without.
        path = target.policy.snapshot
        why = snapshot_unwritable(path) or "see the warning above"
        result["error"] = (
            f"{target.source.url}: could not write snapshot {path} ({why}); give snapshot= "
            "(or --snapshot) a path in a directory this user can write, such as an emptyDir "
            "volume under a read-only root filesystem"
        )
        return result, target, resolution.nodes, _node_tls(target, resolution)
    # A static list is read from the settings, never contacted: "live" would claim it was.
    static = not _answered_by(target, resolution).traits.needs_network
    result["status"] = "static" if static else "live"
    return result, target, resolution.nodes, _node_tls(target, resolution)


def _probe_all(resolved: Sequence[_Resolved]) -> None:
    # Every node of every answer at once, so N entries cost one deadline, not N.
    asked = [item for item in resolved if item[2]]
    if not asked:
        return
    pairs = [(node, tls) for _, _, nodes, tls in asked for node in nodes]
    found = probe(pairs, timeout=max(target.policy.deadline for _, target, _, _ in asked))
    for result, target, nodes, tls in asked:
        probes = [found[node, tls] for node in nodes]
        result["probe"] = [p.as_dict() for p in probes]
        missed = unanswered(probes)
        if missed and not result["error"]:
            result["error"] = (
                f"{target.source.url}: {len(missed)} of {len(probes)} node(s) did not answer "
                f"`version`: {', '.join(missed)}"
            )


def _check_answer_tls(resolved: Sequence[_Resolved]) -> None:
    # A source that finds its nodes speak TLS only when it answers (a serverless cache).
    check_tls((t.source.url, tls) for _, t, nodes, tls in resolved if any(n.tls for n in nodes))


def _answered_by(target: Target, resolution: Resolution) -> Source:
    # A chain's answer is one member's: that member says whether it is static, and its TLS.
    return next((m for m in members(target.source) if m.url == resolution.source), target.source)


def _node_tls(target: Target, resolution: Resolution) -> TLSConfig | None:
    traits = _answered_by(target, resolution).traits
    return traits.node_tls or traits.node_tls_if_needed


def _written(path: str, resolution: Resolution) -> bool:
    stored = read_snapshot(path, resolution.source)
    return stored is not None and stored.fetched_at == resolution.fetched_at


def _cmd_show(ctx: Context) -> int:
    args = ctx.args
    rows: list[dict[str, Any]] = []
    if args.files:
        if getattr(args, "settings", None):
            raise UsageError("give snapshot files or --settings, not both")
        for path in args.files:
            try:
                stored = load_snapshot(path)
            except SnapshotError as exc:
                ctx.problems.append(str(exc))
                continue
            if not stored and not os.path.exists(path):
                ctx.problems.append(
                    f"{path}: no such snapshot file; `{PROG} resolve URL --snapshot {path}` "
                    "or `--settings MODULE` writes it"
                )
            rows += [_show_row(path, entry, None) for entry in stored.values()]
    else:
        chains = _settings_targets(ctx)  # a chain's members each have an entry of their own
        for target in [replace(t, source=m) for t in chains for m in members(t.source)]:
            snapshot = target.policy.snapshot
            if snapshot is None:
                rows.append(_missing_row(target, "no snapshot configured"))
                continue
            try:
                entry = load_snapshot(snapshot).get(target.source.url)
            except SnapshotError as exc:
                ctx.problems.append(str(exc))
                continue
            if entry is None:
                rows.append(_missing_row(target, "missing"))
                ctx.problems.append(
                    f"{target.source.url}: no entry in {snapshot}; {_resolve_hint(ctx)}"
                )
            else:
                rows.append(_show_row(snapshot, entry, target.policy.max_age))
    return _finish(ctx, "entries", rows, SHOW_COLUMNS, ok=True, errors=ctx.problems)


def _resolve_hint(ctx: Context) -> str:
    # What writes the missing snapshot entries, said as the user ran this verb.
    if ctx.settings_targets is not None:
        return "run `manage.py cache_nodes resolve` to create it"
    module = getattr(ctx.args, "settings", None) or os.environ.get("DJANGO_SETTINGS_MODULE")
    return f"run `{PROG} resolve --settings {module}` to create it"


def _show_row(path: str, entry: SnapshotEntry, max_age: float | None) -> dict[str, Any]:
    seconds = entry.age()
    return {
        # A file written elsewhere (or by hand) may hold credentials in its keys.
        "source": redact_url(entry.source),
        "snapshot": path,
        "status": "stale" if max_age is not None and seconds > max_age else "ok",
        "nodes": _nodes_json(entry.nodes),
        "locations": _locations(entry.nodes),
        "fetched_at": entry.fetched_at,
        "age_seconds": round(seconds, 3),
        "version": entry.version,
    }


def _missing_row(target: Target, status: str) -> dict[str, Any]:
    return {
        "source": target.source.url,
        "snapshot": target.policy.snapshot,
        "status": status,
        "nodes": [],
        "locations": [],
        "fetched_at": None,
        "age_seconds": None,
        "version": None,
    }


def _cmd_check(ctx: Context) -> int:
    checked = [_check_one(target) for target in _live_targets(ctx, needs_snapshot=True)]
    _check_answer_tls(checked)
    if ctx.args.probe:
        _probe_all(checked)
    results = [result for result, *_ in checked]
    ok = all(r["status"] in ("same", "static") and not r["error"] for r in results)
    # A failed source is in the table already; a node that did not answer is said here.
    unanswered = [f"FAILED {r['error']}" for r in results if r["error"] and r["status"] != "failed"]
    columns = (*CHECK_COLUMNS, PROBE_COLUMN) if ctx.args.probe else CHECK_COLUMNS
    return _finish(ctx, "results", results, columns, ok=ok, errors=[*unanswered, *ctx.problems])


def _check_one(target: Target) -> _Resolved:
    result: dict[str, Any] = {
        "source": target.source.url,
        "snapshot": target.policy.snapshot,
        "status": "same",
        "detail": "",
        "live": None,
        "stored": None,
        "added": [],
        "removed": [],
        "age_seconds": None,
        "probe": None,
        "error": None,
    }
    stored: SnapshotEntry | None = None
    snapshot = target.policy.snapshot
    live: Resolution | None = None
    failure = ""
    try:
        # No snapshot: checking must not rewrite the file it compares with.
        live = _live(target, snapshot=None)
    except ResolutionError as exc:
        failure = str(exc)
    # A chain is compared with the entry of the member that answered (else its first).
    key = live.source if live is not None else members(target.source)[0].url
    if snapshot is None and not target.source.traits.needs_network:
        # A static list is read from the settings: it never needs a snapshot to fall back on.
        result.update(status="static", detail="a static list needs no snapshot")
    elif snapshot is None:
        result.update(status="missing", detail="no snapshot configured")
    else:
        try:
            stored = load_snapshot(snapshot).get(key)
        except SnapshotError as exc:
            result.update(status="missing", detail=str(exc))
        else:
            if stored is None:
                result.update(status="missing", detail=f"no entry in {snapshot}")
            else:
                result["stored"] = _locations(stored.nodes)
                result["age_seconds"] = round(stored.age(), 3)
    if live is None:
        result.update(status="failed", detail=failure, error=failure)
        return result, target, (), None
    result["live"] = live.locations
    if stored is None:
        return result, target, live.nodes, _node_tls(target, live)
    added = sorted(set(live.nodes) - set(stored.nodes), key=live.nodes.index)
    removed = sorted(set(stored.nodes) - set(live.nodes), key=stored.nodes.index)
    if added or removed:
        # The version alone is not compared: an identical node list is not a change.
        parts = [f"+{n.location}" for n in added] + [f"-{n.location}" for n in removed]
        result.update(
            status="changed",
            detail=" ".join(parts),
            added=_locations(added),
            removed=_locations(removed),
        )
    else:
        result["detail"] = f"{len(live.nodes)} node(s), snapshot {age(stored.age())} old"
    return result, target, live.nodes, _node_tls(target, live)


VERBS: dict[str, Callable[[Context], int]] = {
    "resolve": _cmd_resolve,
    "show": _cmd_show,
    "check": _cmd_check,
}
