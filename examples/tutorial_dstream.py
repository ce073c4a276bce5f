"""The streaming tutorial's DStream word count, as the tutorial writes it (its typos fixed).

    source .venv/bin/activate
    spark-submit --master 'local[2]' examples/tutorial_dstream.py <watched directory> [timeout seconds]

Every second it counts the lines of the files that appeared in the directory and prints them with
``pprint()`` (a ``Time: ...`` block of ``('line', n)`` pairs, the first ten). Without a timeout it
runs until stopped. Like the tutorial it counts whole lines, which is ``--keys lines`` of
``spark_apps/dstream_wordcount.py``; put ``.flatMap(lambda line: line.split(" "))`` before the ``map``
for the tutorial's words (split on single spaces, so runs of spaces give empty words, unlike
``--keys words``).

Nothing here is durable: no checkpoint, no exactly-once output, a restart forgets every file it
saw, and files older than its start are never read. That is what ``wordstream.engines.dstream``
adds; ``tests/spark/test_tutorial.py`` checks both print the same counts.
"""

import sys

from pyspark import SparkContext
from pyspark.streaming import StreamingContext

if len(sys.argv) not in (2, 3):
    print("Usage: tutorial_dstream.py <directory> [timeout seconds]", file=sys.stderr)
    sys.exit(2)
path = sys.argv[1]

sc = SparkContext(appName="TutorialDStreamWordCount")
ssc = StreamingContext(sc, 1)

lines = ssc.textFileStream(path)
counts = lines.map(lambda x: (x, 1)).reduceByKey(lambda a, b: a + b)
counts.pprint()

ssc.start()
if len(sys.argv) == 3:
    ssc.awaitTerminationOrTimeout(int(sys.argv[2]))
    ssc.stop(stopSparkContext=True, stopGraceFully=True)
else:
    ssc.awaitTermination()
