"""The streaming tutorial's Structured Streaming word count, as the tutorial writes it (typos fixed).

    source .venv/bin/activate
    spark-submit --master 'local[2]' examples/tutorial_structured.py <watched directory> [timeout seconds]

It reads the text files of the directory (those already there, then each new one), counts equal
lines with ``groupBy("value").count()`` and prints, after each micro-batch, the running totals of
the lines that batch changed (output mode ``update``) as a ``Batch: N`` table from the console sink.
Without a timeout it runs until stopped. Whole lines are keys, as ``--keys lines`` of
``spark_apps/structured_wordcount.py``. With Spark's default 200 shuffle partitions the first batch
takes a while on a small machine; ``--conf spark.sql.shuffle.partitions=4`` is what the engines use.

Nothing here is durable: the console sink keeps its state in a temporary checkpoint, so a restart
counts everything again from zero and nothing is written anywhere. That is what
``wordstream.engines.structured`` adds; ``tests/spark/test_tutorial.py`` checks both print the same
totals.
"""

import sys

from pyspark.sql import SparkSession

if len(sys.argv) not in (2, 3):
    print("Usage: tutorial_structured.py <directory> [timeout seconds]", file=sys.stderr)
    sys.exit(2)
path = sys.argv[1]

spark = SparkSession.builder.appName("TutorialStructuredWordCount").getOrCreate()

lines = spark.readStream.text(path)
counts = lines.groupBy("value").count()

query = counts.writeStream.outputMode("update").format("console").start()
if len(sys.argv) == 3:
    query.awaitTermination(int(sys.argv[2]))
    query.stop()
else:
    query.awaitTermination()
spark.stop()
