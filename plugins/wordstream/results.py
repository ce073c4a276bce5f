"""The results contract: Parquet per batch, replaced atomically, read back as totals.

Layout: ``output/<engine>/batch=<id>/part-*.parquet`` with columns ``key`` (string) and ``count``
(long). A replayed batch (after a crash the engines re-run the last uncommitted batch with the same
id and the same input) replaces its folder instead of adding rows, so results are exactly-once.

* ``structured`` writes the running totals of the keys a batch updated (outputMode update): a key's
  total is its row in the newest batch that has it.
* ``dstream`` writes per-batch counts, as the tutorial's ``reduceByKey`` does: a key's total is the
  sum over batches.

Reading needs only pyarrow, so ``wordstream totals`` does not start Spark.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Semantics = Literal["running-totals", "batch-counts"]
SEMANTICS: dict[str, Semantics] = {"structured": "running-totals", "dstream": "batch-counts"}
BATCH_PREFIX = "batch="


def batch_dir(output: Path, batch_id: int) -> Path:
    """Zero-padded so that name order is batch order."""
    return Path(output) / f"{BATCH_PREFIX}{batch_id:020d}"


def replace_batch(output: Path, batch_id: int, write: Callable[[Path], None]) -> Path:
    """Write a batch into a hidden temp folder with ``write(path)``, then swap it into place.

    Hidden names (``_``/``.``) are skipped by readers, so a half-written batch is never read.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    final = batch_dir(output, batch_id)
    tmp = output / f"_tmp-{final.name}-{uuid.uuid4().hex}"
    write(tmp)
    if final.exists():  # a replay: swap the old copy out first, then drop it
        old = output / f"_old-{final.name}-{uuid.uuid4().hex}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def write_batch(counts: DataFrame, output: Path, batch_id: int) -> Path:
    """Persist one batch of ``(key, count)`` rows (Spark side)."""

    def write(path: Path) -> None:
        counts.select("key", "count").write.mode("error").parquet(str(path))

    return replace_batch(output, batch_id, write)


def batch_dirs(output: Path) -> list[Path]:
    output = Path(output)
    if not output.is_dir():
        return []
    return sorted(p for p in output.iterdir() if p.is_dir() and p.name.startswith(BATCH_PREFIX))


def read_totals(output: Path, semantics: Semantics) -> dict[str, int]:
    """Every key with its total from the persisted batches."""
    import pyarrow.parquet as pq

    totals: dict[str, int] = {}
    for folder in batch_dirs(output):
        table = pq.read_table(folder, columns=["key", "count"])
        keys = table.column("key").to_pylist()
        counts = table.column("count").to_pylist()
        if semantics == "running-totals":
            totals.update(zip(keys, counts, strict=True))
        else:
            for key, count in zip(keys, counts, strict=True):
                totals[key] = totals.get(key, 0) + count
    return totals


def ranked(totals: dict[str, int], top: int | None = None) -> list[tuple[str, int]]:
    """Sorted by count descending, then key ascending (the contract's order)."""
    rows = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return rows if top is None else rows[:top]


def to_csv(rows: Iterable[tuple[str, int]]) -> str:
    """``word,count`` with RFC 4180 quoting (CRLF line ends, quotes doubled)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["word", "count"])
    writer.writerows(rows)
    return buffer.getvalue()
