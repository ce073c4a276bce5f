"""Both engines as real spark-submit applications over real files, checked against the reference.

Files are dropped into landing and staged by the real staging code (hidden temp name, fsync, fresh
mtime, rename into each engine's watch folder) while the streams run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from support import (
    SparkApp,
    assert_totals_stay,
    group_members,
    reference_counts,
    wait_until,
    write_corpus,
)

from wordstream import control, results
from wordstream.settings import ENGINES, Settings
from wordstream.staging import stage

pytestmark = pytest.mark.spark

WORDSTREAM = [sys.executable, "-m", "wordstream.cli"]
SPARK_LOG_LINE = re.compile(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d [A-Z]+ ")  # the log4j2 pattern's start


def totals_via_cli(settings: Settings, engine: str, epoch: str | None = None) -> dict[str, int]:
    """What a user reads: `wordstream totals --format csv [--epoch NAME]`, parsed back."""
    import csv
    import io

    run = subprocess.run([*WORDSTREAM, "totals", "--engine", engine, "--format", "csv",
                          *(["--epoch", epoch] if epoch else [])],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        return {}
    rows = list(csv.reader(io.StringIO(run.stdout, newline="")))
    assert rows[0] == ["word", "count"]
    return {word: int(count) for word, count in rows[1:]}


def top_words(expected: dict[str, int]) -> list[list[object]]:
    """The status' ``top_words`` (JSON) for these totals."""
    return [list(row) for row in results.ranked(expected, 20)]


def publish(settings: Settings, paths: list[Path]) -> None:
    """Drop the files into landing and stage them into every engine's watch folder."""
    for path in paths:
        shutil.copy2(path, settings.landing / path.name)
    report = stage(settings, progress=lambda line: None)
    assert report.staged == len(paths), report


