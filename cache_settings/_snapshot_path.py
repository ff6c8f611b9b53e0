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

from . import _safefile
from .exceptions import ConfigurationError, brief

__all__ = ["DIRECTORY_NAMES", "check_snapshot_path"]

# Last components that name a directory whatever exists: "var/", "var/.", "var/..".
DIRECTORY_NAMES = frozenset({"", os.curdir, os.pardir})
# RFC 3986 section 3.1's scheme, then "//": a source URL given where the path goes. Its query
# may hold a token, which would become part of a file name.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def check_snapshot_path(path: str | os.PathLike[str]) -> str:
    """Return *path* as an absolute, normalised path string fit to be a snapshot file.

    A path that does not exist yet is fine (its missing directories are created by the first
    write). Called where settings are validated, so that a snapshot that could never be read
    or written fails when the site starts, not when the source first fails.

    Raises:
        ConfigurationError: *path* is not a ``str`` or ``os.PathLike[str]``, is empty, holds a
            NUL character, is a URL (``consul://...``), names a directory (ends in ``/``,
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
