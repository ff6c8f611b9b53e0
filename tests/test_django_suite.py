"""Django's own memcached cache behaviour, with the OPTIONS that memcached() emits.

Django's test suite is not shipped in its wheel, so this module restates the memcached
tests of Django 5.2's ``tests/cache/tests.py`` (``BaseCacheTests``, ``BaseMemcachedTests``,
``PyLibMCCacheTests``, ``PyMemcacheCacheTests``) as our own tests: same operations, same
expectations, run for each client library, with Django's stock backend and with our
refreshing one (``refresh=N``), against three real memcached daemons, with the CACHES
entries built by :func:`cache_settings.memcached` and nothing else. Cull tests do not
apply to memcached (Django excludes them too); tests that patch Django's internals are
replaced by the same checks over real sockets. The tests that write their own
``LOCATION`` or ``OPTIONS`` run against the refreshing backends too, as Django's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import signals
from django.core.cache import cache as default_cache
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache, InvalidCacheKey
from django.test import override_settings

from cache_settings import memcached
from cache_settings.policy import OPTION_KEYS
from cache_settings.settings import client_defaults
from tests.servers.memcached import MemcachedServer

CLIENTS = ["pylibmc", "pymemcache"]
MAX_VALUE_LENGTH = 2**20  # memcached's default item size limit (-I 1m)


def _key_func(key: str, key_prefix: str, version: int) -> str:
    # Django's tests/cache/tests.py custom_key_func: a different key layout.
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError()


def _function() -> int:
    return 42


class _Class:
    pass


@pytest.fixture(params=CLIENTS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["stock", "refreshing"])
def kind(request: pytest.FixtureRequest) -> str:
    """Django's own backend, or ours that follows the source (``refresh=N``)."""
    return str(request.param)


@pytest.fixture
def entry(backend: str, kind: str, fresh_memcached_nodes: list[MemcachedServer]) -> dict[str, Any]:
    """The default entry memcached() makes for the three nodes, as Django will see it."""
    url = "memcached://" + ",".join(server.location for server in fresh_memcached_nodes)
    refresh = 60 if kind == "refreshing" else None
    made = dict(memcached(url, backend=backend, refresh=refresh))  # type: ignore[arg-type]
    package = "cache_settings.backends" if refresh else "django.core.cache.backends.memcached"
    assert (
        made["BACKEND"]
        == f"{package}.{'PyLibMCCache' if backend == 'pylibmc' else 'PyMemcacheCache'}"
    )
    return made


def _caches_setting(entry: dict[str, Any], **params: Any) -> dict[str, dict[str, Any]]:
    # Django's caches_setting_for_tests(): the same entry under the aliases the tests use.
    base = {**entry, **params}
    return {
        "default": base,
        "prefix": {**base, "KEY_PREFIX": f"cacheprefix{base.get('KEY_PREFIX', '')}"},
        "v2": {**base, "VERSION": 2},
        "custom_key": {**base, "KEY_FUNCTION": _key_func},
        "custom_key2": {**base, "KEY_FUNCTION": f"{__name__}._key_func"},
    }


@pytest.fixture
def cache(entry: dict[str, Any]) -> Iterator[BaseCache]:
    """``django.core.cache.cache`` with CACHES built from our entry; cleared after the test."""
    with override_settings(CACHES=_caches_setting(entry)):
        # The backend object itself, not the per-context proxy: the async tests run it in
        # another context, and it must be the one that override_settings closes.
        backend = caches["default"]
        try:
            yield backend
        finally:
            backend.clear()
    # override_settings' exit closes every cache (django.test.signals.clear_cache_handlers).


# --- BaseCacheTests --------------------------------------------------------------------


def test_defaults__are_in_the_entry(backend: str, entry: dict[str, Any]) -> None:
    """The battery below runs with exactly the client defaults, not Django's bare ones."""
    options = {k: v for k, v in entry["OPTIONS"].items() if k not in OPTION_KEYS}
    assert options == client_defaults(backend)


def test_simple__set_then_get(cache: BaseCache) -> None:
    cache.set("key", "value")
    assert cache.get("key") == "value"


def test_default_used_when_none_is_set__none_is_a_value(cache: BaseCache) -> None:
    cache.set("key_default_none", None)
    assert cache.get("key_default_none", default="default") is None


