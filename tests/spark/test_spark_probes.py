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


def test_structured_batch_files_reads_the_file_source_log(spark: Any, tmp_path: Path) -> None:
    watch, checkpoint = tmp_path / "watch", tmp_path / "checkpoint"
    first = write_files(watch, 3)
    query = (spark.readStream.text(str(watch)).writeStream.format("noop")
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start())
    try:
        query.awaitTermination(120)
    finally:
        query.stop()
    assert sorted(spark_probes.structured_batch_files(checkpoint, 0)) == sorted(map(str, first))
    assert spark_probes.structured_batch_files(checkpoint, 1) == []
    assert (checkpoint / spark_probes.FILE_SOURCE_LOG / "0").read_text().splitlines()[0] == "v1"
    assert spark_probes.structured_last_commit(checkpoint) == 0  # one batch, committed
    assert sorted(p.name for p in (checkpoint / spark_probes.COMMIT_LOG).iterdir()) == [".0.crc", "0"]
    assert spark_probes.structured_last_commit(tmp_path / "never started") is None


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
