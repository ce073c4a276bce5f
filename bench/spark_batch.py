"""Batch word counts under spark-submit: the baselines of the streaming throughput figures.

Runs the engines' own pipelines without the streaming around them, in one Spark application, so that
only the counting is timed (session start-up is not): ``dataframe`` is the structured engine's
``count_keys`` over ``spark.read.text``, ``rdd`` is the DStream engine's ``flatMap`` -> ``map`` ->
``reduceByKey`` over ``sc.textFile``. Both write their counts to Parquet, as the engines do.

One untimed pass over the warm-up file comes first, as the streams get one before they are timed.

Usage:
    spark-submit --master 'local[2]' bench/spark_batch.py \\
        --kind dataframe|rdd --files LIST --warmup FILE --output DIR --result JSON [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from operator import add
from pathlib import Path

from pyspark import SparkConf
from pyspark.sql import SparkSession

from wordstream.engines.driver import spark_conf_defaults
from wordstream.engines.dstream import SCHEMA
from wordstream.engines.keys import count_keys, keys_frame, line_keys


def dataframe_count(spark: SparkSession, paths: list[str], output: str) -> None:
    count_keys(spark.read.text(paths), "words").write.mode("overwrite").parquet(output)


def tokenize_only(spark: SparkSession, paths: list[str]) -> None:
    """Split into words and count the rows, without grouping: the share of the work in splitting."""
    keys_frame(spark.read.text(paths), "words").count()


def rdd_count(spark: SparkSession, paths: list[str], output: str) -> None:
    counts = (
        spark.sparkContext.textFile(",".join(paths))
        .flatMap(partial(line_keys, mode="words"))
        .map(lambda key: (key, 1))
        .reduceByKey(add)
    )
    spark.createDataFrame(counts, SCHEMA).write.mode("overwrite").parquet(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spark_batch.py")
    parser.add_argument("--kind", choices=("dataframe", "rdd"), required=True)
    parser.add_argument("--files", type=Path, required=True, help="text file with one input path a line")
    parser.add_argument("--warmup", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenize", action="store_true",
                        help="also time splitting into words alone (dataframe only)")
    args = parser.parse_args(argv)
    paths = [line for line in args.files.read_text().splitlines() if line]
    if not paths or args.repeats < 1:
        parser.error("need at least one input file and one repeat")
    job = dataframe_count if args.kind == "dataframe" else rdd_count
    conf = spark_conf_defaults(SparkConf().setAppName(f"wordstream-bench-{args.kind}"))
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    try:
        job(spark, [str(args.warmup)], str(args.output / "warmup"))
        seconds: list[float] = []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            job(spark, paths, str(args.output / f"repeat-{repeat}"))
            seconds.append(time.perf_counter() - started)
            print(f"[bench {args.kind}] repeat {repeat + 1}/{args.repeats}: {seconds[-1]:.2f} s",
                  file=sys.stderr, flush=True)
        tokenize = None
        if args.tokenize and args.kind == "dataframe":
            started = time.perf_counter()
            tokenize_only(spark, paths)
            tokenize = time.perf_counter() - started
        found = {"kind": args.kind, "seconds": seconds, "tokenize_seconds": tokenize}
        args.result.write_text(json.dumps(found))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
