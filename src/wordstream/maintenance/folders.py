"""Small folder helpers of maintenance: sorted listings, ages, removal that never follows a link."""

from __future__ import annotations

import os
import shutil
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

