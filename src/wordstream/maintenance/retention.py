"""Cleanup: the retention of what the workflow writes, and a size report.

**Cleanup** (:func:`cleanup`) expires what is no longer needed and reports sizes. It never touches
the checkpoint, watch folder or rotated epochs of an engine whose lock is held.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wordstream import Progress, control
from wordstream.ledger import Ledger
from wordstream.maintenance.folders import age, day_of, remove, sorted_entries
from wordstream.maintenance.reset import epoch_engine
from wordstream.settings import ENGINES, Engine, Settings
from wordstream.staging import is_temp_name

STALE_TEMP_SECONDS = 3600
MIN_WATCH_AGE_SECONDS = 3600
DAY_SECONDS = 86400

SIZE_PARTS = ("checkpoint", "output", "watch", "rotated")


@dataclass
class CleanupReport:
    rotated_removed: int = 0
    temp_removed: int = 0
    watch_removed: int = 0
    archive_removed: int = 0  # day folders
    quarantine_removed: int = 0
    skipped_engines: list[str] = field(default_factory=list)  # running: nothing of theirs touched
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # engine -> part -> bytes
    shared_sizes: dict[str, int] = field(default_factory=dict)  # archive, quarantine -> bytes
    seconds: float = 0.0

    def line(self) -> str:
        skipped = f"; skipped running {', '.join(self.skipped_engines)}" if self.skipped_engines else ""
        return (
            f"cleanup: removed {self.rotated_removed} rotated epochs, {self.temp_removed} stale temp "
            f"files, {self.watch_removed} processed watch files, {self.archive_removed} archive days, "
            f"{self.quarantine_removed} quarantined files{skipped}; {self.seconds:.2f}s"
        )


def cleanup(settings: Settings, now: float | None = None, progress: Progress = print) -> CleanupReport:
    """Expire rotated epochs, stale temp files, processed watch files, archive and quarantine.

    * rotated epochs older than ``retention_days`` (by the folder's mtime, set at rotation);
    * hidden ``.*.tmp`` files in watch folders older than an hour (a dead staging run's copies);
    * watch files processed by their engine and older than max(1 h, 2 x the DStream remember
      window): counted already, originals archived, and too old for a restarted DStream to list;
    * archive day folders and quarantined files older than ``retention_days``.

    ``now`` (epoch seconds) is for tests.
    """
    started = time.monotonic()
    now = time.time() if now is None else now
    retention = settings.retention_days * DAY_SECONDS
    report = CleanupReport()
    idle: list[Engine] = []
    for engine in ENGINES:
        if control.is_running(settings.state, engine):
            report.skipped_engines.append(engine)
            progress(f"{engine} is running (lock held): its checkpoint, watch folder and rotated "
                     "epochs are left alone")
        else:
            idle.append(engine)

    for entry in sorted_entries(settings.rotated):
        owner = epoch_engine(entry.name)
        if owner in idle and age(entry, now) > retention:
            remove(Path(entry.path))
            report.rotated_removed += 1

    processed = _processed_names(settings, idle)
    watch_age = max(MIN_WATCH_AGE_SECONDS, 2 * settings.dstream_remember_seconds)
    for engine in idle:
        for entry in sorted_entries(settings.watch(engine)):
            if not entry.is_file(follow_symlinks=False):
                continue
            entry_age = age(entry, now)
            if is_temp_name(entry.name) and entry_age > STALE_TEMP_SECONDS:
                os.unlink(entry.path)
                report.temp_removed += 1
            elif entry.name in processed[engine] and entry_age > watch_age:
                os.unlink(entry.path)
                report.watch_removed += 1

    oldest_kept = (datetime.fromtimestamp(now, UTC) - timedelta(days=settings.retention_days)).date()
    for entry in sorted_entries(settings.archive):
        day = day_of(entry.name)
        if day is not None and day < oldest_kept and entry.is_dir(follow_symlinks=False):
            remove(Path(entry.path))
            report.archive_removed += 1

    report.quarantine_removed = _expire_quarantine(settings.quarantine, now - retention)

    for engine in ENGINES:
        report.sizes[engine] = engine_sizes(settings, engine)
        sizes = report.sizes[engine]
        progress(f"size {engine}: " + ", ".join(f"{part} {human_bytes(sizes[part])}" for part in SIZE_PARTS))
    report.shared_sizes = {"archive": tree_bytes(settings.archive),
                           "quarantine": tree_bytes(settings.quarantine)}
    progress("size shared: " + ", ".join(f"{part} {human_bytes(size)}"
                                         for part, size in report.shared_sizes.items()))
    report.seconds = time.monotonic() - started
    progress(report.line())
    return report


def _processed_names(settings: Settings, engines: list[Engine]) -> dict[str, set[str]]:
    if not settings.ledger.exists():  # nothing was ever staged, so nothing is known to be processed
        return {engine: set() for engine in engines}
    ledger = Ledger(settings.ledger)
    with ledger.session():
        return {engine: ledger.processed_watch_names(engine) for engine in engines}


def _expire_quarantine(folder: Path, cutoff: float) -> int:
    """Remove quarantined entries (and their reason files) quarantined before ``cutoff``.

    The reason file is written at quarantine time, so its mtime is the quarantine time; the entry
    itself keeps the producer's mtime.
    """
    removed = 0
    for entry in sorted_entries(folder):
        if entry.name.endswith(".reason.txt"):
            continue
        reason = Path(entry.path + ".reason.txt")
        try:
            quarantined_at = reason.stat().st_mtime
        except FileNotFoundError:
            quarantined_at = entry.stat(follow_symlinks=False).st_mtime
        if quarantined_at < cutoff:
            remove(Path(entry.path))
            reason.unlink(missing_ok=True)
            removed += 1
    for entry in sorted_entries(folder):  # reason files whose entry is gone
        if entry.name.endswith(".reason.txt") and not os.path.lexists(entry.path[: -len(".reason.txt")]) \
                and entry.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(entry.path)
    return removed


def engine_sizes(settings: Settings, engine: Engine) -> dict[str, int]:
    """Bytes of an engine's checkpoint, output, watch folder and rotated epochs."""
    rotated = sum(tree_bytes(Path(entry.path)) for entry in sorted_entries(settings.rotated)
                  if epoch_engine(entry.name) == engine)
    return {
        "checkpoint": tree_bytes(settings.checkpoint(engine)),
        "output": tree_bytes(settings.output(engine)),
        "watch": tree_bytes(settings.watch(engine)),
        "rotated": rotated,
    }


def tree_bytes(path: Path) -> int:
    """Apparent size of the files under ``path``; links are counted, never followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


