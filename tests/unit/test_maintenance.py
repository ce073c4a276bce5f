"""Reset and cleanup on real files, with a real process holding the engine lock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest
from support import write_structured_record

from wordstream import control, maintenance, results, staging
from wordstream.durable import copy_atomically
from wordstream.ledger import Ledger
from wordstream.maintenance import ResetError, cleanup, reset_engine
from wordstream.settings import Settings

HOUR = 3600
DAY = 86400

FAKE_DRIVER = """
import os, sys, time
from pathlib import Path
from wordstream import control

state, engine, obey = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "obey"
with control.hold_lock(state, engine):
    control.write_status(state, engine, state="running", pid=os.getpid(), batch_id=41)
    print("ready", flush=True)
    watcher = control.StopWatcher(state, engine)
    while not (obey and watcher.should_stop()):
        time.sleep(0.05)
    control.write_status(state, engine, state="stopped")
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = Settings(data_dir=data_dir, stable_seconds=0, retention_days=7, dstream_remember_seconds=60)
    result.ensure_dirs()
    return result


@pytest.fixture
def start_driver(settings: Settings) -> Iterator[object]:
    """Start a process that holds the engine lock and stops on the stop marker (or never)."""
    started: list[subprocess.Popen[str]] = []

    def start(engine: str, obey: bool = True) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER, str(settings.state), engine,
                                 "obey" if obey else "ignore"], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert control.is_running(settings.state, engine)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def land(settings: Settings, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = settings.landing / name
        path.write_bytes(data)
        os.utime(path, (time.time() - 60, time.time() - 60))


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith((".", "_"))}


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def set_age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


FILES = {"one.txt": b"one\n", "two words.txt": b"two two\n", "three.txt": b"3 3 3\n", "four.txt": b"4\n"}
CHECKPOINT = {"offsets/0": b"{}", "commits/0": b"{}", "state/0/1.delta": b"\x00\x01"}
OUTPUT = {"batch=00000000000000000000/part-0.parquet": b"PAR1",
          "batch=00000000000000000001/part-0.parquet": b"PAR1x"}


def epoch_states(settings: Settings, engine: str, epoch: str,
                 contents: Iterable[bytes] = FILES.values()) -> dict[bytes, str]:
    """The state of each content's delivery to ``engine`` in ``epoch`` (contents without one left out)."""
    ledger = Ledger(settings.ledger)
    found = {data: ledger.delivery_in(hashlib.sha256(data).hexdigest(), engine, epoch) for data in contents}
    return {data: delivery.state for data, delivery in found.items() if delivery is not None}


def staged(settings: Settings) -> None:
    land(settings, FILES)
    assert staging.stage(settings, progress=lambda _line: None, recheck_seconds=0).staged == len(FILES)