def test_add__does_not_overwrite(cache: BaseCache) -> None:
    assert cache.add("addkey1", "value") is True
    assert cache.add("addkey1", "newvalue") is False
    assert cache.get("addkey1") == "value"


def test_prefix__keeps_aliases_apart(cache: BaseCache) -> None:
    cache.set("somekey", "value")
    assert caches["prefix"].has_key("somekey") is False
    caches["prefix"].set("somekey", "value2")
    assert cache.get("somekey") == "value"
    assert caches["prefix"].get("somekey") == "value2"


def test_non_existent__returns_default(cache: BaseCache) -> None:
    assert cache.get("does_not_exist") is None
    assert cache.get("does_not_exist", "bang!") == "bang!"


def test_get_many__returns_only_hits(cache: BaseCache) -> None:
    cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
    assert cache.get_many(iter(["a"])) == {"a": "a"}


def test_delete__returns_whether_a_key_was_deleted(cache: BaseCache) -> None:
    cache.set("key1", "spam")
    cache.set("key2", "eggs")
    assert cache.delete("key1") is True
    assert cache.get("key1") is None
    assert cache.get("key2") == "eggs"
    assert cache.delete("key1") is False
    assert cache.delete("nonexistent_key") is False


def test_has_key__and_in(cache: BaseCache) -> None:
    cache.set("hello1", "goodbye1")
    cache.set("no_expiry", "here", None)
    cache.set("null", None)
    assert cache.has_key("hello1") is True
    assert cache.has_key("goodbye1") is False
    assert cache.has_key("no_expiry") is True
    assert cache.has_key("null") is True
    assert "hello1" in cache
    assert "goodbye1" not in cache


def test_incr__counts_and_raises_on_missing_key(cache: BaseCache) -> None:
    cache.set("answer", 41)
    assert cache.incr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.incr("answer", -10) == 42
    with pytest.raises(ValueError):
        cache.incr("does_not_exist")
    with pytest.raises(ValueError):
        cache.incr("does_not_exist", -1)
    cache.set("null", None)
    with pytest.raises(_incr_decr_type_error(cache)):
        cache.incr("null")


def test_decr__counts_and_raises_on_missing_key(cache: BaseCache) -> None:
    cache.set("answer", 43)
    assert cache.decr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.decr("answer", 10) == 32
    assert cache.decr("answer", -10) == 42
    with pytest.raises(ValueError):
        cache.decr("does_not_exist")
    with pytest.raises(ValueError):
        cache.incr("does_not_exist", -1)
    cache.set("null", None)
    with pytest.raises(_incr_decr_type_error(cache)):
        cache.decr("null")


def _incr_decr_type_error(cache: BaseCache) -> type[Exception]:
    # Django's PyLibMCCacheTests / PyMemcacheCacheTests.incr_decr_type_error.
    lib: Any = cache._lib  # type: ignore[attr-defined]
    if lib.__name__ == "pylibmc":
        return lib.ClientError  # type: ignore[no-any-return]
    return lib.exceptions.MemcacheClientError  # type: ignore[no-any-return]


def test_data_types__round_trip(cache: BaseCache) -> None:
    stuff = {
        "string": "this is a string",
        "int": 42,
        "bool": True,
        "list": [1, 2, 3, 4],
        "tuple": (1, 2, 3, 4),
        "dict": {"A": 1, "B": 2},
        "function": _function,
        "class": _Class,
    }
    cache.set("stuff", stuff)
    assert cache.get("stuff") == stuff


def test_expiration__values_expire(cache: BaseCache) -> None:
    cache.set("expire1", "very quickly", 1)
    cache.set("expire2", "very quickly", 1)
    cache.set("expire3", "very quickly", 1)
    time.sleep(2)
    assert cache.get("expire1") is None
    assert cache.add("expire2", "newvalue") is True
    assert cache.get("expire2") == "newvalue"
    assert cache.has_key("expire3") is False


