"""Copies into the watch folders that appear whole or not at all, and only with the validated bytes.

Each landing file is copied once, by the read that validates and hashes it
(:func:`~wordstream.staging.validation.inspect_content` writes to :func:`open_copy`'s file), under a
hidden name in a watch folder (neither Spark source lists hidden names). Once the ledger knows which
engines need it and the copy is durable, :func:`publish_copy` gives it the mtime "now" (the DStream
source ignores files older than its remember window) and its final name in every such engine's
watch folder, by hard links: one inode, one write and one flush for all the engines, and a final
name that appears, atomically, on a complete file.

One inode for all the engines means one mtime and one content: no one may touch a published file
in place (a new mtime on a file the structured source has forgotten, past its ``maxFileAge``, would
make it read the file again). The DStream engine's new epoch, which must give waiting files a new
mtime, gives a shared file an inode of its own first
(:func:`wordstream.engines.dstream.announce_waiting_files`), and a reset gives a shared file back
to landing as a copy (:func:`wordstream.maintenance.reset.give_back`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from wordstream.durable import link_or_copy

COPY_MODE = 0o644


def open_copy(folder: Path) -> tuple[int, Path]:
    """A new hidden temp file in ``folder`` for the copy of one landing file: its descriptor and path.

    The name is random (the content hash is not known yet); staging's recovery removes it like any
    temp file when a run dies before :func:`publish_copy`.
    """
    fd, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, COPY_MODE)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, Path(name)


def publish_copy(copy: Path, targets: Sequence[Path]) -> None:
    """Give the durable ``copy`` the mtime now and the final names ``targets``, then drop its own name.

    A target is a hard link to the copy; where its folder cannot link to the copy's, a copy of its
    own made durable under a hidden name and renamed. The caller fsyncs the folders.
    """
    os.utime(copy)  # now: the copy is new to the engines whatever the original's age
    for target in targets:
        link_or_copy(copy, target)
    copy.unlink()
