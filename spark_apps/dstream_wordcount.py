"""DStream word count: the tutorial's ``textFileStream`` + ``reduceByKey``, made durable and exactly-once.

``StreamingContext(sc, batch_seconds)`` → ``textFileStream(watch)`` → keys → ``map(lambda k: (k, 1))``
→ ``reduceByKey`` → ``pprint()``, plus a Parquet sink of each batch's counts, recovered from its
checkpoint after a restart (:mod:`wordstream.engines.dstream`).

Usage:
    spark-submit spark_apps/dstream_wordcount.py \\
        --watch data/watch/dstream --checkpoint data/checkpoints/dstream \\
        --output data/output/dstream --state-dir data/state \\
        [--keys words|lines] [--batch-seconds N] [--timeout SECONDS]
"""

from __future__ import annotations

import sys

from wordstream.spark_env import prefer_installed_pyspark

prefer_installed_pyspark()  # before anything imports pyspark

from wordstream.engines import dstream  # noqa: E402

if __name__ == "__main__":
    sys.exit(dstream.main())