def test_reset_stops_the_driver_gives_back_unprocessed_files_and_rotates(
        settings: Settings, start_driver: object) -> None:
    staged(settings)
    ledger = Ledger(settings.ledger)
    dstream_watch = visible(settings.watch("dstream"))
    by_content = {data: name for name, data in dstream_watch.items()}
    done = [by_content[b"one\n"], by_content[b"two two\n"]]
    make_tree(settings.checkpoint("dstream"), CHECKPOINT)
    make_tree(settings.output("dstream"), OUTPUT)
    # The engine's record: its batch folders' manifests. The ledger has no mark (the driver died
    # before making it); the reset goes by the record.
    results.write_manifest(results.batch_dir(settings.output("dstream"), 0), done[:1])
    results.write_manifest(results.batch_dir(settings.output("dstream"), 1), done[1:])
    output_before = read_tree(settings.output("dstream"))
    make_tree(settings.checkpoint("structured"), CHECKPOINT)
    structured_before = visible(settings.watch("structured"))
    driver = start_driver("dstream")  # type: ignore[operator]
    lines: list[str] = []

    report = reset_engine(settings, "dstream", wait_timeout=20, progress=lines.append)

    assert driver.wait(timeout=10) == 0  # it stopped through the stop protocol
    assert report.was_running and (report.deleted, report.returned) == (2, 2)
    assert not control.stop_path(settings.state, "dstream").exists()
    assert list(settings.watch("dstream").iterdir()) == []
    # unprocessed files are back in landing under their original names, byte for byte
    assert visible(settings.landing) == {"three.txt": b"3 3 3\n", "four.txt": b"4\n"}
    assert report.rotated_to is not None and report.epoch == ledger.current_epoch("dstream")
    # the old epoch (named as its rotated folder) keeps what it counted; the new one gets the rest
    assert epoch_states(settings, "dstream", Path(report.rotated_to).name) == {
        b"one\n": "processed", b"two two\n": "processed"}
    assert epoch_states(settings, "dstream", report.epoch) == {b"3 3 3\n": "returned", b"4\n": "returned"}
    # checkpoint, output and status moved together into one rotated epoch
    assert not settings.checkpoint("dstream").exists() and not settings.output("dstream").exists()
    assert report.rotated_to is not None
    epoch = Path(report.rotated_to)
    assert epoch.parent == settings.rotated and epoch.name.startswith("dstream-")
    assert read_tree(epoch / "checkpoint") == {**CHECKPOINT, control.CHECKPOINT_LOCK: ANY}
    assert read_tree(epoch / "output") == output_before
    assert '"batch_id": 41' in (epoch / "status.json").read_text()
    status = control.read_status(settings.state, "dstream")
    assert status["state"] == "stopped" and "batch_id" not in status and not status["lock_held"]
    assert report.rotated_to in status["reason"]
    json.dumps(dataclasses.asdict(report))  # the DAG returns it as XCom
    # the other engine is untouched
    assert visible(settings.watch("structured")) == structured_before
    assert read_tree(settings.checkpoint("structured")) == CHECKPOINT
    assert lines[-1].startswith("reset dstream: stopped the driver, deleted 2 processed files, gave back 2")

    # the next staging run republishes the returned files to dstream only, with a fresh mtime
    started = time.time()
    again = staging.stage(settings, progress=lambda _line: None, recheck_seconds=0)
    assert again.published == {"structured": 0, "dstream": 2} and again.duplicates == 0
    assert sorted(visible(settings.watch("dstream")).values()) == [b"3 3 3\n", b"4\n"]
    assert all(p.stat().st_mtime >= started - 1 for p in settings.watch("dstream").iterdir())
    assert visible(settings.watch("structured")) == structured_before
    assert list(settings.landing.iterdir()) == []


def test_reset_goes_by_the_commit_log_and_drops_output_that_was_never_committed(settings: Settings) -> None:
    """A structured driver killed right after writing batch 1's output, before its commit, and after
    committing batch 0, before marking its files: batch 0's files are deleted (counted), batch 1's
    given back (its output removed from the old epoch, which holds batch 0 alone)."""
    staged(settings)
    watch = settings.watch("structured")
    by_content = {data: watch / name for name, data in visible(watch).items()}
    write_structured_record(settings.checkpoint("structured"),
                            [[by_content[b"one\n"], by_content[b"two two\n"]], [by_content[b"3 3 3\n"]]],
                            committed=0)
    make_tree(settings.output("structured"), OUTPUT)  # batch 1's folder: written, never committed

    report = reset_engine(settings, "structured", wait_timeout=1, progress=lambda _line: None)

    assert (report.deleted, report.returned, report.uncommitted_removed) == (2, 2, [1])
    assert visible(settings.landing) == {"three.txt": b"3 3 3\n", "four.txt": b"4\n"}
    assert report.rotated_to is not None
    assert read_tree(Path(report.rotated_to) / "output") == {
        k: v for k, v in OUTPUT.items() if k.startswith("batch=00000000000000000000/")}
    assert epoch_states(settings, "structured", Path(report.rotated_to).name) == {
        b"one\n": "processed", b"two two\n": "processed"}
    assert report.epoch is not None
    assert epoch_states(settings, "structured", report.epoch) == {b"3 3 3\n": "returned", b"4\n": "returned"}
    assert not control.reset_journal_path(settings.state, "structured").exists()


