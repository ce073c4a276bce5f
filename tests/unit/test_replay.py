"""Epochs in the ledger, per-epoch dedupe, and a reset's replay of the archive (real files, real SQLite)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import crash_point
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wordstream import results, staging
from wordstream.cli import main
from wordstream.ledger import FileRow, Ledger
from wordstream.maintenance import reset_engine
from wordstream.maintenance.replay import Replay, parse_replay, select_replay
from wordstream.settings import ENGINES, Settings

FILES = {"a.txt": b"alpha beta\n", "b.txt": b"beta gamma\n", "c.txt": b"gamma delta\n", "d.txt": b"delta\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def land(settings: Settings, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = settings.landing / name
        path.write_bytes(data)
        os.utime(path, (time.time() - 60, time.time() - 60))


def stage(settings: Settings) -> staging.StageReport:
    return staging.stage(settings, progress=lambda _line: None, recheck_seconds=0)


def watch_contents(settings: Settings, engine: str) -> list[bytes]:
    return sorted(p.read_bytes() for p in settings.watch(engine).iterdir() if not p.name.startswith("."))


def counted_by_dstream(settings: Settings) -> None:
    """The dstream engine's record says it processed everything in its watch folder (one batch)."""
    names = sorted(p.name for p in settings.watch("dstream").iterdir())
    folder = results.batch_dir(settings.output("dstream"), 0)
    folder.mkdir(parents=True)
    results.write_manifest(folder, names)


