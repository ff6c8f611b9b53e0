"""Policy: one validated value for attempts, deadline, min_nodes, max_age, snapshot, refresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cache_settings import ConfigurationError, ResolutionError, memcached, resolve
from cache_settings.attempt import DEFAULT_MAX_REPLY_SIZE
from cache_settings.cli import main
from cache_settings.policy import OPTION_KEYS, Policy
from tests.servers.consul import ConsulAgent

BAD = [
    ("attempts", 0, "attempts must be a positive integer"),
    ("attempts", True, "attempts must be a positive integer"),
    ("attempts", 2.0, "attempts must be a positive integer"),
    ("min_nodes", -1, "min_nodes must be a positive integer"),
    ("min_nodes", "1", "min_nodes must be a positive integer"),
    ("deadline", 0, "deadline must be a positive number of seconds"),
    ("deadline", -5, "deadline must be a positive number of seconds"),
    ("deadline", float("inf"), "deadline must be a positive number of seconds"),
    ("deadline", float("nan"), "deadline must be a positive number of seconds"),
    ("deadline", False, "deadline must be a positive number of seconds"),
    ("deadline", "5", "deadline must be a positive number of seconds"),
    ("max_age", float("inf"), "max_age must be a positive number of seconds, .*, or None"),
    ("max_age", 0, "max_age must be a positive number of seconds, .*, or None"),
    ("refresh", float("nan"), "refresh must be a positive number of seconds, .*, or None"),
    ("refresh", True, "refresh must be a positive number of seconds, .*, or None"),
    # Above a year a wait no longer fits the platform's time_t (threading.TIMEOUT_MAX).
    ("deadline", 1e10, r"deadline must be .* at most 31536000 \(365 days\), not 1"),
    ("deadline", 1e308, r"at most 31536000 \(365 days\)"),
    ("max_age", 365 * 86400 + 1, r"max_age must be .* at most 31536000 \(365 days\), or None"),
    ("refresh", 1e12, r"refresh must be .* at most 31536000 \(365 days\), or None"),
    ("max_reply_size", 0, "max_reply_size must be a positive integer of bytes"),
    ("max_reply_size", 1.5, "max_reply_size must be a positive integer of bytes"),
    ("snapshot", 42, "snapshot must be the path of a JSON file"),
    ("snapshot", "", "snapshot must be the path of a JSON file"),
    ("rejoin", "drop", "rejoin must be 'flush'"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_policy__bad_values_are_configuration_errors(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Policy(**{name: value})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [b for b in BAD if b[0] not in ("refresh", "rejoin")],
)
def test_resolve__checks_its_arguments_through_the_policy(
    name: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve("memcached://10.0.0.1", **{name: value})


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_memcached__checks_its_arguments_through_the_policy(
    name: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        memcached("memcached://10.0.0.1", **{name: value})


def test_policy__numbers_become_floats_and_paths_text(tmp_path: Path) -> None:
    policy = Policy(deadline=2, max_age=60, refresh=5, snapshot=tmp_path / "n.json")

    assert policy.deadline == 2.0
    assert isinstance(policy.deadline, float)
    assert policy.refresh == 5.0
    assert policy.snapshot == str(tmp_path / "n.json")


def test_policy__options_round_trip_as_plain_data(tmp_path: Path) -> None:
    policy = Policy(attempts=5, deadline=2, max_age=60, refresh=5, snapshot=str(tmp_path / "n"))
    options = json.loads(json.dumps(policy.as_options()))
    options["no_delay"] = True  # a client option stays for the client

    again = Policy.from_options(options, where="test")

    assert again == policy
    assert options == {"no_delay": True}


def test_policy__as_options_holds_refresh_and_what_differs_from_the_defaults() -> None:
    assert Policy(refresh=30).as_options() == {"refresh": 30.0}
    assert Policy(refresh=30, min_nodes=2).as_options() == {"refresh": 30.0, "min_nodes": 2}


def test_policy__from_options_names_the_entry_and_the_key() -> None:
    with pytest.raises(ConfigurationError, match=r"^mysite: OPTIONS deadline must be a positive"):
        Policy.from_options({"deadline": "soon"}, where="mysite")


def test_policy__from_options_reads_numbers_written_as_text() -> None:
    """OPTIONS read from the environment (a CACHE_URL, os.environ) hold text."""
    options = {"refresh": "30", "deadline": " 2.5 ", "attempts": "4", "max_age": "86400"}

    policy = Policy.from_options(options, where="mysite")

    assert (policy.refresh, policy.deadline, policy.attempts) == (30.0, 2.5, 4)
    assert policy.max_age == 86400.0
    with pytest.raises(ConfigurationError, match=r"attempts must be a positive integer"):
        Policy.from_options({"attempts": "3.5"}, where="mysite")
    with pytest.raises(ConfigurationError, match=r"at most 31536000"):
        Policy.from_options({"refresh": "1e12"}, where="mysite")


def test_max_reply_size__a_keyword_of_memcached_resolve_and_the_cli(
    consul_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    """Errors say "raise max_reply_size": every entry point takes it (keyword-only)."""
    for number in range(20):
        consul_agent.add("memcached", f"10.40.0.{number}", 11211)
    url = f"consul://{consul_agent.address}/memcached"

    with pytest.raises(ResolutionError, match="reply larger than 1024 bytes"):
        resolve(url, max_reply_size=1024, attempts=1)
    with pytest.raises(ResolutionError, match="reply larger than 1024 bytes"):
        memcached(url, max_reply_size=1024, attempts=1)
    entry = memcached(url, max_reply_size=1 << 20, refresh=30)

    assert entry["OPTIONS"]["max_reply_size"] == 1 << 20
    assert len(resolve(url, max_reply_size=1 << 20).nodes) == 20
    assert main(["resolve", url, "--attempts", "1", "--max-reply-size", "1024"]) == 1
    assert "reply larger than 1024 bytes" in capsys.readouterr().err
    assert main(["resolve", url, "--max-reply-size", "1048576"]) == 0


def test_policy__option_keys_are_documented() -> None:
    assert OPTION_KEYS == (
        "attempts",
        "deadline",
        "max_age",
        "max_reply_size",
        "min_nodes",
        "refresh",
        "rejoin",
        "snapshot",
    )
    assert Policy().max_reply_size == DEFAULT_MAX_REPLY_SIZE


def test_policy__a_directory_is_no_snapshot(tmp_path: Path) -> None:
    """snapshot.check_snapshot_path is applied where the policy is validated, once."""
    with pytest.raises(ConfigurationError, match="directory"):
        Policy(snapshot=str(tmp_path))
    with pytest.raises(ConfigurationError, match="directory"):
        memcached("memcached://10.0.0.1", snapshot=tmp_path / "var" / "..")