def test_reset_changes_nothing_when_the_checkpoint_cannot_say_what_was_processed(settings: Settings) -> None:
    staged(settings)
    watch = settings.watch("structured")
    before = visible(watch)
    write_structured_record(settings.checkpoint("structured"), [[watch / name for name in before]],
                            committed=0)
    (settings.checkpoint("structured") / "offsets" / "0").unlink()  # damaged by hand
    with pytest.raises(ResetError, match=r"cannot tell which files structured processed: .*offsets/0.*"
                                         r"nothing was changed"):
        reset_engine(settings, "structured", wait_timeout=1, progress=lambda _line: None)
    assert visible(watch) == before and list(settings.landing.iterdir()) == []
    assert not control.reset_journal_path(settings.state, "structured").exists()
    assert list(settings.rotated.iterdir()) == [] and settings.checkpoint("structured").is_dir()


def test_an_interrupted_reset_is_finished_by_the_next_one(settings: Settings) -> None:
    """Killed after giving back one file and moving the checkpoint: the journal names the epoch
    folder, the next reset reads the record there and completes the same epoch."""
    staged(settings)
    watch = settings.watch("structured")
    by_content = {data: watch / name for name, data in visible(watch).items()}
    write_structured_record(settings.checkpoint("structured"), [[by_content[b"one\n"]]], committed=0)
    make_tree(settings.output("structured"), OUTPUT)
    epoch = settings.rotated / "structured-20260101T000000Z"
    journal = control.reset_journal_path(settings.state, "structured")
    journal.write_text(json.dumps({"engine": "structured", "epoch": str(epoch)}))
    Ledger(settings.ledger).mark_returned("structured", by_content[b"4\n"].name)
    by_content[b"4\n"].rename(settings.landing / "four.txt")
    epoch.mkdir()
    settings.checkpoint("structured").rename(epoch / "checkpoint")

    report = reset_engine(settings, "structured", wait_timeout=1, progress=lambda _line: None)

    assert report.resumed and report.rotated_to == str(epoch)
    assert (report.deleted, report.returned) == (1, 2)  # two, three given back now; four before
    assert visible(settings.landing) == {"two words.txt": b"two two\n", "three.txt": b"3 3 3\n",
                                         "four.txt": b"4\n"}
    assert sorted(p.name for p in epoch.iterdir()) == ["checkpoint", "output"]
    assert read_tree(epoch / "output") == {k: v for k, v in OUTPUT.items()
                                           if k.startswith("batch=00000000000000000000/")}
    assert not journal.exists() and list(settings.rotated.iterdir()) == [epoch]
    reason = control.read_status(settings.state, "structured")["reason"]
    assert reason == f"reset: the previous epoch was moved to {epoch}"


def test_reset_fails_cleanly_when_the_driver_never_stops(settings: Settings, start_driver: object) -> None:
    staged(settings)
    make_tree(settings.checkpoint("dstream"), CHECKPOINT)
    watch_before = visible(settings.watch("dstream"))
    driver = start_driver("dstream", obey=False)  # type: ignore[operator]

    with pytest.raises(ResetError, match=r"dstream is still running after 1s .*nothing was changed"):
        reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None)

    assert driver.poll() is None  # still running, as before
    assert not control.stop_path(settings.state, "dstream").exists()  # request withdrawn
    assert visible(settings.watch("dstream")) == watch_before
    assert read_tree(settings.checkpoint("dstream")) == CHECKPOINT
    assert list(settings.rotated.iterdir()) == []
    assert list(settings.landing.iterdir()) == []


