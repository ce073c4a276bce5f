"""The engines' sinks and the structured stop against real Spark, in-process (the session fixture).

* the DStream sink records what each batch read inside the batch folder, also for a batch of blank
  lines, and a recomputed batch replaces its folder even when it read nothing;
* the structured stop never interrupts a batch, even when asked right at a trigger boundary.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from support import reference_counts, wait_until

from wordstream import results
from wordstream.engines import app_args, dstream, spark_probes, structured
from wordstream.engines.driver import Driver
from wordstream.engines.keys import count_keys
from wordstream.settings import Settings

pytestmark = pytest.mark.spark


def publish(watch: Path, name: str, text: str) -> Path:
    """Into a watched folder as staging does it: a hidden temp file, a fresh mtime, a rename."""
    temp = watch / f".{name}.tmp"
    temp.write_text(text, encoding="utf-8")
    os.utime(temp)
    return temp.rename(watch / name)


def test_dstream_batches_record_their_files_and_a_recomputed_batch_replaces_its_folder(
        spark: Any, settings: Settings) -> None:
    args = app_args.AppArgs.for_engine(settings, "dstream", batch_seconds=1)
    output = args.output
    ssc = dstream.pipeline(spark.sparkContext, args)
    ssc.start()
    try:
        words = publish(args.watch, "words.txt", "a b a\n")
        wait_until(lambda: results.recorded_files(output) == {words.name}, 60, "the first batch")
        blank = publish(args.watch, "blank.txt", "\n \n\t\n")  # three lines, no key
        wait_until(lambda: len(results.batch_dirs(output)) == 2, 60, "the batch of blank lines")
    finally:
        ssc.stop(stopSparkContext=False, stopGraceFully=True)
    first, second = results.batch_dirs(output)
    assert results.read_manifest(first) == [words.name]
    assert sorted(results.read_batch(first).to_pylist(), key=lambda row: row["key"]) == [
        {"key": "a", "count": 2}, {"key": "b", "count": 1}]
    assert results.read_manifest(second) == [blank.name]
    assert sorted(p.name for p in second.iterdir()) == [results.MANIFEST]  # no keys, no parquet
    assert results.read_totals(output, "batch-counts") == reference_counts([words, blank], "words")

    # The first batch computed again after a recovery, this time reading nothing (its files were
    # taken by another batch): its folder must not keep the earlier rows and manifest.
    batch_time = datetime.fromtimestamp(results.batch_id_of(first) / 1000)
    dstream.persist_counts(str(output), batch_time, spark.sparkContext.emptyRDD())
    assert results.read_manifest(first) == []
    assert results.read_batch(first).num_rows == 0
    assert results.recorded_files(output) == {blank.name}


STOP_OFFSETS_SECONDS = (0.02, 0.01, 0.005, 0.0)  # how long before a boundary the stop is asked for
HELD_UP_SECONDS = 0.15


class HeldUp:
    """A real query, watched by a thread that is held up right after each look at its status, as a
    driver's main thread can be while its listener and sink threads hold the interpreter."""

    def __init__(self, query: Any) -> None:
        self._query = query

    @property
    def status(self) -> dict[str, Any]:
        status = self._query.status
        time.sleep(HELD_UP_SECONDS)
        return dict(status)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._query, name)


def test_structured_stop_at_a_trigger_boundary_never_interrupts_a_batch(
        spark: Any, settings: Settings) -> None:
    """Each time, a new file is published just before a trigger boundary and the stop is asked for
    right at it, by a thread held up after each look at the query. Never an offset logged without its
    commit, never a half-written batch folder; what was committed is exactly in the output."""
    args = app_args.AppArgs.for_engine(settings, "structured", batch_seconds=1)
    driver = Driver("structured", args)  # its sink's bookkeeping only: never entered, no lock
    published: list[Path] = []
    for attempt, before in enumerate(STOP_OFFSETS_SECONDS):
        progress = structured.Progress(args, driver)  # the sink's counterpart; not a listener here
        query = (count_keys(spark.readStream.text(str(args.watch)), "words").writeStream
                 .outputMode("update").option("checkpointLocation", str(args.checkpoint))
                 .foreachBatch(structured.sink(args, driver, progress))
                 .trigger(processingTime="1 second").start())
        try:
            wait_until(lambda query=query: query.status["message"] == "Waiting for next trigger", 60,
                       "the query to wait for a trigger", interval=0.01)
            boundary = structured.next_trigger(time.time() + 0.5, 1.0)
            time.sleep(max(0.0, boundary - 0.3 - time.time()))
            published.append(publish(args.watch, f"file-{attempt}.txt", f"w{attempt} x\n"))
            while time.time() < boundary - before:
                pass  # spin: the moment of the stop matters to the millisecond
            structured.stop(HeldUp(query), 1.0)
        finally:
            if query.isActive:
                query.stop()
        planned = max(spark_probes.structured_planned_batches(args.checkpoint))
        assert planned == spark_probes.structured_last_commit(args.checkpoint), (attempt, before)
        assert not [p.name for p in args.output.iterdir() if p.name.startswith(results.TEMP_PREFIXES)]
        # Nor a trigger cut short after its listing: the file source logged nothing it did not plan.
        logged = {int(name.removesuffix(".compact")) for name in os.listdir(args.checkpoint / "sources/0")
                  if name.removesuffix(".compact").isdigit()}
        assert max(logged) == spark_probes.structured_source_offset(args.checkpoint, planned)
    committed = {Path(name).name for name in spark_probes.structured_committed_files(args.checkpoint)}
    assert results.read_totals(args.output, "running-totals") == reference_counts(
        [path for path in published if path.name in committed], "words")


def test_structured_stop_finds_the_gap_between_quarter_second_triggers(spark: Any,
                                                                      settings: Settings) -> None:
    """At the shortest interval the quiet time and the margin shrink with it: the stop still falls
    between two triggers (not after its patience, as Spark stops a query), with every planned batch
    committed and the output exact."""
    args = app_args.AppArgs.for_engine(settings, "structured", batch_seconds=0.25)
    driver = Driver("structured", args)  # its sink's bookkeeping only: never entered, no lock
    progress = structured.Progress(args, driver)
    query = (count_keys(spark.readStream.text(str(args.watch)), "words").writeStream
             .outputMode("update").option("checkpointLocation", str(args.checkpoint))
             .foreachBatch(structured.sink(args, driver, progress))
             .trigger(processingTime=structured.trigger_interval(args.batch_seconds)).start())
    published = []
    try:
        for index in range(3):
            published.append(publish(args.watch, f"quarter-{index}.txt", f"q{index} x x\n"))
            word = f"q{index}"
            wait_until(lambda word=word: results.read_totals(args.output, "running-totals").get(word) == 1,
                       60, f"file {index} counted", interval=0.05)
        assert structured.stop(query, args.batch_seconds, patience=30), "no gap found between triggers"
    finally:
        if query.isActive:
            query.stop()
    planned = max(spark_probes.structured_planned_batches(args.checkpoint))
    assert planned == spark_probes.structured_last_commit(args.checkpoint)
    assert results.read_totals(args.output, "running-totals") == reference_counts(published, "words")
