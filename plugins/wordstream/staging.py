"""Staging: stable files from ``data/landing/`` become validated, atomic copies in each watch folder.

This is the only writer of ``data/watch/<engine>/``. One :func:`stage` call handles every stable file
in landing (thousands are fine) and returns a :class:`StageReport`:

1. **Stable only.** A regular file is taken when its name is not hidden/temporary/partial (``.x``,
   ``_x``, ``*.tmp``, ``*._COPYING_``, ``*.part``), its mtime is at least ``stable_seconds`` old and
   its size and mtime do not change across a short re-check: a pause of ``RECHECK_SECONDS``, or the
   hand-over from the sensor task that saw the file (see :class:`LandingObservation`). Symlinks,
   FIFOs, sockets and devices are never followed or opened: the entry itself is moved to quarantine.
   Directories are left alone (staging does not recurse) and named once per run in the progress
   output.
2. **Validated while hashed**, in one streaming read of 1 MiB chunks: readable, non-empty, at most
   ``max_file_bytes``, UTF-8 (incremental decoder, so a character split across chunks is fine), no NUL
   byte, no line longer than ``max_line_bytes`` (an engine that gets one runs out of memory on every
   retry). A reject goes to ``data/quarantine/<id>-<safe name>`` with ``<that name>.reason.txt``.
3. **Deduplicated by sha256**, per engine: content every engine already has (or had, processed) is a
   ``duplicate`` and is only archived. A delivery ``returned`` by a reset is published again to that
   engine only.
4. **Published atomically**, a group of files at a time (up to ``GROUP_FILES`` files or
   ``GROUP_BYTES``): copied into ``.<name>.tmp`` in the same watch folder, the copy hashed again and
   compared with the validated content (a producer who rewrote the file in place is caught even when
   size and mtime are kept), the group's copies made durable by one ``syncfs`` (an fsync per copy
   where ``syncfs`` does not exist), mtime set to now (the DStream source ignores files older than its
   remember window), renamed to ``<sha256[:16]>-<safe name>.txt``, and the watch folders fsync'ed
   before anything is recorded as published or archived. Each engine gets its own copy, not a hard
   link: linked files share one mtime, so touching one engine's file would touch the other's.
5. **Archived**: the original moves to ``data/archive/<YYYY-MM-DD UTC>/<id>-<safe name>``.

Crash safety: runs are serialised by ``data/state/staging.lock`` (also taken by a reset while it empties
a watch folder). The ledger records each intent before the file operation it announces (the intents of
a group in one transaction, before any of its files is renamed or moved), and
:func:`recover` starts every run by finishing what a dead run left: hidden temp files are removed, a
``publishing`` delivery whose final watch file exists is recorded as published (never copied again),
one without it is withdrawn, and a ``landed`` row whose original was already moved gets its final
status. A landing file with an unfinished row is resumed, not taken for a duplicate. Final watch names
appear only by rename of a complete, durable temp copy, so no partial file is ever visible under a
name Spark reads, not even after a power cut.

Names: every name staging writes is built from the content hash and a sanitised copy of the landing
name (only ``[A-Za-z0-9._-]``, bounded, never hidden), so no landing name can escape ``data_dir`` or
collide. A missing landing folder is created (with the rest of the layout) when the data directory
exists; a missing data directory is an error, because it means a wrong ``WORDSTREAM_DATA_DIR``.
"""

from __future__ import annotations

import codecs
import ctypes
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
from typing import Any

from wordstream import control
from wordstream.ledger import Delivery, FileRow, FileStatus, Ledger
from wordstream.settings import ENGINES, Engine, Settings, check_engine