def test_touch__extends_or_shortens_expiry(cache: BaseCache) -> None:
    cache.set("expire1", "very quickly", timeout=1)
    assert cache.touch("expire1", timeout=4) is True
    time.sleep(2)
    assert cache.has_key("expire1") is True
    time.sleep(3)
    assert cache.has_key("expire1") is False
    cache.set("expire2", "very quickly", timeout=1)
    assert cache.touch("expire2", timeout=None) is True
    time.sleep(2)
    assert cache.has_key("expire2") is True
    assert cache.touch("nonexistent") is False


def test_unicode__keys_and_values(cache: BaseCache) -> None:
    stuff = {
        "ascii": "ascii_value",
        "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
        "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
        "ascii2": {"x": 1},
    }
    for key, value in stuff.items():
        cache.set(key, value)
        assert cache.get(key) == value
    for key, value in stuff.items():
        cache.delete(key)
        cache.add(key, value)
        assert cache.get(key) == value
    cache.delete_many(stuff)
    cache.set_many(stuff)
    for key, value in stuff.items():
        assert cache.get(key) == value


def test_binary_string__round_trips(cache: BaseCache) -> None:
    value = "value_to_be_compressed"
    compressed = zlib.compress(value.encode())
    cache.set("binary1", compressed)
    cache.add("binary1-add", compressed)
    cache.set_many({"binary1-set_many": compressed})
    for key in ("binary1", "binary1-add", "binary1-set_many"):
        result = cache.get(key)
        assert result == compressed
        assert zlib.decompress(result).decode() == value


def test_set_many__stores_and_returns_no_failed_keys(cache: BaseCache) -> None:
    assert cache.set_many({"key1": "spam", "key2": "eggs"}) == []
    assert cache.get("key1") == "spam"
    assert cache.get("key2") == "eggs"
    assert cache.set_many({}) == []


def test_set_many_expiration__values_expire(cache: BaseCache) -> None:
    cache.set_many({"key1": "spam", "key2": "eggs"}, 1)
    time.sleep(2)
    assert cache.get("key1") is None
    assert cache.get("key2") is None


def test_delete_many__removes_only_those(cache: BaseCache) -> None:
    cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
    cache.delete_many(["key1", "key2"])
    assert cache.get("key1") is None
    assert cache.get("key2") is None
    assert cache.get("key3") == "ham"
    cache.delete_many([])  # no keys: no error


def test_clear__empties_every_node(cache: BaseCache) -> None:
    cache.set_many({f"key{i}": i for i in range(20)})
    cache.clear()
    assert cache.get_many([f"key{i}" for i in range(20)]) == {}


def test_long_timeout__over_30_days_is_absolute(cache: BaseCache) -> None:
    thirty_days_and_a_second = 60 * 60 * 24 * 30 + 1
    cache.set("key1", "eggs", thirty_days_and_a_second)
    cache.add("key2", "ham", thirty_days_and_a_second)
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, thirty_days_and_a_second)
    assert cache.get_many(["key1", "key2", "key3", "key4"]) == {
        "key1": "eggs",
        "key2": "ham",
        "key3": "sausage",
        "key4": "lobster bisque",
    }


def test_forever_timeout__none_caches_forever(cache: BaseCache) -> None:
    cache.set("key1", "eggs", None)
    assert cache.get("key1") == "eggs"
    cache.add("key2", "ham", None)
    assert cache.get("key2") == "ham"
    assert cache.add("key1", "new eggs", None) is False
    assert cache.get("key1") == "eggs"
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, None)
    assert cache.get("key3") == "sausage"
    assert cache.get("key4") == "lobster bisque"
    cache.set("key5", "belgian fries", timeout=1)
    assert cache.touch("key5", timeout=None) is True
    time.sleep(2)
    assert cache.get("key5") == "belgian fries"


def test_zero_timeout__does_not_cache(cache: BaseCache) -> None:
    cache.set("key1", "eggs", 0)
    assert cache.get("key1") is None
    cache.add("key2", "ham", 0)
    assert cache.get("key2") is None
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, 0)
    assert cache.get("key3") is None
    assert cache.get("key4") is None
    cache.set("key5", "belgian fries", timeout=5)
    cache.touch("key5", timeout=0)
    assert cache.get("key5") is None
    # The zero timeouts marked no node as failed: every node still answers.
    cache.set("after", "zero")
    assert cache.get("after") == "zero"


