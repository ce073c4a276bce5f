"""Every use of Spark's internals, in one place, each pinned by a test on the installed Spark.

The engines need four facts Spark has no public API for:

* which files a Structured Streaming batch read: the file source's metadata log in the checkpoint
  (``sources/0/<batch id>``, or the ``.compact`` file that folds earlier batches in);
* which files a DStream batch read: the ``NewHadoopRDD`` roots of the batch's lineage, which
  ``textFileStream`` names after their paths;
* how many lines a DStream batch has, counted in the JVM (``rdd._jrdd``) rather than by shipping
  every line to a Python worker only to count it;
* which Structured Streaming batch committed last: the commit log in the checkpoint
  (``commits/<batch id>``), which bounds what a compaction of the results may fold.

``tests/spark/test_spark_probes.py`` runs each against real Spark, so an upgrade that changes any of
them fails loudly there instead of silently in production.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from pyspark import RDD

FILE_SOURCE_LOG = Path("sources") / "0"
COMMIT_LOG = Path("commits")
HADOOP_FILE_RDD = "NewHadoopRDD"


def structured_batch_files(checkpoint: Path, batch_id: int) -> list[str]:
    """Files the file source read in ``batch_id``, from its metadata log in the checkpoint.

    The log (``sources/0/<id>`` or a compacted ``<id>.compact``) is written before the batch runs:
    a version line, then one JSON object per file (``path`` as a URI, ``batchId``).
    """
    log_dir = Path(checkpoint) / FILE_SOURCE_LOG
    for name in (str(batch_id), f"{batch_id}.compact"):
        path = log_dir / name
        if path.exists():
            entries = (json.loads(line) for line in path.read_text().splitlines()[1:] if line)
            return [unquote(urlparse(e["path"]).path) for e in entries if e.get("batchId") == batch_id]
    return []


def dstream_batch_files(rdd: RDD[Any]) -> list[str]:
    """The files a DStream batch read: the names of the Hadoop RDDs at the roots of its lineage.

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
        if node.getClass().getSimpleName() == HADOOP_FILE_RDD:
            files.append(str(node.name()))
        deps = node.dependencies().iterator()
        while deps.hasNext():
            pending.append(deps.next().rdd())
    return sorted(files)


def jvm_count(rdd: RDD[Any]) -> int:
    """``rdd.count()`` done in the JVM: no Python worker deserialises the rows only to count them."""
    return int(rdd._jrdd.count())


def structured_last_commit(checkpoint: Path) -> int | None:
    """The newest batch id in the query's commit log; None before the first commit.

    Spark writes ``commits/<id>`` after the batch's sink (foreachBatch) returned, and never runs a
    committed batch again. Its hidden ``.<id>.crc`` companions and temp files are not ids.
    """
    try:
        names = os.listdir(Path(checkpoint) / COMMIT_LOG)
    except FileNotFoundError:
        return None
    return max((int(name) for name in names if name.isdigit()), default=None)
