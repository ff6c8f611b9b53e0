"""The ``cache-settings`` command: resolve node lists before a deploy, show and check them after.

::

    cache-settings resolve consul:///memcached?tag=prod --snapshot cache-nodes.json --json
    cache-settings resolve --settings mysite.settings    # every memcached() entry, live
    cache-settings show cache-nodes.json                 # what the snapshot holds, and its age
    cache-settings check --settings mysite.settings      # live vs snapshot, for cron

Exit status: 0 when every source answered live (``check``: and matches its snapshot), 1 when
a source failed, a snapshot is missing or differs, 2 for bad usage. ``manage.py cache_nodes``
runs the same verbs through :func:`run`. What is printed, and how secrets are kept out of it,
lives in ``_report``; the targets and the offline settings import in ``_targets``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._report import (
    CHECK_COLUMNS,
    PROG,
    RESOLVE_COLUMNS,
    SHOW_COLUMNS,
    Column,
    Output,
    Stream,
    age,
    logging_to,
    secrets,
)
from ._targets import SettingsTargets, Target, UsageError, load_settings, targets_from_entries
from .exceptions import CacheSettingsError, ConfigurationError, ResolutionError, SnapshotError
from .nodes import Node
from .redact import redact_url
from .resolve import Resolution, resolve
from .snapshot import SnapshotEntry, load_snapshot, read_snapshot
from .sources import parse_source

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "SettingsTargets",
    "Target",
    "add_verbs",
    "build_parser",
    "load_settings",
    "main",
    "run",
    "targets_from_entries",
]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Options of resolve and check that apply to a source URL only: settings entries carry the
# arguments given to memcached(). Unset ones keep Target's defaults.
_URL_OPTIONS = ("snapshot", "attempts", "deadline", "min_nodes")


# --- verbs ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    args: argparse.Namespace
    output: Output
    settings_targets: Callable[[], SettingsTargets] | None
    problems: list[str] = field(default_factory=list)


def _settings_targets(ctx: _Context) -> list[Target]:
    if ctx.settings_targets is not None:
        found = ctx.settings_targets()
    else:
        module = getattr(ctx.args, "settings", None) or os.environ.get("DJANGO_SETTINGS_MODULE")
        if not module:
            raise UsageError(
                f"{ctx.args.verb}: give a source URL or --settings MODULE "
                "(or set DJANGO_SETTINGS_MODULE)"
            )
        found = load_settings(module)
    ctx.problems.extend(found.problems)
    if not found.targets and not found.problems:
        ctx.problems.append("the settings call cache_settings.memcached() nowhere")
    return list(found.targets)


def _live_targets(ctx: _Context, *, needs_snapshot: bool = False) -> list[Target]:
    # The targets of resolve and check: the source URL's, or every settings entry's.
    args = ctx.args
    if args.url and getattr(args, "settings", None):
        raise UsageError(f"{args.verb}: give a source URL or --settings, not both")
    given = {name: getattr(args, name) for name in _URL_OPTIONS if getattr(args, name) is not None}
    if not args.url and given:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise UsageError(
            f"{args.verb}: {flag} applies to a source URL; settings entries use the "
            "arguments given to memcached()"
        )
    if args.url and needs_snapshot and args.snapshot is None:
        raise UsageError("check: a source URL needs --snapshot FILE to compare with")
    targets = [Target(parse_source(args.url), **given)] if args.url else _settings_targets(ctx)
    ctx.output.add_secrets(secrets(args.url, [target.source for target in targets]))
    return targets


def _finish(
    ctx: _Context,
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
    return resolve(
        target.source,
        attempts=target.attempts,
        deadline=target.deadline,
        snapshot=snapshot,
        min_nodes=target.min_nodes,
        live_only=True,
    )


def _locations(nodes: Iterable[Node]) -> list[str]:
    return [node.location for node in nodes]


def _nodes_json(nodes: Iterable[Node]) -> list[dict[str, object]]:
    return [node.as_dict() for node in nodes]


def _cmd_resolve(ctx: _Context) -> int:
    results = [_resolve_one(target) for target in _live_targets(ctx)]
    failed = [r["error"] for r in results if r["status"] != "live"]
    errors = [f"FAILED {text}" for text in [*failed, *ctx.problems]]
    return _finish(ctx, "results", results, RESOLVE_COLUMNS, ok=not failed, errors=errors)


def _resolve_one(target: Target) -> dict[str, Any]:
    result: dict[str, Any] = {
        "source": target.source.url,
        "snapshot": target.snapshot,
        "status": "failed",
        "nodes": [],
        "locations": [],
        "version": None,
        "fetched_at": None,
        "error": None,
    }
    try:
        resolution = _live(target, snapshot=target.snapshot)
    except ResolutionError as exc:
        result["error"] = str(exc)
        return result
    result.update(
        nodes=_nodes_json(resolution.nodes),
        locations=resolution.locations,
        version=resolution.version,
        fetched_at=resolution.fetched_at,
    )
    if target.snapshot is not None and not _written(target.snapshot, resolution):
        # write_snapshot() only logs when it cannot write; a release must not ship without.
        result["error"] = f"{target.source.url}: could not write snapshot {target.snapshot}"
        return result
    result["status"] = "live"
    return result


def _written(path: str, resolution: Resolution) -> bool:
    stored = read_snapshot(path, resolution.source)
    return stored is not None and stored.fetched_at == resolution.fetched_at


def _cmd_show(ctx: _Context) -> int:
    args = ctx.args
    rows: list[dict[str, Any]] = []
    if args.files:
        if getattr(args, "settings", None):
            raise UsageError("show: give snapshot files or --settings, not both")
        for path in args.files:
            try:
                stored = load_snapshot(path)
            except SnapshotError as exc:
                ctx.problems.append(str(exc))
                continue
            if not stored and not os.path.exists(path):
                ctx.problems.append(f"{path}: no such snapshot file")
            rows += [_show_row(path, entry, None) for entry in stored.values()]
    else:
        for target in _settings_targets(ctx):
            if target.snapshot is None:
                rows.append(_missing_row(target, "no snapshot configured"))
                continue
            try:
                entry = load_snapshot(target.snapshot).get(target.source.url)
            except SnapshotError as exc:
                ctx.problems.append(str(exc))
                continue
            if entry is None:
                rows.append(_missing_row(target, "missing"))
                ctx.problems.append(f"{target.source.url}: no entry in {target.snapshot}")
            else:
                rows.append(_show_row(target.snapshot, entry, target.max_age))
    return _finish(ctx, "entries", rows, SHOW_COLUMNS, ok=True, errors=ctx.problems)


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
        "snapshot": target.snapshot,
        "status": status,
        "nodes": [],
        "locations": [],
        "fetched_at": None,
        "age_seconds": None,
        "version": None,
    }


def _cmd_check(ctx: _Context) -> int:
    results = [_check_one(target) for target in _live_targets(ctx, needs_snapshot=True)]
    ok = all(r["status"] == "same" for r in results)
    return _finish(ctx, "results", results, CHECK_COLUMNS, ok=ok, errors=ctx.problems)


def _check_one(target: Target) -> dict[str, Any]:
    result: dict[str, Any] = {
        "source": target.source.url,
        "snapshot": target.snapshot,
        "status": "same",
        "detail": "",
        "live": None,
        "stored": None,
        "added": [],
        "removed": [],
        "age_seconds": None,
        "error": None,
    }
    stored: SnapshotEntry | None = None
    if target.snapshot is None:
        result.update(status="missing", detail="no snapshot configured")
    else:
        try:
            stored = load_snapshot(target.snapshot).get(target.source.url)
        except SnapshotError as exc:
            result.update(status="missing", detail=str(exc))
        else:
            if stored is None:
                result.update(status="missing", detail=f"no entry in {target.snapshot}")
            else:
                result["stored"] = _locations(stored.nodes)
                result["age_seconds"] = round(stored.age(), 3)
    try:
        # No snapshot: checking must not rewrite the file it compares with.
        live = _live(target, snapshot=None)
    except ResolutionError as exc:
        result.update(status="failed", detail=str(exc), error=str(exc))
        return result
    result["live"] = live.locations
    if stored is None:
        return result
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
    return result


_VERBS: dict[str, Callable[[_Context], int]] = {
    "resolve": _cmd_resolve,
    "show": _cmd_show,
    "check": _cmd_check,
}


# --- parser -----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def add_verbs(parser: argparse.ArgumentParser, *, with_settings: bool = True) -> None:
    """Add the ``resolve``, ``show`` and ``check`` verbs to *parser*.

    ``manage.py cache_nodes`` passes ``with_settings=False``: Django's own ``--settings``
    option already chose the settings.
    """
    verbs = parser.add_subparsers(dest="verb", metavar="{resolve,show,check}", required=True)

    def settings_option(sub: argparse.ArgumentParser) -> None:
        if with_settings:
            sub.add_argument(
                "--settings",
                metavar="MODULE",
                help="Django settings module whose memcached() entries to use "
                "(default: DJANGO_SETTINGS_MODULE)",
            )
        else:
            # Django's common options also work after the verb (manage.py cache_nodes show
            # --settings mysite.settings); Django itself acts on them before the command runs.
            sub.add_argument("--settings", help=argparse.SUPPRESS)
            sub.add_argument("--pythonpath", help=argparse.SUPPRESS)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if with_settings:  # manage.py has its own -v/--verbosity
            sub.add_argument(
                "-v", "--verbose", action="store_true", help="also log each resolution"
            )

    def url_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--attempts", type=_positive_int, metavar="N", help="default 3")
        sub.add_argument("--deadline", type=_seconds, metavar="SECONDS", help="default 5")
        sub.add_argument("--min-nodes", type=_positive_int, metavar="N", help="default 1")

    resolve_ = verbs.add_parser(
        "resolve",
        help="resolve sources live and write their snapshots (pre-deploy)",
        description="Resolve a source URL, or every memcached() entry of the settings, live "
        "(a snapshot answer does not count), and write the snapshot files. Exit 0 when every "
        "source answered, 1 when one failed.",
    )
    resolve_.add_argument("url", nargs="?", metavar="URL", help="source URL, e.g. consul:///mc")
    resolve_.add_argument("--snapshot", metavar="FILE", help="snapshot file to write")
    url_options(resolve_)
    settings_option(resolve_)

    show = verbs.add_parser(
        "show",
        help="show the nodes, age and version held by snapshot files",
        description="Show every entry of the snapshot FILEs, or the snapshot entry of every "
        "memcached() entry of the settings. Contacts no source. Exit 1 when one is missing.",
    )
    show.add_argument("files", nargs="*", metavar="FILE", help="snapshot files")
    settings_option(show)

    check = verbs.add_parser(
        "check",
        help="compare live node lists with the snapshots (cron, monitoring)",
        description="Resolve live and compare with the snapshot without writing it. Exit 0 "
        "when equal, 1 when a list changed, a snapshot is missing or a source failed.",
    )
    check.add_argument("url", nargs="?", metavar="URL", help="source URL")
    check.add_argument("--snapshot", metavar="FILE", help="snapshot file to compare with")
    url_options(check)
    settings_option(check)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``cache-settings`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Resolve, show and check the memcached nodes of cache_settings sources.",
        epilog="Exit status: 0 ok, 1 a source failed or a list differs, 2 bad usage.",
    )
    add_verbs(parser)
    return parser


def run(
    args: argparse.Namespace,
    *,
    stdout: Stream | None = None,
    stderr: Stream | None = None,
    settings_targets: Callable[[], SettingsTargets] | None = None,
) -> int:
    """Run the verb in *args* (parsed by :func:`add_verbs`) and return the exit status.

    *settings_targets* replaces importing a settings module (``manage.py cache_nodes``
    passes the entries its own settings import recorded).
    """
    output = Output(stdout or sys.stdout, stderr or sys.stderr, secrets(getattr(args, "url", None)))
    ctx = _Context(args, output, settings_targets)
    try:
        with logging_to(output, bool(getattr(args, "verbose", False))):
            return _VERBS[args.verb](ctx)
    except (UsageError, ConfigurationError) as exc:
        output.err(f"{PROG} {args.verb}: error: {exc}")
        return EXIT_USAGE
    except CacheSettingsError as exc:
        output.err(f"{PROG} {args.verb}: {exc}")
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cache-settings`` with *argv* (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    started = time.monotonic()
    status = run(args)
    logger.debug("%s %s: exit %d in %.2f s", PROG, args.verb, status, time.monotonic() - started)
    return status