def ledger_rows(settings: Settings, engine: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(settings.ledger) as conn:
        return conn.execute("SELECT * FROM deliveries WHERE engine = ? ORDER BY sha256, epoch",
                            (engine,)).fetchall()


# -- parsing and selection -------------------------------------------------------------------------
def test_parse_replay_accepts_the_three_choices_and_refuses_the_rest() -> None:
    assert parse_replay("none") == Replay("none") and parse_replay(" all ") == Replay("all")
    assert parse_replay("since=2026-03-04") == Replay("since", datetime(2026, 3, 4, tzinfo=UTC))
    assert parse_replay("since=2026-03-04T05:06") == Replay("since", datetime(2026, 3, 4, 5, 6, tzinfo=UTC))
    assert str(parse_replay("since=2026-03-04")) == "since=2026-03-04T00:00"
    for bad in ("", "yes", "since=", "since=2026-13-01", "since=2026-02-30", "since=2026-03-04T25:00",
                "since=2026-03-04 05:06", "since=2026-03-04T05:06:07", "ALL"):
        with pytest.raises(ValueError, match=r"^--replay must be none, all or since=") as error:
            parse_replay(bad)
        assert "\n" not in str(error.value)


def row(file_id: int, content: str, landed_at: str) -> FileRow:
    return FileRow(file_id, f"f{file_id}.txt", content, 1, "staged", None, None,
                   f"archive/2026-03-04/{file_id}-f{file_id}.txt", landed_at, landed_at)


def test_select_replay_keeps_the_oldest_row_of_each_content_landed_at_or_after_since() -> None:
    rows = [row(1, "x", "2026-03-03T23:59:59.999+00:00"),  # a millisecond before the bound
            row(2, "y", "2026-03-04T00:00:00.000+00:00"),  # exactly at it: included
            row(3, "x", "2026-03-04T00:00:00.001+00:00"),  # x again, in range: its first row in range
            row(4, "y", "2026-03-05T10:00:00.000+00:00"),  # y again: a duplicate, not fed twice
            row(5, "z", "2026-03-05T10:00:00.000+00:00")]
    assert select_replay(rows, parse_replay("none")) == []
    assert [r.id for r in select_replay(rows, parse_replay("all"))] == [1, 2, 5]
    assert [r.id for r in select_replay(rows, parse_replay("since=2026-03-04"))] == [2, 3, 5]
    assert [r.id for r in select_replay(rows, parse_replay("since=2026-03-05T10:00"))] == [4, 5]
    assert select_replay(rows, parse_replay("since=2026-03-05T10:01")) == []


# -- the ledger --------------------------------------------------------------------------------------
def test_dedupe_is_per_epoch_and_an_older_epoch_is_never_changed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = ledger.current_epoch("dstream")
    owner = ledger.begin("a.txt", "s" * 64, 3)
    for engine in ENGINES:
        ledger.claim(owner.id, "s" * 64, engine, "w.txt")
        ledger.record_published("s" * 64, engine)
    ledger.mark_processed("dstream", "0", ["w.txt"])
    assert set(ledger.deliveries("s" * 64)) == set(ENGINES)  # a duplicate for both engines

    assert ledger.start_epoch("dstream", first, "dstream-next")
    assert not ledger.start_epoch("dstream", first, "dstream-next")  # run again: already started
    assert set(ledger.deliveries("s" * 64)) == {"structured"}  # new to dstream's new epoch
    assert ledger.processed_count("dstream") == 0 and ledger.unprocessed("dstream") == []
    again = ledger.begin("a.txt", "s" * 64, 3)
    ledger.claim(again.id, "s" * 64, "dstream", "w.txt")
    ledger.record_published("s" * 64, "dstream")
    # the same watch name in both epochs: the driver's mark and the reconcile touch the current only
    assert ledger.reconcile("dstream", set(), {"w.txt"}, "9999") == (0, 0)
    ledger.mark_processed("dstream", "0", ["w.txt"])
    old = ledger.delivery_in("s" * 64, "dstream", first)
    assert old is not None and old.state == "processed" and old.file_id == owner.id
    new = ledger.delivery_in("s" * 64, "dstream", "dstream-next")
    assert new is not None and new.state == "processed" and new.file_id == again.id
    epochs = {epoch.name: epoch for epoch in ledger.epochs("dstream")}
    assert epochs[first].ended_at is not None and epochs["dstream-next"].ended_at is None
    assert epochs[first].files == 1 and epochs["dstream-next"].files == 1
    assert [epoch.ended_at for epoch in ledger.epochs("structured")] == [None]  # not touched
    with pytest.raises(ValueError, match="current epoch of dstream"):
        ledger.start_epoch("dstream", first, "dstream-third")  # only the current epoch ends


OLD_SCHEMA = """
CREATE TABLE files (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, sha256 TEXT, size INTEGER,
    status TEXT NOT NULL, reason TEXT, watch_name TEXT, moved_to TEXT, landed_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX files_by_status ON files (status);
CREATE INDEX files_by_sha256 ON files (sha256);
CREATE TABLE deliveries (sha256 TEXT NOT NULL, engine TEXT NOT NULL, file_id INTEGER NOT NULL
    REFERENCES files (id), watch_name TEXT NOT NULL, state TEXT NOT NULL, batch TEXT,
    updated_at TEXT NOT NULL, PRIMARY KEY (sha256, engine));
CREATE INDEX deliveries_by_watch_name ON deliveries (engine, watch_name);
CREATE INDEX deliveries_by_state ON deliveries (state);
CREATE INDEX deliveries_by_file_id ON deliveries (file_id);
INSERT INTO files VALUES (1, 'a.txt', 'aaaa', 5, 'staged', NULL, 'w-a.txt', 'archive/2026-03-04/1-a.txt',
    '2026-03-04T10:00:00.000+00:00', '2026-03-04T10:00:01.000+00:00');
INSERT INTO deliveries VALUES ('aaaa', 'structured', 1, 'w-a.txt', 'processed', '3',
    '2026-03-04T10:00:05.000+00:00');
INSERT INTO deliveries VALUES ('aaaa', 'dstream', 1, 'w-a.txt', 'published', NULL,
    '2026-03-04T10:00:01.000+00:00');
"""


def test_a_ledger_of_the_old_schema_is_migrated_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    ledger = Ledger(path)
    current = {engine: ledger.current_epoch(engine) for engine in ENGINES}
    delivered = ledger.deliveries("aaaa")
    assert {engine: (d.state, d.batch, d.epoch, d.file_id, d.watch_name)
            for engine, d in delivered.items()} == {
        "structured": ("processed", "3", current["structured"], 1, "w-a.txt"),
        "dstream": ("published", None, current["dstream"], 1, "w-a.txt")}
    assert ledger.unprocessed("dstream") == ["w-a.txt"] and ledger.processed_count("structured") == 1
    # The rebuilt table has the epoch in its key: the same content can go to the next epoch.
    ledger.start_epoch("structured", current["structured"], "structured-next")
    row = ledger.begin("a.txt", "aaaa", 5)
    ledger.claim(row.id, "aaaa", "structured", "w-a.txt")
    assert ledger.deliveries("aaaa")["structured"].epoch == "structured-next"
    assert Ledger(path).current_epoch("dstream") == current["dstream"]  # opened again: no change
    with sqlite3.connect(path) as conn:
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        count = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
    assert {"deliveries_by_watch_name", "deliveries_by_file_id", "deliveries_by_epoch"} <= indexes
    assert count == 3


# -- a reset with replay ----------------------------------------------------------------------------
def test_reset_with_replay_feeds_each_archived_content_to_that_engine_only(settings: Settings) -> None:
    land(settings, FILES)
    land(settings, {"copy of a.txt": FILES["a.txt"]})  # a duplicate: archived, never fed twice
    assert stage(settings).staged == len(FILES)
    counted_by_dstream(settings)
    structured_before = ledger_rows(settings, "structured"), watch_contents(settings, "structured")

    archived = archive_inodes(settings)

    report = reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None, replay="all")

    assert (report.deleted, report.returned, report.replayed, report.replay_missing) == (4, 0, 4, 0)
    assert sorted(p.name for p in settings.landing.iterdir()) == sorted(
        f"replay-{n}-{name.replace(' ', '_')}" for n, name in enumerate(FILES, 1))
    # second names of the archived originals, not copies
    assert {p.stat().st_ino for p in settings.landing.iterdir()} <= archived
    land(settings, {"new.txt": b"brand new\n"})  # arrives while the replay is staged
    new_inode = (settings.landing / "new.txt").stat().st_ino
    assert stage(settings).staged == len(FILES) + 1
    assert archive_inodes(settings) == archived | {new_inode}  # archived again: no bytes twice
    assert watch_contents(settings, "dstream") == sorted([*FILES.values(), b"brand new\n"])
    # the other engine: its rows and files as they were, and the new file only
    rows_before, watch_before = structured_before
    rows_after = ledger_rows(settings, "structured")
    assert [r for r in rows_before if r not in rows_after] == []
    assert [r[0] for r in rows_after if r not in rows_before] == [sha(b"brand new\n")]
    assert watch_contents(settings, "structured") == sorted([*watch_before, b"brand new\n"])
    assert Ledger(settings.ledger).current_epoch("dstream") == report.epoch
    assert len(Ledger(settings.ledger).unprocessed("dstream")) == len(FILES) + 1
    assert stage(settings).staged == 0 and list(settings.landing.iterdir()) == []


