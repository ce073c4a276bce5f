"""Every use of Spark's internals, in one place, each pinned by a test on the installed Spark.

The engines need facts Spark has no public API for:

* which files a Structured Streaming batch read, and which files the batches committed so far read:
  the file source's metadata log in the checkpoint (``sources/0/<log id>``, and ``.compact`` files
  that fold every earlier entry in), addressed through the offset log (``offsets/<batch id>`` ends
  with the source's ``{"logOffset": N}``: log ids are not batch ids) and the commit log
  (``commits/<batch id>``, written once the batch's output and state are done);
* which files a DStream batch read: the ``NewHadoopRDD`` roots of the batch's lineage, which
  ``textFileStream`` names after their paths;
* how many lines a DStream batch has, counted in the JVM (``rdd._jrdd``) rather than by shipping
  every line to a Python worker only to count it;
* which Structured Streaming batch committed last: the commit log in the checkpoint
  (``commits/<batch id>``), which bounds what a compaction of the results may fold;
* which SQL confs a Structured Streaming checkpoint fixed (shuffle partitions, state store provider):
  the ``conf`` map Spark records in every ``offsets/<batch id>`` and restores on restart.

``tests/spark/test_spark_probes.py`` runs each against real Spark, so an upgrade that changes any of
them fails loudly there instead of silently in production.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from pyspark import RDD

FILE_SOURCE_LOG = Path("sources") / "0"
OFFSET_LOG = Path("offsets")
COMMIT_LOG = Path("commits")
COMPACT_SUFFIX = ".compact"
HADOOP_FILE_RDD = "NewHadoopRDD"


class CheckpointError(ValueError):
    """The checkpoint does not say what a batch read (a log file is missing or unreadable)."""


# -- Structured Streaming: the checkpoint's logs -------------------------------------------------
def _log_ids(folder: Path) -> tuple[set[int], set[int]]:
    """Ids of the plain and of the ``.compact`` files of a metadata log folder.

    Spark writes each log file under a hidden temp name and renames it, so only whole files count.
    """
    plain: set[int] = set()
    compact: set[int] = set()
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return plain, compact
    for name in names:
        stem = name.removesuffix(COMPACT_SUFFIX)
        if stem.isdigit():
            (compact if stem != name else plain).add(int(stem))
    return plain, compact


def structured_last_commit(checkpoint: Path) -> int | None:
    """The newest batch id in the commit log: that batch and every earlier one are done."""
    plain, _ = _log_ids(Path(checkpoint) / COMMIT_LOG)
    return max(plain, default=None)


def structured_planned_batches(checkpoint: Path) -> set[int]:
    """Batch ids in the offset log (planned; a batch is done once it is in the commit log too)."""
    return _log_ids(Path(checkpoint) / OFFSET_LOG)[0]


def structured_source_offset(checkpoint: Path, batch_id: int) -> int:
    """The file source's log id at the end of ``batch_id``: the last line of ``offsets/<id>``."""
    path = Path(checkpoint) / OFFSET_LOG / str(batch_id)
    try:
        last = path.read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[-1]
        return int(json.loads(last)["logOffset"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"cannot read the file source offset of batch {batch_id} from {path}: "
                              f"{error}") from None


def structured_checkpoint_conf(checkpoint: Path) -> dict[str, str]:
    """The SQL confs recorded in the newest ``offsets/<id>`` (its second line's ``conf``), which Spark
    puts back into the session when the query restarts; empty before the first batch was planned."""
    planned = structured_planned_batches(checkpoint)
    if not planned:
        return {}
    path = Path(checkpoint) / OFFSET_LOG / str(max(planned))
    try:
        metadata = json.loads(path.read_text(encoding="utf-8").split("\n")[1])
        return {str(key): str(value) for key, value in metadata["conf"].items()}
    except (OSError, ValueError, KeyError, IndexError, AttributeError) as error:
        raise CheckpointError(f"cannot read the confs of {path}: {error}") from None


def _entries(path: Path) -> tuple[tuple[int, str], ...]:
    """``(log id, path)`` of every entry of one log file (cached: a log file never changes)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"file source log {path} is missing") from None
    return _parse_log(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _parse_log(path: Path, _mtime_ns: int, _size: int) -> tuple[tuple[int, str], ...]:
    """A ``v1`` line, then one JSON object per file: ``path`` (a URI), ``timestamp``, ``batchId``.

    A compact file holds every entry the source ever logged (tens of MB for a long epoch), so it is
    read line by line, and the cache keeps the parse of the newest ones between calls.
    """
    entries = []
    with open(path, encoding="utf-8") as lines:
        version = next(lines, "").strip()
        if version != "v1":
            raise CheckpointError(f"file source log {path} has version {version!r}, not v1")
        for line in lines:
            if line.strip():
                entry = json.loads(line)
                entries.append((int(entry["batchId"]), unquote(urlparse(entry["path"]).path)))
    return tuple(entries)


def structured_log_files(checkpoint: Path, after: int | None, upto: int) -> list[str]:
    """Files of the file source log with log ids in ``(after, upto]`` (``after`` None: from the start).

    The newest compact file in the range covers every id up to its own; plain files cover the rest.
    Spark deletes plain files (and old compacts) some time after a later compaction, which then
    holds their entries.
    """
    log = Path(checkpoint) / FILE_SOURCE_LOG
    low = -1 if after is None else after
    plain, compact = _log_ids(log)
    files: list[str] = []
    covered = low
    within = [k for k in compact if low < k <= upto]
    if within:
        newest = max(within)
        files += [path for log_id, path in _entries(log / f"{newest}{COMPACT_SUFFIX}") if low < log_id]
        covered = newest
    rest = range(covered + 1, upto + 1)
    if all(log_id in plain for log_id in rest):
        for log_id in rest:
            files += [path for entry_id, path in _entries(log / str(log_id)) if entry_id == log_id]
        return files
    later = min((k for k in compact if k > upto), default=None)
    if later is None:
        raise CheckpointError(f"{log} has no log of ids {rest.start}..{rest.stop - 1}")
    return files + [path for log_id, path in _entries(log / f"{later}{COMPACT_SUFFIX}")
                    if covered < log_id <= upto]


def structured_batch_files(checkpoint: Path, batch_id: int) -> list[str]:
    """Files the file source read in ``batch_id``: log ids after the previous batch's, up to its own."""
    previous = structured_source_offset(checkpoint, batch_id - 1) if batch_id > 0 else None
    return structured_log_files(checkpoint, previous, structured_source_offset(checkpoint, batch_id))


def structured_committed_files(checkpoint: Path) -> list[str]:
    """Every file read by a committed batch: the log up to the newest commit's source offset.

    A batch planned but not committed (``offsets/<n>`` without ``commits/<n>``) is not included: it
    runs again, with the same files, when the query restarts.
    """
    last = structured_last_commit(checkpoint)
    if last is None:
        return []
    return structured_log_files(checkpoint, None, structured_source_offset(checkpoint, last))


# -- DStream -------------------------------------------------------------------------------------
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

