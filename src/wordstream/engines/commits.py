"""What an engine has processed, read from the engine's own commit record; the ledger reconciled with it.

"Processed" is what the engine itself committed, never the ledger's marks: a driver marks files
after the batch, so a driver killed between the commit and the mark leaves the ledger behind, and
only the engine's record can tell.

* **structured** — the file source log entries of every batch up to the newest id in
  ``<checkpoint>/commits/`` (:func:`~wordstream.engines.spark_probes.structured_committed_files`);
* **dstream** — the union of the manifests in its output's batch folders
  (:func:`~wordstream.results.recorded_files`): the sink writes a batch's manifest inside the folder
  before the folder is renamed into place, so "output visible" and "files recorded" are one rename.

:func:`reconcile` brings the ledger in line with that record. It runs when a driver starts (before
the stream), in a reset before it decides what to give back, and for the lag that
``wordstream status`` and the status page show. The drivers' per-batch marks only make the ledger
current sooner; nothing depends on them.
"""

from __future__ import annotations

import os
from pathlib import Path

from wordstream import results
from wordstream.control import utc_now
from wordstream.engines import spark_probes
from wordstream.ledger import Ledger, watch_basename
from wordstream.settings import Engine
from wordstream.staging.names import is_partial_name


def processed_files(engine: Engine, checkpoint: Path, output: Path) -> set[str]:
    """The watch names ``engine`` has processed in the epoch of ``checkpoint`` and ``output``.

    Raises :class:`~wordstream.engines.spark_probes.CheckpointError` when the checkpoint cannot say.
    """
    if engine == "structured":
        return {watch_basename(path) for path in spark_probes.structured_committed_files(checkpoint)}
    return results.recorded_files(output)


def record_signature(engine: Engine, checkpoint: Path, output: Path) -> tuple[object, ...]:
    """Changes whenever :func:`processed_files` may change, and is cheap to take.

    Structured: the checkpoint folder's identity and the newest commit (files logged up to a
    committed batch never change). DStream: the identity of every batch folder (a replayed batch
    is a new folder under the same name).
    """
    if engine == "structured":
        return (_inode(checkpoint), spark_probes.structured_last_commit(checkpoint))
    try:
        with os.scandir(output) as entries:
            folders = sorted((entry.name, entry.inode()) for entry in entries
                             if entry.name.startswith(results.BATCH_PREFIX))
    except FileNotFoundError:
        folders = []
    return (_inode(output), tuple(folders))


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def discard_uncommitted(engine: Engine, checkpoint: Path, output: Path) -> list[int]:
    """Remove output the engine never committed, so the epoch's totals are its committed batches'.

    Structured writes a batch's folder before its commit: a crash in between leaves a folder whose
    files the commit log does not count (the restarted query would replace it; a reset gives those
    files back instead, so the folder must go). Both engines: temp folders of unfinished writes.
    Returns the batch ids removed.
    """
    removed = []
    if engine == "structured":
        removed = results.remove_batches_after(output, spark_probes.structured_last_commit(checkpoint))
    results.remove_temp_folders(output)
    return removed


def watch_names(watch: Path) -> set[str]:
    """The files in a watch folder an engine may read (not hidden, not being written)."""
    try:
        with os.scandir(watch) as entries:
            return {entry.name for entry in entries
                    if entry.is_file(follow_symlinks=False) and not is_partial_name(entry.name)}
    except FileNotFoundError:
        return set()


def reconcile(ledger: Ledger, engine: Engine, checkpoint: Path, output: Path,
              watch: Path) -> tuple[int, int]:
    """Make the ledger's processed marks of ``engine`` those of the engine's record.

    Returns (deliveries marked processed, deliveries back to published): see :meth:`Ledger.reconcile`.
    """
    as_of = utc_now()  # before the record is read: a mark made after this may be newer than it
    processed = processed_files(engine, checkpoint, output)
    return ledger.reconcile(engine, processed, watch_names(watch), as_of)
