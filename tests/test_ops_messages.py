"""What an operator sees after the usual deployment slips: each message names the fix.

Kubernetes volumes, DNS names written for a resolver with search domains, TLS files that
are not where the URL says, AWS pods without credentials, a snapshot on a read-only mount.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cache_settings import Node, SourceError, parse_source


def _aged(path: Path) -> Path:
    """Date *path* back one second, as a file written before the site started."""
    past = time.time() - 1
    os.utime(path, (past, past))
    return path


# --- file:// ------------------------------------------------------------------------------


def test_file_configmap_key_link__names_the_data_path_that_follows_updates(
    tmp_path: Path,
) -> None:
    # The layout the kubelet gives a ConfigMap volume: KEY -> ..data/KEY, ..data -> ..<stamp>.
    version = tmp_path / "..2024_05_01_10_00_00.123456789"
    version.mkdir()
    (version / "nodes").write_text("10.0.0.1:11211\n")
    _aged(version / "nodes")
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "nodes").symlink_to("..data/nodes")

    with pytest.raises(SourceError) as caught:
        parse_source(f"file://{tmp_path}/nodes").resolve(timeout=1)

    assert f"write file://{tmp_path}/..data/nodes, which follows updates" in caught.value.reason
    assert version.name not in caught.value.reason  # the path the next update removes
    data_path = parse_source(f"file://{tmp_path}/..data/nodes")
    assert data_path.resolve(timeout=1) == [Node("10.0.0.1", 11211)]


def test_file_last_line_without_newline__message_says_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nodes"
    path.write_bytes(b"10.0.0.1:11211\n10.0.0.2:11211")
    _aged(path)

    with pytest.raises(SourceError) as caught:
        parse_source(f"file://{path}").resolve(timeout=1)

    assert "end every line with a newline (in a ConfigMap, a `|` block, not `|-`)" in str(
        caught.value
    )
