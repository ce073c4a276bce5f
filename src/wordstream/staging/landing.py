"""The landing folder as staging sees it: which entries are stable, and when each was first seen.

A regular file is taken when its name is not hidden/temporary/partial, its mtime is at least
``stable_seconds`` old, and two looks at least ``RECHECK_SECONDS`` apart found the same inode, size
and mtime, the second after it became stable (the re-check). The first look is the earliest one on
record (:class:`Looks`): the sensor's (see :class:`LandingObservation`), the staging loop's scans
while the file waited out its stability window, or the scan of the run itself followed by a pause
of ``RECHECK_SECONDS``. Everything here only reads (lstat: links are never followed).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wordstream.settings import Settings
from wordstream.staging.names import is_partial_name

RECHECK_SECONDS = 0.5


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
    ctime_ns: int = 0

    @classmethod
    def from_stat(cls, path: Path, st: os.stat_result) -> Candidate:
        return cls(path.name, path, _kind(st.st_mode), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino,
                   st.st_ctime_ns)

    @property
    def key(self) -> tuple[str, int, int, int, int]:
        """What a :class:`LandingObservation` records of a file."""
        return (self.name, self.size, self.mtime_ns, self.dev, self.ino)

    def same_as(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.dev, self.ino, self.size, self.mtime_ns)

    def untouched(self, st: os.stat_result) -> bool:
        """:meth:`same_as`, and not written to since this look, even by a producer who put the mtime back.

        Every write (and every change of links, owner or mode) sets the inode's ctime to the current
        time, and no process can set it back. Since Linux 6.13 (multigrain timestamps: ext4, xfs,
        btrfs, tmpfs) a ctime that was looked at is followed by a distinct one at the next change
        (measured here: 0 of 20,000 writes right after a stat kept the ctime). An older kernel takes
        a coarse clock (a few ms): a write in the same tick as the change this look saw could go
        unseen, which needs a producer writing within milliseconds of a change that left size and
        mtime as they were for the whole stability window.
        """
        return self.same_as(st) and st.st_ctime_ns == self.ctime_ns


@dataclass
class LandingScan:
    ready: list[Candidate] = field(default_factory=list)  # regular files old enough
    odd: list[Candidate] = field(default_factory=list)  # symlinks and other non-regular entries
    directories: list[str] = field(default_factory=list)
    fresh: list[Candidate] = field(default_factory=list)  # regular files modified too recently
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
                scan.fresh.append(Candidate.from_stat(Path(entry.path), st))
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


class Looks:
    """When each landing file was first seen as it is now: the first look of its re-check.

    A file is known by its :attr:`Candidate.key` (name, size, mtime, device, inode): a file that changed
    is a new file here, not seen before. A file found with the same key ``RECHECK_SECONDS`` or more
    after its first look has passed the re-check without a pause of its own.
    """

    def __init__(self, first: dict[tuple[str, int, int, int, int], float] | None = None) -> None:
        self.first = dict(first or {})

    def note(self, candidates: Sequence[Candidate], now: float) -> None:
        """A look at every regular file of a scan; files no longer there (or changed) are forgotten."""
        self.first = {c.key: self.first.get(c.key, now) for c in candidates}

    def since(self, candidate: Candidate) -> float | None:
        """When the file was first seen as it is now; None when never."""
        return self.first.get(candidate.key)

    def rechecked(self, candidate: Candidate, now: float, recheck_seconds: float) -> bool:
        """Whether a look at ``now`` finding the file as it is completes its re-check."""
        first = self.first.get(candidate.key)
        return first is not None and first <= now - recheck_seconds


# -- the sensor's observation ---------------------------------------------------------------------
OBSERVED_MAX = 1_000  # files named in one observation (an XCom); more are re-checked by the pause


@dataclass(frozen=True)
class LandingObservation:
    """What the sensor saw: the landing files it fired for (lstat), when each was first seen, and when.

    The sensor hands it to the staging task, where the first looks it names are the first looks of
    those files (:meth:`looks`). A file that staging's own scan finds unchanged (same inode, size and
    mtime) was unchanged since then, the hand-over between the two tasks included, which is the
    re-check the pause would make: staging waits only for what is left of ``RECHECK_SECONDS`` since
    that first look (nothing once the hand-over took that long). A file the sensor did not see, or
    saw differently, gets its first look from staging's scan. Both tasks run on the same machine (one
    clock, one file system); an observation from elsewhere simply matches nothing.
    """

    seen_at: float
    files: tuple[tuple[str, int, int, int, int], ...]  # (name, size, mtime_ns, dev, ino)
    waiting: int  # files it fired for and odd entries in landing when the sensor looked
    first_seen: tuple[float, ...] = ()  # per file; empty: every file first seen at seen_at

    @classmethod
    def of(cls, candidates: Sequence[Candidate], odd: int, looks: Looks,
           seen_at: float) -> LandingObservation:
        chosen = candidates[:OBSERVED_MAX]
        return cls(seen_at, tuple(c.key for c in chosen), len(candidates) + odd,
                   tuple(looks.since(c) or seen_at for c in chosen))

    def looks(self) -> Looks:
        """The sensor's looks as the first looks of the files it saw."""
        return Looks(dict(zip(self.files, self.first_seen or [self.seen_at] * len(self.files), strict=True)))

    def to_xcom(self) -> dict[str, Any]:
        return {"seen_at": self.seen_at, "files": [list(f) for f in self.files], "waiting": self.waiting,
                "first_seen": list(self.first_seen)}

    @classmethod
    def from_xcom(cls, value: Any) -> LandingObservation | None:
        """The observation pushed by the sensor; None for anything else (e.g. an older sensor's count)."""
        try:
            files = tuple((str(n), int(s), int(m), int(d), int(i)) for n, s, m, d, i in value["files"])
            first = tuple(float(t) for t in value.get("first_seen") or ())
            if first and len(first) != len(files):
                return None
            return cls(float(value["seen_at"]), files, int(value["waiting"]), first)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


# The sensor's pokes all run in one process: its looks are kept here from one poke to the next.
SENSOR_LOOKS = Looks()


def observe_landing(settings: Settings, lead_seconds: float = 0.0,
                    looks: Looks | None = None) -> LandingObservation | None:
    """The sensor's poke: an observation when a stable file (or an odd entry) is waiting, or a fresh
    file will be stable within ``lead_seconds``; else None.

    Firing ``lead_seconds`` early lets the hand-over to the staging task overlap the end of the
    file's stability window (the staging task waits for the rest). ``looks``, kept across pokes
    (:data:`SENSOR_LOOKS`), dates each file's first look back to the first poke that saw it as it is,
    so its re-check may be over when the staging task starts. Only reads; a missing landing folder is
    nothing waiting.
    """
    looks = Looks() if looks is None else looks
    now = time.time()
    scan = scan_landing(settings.landing, now, settings.stable_seconds)
    looked = time.time()  # after the scan: no file was seen later than this
    looks.note([*scan.ready, *scan.fresh], looked)
    soon = [c for c in scan.fresh if c.mtime_ns / 1e9 + settings.stable_seconds <= looked + lead_seconds]
    if not scan.ready and not scan.odd and not soon:
        return None
    return LandingObservation.of([*scan.ready, *soon], len(scan.odd), looks, looked)

