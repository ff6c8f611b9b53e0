"""Arguments of cache_settings.sources.Consul of the wrong kind are refused, not reread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cache_settings import ConfigurationError, parse_source
from cache_settings.sources import Consul


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"tags": "prod"}, r"tags='prod' must be a tuple"),
        ({"node_meta": {"az": "eu1a"}}, r"node_meta=.* must be a tuple"),
        ({"node_meta": ("az:eu1a",)}, r"node_meta holds 'az:eu1a'; each item is a \(key, value\)"),
        ({"node_meta": (("az", "eu1a", "x"),)}, r"each item is a \(key, value\) tuple"),
        ({"passing": "false"}, r"passing='false' must be True or False"),
        ({"verify": "false"}, r"verify='false' must be True or False"),
        ({"verify": 0}, r"verify=0 must be True or False"),
        ({"agent_tls": "false"}, r"agent_tls='false' must be True, False or None"),
        ({"status": "passing"}, r"status='passing' must be a tuple, as in status=\('passing',\)"),
    ],
)  # fmt: skip
def test_consul_arguments__wrong_kind_is_refused_naming_it(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Consul("memcached", **arguments)


@pytest.mark.parametrize(
    "arguments",
    [
        {"tags": ("",)},
        {"tags": ("prod ",)},
        {"dc": ""},
        {"dc": " eu1"},
        {"near": ""},
        {"namespace": ""},
        {"filter_expr": ""},
        {"ca": ""},
        {"cert": ""},
        {"key": " /k.pem"},
        {"node_meta": (("", "eu1a"),)},
        {"node_meta": (("az", "eu1a "),)},
    ],
)
def test_consul_arguments__empty_or_padded_text_is_refused(arguments: dict[str, Any]) -> None:
    name = next(iter(arguments))
    with pytest.raises(ConfigurationError, match=rf"consul: {name}.* white space at either end"):
        Consul("memcached", **arguments)


def test_consul_arguments__node_meta_with_empty_value_is_kept() -> None:
    # Consul's node-meta=KEY: asks for nodes whose KEY is the empty string.
    source = Consul("memcached", node_meta=(("canary", ""),), tags=["prod"])

    assert source.node_meta == (("canary", ""),)
    assert source.tags == ("prod",)
    assert source.url == "consul:///memcached?tag=prod&node-meta=canary%3A"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: parse_source("consul:///mc?tls=false&ca=/etc/ca.pem"), r"ca would be ignored"),
        (lambda: parse_source("consul:///mc?tls=false&verify=false"), r"verify=false would be"),
        (
            lambda: parse_source("consul://10.0.0.10:8500/mc?tls=false&cert=/c.pem&key=/k.pem"),
            r"cert, key would be ignored: they set HTTPS to the agent, but tls=false",
        ),
        (
            lambda: Consul("mc", agent="http://10.0.0.10:8500", ca="/etc/ca.pem"),
            r"ca would be ignored: they set HTTPS to the agent, but the agent is http://",
        ),
        (
            lambda: Consul("mc", agent="https://10.0.0.10", agent_tls=False),
            r"is https:// but agent_tls=False",
        ),
    ],
)
def test_consul_agent_tls__options_a_plain_agent_ignores_are_refused(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_consul_agent_tls__options_with_tls_or_unset_are_kept() -> None:
    # Without tls= the scheme follows CONSUL_HTTP_SSL when the source resolves.
    assert parse_source("consul:///mc?ca=/etc/ca.pem").url == "consul:///mc?ca=%2Fetc%2Fca.pem"
    source = Consul("mc", agent="https://10.0.0.10", ca="/etc/ca.pem", verify=False)
    assert source.url == "consul://10.0.0.10:8501/mc?tls=true&ca=%2Fetc%2Fca.pem&verify=false"
