"""Structured Streaming word count: the tutorial's query, made durable and exactly-once.

``spark.readStream.text(watch)`` → keys → ``groupBy("key").count()`` in outputMode ``update``. Each
micro-batch is printed as the tutorial's console sink prints it and persisted to Parquet through
``foreachBatch``, replacing the batch's folder, so a batch replayed after a crash is written once.
The running totals live in Spark state, recovered from the checkpoint.

The same four parts as :mod:`wordstream.engines.dstream`: the pipeline, the sink, the progress
report after each committed batch, and the graceful stop; :func:`main` wires them to a
:class:`~wordstream.engines.driver.Driver` (``spark_apps/structured_wordcount.py`` calls it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from pyspark import SparkConf
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from wordstream import results
from wordstream.engines import app_args, spark_probes
from wordstream.engines.app_args import AppArgs
from wordstream.engines.driver import Driver, spark_conf_for
from wordstream.engines.keys import count_keys
from wordstream.settings import Engine

ENGINE: Engine = "structured"
CONSOLE_ROWS = 20


# -- pipeline ------------------------------------------------------------------------------------
def pipeline(spark: SparkSession, args: AppArgs, driver: Driver) -> StreamingQuery:
    """Start the tutorial's query with the durable sink and the progress listener."""
    progress = Progress(args, driver)
    spark.streams.addListener(progress)
    lines = spark.readStream.options(**source_options(args)).text(str(args.watch))
    counts = count_keys(lines, args.keys)
    writer = (
        counts.writeStream
        .queryName("wordstream_structured")
        .outputMode("update")
        .option("checkpointLocation", str(args.checkpoint))
        .foreachBatch(sink(args, driver, progress))
    )
    if args.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=trigger_interval(args.batch_seconds))
    return writer.start()


def source_options(args: AppArgs) -> dict[str, str]:
    """The file source's limit per trigger, if the run sets one (Spark takes one of the two)."""
    if args.max_files_per_trigger is not None:
        return {"maxFilesPerTrigger": str(args.max_files_per_trigger)}
    if args.max_bytes_per_trigger is not None:
        return {"maxBytesPerTrigger": str(args.max_bytes_per_trigger)}
    return {}


def trigger_interval(seconds: float) -> str:
    """``processingTime`` in whole milliseconds, so a decimal interval (0.25 s) is exact."""
    return f"{round(seconds * 1000)} milliseconds"


# -- sink ----------------------------------------------------------------------------------------
def print_console(batch: results.WrittenBatch, batch_id: int) -> None:
    """What the tutorial's ``format("console")`` sink prints, into the driver log.

    Printed from the rows just written, so showing them costs no Spark job of its own.
    """
    rows = [(row["key"], row["count"]) for row in batch.rows.slice(0, CONSOLE_ROWS).to_pylist()]
    print("-------------------------------------------")
    print(f"Batch: {batch_id}")
    print("-------------------------------------------")
    print(results.show_string(("key", "count"), rows, batch.rows.num_rows))
    sys.stdout.flush()


def sink(args: AppArgs, driver: Driver, progress: Progress) -> Any:
    """foreachBatch: replace the batch's Parquet folder, then print it like the console sink.

    The stateful batch is computed once, by the write.
    """

    def write(batch: DataFrame, batch_id: int) -> None:
        written = results.write_batch(batch, args.output, batch_id)
        if written is not None:
            print_console(written, batch_id)
            driver.batch_written(written)
        progress.keys_out[batch_id] = 0 if written is None else written.rows.num_rows

    return write