def test_reset_waits_for_staging_and_fails_cleanly_if_it_stays_busy(settings: Settings) -> None:
    staged(settings)
    before = visible(settings.watch("dstream"))
    make_tree(settings.output("dstream"), OUTPUT)
    with control.hold_lock(settings.state, staging.STAGING_LOCK), \
            pytest.raises(ResetError, match="staging is already running"):
        reset_engine(settings, "dstream", wait_timeout=0.5, progress=lambda _line: None)
    assert visible(settings.watch("dstream")) == before
    assert read_tree(settings.output("dstream")) == OUTPUT
    assert not control.is_running(settings.state, "dstream")  # the reset released the engine lock


def test_reset_of_a_stopped_engine_renames_a_clashing_landing_name(settings: Settings) -> None:
    staged(settings)
    (settings.landing / "one.txt").write_bytes(b"a newer one.txt\n")
    report = reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None)
    assert not report.was_running and report.returned == 4 and report.rotated_to is None
    assert visible(settings.landing)["one.txt"] == b"a newer one.txt\n"
    assert visible(settings.landing)["one-1.txt"] == b"one\n"
    assert len(visible(settings.landing)) == 5


def test_reset_gives_back_files_unknown_to_the_ledger_and_drops_temp_files(settings: Settings) -> None:
    (settings.watch("structured") / "manual.txt").write_bytes(b"dropped by hand\n")
    (settings.watch("structured") / ".abc.txt.tmp").write_bytes(b"half")
    report = reset_engine(settings, "structured", wait_timeout=1, progress=lambda _line: None)
    assert (report.returned, report.temp_removed) == (1, 1)
    assert visible(settings.landing) == {"manual.txt": b"dropped by hand\n"}
    assert list(settings.watch("structured").iterdir()) == []


