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

from pyspark import SparkConf, SparkContext
from pyspark.streaming import StreamingContext

from wordstream import dstream_job
from wordstream.driver import Driver, check_epoch, parse_app_args, spark_conf_defaults

ENGINE = dstream_job.ENGINE


def main(argv: list[str] | None = None) -> int:
    args = parse_app_args(ENGINE, argv)
    with Driver(ENGINE, args) as driver:
        dstream_job.driver = driver
        check_epoch(args, ENGINE)
        conf = spark_conf_defaults(SparkConf().setAppName("wordstream-dstream"))
        sc = SparkContext.getOrCreate(conf)
        ssc = StreamingContext.getOrCreate(str(args.checkpoint), lambda: dstream_job.create_context(sc, args))
        ssc.start()
        if dstream_job.fresh_epoch:
            waiting = dstream_job.announce_waiting_files(args.watch)
            driver.log(f"new epoch: {waiting} files already waiting in {args.watch}")
        driver.running()
        reason = driver.run_until_stopped(lambda seconds: bool(ssc.awaitTerminationOrTimeout(seconds)))
        if reason != "terminated":
            driver.stopping()
        ssc.stop(stopSparkContext=True, stopGraceFully=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
