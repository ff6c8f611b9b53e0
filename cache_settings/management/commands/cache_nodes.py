"""``manage.py cache_nodes resolve|show|check``: the ``cache-settings`` verbs for this site."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._targets import UsageError
from ...cli import (
    EXIT_OK,
    EXIT_USAGE,
    SettingsTargets,
    add_verbs,
    masking,
    run,
    targets_from_entries,
)
from ...entries import entries, reported
from ...resolve import OFFLINE_VARIABLE, is_offline


class Command(BaseCommand):
    """Resolve, show or check the node lists of this site's ``memcached()`` entries."""

    help = (
        "Resolve (pre-deploy: live, writing the snapshots), show or check (live vs snapshot) "
        "the memcached nodes of every cache_settings.memcached() entry in the settings. "
        "Run as a command, the settings import asks no source: each verb asks them itself. "
        "Exit status 0 ok, 1 a source failed or a list differs, 2 bad usage."
    )
    # The verbs must run while the checks complain: `resolve` is how W001 gets fixed.
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, with its usage errors masked as the verbs' (cli.masking)."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = masking(type(parser))  # a URL typed where the verb goes
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        """Add the verbs; Django's own ``--settings`` chooses the settings module."""
        add_verbs(parser, with_settings=False)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the verb against the entries this process's settings import recorded."""
        # Django's --settings already chose the settings; it is not the CLI's --settings.
        given = {key: value for key, value in options.items() if key != "settings"}
        namespace = argparse.Namespace(**{"url": None, "snapshot": None, "files": [], **given})
        namespace.verbose = options.get("verbosity", 1) >= 2
        if options["verb"] == "check" and not is_offline() and _rewritten():
            # Run from a shell, `manage.py cache_nodes` imports the settings without asking
            # any source. Called from another process's code (call_command), that process's
            # settings import may have rewritten the snapshots: comparing now would compare
            # live with live and always say "same", and a cron job must not be told all is
            # well when it cannot know.
            raise CommandError(
                "this process's settings import asked the sources and rewrote the snapshots "
                "that check compares with; run `manage.py cache_nodes check` as a command of "
                f"its own, or this process with {OFFLINE_VARIABLE}=1",
                returncode=EXIT_USAGE,
            )
        status = run(
            namespace,
            stdout=self.stdout,
            stderr=self.stderr,
            settings_targets=_recorded,
        )
        if status != EXIT_OK:
            raise CommandError(
                f"cache_nodes {options['verb']} failed (exit status {status})", returncode=status
            )


def _recorded() -> SettingsTargets:
    # Django imported the settings before this command ran; every memcached() call made
    # then is recorded (under `manage.py cache_nodes` without asking its source, see
    # entries.is_collecting). The verbs ask each source.
    errors = dict.fromkeys(str(error) for error in reported())
    if errors:
        # A memcached() call failed, and under this command did not raise: say why, once.
        raise UsageError("; ".join(errors))
    return SettingsTargets(tuple(targets_from_entries(entries())))


def _rewritten() -> bool:
    return any(
        entry.policy.snapshot is not None
        and entry.resolution is not None
        and entry.resolution.origin == "live"
        for entry in entries()
    )
