"""File operations that survive a crash: readers see the old or the new, and a rename is durable.

Used by staging, maintenance and the stop/status protocol. ``syncfs`` (one flush of a whole file
system) is reached through ctypes: Python's ``os`` module does not expose it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# link() fails with these where the folders are on different file systems, or the file system has
# no hard links: :func:`link_or_copy` copies then.
NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})


def fsync_file(path: Path) -> None:
    """Make a file's written bytes durable before a rename publishes it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable, not just visible (it costs a journal commit)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()
HAS_SYNCFS = _LIBC is not None


def flush_filesystem(folder: Path) -> None:
    """Make every file written so far on ``folder``'s file system durable, in one flush (syncfs).

    One flush for a whole group of files instead of one fsync per file: each fsync waits for the
    disk on its own. Callers fsync each file instead where :data:`HAS_SYNCFS` is false.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC is None or _LIBC.syncfs(fd) != 0:
            error = 0 if _LIBC is None else ctypes.get_errno()
            raise OSError(error, f"syncfs failed: {os.strerror(error)}", os.fspath(folder))
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_text_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one; the new one is on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """:func:`write_text_atomically` of ``payload`` as indented, key-sorted JSON."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True))


def copy_atomically(source: Path, target: Path, mtime_ns: int | None = None) -> None:
    """Replace ``target`` by a durable copy of ``source`` (a file of its own), all at once.

    Readers see the old ``target`` or the whole copy; the copy's mtime is now, or ``mtime_ns``.
    ``source`` may be ``target`` itself: the file then gets an inode of its own, for example a hard
    link that must be touched without touching its other names. The caller fsyncs the folder.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        shutil.copyfile(source, tmp)  # into the same inode, in the kernel where it can (sendfile)
        os.fsync(fd)
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def link_or_copy(source: Path, target: Path) -> None:
    """A new name ``target`` for ``source`` (a hard link: no bytes written), or, where the two
    folders cannot share an inode, a durable copy with ``source``'s mtime, renamed into place.

    ``target`` must not exist yet (FileExistsError). The caller fsyncs the folder.
    """
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in NO_LINK:
            raise
        copy_atomically(source, target, mtime_ns=os.stat(source).st_mtime_ns)


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>-<n><suffix>`` if that entry already exists."""
    path = folder / name
    n = 1
    while os.path.lexists(path):
        stem, dot, suffix = name.partition(".")
        path = folder / (f"{stem}-{n}{dot}{suffix}")
        n += 1
    return path


def move_entry(source: Path, dest: Path) -> None:
    """Move a directory entry itself (a symlink stays a symlink), across file systems if needed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, dest)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        shutil.move(os.fspath(source), os.fspath(dest))
