"""Reset of one engine: stop it, give back what it has not processed, start a new epoch from zero.

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
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from wordstream import Progress, control
from wordstream.durable import copy_atomically, move_entry, unique_path
from wordstream.ledger import Ledger
from wordstream.maintenance.folders import sorted_entries
from wordstream.settings import ENGINES, Engine, Settings, check_engine
from wordstream.staging import STAGING_LOCK, is_partial_name, is_temp_name


class ResetError(RuntimeError):
    """The reset could not run; the message says what was (not) changed."""


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
        for entry in sorted_entries(folder):
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
                give_back(Path(entry.path), unique_path(settings.landing, name))
                report.returned += 1


def give_back(path: Path, dest: Path) -> None:
    """Move a watch file to ``dest`` in landing, as a file of its own.

    Staging publishes one inode to every engine (hard links), so a watch file may be the other
    engine's file too: it is copied (mtime kept) and its watch name removed, never moved, or a
    producer overwriting that landing name in place would rewrite the other engine's file.
    """
    st = os.lstat(path)
    if st.st_nlink > 1:
        copy_atomically(path, dest, mtime_ns=st.st_mtime_ns)
        os.unlink(path)
    else:
        move_entry(path, dest)


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