def wait_for_totals(settings: Settings, engine: str, expected: dict[str, int], app: SparkApp,
                    timeout: float = 180) -> Path:
    """The totals reach the reference and stay there one batch more (:func:`assert_totals_stay`);
    returns the file that batch read, which later references count."""
    def totals() -> dict[str, int]:
        if app.proc is not None and app.proc.poll() is not None:
            raise AssertionError(f"{engine} exited {app.proc.returncode}:\n{app.tail()}")
        return results.read_totals(settings.output(engine), results.SEMANTICS[engine])

    try:
        extra = assert_totals_stay(totals, expected, lambda paths: publish(settings, paths),
                                   app.log.parent / "sentinels", f"{engine} totals", timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{app.tail()}") from None
    assert totals_via_cli(settings, engine) == {**expected, **reference_counts([extra], "words")}
    return extra


@pytest.mark.parametrize("mode", ["words", "lines"])
def test_structured_available_now_counts_exactly(settings: Settings, tmp_path: Path, mode: str) -> None:
    corpus = write_corpus(tmp_path / "corpus", files=12, seed=7, lines=80)
    publish(settings, corpus)
    app = SparkApp("structured", settings, tmp_path / "app.log", keys=mode, available_now=True).start()
    assert app.wait(300) == 0, app.tail()
    expected = reference_counts(corpus, mode)
    assert totals_via_cli(settings, "structured") == expected
    status = control.read_status(settings.state, "structured")
    assert status["state"] == "stopped" and status["files_processed"] == len(corpus)
    assert status["top_words"] == top_words(expected)
    log = (tmp_path / "app.log").read_text()
    assert "Batch: 0\n-------------------------------------------\n+---" in log
    assert "only showing top 20 rows" in log


# The drill is the DStream one: down longer than its file remember window.
@pytest.mark.parametrize("engine", ["structured", pytest.param("dstream", marks=pytest.mark.drill)])
def test_live_stream_stop_marker_downtime_and_restart(settings: Settings, tmp_path: Path,
                                                      engine: str) -> None:
    """Publish while running; graceful stop; publish while down longer than the DStream remember
    window; restart continues the totals without double counting."""
    first = write_corpus(tmp_path / "a", files=6, seed=1)
    during_downtime = write_corpus(tmp_path / "b", files=4, seed=2)
    after_restart = write_corpus(tmp_path / "c", files=3, seed=3)

    app = SparkApp(engine, settings, tmp_path / "run1.log").start()
    try:
        app.wait_running()
        publish(settings, first)
        first.append(wait_for_totals(settings, engine, reference_counts(first, "words"), app))

        token = control.request_stop(settings.state, engine)
        stop_requested = time.monotonic()
        assert app.wait(60) == 0, app.tail()
        stop_seconds = time.monotonic() - stop_requested
        status = control.read_status(settings.state, engine)
        assert status["state"] == "stopped" and status["reason"] == "stop marker", status
        # The driver leaves the request to its writer, who withdraws it now that the driver is gone.
        assert control.stop_path(settings.state, engine).read_text().strip() == token
        control.clear_stop(settings.state, engine, token)
        print(f"{engine} stopped {stop_seconds:.1f} s after the marker")
    finally:
        app.cleanup()

    publish(settings, during_downtime)
    if engine == "dstream":  # down past its remember window (the structured source has none)
        time.sleep(settings.dstream_remember_seconds + 3)

    app = SparkApp(engine, settings, tmp_path / "run2.log").start()
    try:
        app.wait_running()
        publish(settings, after_restart)
        wait_for_totals(settings, engine, reference_counts(first + during_downtime + after_restart,
                                                           "words"), app)
        assert app.stop_gracefully() == 0
    finally:
        app.cleanup()


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_9_mid_stream_then_restart_is_exact(settings: Settings, tmp_path: Path, engine: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver also compacts its output after every batch here, so the kill may hit a compaction."""
    monkeypatch.setenv("WORDSTREAM_COMPACT_BATCHES", "1")
    corpus = write_corpus(tmp_path / "corpus", files=40, seed=11, lines=400)
    app = SparkApp(engine, settings, tmp_path / "run1.log").start()
    try:
        app.wait_running()
        publish(settings, corpus[:20])
        wait_until(lambda: not results.list_results(settings.output(engine)).empty, 120,
                   "a first committed batch")
        publish(settings, corpus[20:])
        app.kill9()
    finally:
        app.cleanup()
    assert control.read_status(settings.state, engine)["state"] == "failed"

    app = SparkApp(engine, settings, tmp_path / "run2.log").start()
    try:
        corpus.append(wait_for_totals(settings, engine, reference_counts(corpus, "words"), app))
        # The status' top words, kept batch by batch across the crash and the replay, are exact too.
        top = top_words(reference_counts(corpus, "words"))
        wait_until(lambda: control.read_status(settings.state, engine).get("top_words") == top,
                   30, f"{engine} status top words to equal the reference")
        assert app.stop_gracefully() == 0
    finally:
        app.cleanup()
    assert results.list_results(settings.output(engine)).snapshot is not None  # it did compact
    assert "compacted " in (tmp_path / "run1.log").read_text() + (tmp_path / "run2.log").read_text()
    assert results.read_totals(settings.output(engine), results.SEMANTICS[engine]) == reference_counts(
        corpus, "words")


@pytest.mark.drill
def test_second_start_is_refused_and_first_keeps_running(settings: Settings, tmp_path: Path) -> None:
    """Refused by the engine lock, and by the checkpoint's lock with a state directory of its own."""
    first = SparkApp("structured", settings, tmp_path / "first.log").start()
    try:
        first.wait_running()
        second = SparkApp("structured", settings, tmp_path / "second.log").start()
        assert second.wait(120) == 3
        assert "refusing to start: structured is already running" in second.log.read_text()
        elsewhere = tmp_path / "other-state"
        third = SparkApp("structured", settings, tmp_path / "third.log", state_dir=elsewhere).start()
        assert third.wait(120) == 3
        refusal = f"structured: refusing to start: checkpoint {settings.checkpoint('structured')} is in use"
        assert refusal in third.log.read_text()
        assert control.read_status(elsewhere, "structured")["state"] == "never started"
        assert first.proc is not None and first.proc.poll() is None
        status = control.read_status(settings.state, "structured")
        assert status["state"] == "running"
        assert status["pid"] in {p.pid for p in group_members(first.proc.pid)}
        corpus = write_corpus(tmp_path / "corpus", files=3, seed=5)
        publish(settings, corpus)
        wait_for_totals(settings, "structured", reference_counts(corpus, "words"), first)
        assert first.stop_gracefully() == 0
    finally:
        first.cleanup()


def test_bad_arguments_give_one_clear_line(settings: Settings, tmp_path: Path) -> None:
    app = SparkApp("dstream", settings, tmp_path / "bad.log", available_now=True).start()
    assert app.wait(120) == 2
    assert "--available-now is supported by the structured engine only" in app.log.read_text()
    assert json.loads(json.dumps(control.read_status(settings.state, "dstream")))["state"] == "never started"
    shutil.rmtree(settings.checkpoint("dstream"), ignore_errors=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failing_batch_is_logged_with_its_stack_traces(settings: Settings, tmp_path: Path,
                                                         engine: str) -> None:
    """Spark logs at WARN, yet an error comes out whole: Spark's ERROR line with the JVM stack trace,
    the Python traceback, the driver's one-line verdict, a failed status and a non-zero exit."""
    app = SparkApp(engine, settings, tmp_path / "app.log").start()
    try:
        app.wait_running()
        first = write_corpus(tmp_path / "a", files=1, seed=71)
        publish(settings, first)
        wait_for_totals(settings, engine, reference_counts(first, "words"), app)
        shutil.rmtree(settings.output(engine))
        settings.output(engine).write_text("a file where the output folder was\n")  # the next write fails
        publish(settings, write_corpus(tmp_path / "b", files=1, seed=72))
        assert app.wait(120) != 0, app.tail()
    finally:
        app.cleanup()
    lines = app.log.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if SPARK_LOG_LINE.match(line)] + [len(lines)]
    errors = [lines[start:end] for start, end in pairwise(starts)
              if " ERROR " in lines[start]]
    assert any(any(line.startswith("\tat org.apache.spark.") for line in entry) for entry in errors), \
        "no ERROR entry with its JVM stack trace"
    assert any(line.startswith("Traceback (most recent call last):") for line in lines)
    assert any(f"File exists: '{settings.output(engine)}'" in line for line in lines)  # the cause
    assert any(line.startswith(f"[wordstream {engine}] failed: ") for line in lines)
    assert control.read_status(settings.state, engine)["state"] == "failed"


def test_a_dstream_new_epoch_counts_what_waits_and_never_makes_the_structured_engine_recount(
        settings: Settings, tmp_path: Path) -> None:
    """Staging publishes one inode to both engines. The DStream engine's first start gives the files
    waiting for it a new mtime; the structured engine's names of them must keep theirs, or its source,
    having forgotten a file older than its maxFileAge (7 days), reads it again."""
    week_old = write_corpus(tmp_path / "old", files=2, seed=11)
    recent = write_corpus(tmp_path / "new", files=2, seed=12)
    publish(settings, week_old)
    eight_days_ago = time.time() - 8 * 86_400
    for path in settings.watch("structured").iterdir():  # one inode with the DStream engine's file
        os.utime(path, (eight_days_ago, eight_days_ago))
    publish(settings, recent)
    expected = reference_counts(week_old + recent, "words")
    structured = SparkApp("structured", settings, tmp_path / "s1.log", available_now=True).start()
    assert structured.wait(300) == 0, structured.tail()
    assert totals_via_cli(settings, "structured") == expected
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in settings.watch("structured").iterdir()}

    dstream = SparkApp("dstream", settings, tmp_path / "d.log").start()
    try:
        dstream.wait_running()
        extra = wait_for_totals(settings, "dstream", expected, dstream)  # and one batch more
        assert dstream.stop_gracefully() == 0
    finally:
        dstream.cleanup()
    watch = settings.watch("structured")
    assert {name: ((watch / name).stat().st_ino, (watch / name).stat().st_mtime_ns)
            for name in before} == before
    assert not any(os.path.samefile(settings.watch("dstream") / name, settings.watch("structured") / name)
                   for name in before)

    structured = SparkApp("structured", settings, tmp_path / "s2.log", available_now=True).start()
    assert structured.wait(300) == 0, structured.tail()
    assert totals_via_cli(settings, "structured") == reference_counts([*week_old, *recent, extra], "words")
