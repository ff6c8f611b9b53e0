"""The peers ``bench_peers.py`` compares with, each in its own virtualenv.

The three packages cannot share one environment: django-elasticache 1.0.3 imports
``django.utils.encoding.smart_text`` (removed in Django 4.0) and ``distutils``/``telnetlib``
(Python < 3.12); django-memcached-consul 0.2.0 subclasses ``MemcachedCache`` (python-memcached,
removed in Django 4.1); django-elastipymemcache 3.0.0 needs Django >= 4.2. Each gets the
newest Django it runs on, and its virtualenv also times stock Django of that version, so
every ratio compares like with like.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._settings_time import STOCK_BACKENDS, environ

ROOT = Path(__file__).resolve().parents[1]
# Matched by ".venv-*/" in .gitignore, so the environments are never committed.
VENVS = ROOT / "bench" / ".venv-peers"


@dataclass(frozen=True)
class Peer:
    """One peer package and what its virtualenv needs."""

    name: str
    requirements: tuple[str, ...]
    client: str  # the memcached client library it drives: pylibmc, pymemcache, memcache

    @property
    def python(self) -> Path:
        return VENVS / self.name / "bin" / "python"


PEERS: tuple[Peer, ...] = (
    Peer(
        "django-elasticache",
        ("django-elasticache==1.0.3", "django>=3.2,<4.0", "pylibmc==1.6.3"),
        "pylibmc",
    ),
    Peer(
        "django-elastipymemcache",
        ("django-elastipymemcache==3.0.0", "django>=5.2,<6.0", "pymemcache==4.0.0"),
        "pymemcache",
    ),
    Peer(
        "django-memcached-consul",
        (
            "django-memcached-consul==0.2.0",
            "django>=3.2,<4.1",
            "python-memcached==1.62",
            "python-consul==1.1.0",
        ),
        "memcache",
    ),
)


def ensure(peer: Peer) -> Path:
    """Return the peer's python, creating its virtualenv on first use."""
    stamp = VENVS / peer.name / (".installed-" + "-".join(peer.requirements).replace("/", "_"))
    if stamp.exists():
        return peer.python
    print(f"==> installing {' '.join(peer.requirements)} into {peer.python.parents[1]}",
          file=sys.stderr, flush=True)  # fmt: skip
    if not peer.python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / peer.name)], check=True)
    subprocess.run(
        [str(peer.python), "-m", "pip", "install", "-q", *peer.requirements],
        check=True,
    )
    for old in stamp.parent.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return peer.python


OURS = "cache_settings"
STOCK = STOCK_BACKENDS


class Worker:
    """A ``bench/_worker.py`` process in one virtualenv, driven line by line."""

    def __init__(self, python: Path) -> None:
        self.process = subprocess.Popen(
            [str(python), str(ROOT / "bench" / "_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environ(),
            cwd=ROOT,
        )

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        self.send({"cmd": cmd, **args})
        return self.receive()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def versions(python: Path, packages: list[str]) -> str:
    code = (
        "import importlib.metadata as m, sys\n"
        f"print(', '.join(p + ' ' + m.version(p) for p in {packages!r}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def machine() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({model}), load {load:.1f}, Python {platform.python_version()}"


def locations(servers: list[Any]) -> list[str]:
    return [server.location for server in servers]


def nodes_of(servers: list[Any]) -> list[tuple[str, str, int]]:
    return [(f"mc{server.port}.bench.test", server.host, server.port) for server in servers]


def print_rows(results: dict[str, list[str]], repeats: int, head: str = "") -> None:
    width = max(len(name) for name in results) + 2
    heads = "".join(f"{f'repeat {n + 1}':>11}" for n in range(repeats))
    print(f"  {head:<{width}}{heads}")
    for name, cells in results.items():
        print(f"  {name:<{width}}" + "".join(f"{cell:>11}" for cell in cells))


def pythons() -> dict[str, Path]:
    """Return {library: the python of its virtualenv}; ours is this interpreter."""
    return {OURS: Path(sys.executable), **{peer.name: peer.python for peer in PEERS}}


if __name__ == "__main__":
    for each in PEERS:
        print(ensure(each))