def test_float_timeout__works(cache: BaseCache) -> None:
    cache.set("key1", "spam", 100.2)
    assert cache.get("key1") == "spam"


INVALID_KEYS = [
    pytest.param(
        "key with spaces and 清",
        "Cache key contains characters that will cause errors if used with memcached: %r",
        id="characters",
    ),
    pytest.param(
        "a" * 250 + "清",
        "Cache key will cause errors if used with memcached: %r (longer than 250)",
        id="length",
    ),
    pytest.param(
        "a" * 248,  # make_key() adds ":1:", going over 250
        "Cache key will cause errors if used with memcached: %r (longer than 250)",
        id="version-length",
    ),
]


@pytest.mark.parametrize(("key", "message"), INVALID_KEYS)
def test_invalid_key__raises_invalid_cache_key_for_every_operation(
    cache: BaseCache, key: str, message: str
) -> None:
    """memcached backends raise (other backends merely warn), Django's BaseMemcachedTests."""
    expected = message % cache.make_key(key)
    operations: list[tuple[str, list[Any]]] = [
        ("add", [key, 1]),
        ("get", [key]),
        ("set", [key, 1]),
        ("incr", [key]),
        ("decr", [key]),
        ("touch", [key]),
        ("delete", [key]),
        ("get_many", [[key, "b"]]),
        ("set_many", [{key: 1, "b": 2}]),
        ("delete_many", [[key, "b"]]),
    ]
    for operation, args in operations:
        with pytest.raises(InvalidCacheKey) as raised:
            getattr(cache, operation)(*args)
        assert str(raised.value) == expected, operation


def test_cache_versioning__get_set_and_aliases(cache: BaseCache) -> None:
    v2 = caches["v2"]
    cache.set("answer1", 42)
    assert cache.get("answer1", version=1) == 42
    assert cache.get("answer1", version=2) is None
    assert v2.get("answer1") is None
    assert v2.get("answer1", version=1) == 42
    cache.set("answer2", 42, version=2)
    assert cache.get("answer2") is None
    assert v2.get("answer2") == 42
    v2.set("answer4", 42, version=1)
    assert cache.get("answer4") == 42
    assert v2.get("answer4") is None


def test_cache_versioning__incr_decr_and_versions(cache: BaseCache) -> None:
    cache.set("answer1", 37, version=1)
    cache.set("answer1", 42, version=2)
    assert cache.incr("answer1") == 38
    assert cache.decr("answer1", version=2) == 41
    assert cache.incr_version("answer1", version=2) == 3
    assert cache.get("answer1", version=2) is None
    assert cache.get("answer1", version=3) == 41
    assert cache.decr_version("answer1", version=3) == 2
    assert cache.get("answer1", version=2) == 41
    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")
    with pytest.raises(ValueError):
        cache.decr_version("does_not_exist")


def test_cache_versioning__get_set_many(cache: BaseCache) -> None:
    cache.set_many({"ford1": 37, "arthur1": 42})
    assert cache.get_many(["ford1", "arthur1"]) == {"ford1": 37, "arthur1": 42}
    assert cache.get_many(["ford1", "arthur1"], version=2) == {}
    caches["v2"].set_many({"ford2": 37, "arthur2": 42})
    assert cache.get_many(["ford2", "arthur2"], version=2) == {"ford2": 37, "arthur2": 42}


def test_custom_key_func__keeps_keys_apart(cache: BaseCache) -> None:
    cache.set("answer1", 42)
    assert caches["custom_key"].get("answer1") is None
    caches["custom_key"].set("answer2", 42)
    assert cache.get("answer2") is None
    assert caches["custom_key2"].get("answer2") == 42


