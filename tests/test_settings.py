"""memcached(): the CACHES entry, and Django caches built from it over real memcached."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import CacheHandler

from cache_settings import ConfigurationError, ResolutionError, SourceError, memcached
from cache_settings.capabilities import ejects_silent_nodes
from cache_settings.entries import entries, recorded
from cache_settings.nodes import Node
from cache_settings.snapshot import write_snapshot
from cache_settings.sources import Traits
from tests.helpers import django_cache
from tests.servers.memcached import MemcachedServer

CLIENTS = ["pylibmc", "pymemcache"]


def static_url(servers: list[MemcachedServer]) -> str:
    return "memcached://" + ",".join(server.location for server in servers)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("timeout", "5m", "timeout must be seconds"),
        ("timeout", float("nan"), "timeout must be seconds"),
        ("timeout", True, "timeout must be seconds"),
        ("timeout", "\u00b2", "timeout must be seconds"),  # str.isdigit() says yes, int() no
        ("version", "2", "version must be an integer"),
        ("key_prefix", 7, "key_prefix must be a string"),
        ("key_function", 5, "key_function must be a callable or the dotted path"),
    ],
)
def test_memcached__a_django_key_django_would_misread__configuration_error(
    key: str, value: object, words: str
) -> None:
    """Django turns an unreadable TIMEOUT into 300 s without a word, and fails on a VERSION or
    KEY_FUNCTION of the wrong type at the first cache operation: refused at settings time."""
    with pytest.raises(ConfigurationError, match=words):
        memcached("memcached://10.0.0.1:11211", **{key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [("timeout", None), ("timeout", 0), ("timeout", -1), ("timeout", 2.5), ("timeout", " 300 "),
     ("version", 3), ("key_prefix", ""), ("key_function", "mysite.cache.make_key"),
     ("key_function", lambda key, prefix, version: key)],
)  # fmt: skip
def test_memcached__django_keys_as_django_reads_them__kept(key: str, value: object) -> None:
    entry = memcached("memcached://10.0.0.1:11211", **{key: value})

    assert entry[key.upper()] == value  # type: ignore[literal-required]


@pytest.mark.parametrize("backend", CLIENTS)
def test_memcached__entry_stores_and_reads_through_django(
    backend: str, memcached_nodes: list[MemcachedServer]
) -> None:
    entry = memcached(static_url(memcached_nodes), backend=backend, key_prefix="site", timeout=60)  # type: ignore[arg-type]

    django_class = "PyLibMCCache" if backend == "pylibmc" else "PyMemcacheCache"
    assert entry["BACKEND"] == f"django.core.cache.backends.memcached.{django_class}"
    assert entry["LOCATION"] == sorted(server.location for server in memcached_nodes)
    assert entry["KEY_PREFIX"] == "site"
    assert entry["TIMEOUT"] == 60
    with django_cache(dict(entry)) as cache:
        key = f"k-{uuid.uuid4().hex}"
        cache.set(key, {"value": [1, 2, 3]})
        assert cache.get(key) == {"value": [1, 2, 3]}
        counter = f"{key}-n"
        assert cache.add(counter, 1) is True
        assert cache.incr(counter) == 2
        assert cache.get(counter) == 2


def test_memcached__pylibmc_defaults_to_text_protocol_and_ketama() -> None:
    entry = memcached("memcached://10.0.0.1:11211", backend="pylibmc")

    assert entry["OPTIONS"]["binary"] is False
    assert entry["OPTIONS"]["behaviors"]["ketama"] is True


def test_memcached__options_override_defaults_and_merge_behaviors() -> None:
    entry = memcached(
        "memcached://10.0.0.1:11211",
        options={"binary": True, "behaviors": {"ketama": False, "tcp_nodelay": True}},
    )

    assert entry["OPTIONS"]["binary"] is True
    assert entry["OPTIONS"]["behaviors"]["ketama"] is False
    assert entry["OPTIONS"]["behaviors"]["tcp_nodelay"] is True


def test_memcached__url_scheme_chooses_the_client() -> None:
    assert memcached("pymemcache://10.0.0.1")["BACKEND"].endswith("PyMemcacheCache")
    assert memcached("pylibmc://10.0.0.1")["BACKEND"].endswith("PyLibMCCache")
    # With no client named, pylibmc unless it cannot eject a silent node here (test_clients).
    default = "PyLibMCCache" if ejects_silent_nodes() else "PyMemcacheCache"
    assert memcached("memcached://10.0.0.1")["BACKEND"].endswith(default)


def test_memcached__tls_selects_pymemcache_with_a_verifying_context() -> None:
    entry = memcached("memcached://cache.example:11211?tls=true")

    assert entry["BACKEND"].endswith("PyMemcacheCache")
    assert entry["LOCATION"] == ["cache.example:11211"]
    context = entry["OPTIONS"]["tls_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_memcached__tls_with_pylibmc_names_pymemcache() -> None:
    with pytest.raises(ConfigurationError, match='pylibmc cannot speak TLS.*backend="pymemcache"'):
        memcached("memcached://cache.example?tls=true", backend="pylibmc")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "python-memcached"}, "backend must be 'pylibmc' or 'pymemcache'"),
        ({"on_failure": "ignore"}, "on_failure must be"),
        ({"options": ["binary"]}, "options must be a dict"),
        (
            {"TIMEOUT": 5},
            "unknown argument\\(s\\) 'TIMEOUT' \\(did you mean 'timeout'\\?\\); Django's keys",
        ),
        ({"location": "x"}, "unknown argument\\(s\\) 'location' \\(did you mean 'source'\\?\\)"),
        (
            {"backnd": "pymemcache"},
            "unknown argument\\(s\\) 'backnd' \\(did you mean 'backend'\\?\\)$",
        ),
    ],
)
def test_memcached__bad_arguments_name_the_problem(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        memcached("memcached://10.0.0.1", **kwargs)


def test_memcached__a_list_of_nodes_says_how_to_write_them() -> None:
    """A list is a chain of source URLs; host:port items say how a node list is written."""
    with pytest.raises(ConfigurationError) as caught:
        memcached(["10.0.0.1:11211", "10.0.0.2:11211"])

    assert (
        "['10.0.0.1:11211', '10.0.0.2:11211'] lists nodes; for a fixed list of these nodes "
        "write memcached://10.0.0.1:11211,10.0.0.2:11211;"
    ) in str(caught.value)


def test_memcached__a_second_positional_argument_says_to_pass_it_by_keyword() -> None:
    """memcached(URL, "var/nodes.json") was Python's TypeError, naming neither fix nor value."""
    call: Any = memcached  # the mistake, as a settings file makes it

    with pytest.raises(ConfigurationError) as caught:
        call("memcached://10.0.0.1", "var/nodes.json")

    assert str(caught.value) == (
        "memcached() takes the source as its only positional argument, and got 1 more "
        "('var/nodes.json'); pass the others by keyword, as snapshot=PATH, refresh=SECONDS, ..."
    )


