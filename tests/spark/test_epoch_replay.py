"""A reset with replay, on both engines under a real spark-submit, checked against the reference.

An epoch counts files; the engine is reset while it runs, with ``replay=all`` or ``since=`` (the
first files are made to have landed the day before: the subset after the bound is fed); new files
land while the replayed originals wait in landing; the new epoch's totals equal an independent
count of the replayed and the new files, one batch more included. The rotated epoch still reads its
own totals (``wordstream totals --epoch``), and the other engine got none of the replayed files.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import SparkApp, reference_counts, write_corpus
from test_engines import WORDSTREAM, publish, totals_via_cli, wait_for_totals

from wordstream import maintenance
from wordstream.engines import commits
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Settings
from wordstream.staging import stage

pytestmark = pytest.mark.spark


def ledger_rows(settings: Settings, engine: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(settings.ledger) as conn:
        return conn.execute("SELECT sha256, engine, epoch, file_id, watch_name FROM deliveries"
                            " WHERE engine = ? ORDER BY sha256, epoch", (engine,)).fetchall()


def landed_the_day_before(settings: Settings, paths: list[Path]) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="milliseconds")
    with sqlite3.connect(settings.ledger) as conn:
        conn.executemany("UPDATE files SET landed_at = ? WHERE name = ?",
                         [(yesterday, path.name) for path in paths])


@pytest.mark.parametrize(("engine", "replay"), [("structured", "all"), ("dstream", "all"),
                                                ("dstream", "since")])
def test_reset_with_replay_counts_the_replayed_and_the_new_files_in_the_new_epoch(
        settings: Settings, tmp_path: Path, engine: str, replay: str) -> None:
    other = next(e for e in ENGINES if e != engine)
    before = write_corpus(tmp_path / "before", files=3, seed=31)
    after = write_corpus(tmp_path / "after", files=3, seed=32)
    app = SparkApp(engine, settings, tmp_path / "epoch1.log").start()
    try:
        app.wait_running()
        publish(settings, before)
        landed_the_day_before(settings, before)
        publish(settings, after)
        first = [*before, *after]
        first.append(wait_for_totals(settings, engine, reference_counts(first, "words"), app))
        choice = "all" if replay == "all" else f"since={datetime.now(UTC).strftime('%Y-%m-%d')}"
        report = maintenance.reset_engine(settings, engine, wait_timeout=120, progress=print, replay=choice)
        assert app.wait(60) == 0, app.tail()
    finally:
        app.cleanup()
    replayed = first if replay == "all" else first[len(before):]
    assert report.replayed == len(replayed) and report.replay_missing == 0
    assert report.rotated_to is not None
    old_epoch = Path(report.rotated_to).name
    assert totals_via_cli(settings, engine, old_epoch) == reference_counts(first, "words")
    other_rows = ledger_rows(settings, other)

    new = write_corpus(tmp_path / "new", files=2, seed=33)
    app = SparkApp(engine, settings, tmp_path / "epoch2.log").start()
    try:
        app.wait_running()
        for path in new:  # they land while the replayed originals wait in landing
            shutil.copy2(path, settings.landing / path.name)
        staged = stage(settings, progress=lambda _line: None)
        assert staged.staged == len(replayed) + len(new) and staged.published == {
            engine: len(replayed) + len(new), other: len(new)}
        wait_for_totals(settings, engine, reference_counts([*replayed, *new], "words"), app)
        assert app.stop_gracefully() == 0
    finally:
        app.cleanup()
    assert totals_via_cli(settings, engine, old_epoch) == reference_counts(first, "words")  # as it was

    ledger = Ledger(settings.ledger)
    commits.reconcile(ledger, engine, settings.checkpoint(engine), settings.output(engine),
                      settings.watch(engine))  # the driver's last marks may be late: the record is the truth
    listed = json.loads(subprocess.run([*WORDSTREAM, "epochs", "--engine", engine, "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    assert [(e["name"], e["current"], e["files"]) for e in listed] == [
        (old_epoch, False, len(first)), (report.epoch, True, len(replayed) + len(new) + 1)]
    assert listed[0]["occurrences"] == sum(reference_counts(first, "words").values())
    # The other engine: its rows as they were, plus the new files and the last sentinel only.
    rows = ledger_rows(settings, other)
    assert [row for row in other_rows if row not in rows] == []
    added = sorted(str(row[4]).split("-", 1)[1] for row in rows if row not in other_rows)
    assert len(added) == len(new) + 1 and [path.name for path in new] == added[:len(new)]
    assert not any(path.name.split("-", 1)[1].startswith("replay-")
                   for path in settings.watch(other).iterdir())
    assert len(ledger.epochs(other)) == 1