def archive_inodes(settings: Settings) -> set[int]:
    return {path.stat().st_ino for path in settings.archive.rglob("*") if path.is_file()}


def test_replay_since_selects_by_landing_time(settings: Settings) -> None:
    land(settings, FILES)
    stage(settings)
    with sqlite3.connect(settings.ledger) as conn:  # a.txt and b.txt landed the day before
        conn.execute("UPDATE files SET landed_at = '2026-03-03T23:59:59.999+00:00' WHERE name IN "
                     "('a.txt', 'b.txt')")
        conn.execute("UPDATE files SET landed_at = '2026-03-04T00:00:00.000+00:00' WHERE name = 'c.txt'")
    counted_by_dstream(settings)
    report = reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None,
                          replay="since=2026-03-04")
    assert report.replayed == 2
    stage(settings)
    assert watch_contents(settings, "dstream") == sorted([FILES["c.txt"], FILES["d.txt"]])


def test_bad_replay_value_is_one_line_exit_2_and_nothing_moves(settings: Settings,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    land(settings, FILES)
    stage(settings)
    before = sorted(str(p) for p in settings.data_dir.rglob("*"))
    assert main(["reset", "--engine", "dstream", "--replay", "since=yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be none, all or since=YYYY-MM-DD[THH:MM]" in err
    assert sorted(str(p) for p in settings.data_dir.rglob("*")) == before


# The real reset in a process of its own that SIGKILLs itself during the replay, just before the
# second archived original is copied to landing (the first is there, the second announced).
KILLED_REPLAY = """
import os, signal, sys
from wordstream.maintenance import replay, reset_engine
from wordstream.settings import Settings

copies, copy = [], replay.link_or_copy
def killing_copy(source, dest):
    if copies:
        os.kill(os.getpid(), signal.SIGKILL)
    copies.append(dest)
    copy(source, dest)
replay.link_or_copy = killing_copy
reset_engine(Settings.from_env(), "dstream", wait_timeout=1, progress=print, replay="all")
"""


@pytest.mark.parametrize("stage_in_between", [False, True])
def test_a_reset_killed_during_the_replay_then_run_again_feeds_each_original_once(
        settings: Settings, stage_in_between: bool) -> None:
    land(settings, FILES)
    stage(settings)
    counted_by_dstream(settings)
    run = subprocess.run([sys.executable, "-c", KILLED_REPLAY], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir)})
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
    assert len(list(settings.landing.iterdir())) == 1  # one copy made before the kill
    if stage_in_between:  # staging takes that copy before the reset is run again
        assert stage(settings).staged == 1

    report = reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None, replay="none")

    assert report.resumed and report.replay == "all"  # the journal's choice
    assert report.replayed == len(FILES) - 1 and report.replay_skipped == 1
    stage(settings)
    assert watch_contents(settings, "dstream") == sorted(FILES.values())  # each content once
    epoch = Ledger(settings.ledger).current_epoch("dstream")
    fed = [r for r in ledger_rows(settings, "dstream") if r[2] == epoch]
    assert sorted(r[0] for r in fed) == sorted(sha(data) for data in FILES.values())
    assert {r[5] for r in fed} == {"published"}
    assert list(settings.landing.iterdir()) == []


