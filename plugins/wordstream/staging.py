"""Staging: stable files from ``data/landing/`` become validated, atomic copies in each watch folder.

This is the only writer of ``data/watch/<engine>/``. One :func:`stage` call handles every stable file
in landing (thousands are fine) and returns a :class:`StageReport`:

1. **Stable only.** A regular file is taken when its name is not hidden/temporary/partial (``.x``,
   ``_x``, ``*.tmp``, ``*._COPYING_``, ``*.part``), its mtime is at least ``stable_seconds`` old and
   its size and mtime do not change across a short re-check. Symlinks, FIFOs, sockets and devices are
   never followed or opened: the entry itself is moved to quarantine. Directories are left alone
   (staging does not recurse) and named once per run in the progress output.
2. **Validated while hashed**, in one streaming read of 1 MiB chunks: readable, non-empty, at most
   ``max_file_bytes``, UTF-8 (incremental decoder, so a character split across chunks is fine), no NUL
   byte, no line longer than ``max_line_bytes`` (an engine that gets one runs out of memory on every
   retry). A reject goes to ``data/quarantine/<id>-<safe name>`` with ``<that name>.reason.txt``.
3. **Deduplicated by sha256**, per engine: content every engine already has (or had, processed) is a
   ``duplicate`` and is only archived. A delivery ``returned`` by a reset is published again to that
   engine only.
4. **Published atomically**: copied into ``.<name>.tmp`` in the same watch folder, fsync'ed, mtime set
   to now (the DStream source ignores files older than its remember window), renamed to
   ``<sha256[:16]>-<safe name>.txt``. Each engine gets its own copy, not a hard link: linked files
   share one mtime, so touching one engine's file would touch the other's.
5. **Archived**: the original moves to ``data/archive/<YYYY-MM-DD UTC>/<id>-<safe name>``.

Crash safety: runs are serialised by ``data/state/staging.lock`` (also taken by a reset while it empties
a watch folder). The ledger records each intent before the file operation it announces, and
:func:`recover` starts every run by finishing what a dead run left: hidden temp files are removed, a
``publishing`` delivery whose final watch file exists is recorded as published (never copied again),
one without it is withdrawn, and a ``landed`` row whose original was already moved gets its final
status. A landing file with an unfinished row is resumed, not taken for a duplicate. Final watch names
appear only by rename, so no partial file is ever visible under a name Spark reads.

Names: every name staging writes is built from the content hash and a sanitised copy of the landing
name (only ``[A-Za-z0-9._-]``, bounded, never hidden), so no landing name can escape ``data_dir`` or
collide. A missing landing folder is created (with the rest of the layout) when the data directory
exists; a missing data directory is an error, because it means a wrong ``WORDSTREAM_DATA_DIR``.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from wordstream import control
from wordstream.ledger import FileRow, FileStatus, Ledger
from wordstream.settings import ENGINES, Settings, check_engine

STAGING_LOCK = "staging"  # control.hold_lock(state, STAGING_LOCK) -> data/state/staging.lock
CHUNK_BYTES = 1024 * 1024
# UTF-8 is checked in slices: decoding a whole 1 MiB chunk makes a throw-away string of up to 4 MiB,
# and glibc's malloc, once such blocks are freed, grows the heap with the file instead of reusing it.
DECODE_BYTES = 64 * 1024
PARTIAL_SUFFIXES = (".tmp", "._COPYING_", ".part")
SAFE_NAME_MAX = 80
RECHECK_SECONDS = 0.5
PROGRESS_EVERY = 500

Progress = Callable[[str], None]


class StagingError(RuntimeError):
    """Staging cannot run at all (for example: the data directory does not exist)."""


class ContentChangedError(RuntimeError):
    """The file's bytes changed between validation and copy: it was not stable after all."""


