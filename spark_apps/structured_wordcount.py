"""Structured Streaming word count: the tutorial's query, made durable and exactly-once.

``spark.readStream.text(watch)`` → keys → ``groupBy("key").count()`` in outputMode ``update``, with a
console print and a Parquet sink per micro-batch (:mod:`wordstream.engines.structured`).

Usage:
    spark-submit spark_apps/structured_wordcount.py \\
        --watch data/watch/structured --checkpoint data/checkpoints/structured \\
        --output data/output/structured --state-dir data/state \\
        [--keys words|lines] [--batch-seconds N] [--timeout SECONDS] [--available-now]
"""

from __future__ import annotations

import sys

from wordstream.spark_env import prefer_installed_pyspark

prefer_installed_pyspark()  # before anything imports pyspark

from wordstream.engines import structured  # noqa: E402

if __name__ == "__main__":
    sys.exit(structured.main())
