"""DStream word count: the tutorial's ``textFileStream`` + ``reduceByKey``, made durable and exactly-once.

``StreamingContext(sc, batch_seconds)`` → ``textFileStream(watch)`` → keys → ``map(lambda k: (k, 1))``
→ ``reduceByKey`` → ``pprint()``, plus a Parquet sink of each batch's counts, replacing the folder of
its batch time, so a batch recomputed after a crash is written once. The context is recovered from its
checkpoint (``StreamingContext.getOrCreate``): batches that were pending, and the batches of the time
the driver was down, are computed on restart, so files published meanwhile are counted.

A DStream checkpoint keeps no usable record of the batches that completed, so the sink writes one:
each batch folder holds the manifest of the files the batch read, written before the folder is
swapped into place (:func:`wordstream.results.write_batch`). The union of the manifests is what this
engine processed (:mod:`wordstream.engines.commits`). A batch that read files is recorded even
without keys, and a recomputed batch always replaces its folder, manifest included.

The same four parts as :mod:`wordstream.engines.structured`: the pipeline, the sink, the progress
report after each batch, and the graceful stop; :func:`main` wires them to a
:class:`~wordstream.engines.driver.Driver` (``spark_apps/dstream_wordcount.py`` calls it).

The batch functions live in this importable module, not in the application file, because a DStream
checkpoint pickles them: functions of ``__main__`` would be pickled by value with everything they
touch, functions of a module are pickled by reference and found again on recovery. For the same
reason a recovered batch function cannot be handed the driver: it finds it in :data:`_RUN`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from operator import add
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wordstream import control, results
from wordstream.durable import copy_atomically, fsync_dir
from wordstream.engines import app_args, spark_probes
from wordstream.engines.app_args import AppArgs
from wordstream.engines.driver import Driver, spark_conf_for
from wordstream.engines.keys import line_keys
from wordstream.settings import Engine
from wordstream.staging import STAGING_LOCK

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext
    from pyspark.streaming import StreamingContext

ENGINE: Engine = "dstream"
SCHEMA = "key string, count long"
ANNOUNCE_LOCK_WAIT_SECONDS = 120.0  # a staging wave holds the staging lock for seconds at most


@dataclass
class _Run:
    """This driver's side of the batch functions: set by :func:`main`, read by restored functions."""

    driver: Driver | None = None
    fresh_epoch: bool = False  # create_context built a new context instead of recovering one
    lines_in: dict[int, tuple[int, float]] = field(default_factory=dict)  # batch id -> (lines, started)


_RUN = _Run()


def batch_id_of(batch_time: datetime) -> int:
    """A batch's id is its batch time in epoch milliseconds: stable across recovery."""
    return round(batch_time.timestamp() * 1000)


# -- pipeline ------------------------------------------------------------------------------------
def pipeline(sc: SparkContext, args: AppArgs) -> StreamingContext:
    """The tutorial's pipeline; called only when there is no checkpoint to recover from."""
    from pyspark import StorageLevel
    from pyspark.streaming import StreamingContext

    _RUN.fresh_epoch = True
    ssc = StreamingContext(sc, int(args.batch_seconds))  # whole seconds (app_args)
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
    counts.foreachRDD(sink(str(args.output)))
    ssc.checkpoint(str(args.checkpoint))
    return ssc


def count_input(batch_time: datetime, lines: RDD[str]) -> None:
    """First output operation of a batch: how many lines came in (from the cached batch)."""
    _RUN.lines_in[batch_id_of(batch_time)] = (spark_probes.jvm_count(lines), time.monotonic())


