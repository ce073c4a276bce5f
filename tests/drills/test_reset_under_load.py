"""Drill: reset an engine while it is in the middle of a batch.

A large file is staged so that one batch runs for seconds; small files arrive while it runs; the
reset is requested while Spark's REST API shows the batch's job running. The batch must either commit
(and count in the old epoch) or be given back (and count in the new one): never both, never neither.

* the old epoch, rotated away, equals the reference of exactly the files the ledger says it processed;
* every other file went back to landing, and the restarted engine (a new epoch) counts exactly those
  plus the files that arrive after the restart.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from probes import (
    add_counts,
    busy_for,
    files_by_watch_name,
    spark_ui,
    stage_files,
    watch_files,
    write_repeated,
)
from support import SparkApp, assert_totals_stay, corpus_text, reference_counts, wait_until, write_corpus

from wordstream import control, maintenance, results
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Settings

pytestmark = [pytest.mark.spark, pytest.mark.drill]

# Big enough for a batch of several seconds on a loaded 2-core machine, for both engines.
BIG_FILE_COPIES = {"structured": 500, "dstream": 120}


def big_unit(seed: int) -> str:
    unit = corpus_text(random.Random(seed), 200)
    return unit if unit.endswith("\n") else unit + "\n"


def totals(settings: Settings, engine: str, output: Path | None = None) -> dict[str, int]:
    return results.read_totals(output or settings.output(engine), results.SEMANTICS[engine])


def wait_totals(settings: Settings, engine: str, expected: dict[str, int], app: SparkApp,
                folder: Path) -> Path:
    """The totals reach the reference and stay there one batch more; returns that batch's file."""
    def read() -> dict[str, int]:
        assert app.proc is not None
        if app.proc.poll() is not None:
            raise AssertionError(f"{engine} exited {app.proc.returncode}:\n{app.tail()}")
        return totals(settings, engine)

    return assert_totals_stay(read, expected, lambda paths: stage_files(settings, paths), folder,
                              f"{engine} totals")


def stage_when_stopped(settings: Settings, engine: str, paths: list[Path]) -> threading.Thread:
    """A producer that keeps delivering while the reset runs: as soon as the driver has written its
    final status, these files are staged (usually before the reset empties the watch folder, so they
    are given back; if the reset wins the race they wait in the new epoch's folder)."""

    def deliver() -> None:
        wait_until(lambda: control.read_status(settings.state, engine).get("state") == "stopped",
                   180, f"{engine} to stop", interval=0.02)
        stage_files(settings, paths)

    thread = threading.Thread(target=deliver, name="late-producer")
    thread.start()
    return thread


@pytest.mark.parametrize("engine", ENGINES)
def test_reset_during_a_batch_counts_every_file_once(settings: Settings, tmp_path: Path, engine: str) -> None:
    ledger = Ledger(settings.ledger)
    before = write_corpus(tmp_path / "before", files=3, seed=41)
    big = tmp_path / "big" / "big.txt"
    big.parent.mkdir()
    big_reference = write_repeated(big, big_unit(42), BIG_FILE_COPIES[engine])
    during = write_corpus(tmp_path / "during", files=3, seed=43)
    late = write_corpus(tmp_path / "late", files=2, seed=44)
    after = write_corpus(tmp_path / "after", files=2, seed=45)
    reference = {path: reference_counts([path], "words") for path in [*before, *during, *late, *after]}
    reference[big] = big_reference
    by_prefix = files_by_watch_name(reference)
    big_prefix = next(prefix for prefix, path in by_prefix.items() if path == big)

    app = SparkApp(engine, settings, tmp_path / "epoch1.log").start()
    try:
        app.wait_running()
        stage_files(settings, before)
        extra = wait_totals(settings, engine, add_counts(*(reference[p] for p in before)), app,
                            tmp_path / "sentinels")
        before.append(extra)
        reference[extra] = reference_counts([extra], "words")
        by_prefix.update(files_by_watch_name([extra]))

        ui = spark_ui(control.read_status(settings.state, engine)["pid"])
        stage_files(settings, [big])
        wait_until(lambda: busy_for(ui, 0.2), 120, "the big file's batch to begin")
        stage_files(settings, during)  # they arrive while the batch runs
        producer = stage_when_stopped(settings, engine, late)
        # The ledger marks a file processed only once its batch has committed.
        in_flight = any(name.startswith(big_prefix) for name in ledger.unprocessed(engine))
        requested = time.monotonic()
        try:
            report = maintenance.reset_engine(settings, engine, wait_timeout=120,
                                              progress=lambda _line: None)
        finally:
            producer.join(timeout=180)
        print(f"{engine}: reset took {time.monotonic() - requested:.1f} s: {report.line()}")
        assert app.wait(60) == 0, app.tail()
    finally:
        app.cleanup()
    assert in_flight, "the reset was requested after the big batch had committed: make the file bigger"
    status = control.read_status(settings.state, engine)
    assert status["state"] == "stopped" and "reset" in status["reason"], status

    # The old epoch holds exactly the files the ledger says it processed.
    assert report.rotated_to is not None
    processed = watch_files(ledger.processed_watch_names(engine, Path(report.rotated_to).name), by_prefix)
    assert report.deleted == len(processed)
    old_epoch = totals(settings, engine, Path(report.rotated_to) / "output")
    assert old_epoch == add_counts(*(reference[p] for p in processed))
    assert set(before) <= set(processed)
    assert not settings.checkpoint(engine).exists() and not results.batch_dirs(settings.output(engine))

    # Every other file is waiting for the new epoch: given back to landing, or (a late file staged
    # after the reset emptied the folder) already in the new epoch's watch folder. None is lost,
    # none is in both places.
    given_back = {p.name for p in settings.landing.iterdir()}
    assert report.returned == len(given_back)
    waiting = set(watch_files([p.name for p in settings.watch(engine).iterdir()], by_prefix))
    landing = {path for path in reference if path.name in given_back}
    processed_set = set(processed)
    assert processed_set.isdisjoint(landing | waiting) and landing.isdisjoint(waiting)
    assert processed_set | landing | waiting == {*before, big, *during, *late}
    print(f"{engine}: old epoch processed {sorted(p.name for p in processed)}; given back "
          f"{sorted(given_back)}; waiting in the new epoch's folder {sorted(p.name for p in waiting)}")

    # The new epoch counts, from zero, every file the old one did not, and the later ones.
    app = SparkApp(engine, settings, tmp_path / "epoch2.log").start()
    try:
        app.wait_running()
        stage_files(settings, after)
        expected = add_counts(*(reference[p] for p in [*landing, *waiting, *after]))
        wait_totals(settings, engine, expected, app, tmp_path / "sentinels")
        assert app.stop_gracefully() == 0, app.tail()
    finally:
        app.cleanup()
    assert old_epoch == totals(settings, engine, Path(report.rotated_to) / "output")  # untouched
