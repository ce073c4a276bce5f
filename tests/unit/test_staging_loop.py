"""The staging loop on real files and the real clock: waves until a deadline, looks, inotify, signals.

The loop runs until its deadline, so each test gives it a few seconds. Producers act on what the
loop reports (its progress lines, its scans), never after a sleep.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import crash_point
import pytest
from test_staging import (
    archived,
    assert_no_partial_file_is_visible,
    assert_staged_exactly_once,
    data_dir_settings,
    hidden,
    land,
    land_crash_set,
    observed_earlier,
    run,
    visible,
)

from wordstream import staging
from wordstream.settings import ENGINES, Settings
from wordstream.staging import loop
from wordstream.staging.landing import LandingScan
from wordstream.staging.loop import LandingWatcher

RUN_SECONDS = 4.0  # long enough for the waves below on a loaded machine; each test takes this long


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return data_dir_settings(tmp_path)


class Lines(list[str]):
    """Progress lines; ``on_wave(n, action)`` runs ``action`` right after the n-th wave's report line."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: dict[int, Callable[[], None]] = {}
        self.waves = 0

    def on_wave(self, number: int, action: Callable[[], None]) -> None:
        self.actions[number] = action

    def __call__(self, line: str) -> None:
        self.append(line)
        if line.startswith("staged "):
            self.waves += 1
            if (action := self.actions.pop(self.waves, None)) is not None:
                action()


def write_now(settings: Settings, name: str, data: bytes) -> Path:
    """A producer's drop: written under a hidden name, then renamed into landing (a fresh mtime)."""
    temp = settings.landing / f".{name}.part"
    temp.write_bytes(data)
    os.replace(temp, settings.landing / name)
    return settings.landing / name


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "poll"])
def test_files_landed_during_a_run_are_staged_by_that_run(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                          use_inotify: bool) -> None:
    land(settings, "first.txt", b"there before the run\n")
    observed = observed_earlier(settings, staging.RECHECK_SECONDS)  # the sensor's hand-over
    pauses: list[float] = []
    monkeypatch.setattr(staging.run, "_pause", pauses.append)
    lines = Lines()
    # After the first wave, a file whose mtime is old (cp -p): due half a second after it is seen.
    lines.on_wave(1, lambda: land(settings, "second.txt", b"copied with its old mtime\n"))
    # After the second, a file written just now: due when it has been quiet for stable_seconds.
    lines.on_wave(2, lambda: write_now(settings, "third.txt", b"written during the run\n"))
    report = staging.stage_until(settings, time.time() + RUN_SECONDS, lines, observed=observed,
                                 use_inotify=use_inotify)

    assert (report.staged, report.waves, report.published) == (3, 3, {"structured": 3, "dstream": 3})
    assert [line.split(",")[0] for line in lines if line.startswith("staged ")] == ["staged 1"] * 3
    assert pauses == []  # every re-check was made by the sensor's or the loop's looks, none by a pause
    for engine in ENGINES:
        assert sorted(visible(settings.watch(engine)).values()) == sorted(
            [b"there before the run\n", b"copied with its old mtime\n", b"written during the run\n"])
        assert hidden(settings.watch(engine)) == []
    assert list(settings.landing.iterdir()) == []
    assert len(archived(settings)) == 3
    assert lines[-1].startswith("staging run: 3 waves") and ("inotify" in lines[-1]) == use_inotify


