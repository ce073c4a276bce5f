"""Small folder helpers of maintenance: sorted listings, ages, sizes, removal that never follows a link."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path


def sorted_entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of ``folder`` sorted by name; none if it does not exist."""
    try:
        with os.scandir(folder) as entries:
            found = sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        return iter(())
    return iter(found)


def age(entry: os.DirEntry[str], now: float) -> float:
    return now - entry.stat(follow_symlinks=False).st_mtime


def day_of(name: str) -> date | None:
    try:
        return datetime.strptime(name, "%Y-%m-%d").date()
    except ValueError:
        return None


def remove(path: Path) -> None:
    """Remove a file, link or directory tree; a link is removed itself, its target never."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def tree_bytes(path: Path) -> int:
    """Apparent size of the files under ``path``; links are counted, never followed."""
    return tree_stats(path)[0]


def tree_stats(path: Path) -> tuple[int, float]:
    """Bytes of the files under ``path`` and their newest mtime (an empty folder's own); (0, 0) if absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, 0.0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, st.st_mtime
    total, newest = 0, None
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                entry = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += entry.st_size
            newest = entry.st_mtime if newest is None else max(newest, entry.st_mtime)
    return total, st.st_mtime if newest is None else newest


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


