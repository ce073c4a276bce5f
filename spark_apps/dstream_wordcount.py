"""DStream word count: the tutorial's ``textFileStream`` + ``reduceByKey``, made durable and exactly-once.

``StreamingContext(sc, batch_seconds)`` → ``textFileStream(watch)`` → keys → ``map(lambda k: (k, 1))``
→ ``reduceByKey`` → ``pprint()``, plus a Parquet sink of each batch's counts, replacing the folder of
its batch time, so a batch recomputed after a crash is written once. The context is recovered from its
checkpoint (``StreamingContext.getOrCreate``): batches that were pending, and the batches of the time
the driver was down, are computed on restart, so files published meanwhile are counted.

Usage:
    spark-submit spark_apps/dstream_wordcount.py \\
        --watch data/watch/dstream --checkpoint data/checkpoints/dstream \\
        --output data/output/dstream --state-dir data/state \\
        [--keys words|lines] [--batch-seconds N] [--timeout SECONDS]
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from functools import partial
from operator import add
from typing import Any

from pyspark import RDD, SparkConf, SparkContext, StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StringType, StructField, StructType
from pyspark.streaming import StreamingContext

from wordstream import results
from wordstream.driver import AppArgs, Driver, check_epoch, parse_app_args, spark_conf_defaults
from wordstream.keys import line_keys

ENGINE = "dstream"
SCHEMA = StructType([StructField("key", StringType(), False), StructField("count", LongType(), False)])

# Set in main(); the batch functions are restored from the checkpoint and look the driver up here.
_driver: Driver | None = None
_lines_in: dict[int, tuple[int, float]] = {}


def batch_id_of(batch_time: datetime) -> int:
    """A batch's id is its batch time in epoch milliseconds: stable across recovery."""
    return round(batch_time.timestamp() * 1000)


def batch_files(rdd: RDD[Any]) -> list[str]:
    """The files a batch read: the names of the Hadoop RDDs at the roots of its lineage.

    ``textFileStream`` builds each batch as a union of one ``newAPIHadoopFile`` RDD per new file, and
    Spark names each of those RDDs after its path.
    """
    files: list[str] = []
    pending = [rdd._jrdd.rdd()]
    seen: set[int] = set()
    while pending:
        node = pending.pop()
        if node.id() in seen:
            continue
        seen.add(node.id())
        if node.getClass().getSimpleName() == "NewHadoopRDD":
            files.append(str(node.name()))
        deps = node.dependencies().iterator()
        while deps.hasNext():
            pending.append(deps.next().rdd())
    return sorted(files)


def count_input(batch_time: datetime, lines: RDD[str]) -> None:
    """First output operation of a batch: how many lines came in (from the cached batch)."""
    _lines_in[batch_id_of(batch_time)] = (lines.count(), time.monotonic())


def persist_counts(output: str, batch_time: datetime, counts: RDD[tuple[str, int]]) -> None:
    """Second output operation: write the batch's counts, then report the batch."""
    batch_id = batch_id_of(batch_time)
    rows_in, started = _lines_in.pop(batch_id, (0, time.monotonic()))
    rows_out = 0
    if rows_in:
        frame = SparkSession.builder.getOrCreate().createDataFrame(counts, SCHEMA).persist()
        try:
            rows_out = frame.count()
            if rows_out:
                results.write_batch(frame, output, batch_id)  # type: ignore[arg-type]
        finally:
            frame.unpersist()
    if _driver is not None and (rows_in or rows_out):
        _driver.batch_done(batch_id, rows_in, time.monotonic() - started, batch_files(counts), rows_out)


def create_context(sc: SparkContext, args: AppArgs) -> StreamingContext:
    """The tutorial's pipeline; called only when there is no checkpoint to recover from."""
    ssc = StreamingContext(sc, args.batch_seconds)
    lines = ssc.textFileStream(str(args.watch))
    lines.persist(StorageLevel.MEMORY_AND_DISK)  # read once, used by both output operations
    counts = (
        lines
        .flatMap(partial(line_keys, mode=args.keys))
        .map(lambda key: (key, 1))
        .reduceByKey(add)
    )
    lines.foreachRDD(count_input)
    counts.pprint()
    counts.foreachRDD(partial(persist_counts, str(args.output)))
    ssc.checkpoint(str(args.checkpoint))
    return ssc


def main(argv: list[str] | None = None) -> int:
    global _driver
    args = parse_app_args(ENGINE, argv)
    with Driver(ENGINE, args) as driver:
        _driver = driver
        check_epoch(args, ENGINE)
        conf = spark_conf_defaults(SparkConf().setAppName("wordstream-dstream"))
        sc = SparkContext.getOrCreate(conf)
        ssc = StreamingContext.getOrCreate(str(args.checkpoint), lambda: create_context(sc, args))
        ssc.start()
        driver.running()
        reason = driver.run_until_stopped(lambda seconds: bool(ssc.awaitTerminationOrTimeout(seconds)))
        if reason != "terminated":
            driver.stopping()
        ssc.stop(stopSparkContext=True, stopGraceFully=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