def test_reset_rejects_an_unknown_engine(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        reset_engine(settings, "flink", wait_timeout=1, progress=lambda _line: None)


# -- cleanup ---------------------------------------------------------------------------------------
def rotated_epoch(settings: Settings, name: str, age: float) -> Path:
    epoch = settings.rotated / name
    make_tree(epoch, {"checkpoint/offsets/0": b"{}", "output/batch=0/p.parquet": b"PAR1"})
    set_age(epoch, age)
    return epoch


def test_cleanup_expires_old_epochs_temps_processed_watch_files_archive_and_quarantine(
        settings: Settings) -> None:
    staged(settings)
    ledger = Ledger(settings.ledger)
    names = sorted(visible(settings.watch("structured")))
    ledger.mark_processed("structured", "1", names[:3])
    for name in names:
        set_age(settings.watch("structured") / name, 2 * HOUR)
    set_age(settings.watch("dstream") / names[0], 2 * HOUR)  # old but not processed by dstream
    old_temp = settings.watch("dstream") / ".x.txt.tmp"
    old_temp.write_bytes(b"half")
    set_age(old_temp, 2 * HOUR)
    fresh_temp = settings.watch("dstream") / ".y.txt.tmp"
    fresh_temp.write_bytes(b"half")
    old_epoch = rotated_epoch(settings, "structured-20200101T000000Z", 8 * DAY)
    new_epoch = rotated_epoch(settings, "structured-20990101T000000Z", 1 * DAY)
    old_day = settings.archive / "2000-01-01"
    make_tree(old_day, {"1-old.txt": b"old\n"})
    today_archive = read_tree(settings.archive)
    old_quarantine = settings.quarantine / "7-bad.txt"
    old_quarantine.write_bytes(b"\xff")
    (settings.quarantine / "7-bad.txt.reason.txt").write_text("not valid UTF-8\n")
    set_age(settings.quarantine / "7-bad.txt.reason.txt", 8 * DAY)
    new_quarantine = settings.quarantine / "8-bad.txt"
    new_quarantine.write_bytes(b"\x00")
    set_age(new_quarantine, 30 * DAY)  # the producer's old mtime does not count ...
    (settings.quarantine / "8-bad.txt.reason.txt").write_text("binary\n")  # ... quarantine time does
    lines: list[str] = []

    report = cleanup(settings, progress=lines.append)

    assert not old_epoch.exists() and new_epoch.exists()
    assert not old_temp.exists() and fresh_temp.exists()
    assert sorted(visible(settings.watch("structured"))) == names[3:]  # processed + old: gone
    assert sorted(visible(settings.watch("dstream"))) == names  # never processed: kept
    assert not old_day.exists()
    assert {k: v for k, v in read_tree(settings.archive).items() if not k.startswith("2000")} == {
        k: v for k, v in today_archive.items() if not k.startswith("2000")}
    assert not old_quarantine.exists() and new_quarantine.exists()
    assert (report.rotated_removed, report.temp_removed, report.watch_removed, report.archive_removed,
            report.quarantine_removed) == (1, 1, 3, 1, 1)
    assert report.skipped_engines == []
    # sizes are the bytes on disk, per engine
    assert report.sizes["dstream"]["watch"] == sum(len(d) for d in FILES.values()) + len(b"half")
    kept = settings.watch("structured") / names[3]
    assert report.sizes["structured"]["watch"] == len(kept.read_bytes())
    assert report.sizes["structured"]["rotated"] == len(b"{}") + len(b"PAR1")
    assert report.sizes["dstream"]["checkpoint"] == 0
    assert any(line.startswith("size structured: checkpoint 0 B") for line in lines)
    assert any(line.startswith("removed 1 rotated epochs, 1 stale temp files, 3 processed watch files, "
                               "1 archive days, 1 quarantined files; ledger: 0 file rows") for line in lines)
    assert lines[-1].startswith("cleanup done in")


def test_cleanup_keeps_recent_processed_files_for_the_dstream_remember_window(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    settings = Settings(data_dir=tmp_path / "data", stable_seconds=0, dstream_remember_seconds=3 * HOUR)
    settings.ensure_dirs()
    staged(settings)
    names = sorted(visible(settings.watch("dstream")))
    Ledger(settings.ledger).mark_processed("dstream", "1", names)
    for name, age in zip(names, (2 * HOUR, 5 * HOUR, 7 * HOUR, 7 * HOUR), strict=True):
        set_age(settings.watch("dstream") / name, age)
    report = cleanup(settings, progress=lambda _line: None)
    assert report.watch_removed == 2  # older than 2 x 3 h
    assert sorted(visible(settings.watch("dstream"))) == names[:2]


def test_cleanup_of_a_running_engine_expires_only_its_processed_watch_files(settings: Settings) -> None:
    staged(settings)
    names = sorted(visible(settings.watch("dstream")))
    Ledger(settings.ledger).mark_processed("dstream", "1", names[:3])
    Ledger(settings.ledger).mark_processed("structured", "1", names)
    for engine in ("dstream", "structured"):
        for name in names:
            set_age(settings.watch(engine) / name, DAY)
    # Processed, but within the hour; its own inode, as a new DStream epoch gives a waiting file
    # (staging links one inode into both watch folders).
    copy_atomically(settings.watch("dstream") / names[0], settings.watch("dstream") / names[0])
    set_age(settings.watch("dstream") / names[0], HOUR / 2)
    temp = settings.watch("dstream") / ".x.txt.tmp"
    temp.write_bytes(b"half")
    set_age(temp, DAY)
    dstream_epoch = rotated_epoch(settings, "dstream-20200101T000000Z", 30 * DAY)
    structured_epoch = rotated_epoch(settings, "structured-20200101T000000Z", 30 * DAY)
    make_tree(settings.checkpoint("dstream"), CHECKPOINT)
    lines: list[str] = []

    with control.hold_lock(settings.state, "dstream"):
        report = cleanup(settings, progress=lines.append)

    assert report.skipped_engines == ["dstream"]
    assert any("dstream is running" in line for line in lines)
    # Counted by the running engine and an hour old: gone, so its folder does not only grow.
    assert sorted(visible(settings.watch("dstream"))) == [names[0], names[3]]
    assert temp.exists()  # a running engine's temp files, checkpoint and rotated epochs stay
    assert dstream_epoch.exists() and read_tree(settings.checkpoint("dstream")) == CHECKPOINT
    assert not structured_epoch.exists()  # the idle engine is cleaned as usual
    assert visible(settings.watch("structured")) == {}
    assert report.sizes["dstream"]["checkpoint"] == sum(len(v) for v in CHECKPOINT.values())
    assert report.left["dstream"]["watch_files"] == 2


def test_cleanup_trims_the_ledger_past_retention_and_dedupes_within_it(settings: Settings) -> None:
    staged(settings)  # four contents, published to both engines
    land(settings, {"copy of one.txt": b"one\n"})  # a duplicate
    assert staging.stage(settings, progress=lambda _line: None, recheck_seconds=0).duplicates == 1
    ledger = Ledger(settings.ledger)
    names = {data: name for name, data in visible(settings.watch("dstream")).items()}
    counted = [names[b"one\n"], names[b"two two\n"], names[b"3 3 3\n"]]
    ledger.mark_processed("structured", "1", counted)
    ledger.mark_processed("dstream", "1", counted[:2])  # dstream has not counted three.txt yet

    # Within the retention nothing is forgotten: the same content is still a duplicate.
    assert cleanup(settings, progress=lambda _line: None).ledger_removed == {
        "contents": 0, "deliveries": 0, "files": 0}
    land(settings, {"one again.txt": b"one\n"})
    assert staging.stage(settings, progress=lambda _line: None, recheck_seconds=0).duplicates == 1

    lines: list[str] = []
    report = cleanup(settings, now=time.time() + 8 * DAY, progress=lines.append)

    # one and two: counted by both engines, watch copies expired in the same run, rows forgotten.
    assert report.watch_removed == 2 + 3 and report.ledger_removed == {
        "contents": 2, "deliveries": 4, "files": 4}  # two staged rows, two duplicates
    assert report.ledger_left == {"files": 2, "deliveries": 4}
    assert any(line.startswith("size shared: ") and "ledger 2 file rows, 4 deliveries" in line
               for line in lines)
    assert sorted(e["name"] for e in ledger.entries(10)) == ["four.txt", "three.txt"]
    # Forgotten content is new again; content still waiting for an engine is still a duplicate.
    land(settings, {"one, a week later.txt": b"one\n", "three again.txt": b"3 3 3\n"})
    again = staging.stage(settings, progress=lambda _line: None, recheck_seconds=0)
    assert (again.staged, again.duplicates) == (1, 1)
    assert again.published == {"structured": 1, "dstream": 1}
    # A reset still gives the files dstream has not counted back under their landing names.
    reset = reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None)
    assert (reset.returned, reset.deleted) == (3, 0)
    assert sorted(visible(settings.landing)) == ["four.txt", "one, a week later.txt", "three.txt"]


def write_batch(output: Path, batch_id: int, rows: dict[str, int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = results.batch_dir(output, batch_id)
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"key": pa.array(list(rows), pa.string()),
                             "count": pa.array(list(rows.values()), pa.int64())}), folder / "part-0.parquet")