@dataclass
class StageReport:
    """What one :func:`stage` call did; the DAG logs it and emits Asset events from ``published``."""

    staged: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped_unstable: int = 0
    ignored: int = 0  # hidden, temporary or partial names: not files for us (yet)
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENGINES, 0))
    seconds: float = 0.0

    @property
    def handled(self) -> int:
        return self.staged + self.duplicates + self.quarantined

    def line(self) -> str:
        published = ", ".join(f"{engine} {count}" for engine, count in self.published.items())
        return (
            f"staged {self.staged}, duplicates {self.duplicates}, quarantined {self.quarantined}, "
            f"skipped {self.skipped_unstable} unstable, ignored {self.ignored} partial/hidden; "
            f"published: {published}; {self.seconds:.2f}s"
        )


# -- names ---------------------------------------------------------------------------------------
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


def temp_name(final_name: str) -> str:
    """Hidden, so neither Spark source lists a file that is still being written."""
    return f".{final_name}.tmp"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


# -- landing scan --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A landing entry as first seen (lstat: links are never followed)."""

    name: str
    path: Path
    kind: str  # file, symlink, fifo, socket, device
    size: int
    mtime_ns: int
    dev: int
    ino: int

    @classmethod
    def from_stat(cls, path: Path, st: os.stat_result) -> Candidate:
        return cls(path.name, path, _kind(st.st_mode), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)

    def same_as(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.dev, self.ino, self.size, self.mtime_ns)


@dataclass
class LandingScan:
    ready: list[Candidate] = field(default_factory=list)  # regular files old enough
    odd: list[Candidate] = field(default_factory=list)  # symlinks and other non-regular entries
    directories: list[str] = field(default_factory=list)
    fresh: int = 0  # regular files modified too recently
    ignored: int = 0  # hidden/temp/partial names


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    return "device"


def scan_landing(landing: Path, now: float, stable_seconds: float) -> LandingScan:
    """Classify the top level of ``landing``; regular files oldest first (arrival order).

    Only reads (the sensor calls it every second): a missing landing folder is an empty scan.
    """
    scan = LandingScan()
    cutoff_ns = int((now - stable_seconds) * 1e9)
    try:
        listing = os.scandir(landing)
    except FileNotFoundError:
        return scan
    with listing as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                scan.directories.append(entry.name)
            elif is_partial_name(entry.name):
                scan.ignored += 1
            elif not stat.S_ISREG(st.st_mode):
                scan.odd.append(Candidate.from_stat(Path(entry.path), st))
            elif st.st_mtime_ns > cutoff_ns:
                scan.fresh += 1
            else:
                scan.ready.append(Candidate.from_stat(Path(entry.path), st))
    scan.ready.sort(key=lambda c: (c.mtime_ns, c.name))
    scan.odd.sort(key=lambda c: c.name)
    scan.directories.sort()
    return scan


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def still_unchanged(candidates: Sequence[Candidate]) -> tuple[list[Candidate], int]:
    """The candidates whose size and mtime did not change since the scan, and how many did."""
    stable: list[Candidate] = []
    for candidate in candidates:
        try:
            st = os.lstat(candidate.path)
        except FileNotFoundError:
            continue
        if candidate.same_as(st):
            stable.append(candidate)
    return stable, len(candidates) - len(stable)


# -- validation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inspection:
    sha256: str | None  # None when rejected: a hash of a partial read would mean nothing
    size: int  # bytes read
    problem: str | None


_LINE_BREAK = re.compile(rb"[\r\n]")


def _long_line(chunk: bytes, offset: int, line_start: int, limit: int) -> tuple[int, int | None]:
    """Scan one chunk (at ``offset`` in the file) for the line breaks the engines split on.

    Returns where the line that continues into the next chunk starts, and the start of a line longer
    than ``limit`` bytes (None if there is none so far).
    """
    if limit >= len(chunk):  # only a line that spans chunks can be too long: look at the ends
        breaks = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
        if not breaks:
            return line_start, line_start if offset + len(chunk) - line_start > limit else None
        if offset + min(breaks) - line_start > limit:
            return line_start, line_start
        return offset + max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1, None
    for match in _LINE_BREAK.finditer(chunk):
        if offset + match.start() - line_start > limit:
            return line_start, line_start
        line_start = offset + match.end()
    return line_start, line_start if offset + len(chunk) - line_start > limit else None


