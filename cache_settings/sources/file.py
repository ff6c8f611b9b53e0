"""A rendered node list: ``file:///PATH`` (consul-template, confd, configuration management).

The first character that is not white space tells the format apart:

- ``[``: JSON, a list of ``"host:port"`` strings, or Prometheus file-based discovery target
  groups (``[{"targets": ["host:port", ...], "labels": {...}}]``; labels are ignored).
- ``{``: the snapshot format (``{"format": "cache_settings/1", "sources": {URL: {"nodes":
  [...]}}}``, what ``cache-settings resolve`` writes): the nodes of its single source, or of
  the one named by ``?source=URL`` when it holds several.
- anything else: one ``host:port`` per line; ``#`` starts a comment, blank lines are
  skipped, and the file must end with a newline. Its first line may be an IPv6 node
  (``[::1]:11211``): ``[`` and an IPv6 address up to a ``:`` never start a JSON document.

Decisions this module documents:

- A missing, empty, unreadable, partial or malformed file is a SourceError, never an empty
  list: the resolver then keeps the last good list (or the snapshot). What no retry can
  change is ``permanent`` (not retried within one resolution): a symbolic link, a file that
  is not regular, one over ``max_reply_size``, bytes that are not UTF-8 (but for a character
  cut at the end, which a write under way leaves). A JSON object that names a key twice is
  refused: ``json.loads`` would keep the last and silently drop the nodes of the first.
- The file is opened with ``O_NOFOLLOW | O_NONBLOCK``: a symbolic link is refused (the
  snapshot rule: nothing is read through a link another user may redirect) and a FIFO or
  device cannot block the open; only a regular file of at most ``max_reply_size`` bytes is
  read.
- A writer that rewrites the file in place (truncate, then write) is never read half-way.
  Three checks, because each alone has a gap: (1) ``fstat`` before and after the read must
  agree on size, mtime and ctime, and the bytes read must be the size: this catches a write
  during the read. (2) A file modified less than :data:`QUIET` seconds ago is stat'ed again
  after a pause of at most :data:`QUIET` seconds (monotonic, so a skewed mtime only costs
  the pause) and read again if it changed: this catches a writer between its truncate and
  its last write. (3) Formats detect what is left, a writer that stalls longer than
  :data:`QUIET` seconds: a cut JSON document does not parse, and a cut line list lacks its
  final newline (or is empty). A file that keeps changing until the attempt's deadline is a
  SourceError. A rename into place (consul-template's default) needs none of this.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, quote

from .. import attempt
from .._snapshot_format import DuplicateKey, unique_keys
from ..attempt import Attempt
from ..exceptions import ConfigurationError, SourceError, brief, some
from ..nodes import Node, parse_node, unique_sorted
from ..snapshot import FORMAT
from ..tls import TLSConfig
from . import Traits
from ._budget import check_json, paced
from ._transport import within
from ._url import NODE_TLS_OPTIONS, Query, decoded, node_tls_params

__all__ = ["QUIET", "File", "parse_node_list"]

#: Seconds a file must have been left alone before its content is trusted (see above).
QUIET = 0.05

_Stamp = tuple[int, int, int, int, int]
_LINE = re.compile(r"[^\n]*\n")
# "[" then what an IPv6 address starts with, up to its first ':': the first line of a line
# list ("[::1]:11211"), which no JSON document starts with (a JSON array holds no bare ':').
_IPV6_LINE = re.compile(r"\[[0-9A-Fa-f.]*:")


@dataclass(frozen=True, slots=True)
class File:
    """The nodes listed in a local file, re-read at every attempt (a refreshing backend polls it).

    Args:
        path: absolute path of the file.
        source: for a file in the snapshot format holding several sources, the canonical
            URL of the one to use; None when it holds exactly one.
        node_tls: the nodes speak only TLS, verified with these settings
            (``node_tls=true&node_ca=…&node_cert=…&node_key=…``).
    """

    path: str
    source: str | None = None
    node_tls: TLSConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not os.path.isabs(self.path):
            raise ConfigurationError(
                f"file://{self.path}: the path must be absolute, as in file:///etc/memcached-nodes"
            )
        if self.source is not None and (not isinstance(self.source, str) or not self.source):
            raise ConfigurationError(
                f"file://{self.path}: source={brief(self.source)} must name one source's URL "
                "in the snapshot file, or be None"
            )
        if not self.path.isprintable():  # a NUL failed each read as 'unexpected ValueError'
            raise ConfigurationError(
                f"file://{quote(self.path, errors='surrogateescape')}: the path holds a "
                "character that is not printable "
                "(a control character such as %00 or %0A once percent-decoded); remove it"
            )

    @classmethod
    def from_url(cls, url: SplitResult) -> File:
        """Build from ``file:///PATH[?source=URL&node_tls=…]`` (``file://localhost/PATH`` too)."""
        query = Query(url, {"source", *NODE_TLS_OPTIONS})
        where = query.where
        if url.netloc not in ("", "localhost") or url.fragment:
            raise ConfigurationError(
                f"{where}: expected file:///ABSOLUTE/PATH (three slashes: no host name)"
            )
        path = decoded(url.path, where, "the path")
        if not path or not os.path.isabs(path):
            raise ConfigurationError(
                f"{where}: no absolute path; write file:///etc/memcached-nodes"
            )
        chosen = query.get("source")
        if chosen is not None:
            from . import parse_source

            # The key the snapshot writer used: the source's canonical URL.
            chosen = parse_source(chosen).url
        return cls(path, chosen, query.tls("node_"))

    @property
    def url(self) -> str:
        """Return the canonical ``file:///PATH`` URL (also the snapshot key)."""
        fields = [f"source={quote(self.source, safe='')}"] if self.source else []
        fields += [f"{k}={quote(v)}" for k, v in node_tls_params(self.node_tls)]
        query = f"?{'&'.join(fields)}" if fields else ""
        return f"file://{quote(self.path)}{query}"

    @property
    def traits(self) -> Traits:
        """TLS to the nodes when ``node_tls`` says so; otherwise nothing to declare."""
        return Traits(node_tls=self.node_tls)

    def resolve(self, timeout: float) -> list[Node]:
        """Read the file once complete; return within *timeout* seconds or raise SourceError."""
        return within(self.url, timeout, self._resolve)

    def _resolve(self, current: Attempt) -> list[Node]:
        while True:
            read = _read(self.path, current.max_reply_size, self.url)  # None: it changed
            age = time.time() - read[1][3] / 1e9 if read else 0.0
            if read and age >= QUIET:
                break
            pause = min(QUIET, QUIET - age)
            if pause >= current.left():
                raise SourceError(
                    self.url,
                    f"the file kept changing for {current.timeout:.2f} s; it may be written "
                    "in place right now (write a temporary file and rename it into place)",
                )
            time.sleep(pause)
            if read and _stamp_path(self.path) == read[1]:
                break
        nodes = parse_node_list(read[0], source=self.url, choose=self.source)
        if self.node_tls is not None:
            nodes = [Node(node.host, node.port, node.ip, tls=True) for node in nodes]
        return nodes