def test_memcached__no_source_says_what_the_first_argument_is() -> None:
    call: Any = memcached

    with pytest.raises(ConfigurationError, match="needs the source as its first argument"):
        call(snapshot="var/nodes.json")


def test_memcached__given_as_backend_says_it_returns_an_entry() -> None:
    """BACKEND "cache_settings.memcached": Django built it as memcached(LOCATION, params)."""
    caches = CacheHandler(
        {"default": {"BACKEND": "cache_settings.memcached", "LOCATION": "consul:///memcached"}}
    )

    with pytest.raises(ConfigurationError) as caught:
        caches["default"]

    assert "cache_settings.memcached is not a BACKEND: it returns a whole CACHES entry" in str(
        caught.value
    )
    assert "BACKEND 'cache_settings.backends.PyLibMCCache'" in str(caught.value)


def test_memcached__backend_conflicting_with_url_scheme_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="asks for pymemcache but backend='pylibmc'"):
        memcached("pymemcache://10.0.0.1", backend="pylibmc")


class Down:
    url = "down://registry"
    traits = Traits()

    def resolve(self, timeout: float) -> list[Node]:
        raise SourceError(self.url, "connection refused")


@pytest.mark.parametrize(
    ("on_failure", "backend"),
    [("locmem", "locmem.LocMemCache"), ("dummy", "dummy.DummyCache")],
)
def test_memcached__on_failure_gives_a_working_local_cache(
    on_failure: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    entry = memcached(Down(), on_failure=on_failure, attempts=1, key_prefix="p")  # type: ignore[arg-type]

    assert entry["BACKEND"] == f"django.core.cache.backends.{backend}"
    assert entry["KEY_PREFIX"] == "p"
    # One log line: the source, its cause and the fallback, each said once.
    assert len(caplog.records) == 1
    assert caplog.text.count("down://registry") == 1
    assert caplog.text.count("connection refused") == 1
    assert f"; using a {on_failure} cache instead of memcached" in caplog.text
    with django_cache(dict(entry)) as cache:
        cache.set("k", "v")


def test_memcached__raises_by_default_and_never_returns_an_empty_location() -> None:
    with pytest.raises(ResolutionError, match="down://registry"):
        memcached(Down(), attempts=1)


def test_memcached__snapshot_stands_in_for_a_failing_source(tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.json"
    write_snapshot(snapshot, "down://registry", [Node("10.0.0.5", 11211)])

    entry = memcached(Down(), snapshot=snapshot, attempts=1)

    assert entry["LOCATION"] == ["10.0.0.5:11211"]
    assert entries()[-1].resolution is not None
    assert entries()[-1].resolution.origin == "snapshot"  # type: ignore[union-attr]


def moved_fraction(
    backend: str, before: list[MemcachedServer], after: list[MemcachedServer], keys: int = 2000
) -> float:
    """Store keys through *before*, read them through *after*: the misses are the moved keys."""
    prefix = uuid.uuid4().hex
    with django_cache(dict(memcached(static_url(before), backend=backend))) as cache:  # type: ignore[arg-type]
        cache.set_many({f"{prefix}-{i}": i for i in range(keys)}, timeout=300)
    with django_cache(dict(memcached(static_url(after), backend=backend))) as cache:  # type: ignore[arg-type]
        found = cache.get_many([f"{prefix}-{i}" for i in range(keys)])
    return 1 - len(found) / keys


@pytest.mark.parametrize("backend", CLIENTS)
def test_memcached__adding_an_eleventh_node_moves_few_keys(
    backend: str, eleven_memcached_nodes: list[MemcachedServer]
) -> None:
    moved = moved_fraction(backend, eleven_memcached_nodes[:10], eleven_memcached_nodes)
    print(f"{backend}: adding an 11th node moved {moved:.1%} of 2000 keys")

    # Consistent hashing moves about 1/11 (9 %) of the keys; modula hashing would move ~90 %.
    assert 0.03 < moved <= 0.15, moved


@pytest.fixture(scope="module")
def eleven_memcached_nodes(memcached_factory: Any) -> list[MemcachedServer]:
    return [memcached_factory() for _ in range(11)]


def test_memcached__user_ejection_behaviors_replace_our_remove_failed() -> None:
    default = memcached("pylibmc://10.0.0.1:11211")
    chosen = memcached("memcached://10.0.0.1:11211", options={"behaviors": {"auto_eject": False}})

    assert default["OPTIONS"]["behaviors"]["remove_failed"] == 1
    assert "remove_failed" not in chosen["OPTIONS"]["behaviors"]
    assert chosen["OPTIONS"]["behaviors"]["auto_eject"] is False
    assert chosen["OPTIONS"]["behaviors"]["ketama"] is True


class Serverless:
    """A source that learns only when it answers that its one endpoint speaks TLS."""

    url = "serverless://sessions"
    traits = Traits()

    def resolve(self, timeout: float) -> list[Node]:
        return [Node("sessions.serverless.cache.test", 6379 + 5000, tls=True)]


def test_memcached__records_the_backend_it_finally_chose() -> None:
    entry = memcached(Serverless())

    assert entry["BACKEND"].endswith("PyMemcacheCache")
    assert entries()[-1].backend == "pymemcache"


def test_memcached__the_record_grows_with_entries_not_with_imports() -> None:
    """Settings imported again (test runs, reloading servers) made the record of entries,
    kept for the command line and the checks, grow by one entry per call, for good."""
    url = f"memcached://mc-{uuid.uuid4().hex[:12]}.test:11211"  # no other test's entry
    before = len(entries())
    mark = recorded()

    for _ in range(200):
        memcached(url, backend="pymemcache")
    memcached(url, backend="pymemcache", deadline=4.0)  # another policy: another entry

    made = entries(since=mark)
    assert [entry.policy.deadline for entry in made] == [5.0, 4.0]
    assert len(entries()) == before + 2
    assert all(entry.source.url == url for entry in made)
