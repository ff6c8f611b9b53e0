"""Fork safety: children that exit normally leave the parent's memcached connections alone.

Each case runs in a fresh interpreter (a forked pytest child that exits normally would run
the rest of the session), against a real memcached daemon, with both clients.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.servers.memcached import MemcachedServer

# The parent uses the cache, forks CHILDREN children that use it too (their own connections)
# and exit normally (interpreter finalization), then counts its own failed operations.
_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys
    import django
    from django.conf import settings
    import cache_settings

    location, backend, how, guarded = sys.argv[1:5]
    if guarded == "on":
        entry = cache_settings.memcached("memcached://" + location, backend=backend)
    else:  # stock Django, written by hand: the failure cache_settings/forking.py prevents
        entry = {"BACKEND": "django.core.cache.backends.memcached.PyLibMCCache",
                 "LOCATION": location}
    settings.configure(CACHES={"default": entry})
    django.setup()
    from django.core.cache import cache

    cache.set("parent", "value")

    def child():
        ok = cache.get("parent") == "value"
        cache.set("child-%d" % os.getpid(), "x")
        sys.exit(0 if ok else 3)

    codes = []
    for _ in range(20):
        if how == "fork":
            pid = os.fork()
            if pid == 0:
                child()
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        else:
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
            process.join()
            codes.append(process.exitcode)
    failed = 0
    for _ in range(50):
        try:
            if cache.get("parent") != "value":
                failed += 1
        except Exception:
            failed += 1
    print(failed, ",".join(map(str, sorted(set(codes)))))
    """
)


def _run(location: str, backend: str, how: str, guarded: str = "on") -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", _SCRIPT,
         location, backend, how, guarded],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    failed, codes = done.stdout.split()
    return int(failed), codes


@pytest.mark.parametrize("how", ["fork", "multiprocessing"])
@pytest.mark.parametrize("backend", ["pylibmc", "pymemcache"])
def test_fork__children_that_exit_normally_leave_the_parent_working(
    memcached_node: MemcachedServer, backend: str, how: str
) -> None:
    failed, codes = _run(memcached_node.location, backend, how)

    assert failed == 0
    assert codes == "0"  # every child read the parent's value through its own connection


def test_fork__without_the_guard_pylibmc_children_break_the_parent(
    memcached_node: MemcachedServer,
) -> None:
    """The failure the guard prevents is real: libmemcached quits the shared connections."""
    failed, _ = _run(memcached_node.location, "pylibmc", "fork", guarded="off")

    assert failed > 0


# Every lock a cache_settings module keeps at module level is held by another thread at the
# moment of the fork; the child must be able to take each one (that thread is not there).
_LOCKS_SCRIPT = textwrap.dedent(
    """
    import importlib, os, pkgutil, sys, threading
    from django.conf import settings
    settings.configure()
    import django
    django.setup()
    import cache_settings

    for module in pkgutil.walk_packages(cache_settings.__path__, "cache_settings."):
        importlib.import_module(module.name)
    kinds = (type(threading.Lock()), type(threading.RLock()))
    locks = sorted(
        (name, attr) for name, module in list(sys.modules.items())
        if name.startswith("cache_settings") for attr, value in vars(module).items()
        if isinstance(value, kinds)
    )
    held, done = threading.Event(), threading.Event()

    def hold():
        taken = [getattr(sys.modules[name], attr) for name, attr in locks]
        for lock in taken:
            lock.acquire()
        held.set()
        done.wait()
        for lock in taken:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        stuck = [f"{name}.{attr}" for name, attr in locks
                 if not getattr(sys.modules[name], attr).acquire(timeout=0.5)]
        print(" ".join(stuck) or "-", flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    done.set()
    holder.join()
    print(" ".join(f"{name}.{attr}" for name, attr in locks))
    """
)


def test_fork__a_child_can_take_every_module_lock_a_thread_held_at_the_fork() -> None:
    """entries._lock, forking._install_lock and _aws._install_lock stayed taken in the child."""
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", _LOCKS_SCRIPT],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stuck, locks = done.stdout.splitlines()

    assert stuck == "-"
    assert "cache_settings.entries._lock" in locks.split()
    assert "cache_settings.sources._aws._install_lock" in locks.split()
