"""Structured Streaming word count: the tutorial's query, made durable and exactly-once.

``spark.readStream.text(watch)`` → keys → ``groupBy("key").count()`` in outputMode ``update``. Each
micro-batch is printed as the tutorial's console sink prints it and persisted to Parquet through
``foreachBatch``, replacing the batch's folder, so a batch replayed after a crash is written once.
The running totals live in Spark state, recovered from the checkpoint.

Usage:
    spark-submit spark_apps/structured_wordcount.py \\
        --watch data/watch/structured --checkpoint data/checkpoints/structured \\
        --output data/output/structured --state-dir data/state \\
        [--keys words|lines] [--batch-seconds N] [--timeout SECONDS] [--available-now]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pyspark import SparkConf
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from wordstream import results
from wordstream.driver import AppArgs, Driver, check_epoch, parse_app_args, spark_conf_defaults
from wordstream.keys import count_keys

ENGINE = "structured"
CONSOLE_ROWS = 20


def batch_files(checkpoint: Path, batch_id: int) -> list[str]:
    """Files the file source read in ``batch_id``, from its metadata log in the checkpoint.

    The log (``sources/0/<id>`` or a compacted ``<id>.compact``) is written before the batch runs.
    """
    log_dir = checkpoint / "sources" / "0"
    for name in (str(batch_id), f"{batch_id}.compact"):
        path = log_dir / name
        if path.exists():
            entries = (json.loads(line) for line in path.read_text().splitlines()[1:] if line)
            return [unquote(urlparse(e["path"]).path) for e in entries if e.get("batchId") == batch_id]
    return []


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


class Progress(StreamingQueryListener):
    """Reports each committed batch from Spark's own progress event (rows, rates, duration).

    The event comes after the batch's commit, so the ledger marks its files processed only then.
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
        self.driver.batch_done(
            progress.batchId,
            rows_in=progress.numInputRows,
            seconds=progress.durationMs.get("triggerExecution", 0) / 1000,
            files=batch_files(self.args.checkpoint, progress.batchId),
            rows_out=self.keys_out.pop(progress.batchId),
            input_rate=progress.inputRowsPerSecond,
        )

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass


def make_sink(args: AppArgs, driver: Driver, progress: Progress) -> Any:
    """foreachBatch: replace the batch's Parquet folder, then print it like the console sink.

    The stateful batch is computed once, by the write.
    """

    def sink(batch: DataFrame, batch_id: int) -> None:
        written = results.write_batch(batch, args.output, batch_id)
        if written is not None:
            print_console(written, batch_id)
            driver.batch_written(written)
        progress.keys_out[batch_id] = 0 if written is None else written.rows.num_rows

    return sink


def start_query(spark: SparkSession, args: AppArgs, driver: Driver) -> StreamingQuery:
    progress = Progress(args, driver)
    spark.streams.addListener(progress)
    lines = spark.readStream.text(str(args.watch))
    counts = count_keys(lines, args.keys)
    writer = (
        counts.writeStream
        .queryName("wordstream_structured")
        .outputMode("update")
        .option("checkpointLocation", str(args.checkpoint))
        .foreachBatch(make_sink(args, driver, progress))
    )
    if args.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{args.batch_seconds} seconds")
    return writer.start()


def stop_between_batches(query: StreamingQuery, patience: float = 30.0) -> None:
    """Let the running batch commit, then stop (Structured Streaming has no graceful stop)."""
    deadline = time.monotonic() + patience
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.05)
    query.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_app_args(ENGINE, argv)
    with Driver(ENGINE, args) as driver:
        check_epoch(args, ENGINE)
        conf = spark_conf_defaults(SparkConf().setAppName("wordstream-structured"))
        spark = SparkSession.builder.config(conf=conf).getOrCreate()
        try:
            query = start_query(spark, args, driver)
            driver.running()
            reason = driver.run_until_stopped(lambda seconds: bool(query.awaitTermination(seconds)))
            if reason != "terminated":
                driver.stopping()
                stop_between_batches(query)
            if query.exception() is not None:
                raise RuntimeError(f"streaming query failed: {query.exception()}")
        finally:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