def test_cache_write_unpicklable_object__raises(cache: BaseCache) -> None:
    with pytest.raises(pickle.PickleError):
        cache.add("unpicklable", Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.set("unpicklable", Unpicklable())
    # The failed pickle is a programming error, not a node failure: the nodes stay in use.
    cache.set("after", "pickle")
    assert cache.get("after") == "pickle"


def test_get_or_set__stores_defaults_and_callables(cache: BaseCache) -> None:
    assert cache.get("projector") is None
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("null", None) is None
    # Previous get_or_set() stored None: a second one returns it, not the new default.
    assert cache.get_or_set("null", "default") is None
    assert cache.get_or_set("mykey", lambda: "value") == "value"
    assert cache.get_or_set("mykey", lambda: "other") == "value"
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    with pytest.raises(TypeError):
        cache.get_or_set("brian")  # type: ignore[call-arg]
    assert cache.get("brian", version=1) is None
    assert cache.get("brian", version=2) == 1979


# --- BaseMemcachedTests ---------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 31536000], ids=["never", "one-year"])
def test_default_timeout__never_or_far_future(entry: dict[str, Any], timeout: int | None) -> None:
    """Regression test for Django ticket #22845, with TIMEOUT in the entry."""
    with override_settings(CACHES=_caches_setting(entry, TIMEOUT=timeout)):
        default_cache.set("infinite_foo", "bar")
        assert default_cache.get("infinite_foo") == "bar"
        default_cache.clear()


def test_memcached_deletes_key_on_failed_set__too_large_value(cache: BaseCache) -> None:
    """A value over memcached's 1 MB limit fails; the old value must not survive it."""
    cache.set("small_value", "a")
    assert cache.get("small_value") == "a"
    large_value = "a" * (MAX_VALUE_LENGTH + 1)
    # Django's test: both clients raise here, which is fine; what matters is the old value.
    with contextlib.suppress(Exception):
        cache.set("small_value", large_value)
    assert cache.get("small_value") in (None, large_value)
    # The refused value marked no node as failed: a normal value is stored right after.
    cache.set("small_value", "b")
    assert cache.get("small_value") == "b"


def test_location_multiple_servers__every_spelling(entry: dict[str, Any]) -> None:
    """A plain LOCATION under our BACKEND too: Django's stock behaviour, exactly."""
    params = {"BACKEND": entry["BACKEND"]}
    for location in (
        ["server1.tld", "server2:11211"],
        "server1.tld;server2:11211",
        "server1.tld,server2:11211",
    ):
        with override_settings(CACHES={"default": {**params, "LOCATION": location}}):
            assert default_cache._servers == ["server1.tld", "server2:11211"]  # type: ignore[attr-defined]


CLIENT_SERVERS = [
    ("unix:/run/memcached/socket", "/run/memcached/socket"),
    ("/run/memcached/socket", "/run/memcached/socket"),
    ("localhost", "localhost"),
    ("localhost:11211", "localhost:11211"),
    ("[::1]", "[::1]"),
    ("[::1]:11211", "[::1]:11211"),
    ("127.0.0.1", "127.0.0.1"),
    ("127.0.0.1:11211", "127.0.0.1:11211"),
]


@pytest.mark.parametrize(("location", "expected"), CLIENT_SERVERS)
def test_pylibmc_client_servers__as_django_reads_location(
    kind: str, location: str, expected: str
) -> None:
    """Django's test_pylibmc_client_servers: an entry with only BACKEND and LOCATION."""
    made = memcached("memcached://a:1", backend="pylibmc", refresh=5 if kind != "stock" else None)
    with override_settings(CACHES={"default": {"BACKEND": made["BACKEND"], "LOCATION": location}}):
        assert default_cache.client_servers == [expected]  # type: ignore[attr-defined]


def test_own_options__replace_ours_and_keep_the_source(
    backend: str, entry: dict[str, Any], fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    """Django's test_pylibmc_options / test_pymemcache_options: OPTIONS replaced whole.

    With a refreshing entry, LOCATION is still the source URL, now under the default
    policy; the client gets exactly the OPTIONS given.
    """
    if backend == "pylibmc":
        options: dict[str, Any] = {"binary": True, "behaviors": {"tcp_nodelay": True}}
    else:
        options = {"no_delay": True}
    with override_settings(CACHES=_caches_setting(entry, OPTIONS=options)):
        client: Any = default_cache._cache  # type: ignore[attr-defined]
        if backend == "pylibmc":
            assert client.binary is True
            assert client.behaviors["tcp_nodelay"] == 1
        else:
            assert client.default_kwargs["no_delay"] is True
        default_cache.set("own-options", 1)
        assert default_cache.get("own-options") == 1
        servers = sorted(server.location for server in fresh_memcached_nodes)
        assert sorted(default_cache.client_servers) == servers  # type: ignore[attr-defined]
        default_cache.clear()


def test_close__before_first_use_works_and_asks_no_source(entry: dict[str, Any]) -> None:
    """Django's test_close runs on a fresh backend: closing it must not fail or resolve."""
    with override_settings(CACHES=_caches_setting(entry)):
        backend = caches["default"]
        signals.request_finished.send(sender=__name__)
        watcher = getattr(backend, "_watcher", None)
        assert watcher is None or not watcher.running
        backend.set("after-close", 1)
        assert backend.get("after-close") == 1
        backend.clear()


def test_close__disconnects_pymemcache_only(
    backend: str, cache: BaseCache, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    """request_finished closes pymemcache's sockets; libmemcached keeps its own (Django)."""
    cache.set_many({f"key{i}": i for i in range(30)})  # touches every node
    before = [int(server.stats()["curr_connections"]) for server in fresh_memcached_nodes]

    signals.request_finished.send(sender=__name__)

    deadline = time.monotonic() + 2
    while True:
        after = [int(server.stats()["curr_connections"]) for server in fresh_memcached_nodes]
        if backend == "pylibmc" or sum(after) < sum(before) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if backend == "pymemcache":
        assert [b - a for b, a in zip(before, after, strict=True)] == [1, 1, 1]
    else:
        assert after == before
    assert cache.get("key0") == 0  # and the cache works after closing


def test_client_options__user_options_reach_the_client(
    backend: str, fresh_memcached_nodes: list[MemcachedServer]
) -> None:
    """Django's test_pylibmc_options / test_pymemcache_options, through memcached()."""
    url = "memcached://" + ",".join(server.location for server in fresh_memcached_nodes)
    if backend == "pylibmc":
        options: dict[str, Any] = {"binary": True, "behaviors": {"tcp_nodelay": False}}
    else:
        options = {"no_delay": False, "dead_timeout": 5}
    entry = dict(memcached(url, backend=backend, options=options))  # type: ignore[arg-type]
    with override_settings(CACHES={"default": entry}):
        client: Any = default_cache._cache  # type: ignore[attr-defined]
        if backend == "pylibmc":
            assert client.binary is True
            assert client.behaviors["tcp_nodelay"] == 0
            assert client.behaviors["_poll_timeout"] == 500  # the other defaults remain
        else:
            assert client.default_kwargs["no_delay"] is False
            assert client.dead_timeout == 5
            assert client.default_kwargs["timeout"] == 0.5


def test_pymemcache_highest_pickle_version__kept(
    fresh_memcached_nodes: list[MemcachedServer],
) -> None:
    """Our defaults leave Django's serde (highest pickle protocol) in place."""
    url = "memcached://" + ",".join(server.location for server in fresh_memcached_nodes)
    with override_settings(CACHES={"default": dict(memcached(url, backend="pymemcache"))}):
        client: Any = default_cache._cache  # type: ignore[attr-defined]
        serde = client.default_kwargs["serde"]
        assert serde._serialize_func.keywords["pickle_version"] == pickle.HIGHEST_PROTOCOL
        for node_client in client.clients.values():
            assert node_client.serde is serde


def test_async_operations__mirror_the_sync_ones(cache: BaseCache) -> None:
    """Django's async cache API (aget, aset, …) over the same client."""

    async def run() -> None:
        await cache.aset("key", "value")
        assert await cache.aget("key") == "value"
        assert await cache.aadd("key", "other") is False
        assert await cache.ahas_key("key") is True
        await cache.aset_many({"a": 1, "b": 2})
        assert await cache.aget_many(["a", "b", "c"]) == {"a": 1, "b": 2}
        assert await cache.aincr("a") == 2
        assert await cache.adecr("b") == 1
        with pytest.raises(ValueError):
            await cache.aincr("does_not_exist")
        assert await cache.atouch("key", 10) is True
        assert await cache.aget_or_set("new", "made") == "made"
        assert await cache.adelete("key") is True
        assert await cache.adelete("key") is False
        await cache.adelete_many(["a", "b"])
        assert await cache.aget_many(["a", "b"]) == {}
        await cache.aclear()
        assert await cache.aget("new") is None
        await cache.aclose()

    asyncio.run(run())
