"""An empty Consul answer says what it may mean: the health endpoint answers [] for a
service it does not know, so a misspelt name looked like a service whose checks all fail."""

from __future__ import annotations

import pytest

from cache_settings import ResolutionError, memcached
from tests.servers.consul import ConsulAgent


def test_memcached__an_unknown_consul_service_names_what_to_check(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)

    with pytest.raises(ResolutionError) as raised:
        memcached(f"consul://{consul_agent.address}/memcahced?tag=prod", attempts=1)

    message = str(raised.value)
    assert "answered 0 node(s), fewer than min_nodes=1" in message
    assert "the agent knows no passing instance of 'memcahced' tagged 'prod'" in message
    assert "check the service name and tags" in message


def test_memcached__an_empty_answer_with_a_filter_names_the_filter_too(
    consul_agent: ConsulAgent,
) -> None:
    consul_agent.add("memcached", "10.0.0.1", 11211)
    url = f"consul://{consul_agent.address}/memcached?filter=Service.Port%3D%3D1"

    with pytest.raises(ResolutionError, match="check the service name, tags and filter"):
        memcached(url, attempts=1)
