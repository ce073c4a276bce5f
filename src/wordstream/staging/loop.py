"""One staging run that serves a sustained arrival: waves of :func:`~wordstream.staging.run.stage`.

The staging DAG's task calls :func:`stage_until`: it stages what is stable (one *wave*, one
:func:`~wordstream.staging.run.stage` call with its one-line report), waits for the next landing
file to become stable, stages again, and so on until its deadline (the DAG run's start plus
``WORDSTREAM_STAGING_RUN_SECONDS``); then the run ends and ``@continuous`` starts the next. So the
number of DAG runs is bounded (at most one per ``WORDSTREAM_STAGING_RUN_SECONDS``) whatever the
arrival rate, and a file that lands during a run is staged without a scheduler hand-over.

**The same stability rules, with looks taken while a file waits.** Between waves the loop scans
landing and records when it first saw each file as it is (:class:`~wordstream.staging.landing.Looks`).
A file is *due* when its mtime is ``stable_seconds`` old and its first look is ``RECHECK_SECONDS``
old; the wave's own scan is then the second look of its re-check. A file renamed into landing right
after it was written is seen on arrival, so its re-check is over before its stability window is:
it is staged the moment it has been quiet for ``stable_seconds``, with no re-check pause. A file
whose mtime was already old on arrival (``cp -p``, ``rsync -t``) is due ``RECHECK_SECONDS`` after it
was first seen, as with the pause. A later wave takes only due files; the others wait for the next.
The first wave of a run is a plain :func:`~wordstream.staging.run.stage` of what the sensor saw.

**When to look: inotify, else a poll.** The loop sleeps until the next file is due, the deadline,
or an inotify event on landing (a file closed after writing, renamed in, its attributes changed,
an entry created), whichever comes first; without inotify (another platform,
``WORDSTREAM_STAGING_INOTIFY=0``, or the watch could not be set) it scans every
``LOOK_SECONDS``. Events only decide *when* to scan, never *what* is stable: a file's stability
always comes from its mtime and two looks (lstat) at least ``RECHECK_SECONDS`` apart. That is on
purpose: inotify does not see every change (writes through a shared mmap, a hard link outside
landing, another machine writing to a network file system, a queue overflow), so a quiet period
without events cannot stand in for the re-check; the looks can, and cost no wait. With inotify the
loop still scans every ``SAFETY_LOOK_SECONDS``, for writers inotify does not see.

**Bounded logs.** One line per wave, waves at least ``MIN_WAVE_SECONDS`` apart (at most 300 in a
60 s run, about 150 KiB of task log at worst: a line is about 500 bytes of JSON), a progress line
per 500 files of a large wave, and a summary line at the end of the run. An idle loop writes
nothing.

**Stopping.** A SIGTERM (Airflow stopping the task) makes the loop stop at the next group boundary
of the running wave (the files not reached stay in landing, untouched), after the handler that was
installed before (Airflow's) has run. A SIGKILL or a crash at any point of a wave is what the
crash-safety of :func:`~wordstream.staging.run.stage` covers: the next run completes the wave. Between
waves nothing is in flight, and the staging lock is held only during a wave, so a reset waits at
most one wave.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from wordstream import Progress
from wordstream.settings import Settings
from wordstream.staging.landing import RECHECK_SECONDS, LandingObservation, LandingScan, Looks, scan_landing
from wordstream.staging.run import StageReport, check_layout, stage

MIN_WAVE_SECONDS = 0.2
LOOK_SECONDS = 0.25
SAFETY_LOOK_SECONDS = 1.0
MIN_LOOK_SECONDS = 0.02  # a stream of events (a file written in many small pieces) costs few scans


class LandingWatcher:
    """Wakes the loop early when something happens in landing (inotify), else sleeps.

    inotify events are only a reason to look again; the loop never reads them for what changed.
    """

    def __init__(self, folder: Path, use_inotify: bool = True) -> None:
        self._inotify: Any = None
        if use_inotify:
            self._inotify = _watch(folder)

    @property
    def inotify(self) -> bool:
        return self._inotify is not None

    def wait(self, seconds: float) -> None:
        """Return after ``seconds``, or earlier on an event in the watched folder."""
        if seconds <= 0:
            return
        if self._inotify is None:
            time.sleep(seconds)
            return
        from inotify_simple import flags

        events = self._inotify.read(timeout=max(1, math.ceil(seconds * 1000)))
        if any(event.mask & (flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF) for event in events):
            self.close()  # the folder itself went away or moved: the watch is dead, poll instead

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def __enter__(self) -> LandingWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _watch(folder: Path) -> Any:
    """An inotify watch on ``folder``, or None where inotify is not available."""
    try:
        from inotify_simple import INotify, flags
    except ImportError:
        return None
    try:
        watcher = INotify()
    except (OSError, AttributeError):  # not Linux (no inotify_init1), or out of inotify instances
        return None
    mask = flags.CLOSE_WRITE | flags.MOVED_TO | flags.ATTRIB | flags.CREATE | flags.ONLYDIR
    try:
        watcher.add_watch(folder, mask)
    except OSError:  # no such folder, out of watches (fs.inotify.max_user_watches)
        watcher.close()
        return None
    return watcher


class _StopOnSigterm:
    """While active in the main thread, SIGTERM sets :attr:`requested`; the previous handler still runs."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if callable(self._previous):
            self._previous(signum, frame)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)


