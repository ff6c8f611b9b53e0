"""The ``cache-settings`` command: resolve node lists before a deploy, show and check them after.

::

    cache-settings resolve consul:///memcached?tag=prod --snapshot cache-nodes.json --json
    cache-settings resolve consul:///memcached elasticache://cfg:11211   # a chain
    cache-settings resolve --settings mysite.settings    # every memcached() entry, live
    cache-settings show cache-nodes.json                 # what the snapshot holds, and its age
    cache-settings check --settings mysite.settings      # live vs snapshot, for cron

Exit status: 0 when every source answered live (``check``: and matches its snapshot), 1 when
a source failed, a snapshot is missing or differs, 2 for bad usage. ``manage.py cache_nodes``
runs the same verbs through :func:`run`. The verbs themselves live in ``_verbs``; what is
printed, and how secrets are kept out of it, in ``_report``; the targets and the offline
settings import in ``_targets``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import NoReturn, TypeVar

from ._report import PROG, Output, Stream, logging_to, secrets
from ._targets import SettingsTargets, UsageError, targets_from_entries
from ._verbs import EXIT_FAILED, EXIT_OK, EXIT_USAGE, VERBS, Context
from .attempt import DEFAULT_MAX_REPLY_SIZE
from .exceptions import CacheSettingsError, ConfigurationError
from .policy import MAX_SECONDS, check_count, check_seconds
from .redact import scrub

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "SettingsTargets",
    "add_verbs",
    "build_parser",
    "main",
    "masking",
    "run",
    "targets_from_entries",
]

logger = logging.getLogger(__name__)

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)


# --- parser -----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        return check_count(int(text), "N")
    except (ValueError, ConfigurationError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None


def _seconds(text: str) -> float:
    try:
        return check_seconds(float(text), "SECONDS")
    except (ValueError, ConfigurationError):
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, at most {MAX_SECONDS:.0f} (365 days), "
            f"not {text!r}"
        ) from None


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as every other usage error here."""

    def error(self, message: str) -> NoReturn:
        # argparse prints its usage block first; the verbs' own usage errors (a bad URL,
        # a missing --settings) are one line with the fix, and so are these. --help
        # prints the usage. argparse quotes the value it refused, which may be a URL
        # with a token (a URL where the verb goes): masked as every other output is.
        output = Output(sys.stdout, sys.stderr, secrets())
        output.err(f"{self.prog}: error: {message}")
        raise _UsageExit(output.scrub(message))