STAGING_LOCK = "staging"  # control.hold_lock(state, STAGING_LOCK) -> data/state/staging.lock
CHUNK_BYTES = 1024 * 1024
# UTF-8 is checked in slices: decoding a whole 1 MiB chunk makes a throw-away string of up to 4 MiB,
# and glibc's malloc, once such blocks are freed, grows the heap with the file instead of reusing it.
DECODE_BYTES = 64 * 1024
PARTIAL_SUFFIXES = (".tmp", "._COPYING_", ".part")
SAFE_NAME_MAX = 80
RECHECK_SECONDS = 0.5
# Files are published in groups: one ledger transaction per step and one disk flush per group instead
# of several per file. A group also ends after GROUP_BYTES, so a few huge files are not all copied
# before the first of them is made durable.
GROUP_FILES = 100
GROUP_BYTES = 64 * 1024 * 1024
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

    @property
    def key(self) -> tuple[str, int, int, int, int]:
        """What a :class:`LandingObservation` records of a file."""
        return (self.name, self.size, self.mtime_ns, self.dev, self.ino)

    def same_as(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.dev, self.ino, self.size, self.mtime_ns)


@dataclass
class LandingScan:
    ready: list[Candidate] = field(default_factory=list)  # regular files old enough
    odd: list[Candidate] = field(default_factory=list)  # symlinks and other non-regular entries
    directories: list[str] = field(default_factory=list)
    fresh: int = 0  # regular files modified too recently
    next_ready_ns: int | None = None  # when the first of the fresh files will be old enough
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
                ready_ns = st.st_mtime_ns + int(stable_seconds * 1e9)
                scan.next_ready_ns = min(ready_ns, scan.next_ready_ns or ready_ns)
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


# -- the sensor's observation ---------------------------------------------------------------------
OBSERVED_MAX = 1_000  # files named in one observation (an XCom); more are re-checked by the pause


@dataclass(frozen=True)
class LandingObservation:
    """What the sensor saw: the ready landing files (lstat) and when it looked.

    The sensor hands it to the staging task. A file that staging's own scan finds unchanged (same
    inode, size and mtime) was unchanged for the whole hand-over between the two tasks, which is the
    re-check the pause would make: when every ready file is such a file, staging waits only for what
    is left of ``RECHECK_SECONDS`` since the sensor looked (nothing once the hand-over took that
    long), then re-checks. So the guarantee stays what it was: a taken file had no write for
    ``stable_seconds`` and then no change across at least ``RECHECK_SECONDS``. When a ready file was
    not seen by the sensor, or seen differently, the whole pause is made, as without an observation.
    Both tasks run on the same machine (one clock, one file system); an observation from elsewhere
    simply matches nothing.
    """

    seen_at: float
    files: tuple[tuple[str, int, int, int, int], ...]  # (name, size, mtime_ns, dev, ino)
    waiting: int  # ready files and odd entries in landing when the sensor looked

    @classmethod
    def of(cls, scan: LandingScan, seen_at: float) -> LandingObservation:
        files = tuple(c.key for c in scan.ready[:OBSERVED_MAX])
        return cls(seen_at, files, len(scan.ready) + len(scan.odd))

    def to_xcom(self) -> dict[str, Any]:
        return {"seen_at": self.seen_at, "files": [list(f) for f in self.files], "waiting": self.waiting}

    @classmethod
    def from_xcom(cls, value: Any) -> LandingObservation | None:
        """The observation pushed by the sensor; None for anything else (e.g. an older sensor's count)."""
        try:
            files = tuple((str(n), int(s), int(m), int(d), int(i)) for n, s, m, d, i in value["files"])
            return cls(float(value["seen_at"]), files, int(value["waiting"]))
        except (KeyError, TypeError, ValueError):
            return None


def observe_landing(settings: Settings, wait_seconds: float = 0.0) -> LandingObservation | None:
    """The sensor's poke: an observation when a stable file (or an odd entry) is waiting, else None.

    When nothing is ready yet but a fresh file will be old enough within ``wait_seconds``, it waits
    for that moment and looks again, so a file is noticed when it becomes stable, not up to a poke
    interval later. Only reads; a missing landing folder is nothing waiting.
    """
    now = time.time()
    scan = scan_landing(settings.landing, now, settings.stable_seconds)
    if not scan.ready and not scan.odd and scan.next_ready_ns is not None:
        delay = scan.next_ready_ns / 1e9 - now
        if 0 <= delay <= wait_seconds:
            time.sleep(delay + 0.001)
            now = time.time()
            scan = scan_landing(settings.landing, now, settings.stable_seconds)
    if not scan.ready and not scan.odd:
        return None
    return LandingObservation.of(scan, now)


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