# The real reset in a process of its own that dies in a give-back, after the copy of a shared watch
# file reached landing and before its watch name was removed: both names are left.
KILLED_GIVE_BACK = """
import sys
import crash_point
from wordstream.maintenance import reset, reset_engine
from wordstream.settings import Settings

crash_point.die_after(reset, "copy_atomically", 1, last_words=reset.copy_atomically)
reset_engine(Settings.from_env(), "dstream", wait_timeout=1, progress=print)
"""


def test_a_reset_killed_between_a_give_back_copy_and_its_unlink_counts_each_file_once(
        settings: Settings) -> None:
    land(settings, FILES)
    stage(settings)  # nothing processed: a reset gives every file back, each shared with structured
    run = subprocess.run(crash_point.script(KILLED_GIVE_BACK), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir)})
    assert run.returncode == crash_point.EXIT, run.stdout + run.stderr
    # the first file given back whole, the second copied to landing and still in the watch folder
    assert len(list(settings.landing.iterdir())) == 2
    assert len(watch_contents(settings, "dstream")) == len(FILES) - 1

    report = reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None)

    assert report.resumed
    assert watch_contents(settings, "dstream") == []
    given_back = Counter(p.read_bytes() for p in settings.landing.iterdir())
    assert set(given_back) == set(FILES.values()) and sorted(given_back.values()) == [1, 1, 1, 2]
    assert watch_contents(settings, "structured") == sorted(FILES.values())  # its own files, intact
    report_after = stage(settings)
    assert (report_after.staged, report_after.duplicates) == (len(FILES), 1)
    assert watch_contents(settings, "dstream") == sorted(FILES.values())  # each content once
    epoch = Ledger(settings.ledger).current_epoch("dstream")
    fed = [r for r in ledger_rows(settings, "dstream") if r[2] == epoch]
    assert sorted(r[0] for r in fed) == sorted(sha(data) for data in FILES.values())
    assert watch_contents(settings, "structured") == sorted(FILES.values())  # not published again
    assert list(settings.landing.iterdir()) == []


# -- wordstream epochs, totals --epoch -------------------------------------------------------------
def write_batch(output: Path, batch_id: int, rows: dict[str, int], files: list[str]) -> None:
    """A DStream batch folder as its sink leaves it: Parquet (key, count) and its manifest."""
    folder = results.batch_dir(output, batch_id)
    folder.mkdir(parents=True)
    table = pa.table({"key": list(rows), "count": pa.array(list(rows.values()), pa.int64())})
    pq.write_table(table, folder / "part-00000-x.snappy.parquet")
    results.write_manifest(folder, files)


def test_epochs_lists_current_and_rotated_and_totals_reads_a_rotated_one(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    land(settings, FILES)
    stage(settings)
    names = sorted(p.name for p in settings.watch("dstream").iterdir())
    write_batch(settings.output("dstream"), 0, {"alpha": 1, "beta": 2}, names[:2])
    write_batch(settings.output("dstream"), 1, {"gamma": 2, "delta": 2}, names[2:])
    report = reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None)
    assert report.rotated_to is not None
    old = Path(report.rotated_to).name
    write_batch(settings.output("dstream"), 0, {"new": 5}, [])
    capsys.readouterr()

    assert main(["epochs", "--engine", "dstream", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["name"], e["current"], e["files"], e["keys"], e["occurrences"]) for e in listed] == [
        (old, False, 4, 4, 7), (report.epoch, True, 0, 1, 5)]
    assert listed[0]["ended"] is not None and listed[1]["ended"] is None
    assert main(["epochs", "--engine", "dstream"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "started", "ended", "files", "keys", "occurrences"]
    assert table[1].split()[0] == old and table[1].split()[-3:] == ["4", "4", "7"]
    assert table[2].split()[:2] == [report.epoch, "(current)"]
    assert table[2].split()[-4:] == ["-", "0", "1", "5"]

    assert main(["totals", "--engine", "dstream", "--epoch", old, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["word,count", "beta,2", "delta,2", "gamma,2", "alpha,1"]
    assert main(["totals", "--engine", "dstream", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["word,count", "new,5"]
    assert main(["totals", "--engine", "dstream", "--epoch", "dstream-nope"]) == 2
    err = capsys.readouterr().err
    assert err == ("wordstream: error: unknown epoch 'dstream-nope' of dstream; "
                   f"known: {old}, {report.epoch}\n")
