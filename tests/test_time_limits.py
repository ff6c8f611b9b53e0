"""Seconds past what the platform can wait: refused when given, never an OverflowError.

``threading`` refuses a wait above ``threading.TIMEOUT_MAX`` (about 9.2e9 s on Linux) with
``OverflowError: timestamp out of range for platform time_t``. Every duration a user gives
is bounded by ``policy.MAX_SECONDS`` (365 days) when it is validated, every wait is clamped,
and a watcher thread survives an exception nothing expected.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pytest

from cache_settings import ConfigurationError, Node, memcached
from cache_settings.attempt import Attempt, run, wait_time
from cache_settings.cli import main
from cache_settings.policy import MAX_SECONDS, Policy
from cache_settings.sources import Traits
from cache_settings.watch import Watcher
from tests.helpers import wait_until

WATCH_LOGGER = "cache_settings.watch"


@pytest.mark.parametrize(
    ("source", "keyword", "value"),
    [
        ("consul://127.0.0.1:1/memcached", "deadline", 1e10),
        ("file:///tmp/cache-settings-nodes", "refresh", 1e12),
        ("consul://127.0.0.1:1/memcached", "max_age", 1e300),
    ],
)
def test_memcached__seconds_past_the_limit_are_a_configuration_error(
    source: str, keyword: str, value: float
) -> None:
    with pytest.raises(ConfigurationError, match=rf"{keyword} must be .* at most 31536000"):
        memcached(source, **{keyword: value})  # type: ignore[arg-type]


def test_policy__the_limit_itself_is_accepted() -> None:
    assert Policy(deadline=MAX_SECONDS, refresh=MAX_SECONDS).deadline == MAX_SECONDS
    assert MAX_SECONDS < threading.TIMEOUT_MAX


@pytest.mark.parametrize("value", ["1e308", "1e10", "inf"])
def test_cli__deadline_past_the_limit_is_a_one_line_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["resolve", "consul://127.0.0.1:1/memcached", "--deadline", value])

    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [
        "cache-settings resolve: error: argument --deadline: expected a positive number of "
        f"seconds, at most 31536000 (365 days), not {value!r}"
    ]


def test_attempt__a_timeout_past_what_threading_waits_still_runs() -> None:
    """An Attempt is not validated; its wait is clamped to threading.TIMEOUT_MAX."""
    assert run(Attempt("test://x", 1e12), lambda: 42) == 42


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(1e300, threading.TIMEOUT_MAX), (float("inf"), threading.TIMEOUT_MAX), (-1.0, 0.0),
     (float("nan"), 0.0), (0.5, 0.5)],
)  # fmt: skip
def test_wait_time__clamps_to_what_threading_accepts(seconds: float, expected: float) -> None:
    assert wait_time(seconds) == expected


def test_watcher__blocking_timeout_past_the_limit_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="blocking_timeout must be"):
        Watcher(Broken([Node("10.50.0.1")]), Policy(refresh=1), blocking_timeout=1e12)


@dataclass
class Broken:
    """A source whose ``traits`` raise while ``failing``: an error no guard of ask() expects."""

    nodes: list[Node]
    failing: bool = False
    url: str = "broken://watcher"
    asked: list[float] = field(default_factory=list)

    @property
    def traits(self) -> Traits:
        if self.failing:
            raise OverflowError("timestamp out of range for platform time_t")
        return Traits()

    def resolve(self, timeout: float) -> list[Node]:
        self.asked.append(timeout)
        return list(self.nodes)


def test_watcher__survives_an_unexpected_exception_and_keeps_following(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Broken([Node("10.50.0.1")])
    watcher = Watcher(source, Policy(refresh=0.05, deadline=1), nodes=source.nodes)
    caplog.set_level(logging.ERROR, WATCH_LOGGER)
    watcher.start()
    try:
        source.failing = True
        assert wait_until(lambda: bool(caplog.records), timeout=5.0)
        source.failing = False
        source.nodes = [Node("10.50.0.2")]

        assert wait_until(lambda: watcher.generation == 1, timeout=5.0)
        assert watcher.running
        assert [node.host for node in watcher.nodes] == ["10.50.0.2"]
        record = caplog.records[0]
        assert "broken://watcher: watcher: unexpected error; starting again in" in (
            record.getMessage()
        )
        assert record.exc_info is not None
        assert record.exc_info[0] is OverflowError
    finally:
        watcher.stop(timeout=2.0)
