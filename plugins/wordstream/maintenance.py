"""Reset and cleanup of the engines' files, as run by the streaming_maintenance DAG and the CLI.

No Airflow here: the DAG calls these functions and logs their reports.

**Reset** (:func:`reset_engine`) starts a new epoch of one engine, counted from zero:

1. stop the driver through the stop protocol and wait for its lock; if it keeps running, withdraw the
   stop request and fail, having changed nothing;
2. hold the engine lock for the rest of the reset, so no driver can start on a half-reset engine;
3. under the staging lock (staging is the only other writer of the watch folder), empty
   ``watch/<engine>/``: a file the engine processed is deleted (it is counted in the old epoch and its
   original is in the archive); any other file is given back to ``landing/`` under its original
   name, and its delivery becomes ``returned``, so the next staging run publishes it again to this
   engine only, with a fresh mtime. The ledger is updated *before* the move: a crash in between
   leaves a file the next reset gives back again, never a file staging takes for a duplicate;
4. move the checkpoint, the output and the status file together to
   ``rotated/<engine>-<UTC timestamp>/{checkpoint,output,status.json}``, kept until cleanup expires
   them, and write a fresh status ``stopped`` that names the rotated epoch.

The other engine is never touched: each engine has its own watch folder.

**Cleanup** (:func:`cleanup`) expires what is no longer needed and reports sizes. It never touches
the checkpoint, watch folder or rotated epochs of an engine whose lock is held.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from wordstream import control
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Engine, Settings, check_engine
from wordstream.staging import STAGING_LOCK, is_partial_name, is_temp_name, move_entry, unique_path

Progress = Callable[[str], None]

STALE_TEMP_SECONDS = 3600
MIN_WATCH_AGE_SECONDS = 3600
DAY_SECONDS = 86400


class ResetError(RuntimeError):
    """The reset could not run; the message says what was (not) changed."""


# -- reset ---------------------------------------------------------------------------------------
@dataclass
class ResetReport:
    engine: str
    was_running: bool = False
    deleted: int = 0  # processed by the engine: counted in the old epoch, original archived
    returned: int = 0  # given back to landing for the new epoch
    temp_removed: int = 0
    left: list[str] = field(default_factory=list)  # entries in watch that are not staging's files
    rotated_to: str | None = None  # a plain string: the DAG returns the report as XCom (JSON)
    seconds: float = 0.0

    def line(self) -> str:
        rotated = f"rotated to {self.rotated_to}" if self.rotated_to else "nothing to rotate"
        return (
            f"reset {self.engine}: {'stopped the driver, ' if self.was_running else ''}"
            f"deleted {self.deleted} processed files, gave back {self.returned} files to landing, "
            f"{rotated}; {self.seconds:.2f}s"
        )


def reset_engine(settings: Settings, engine: str, wait_timeout: float,
                 progress: Progress = print) -> ResetReport:
    """Stop ``engine`` and start a new epoch from zero (see the module docstring)."""
    checked = check_engine(engine)
    started = time.monotonic()
    report = ResetReport(checked, was_running=control.is_running(settings.state, checked))
    control.request_stop(settings.state, checked)
    if report.was_running:
        progress(f"asked {checked} to stop; waiting up to {wait_timeout:g}s")
    if not control.wait_until_stopped(settings.state, checked, wait_timeout):
        control.clear_stop(settings.state, checked)
        raise ResetError(
            f"{checked} is still running after {wait_timeout:g}s (lock "
            f"{control.lock_path(settings.state, checked)} held); the stop request was withdrawn "
            "and nothing was changed"
        )
    try:
        with control.hold_lock(settings.state, checked):
            control.clear_stop(settings.state, checked)
            settings.ensure_dirs()
            try:
                with control.hold_lock(settings.state, STAGING_LOCK, wait_seconds=max(wait_timeout, 2.0)):
                    empty_watch(settings, checked, report, progress)
            except control.EngineBusyError as error:
                raise ResetError(f"{checked} is stopped but the reset cannot empty its watch folder: "
                                 f"{error}; nothing else was changed, run the reset again") from None
            epoch = rotate_epoch(settings, checked)
            report.rotated_to = str(epoch) if epoch else None
            control.write_status(
                settings.state, checked, state="stopped",
                reason=f"reset: the previous epoch was moved to {report.rotated_to}"
                if report.rotated_to else "reset: new epoch",
            )
    except control.EngineBusyError as error:  # a driver started between the stop and the lock
        control.clear_stop(settings.state, checked)
        raise ResetError(f"{checked} started again during the reset ({error}); nothing was changed") from None
    report.seconds = time.monotonic() - started
    if report.left:
        progress(f"left {len(report.left)} entries in {settings.watch(checked)} that staging did not "
                 f"write: {', '.join(repr(name) for name in report.left)}")
    progress(report.line())
    return report


def empty_watch(settings: Settings, engine: Engine, report: ResetReport, progress: Progress) -> None:
    """Delete the processed files of ``watch/<engine>/``, give every other file back to landing."""
    ledger = Ledger(settings.ledger)
    folder = settings.watch(engine)
    with ledger.session():
        for entry in _entries(folder):
            if not entry.is_file(follow_symlinks=False):
                report.left.append(entry.name)
            elif is_temp_name(entry.name):
                os.unlink(entry.path)  # a copy a dead staging run never finished
                report.temp_removed += 1
            elif is_partial_name(entry.name):
                report.left.append(entry.name)  # hidden: no engine reads it, not ours
            else:
                delivery = ledger.delivery_for_watch(engine, entry.name)
                if delivery is not None and delivery.state == "processed":
                    os.unlink(entry.path)
                    report.deleted += 1
                    continue
                original = ledger.original_name(engine, entry.name) if delivery else None
                name = original if original and _is_landing_name(original) else entry.name
                if delivery is not None:
                    ledger.mark_returned(engine, entry.name)  # before the move: see the module docstring
                move_entry(Path(entry.path), unique_path(settings.landing, name))
                report.returned += 1


def _is_landing_name(name: str) -> bool:
    """A name staging will take again: one path component, not hidden or partial."""
    return bool(name) and "/" not in name and "\x00" not in name and name not in (".", "..") \
        and not is_partial_name(name)


def rotate_epoch(settings: Settings, engine: Engine) -> Path | None:
    """Move checkpoint, output and status of ``engine`` into a new folder under ``rotated/``."""
    parts = [
        (settings.checkpoint(engine), "checkpoint"),
        (settings.output(engine), "output"),
        (control.status_path(settings.state, engine), "status.json"),
    ]
    present = [(path, name) for path, name in parts if os.path.lexists(path)]
    if not present:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    epoch = unique_path(settings.rotated, f"{engine}-{stamp}")
    epoch.mkdir(parents=True)
    for path, name in present:
        move_entry(path, epoch / name)
    os.utime(epoch)  # cleanup ages the epoch from its rotation
    return epoch


def epoch_engine(name: str) -> Engine | None:
    """The engine of a rotated epoch folder name (``<engine>-<timestamp>``)."""
    for engine in ENGINES:
        if name.startswith(f"{engine}-"):
            return engine
    return None


# -- cleanup -------------------------------------------------------------------------------------
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

    for entry in _entries(settings.rotated):
        owner = epoch_engine(entry.name)
        if owner in idle and _age(entry, now) > retention:
            _remove(Path(entry.path))
            report.rotated_removed += 1

    processed = _processed_names(settings, idle)
    watch_age = max(MIN_WATCH_AGE_SECONDS, 2 * settings.dstream_remember_seconds)
    for engine in idle:
        for entry in _entries(settings.watch(engine)):
            if not entry.is_file(follow_symlinks=False):
                continue
            age = _age(entry, now)
            if is_temp_name(entry.name) and age > STALE_TEMP_SECONDS:
                os.unlink(entry.path)
                report.temp_removed += 1
            elif entry.name in processed[engine] and age > watch_age:
                os.unlink(entry.path)
                report.watch_removed += 1

    oldest_kept = (datetime.fromtimestamp(now, UTC) - timedelta(days=settings.retention_days)).date()
    for entry in _entries(settings.archive):
        day = _day(entry.name)
        if day is not None and day < oldest_kept and entry.is_dir(follow_symlinks=False):
            _remove(Path(entry.path))
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
    for entry in _entries(folder):
        if entry.name.endswith(".reason.txt"):
            continue
        reason = Path(entry.path + ".reason.txt")
        try:
            quarantined_at = reason.stat().st_mtime
        except FileNotFoundError:
            quarantined_at = entry.stat(follow_symlinks=False).st_mtime
        if quarantined_at < cutoff:
            _remove(Path(entry.path))
            reason.unlink(missing_ok=True)
            removed += 1
    for entry in _entries(folder):  # reason files whose entry is gone
        if entry.name.endswith(".reason.txt") and not os.path.lexists(entry.path[: -len(".reason.txt")]) \
                and entry.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(entry.path)
    return removed


def engine_sizes(settings: Settings, engine: Engine) -> dict[str, int]:
    """Bytes of an engine's checkpoint, output, watch folder and rotated epochs."""
    rotated = sum(tree_bytes(Path(entry.path)) for entry in _entries(settings.rotated)
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


# -- small helpers -------------------------------------------------------------------------------
def _entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of ``folder`` sorted by name; none if it does not exist."""
    try:
        with os.scandir(folder) as entries:
            found = sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        return iter(())
    return iter(found)


def _age(entry: os.DirEntry[str], now: float) -> float:
    return now - entry.stat(follow_symlinks=False).st_mtime


def _day(name: str) -> date | None:
    try:
        return datetime.strptime(name, "%Y-%m-%d").date()
    except ValueError:
        return None


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree; a link is removed itself, its target never."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
