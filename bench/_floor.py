"""The settings-time floor of a case: stock Django plus importing plain modules like ours.

A settings call that validates in Python imports our modules, and a fresh interpreter pays
for loading each one whatever its body does. To show what a target leaves room for, this
builds a stand-in package with one module per module of ours that the case imports, each
with as many classes and functions as the original, and nothing else: no dataclass, no
compiled pattern, no work at import. The floor case is stock Django's entry with that
package imported first; its ratio to stock Django is what the fewest-modules version of
our design could reach at best, with every module's body made free.
"""

from __future__ import annotations

import ast
import subprocess
import tempfile
import textwrap
from pathlib import Path

from bench import _settings_time as st

PACKAGE = "floor_of_ours"

_LISTING = """
import sys
print("\\n".join(name for name in sys.modules if name.split(".")[0] == "cache_settings"))
"""


def imported_modules(case: st.Case) -> list[str]:
    """Return the names of our modules that *case*'s statements import."""
    done = subprocess.run(
        [str(case.python), "-c", case.code() + _LISTING],
        capture_output=True,
        text=True,
        env=st.environ(),
        cwd=st.ROOT,
        check=True,
    )
    return sorted(line for line in done.stdout.splitlines()[1:] if line.strip())


def _shape(path: Path) -> tuple[int, int]:
    """Return (classes, functions) defined anywhere in the module at *path*."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = sum(isinstance(node, ast.ClassDef) for node in ast.walk(tree))
    functions = sum(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(tree)
    )
    return classes, functions


def _source(classes: int, functions: int) -> str:
    parts = ['"""A module shaped like one of ours, with nothing done at import."""\n']
    parts += [f'class C{n}:\n    """A class."""\n' for n in range(classes)]
    parts += [
        f'def f{n}(a, b=None):\n    """A function."""\n    return a if b is None else b\n'
        for n in range(functions)
    ]
    return "\n\n".join(parts)


def build(modules: list[str], python: Path, parent: Path) -> Path:
    """Write and byte-compile the stand-in package for *modules* in a new folder of *parent*.

    Return that folder (the package's parent, for ``sys.path``).
    """
    where = Path(tempfile.mkdtemp(prefix="floor-", dir=parent))
    package = where / PACKAGE
    package.mkdir()
    names = []
    for n, module in enumerate(modules):
        path = st.ROOT.joinpath(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        (package / f"m{n}.py").write_text(_source(*_shape(path)), encoding="utf-8")
        names.append(f"m{n}")
    (package / "__init__.py").write_text(
        "from . import " + ", ".join(names) + "\n" if names else "", encoding="utf-8"
    )
    subprocess.run(
        [str(python), "-m", "compileall", "-q", str(package)], check=True, env=st.environ()
    )
    return where


def floor_case(stock: st.Case, where: Path) -> st.Case:
    """Return *stock* with the stand-in package at *where* imported before its entry."""
    statements = textwrap.dedent(
        f"""\
        import sys
        sys.path.insert(0, {str(where)!r})
        import {PACKAGE}
        """
    )
    return st.Case(stock.python, statements + stock.statements)