def parse_node_list(data: bytes, *, source: str = "file", choose: str | None = None) -> list[Node]:
    """Return the sorted, de-duplicated nodes a file's content lists.

    Raise SourceError, naming *source*, when the content is empty, malformed, cut short or
    lists no node. *choose* picks the source of a snapshot-format file that holds several.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A character cut at the very end may be a write still under way; anything else is
        # not text, and reading it again cannot change that.
        raise SourceError(
            source,
            f"not UTF-8 text ({exc.reason} at byte {exc.start})",
            permanent=exc.reason != "unexpected end of data",
        ) from None
    body = text.lstrip()
    if not body:
        raise SourceError(source, "the file is empty; it must list at least one node")
    if body[0] == "{" or (body[0] == "[" and not _IPV6_LINE.match(body)):
        check_json(data, attempt.current(), source=source)
        try:
            value = json.loads(body, object_pairs_hook=unique_keys)
        except DuplicateKey as exc:
            raise SourceError(source, str(exc)) from None
        except ValueError as exc:
            raise SourceError(
                source, f"not valid JSON ({exc}): malformed, or partly written"
            ) from None
        except RecursionError:  # the nesting check above leaves the decoder none to meet
            raise SourceError(source, "not valid JSON: nested too deeply") from None
        if isinstance(value, dict):
            nodes = _from_snapshot(value, source, choose)
        else:
            nodes = _from_list(value, source)
    else:
        nodes = _from_lines(text, source)
    if not nodes:
        raise SourceError(source, "the file lists no nodes")
    return list(unique_sorted(nodes))


def _from_list(value: object, source: str) -> list[Node]:
    if not isinstance(value, list):
        raise SourceError(source, 'expected a JSON list of "host:port" strings')
    nodes = []
    for index, item in enumerate(paced(value)):
        if isinstance(item, dict) and isinstance(item.get("targets"), list):
            targets = item["targets"]  # a Prometheus file_sd target group
        else:
            targets = [item]
        for target in targets:
            if not isinstance(target, str):
                raise SourceError(
                    source, f'item {index}: expected a "host:port" string, not {brief(target)}'
                )
            nodes.append(_node(target, source, f"item {index}"))
    return nodes


def _from_snapshot(value: dict[str, object], source: str, choose: str | None) -> list[Node]:
    if value.get("format") != FORMAT:
        raise SourceError(
            source,
            f'a JSON object must be a snapshot with "format": {FORMAT!r}, '
            f"not {brief(value.get('format'))}",
        )
    sources = value.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise SourceError(source, 'the snapshot\'s "sources" must be a non-empty object')
    if choose is None:
        if len(sources) != 1:
            # Keys are the file's, not ours: a few of them, each repr'd and cut.
            raise SourceError(
                source,
                f"the snapshot holds {some(paced(sources), 'sources')}; "
                "choose one with ?source=URL",
            )
        choose = next(iter(sources))
    entry = sources.get(choose)
    if not isinstance(entry, dict) or not isinstance(entry.get("nodes"), list):
        raise SourceError(source, f"the snapshot has no node list for {brief(choose)}")
    try:
        return [Node.from_dict(node) for node in entry["nodes"]]
    except ValueError as exc:
        raise SourceError(source, f"snapshot entry {brief(choose)}: {exc}") from None


def _from_lines(text: str, source: str) -> list[Node]:
    end = text.rfind("\n") + 1
    # A writer cut short leaves a last line without its newline, such as "10.0.0.3:112":
    # a valid node with a wrong port, so it is refused rather than guessed at.
    last = text[end:].partition("#")[0].strip()
    if last:
        raise SourceError(
            source,
            f"the last line {brief(last)} does not end with a newline: the file may be partly "
            "written; end every line with a newline (in a ConfigMap, a `|` block, not `|-`)",
        )
    nodes = []
    # One line at a time (a file of millions of blank lines is not split in one C call).
    for number, line in enumerate(paced(_LINE.finditer(text, 0, end)), 1):
        content = line.group().partition("#")[0].strip()
        if content:
            nodes.append(_node(content, source, f"line {number}"))
    return nodes


def _node(text: str, source: str, where: str) -> Node:
    try:
        return parse_node(text, where=where)
    except ConfigurationError as exc:
        raise SourceError(source, str(exc)) from None


def _read(path: str, cap: int, source: str) -> tuple[bytes, _Stamp] | None:
    """Return the regular file's bytes and stamp; None when it changed while being read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(source, "no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and _is_link(path):
            raise SourceError(source, _link_fix(path), permanent=True) from None
        raise SourceError(source, f"cannot open the file ({exc.strerror or exc})") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise SourceError(source, "not a regular file", permanent=True)
        if before.st_size > cap:
            raise SourceError(source, f"larger than {cap} bytes (max_reply_size)", permanent=True)
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(65536, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        raise SourceError(source, f"cannot read the file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > cap:
        raise SourceError(source, f"larger than {cap} bytes (max_reply_size)", permanent=True)
    if _stamp(before) != _stamp(after) or len(data) != after.st_size:
        return None
    return data, _stamp(after)


def _is_link(path: str) -> bool:
    # ELOOP is also a loop of links among the directories, which are followed: that is
    # "Too many levels of symbolic links", not a link where the file should be.
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _link_fix(path: str) -> str:
    """Say that *path* is a link, and which path to write instead.

    A key of a Kubernetes ConfigMap, Secret or projected volume is a link ``KEY ->
    ..data/KEY``, where ``..data`` is itself a link the kubelet swaps on each update
    (kubernetes ``pkg/volume/util/atomic_writer.go``): ``DIR/..data/KEY`` follows updates,
    while the file the link resolves to now (``DIR/..2024_…/KEY``) is removed at the next one.
    """
    try:
        target = os.readlink(path)
    except OSError:
        target = ""
    directory, name = os.path.split(path)
    if target == f"..data/{name}":
        fix = os.path.join(directory, "..data", name)
        return (
            f"is a symbolic link to {target} (links are never followed): a key of a "
            f"Kubernetes ConfigMap or Secret volume; write file://{fix}, which follows updates"
        )
    shown = f" ({brief(os.path.realpath(path))})" if target else ""
    return f"is a symbolic link (links are never followed); name the file it points to{shown}"


def _stamp(status: os.stat_result) -> _Stamp:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _stamp_path(path: str) -> _Stamp | None:
    try:
        return _stamp(os.stat(path, follow_symlinks=False))
    except OSError:
        return None
