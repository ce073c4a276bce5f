"""Copies into the watch folders that appear whole or not at all, and only with the validated bytes.

A copy is written under a hidden temp name in the same watch folder (neither Spark source lists
hidden names), hashed again on the way and compared with the validated content (a producer who
rewrote the file in place is caught even when size and mtime are kept), made durable, given the
mtime "now" (the DStream source ignores files older than its remember window) and renamed to its
final name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from wordstream.durable import write_all
from wordstream.staging.names import temp_name
from wordstream.staging.validation import CHUNK_BYTES


class ContentChangedError(RuntimeError):
    """The file's bytes changed between validation and copy: it was not stable after all."""


def copy_to_temps(source_fd: int, targets: Sequence[Path], sha256: str, fsync: bool = True) -> list[Path]:
    """Copy the open source, in one read, to the hidden temp name of every target; return the temps.

    The copy is hashed again and must equal ``sha256``, the content that was validated; otherwise no
    temp is left and :class:`ContentChangedError` is raised. Each temp is fsync'ed here unless
    ``fsync`` is false: then the caller makes the group durable at once (see
    :func:`wordstream.durable.flush_filesystem`).
    """
    temps = [target.with_name(temp_name(target.name)) for target in targets]
    outputs: list[int] = []
    try:
        for temp in temps:
            outputs.append(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                                   | os.O_CLOEXEC, 0o644))
        hasher = hashlib.sha256()
        offset = 0
        while chunk := os.pread(source_fd, CHUNK_BYTES, offset):
            offset += len(chunk)
            hasher.update(chunk)
            for out in outputs:
                write_all(out, chunk)
        if hasher.hexdigest() != sha256:
            raise ContentChangedError("content changed between validation and copy")
        if fsync:
            for out in outputs:
                os.fsync(out)
    except BaseException:
        for out in outputs:
            os.close(out)
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    for out in outputs:
        os.close(out)
    return temps


def publish_temps(temps: Sequence[Path], targets: Sequence[Path]) -> None:
    """Give durable temp copies their final names: mtime now, rename (the directory fsync follows)."""
    for temp, target in zip(temps, targets, strict=True):
        os.utime(temp)  # now: the copy is new to the engines whatever the original's age
        os.replace(temp, target)
