"""Copies into the watch folders that appear whole or not at all, and only with the validated bytes.

Each landing file is copied once, by the read that validates and hashes it
(:func:`~wordstream.staging.validation.inspect_content` writes to :func:`open_copy`'s file), under a
hidden name in a watch folder (neither Spark source lists hidden names). Once the ledger knows which
engines need it, the copy is given the hidden temp name of its final name in every such engine's
watch folder by hard links (:func:`place_copy`: one inode, one write and one flush for all the
engines), made durable, given the mtime "now" (the DStream source ignores files older than its
remember window) and renamed to its final name (:func:`publish_temps`).

One inode for all the engines means one mtime: no one may touch an engine's published file (a new
mtime on a file the structured source has forgotten, past its ``maxFileAge``, would make it read
the file again). The DStream engine's new epoch, which must give waiting files a new mtime, gives
a shared file an inode of its own first (:func:`wordstream.engines.dstream.announce_waiting_files`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from wordstream.durable import copy_durably

COPY_MODE = 0o644
# link() fails with these where the folders are on different file systems, or the file system has
# no hard links: that engine gets a copy of its own.
NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})


def open_copy(folder: Path) -> tuple[int, Path]:
    """A new hidden temp file in ``folder`` for the copy of one landing file: its descriptor and path.

    The name is random (the content hash is not known yet); staging's recovery removes it like any
    temp file when a run dies before :func:`place_copy`.
    """
    fd, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, COPY_MODE)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, Path(name)


def place_copy(copy: Path, temps: Sequence[Path]) -> list[Path]:
    """Give the written ``copy`` the names ``temps`` (hard links), then drop its own name.

    A temp name left by a dead run is replaced. Where a folder cannot link to the copy's, that
    engine's temp is a copy of its own, fsync'ed here (the caller's flush covers the links only).
    On failure the temps made so far are removed; the copy is the caller's to remove.
    """
    placed: list[Path] = []
    try:
        for temp in temps:
            temp.unlink(missing_ok=True)
            placed.append(temp)
            try:
                os.link(copy, temp)
            except OSError as error:
                if error.errno not in NO_LINK:
                    raise
                copy_durably(copy, temp)
    except BaseException:
        for temp in placed:
            temp.unlink(missing_ok=True)
        raise
    copy.unlink()
    return placed


def publish_temps(temps: Sequence[Path], targets: Sequence[Path]) -> None:
    """Give durable temp copies their final names: mtime now, rename (the directory fsync follows)."""
    for temp, target in zip(temps, targets, strict=True):
        os.utime(temp)  # now: the copy is new to the engines whatever the original's age
        os.replace(temp, target)
