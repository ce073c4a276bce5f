"""Every name staging writes or skips: safe, readable, unique per content, never hidden by accident.

Every name staging writes is built from the content hash and a sanitised copy of the landing name
(only ``[A-Za-z0-9._-]``, bounded, never hidden), so no landing name can escape ``data_dir`` or
collide with another.
"""

from __future__ import annotations

import re
from pathlib import Path

PARTIAL_SUFFIXES = (".tmp", "._COPYING_", ".part")
SAFE_NAME_MAX = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_partial_name(name: str) -> bool:
    """Hidden, temporary or in-progress names (what uploaders and Hadoop use while writing)."""
    return name.startswith((".", "_")) or name.endswith(PARTIAL_SUFFIXES)


def safe_name(name: str, max_len: int = SAFE_NAME_MAX) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, not hidden, at most ``max_len`` characters.

    Spark skips names starting with ``.``/``_`` and Hadoop paths choke on ``:``, globs and spaces,
    so only these characters survive; no ``/`` means the result is always a single path component.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip("._-")[:max_len].rstrip(".")
    return cleaned or "file"


def watch_name_for(sha256: str, landing_name: str) -> str:
    """The name of a content in every watch folder: unique per content, readable, ends in ``.txt``."""
    name = f"{sha256[:16]}-{safe_name(landing_name)}"
    return name if name.endswith(".txt") else f"{name}.txt"


def is_temp_name(name: str) -> bool:
    """Staging's copies before publication, and its reason files before their rename: hidden, so
    neither Spark source lists a file that is still being written."""
    return name.startswith(".") and name.endswith(".tmp")



def reason_path(quarantined: Path) -> Path:
    """The one-line reason file next to a quarantined entry."""
    return quarantined.with_name(f"{quarantined.name}.reason.txt")
