"""Each use of Spark's internals (:mod:`wordstream.engines.spark_probes`) against the installed Spark.

An upgrade that changes the file source's log format, the shape of a ``textFileStream`` batch or the
``_jrdd`` handle fails here, naming the probe, instead of silently emptying the ledger's marks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from wordstream.engines import spark_probes

pytestmark = pytest.mark.spark


def write_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"probe file {index}.txt"  # a space: the log stores URIs, the probe decodes them
        path.write_text(f"line {index}\nanother line\n", encoding="utf-8")
        paths.append(path)
    return paths


def run_available_now(spark: Any, watch: Path, checkpoint: Path, **options: str) -> None:
    reader = spark.readStream
    for key, value in options.items():
        reader = reader.option(key, value)
    query = (reader.text(str(watch)).writeStream.format("noop")
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start())
    try:
        query.awaitTermination(120)
    finally:
        query.stop()


def test_structured_batch_files_reads_the_file_source_log(spark: Any, tmp_path: Path) -> None:
    watch, checkpoint = tmp_path / "watch", tmp_path / "checkpoint"
    first = write_files(watch, 3)
    run_available_now(spark, watch, checkpoint)
    assert sorted(spark_probes.structured_batch_files(checkpoint, 0)) == sorted(map(str, first))
    assert spark_probes.structured_last_commit(checkpoint) == 0
    assert (checkpoint / spark_probes.FILE_SOURCE_LOG / "0").read_text().splitlines()[0] == "v1"
    assert sorted(p.name for p in (checkpoint / spark_probes.COMMIT_LOG).iterdir()) == [".0.crc", "0"]
    assert spark_probes.structured_last_commit(tmp_path / "never started") is None
    with pytest.raises(spark_probes.CheckpointError, match="batch 1"):
        spark_probes.structured_batch_files(checkpoint, 1)  # never planned


def test_committed_files_follow_the_commit_log_through_compaction_and_deleted_log_files(
        spark: Any, tmp_path: Path) -> None:
    """Seven batches of one file each, the log compacted every 3 ids: files per batch and of every
    committed batch, then with a batch planned but not committed, then with the plain log files
    Spark deletes some time after a later compaction gone."""
    watch, checkpoint = tmp_path / "watch", tmp_path / "checkpoint"
    files = write_files(watch, 7)
    spark.conf.set("spark.sql.streaming.fileSource.log.compactInterval", "3")
    try:
        run_available_now(spark, watch, checkpoint, maxFilesPerTrigger="1")
    finally:
        spark.conf.unset("spark.sql.streaming.fileSource.log.compactInterval")
    log = checkpoint / spark_probes.FILE_SOURCE_LOG
    assert {"2.compact", "5.compact", "6"} <= set(os.listdir(log))
    assert spark_probes.structured_last_commit(checkpoint) == 6
    assert spark_probes.structured_planned_batches(checkpoint) == set(range(7))
    per_batch = [spark_probes.structured_batch_files(checkpoint, batch) for batch in range(7)]
    assert all(len(batch) == 1 for batch in per_batch)
    assert sorted(name for batch in per_batch for name in batch) == sorted(map(str, files))
    assert sorted(spark_probes.structured_committed_files(checkpoint)) == sorted(map(str, files))

    (checkpoint / spark_probes.COMMIT_LOG / "6").unlink()  # batch 6 planned, never committed
    assert sorted(spark_probes.structured_committed_files(checkpoint)) == sorted(
        name for batch in per_batch[:6] for name in batch)
    for name in ("0", "1", "3", "4", "2.compact"):  # what Spark's log cleanup removes
        (log / name).unlink()
    assert spark_probes.structured_batch_files(checkpoint, 4) == per_batch[4]  # from 5.compact
    assert sorted(spark_probes.structured_committed_files(checkpoint)) == sorted(
        name for batch in per_batch[:6] for name in batch)


def test_dstream_batch_files_and_jvm_count_on_a_real_text_file_stream(spark: Any, tmp_path: Path) -> None:
    from pyspark.streaming import StreamingContext

    watch = tmp_path / "watch"
    watch.mkdir()
    seen: list[tuple[list[str], int]] = []

    def record(rdd: Any) -> None:
        files = spark_probes.dstream_batch_files(rdd)
        if files:
            seen.append((files, spark_probes.jvm_count(rdd)))

    ssc = StreamingContext(spark.sparkContext, 1)
    ssc.textFileStream(str(watch)).foreachRDD(record)
    ssc.start()
    try:
        staged = write_files(tmp_path / "staging", 2)
        for path in staged:
            os.utime(path)  # textFileStream takes files modified after it started
            path.rename(watch / path.name)
        wait_until(lambda: seen, 60, "a batch with files")
    finally:
        ssc.stop(stopSparkContext=False, stopGraceFully=False)
    files, lines = seen[0]
    assert sorted(Path(name).name for name in files) == sorted(path.name for path in staged)
    assert lines == 4


def test_structured_checkpoint_conf_is_what_spark_recorded_and_puts_back(spark: Any, tmp_path: Path) -> None:
    """The offsets record the session's shuffle partitions and state store; a restart asking for
    others runs with the recorded ones (Spark's silent override the driver's refusal is about)."""
    watch, checkpoint = tmp_path / "watch", tmp_path / "checkpoint"
    write_files(watch, 1)
    provider = "spark.sql.streaming.stateStore.providerClass"
    hdfs = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"
    rocksdb = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
    assert spark_probes.structured_checkpoint_conf(checkpoint) == {}
    before = (spark.conf.get("spark.sql.shuffle.partitions"), spark.conf.get(provider, hdfs))

    def aggregate() -> None:
        query = (spark.readStream.text(str(watch)).groupBy("value").count().writeStream.format("noop")
                 .outputMode("update").option("checkpointLocation", str(checkpoint))
                 .trigger(availableNow=True).start())
        try:
            query.awaitTermination(120)
        finally:
            query.stop()

    try:
        spark.conf.set("spark.sql.shuffle.partitions", "3")
        spark.conf.set(provider, hdfs)
        aggregate()
        recorded = spark_probes.structured_checkpoint_conf(checkpoint)
        assert (recorded["spark.sql.shuffle.partitions"], recorded[provider]) == ("3", hdfs)
        (watch / "later.txt").write_text("later\n", encoding="utf-8")
        spark.conf.set("spark.sql.shuffle.partitions", "5")
        spark.conf.set(provider, rocksdb)
        aggregate()  # a second batch, planned by the restarted query
        newest = max(spark_probes.structured_planned_batches(checkpoint))
        assert newest == 1
        recorded = spark_probes.structured_checkpoint_conf(checkpoint)
        assert (recorded["spark.sql.shuffle.partitions"], recorded[provider]) == ("3", hdfs)
        partitions = {name for name in os.listdir(checkpoint / "state" / "0") if name.isdigit()}
        assert partitions == {"0", "1", "2"}  # the recorded 3, not the 5 asked for
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before[0])
        spark.conf.set(provider, before[1])