def test_cleanup_compacts_only_what_each_engine_will_never_write_again(settings: Settings) -> None:
    for batch_id in range(6):  # running totals; Spark committed batches 0 to 3 only
        write_batch(settings.output("structured"), batch_id, {"a": batch_id + 1, f"k{batch_id}": 1})
    make_tree(settings.checkpoint("structured"), {f"commits/{i}": b"v1\n{}" for i in range(4)})
    now_ms = int(time.time() * 1000)
    old, recent = now_ms - 3_600_000, now_ms - 10_000  # an hour ago; within the 60 s remember window
    for batch_id in (old, old + 2000, recent):
        write_batch(settings.output("dstream"), batch_id, {"a": 1, "b": 2})
    lines: list[str] = []

    report = cleanup(settings, progress=lines.append)

    assert report.compacted == {"structured": 4, "dstream": 2}
    structured = results.list_results(settings.output("structured"))
    assert structured.snapshot_id == 3 and [results.folder_id(b) for b in structured.batches] == [4, 5]
    assert results.read_totals(settings.output("structured"), "running-totals") == {
        "a": 6, "k0": 1, "k1": 1, "k2": 1, "k3": 1, "k4": 1, "k5": 1}
    dstream = results.list_results(settings.output("dstream"))
    assert dstream.snapshot_id == old + 2000 and [results.folder_id(b) for b in dstream.batches] == [recent]
    assert results.read_totals(settings.output("dstream"), "batch-counts") == {"a": 3, "b": 6}
    assert report.left["structured"] == {"snapshot_batch": 3, "snapshot_keys": 5, "output_batches": 2,
                                         "watch_files": 0, "file_source_log_bytes": 0}
    assert "structured: compacted 4 batch folders into snapshot=00000000000000000003 (5 keys)" in lines
    assert any(line.startswith("size structured: ") and "output: snapshot of batch 3 (5 keys) + 2 batch "
               "folders" in line for line in lines)