# -- progress ------------------------------------------------------------------------------------
class Progress(StreamingQueryListener):
    """Reports each committed batch from Spark's own progress event (rows, rates, duration).

    The event comes after the batch's commit, so the ledger marks its files processed only then: a
    fast path, asynchronous and lost if the driver dies first. What counts is the commit log
    (:mod:`wordstream.engines.commits`).
    """

    def __init__(self, args: AppArgs, driver: Driver) -> None:
        self.args = args
        self.driver = driver
        self.keys_out: dict[int, int] = {}
        self.reported = -1

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        if progress.batchId <= self.reported or progress.batchId not in self.keys_out:
            return  # a no-data trigger, or a batch already reported
        self.reported = progress.batchId
        try:
            files = spark_probes.structured_batch_files(self.args.checkpoint, progress.batchId)
        except spark_probes.CheckpointError as error:
            self.driver.log(f"batch {progress.batchId}: its files are not known yet ({error})")
            files = []
        self.driver.batch_done(
            progress.batchId,
            rows_in=progress.numInputRows,
            seconds=progress.durationMs.get("triggerExecution", 0) / 1000,
            files=files,
            rows_out=self.keys_out.pop(progress.batchId),
            input_rate=progress.inputRowsPerSecond,
            durations_ms=progress.durationMs,
        )

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass


# -- stop ----------------------------------------------------------------------------------------
# The query thread is waiting for its next trigger once no trigger has been active this long (at most
# a quarter of the interval, or a sub-second interval would never leave that long a gap): after a
# batch that overran its interval the next one starts within milliseconds, and a trigger due at a
# boundary starts within milliseconds of it (more than this only under a long pause of the JVM).
QUIET_SECONDS = 0.25
STOP_MARGIN_SECONDS = 0.25  # at most a quarter of the interval too
STOP_PATIENCE_SECONDS = 120.0
SAMPLE_SECONDS = 0.005


def next_trigger(now: float, interval: float) -> float:
    """When ProcessingTimeExecutor fires next while it waits: the next multiple of the interval
    since the epoch (``nextBatchTime``), in seconds."""
    return (now // interval + 1) * interval


def stop(query: StreamingQuery, interval: float, patience: float = STOP_PATIENCE_SECONDS) -> bool:
    """Stop the query between two triggers, never during one.

    Structured Streaming has no graceful stop: ``query.stop()`` interrupts whatever the query thread
    is doing, and a trigger that starts between a check and the call is interrupted half way (an
    offset logged without its commit, a half-written batch folder). ProcessingTimeExecutor fires a
    trigger at each multiple of the interval, or at once after a trigger that overran it. So the call
    is made only while the thread waits for its next trigger: no trigger active for
    :data:`QUIET_SECONDS` (a quarter of a short interval), and the next boundary at least a margin
    away; ``stop()`` then ends a sleep.
    A query whose batches leave no such gap is stopped after ``patience`` seconds as Spark stops it
    (the interrupted batch runs again on restart and replaces its folder). Returns False then.
    """
    margin = min(STOP_MARGIN_SECONDS, interval / 4)
    quiet = min(QUIET_SECONDS, interval / 4)
    deadline = time.monotonic() + patience
    quiet_since: float | None = None
    between = True
    while query.isActive:
        if time.monotonic() >= deadline:
            between = False
            break
        now = time.time()
        if query.status.get("isTriggerActive"):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet and next_trigger(now, interval) - time.time() >= margin:
            break
        time.sleep(SAMPLE_SECONDS)
    query.stop()
    return between


# -- the application -----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = app_args.parse(ENGINE, argv)
    with Driver(ENGINE, args) as driver:
        conf = spark_conf_for(SparkConf().setAppName("wordstream-structured"), args)
        spark = SparkSession.builder.config(conf=conf).getOrCreate()
        driver.session_ready()
        try:
            query = pipeline(spark, args, driver)
            driver.running()
            reason = driver.run_until_stopped(lambda seconds: bool(query.awaitTermination(seconds)))
            if reason != "terminated":
                driver.stopping()
                if not stop(query, args.batch_seconds):
                    driver.log(f"no gap between triggers in {STOP_PATIENCE_SECONDS:g} s: stopped as Spark "
                               "stops a query (the batch it interrupted runs again on restart)")
            if query.exception() is not None:
                raise RuntimeError(f"streaming query failed: {query.exception()}")
        finally:
            spark.stop()
    return 0
