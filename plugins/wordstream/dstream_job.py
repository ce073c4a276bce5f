"""The DStream job's pieces: the tutorial's pipeline and the batch functions it checkpoints.

They live in an importable module, not in the application file, because a DStream checkpoint pickles
the batch functions: functions of ``__main__`` would be pickled by value with everything they touch,
functions of a module are pickled by reference and found again on recovery.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from functools import partial
from operator import add
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wordstream import results
from wordstream.driver import AppArgs, Driver
from wordstream.keys import line_keys

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext
    from pyspark.streaming import StreamingContext

ENGINE = "dstream"
SCHEMA = "key string, count long"

# Set by the application's main(); batch functions restored from a checkpoint find the driver here.
driver: Driver | None = None
# True when create_context built a new context instead of recovering one.
fresh_epoch = False
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
    """First output operation of a batch: how many lines came in (from the cached batch).

    Counted in the JVM: ``lines.count()`` would ship every line to a Python worker only to count it,
    a second pass through Python besides the ``flatMap``.
    """
    _lines_in[batch_id_of(batch_time)] = (lines._jrdd.count(), time.monotonic())


def persist_counts(output: str, batch_time: datetime, counts: RDD[tuple[str, int]]) -> None:
    """Second output operation: write the batch's counts, then report the batch."""
    batch_id = batch_id_of(batch_time)
    rows_in, started = _lines_in.pop(batch_id, (0, time.monotonic()))
    rows_out = 0
    if rows_in:
        from pyspark.sql import SparkSession

        frame = SparkSession.builder.getOrCreate().createDataFrame(counts, SCHEMA)
        written = results.write_batch(frame, output, batch_id)  # type: ignore[arg-type]
        if written is not None:
            rows_out = written.rows.num_rows
            if driver is not None:
                driver.batch_written(written)
    if driver is not None and (rows_in or rows_out):
        driver.batch_done(batch_id, rows_in, time.monotonic() - started, batch_files(counts), rows_out)


def persist_to(output: str) -> Any:
    """foreachRDD tells ``(rdd)`` from ``(time, rdd)`` by arity, so bind the output in a closure."""

    def persist(batch_time: datetime, counts: RDD[tuple[str, int]]) -> None:
        persist_counts(output, batch_time, counts)

    return persist


def announce_waiting_files(watch: Path) -> int:
    """Give files already waiting in a fresh epoch's watch folder a new mtime, so they are counted.

    ``textFileStream`` takes only files modified after the stream started. A new epoch (first start,
    or after a reset) would otherwise skip files staged before it came up. Only the mtime changes;
    a recovered context needs none of this, since its down-time batches find those files.
    """
    touched = 0
    for path in sorted(watch.iterdir()):
        if path.is_file() and not path.name.startswith((".", "_")):
            os.utime(path)
            touched += 1
    return touched


def create_context(sc: SparkContext, args: AppArgs) -> StreamingContext:
    """The tutorial's pipeline; called only when there is no checkpoint to recover from."""
    global fresh_epoch
    fresh_epoch = True
    from pyspark import StorageLevel
    from pyspark.streaming import StreamingContext

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
    counts.foreachRDD(persist_to(str(args.output)))
    ssc.checkpoint(str(args.checkpoint))
    return ssc