def inspect_content(fd: int, max_bytes: int, max_line_bytes: int | None = None) -> Inspection:
    """Hash and validate an open file in one pass of 1 MiB chunks (constant memory).

    ``max_line_bytes`` rejects a file with a longer line (a line break is ``\\n`` or ``\\r``): the
    engines hold each line, and its split into words, in memory at once.
    """
    hasher = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    total = 0
    line_start = 0
    while chunk := os.read(fd, CHUNK_BYTES):
        start = total
        total += len(chunk)
        if total > max_bytes:
            return Inspection(None, total, f"too large: more than {max_bytes} bytes")
        nul = chunk.find(b"\x00")
        if nul >= 0:
            return Inspection(None, total, f"binary: NUL byte at offset {start + nul}")
        if max_line_bytes is not None:
            line_start, too_long = _long_line(chunk, start, line_start, max_line_bytes)
            if too_long is not None:
                return Inspection(None, total, f"line too long: more than {max_line_bytes} bytes without "
                                               f"a line break, from byte offset {too_long}")
        view = memoryview(chunk)
        for part in range(0, len(chunk), DECODE_BYTES):
            buffered = len(decoder.getstate()[0])
            try:
                decoder.decode(view[part:part + DECODE_BYTES])
            except UnicodeDecodeError as error:
                offset = start + part - buffered + error.start
                return Inspection(None, total, f"not valid UTF-8: {error.reason} at byte offset {offset}")
        hasher.update(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return Inspection(None, total, "not valid UTF-8: truncated multi-byte character at the end")
    if total == 0:
        return Inspection(None, 0, "empty file")
    return Inspection(hasher.hexdigest(), total, None)


# -- file operations -----------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable, not just visible (once per run: it costs a journal commit)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_atomically(source_fd: int, targets: Sequence[Path], sha256: str) -> None:
    """Copy the open source to every target in one read: hidden temp, fsync, mtime now, rename.

    The copy is hashed again and must equal ``sha256``, the content that was validated; otherwise
    nothing is published and :class:`ContentChangedError` is raised.
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
                _write_all(out, chunk)
        if hasher.hexdigest() != sha256:
            raise ContentChangedError("content changed between validation and copy")
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
    for temp, target in zip(temps, targets, strict=True):
        os.utime(temp)  # now: the copy is new to the engines whatever the original's age
        os.replace(temp, target)  # the directory is fsync'ed once at the end of the run


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


def write_text_atomically(path: Path, text: str) -> None:
    temp = path.with_name(temp_name(path.name))
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def reason_path(quarantined: Path) -> Path:
    return quarantined.with_name(f"{quarantined.name}.reason.txt")


def check_inside(path: Path, root: Path) -> Path:
    """Refuse any destination outside ``root`` (defence in depth; names are sanitised already)."""
    absolute = Path(os.path.abspath(path))
    if os.path.commonpath([absolute, os.path.abspath(root)]) != os.path.abspath(root):
        raise StagingError(f"refusing to write outside {root}: {path}")
    return absolute


# -- one run -------------------------------------------------------------------------------------
class _Run:
    """The state of one staging run: settings, ledger, report, clock."""

    def __init__(self, settings: Settings, progress: Progress) -> None:
        self.settings = settings
        self.ledger = Ledger(settings.ledger)
        self.progress = progress
        self.report = StageReport()
        self.touched: set[Path] = set()  # folders with renames, made durable at the end of the run

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.settings.data_dir)

    def absolute(self, relative: str) -> Path:
        return check_inside(self.settings.data_dir / relative, self.settings.data_dir)

    # -- recovery --------------------------------------------------------------------------------
    def recover(self) -> None:
        """Finish what a run that died left behind (see the module docstring)."""
        removed = 0
        for engine in ENGINES:
            with os.scandir(self.settings.watch(engine)) as entries:
                for entry in entries:
                    if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)
                        removed += 1
        for claim in self.ledger.pending_claims():
            if os.path.lexists(self.settings.watch(check_engine(claim.engine)) / claim.watch_name):
                self.ledger.record_published(claim.sha256, claim.engine)
            else:
                self.ledger.drop_claim(claim.sha256, claim.engine)
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

    # -- per entry -------------------------------------------------------------------------------
    def quarantine(self, candidate: Candidate, problem: str) -> None:
        """Move the entry itself (never a link target) to quarantine, with a reason file."""
        size = candidate.size if candidate.kind == "file" else None
        row = self.ledger.begin(candidate.name, None, size)
        if row.moved_to:
            dest = self.absolute(row.moved_to)
        else:
            dest = check_inside(
                unique_path(self.settings.quarantine, f"{row.id}-{safe_name(candidate.name)}"),
                self.settings.data_dir)
            self.ledger.plan_move(row.id, self.relative(dest), problem)
        self.settings.quarantine.mkdir(parents=True, exist_ok=True)
        write_text_atomically(reason_path(dest), _reason_line(problem, candidate.name))
        move_entry(candidate.path, dest)
        self.touched.update((dest.parent, candidate.path.parent))
        self.ledger.finish(row.id, "quarantined", reason=problem)
        self.report.quarantined += 1

    def stage_file(self, candidate: Candidate) -> None:
        try:
            fd = os.open(candidate.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # gone since the scan: nothing to do
        except OSError as error:
            if error.errno == errno.ELOOP:  # replaced by a symlink since the scan
                self.report.skipped_unstable += 1
            else:
                self.quarantine(candidate, f"unreadable: {error.strerror}")
            return
        try:
            if not candidate.same_as(os.fstat(fd)):
                self.report.skipped_unstable += 1
                return
            inspection = self.inspect(candidate, fd)
            if inspection is None:
                self.report.skipped_unstable += 1
            elif inspection.problem is not None:
                self.quarantine(candidate, inspection.problem)
            else:
                assert inspection.sha256 is not None
                self.publish(candidate, fd, inspection.sha256)
        finally:
            os.close(fd)

    def inspect(self, candidate: Candidate, fd: int) -> Inspection | None:
        """Validate; None when the file turned out to be still changing."""
        limit = self.settings.max_file_bytes
        if candidate.size > limit:
            return Inspection(None, candidate.size, f"too large: {candidate.size} bytes > limit {limit}")
        try:
            inspection = inspect_content(fd, limit, max_line_bytes=self.settings.max_line_bytes)
        except OSError as error:
            return Inspection(None, 0, f"unreadable: {error.strerror}")
        if inspection.problem is None and inspection.size != candidate.size:
            return None
        if inspection.problem and inspection.problem.startswith("too large") and candidate.size <= limit:
            return None  # it grew while being read
        return inspection

    def publish(self, candidate: Candidate, fd: int, sha256: str) -> None:
        row = self.ledger.begin(candidate.name, sha256, candidate.size)
        watch_name = watch_name_for(sha256, candidate.name)
        deliveries = self.ledger.deliveries(sha256)
        needed = [engine for engine in ENGINES
                  if engine not in deliveries or deliveries[engine].state == "returned"]
        to_write: dict[str, Path] = {}
        for engine in needed:
            self.ledger.claim(row.id, sha256, engine, watch_name)
            target = self.settings.watch(engine) / watch_name
            if not os.path.lexists(target):  # exists: published by a run that died before recording it
                to_write[engine] = target
        if to_write:
            self.touched.update(target.parent for target in to_write.values())
            try:
                publish_atomically(fd, list(to_write.values()), sha256)
            except ContentChangedError:
                for engine in needed:
                    if engine in to_write:
                        self.ledger.drop_claim(sha256, engine)
                    else:
                        self.ledger.record_published(sha256, engine)
                self.ledger.forget(row.id)
                self.report.skipped_unstable += 1
                return
        for engine in needed:
            self.ledger.record_published(sha256, engine)
            self.report.published[engine] += 1
        status = self.outcome(row.id)
        reason = None
        if status == "duplicate":
            owner = self.ledger.file(next(iter(deliveries.values())).file_id)
            reason = f"same content as file #{owner.id} ({owner.name!r})" if owner else "same content"
            watch_name = next(iter(deliveries.values())).watch_name
        self.archive(candidate, row, status, reason, watch_name)
        if status == "staged":
            self.report.staged += 1
        else:
            self.report.duplicates += 1

    def archive(self, candidate: Candidate, row: FileRow, status: FileStatus, reason: str | None,
                watch_name: str) -> None:
        """Move the original to the archive and write its final status."""
        if row.moved_to:
            dest = self.absolute(row.moved_to)
        else:
            folder = self.settings.archive / datetime.now(UTC).strftime("%Y-%m-%d")
            dest = check_inside(unique_path(folder, f"{row.id}-{safe_name(candidate.name)}"),
                                self.settings.data_dir)
            self.ledger.plan_move(row.id, self.relative(dest))
        try:
            unchanged = candidate.same_as(os.lstat(candidate.path))
        except FileNotFoundError:
            unchanged = False
        if not unchanged:  # a producer replaced or removed the entry: leave the newcomer alone
            self.ledger.finish(row.id, status, reason="landing entry replaced before archiving; "
                               "original not archived", watch_name=watch_name)
            return
        move_entry(candidate.path, dest)
        self.touched.update((dest.parent, candidate.path.parent))
        self.ledger.finish(row.id, status, reason=reason, watch_name=watch_name)

    def stage_all(self, recheck_seconds: float, progress_every: int) -> StageReport:
        """Recover, scan, re-check, then quarantine or stage every entry."""
        self.recover()
        scan = scan_landing(self.settings.landing, time.time(), self.settings.stable_seconds)
        if scan.directories:
            self.progress(f"left {len(scan.directories)} directories in landing alone (staging does not "
                          f"recurse): {', '.join(repr(name) for name in scan.directories)}")
        ready = scan.ready
        changed = 0
        if ready and recheck_seconds > 0:
            _pause(recheck_seconds)
            ready, changed = still_unchanged(ready)
        report = self.report
        report.skipped_unstable = scan.fresh + changed
        report.ignored = scan.ignored
        for candidate in scan.odd:
            self.quarantine(candidate, f"not a regular file: {candidate.kind} (not followed)")
        total = len(ready)
        for index, candidate in enumerate(ready, start=1):
            self.stage_file(candidate)
            if index % progress_every == 0 and index < total:
                self.progress(f"staging: {index}/{total} files ({report.staged} staged, "
                              f"{report.duplicates} duplicates, {report.quarantined} quarantined)")
        return report


def _is_component(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


def _reason_line(reason: str, name: str) -> str:
    """One line whatever the name contains (repr escapes newlines)."""
    return f"{' '.join(reason.split())} (landing name {name!r})\n"


def _check_layout(settings: Settings) -> None:
    if not settings.data_dir.is_dir():
        raise StagingError(f"data directory {settings.data_dir} does not exist (check WORDSTREAM_DATA_DIR)")
    settings.ensure_dirs()


def stage(settings: Settings, progress: Progress = print, *, recheck_seconds: float = RECHECK_SECONDS,
          progress_every: int = PROGRESS_EVERY, lock_wait: float = 30.0) -> StageReport:
    """Stage every stable landing file (see the module docstring); safe to re-run at any time.

    Raises :class:`StagingError` when the data directory is missing and
    :class:`~wordstream.control.EngineBusyError` when another staging run (or a reset) holds the
    staging lock for longer than ``lock_wait`` seconds.
    """
    started = time.monotonic()
    _check_layout(settings)
    with control.hold_lock(settings.state, STAGING_LOCK, wait_seconds=lock_wait):
        run = _Run(settings, progress)
        with run.ledger.session():
            report = run.stage_all(recheck_seconds, progress_every)
        for folder in sorted(run.touched):
            fsync_dir(folder)
        report.seconds = time.monotonic() - started
        progress(report.line())
        return report