class _UsageExit(SystemExit):
    """A usage error of the parser or of a verb's subparser, already printed."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


def masking(parser_class: type[ParserT]) -> type[ParserT]:
    """Return a subclass of *parser_class* whose usage errors show no secret.

    argparse quotes the value it refused ("invalid choice: 'consul://…?token=…'"); the
    subclass masks URL user info, secret options and the environment's secrets in the
    message, then reports it as *parser_class* does (Django's ``CommandParser`` prints it,
    or raises ``CommandError`` under ``call_command``).
    """

    def error(self: ParserT, message: str) -> NoReturn:
        parser_class.error(self, scrub(message, secrets()))

    return type(f"Masking{parser_class.__name__}", (parser_class,), {"error": error})


def add_verbs(parser: argparse.ArgumentParser, *, with_settings: bool = True) -> None:
    """Add the ``resolve``, ``show`` and ``check`` verbs to *parser*.

    ``manage.py cache_nodes`` passes ``with_settings=False``: Django's own ``--settings``
    option already chose the settings. The verbs' parsers are :func:`masking` ones.
    """
    verbs = parser.add_subparsers(
        dest="verb",
        metavar="{resolve,show,check}",
        required=True,
        parser_class=masking(type(parser)),
    )

    def settings_option(sub: argparse.ArgumentParser) -> None:
        if with_settings:
            sub.add_argument(
                "--settings",
                metavar="MODULE",
                help="Django settings module whose memcached() entries to use "
                "(default: DJANGO_SETTINGS_MODULE)",
            )
        else:
            # Django's default options (its docs, "django-admin and manage.py", "Default
            # options") also work after the verb, as after any command's own arguments:
            # manage.py cache_nodes resolve -v 2. Given there, they set what they set before
            # the verb; left out, they leave it as it was (SUPPRESS).
            hidden = argparse.SUPPRESS
            sub.add_argument("--settings", help=hidden, default=hidden)
            sub.add_argument("--pythonpath", help=hidden, default=hidden)
            sub.add_argument(
                "-v", "--verbosity", type=int, choices=range(4), help=hidden, default=hidden
            )
            for flag in ("--traceback", "--no-color", "--force-color"):
                sub.add_argument(flag, action="store_true", help=hidden, default=hidden)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if with_settings:  # manage.py has its own -v/--verbosity
            sub.add_argument(
                "-v", "--verbose", action="store_true", help="also log each resolution"
            )

    def source_verb(name: str, help: str, description: str, snapshot: str) -> None:
        # resolve and check: a source URL with its options, or the settings' entries.
        sub = verbs.add_parser(name, help=help, description=description)
        sub.add_argument(
            "url",
            nargs="*",
            metavar="URL",
            help="source URL, e.g. consul:///mc; several URLs are a chain (the first that "
            "answers wins; each keeps its own snapshot entry)",
        )
        sub.add_argument("--snapshot", metavar="FILE", help=snapshot)
        sub.add_argument("--attempts", type=_positive_int, metavar="N", help="default 3")
        sub.add_argument("--deadline", type=_seconds, metavar="SECONDS", help="default 5")
        sub.add_argument("--min-nodes", type=_positive_int, metavar="N", help="default 1")
        sub.add_argument(
            "--max-reply-size",
            type=_positive_int,
            metavar="BYTES",
            help=f"largest reply a source may send, default {DEFAULT_MAX_REPLY_SIZE} (32 MiB)",
        )
        sub.add_argument(
            "--probe",
            action="store_true",
            help="also ask every node for its `version` (TLS nodes over TLS), all at once "
            "within the deadline; exit 1 when one does not answer",
        )
        settings_option(sub)

    source_verb(
        "resolve",
        "resolve sources live and write their snapshots (pre-deploy)",
        "Resolve a source URL, or every memcached() entry of the settings, live (a snapshot "
        "answer does not count), and write the snapshot files. A static list "
        "(memcached://host:port) is read, never contacted: its status is 'static'; --probe "
        "asks its nodes. Exit 0 when every source answered, 1 when one failed (or, with "
        "--probe, a node did not answer).",
        "snapshot file to write",
    )
    show = verbs.add_parser(
        "show",
        help="show the nodes, age and version held by snapshot files",
        description="Show every entry of the snapshot FILEs, or the snapshot entry of every "
        "memcached() entry of the settings. Contacts no source. Exit 1 when one is missing.",
    )
    show.add_argument("files", nargs="*", metavar="FILE", help="snapshot files")
    settings_option(show)
    source_verb(
        "check",
        "compare live node lists with the snapshots (cron, monitoring)",
        "Resolve live and compare with the snapshot without writing it. Exit 0 when equal, "
        "1 when a list changed, a snapshot is missing, a source failed or (with --probe) a "
        "node did not answer.",
        "snapshot file to compare with",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the ``cache-settings`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Resolve, show and check the memcached nodes of cache_settings sources.",
        epilog="Exit status: 0 ok, 1 a source failed or a list differs, 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_verbs(parser)
    return parser


def _version() -> str:
    try:
        return metadata.version("django-cache-settings")
    except metadata.PackageNotFoundError:  # a checkout run without installing it
        return "(not installed)"


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
    ctx = Context(args, output, settings_targets)
    try:
        with logging_to(output, bool(getattr(args, "verbose", False))):
            return VERBS[args.verb](ctx)
    except (UsageError, ConfigurationError) as exc:
        output.err(f"{PROG} {args.verb}: error: {exc}")
        _json_failure(output, getattr(args, "json", False), str(exc), EXIT_USAGE)
        return EXIT_USAGE
    except CacheSettingsError as exc:
        output.err(f"{PROG} {args.verb}: {exc}")
        _json_failure(output, getattr(args, "json", False), str(exc), EXIT_FAILED)
        return EXIT_FAILED


def _json_failure(output: Output, as_json: bool, error: str, status: int) -> None:
    # The message is on stderr; with --json, stdout still holds one JSON document, so that
    # a script reading it finds why rather than nothing.
    if as_json:
        data = {"ok": False, "exit": status, "error": error, "problems": [error]}
        output.report(True, data, [], [])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cache-settings`` with *argv* (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except _UsageExit as exc:
        output = Output(sys.stdout, sys.stderr, secrets())
        _json_failure(output, "--json" in argv, exc.message, EXIT_USAGE)
        return EXIT_USAGE
    except SystemExit as exc:  # --help or --version (0), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    started = time.monotonic()
    status = run(args)
    logger.debug("%s %s: exit %d in %.2f s", PROG, args.verb, status, time.monotonic() - started)
    return status