def test_a_compaction_that_fails_does_not_stop_the_cleanup(settings: Settings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write_batch(settings.output("dstream"), 1000, {"a": 1})

    def moved_away(output: Path, semantics: str, upto: int) -> None:  # as a reset racing it would
        raise FileNotFoundError(2, "No such file or directory", str(output))

    monkeypatch.setattr(results, "compact", moved_away)
    lines: list[str] = []
    report = cleanup(settings, progress=lines.append)
    assert report.compacted == {"structured": 0, "dstream": 0}
    assert any(line.startswith("dstream: compaction failed, the next one retries: FileNotFoundError")
               for line in lines)
    assert lines[-1].startswith("cleanup done in")


def test_cleanup_on_an_empty_data_dir(tmp_path: Path) -> None:
    report = cleanup(Settings(data_dir=tmp_path), progress=lambda _line: None)
    assert report.sizes["dstream"] == dict.fromkeys(maintenance.SIZE_PARTS, 0)
    assert not (tmp_path / "state" / "ledger.sqlite").exists()


def test_human_bytes() -> None:
    assert maintenance.human_bytes(0) == "0 B"
    assert maintenance.human_bytes(1536) == "1.5 KiB"
    assert maintenance.human_bytes(3 * 1024**4) == "3072.0 GiB"


def test_cli_reset_and_cleanup(settings: Settings, start_driver: object, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from wordstream import cli

    staged(settings)
    monkeypatch.setenv("WORDSTREAM_DATA_DIR", str(settings.data_dir))
    assert cli.main(["reset"]) == 2
    assert "one of the arguments --engine --all is required" in capsys.readouterr().err
    start_driver("structured", obey=False)  # type: ignore[operator]
    assert cli.main(["reset", "--engine", "structured", "--wait-timeout", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "structured is still running" in err
    assert cli.main(["reset", "--engine", "dstream", "--wait-timeout", "1"]) == 0
    assert capsys.readouterr().out.startswith("reset dstream: deleted 0 processed files, gave back 4")
    assert list(settings.watch("dstream").iterdir()) == []
    for name in ("AIRFLOW_HOME", "WORDSTREAM_METADB_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["cleanup"]) == 0
    out = capsys.readouterr().out
    assert "structured is running" in out and "size dstream:" in out
    assert "airflow: not cleaned from here (no AIRFLOW_HOME)" in out
    # An Airflow named without a way to its database: everything else is cleaned, then exit 1.
    monkeypatch.setenv("AIRFLOW_HOME", str(settings.data_dir.parent / "airflow"))
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-db-not-allowed:///")
    assert cli.main(["cleanup"]) == 1
    captured = capsys.readouterr()
    assert "size dstream:" in captured.out
    assert captured.err == ("wordstream: error: Airflow metadata and task logs not cleaned: no metadata "
                            "database URL here: set WORDSTREAM_METADB_CONN (the embedded stack and "
                            "docker-compose.yaml set it for the Airflow processes)\n")
