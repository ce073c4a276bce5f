"""The scale knobs under real spark-submit: a file limit per trigger really bounds each batch, and a
knob the checkpoint fixed is refused on restart, leaving the checkpoint as it was."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import SparkApp, reference_counts, write_corpus
from test_engines import publish, totals_via_cli, wait_for_totals

from wordstream import control
from wordstream.engines import spark_probes
from wordstream.settings import Settings

pytestmark = pytest.mark.spark

BATCH_LINE = re.compile(r"^\[wordstream structured\] batch (\d+): \d+ rows in, (\d+) files, ", re.M)


def test_max_files_per_trigger_reads_one_file_per_batch(settings: Settings, tmp_path: Path) -> None:
    """A backlog of files waiting at the start, then one more: each batch reads exactly one (the file
    source's log per batch, the driver's batch lines and the status agree), the totals are exact and
    stay so one batch more. At a decimal interval (0.5 s), the shortest Params offer twice over."""
    corpus = write_corpus(tmp_path / "corpus", files=5, seed=61, lines=40)
    publish(settings, corpus)
    app = SparkApp("structured", settings, tmp_path / "app.log", batch_seconds=0.5,
                   max_files_per_trigger=1).start()
    try:
        app.wait_running()
        wait_for_totals(settings, "structured", reference_counts(corpus, "words"), app)
        status = app.status()
        assert app.stop_gracefully() == 0, app.tail()
    finally:
        app.cleanup()
    checkpoint = settings.checkpoint("structured")
    last = spark_probes.structured_last_commit(checkpoint)
    assert last is not None
    per_batch = [spark_probes.structured_batch_files(checkpoint, batch) for batch in range(last + 1)]
    assert [len(files) for files in per_batch] == [1] * (len(corpus) + 1), per_batch
    watched = sorted(p.name for p in settings.watch("structured").iterdir())  # staging's names of them
    assert len(watched) == len(corpus) + 1
    assert sorted(Path(files[0]).name for files in per_batch) == watched
    logged = BATCH_LINE.findall(app.log.read_text())
    assert [int(files) for _, files in logged] == [1] * (last + 1), logged
    assert status["knobs"] == {"batch_seconds": 0.5, "max_files_per_trigger": 1,
                               "max_bytes_per_trigger": None, "state_store": "rocksdb",
                               "shuffle_partitions": settings.shuffle_partitions}
    assert status["files_in_batch"] == 1
    assert "--batch-seconds 0.5 " in " ".join(app.command)


def checkpoint_files(checkpoint: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path.relative_to(checkpoint)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(checkpoint.rglob("*")) if path.is_file()}


def test_a_knob_the_checkpoint_fixed_is_refused_and_the_checkpoint_is_left_alone(
        settings: Settings, tmp_path: Path) -> None:
    """State store, then shuffle partitions, asked for other than the checkpoint's: exit 3 and the one
    line saying to reset; not a byte of the checkpoint nor the status changed; the same values start."""
    corpus = write_corpus(tmp_path / "corpus", files=2, seed=62)
    publish(settings, corpus)
    first = SparkApp("structured", settings, tmp_path / "first.log", available_now=True).start()
    assert first.wait(300) == 0, first.tail()
    checkpoint = settings.checkpoint("structured")
    before, status = checkpoint_files(checkpoint), control.read_status(settings.state, "structured")

    for name, knobs, was, asked in [
        ("store", {"state_store": "hdfs"}, "--state-store rocksdb", "--state-store hdfs"),
        ("partitions", {"shuffle_partitions": settings.shuffle_partitions + 1},
         f"--shuffle-partitions {settings.shuffle_partitions}",
         f"--shuffle-partitions {settings.shuffle_partitions + 1}"),
    ]:
        refused = SparkApp("structured", settings, tmp_path / f"{name}.log", available_now=True,
                           **knobs).start()
        assert refused.wait(120) == 3, refused.tail()
        said = [line for line in refused.log.read_text().splitlines()
                if line.strip() and not line.startswith("WARNING: Using incubator modules")]
        assert said == [
            f"structured: refusing to start: checkpoint {checkpoint} was created with {was}, which Spark "
            f"cannot change in place; reset the engine to run with {asked} (wordstream reset --engine "
            "structured, or streaming_maintenance with action=reset): the new epoch counts from zero"], said
        assert checkpoint_files(checkpoint) == before
        assert control.read_status(settings.state, "structured") == {**status, "lock_held": False}

    more = write_corpus(tmp_path / "more", files=1, seed=63)
    publish(settings, more)
    again = SparkApp("structured", settings, tmp_path / "again.log", available_now=True).start()
    assert again.wait(300) == 0, again.tail()
    assert totals_via_cli(settings, "structured") == reference_counts(corpus + more, "words")


def test_a_dstream_epoch_refuses_another_remember_window(settings: Settings, tmp_path: Path) -> None:
    """A recovered StreamingContext keeps the remember window of its serialized graph: the driver's
    own record refuses another one (exit 3, one line), checkpoint untouched."""
    corpus = write_corpus(tmp_path / "corpus", files=1, seed=64)
    publish(settings, corpus)
    first = SparkApp("dstream", settings, tmp_path / "first.log", timeout=10).start()
    assert first.wait(300) == 0, first.tail()
    checkpoint = settings.checkpoint("dstream")
    assert any(path.name.startswith("checkpoint-") for path in checkpoint.iterdir())
    before = checkpoint_files(checkpoint)
    window = settings.dstream_remember_seconds
    refused = SparkApp("dstream", settings, tmp_path / "refused.log", remember_seconds=window + 1).start()
    assert refused.wait(120) == 3, refused.tail()
    said = [line for line in refused.log.read_text().splitlines()
            if line.strip() and not line.startswith("WARNING: Using incubator modules")]
    assert len(said) == 1 and said[0].startswith(
        f"dstream: refusing to start: checkpoint {checkpoint} was created with --remember-seconds "
        f"{window}, which Spark cannot change in place; reset the engine to run with --remember-seconds "
        f"{window + 1} "), said
    assert checkpoint_files(checkpoint) == before