def flush_filesystem(folder: Path) -> None:
    """Make every file written so far on ``folder``'s file system durable, in one flush (syncfs).

    One flush for a whole group of copies instead of one fsync per copy: each fsync waits for the
    disk on its own. Where ``syncfs`` does not exist, :func:`copy_to_temps` fsyncs each copy instead.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC is None or _LIBC.syncfs(fd) != 0:
            error = 0 if _LIBC is None else ctypes.get_errno()
            raise OSError(error, f"syncfs failed: {os.strerror(error)}", os.fspath(folder))
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


def copy_to_temps(source_fd: int, targets: Sequence[Path], sha256: str) -> list[Path]:
    """Copy the open source, in one read, to the hidden temp name of every target; return the temps.

    The copy is hashed again and must equal ``sha256``, the content that was validated; otherwise no
    temp is left and :class:`ContentChangedError` is raised. The temps are not durable yet (see
    :func:`flush_filesystem`) unless ``syncfs`` is missing, in which case each is fsync'ed here.
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
        if _LIBC is None:
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
    return temps


def publish_temps(temps: Sequence[Path], targets: Sequence[Path]) -> None:
    """Give durable temp copies their final names: mtime now, rename (the directory fsync follows)."""
    for temp, target in zip(temps, targets, strict=True):
        os.utime(temp)  # now: the copy is new to the engines whatever the original's age
        os.replace(temp, target)


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
        self.withdrawn: set[int] = set()  # rows of this group whose bytes changed before the copy

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
            if not candidate.same_as(os.fstat(fd)):
                inspection = None
            else:
                inspection = self.inspect(candidate, fd)
        except BaseException:
            os.close(fd)
            raise
        if inspection is None:
            os.close(fd)
            self.report.skipped_unstable += 1
            return None
        item.problem, item.sha256 = inspection.problem, inspection.sha256
        return item

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

    def stage_group(self, items: list[_Item]) -> None:
        """Quarantine or publish and archive a group of inspected entries, in five steps.

        1. One ledger transaction records every intent: the file rows, the quarantine destinations
           and the ``publishing`` deliveries.
        2. The copies are written under hidden temp names and made durable by one flush.
        3. The temps are renamed to their final watch names; the watch folders are fsync'ed.
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
                if item.fd is not None:
                    os.close(item.fd)
                for temp in item.temps:
                    temp.unlink(missing_ok=True)  # left only when the group failed half way

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
        item.needed = [engine for engine in ENGINES
                       if engine not in item.deliveries or item.deliveries[engine].state == "returned"]
        for engine in item.needed:
            self.ledger.claim(item.row.id, item.sha256, engine, item.watch_name)
            target = self.settings.watch(engine) / item.watch_name
            if not os.path.lexists(target):  # exists: published by a run that died before recording it
                item.to_write[engine] = target

    def write_copies(self, items: list[_Item]) -> None:
        """Temp copies of every item, one flush per file system, then the renames and folder fsyncs."""
        written = [item for item in items if item.to_write]
        for item in written:
            assert item.fd is not None and item.sha256 is not None
            try:
                item.temps = copy_to_temps(item.fd, list(item.to_write.values()), item.sha256)
            except ContentChangedError:
                item.changed = True
        written = [item for item in written if not item.changed]
        folders = {target.parent for item in written for target in item.to_write.values()}
        if not folders:
            return
        if _LIBC is not None:
            devices: set[int] = set()
            for folder in sorted(folders):
                if (device := os.stat(folder).st_dev) not in devices:
                    devices.add(device)
                    flush_filesystem(folder)
        for item in written:
            publish_temps(item.temps, list(item.to_write.values()))
            item.temps = []
        for folder in sorted(folders):
            fsync_dir(folder)  # the final names are durable before anything is recorded or archived

    def record(self, item: _Item) -> None:
        """Record the deliveries of one item and plan the move of its original."""
        if item.problem is not None or item.row is None:
            return
        assert item.sha256 is not None
        if item.changed:  # bytes changed after validation: nothing of it was published
            for engine in item.needed:
                if engine in item.to_write:
                    self.ledger.drop_claim(item.sha256, engine)
                else:
                    self.ledger.record_published(item.sha256, engine)
            self.ledger.forget(item.row.id)
            self.withdrawn.add(item.row.id)
            self.report.skipped_unstable += 1
            return
        for engine in item.needed:
            self.ledger.record_published(item.sha256, engine)
        if any(d.state == "publishing" and d.file_id in self.withdrawn for d in item.deliveries.values()):
            # Same content as a file of this group whose bytes changed: not published after all. The
            # row stays for the next run, which resumes this file and publishes it.
            self.ledger.forget(item.row.id)
            self.report.skipped_unstable += 1
            item.row = None
            return
        for engine in item.needed:
            self.report.published[engine] += 1
        item.status = self.outcome(item.row.id)
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

    def stage_all(self, recheck_seconds: float, progress_every: int,
                  observed: LandingObservation | None = None) -> StageReport:
        """Recover, scan, re-check, then quarantine or stage every entry, a group at a time."""
        self.recover()
        scan = scan_landing(self.settings.landing, time.time(), self.settings.stable_seconds)
        if scan.directories:
            self.progress(f"left {len(scan.directories)} directories in landing alone (staging does not "
                          f"recurse): {', '.join(repr(name) for name in scan.directories)}")
        ready = scan.ready
        changed = 0
        pause = recheck_seconds if ready else 0.0
        if observed is not None and ready:
            # Files the sensor saw and this scan finds unchanged were unchanged since the sensor looked:
            # only what is missing of the re-check is left to wait (nothing after a long hand-over).
            seen = set(observed.files)
            if all(c.key in seen for c in ready):
                pause = min(recheck_seconds, observed.seen_at + recheck_seconds - time.time())
        if pause > 0:
            _pause(pause)
            ready, changed = still_unchanged(ready)
        report = self.report
        report.skipped_unstable = scan.fresh + changed
        report.ignored = scan.ignored
        for candidate in scan.odd:
            self.quarantine(candidate, f"not a regular file: {candidate.kind} (not followed)")
        total = len(ready)
        done = 0
        while done < total:
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
                    if item.fd is not None:
                        os.close(item.fd)
                raise
            self.withdrawn.clear()
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
    temps: list[Path] = field(default_factory=list)
    changed: bool = False  # bytes changed between validation and copy
    status: FileStatus | None = None
    reason: str | None = None


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
          progress_every: int = PROGRESS_EVERY, lock_wait: float = 30.0,
          observed: LandingObservation | None = None) -> StageReport:
    """Stage every stable landing file (see the module docstring); safe to re-run at any time.

    ``observed`` is the sensor's :class:`LandingObservation`: the files in it that are unchanged are
    taken without the re-check pause.

    Raises :class:`StagingError` when the data directory is missing and
    :class:`~wordstream.control.EngineBusyError` when another staging run (or a reset) holds the
    staging lock for longer than ``lock_wait`` seconds.
    """
    started = time.monotonic()
    _check_layout(settings)
    with control.hold_lock(settings.state, STAGING_LOCK, wait_seconds=lock_wait):
        run = _Run(settings, progress)
        with run.ledger.session():
            report = run.stage_all(recheck_seconds, progress_every, observed)
        for folder in sorted(run.touched):
            fsync_dir(folder)
        report.seconds = time.monotonic() - started
        progress(report.line())
        return report