def test_a_file_the_sensor_fired_for_before_it_was_stable_is_staged_when_it_is(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_now(settings, "early.txt", b"handed over before it was stable\n")
    observed = staging.observe_landing(settings, lead_seconds=settings.stable_seconds)
    assert observed is not None and observed.seen_at < path.stat().st_mtime + settings.stable_seconds
    pauses: list[float] = []
    monkeypatch.setattr(staging.run, "_pause", pauses.append)
    lines = Lines()
    report = staging.stage_until(settings, time.time() + RUN_SECONDS, lines, observed=observed)
    assert (report.staged, report.waves) == (1, 2) and pauses == []
    assert [line.split(",")[0] for line in lines if line.startswith("staged ")] == ["staged 0", "staged 1"]
    assert list(visible(settings.watch("dstream")).values()) == [b"handed over before it was stable\n"]


def test_a_file_still_changing_is_not_taken_on_its_old_looks(settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer appends while keeping an old mtime (``cp -p``-like): each change restarts its re-check."""
    path = settings.landing / "growing.txt"
    scans = 0
    real_scan = loop.scan_landing

    def scan_then_append(landing: Path, now: float, stable_seconds: float) -> LandingScan:
        nonlocal scans
        scan = real_scan(landing, now, stable_seconds)
        scans += 1
        if scans <= 4 and path.exists():  # right after each of the loop's first four looks
            mtime_ns = path.stat().st_mtime_ns
            with path.open("ab") as handle:
                handle.write(f"part {scans}\n".encode())
            os.utime(path, ns=(mtime_ns, mtime_ns))
        return scan

    monkeypatch.setattr(loop, "scan_landing", scan_then_append)
    lines = Lines()
    lines.on_wave(1, lambda: land(settings, "growing.txt", b"part 0\n"))  # after the first wave
    # Polling: the loop's looks are a quarter of a second apart, so the appends span more than a
    # re-check; a file known by its name alone would be taken half way.
    report = staging.stage_until(settings, time.time() + RUN_SECONDS, lines, use_inotify=False)
    assert report.staged == 1
    assert list(visible(settings.watch("dstream")).values()) == [
        b"".join(f"part {i}\n".encode() for i in range(5))]


def test_a_steady_arrival_makes_at_most_one_wave_per_min_wave_seconds(settings: Settings) -> None:
    """The bound on a run's task log: a file every 20 ms, and still at most five waves a second."""
    settings = dataclasses.replace(settings, stable_seconds=0)
    run_seconds, landed = 2.0, []
    stop = threading.Event()

    def producer() -> None:
        while not stop.wait(0.02):
            landed.append(write_now(settings, f"f{len(landed):04d}.txt", f"file {len(landed)}\n".encode()))

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        report = staging.stage_until(settings, time.time() + run_seconds, Lines())
    finally:
        stop.set()
        thread.join()
    assert 2 <= report.waves <= run_seconds / loop.MIN_WAVE_SECONDS + 1
    assert report.staged + len(list(settings.landing.iterdir())) == len(landed) > 2 * report.waves


def test_a_run_past_its_deadline_is_one_wave_with_the_recheck_pause(settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    land(settings, "a.txt", b"a\n")
    pauses: list[float] = []
    monkeypatch.setattr(staging.run, "_pause", pauses.append)
    lines = Lines()
    report = staging.stage_until(settings, time.time() - 1, lines)
    assert (report.waves, report.staged) == (1, 1)
    assert pauses == [pytest.approx(staging.RECHECK_SECONDS, abs=0.05)]
    assert len(lines) == 2 and lines[-1].startswith("staging run: 1 waves")


def test_a_directory_in_landing_is_named_once_per_run(settings: Settings) -> None:
    (settings.landing / "subfolder").mkdir()
    land(settings, "a.txt", b"a\n")
    lines = Lines()
    lines.on_wave(1, lambda: land(settings, "b.txt", b"b\n"))
    report = staging.stage_until(settings, time.time() + RUN_SECONDS, lines)
    assert report.staged == 2 and report.waves >= 2
    assert [line for line in lines if "directories" in line] == [
        "left 1 directories in landing alone (staging does not recurse): 'subfolder'"]


def test_a_missing_data_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(staging.StagingError, match="does not exist"):
        staging.stage_until(Settings(data_dir=tmp_path / "missing"), time.time() + 5, lambda _line: None)
    assert not (tmp_path / "missing").exists()


def test_the_run_report_adds_up_its_waves_and_names_the_asset_event() -> None:
    total = staging.StageReport(waves=0)
    assert total.event_extra() is None
    total.add(staging.StageReport(duplicates=2, quarantined=1, skipped_unstable=4, ignored=1))
    assert total.event_extra() is None  # nothing published: no event
    total.add(staging.StageReport(staged=3, published={"structured": 3, "dstream": 4}, skipped_unstable=1))
    assert total.event_extra() == {"published": {"structured": 3, "dstream": 4}, "staged": 3,
                                   "duplicates": 2, "quarantined": 1, "waves": 2}
    assert (total.skipped_unstable, total.ignored) == (1, 0)  # as the last wave found landing


# -- the watcher -----------------------------------------------------------------------------------
def test_the_watcher_wakes_on_a_file_renamed_into_landing(settings: Settings) -> None:
    with LandingWatcher(settings.landing) as watcher:
        assert watcher.inotify  # Linux
        producer = threading.Thread(target=write_now, args=(settings, "a.txt", b"a\n"))
        began = time.monotonic()
        producer.start()
        watcher.wait(60)
        producer.join()
        assert time.monotonic() - began < 30, "woke by its timeout, not by the rename"
        assert (settings.landing / "a.txt").exists()


def test_the_watcher_polls_when_the_folder_goes_away_or_inotify_is_off(settings: Settings) -> None:
    with LandingWatcher(settings.landing, use_inotify=False) as watcher:
        assert not watcher.inotify
    folder = settings.data_dir / "elsewhere"
    folder.mkdir()
    with LandingWatcher(folder) as watcher:
        assert watcher.inotify
        folder.rmdir()
        watcher.wait(60)
        assert not watcher.inotify  # the watch died with its folder: later waits are plain sleeps


# -- signals and kills, in a process of its own ------------------------------------------------------
LOOP_RUN = """
import os, sys, time
from pathlib import Path
from crash_point import die_after
from wordstream import staging
from wordstream.ledger import Ledger
from wordstream.settings import Settings

data_dir, mode, point, allowed = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
staging.run.GROUP_FILES = 3
armed = False

owner, attr = {
    "os.replace": (os, "replace"), "os.fsync": (os, "fsync"),
    "record_published": (Ledger, "record_published"), "finish": (Ledger, "finish"),
    "stage_group": (staging.run._Run, "stage_group"),
}[point]
die_after(owner, attr, allowed, armed=lambda: armed, terminate=mode == "term")

def progress(line):
    global armed
    print(line, flush=True)
    if line.startswith("staged "):
        armed = True  # counts start after the first wave: the second one is hit
        sys.stdin.readline()  # the parent lands the next files, then lets the loop go on

staging.stage_until(Settings(data_dir=data_dir, stable_seconds=0), time.time() + 60, progress)
"""


def start_loop(settings: Settings, mode: str, point: str, allowed: int) -> subprocess.Popen[str]:
    command = crash_point.script(LOOP_RUN, settings.data_dir, mode, point, allowed)
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def after_first_wave(proc: subprocess.Popen[str], action: Callable[[], None]) -> None:
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().startswith("staged 0,")  # landing was empty
    action()
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_sigterm_stops_the_loop_between_two_groups_and_leaves_the_rest_untouched(settings: Settings) -> None:
    names = [f"file {i}.txt" for i in range(9)]
    proc = start_loop(settings, "term", "stage_group", 1)  # SIGTERM as the second group of three starts
    after_first_wave(proc, lambda: [land(settings, name, f"{name}\n".encode(), age=600 - i)
                                    for i, name in enumerate(names)])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopping: 3 stable files left in landing for the next run" in out
    assert "stopped by SIGTERM" in out.splitlines()[-1]
    assert sorted(p.name for p in settings.landing.iterdir()) == names[6:]  # oldest first: the last three
    for engine in ENGINES:
        assert sorted(visible(settings.watch(engine)).values()) == [f"{n}\n".encode() for n in names[:6]]
        assert hidden(settings.watch(engine)) == []
    assert run(settings).staged == 3


@pytest.mark.drill
@pytest.mark.parametrize(("point", "allowed"), [("os.replace", 2), ("os.fsync", 1), ("record_published", 1),
                                                ("finish", 2)])
def test_a_kill_in_a_later_wave_is_completed_by_the_next_run(settings: Settings, point: str,
                                                            allowed: int) -> None:
    proc = start_loop(settings, "kill", point, allowed)
    after_first_wave(proc, lambda: land_crash_set(settings))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == crash_point.EXIT, err  # it died half way through the second wave
    assert_no_partial_file_is_visible(settings)
    run(settings)
    assert_staged_exactly_once(settings)


def test_sigterm_while_waiting_ends_the_run_at_once(settings: Settings) -> None:
    proc = start_loop(settings, "term", "stage_group", 10**6)
    after_first_wave(proc, lambda: None)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1].startswith("staging run: 1 waves") and "stopped by SIGTERM" in out
