"""The public names of the README exist, are exported, and ``__all__`` is sorted and complete."""

from __future__ import annotations

import inspect

import cache_settings
from cache_settings import sources

DESIGNED = {
    "memcached",
    "resolve",
    "parse_source",
    "Node",
    "Resolution",
    "ResolutionError",
    "SourceError",
    "ConfigurationError",
}


def test_all__is_sorted_and_every_name_exists() -> None:
    assert cache_settings.__all__ == sorted(cache_settings.__all__)
    for name in cache_settings.__all__:
        assert hasattr(cache_settings, name), name


def test_all__holds_the_designed_api_and_every_public_name() -> None:
    public = {
        name
        for name, value in vars(cache_settings).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(cache_settings.__all__) >= DESIGNED
    assert set(cache_settings.__all__) == public


def test_memcached__arguments_after_the_source_are_keyword_only() -> None:
    parameters = list(inspect.signature(cache_settings.memcached).parameters.values())

    assert parameters[0].name == "source"
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in parameters[1:])


def test_sources__every_scheme_builds_its_designed_class() -> None:
    examples = {
        "consul:///memcached": "Consul",
        "dns://mc.example:11211": "DNS",
        "dnssrv://_memcached._tcp.mc.example": "DNS",
        "dnssrvnoa://_memcached._tcp.mc.example": "DNS",
        "elasticache://cfg.example:11211": "ConfigEndpoint",
        "elasticache-api://cluster?region=eu-west-1": "ElastiCacheAPI",
        "file:///etc/memcached-nodes": "File",
        "memcached://a:1": "Static",
        "pylibmc://a:1": "Static",
        "pymemcache://a:1": "Static",
    }
    assert set(sources.SCHEMES) == {url.partition(":")[0] for url in examples}
    for url, cls in examples.items():
        assert type(cache_settings.parse_source(url)).__name__ == cls


def test_sources__classes_are_reachable_from_the_package() -> None:
    from cache_settings.sources.consul import Consul

    assert sources.Consul is Consul
    assert {sources.ConfigEndpoint.__name__, sources.ElastiCacheAPI.__name__} == {
        "ConfigEndpoint",
        "ElastiCacheAPI",
    }
    assert sources.Static.__name__ == "Static"
    assert (sources.DNS.__name__, sources.File.__name__) == ("DNS", "File")