def next_due(scan: LandingScan, looks: Looks, stable_seconds: float, recheck_seconds: float,
             now: float) -> float | None:
    """When the first entry of ``scan`` can be staged (now for an odd entry); None when none waits."""
    if scan.odd:
        return now
    times = [(looks.since(c) or now) + recheck_seconds for c in scan.ready]
    times += [max(c.mtime_ns / 1e9 + stable_seconds, (looks.since(c) or now) + recheck_seconds)
              for c in scan.fresh]
    return min(times, default=None)


def stage_until(settings: Settings, until: float, progress: Progress = print, *,
                observed: LandingObservation | None = None, recheck_seconds: float = RECHECK_SECONDS,
                use_inotify: bool | None = None, lock_wait: float = 30.0) -> StageReport:
    """Stage in waves until ``until`` (a ``time.time()``), then return the run's total report.

    The first wave starts at once and is what a single :func:`~wordstream.staging.run.stage` is:
    the files ``observed`` (the sensor's hand-over) saw are taken after what is left of their
    re-check, the others after a pause of ``recheck_seconds``. Later waves take only due files. A
    wave that starts after ``until`` is the last and pauses like the first, so ``until`` in the past
    means one wave. ``use_inotify`` defaults to ``settings.staging_inotify``.
    """
    started = time.monotonic()
    total = StageReport(waves=0)
    looks = observed.looks() if observed is not None else Looks()
    inotify = bool(settings.staging_inotify) if use_inotify is None else use_inotify
    check_layout(settings)  # before watching landing: a missing data directory is an error
    with LandingWatcher(settings.landing, inotify) as watcher, _StopOnSigterm() as sigterm:
        while True:
            wave_started = time.time()
            first, last = total.waves == 0, wave_started >= until
            total.add(stage(settings, progress, recheck_seconds=recheck_seconds, observed=looks,
                            wait_for_recheck=first or last, first_of_run=first,
                            should_stop=lambda: sigterm.requested, lock_wait=lock_wait))
            if last or sigterm.requested:
                break
            if not _wait_for_due(settings, looks, watcher, until, recheck_seconds, sigterm,
                                 not_before=wave_started + MIN_WAVE_SECONDS):
                break
    total.seconds = time.monotonic() - started
    how = "inotify" if inotify else f"a look every {LOOK_SECONDS:g} s"
    stopped = ", stopped by SIGTERM" if sigterm.requested else ""
    progress(f"staging run: {total.waves} waves over {total.seconds:.1f}s ({how}{stopped}); "
             f"{total.line()}")
    return total


def _wait_for_due(settings: Settings, looks: Looks, watcher: LandingWatcher, until: float,
                  recheck_seconds: float, sigterm: _StopOnSigterm, not_before: float) -> bool:
    """Scan and sleep until a landing entry is due (True), or until the deadline or a SIGTERM (False)."""
    while True:
        now = time.time()
        scan = scan_landing(settings.landing, now, settings.stable_seconds)
        looked = time.time()
        looks.note([*scan.ready, *scan.fresh], looked)
        due = next_due(scan, looks, settings.stable_seconds, recheck_seconds, looked)
        if sigterm.requested or looked >= until:
            return False
        if due is not None and due <= looked and looked >= not_before:
            return True
        interval = SAFETY_LOOK_SECONDS if watcher.inotify else LOOK_SECONDS
        wake = min(until, looked + interval, max(due if due is not None else math.inf, not_before))
        watcher.wait(wake - time.time())
        time.sleep(max(0.0, looked + MIN_LOOK_SECONDS - time.time()))
