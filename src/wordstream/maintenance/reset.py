"""Reset of one engine: stop it, give back what it has not processed, start a new epoch, replay.

**Reset** (:func:`reset_engine`) starts a new epoch of one engine, counted from zero:

1. stop the driver through the stop protocol and wait for its lock; if it keeps running, withdraw the
   stop request and fail, having changed nothing;
2. hold the engine lock (and the lock inside its checkpoint) for the rest of the reset, so no driver
   can start on a half-reset engine, and withdraw the stop request: its driver is gone; and hold
   the staging lock (staging is the only other writer of the watch folder);
3. write the journal ``state/<engine>.reset.json`` before anything moves: the rotated folder this
   reset moves the epoch to (``rotated/<the epoch's name>``), the name of the next epoch and the
   replay choice. While it exists no driver starts (exit 3), and the next reset finishes this one: a
   reset killed at any point is completed by running it again (with the journal's replay choice),
   every step below being safe to do twice;
4. read what the engine processed from its own commit record (:mod:`wordstream.engines.commits`), not
   from the ledger: a driver killed right after a commit has not marked that batch's files yet;
5. make the old epoch self-consistent: remove the output the engine never committed (structured
   writes a batch's folder before its commit; a crash in between leaves a folder of files the
   commit log does not count, and those files are given back below), and temp folders;
6. reconcile the ledger with that record, then empty ``watch/<engine>/``: a file the engine processed
   is deleted (it is counted in the old epoch and its original is in the archive); any other file
   is given back to ``landing/`` under its original name, and its delivery becomes ``returned`` to
   the next epoch, so the next staging run publishes it again to this engine only, with a fresh
   mtime. The ledger is updated *before* the move: a crash in between leaves a file the next reset
   gives back again, never a file staging takes for a duplicate;
7. move the checkpoint, the output and the status file to
   ``rotated/<epoch name>/{checkpoint,output,status.json}``, kept until cleanup expires them, end
   the epoch in the ledger and start the next one (:meth:`~wordstream.ledger.Ledger.start_epoch`),
   and write a fresh status ``stopped`` that names the rotated epoch;
8. replay (:mod:`wordstream.maintenance.replay`): with ``all`` or ``since=…``, feed the archived
   originals in range to the new epoch of this engine, then remove the journal. A reset run again
   after the new epoch started goes straight to this step: the watch folder then holds the new
   epoch's files.

The other engine is never touched: each engine has its own watch folder.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from wordstream import Progress, control
from wordstream.durable import copy_atomically, fsync_dir, move_entry, unique_path, write_json_atomically
from wordstream.engines import commits
from wordstream.engines.spark_probes import CheckpointError
from wordstream.ledger import Ledger, epoch_name
from wordstream.maintenance.folders import sorted_entries
from wordstream.maintenance.replay import Replay, ReplayReport, feed_replay, parse_replay
from wordstream.settings import ENGINES, Engine, Settings, check_engine
from wordstream.staging import STAGING_LOCK, is_partial_name, is_temp_name

# What a reset rotates, and the name of each part inside the rotated epoch folder.
PARTS = ("checkpoint", "output", "status.json")


class ResetError(RuntimeError):
    """The reset could not run; the message says what was (not) changed."""


@dataclass
class ResetReport:
    engine: str
    was_running: bool = False
    resumed: bool = False  # an earlier reset of this engine was interrupted: this one finished it
    deleted: int = 0  # processed by the engine: counted in the old epoch, original archived
    returned: int = 0  # given back to landing for the new epoch
    temp_removed: int = 0
    uncommitted_removed: list[int] = field(default_factory=list)  # output batches never committed
    left: list[str] = field(default_factory=list)  # entries in watch that are not staging's files
    rotated_to: str | None = None  # a plain string: the DAG returns the report as XCom (JSON)
    epoch: str | None = None  # the new epoch's name
    replay: str = "none"
    replayed: int = 0  # archived originals fed to landing for the new epoch
    replay_skipped: int = 0  # in range, but the new epoch had the content already
    replay_missing: int = 0  # in the ledger, but no longer in the archive
    seconds: float = 0.0

    def line(self) -> str:
        rotated = f"rotated to {self.rotated_to}" if self.rotated_to else "nothing to rotate"
        uncommitted = (f"removed the output of {len(self.uncommitted_removed)} uncommitted batches, "
                       if self.uncommitted_removed else "")
        return (
            f"reset {self.engine}: {'stopped the driver, ' if self.was_running else ''}"
            f"{'finished an interrupted reset, ' if self.resumed else ''}{uncommitted}"
            f"deleted {self.deleted} processed files, gave back {self.returned} files to landing, "
            f"{rotated}; new epoch {self.epoch}"
            + (f", replay {self.replay}: fed {self.replayed} archived originals" if self.replay != "none"
               else "")
            + f"; {self.seconds:.2f}s"
        )


def reset_engine(settings: Settings, engine: str, wait_timeout: float,
                 progress: Progress = print, replay: Replay | str = "none") -> ResetReport:
    """Stop ``engine`` and start a new epoch, fed with ``replay`` (see the module docstring)."""
    checked = check_engine(engine)
    wanted = replay if isinstance(replay, Replay) else parse_replay(replay)  # before anything moves
    started = time.monotonic()
    report = ResetReport(checked, was_running=control.is_running(settings.state, checked),
                         replay=str(wanted))
    token = control.request_stop(settings.state, checked)
    if report.was_running:
        progress(f"asked {checked} to stop; waiting up to {wait_timeout:g}s")
    if not control.wait_until_stopped(settings.state, checked, wait_timeout):
        control.clear_stop(settings.state, checked, token)
        raise ResetError(
            f"{checked} is still running after {wait_timeout:g}s (lock "
            f"{control.lock_path(settings.state, checked)} held); the stop request was withdrawn "
            "and nothing was changed"
        )
    # A driver starting now finds the stop request and exits at once: wait for it, within budget.
    lock_wait = max(2.0, wait_timeout - (time.monotonic() - started))
    try:
        with ExitStack() as locks:
            locks.enter_context(control.hold_lock(settings.state, checked, wait_seconds=lock_wait))
            control.clear_stop(settings.state, checked, token)
            if settings.checkpoint(checked).is_dir():
                locks.enter_context(control.hold_checkpoint_lock(settings.checkpoint(checked)))
            try:  # staging is the only other writer of the watch folder
                locks.enter_context(control.hold_lock(settings.state, STAGING_LOCK,
                                                      wait_seconds=max(wait_timeout, 2.0)))
            except control.EngineBusyError as error:
                raise ResetError(f"{checked} is stopped but the reset cannot empty its watch folder: "
                                 f"{error}; nothing was changed, run the reset again") from None
            _reset_stopped(settings, checked, report, progress, wanted)
    except control.EngineBusyError as error:  # a driver that ignores the request, or another checkpoint user
        control.clear_stop(settings.state, checked, token)
        raise ResetError(f"{checked} cannot be reset now ({error}); nothing was changed") from None
    report.seconds = time.monotonic() - started
    if report.left:
        progress(f"left {len(report.left)} entries in {settings.watch(checked)} that staging did not "
                 f"write: {', '.join(repr(name) for name in report.left)}")
    progress(report.line())
    return report


def _reset_stopped(settings: Settings, engine: Engine, report: ResetReport, progress: Progress,
                   replay: Replay) -> None:
    """Steps 3 to 8 of the module docstring, with the engine stopped and the locks held."""
    settings.ensure_dirs()
    journal = control.reset_journal_path(settings.state, engine)
    ledger = Ledger(settings.ledger)
    plan = read_journal(journal)
    report.resumed = plan is not None
    if plan is None:
        ending = ledger.current_epoch(engine)
        plan = {"engine": engine, "epoch": str(settings.rotated / ending),
                "next_epoch": _next_epoch_name(settings, engine, ending), "replay": str(replay),
                "started_at": control.utc_now()}
        write_json_atomically(journal, plan)
        fsync_dir(journal.parent)
    else:
        if str(plan.get("replay", "none")) != str(replay):
            progress(f"the interrupted reset chose replay {plan.get('replay', 'none')}: finishing with "
                     f"that, not {replay}")
        progress(f"finishing an interrupted reset of {engine} (journal {journal})")
    epoch = Path(plan["epoch"])
    replay = parse_replay(str(plan.get("replay", "none")))
    report.replay, report.epoch = str(replay), str(plan.get("next_epoch") or "")
    if not report.epoch:  # a journal written before epochs were named
        ending = ledger.current_epoch(engine)
        report.epoch = plan["next_epoch"] = _next_epoch_name(settings, engine, ending)
        write_json_atomically(journal, plan)
    if ledger.current_epoch(engine) != report.epoch:
        _rotate(settings, engine, epoch, report, journal, ledger)
    report.rotated_to = str(epoch) if epoch.exists() else None
    control.write_status(
        settings.state, engine, state="stopped",
        reason=f"reset: the previous epoch was moved to {report.rotated_to}"
        if report.rotated_to else "reset: new epoch",
    )
    fed = feed_replay(settings, engine, report.epoch, replay, progress) if replay.kind != "none" \
        else ReplayReport()
    report.replayed, report.replay_skipped, report.replay_missing = fed.fed, fed.already, fed.missing
    if replay.kind != "none":
        progress(fed.line(engine, report.epoch, replay))
    journal.unlink()


def _rotate(settings: Settings, engine: Engine, epoch: Path, report: ResetReport, journal: Path,
            ledger: Ledger) -> None:
    """Steps 4 to 7: the old epoch made consistent, the watch folder emptied, the epoch rotated."""
    checkpoint, output = (_current(settings, engine, epoch, part) for part in PARTS[:2])
    as_of = control.utc_now()
    try:
        processed = commits.processed_files(engine, checkpoint, output)
    except CheckpointError as error:
        if report.resumed:
            raise ResetError(f"cannot tell which files {engine} processed: {error}; the interrupted "
                             f"reset is still unfinished ({journal})") from None
        journal.unlink()  # nothing has moved yet
        raise ResetError(f"cannot tell which files {engine} processed: {error}; nothing was "
                         "changed") from None
    report.uncommitted_removed = commits.discard_uncommitted(engine, checkpoint, output)
    ending = ledger.current_epoch(engine)
    ledger.reconcile(engine, processed, commits.watch_names(settings.watch(engine)), as_of)
    assert report.epoch is not None
    empty_watch(settings, engine, processed, report, report.epoch)
    rotate_epoch(settings, engine, epoch)
    ledger.start_epoch(engine, ending, report.epoch)


def _next_epoch_name(settings: Settings, engine: Engine, ending: str) -> str:
    """A name for the next epoch that neither the ending one nor a rotated folder has."""
    name = unique_path(settings.rotated, epoch_name(engine, datetime.now(UTC))).name
    return name if name != ending else unique_path(settings.rotated, f"{name}-1").name


def read_journal(journal: Path) -> dict[str, str] | None:
    """The plan of an interrupted reset, or None if no reset is unfinished."""
    try:
        plan: dict[str, str] = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return plan


def _current(settings: Settings, engine: Engine, epoch: Path, part: str) -> Path:
    """Where a part of the old epoch is now: still in place, or already moved into ``epoch``."""
    live = settings.checkpoint(engine) if part == "checkpoint" else settings.output(engine)
    moved = epoch / part
    return moved if not os.path.lexists(live) and os.path.lexists(moved) else live


def empty_watch(settings: Settings, engine: Engine, processed: set[str], report: ResetReport,
                next_epoch: str | None = None) -> None:
    """Delete the processed files of ``watch/<engine>/``, give every other file back to landing
    (returned to ``next_epoch``; None: the current one)."""
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
            elif entry.name in processed:
                os.unlink(entry.path)
                report.deleted += 1
            else:
                delivery = ledger.delivery_for_watch(engine, entry.name)
                original = ledger.original_name(engine, entry.name) if delivery else None
                name = original if original and _is_landing_name(original) else entry.name
                if delivery is not None:
                    ledger.mark_returned(engine, entry.name, next_epoch)  # before the move (docstring)
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


def rotate_epoch(settings: Settings, engine: Engine, epoch: Path) -> Path | None:
    """Move checkpoint, output and status of ``engine`` into ``epoch`` (what is not there yet).

    Returns ``epoch``, or None when the engine had nothing to rotate.
    """
    live = {"checkpoint": settings.checkpoint(engine), "output": settings.output(engine),
            "status.json": control.status_path(settings.state, engine)}
    present = [(live[part], epoch / part) for part in PARTS if os.path.lexists(live[part])]
    for source, dest in present:
        if os.path.lexists(dest):
            raise ResetError(f"both {source} and {dest} exist: a driver wrote a new epoch during an "
                             "unfinished reset; move one of them away and run the reset again")
    if not present and not epoch.exists():
        return None
    epoch.mkdir(parents=True, exist_ok=True)
    for source, dest in present:
        move_entry(source, dest)
    os.utime(epoch)  # cleanup ages the epoch from its rotation
    return epoch


def epoch_engine(name: str) -> Engine | None:
    """The engine of a rotated epoch folder name (``<engine>-<timestamp>``)."""
    for engine in ENGINES:
        if name.startswith(f"{engine}-"):
            return engine
    return None


