"""Whether a path can hold the last-known-good snapshot: checked when settings are loaded.

``snapshot.py`` reads and writes the file; this module only refuses, before the first
resolution, a path at which no snapshot could ever be read or written, so that the mistake
fails when the site starts and not at the first outage of its source. ``policy.py`` imports it
alone, without the reader and writer.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile

from . import _safefile
from .exceptions import ConfigurationError, brief

__all__ = ["DIRECTORY_NAMES", "check_snapshot_path", "snapshot_unwritable"]

# Last components that name a directory whatever exists: "var/", "var/.", "var/..".
DIRECTORY_NAMES = frozenset({"", os.curdir, os.pardir})
# RFC 3986 section 3.1's scheme, then "//": a source URL given where the path goes. Its query
# may hold a token, which would become part of a file name.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# What a shell would have expanded, but Python does not: "~" or "~user" as the first
# component, "$NAME" or "${NAME}" anywhere. Given as text, each becomes a directory of that
# literal name under the working directory ("./~/nodes.json", "./$HOME/nodes.json").
_HOME = re.compile(r"~[^/]*(?:/|\Z)")
_VARIABLE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[^}]*\})")
# A control character: from a variable or file read with its newline, or a typo. A file
# name holding one is almost surely not the one meant; file:// refuses them as well.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_snapshot_path(path: str | os.PathLike[str]) -> str:
    """Return *path* as an absolute, normalised path string fit to be a snapshot file.

    A path that does not exist yet is fine (its missing directories are created by the first
    write). Called where settings are validated, so that a snapshot that could never be read
    or written fails when the site starts, not when the source first fails.

    Raises:
        ConfigurationError: *path* is not a ``str`` or ``os.PathLike[str]``, is empty, holds a
            control character or space at either end, starts with ``~`` or holds ``$NAME``
            (never expanded here), is a URL (``consul://...``), names a directory (ends in ``/``,
            ``.`` or ``..``), is an existing directory, symbolic link or other non-regular
            file, or one of its parents exists and is not a directory.
    """
    try:
        filename = os.fspath(path)
    except TypeError:
        filename = None
    if not isinstance(filename, str) or not filename or "\x00" in filename:
        raise ConfigurationError(
            f"snapshot must be the path of a JSON file (str or pathlib.Path), not {brief(path)}"
        )
    _check_written_as_meant(filename)
    if _URL.match(filename):
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} is a URL; snapshot takes the path of a JSON file, "
            "e.g. BASE_DIR / 'var' / 'cache-nodes.json', and the source URL goes before it"
        )
    if os.path.basename(filename) in DIRECTORY_NAMES:
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} names a directory; give the path of a JSON file, "
            f"e.g. {brief(os.path.join(filename, 'cache-nodes.json'), 300)}"
        )
    filename = os.path.abspath(filename)
    try:
        mode = os.lstat(filename).st_mode
    except (FileNotFoundError, PermissionError):
        # Missing: created by the first write. Not searchable by this user (a deploy user
        # loading the site's settings): reads and writes log why when they happen.
        return filename
    except NotADirectoryError:
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)}: a parent of it is not a directory"
        ) from None
    except OSError as exc:  # a loop of symbolic links, a name too long
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)}: cannot be used ({_safefile.reason(exc)})"
        ) from None
    if stat.S_ISDIR(mode):
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} is a directory; give the path of a JSON file in it, "
            f"e.g. {brief(os.path.join(filename, 'cache-nodes.json'), 300)}"
        )
    if stat.S_ISLNK(mode):
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} is a symbolic link, which is never followed; "
            f"give the path of the file itself ({brief(os.path.realpath(filename), 300)})"
        )
    if not stat.S_ISREG(mode):
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} is not a regular file (a FIFO, socket or device); "
            "give the path of a JSON file in a directory owned by the site's user"
        )
    return filename


def _check_written_as_meant(filename: str) -> None:
    # Each of these is a legal file name that no one means: the write would create a file or
    # directory of that literal name (under the working directory, if relative).
    if _CONTROL.search(filename):
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} holds a control character (a newline read with "
            "the value?); remove it"
        )
    if filename != filename.strip():
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} starts or ends with a space; remove it "
            f"(snapshot={brief(filename.strip(), 300)})"
        )
    if _HOME.match(filename):
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} starts with '~', which is not expanded here "
            "(it would be a directory named '~'); write os.path.expanduser(...) or "
            "Path.home() / ..., or better a path under BASE_DIR"
        )
    variable = _VARIABLE.search(filename)
    if variable:
        raise ConfigurationError(
            f"snapshot={brief(filename, 300)} holds {variable.group()!r}, which is not "
            "expanded here (it would be part of a file name); write os.path.expandvars(...) "
            "or build the path from os.environ"
        )


def snapshot_unwritable(snapshot: str) -> str | None:
    """Say why no file can be created beside *snapshot*; None when one can.

    Tried for real, with a temporary file removed at once: permissions alone do not tell
    (root may write anywhere, yet not in /proc; a read-only mount).
    """
    directory = os.path.dirname(os.path.abspath(snapshot))
    while not os.path.isdir(directory):  # the first write creates the missing ones
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".cache_settings-check."):
            return None
    except OSError as exc:
        return f"cannot create a file in {directory}: {exc.strerror or exc}"