# -- sink ----------------------------------------------------------------------------------------
def persist_counts(output: str, batch_time: datetime, counts: RDD[tuple[str, int]]) -> None:
    """Second output operation: write the batch's counts and manifest, then report the batch.

    A batch that read nothing writes nothing, unless its folder exists: then it is a recomputed
    batch, and its folder is replaced like any other's.
    """
    batch_id = batch_id_of(batch_time)
    rows_in, started = _RUN.lines_in.pop(batch_id, (0, time.monotonic()))
    files = spark_probes.dstream_batch_files(counts)
    if not (rows_in or files or results.batch_dir(Path(output), batch_id).exists()):
        return
    from pyspark.sql import SparkSession

    frame = SparkSession.builder.getOrCreate().createDataFrame(counts, SCHEMA)
    written = results.write_batch(frame, Path(output), batch_id, files=files)
    assert written is not None  # with a manifest the folder is always kept
    driver = _RUN.driver
    if driver is not None:
        driver.batch_written(written)
        if rows_in or files:
            driver.batch_done(batch_id, rows_in, time.monotonic() - started, files,
                              written.rows.num_rows)


def sink(output: str) -> Any:
    """foreachRDD tells ``(rdd)`` from ``(time, rdd)`` by arity, so bind the output in a closure."""

    def persist(batch_time: datetime, counts: RDD[tuple[str, int]]) -> None:
        persist_counts(output, batch_time, counts)

    return persist


# -- progress ------------------------------------------------------------------------------------
def announce_waiting_files(watch: Path, state_dir: Path) -> int:
    """Give files already waiting in a fresh epoch's watch folder a new mtime, so they are counted.

    ``textFileStream`` takes only files modified after the stream started. A new epoch (first start,
    or after a reset) would otherwise skip files staged before it came up. A recovered context needs
    none of this, since its down-time batches find those files.

    Staging publishes one inode to every engine (hard links): a new mtime on it would be a new mtime
    on the structured engine's file too, which the structured source reads again once it has
    forgotten it (past its ``maxFileAge``, 7 days, a file is new when ``timestamp >=
    lastPurgeTimestamp`` and unseen). So a shared file is not touched: it is replaced by a copy of
    its own (new inode, mtime now, renamed over it), and the other engine's name keeps the old inode
    and mtime. This runs under the staging lock: staging, the only other writer of the folder,
    removes hidden temp files. It costs a copy of the shared waiting files, once per epoch.
    """
    touched = 0
    with control.hold_lock(state_dir, STAGING_LOCK, wait_seconds=ANNOUNCE_LOCK_WAIT_SECONDS):
        for path in sorted(watch.iterdir()):
            if path.is_file() and not path.name.startswith((".", "_")):
                if os.lstat(path).st_nlink > 1:
                    copy_atomically(path, path)
                else:
                    os.utime(path)
                touched += 1
        fsync_dir(watch)
    return touched


# -- stop ----------------------------------------------------------------------------------------
def stop(ssc: StreamingContext) -> None:
    """DStreams stop gracefully: the batches already generated finish, then the context stops."""
    ssc.stop(stopSparkContext=True, stopGraceFully=True)


# -- the application -----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    from pyspark import SparkConf, SparkContext
    from pyspark.streaming import StreamingContext

    args = app_args.parse(ENGINE, argv)
    with Driver(ENGINE, args) as driver:
        _RUN.driver = driver
        conf = spark_conf_for(SparkConf().setAppName("wordstream-dstream"), args)
        sc = SparkContext.getOrCreate(conf)
        driver.session_ready()
        ssc = StreamingContext.getOrCreate(str(args.checkpoint), lambda: pipeline(sc, args))
        ssc.start()
        if _RUN.fresh_epoch:
            waiting = announce_waiting_files(args.watch, args.state_dir)
            driver.log(f"new epoch: {waiting} files already waiting in {args.watch}")
        driver.running()
        # pyspark's stub types awaitTerminationOrTimeout as returning None; it returns "has it stopped".
        awaiting: Any = ssc
        reason = driver.run_until_stopped(lambda seconds: bool(awaiting.awaitTerminationOrTimeout(seconds)))
        if reason != "terminated":
            driver.stopping()
        stop(ssc)
    return 0
