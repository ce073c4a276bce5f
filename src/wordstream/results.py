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
import heapq
import io
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pyarrow as pa
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


@dataclass(frozen=True)
class WrittenBatch:
    """A batch as persisted, read back: what the driver prints, counts and ranks."""

    folder: Path
    rows: pa.Table  # columns key, count
    replayed: bool  # the folder existed: this batch id was written before (a replay after a crash)


def write_batch(counts: DataFrame, output: Path, batch_id: int) -> WrittenBatch | None:
    """Persist one batch of ``(key, count)`` rows (Spark side); None when the batch has no rows.

    One Spark job: the rows are read back from the Parquet just written (pyarrow, in the driver)
    instead of running more jobs over the batch to count and show it.
    """
    replayed = batch_dir(output, batch_id).exists()
    written: list[pa.Table] = []

    def write(path: Path) -> None:
        counts.select("key", "count").write.mode("error").parquet(str(path))
        written.append(read_batch(path))

    folder = replace_batch(output, batch_id, write)
    if written[0].num_rows == 0:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return WrittenBatch(folder, written[0], replayed)


def read_batch(folder: Path) -> pa.Table:
    """One batch folder's rows, in Spark's partition order (part files sorted by name)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(p for p in Path(folder).iterdir() if p.suffix == ".parquet" and p.is_file())
    schema = pa.schema([("key", pa.string()), ("count", pa.int64())])
    tables = [pq.read_table(part, columns=["key", "count"]) for part in parts]
    return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


def batch_dirs(output: Path) -> list[Path]:
    output = Path(output)
    if not output.is_dir():
        return []
    return sorted(p for p in output.iterdir() if p.is_dir() and p.name.startswith(BATCH_PREFIX))


def read_totals(output: Path, semantics: Semantics) -> dict[str, int]:
    """Every key with its total from the persisted batches."""
    totals: dict[str, int] = {}
    for folder in batch_dirs(output):
        table = read_batch(folder)
        keys = table.column("key").to_pylist()
        counts = table.column("count").to_pylist()
        if semantics == "running-totals":
            totals.update(zip(keys, counts, strict=True))
        else:
            for key, count in zip(keys, counts, strict=True):
                totals[key] = totals.get(key, 0) + count
    return totals


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def ranked(totals: Mapping[str, int], top: int | None = None) -> list[tuple[str, int]]:
    """Sorted by count descending, then key ascending (the contract's order)."""
    if top is None:
        return sorted(totals.items(), key=_rank)
    return heapq.nsmallest(top, totals.items(), key=_rank)


class TopKeys:
    """The top ``n`` keys of an epoch, kept from each batch's rows as the batches are written.

    Re-reading every batch folder after each batch costs more with every batch. Running totals only
    grow, so for ``running-totals`` the best ``n`` among the previous top and a batch's rows are
    exactly the new top: a key the batch did not update ranked below all of the previous top, whose
    totals can only have risen. ``batch-counts`` adds each batch to every key's total, so it keeps
    every total. A replayed ``batch-counts`` batch replaced rows already added: the totals are then
    read again from the results.
    """

    def __init__(self, output: Path, semantics: Semantics, n: int) -> None:
        self.output = Path(output)
        self.semantics = semantics
        self.n = n
        self._totals: dict[str, int] | None = None  # read from the results on first use

    def add(self, batch: WrittenBatch) -> None:
        """Account for a batch written to ``output`` (call after the write: a first use reads it)."""
        if self._totals is None or (batch.replayed and self.semantics == "batch-counts"):
            self._load()
            return
        if self.semantics == "running-totals":
            self._totals.update(_top_rows(batch.rows, self.n))
            self._totals = dict(ranked(self._totals, self.n))
        else:
            keys = batch.rows.column("key").to_pylist()
            counts = batch.rows.column("count").to_pylist()
            for key, count in zip(keys, counts, strict=True):
                self._totals[key] = self._totals.get(key, 0) + count

    def top(self) -> list[tuple[str, int]]:
        if self._totals is None:
            self._load()
        assert self._totals is not None
        return ranked(self._totals, self.n)

    def _load(self) -> None:
        totals = read_totals(self.output, self.semantics)
        self._totals = totals if self.semantics == "batch-counts" else dict(ranked(totals, self.n))


def _top_rows(rows: pa.Table, n: int) -> list[tuple[str, int]]:
    """The ``n`` best rows of a batch, ranked in Arrow (a batch may hold a million keys)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(rows, sort_keys=[("count", "descending"), ("key", "ascending")])
    best = rows.take(order[:n])
    return list(zip(best.column("key").to_pylist(), best.column("count").to_pylist(), strict=True))


def to_csv(rows: Iterable[tuple[str, int]]) -> str:
    """``word,count`` with RFC 4180 quoting (CRLF line ends, quotes doubled)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["word", "count"])
    writer.writerows(rows)
    return buffer.getvalue()


