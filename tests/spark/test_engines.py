"""Both engines as real spark-submit applications over real files, checked against the reference.

Files are dropped into landing and staged by the real staging code (hidden temp name, fsync, fresh
mtime, rename into each engine's watch folder) while the streams run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import SparkApp, group_members, reference_counts, wait_until, write_corpus

from wordstream import control, results
from wordstream.settings import ENGINES, Settings
from wordstream.staging import stage

pytestmark = pytest.mark.spark

WORDSTREAM = [sys.executable, "-m", "wordstream.cli"]


def totals_via_cli(settings: Settings, engine: str) -> dict[str, int]:
    """What a user reads: `wordstream totals --format csv`, parsed back."""
    import csv
    import io

    run = subprocess.run([*WORDSTREAM, "totals", "--engine", engine, "--format", "csv"],
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
                    timeout: float = 180) -> None:
    def matches() -> bool:
        if app.proc is not None and app.proc.poll() is not None:
            raise AssertionError(f"{engine} exited {app.proc.returncode}:\n{app.tail()}")
        return results.read_totals(settings.output(engine), results.SEMANTICS[engine]) == expected

    try:
        wait_until(matches, timeout, f"{engine} totals to equal the reference")
    except AssertionError:
        got = results.read_totals(settings.output(engine), results.SEMANTICS[engine])
        diff = {k: (got.get(k), expected.get(k)) for k in set(got) | set(expected)
                if got.get(k) != expected.get(k)}
        raise AssertionError(
            f"{len(diff)} keys differ, e.g. {list(diff.items())[:5]}\n{app.tail()}") from None
    assert totals_via_cli(settings, engine) == expected


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
        wait_for_totals(settings, engine, reference_counts(first, "words"), app)

        control.request_stop(settings.state, engine)
        stop_requested = time.monotonic()
        assert app.wait(60) == 0, app.tail()
        stop_seconds = time.monotonic() - stop_requested
        status = control.read_status(settings.state, engine)
        assert status["state"] == "stopped" and status["reason"] == "stop marker", status
        assert not control.stop_path(settings.state, engine).exists()
        print(f"{engine} stopped {stop_seconds:.1f} s after the marker")
    finally:
        app.cleanup()

    publish(settings, during_downtime)
    time.sleep(settings.dstream_remember_seconds + 3)  # the stream stays down past its remember window

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
def test_kill_9_mid_stream_then_restart_is_exact(settings: Settings, tmp_path: Path, engine: str) -> None:
    corpus = write_corpus(tmp_path / "corpus", files=40, seed=11, lines=400)
    app = SparkApp(engine, settings, tmp_path / "run1.log").start()
    try:
        app.wait_running()
        publish(settings, corpus[:20])
        wait_until(lambda: results.batch_dirs(settings.output(engine)), 120, "a first committed batch")
        publish(settings, corpus[20:])
        app.kill9()
    finally:
        app.cleanup()
    assert control.read_status(settings.state, engine)["state"] == "failed"

    app = SparkApp(engine, settings, tmp_path / "run2.log").start()
    try:
        expected = reference_counts(corpus, "words")
        wait_for_totals(settings, engine, expected, app)
        # The status' top words, kept batch by batch across the crash and the replay, are exact too.
        top = top_words(expected)
        wait_until(lambda: control.read_status(settings.state, engine).get("top_words") == top,
                   30, f"{engine} status top words to equal the reference")
        assert app.stop_gracefully() == 0
    finally:
        app.cleanup()


@pytest.mark.drill
def test_second_start_is_refused_and_first_keeps_running(settings: Settings, tmp_path: Path) -> None:
    first = SparkApp("structured", settings, tmp_path / "first.log").start()
    try:
        first.wait_running()
        second = SparkApp("structured", settings, tmp_path / "second.log").start()
        assert second.wait(120) != 0
        assert "refusing to start: structured is already running" in second.log.read_text()
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
        wait_for_totals(settings, "dstream", expected, dstream)
        time.sleep(4)  # four more batches of 1 s: a late recount would show now
        assert results.read_totals(settings.output("dstream"), results.SEMANTICS["dstream"]) == expected
        assert dstream.stop_gracefully() == 0
    finally:
        dstream.cleanup()
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in settings.watch("structured").iterdir()}
    assert after == before
    assert not any(os.path.samefile(settings.watch("dstream") / name, settings.watch("structured") / name)
                   for name in before)

    structured = SparkApp("structured", settings, tmp_path / "s2.log", available_now=True).start()
    assert structured.wait(300) == 0, structured.tail()
    assert totals_via_cli(settings, "structured") == expected
