"""The ``cache-settings`` command: resolve node lists before a deploy, show and check them after.

::

    cache-settings resolve consul:///memcached?tag=prod --snapshot cache-nodes.json --json
    cache-settings resolve --settings mysite.settings    # every memcached() entry, live
    cache-settings show cache-nodes.json                 # what the snapshot holds, and its age
    cache-settings check --settings mysite.settings      # live vs snapshot, for cron

Exit status: 0 when every source answered live (``check``: and matches its snapshot), 1 when
a source failed, a snapshot is missing or differs, 2 for bad usage. ``manage.py cache_nodes``
runs the same verbs through :func:`run`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from .exceptions import CacheSettingsError, ConfigurationError, ResolutionError, SnapshotError
from .nodes import Node
from .resolve import OFFLINE_VARIABLE, Resolution, resolve
from .settings import Entry, collecting, entries
from .snapshot import SnapshotEntry, load_snapshot, read_snapshot
from .sources import Source, parse_source

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
PROG = "cache-settings"

# Environment variables whose values must never be printed, even inside a client's error.
_SECRET_VARIABLES = (
    "CONSUL_HTTP_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
_SECRET_QUERY_KEYS = frozenset({"token", "password", "secret"})
_MASK = "***"


class _Stream(Protocol):
    def write(self, text: str, /) -> object: ...


class _UsageError(Exception):
    """Raised for a bad combination of arguments: exit status 2."""


@dataclass(frozen=True, slots=True)
class Target:
    """One source to resolve, show or check, with the arguments ``memcached()`` was given."""

    source: Source
    snapshot: str | None = None
    attempts: int = 3
    deadline: float = 5.0
    max_age: float | None = None
    min_nodes: int = 1

    @classmethod
    def from_entry(cls, entry: Entry) -> Target:
        """Return the target of one recorded ``memcached()`` call."""
        return cls(
            entry.source,
            entry.snapshot,
            entry.attempts,
            entry.deadline,
            entry.max_age,
            entry.min_nodes,
        )


@dataclass(frozen=True, slots=True)
class SettingsTargets:
    """The targets a settings module declares, and why the list may be incomplete."""

    targets: tuple[Target, ...]
    problems: tuple[str, ...] = ()


def targets_from_entries(recorded: Iterable[Entry]) -> list[Target]:
    """Return one target per distinct (source, snapshot file), in settings order."""
    seen: dict[tuple[str, str | None], Target] = {}
    for entry in recorded:
        seen.setdefault((entry.source.url, entry.snapshot), Target.from_entry(entry))
    return list(seen.values())


def load_settings(module: str) -> SettingsTargets:
    """Import the settings *module* and return the targets its ``memcached()`` calls record.

    The module is imported with ``CACHE_SETTINGS_OFFLINE=1`` and inside
    :func:`cache_settings.settings.collecting`, so the import contacts no source and records
    every entry, even those whose snapshot is missing; the verbs then ask each source.
    """
    start = len(entries())
    with (
        _environ(OFFLINE_VARIABLE, "1"),
        _fresh_modules(module),
        _quiet(True),
        collecting(),
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
                raise _UsageError(f"--settings: cannot import {module!r} ({exc})") from exc
            raise
    return SettingsTargets(tuple(targets_from_entries(entries()[start:])), ())


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    # The offline pass only reads snapshots to learn the entries; a missing one is expected
    # on a first deploy and is reported by what follows, not logged as an error here.
    if not quiet:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _fresh_modules(module: str) -> Iterator[None]:
    # The settings module runs its memcached() calls only when executed, so it is imported
    # afresh, as are its submodules and siblings (settings/base.py beside settings/prod.py); they
    # are forgotten afterwards so the next import runs them again. Other packages stay loaded.
    parent = module.rpartition(".")[0]

    def ours(name: str) -> bool:
        return (
            name == module
            or name.startswith(module + ".")
            or bool(parent and name.startswith(parent + "."))
        )

    saved = {name: mod for name, mod in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    # Like ``python -m``: the current directory is importable, as it is for manage.py.
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(os.getcwd())
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


# --- output -----------------------------------------------------------------------------------


class _Output:
    """Writes text and JSON, with every known secret masked."""

    def __init__(self, stdout: _Stream, stderr: _Stream, secrets: Iterable[str]) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so that a secret containing another is masked whole. Very short
        # values are left alone: masking "a" would garble every line.
        found = {s for s in [*self.secrets, *secrets] if len(s) >= 4}
        self.secrets = sorted(found, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _MASK)
        return text

    def out(self, text: str) -> None:
        self.stdout.write(self.scrub(text) + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(self.scrub(text) + "\n")

    def json(self, data: object) -> None:
        self.out(json.dumps(data, indent=2))


class _ScrubbingFormatter(logging.Formatter):
    def __init__(self, output: _Output) -> None:
        super().__init__(f"{PROG}: %(levelname)s: %(message)s")
        self.output = output

    def format(self, record: logging.LogRecord) -> str:
        return self.output.scrub(super().format(record))


@contextlib.contextmanager
def _logging_to(output: _Output, verbose: bool) -> Iterator[None]:
    # resolve() logs each retry and fallback. The summary already names every attempt's
    # cause, so only --verbose shows them (masked like everything else); logging is left
    # as it was afterwards.
    level = logging.INFO if verbose else logging.ERROR
    handler = logging.StreamHandler(output.stderr)
    handler.setFormatter(_ScrubbingFormatter(output))
    handler.setLevel(level)
    package = logging.getLogger("cache_settings")
    old_level = package.level
    package.addHandler(handler)
    if verbose:
        package.setLevel(level)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)


def _secrets(args: argparse.Namespace, targets: Iterable[Target]) -> list[str]:
    found = [os.environ[name] for name in _SECRET_VARIABLES if os.environ.get(name)]
    url = getattr(args, "url", None)
    if url:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        found += [unquote(userinfo), *unquote(userinfo).split(":")] if userinfo else []
        found += [
            value
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if key.lower() in _SECRET_QUERY_KEYS
        ]
    for target in targets:
        for name in ("token", "password", "secret"):
            value = getattr(target.source, name, None)
            if isinstance(value, str) and value:
                found.append(value)
    return found


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _locations(nodes: Iterable[Node]) -> list[str]:
    return [node.location for node in nodes]


def _nodes_json(nodes: Iterable[Node]) -> list[dict[str, object]]:
    return [node.as_dict() for node in nodes]


# --- verbs ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    args: argparse.Namespace
    output: _Output
    settings_targets: Callable[[], SettingsTargets] | None
    problems: list[str] = field(default_factory=list)


def _targets(ctx: _Context) -> list[Target]:
    args = ctx.args
    module = getattr(args, "settings", None)
    if ctx.settings_targets is not None:
        found = ctx.settings_targets()
    else:
        module = module or os.environ.get("DJANGO_SETTINGS_MODULE")
        if not module:
            raise _UsageError(
                f"{args.verb}: give a source URL or --settings MODULE "
                "(or set DJANGO_SETTINGS_MODULE)"
            )
        found = load_settings(module)
    ctx.problems.extend(found.problems)
    if not found.targets and not found.problems:
        ctx.problems.append("the settings call cache_settings.memcached() nowhere")
    return list(found.targets)


def _url_target(args: argparse.Namespace) -> Target:
    # Settings entries carry their own arguments; these options apply to a URL only.
    return Target(
        parse_source(args.url),
        args.snapshot,
        args.attempts if args.attempts is not None else 3,
        args.deadline if args.deadline is not None else 5.0,
        None,
        args.min_nodes if args.min_nodes is not None else 1,
    )


def _check_url_or_settings(args: argparse.Namespace, url_options: Sequence[str]) -> None:
    if args.url and getattr(args, "settings", None):
        raise _UsageError(f"{args.verb}: give a source URL or --settings, not both")
    if not args.url:
        given = [option for option in url_options if getattr(args, option) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise _UsageError(
                f"{args.verb}: {flag} applies to a source URL; settings entries use the "
                "arguments given to memcached()"
            )


def _cmd_resolve(ctx: _Context) -> int:
    args = ctx.args
    _check_url_or_settings(args, ("snapshot", "attempts", "deadline", "min_nodes"))
    targets = [_url_target(args)] if args.url else _targets(ctx)
    ctx.output.add_secrets(_secrets(args, targets))
    results: list[dict[str, Any]] = []
    for target in targets:
        results.append(_resolve_one(target))
    failed = [r for r in results if r["status"] != "live"]
    ok = not failed and not ctx.problems
    if args.json:
        ctx.output.json({"ok": ok, "results": results, "problems": ctx.problems})
    else:
        rows = [
            [
                r["source"],
                r["status"],
                ", ".join(r["locations"]) or "-",
                "-" if r["version"] is None else str(r["version"]),
                r["snapshot"] or "-",
            ]
            for r in results
        ]
        if rows:
            ctx.output.out(_table(["SOURCE", "STATUS", "NODES", "VERSION", "SNAPSHOT"], rows))
    for r in failed:
        ctx.output.err(f"{PROG}: FAILED {r['error']}")
    for problem in ctx.problems:
        ctx.output.err(f"{PROG}: FAILED {problem}")
    return EXIT_OK if ok else EXIT_FAILED


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
        # live_only: a snapshot answer would hide the outage this command exists to catch.
        resolution = resolve(
            target.source,
            attempts=target.attempts,
            deadline=target.deadline,
            snapshot=target.snapshot,
            min_nodes=target.min_nodes,
            live_only=True,
        )
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
            raise _UsageError("show: give snapshot files or --settings, not both")
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
        for target in _targets(ctx):
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
    if args.json:
        ctx.output.json({"ok": not ctx.problems, "entries": rows, "problems": ctx.problems})
    else:
        table = [
            [
                r["source"],
                ", ".join(r["locations"]) or "-",
                "-" if r["age_seconds"] is None else _age(r["age_seconds"]),
                "-" if r["version"] is None else str(r["version"]),
                r["status"],
                r["snapshot"] or "-",
            ]
            for r in rows
        ]
        if table:
            headers = ["SOURCE", "NODES", "AGE", "VERSION", "STATUS", "SNAPSHOT"]
            ctx.output.out(_table(headers, table))
    for problem in ctx.problems:
        ctx.output.err(f"{PROG}: {problem}")
    return EXIT_FAILED if ctx.problems else EXIT_OK


def _show_row(path: str, entry: SnapshotEntry, max_age: float | None) -> dict[str, Any]:
    age = entry.age()
    return {
        "source": entry.source,
        "snapshot": path,
        "status": "stale" if max_age is not None and age > max_age else "ok",
        "nodes": _nodes_json(entry.nodes),
        "locations": _locations(entry.nodes),
        "fetched_at": entry.fetched_at,
        "age_seconds": round(age, 3),
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
    args = ctx.args
    _check_url_or_settings(args, ("snapshot", "attempts", "deadline", "min_nodes"))
    if args.url and args.snapshot is None:
        raise _UsageError("check: a source URL needs --snapshot FILE to compare with")
    targets = [_url_target(args)] if args.url else _targets(ctx)
    ctx.output.add_secrets(_secrets(args, targets))
    results = [_check_one(target) for target in targets]
    ok = all(r["status"] == "same" for r in results) and not ctx.problems
    if args.json:
        ctx.output.json({"ok": ok, "results": results, "problems": ctx.problems})
    else:
        rows = [[r["source"], r["status"], r["detail"], r["snapshot"] or "-"] for r in results]
        if rows:
            ctx.output.out(_table(["SOURCE", "STATUS", "DETAIL", "SNAPSHOT"], rows))
    for problem in ctx.problems:
        ctx.output.err(f"{PROG}: {problem}")
    return EXIT_OK if ok else EXIT_FAILED


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
        # No snapshot argument: checking must not rewrite the file it compares with.
        live = resolve(
            target.source,
            attempts=target.attempts,
            deadline=target.deadline,
            min_nodes=target.min_nodes,
            live_only=True,
        )
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
        result["detail"] = f"{len(live.nodes)} node(s), snapshot {_age(stored.age())} old"
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
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
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
    stdout: _Stream | None = None,
    stderr: _Stream | None = None,
    settings_targets: Callable[[], SettingsTargets] | None = None,
) -> int:
    """Run the verb in *args* (parsed by :func:`add_verbs`) and return the exit status.

    *settings_targets* replaces importing a settings module (``manage.py cache_nodes``
    passes the entries its own settings import recorded); its argument is *live*.
    """
    output = _Output(stdout or sys.stdout, stderr or sys.stderr, _secrets(args, ()))
    ctx = _Context(args, output, settings_targets)
    try:
        with _logging_to(output, bool(getattr(args, "verbose", False))):
            return _VERBS[args.verb](ctx)
    except (_UsageError, ConfigurationError) as exc:
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