# Characters Spark's show() draws two columns wide (Utils.stringHalfWidth).
_FULL_WIDTH = re.compile("[\u1100-\u115F\u2E80-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE10-\uFE19"
                         "\uFE30-\uFE6F\uFF00-\uFF60\uFFE0-\uFFE6]")


def _half_width(text: str) -> int:
    """Columns Spark's show() gives ``text``: UTF-16 units, plus one per full-width character."""
    return len(text.encode("utf-16-le")) // 2 + len(_FULL_WIDTH.findall(text))


# What show() escapes in a cell (SchemaUtils.escapeMetaCharacters); a backslash is left as it is.
_META_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f", "\b": "\\b", "\x0b": "\\v",
                 "\x07": "\\a"}
_META = re.compile("[" + "".join(_META_ESCAPES) + "]")


def _cell(value: object, truncate: int) -> str:
    """A value as show() writes it in a cell: escaped, then cut to ``truncate`` UTF-16 units."""
    text = _META.sub(lambda match: _META_ESCAPES[match.group()], str(value))
    units = text.encode("utf-16-le", "surrogatepass")
    if truncate <= 0 or len(units) <= 2 * truncate:
        return text
    keep = truncate - 3 if truncate >= 4 else truncate
    head = units[:2 * keep].decode("utf-16-le", "surrogatepass")
    if "\ud800" <= head[-1] <= "\udbff":  # Java cuts a surrogate pair too; its half prints as "?"
        head = head[:-1] + "?"
    return head + ("..." if truncate >= 4 else "")


def show_string(columns: Sequence[str], rows: Sequence[Sequence[object]], total: int,
                truncate: int = 20) -> str:
    """``rows`` drawn as ``Dataset.show(len(rows), truncate)`` draws them.

    The default is the tutorial's console sink (``show(numRows, truncate=True)``): cells of more
    than 20 characters cut to 17 and ``...``, right-aligned. ``truncate=0`` draws whole values,
    left-aligned. Either way tabs and other control characters show escaped (``\\t``). ``total`` is
    the number of rows of the whole batch: more than shown adds Spark's footer line.
    """
    header = [_cell(name, truncate) for name in columns]
    cells = [[_cell(value, truncate) for value in row] for row in rows]
    widths = [max(3, _half_width(name), *(_half_width(row[i]) for row in cells))
              for i, name in enumerate(header)]
    rule = "+" + "+".join("-" * width for width in widths) + "+"

    def pad(value: str, width: int) -> str:
        gap = " " * (width - _half_width(value))
        return gap + value if truncate > 0 else value + gap

    def line(values: Sequence[str]) -> str:
        return "|" + "|".join(pad(value, width) for value, width in zip(values, widths, strict=True)) + "|"

    drawn = "\n".join([rule, line(header), rule, *(line(row) for row in cells), rule]) + "\n"
    if total > len(rows):
        drawn += f"only showing top {len(rows)} {'row' if len(rows) == 1 else 'rows'}"
    return drawn
