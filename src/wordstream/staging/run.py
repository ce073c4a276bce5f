"""One staging run: the transaction that takes stable landing files into every watch folder.

:func:`stage` handles every stable file in landing (thousands are fine), a group at a time, and
returns a :class:`StageReport`. The ledger records each intent before the file operation it
announces (the intents of a group in one transaction, before any of its files is renamed or moved),
and every run starts by finishing what a dead run left (:meth:`_Run.recover`). See
:mod:`wordstream.staging` for the whole contract.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from wordstream import Progress, control
from wordstream.durable import (
    HAS_SYNCFS,
    flush_filesystem,
    fsync_dir,
    move_entry,
    unique_path,
    write_text_atomically,
)
from wordstream.ledger import Delivery, FileRow, FileStatus, Ledger
from wordstream.settings import ENGINES, Engine, Settings, check_engine
from wordstream.staging.landing import (
    RECHECK_SECONDS,
    Candidate,
    LandingObservation,
    Looks,
    _pause,
    scan_landing,
    still_unchanged,
)
from wordstream.staging.names import is_temp_name, reason_path, safe_name, watch_name_for
from wordstream.staging.publish import open_copy, publish_copy
from wordstream.staging.validation import Inspection, inspect_content

STAGING_LOCK = "staging"  # control.hold_lock(state, STAGING_LOCK) -> data/state/staging.lock
# Files are published in groups: one ledger transaction per step and one disk flush per group instead
# of several per file. A group also ends after GROUP_BYTES, so a few huge files are not all copied
# before the first of them is made durable.
GROUP_FILES = 100
GROUP_BYTES = 64 * 1024 * 1024
SYNCFS_FROM_FILES = 2  # a group of one file fsyncs its copy instead (see _Run.write_copies)
PROGRESS_EVERY = 500



class StagingError(RuntimeError):
    """Staging cannot run at all (for example: the data directory does not exist)."""


@dataclass
class StageReport:
    """What one :func:`stage` call did; the staging DAG logs it and returns it as its XCom."""

    staged: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped_unstable: int = 0
    ignored: int = 0  # hidden, temporary or partial names: not files for us (yet)
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENGINES, 0))
    seconds: float = 0.0
    waves: int = 1  # stage() calls summed up in this report (see wordstream.staging.loop)

    @property
    def handled(self) -> int:
        return self.staged + self.duplicates + self.quarantined

    def add(self, wave: StageReport) -> None:
        """Count ``wave`` into this report (a run's total); ``seconds`` is the caller's to set.

        Skipped and ignored files are those of the latest wave: a file waits through several.
        """
        self.staged += wave.staged
        self.duplicates += wave.duplicates
        self.quarantined += wave.quarantined
        self.skipped_unstable = wave.skipped_unstable
        self.ignored = wave.ignored
        self.waves += wave.waves
        for engine, count in wave.published.items():
            self.published[engine] = self.published.get(engine, 0) + count

    def event_extra(self) -> dict[str, object] | None:
        """The extra of the ``wordstream_watch`` asset event; None when nothing was published.

        Published counts per engine (a delivery given back by a reset counts again for its engine),
        then what happened to the landing files.
        """
        if not any(self.published.values()):
            return None
        return {"published": dict(self.published), "staged": self.staged, "duplicates": self.duplicates,
                "quarantined": self.quarantined, "waves": self.waves}

    def line(self) -> str:
        published = ", ".join(f"{engine} {count}" for engine, count in self.published.items())
        return (
            f"staged {self.staged}, duplicates {self.duplicates}, quarantined {self.quarantined}, "
            f"skipped {self.skipped_unstable} unstable, ignored {self.ignored} partial/hidden; "
            f"published: {published}; {self.seconds:.2f}s"
        )


def check_inside(path: Path, root: Path) -> Path:
    """Refuse any destination outside ``root`` (defence in depth; names are sanitised already)."""
    absolute = Path(os.path.abspath(path))
    if os.path.commonpath([absolute, os.path.abspath(root)]) != os.path.abspath(root):
        raise StagingError(f"refusing to write outside {root}: {path}")
    return absolute


class _Run:
    """The state of one staging run: settings, ledger, report, clock."""

    def __init__(self, settings: Settings, progress: Progress) -> None:
        self.settings = settings
        self.ledger = Ledger(settings.ledger)
        self.progress = progress
        self.report = StageReport()
        self.watch = {engine: settings.watch(engine) for engine in ENGINES}  # looked up per file
        self.touched: set[Path] = set()  # folders with renames, made durable at the end of the run
        self.spare: list[tuple[int, Path]] = []  # emptied copies, for the next files (see spare_copy)

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.settings.data_dir)

    def absolute(self, relative: str) -> Path:
        return check_inside(self.settings.data_dir / relative, self.settings.data_dir)

    # -- recovery --------------------------------------------------------------------------------
    def recover(self, sweep_temps: bool = True) -> None:
        """Finish what a run that died left behind (see the module docstring).

        ``sweep_temps`` lists the watch folders (they hold every published file until cleanup: 116 ms
        for 2 x 50,000 files) for hidden temp files. The staging loop sweeps on its first wave only:
        within a run, only a process that took the lock between two waves and died can leave a temp
        file, and a temp file is never read by Spark and is swept by the next run. The ledger is
        settled on every wave.
        """
        removed = 0
        # Hidden temp files: copies into the watch folders, reason files in quarantine (whose other
        # entries all have sanitised names, never hidden).
        for folder in (*map(self.settings.watch, ENGINES), self.settings.quarantine) if sweep_temps else ():
            with os.scandir(folder) as entries:
                for entry in entries:
                    if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)
                        removed += 1
        for claim in self.ledger.pending_claims():
            if os.path.lexists(self.settings.watch(check_engine(claim.engine)) / claim.watch_name):
                self.ledger.record_published(claim.sha256, claim.engine, claim.epoch)
            else:
                self.ledger.drop_claim(claim.sha256, claim.engine, claim.epoch)
        finished = 0
        for row in self.ledger.unfinished_files():
            if _is_component(row.name) and os.path.lexists(self.settings.landing / row.name):
                continue  # the landing scan resumes it
            finished += 1
            dest = self.absolute(row.moved_to) if row.moved_to else None
            if dest is not None and os.path.lexists(dest):
                if self.is_quarantine(dest):
                    if not reason_path(dest).exists():
                        write_text_atomically(reason_path(dest), _reason_line(row.reason or "", row.name))
                    self.ledger.finish(row.id, "quarantined")
                else:
                    self.ledger.finish(row.id, self.outcome(row.id))
            elif self.ledger.owns_delivery(row.id):
                self.ledger.finish(row.id, "staged", reason="original left landing before it was archived")
            else:
                self.ledger.forget(row.id)
        if removed or finished:
            self.progress(f"recovered an unfinished run: removed {removed} temp files, "
                          f"finished {finished} ledger rows")

    def is_quarantine(self, path: Path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(self.settings.quarantine))

    def outcome(self, file_id: int) -> FileStatus:
        return "staged" if self.ledger.owns_delivery(file_id) else "duplicate"

    # -- copies ----------------------------------------------------------------------------------
    def spare_copy(self, item: _Item) -> None:
        """Empty the copy of a file that is not published (a reject, a duplicate, a changing file) and
        keep it for the next file. A new file per duplicate, removed at once, made every creation in
        the folder slow (0.4 ms each over 3,000 duplicates in a row, 16 times a creation otherwise:
        ext4 skips recently freed inodes): staging took duplicates 2.5 times slower than before
        copies were written by validation; with spares, as fast."""
        if item.copy is None or item.copy_fd is None:
            return
        os.ftruncate(item.copy_fd, 0)
        os.lseek(item.copy_fd, 0, os.SEEK_SET)
        self.spare.append((item.copy_fd, item.copy))
        item.copy, item.copy_fd = None, None

    def remove_spares(self) -> None:
        while self.spare:
            fd, path = self.spare.pop()
            os.close(fd)
            path.unlink(missing_ok=True)

    # -- per entry -------------------------------------------------------------------------------
    def quarantine(self, candidate: Candidate, problem: str) -> None:
        """Move the entry itself (never a link target) to quarantine, with a reason file."""
        self.stage_group([_Item(candidate, None, problem=problem)])

    def open_and_inspect(self, candidate: Candidate) -> _Item | None:
        """Open and validate one landing file; None when it is gone or turned out to be changing."""
        try:
            fd = os.open(candidate.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # gone since the scan: nothing to do
        except OSError as error:
            if error.errno == errno.ELOOP:  # replaced by a symlink since the scan
                self.report.skipped_unstable += 1
                return None
            return _Item(candidate, None, problem=f"unreadable: {error.strerror}")
        item = _Item(candidate, fd)
        try:
            inspection = self.inspect(item) if candidate.untouched(os.fstat(fd)) else None
            if inspection is None or inspection.problem is not None:
                self.spare_copy(item)
        except BaseException:
            item.close()
            raise
        if inspection is None:
            item.close()
            self.report.skipped_unstable += 1
            return None
        item.problem, item.sha256 = inspection.problem, inspection.sha256
        return item

    def inspect(self, item: _Item) -> Inspection | None:
        """Validate and copy (into the first engine's watch folder, under a hidden name); None when
        the file turned out to be still changing: written to while it was read, or of another size."""
        candidate, limit = item.candidate, self.settings.max_file_bytes
        if candidate.size > limit:
            return Inspection(None, candidate.size, f"too large: {candidate.size} bytes > limit {limit}")
        assert item.fd is not None
        spare = self.spare.pop() if self.spare else None
        item.copy_fd, item.copy = spare or open_copy(self.watch[ENGINES[0]])
        inspection = inspect_content(item.fd, limit, max_line_bytes=self.settings.max_line_bytes,
                                     copy_to=item.copy_fd)
        after = os.fstat(item.fd)
        if not candidate.untouched(after) and not (after.st_nlink == 0 and candidate.same_as(after)):
            return None  # written to while read; a file deleted meanwhile is taken (it is gone)
        if inspection.problem is None and inspection.size != candidate.size:
            return None
        if inspection.problem and inspection.problem.startswith("too large") and candidate.size <= limit:
            return None  # it grew while being read
        return inspection

    def stage_group(self, items: list[_Item]) -> None:
        """Quarantine or publish and archive a group of inspected entries, in five steps.

        1. One ledger transaction records every intent: the file rows, the quarantine destinations
           and the ``publishing`` deliveries (the copies, written by validation, are still hidden).
        2. The copies are made durable.
        3. Each copy gets its final watch names (hard links); the watch folders are fsync'ed.
        4. One transaction records the deliveries ``published`` and where each original goes.
        5. The originals move to the archive or the quarantine; one transaction finishes the rows.

        A crash between any two steps leaves what :meth:`recover` finishes: unannounced temps, intents
        without a final file, final files not yet recorded, or moved originals without a status.
        """
        try:
            with self.ledger.transaction():
                for item in items:
                    self.plan(item)
            self.write_copies(items)
            with self.ledger.transaction():
                for item in items:
                    self.record(item)
            for item in items:
                self.move_original(item)
            with self.ledger.transaction():
                for item in items:
                    self.finish(item)
        finally:
            for item in items:
                item.close()

    def plan(self, item: _Item) -> None:
        """Record the intent for one entry: its row, and its quarantine path or its deliveries."""
        candidate = item.candidate
        if item.problem is not None:
            size = candidate.size if candidate.kind == "file" else None
            item.row = self.ledger.begin(candidate.name, None, size)
            if item.row.moved_to:
                item.dest = self.absolute(item.row.moved_to)
            else:
                item.dest = check_inside(
                    unique_path(self.settings.quarantine, f"{item.row.id}-{safe_name(candidate.name)}"),
                    self.settings.data_dir)
                self.ledger.plan_move(item.row.id, self.relative(item.dest), item.problem)
            return
        assert item.sha256 is not None
        item.row = self.ledger.begin(candidate.name, item.sha256, candidate.size)
        item.watch_name = watch_name_for(item.sha256, candidate.name)
        item.deliveries = self.ledger.deliveries(item.sha256)
        item.needed = needed_engines(item.deliveries)
        for engine in item.needed:
            self.ledger.claim(item.row.id, item.sha256, engine, item.watch_name)
            target = self.watch[engine] / item.watch_name
            if not os.path.lexists(target):  # exists: published by a run that died before recording it
                item.to_write[engine] = target
        if not item.to_write:
            self.spare_copy(item)  # a duplicate: emptied before any of it is written back to the disk

    def write_copies(self, items: list[_Item]) -> None:
        """Every item's copy made durable, then published under its final names; the folder fsyncs.

        The copy of a file is one inode for all its engines (hard links; see
        :mod:`~wordstream.staging.publish`): half the bytes to write and flush of a copy per engine,
        and four directory entries to make per file where a temp copy per engine renamed took six.
        A group of ``SYNCFS_FROM_FILES`` files or more is made durable by one flush of the file
        system the copies are on (``syncfs``); a smaller one (a single file: what a wave of the
        staging loop finds under a trickle) by an fsync of its copy. A ``syncfs`` also waits for
        every other writer's dirty data on that file system (Spark's checkpoints and output,
        producers): 40 ms with 100 MB of it, where the fsync of a small copy took well under a
        millisecond.
        """
        written = [item for item in items if item.to_write]
        if not written:
            return
        if HAS_SYNCFS and len(written) >= SYNCFS_FROM_FILES:
            flush_filesystem(self.watch[ENGINES[0]])  # where open_copy makes every copy
        else:
            for item in written:
                assert item.copy_fd is not None
                os.fsync(item.copy_fd)
        for item in written:
            assert item.copy is not None
            publish_copy(item.copy, list(item.to_write.values()))
            item.copy = None
        for folder in sorted({target.parent for item in written for target in item.to_write.values()}):
            fsync_dir(folder)  # the final names are durable before anything is recorded or archived

    def record(self, item: _Item) -> None:
        """Record the deliveries of one item and plan the move of its original."""
        if item.problem is not None or item.row is None:
            return
        assert item.sha256 is not None
        for engine in item.needed:
            self.ledger.record_published(item.sha256, engine)
            self.report.published[engine] += 1
        # It claimed deliveries of its own, or else one of a crashed run's rows may own some.
        item.status = "staged" if item.needed else self.outcome(item.row.id)
        if item.status == "duplicate":
            first = next(iter(item.deliveries.values()))
            owner = self.ledger.file(first.file_id)
            item.reason = f"same content as file #{owner.id} ({owner.name!r})" if owner else "same content"
            item.watch_name = first.watch_name
        if item.row.moved_to:
            item.dest = self.absolute(item.row.moved_to)
        else:
            folder = self.settings.archive / datetime.now(UTC).strftime("%Y-%m-%d")
            item.dest = check_inside(unique_path(folder, f"{item.row.id}-{safe_name(item.candidate.name)}"),
                                     self.settings.data_dir)
            self.ledger.plan_move(item.row.id, self.relative(item.dest))

    def move_original(self, item: _Item) -> None:
        """Quarantine a reject with its reason file, or archive the original of a published file."""
        if item.row is None or item.dest is None:
            return
        candidate, dest = item.candidate, item.dest
        if item.problem is not None:
            self.settings.quarantine.mkdir(parents=True, exist_ok=True)
            write_text_atomically(reason_path(dest), _reason_line(item.problem, candidate.name))
        else:
            try:
                unchanged = candidate.same_as(os.lstat(candidate.path))
            except FileNotFoundError:
                unchanged = False
            if not unchanged:  # a producer replaced or removed the entry: leave the newcomer alone
                item.reason = "landing entry replaced before archiving; original not archived"
                return
        move_entry(candidate.path, dest)
        self.touched.update((dest.parent, candidate.path.parent))

    def finish(self, item: _Item) -> None:
        """The final status of one item's row."""
        if item.row is None or (item.problem is None and item.status is None):
            return
        if item.problem is not None:
            self.ledger.finish(item.row.id, "quarantined", reason=item.problem)
            self.report.quarantined += 1
            return
        assert item.status is not None
        self.ledger.finish(item.row.id, item.status, reason=item.reason, watch_name=item.watch_name)
        if item.status == "staged":
            self.report.staged += 1
        else:
            self.report.duplicates += 1

    def stage_all(self, recheck_seconds: float, progress_every: int, looks: Looks,
                  wait_for_recheck: bool = True, first_of_run: bool = True,
                  should_stop: Callable[[], bool] = lambda: False) -> StageReport:
        """Recover, scan, re-check, then quarantine or stage every entry, a group at a time.

        This scan is a look at every regular file, noted in ``looks``. A ready file whose first look
        was ``recheck_seconds`` ago or more has passed its re-check with it. The others are re-checked
        after a pause that ends ``recheck_seconds`` after the latest of their first looks (this scan,
        for a file seen now for the first time), or, without ``wait_for_recheck``, left for a later
        run. Only ``first_of_run`` names the directories left in landing and sweeps temp files
        (see :meth:`recover`). ``should_stop`` is asked between groups.
        """
        self.recover(sweep_temps=first_of_run)
        now = time.time()
        scan = scan_landing(self.settings.landing, now, self.settings.stable_seconds)
        looks.note([*scan.ready, *scan.fresh], time.time())  # after the scan: no file was seen later
        if scan.directories and first_of_run:
            self.progress(f"left {len(scan.directories)} directories in landing alone (staging does not "
                          f"recurse): {', '.join(repr(name) for name in scan.directories)}")
        ready: list[Candidate] = []
        unchecked: list[Candidate] = []
        for candidate in scan.ready:
            (ready if looks.rechecked(candidate, now, recheck_seconds) else unchecked).append(candidate)
        changed = len(unchecked)
        if unchecked and wait_for_recheck:
            due = max(looks.since(c) or now for c in unchecked) + recheck_seconds
            if (pause := min(recheck_seconds, due - time.time())) > 0:
                _pause(pause)
            rechecked, changed = still_unchanged(unchecked)
            ready = sorted([*ready, *rechecked], key=lambda c: (c.mtime_ns, c.name))
        report = self.report
        report.skipped_unstable = len(scan.fresh) + changed
        report.ignored = scan.ignored
        for candidate in scan.odd:
            self.quarantine(candidate, f"not a regular file: {candidate.kind} (not followed)")
        total = len(ready)
        done = 0
        while done < total:
            if should_stop():
                self.progress(f"stopping: {total - done} stable files left in landing for the next run")
                break
            # A group ends at a progress mark, so the progress lines name the same counts as ever.
            end = min(total, done + GROUP_FILES, (done // progress_every + 1) * progress_every)
            items: list[_Item] = []
            group_bytes = 0
            try:
                for candidate in ready[done:end]:
                    done += 1
                    if (item := self.open_and_inspect(candidate)) is not None:
                        items.append(item)
                        group_bytes += candidate.size
                    if group_bytes >= GROUP_BYTES:
                        break
            except BaseException:
                for item in items:
                    item.close()
                raise
            if items:
                self.stage_group(items)
            if done % progress_every == 0 and done < total:
                self.progress(f"staging: {done}/{total} files ({report.staged} staged, "
                              f"{report.duplicates} duplicates, {report.quarantined} quarantined)")
        return report


@dataclass
class _Item:
    """One landing entry on its way through a group (see :meth:`_Run.stage_group`)."""

    candidate: Candidate
    fd: int | None  # open landing file; None for entries that are never read
    problem: str | None = None  # the quarantine reason of a reject
    sha256: str | None = None
    row: FileRow | None = None
    dest: Path | None = None  # where the original goes: quarantine or archive
    watch_name: str = ""
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # as found before this file's claims
    needed: list[Engine] = field(default_factory=list)  # engines this file publishes to
    to_write: dict[Engine, Path] = field(default_factory=dict)  # engine -> final watch path to copy to
    copy: Path | None = None  # the copy written by validation, under its random hidden name
    copy_fd: int | None = None
    status: FileStatus | None = None
    reason: str | None = None

    def drop_copy(self) -> None:
        """Close the copy; remove it if it was not published (the group failed half way)."""
        if self.copy_fd is not None:
            os.close(self.copy_fd)
            self.copy_fd = None
        if self.copy is not None:
            self.copy.unlink(missing_ok=True)
            self.copy = None

    def close(self) -> None:
        """At the end of the group: close the files; remove the copy if it was not published."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.drop_copy()


def needed_engines(deliveries: dict[str, Delivery]) -> list[Engine]:
    """The engines a landing file of this content is published to, given its deliveries in each
    engine's current epoch: those it was returned to (a reset's give-back or a replay: that engine
    only), else every engine whose current epoch does not have it yet (the per-epoch dedupe)."""
    returned = [engine for engine in ENGINES
                if engine in deliveries and deliveries[engine].state == "returned"]
    return returned or [engine for engine in ENGINES if engine not in deliveries]


def _is_component(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


def _reason_line(reason: str, name: str) -> str:
    """One line whatever the name contains (repr escapes newlines)."""
    return f"{' '.join(reason.split())} (landing name {name!r})\n"


def check_layout(settings: Settings) -> None:
    """The data directory exists (else :class:`StagingError`); every folder of its layout does too."""
    if not settings.data_dir.is_dir():
        raise StagingError(f"data directory {settings.data_dir} does not exist (check WORDSTREAM_DATA_DIR)")
    settings.ensure_dirs()


def stage(settings: Settings, progress: Progress = print, *, recheck_seconds: float = RECHECK_SECONDS,
          progress_every: int = PROGRESS_EVERY, lock_wait: float = 30.0,
          observed: LandingObservation | Looks | None = None, wait_for_recheck: bool = True,
          first_of_run: bool = True, should_stop: Callable[[], bool] = lambda: False) -> StageReport:
    """Stage every stable landing file (see the module docstring); safe to re-run at any time.

    ``observed`` holds earlier looks at landing: the sensor's :class:`LandingObservation`, or the
    staging loop's :class:`Looks`. A file that one of them saw as it is now, ``recheck_seconds`` ago or
    more, is taken without the re-check pause. Without ``wait_for_recheck`` the other stable files
    are left for a later run instead of paused for. The staging loop passes ``first_of_run`` only to
    its first wave. ``should_stop`` is asked between groups: when it says yes, the files not reached
    stay in landing, untouched.

    Raises :class:`StagingError` when the data directory is missing and
    :class:`~wordstream.control.EngineBusyError` when another staging run (or a reset) holds the
    staging lock for longer than ``lock_wait`` seconds.
    """
    started = time.monotonic()
    check_layout(settings)
    looks = observed.looks() if isinstance(observed, LandingObservation) else observed or Looks()
    with control.hold_lock(settings.state, STAGING_LOCK, wait_seconds=lock_wait):
        run = _Run(settings, progress)
        with run.ledger.session():
            try:
                report = run.stage_all(recheck_seconds, progress_every, looks, wait_for_recheck,
                                       first_of_run, should_stop)
            finally:
                run.remove_spares()
        for folder in sorted(run.touched):
            fsync_dir(folder)
        report.seconds = time.monotonic() - started
        progress(report.line())
        return report
