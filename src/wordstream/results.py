"""The results contract: Parquet per batch, replaced atomically, compacted, read back as totals.

Layout: ``output/<engine>/batch=<id>/part-*.parquet`` with columns ``key`` (string) and ``count``
(long). A replayed batch (after a crash the engines re-run the last uncommitted batch with the same
id and the same input) replaces its folder instead of adding rows, so results are exactly-once.

A DStream batch folder also holds its manifest, ``_files.json``: the watch files the batch read,
written inside the temp folder before it is swapped into place, so a visible batch and the record of
its input are one rename. A batch that read files but produced no keys is a folder with only its
manifest. Readers skip ``_`` names and read only ``*.parquet``, so both cope.

* ``structured`` writes the running totals of the keys a batch updated (outputMode update): a key's
  total is its row in the newest batch that has it.
* ``dstream`` writes per-batch counts, as the tutorial's ``reduceByKey`` does: a key's total is the
  sum over batches.

**Compaction** (:func:`compact`) keeps reading O(keys) instead of O(batches): it folds the batch
folders up to a batch id into ``output/<engine>/snapshot=<id>/`` — every key's total after batch
``<id>`` (``part-00000.parquet``, same columns) and ``_snapshot.json`` (what it holds) — then deletes
the folded folders and the older snapshot. Readers take the newest snapshot and the batch folders
after it, and ignore folders with an id at or below the snapshot's: so the totals are exact at every
moment of a compaction, and after a kill -9 at any point (the snapshot is written under a hidden
temp name and renamed into place; only then is anything deleted; the next compaction removes what a
dead one left). One compaction at a time per output (``output/<engine>/.compact.lock``; a second one
skips). It is safe while the stream runs as long as ``upto`` names only batches that will never be
written differently: a folder written later with an id at or below the snapshot's can only be the
replay of a folded batch (same input, same rows) and is ignored. The callers pass: the structured
engine, batches committed in ``<checkpoint>/commits/``; the DStream engine (batch id = batch time in
ms), batches older than its remember window.

Reading needs only pyarrow, so ``wordstream totals`` does not start Spark.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wordstream import control
from wordstream.durable import fsync_dir, fsync_file, write_json_atomically

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

Semantics = Literal["running-totals", "batch-counts"]
SEMANTICS: dict[str, Semantics] = {"structured": "running-totals", "dstream": "batch-counts"}
BATCH_PREFIX = "batch="
MANIFEST = "_files.json"
# Names of folders replace_batch is still writing or about to drop: hidden from every reader.
TEMP_PREFIXES = ("_tmp-", "_old-")
SNAPSHOT_PREFIX = "snapshot="
SNAPSHOT_INFO = "_snapshot.json"
SNAPSHOT_PART = "part-00000.parquet"
# Not "_tmp-": a snapshot being written belongs to the compaction holding the lock, nobody else.
_COMPACTING_PREFIX = "_compacting-"
COMPACT_LOCK = ".compact"  # control.hold_lock(output, COMPACT_LOCK) -> output/.compact.lock
READ_ATTEMPTS = 3  # a compaction or a replay may remove a folder between listing and reading it


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
    tmp = output / f"{TEMP_PREFIXES[0]}{final.name}-{uuid.uuid4().hex}"
    write(tmp)
    if final.exists():  # a replay: swap the old copy out first, then drop it
        old = output / f"{TEMP_PREFIXES[1]}{final.name}-{uuid.uuid4().hex}"
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


def write_batch(counts: DataFrame, output: Path, batch_id: int,
                files: Sequence[str] | None = None) -> WrittenBatch | None:
    """Persist one batch of ``(key, count)`` rows (Spark side).

    With ``files`` (DStream) the folder gets its manifest and is kept even without rows: the record
    that the batch read those files. Without (Structured, whose checkpoint is the record) a batch
    without rows leaves no folder and None is returned.

    One Spark job: the rows are read back from the Parquet just written (pyarrow, in the driver)
    instead of running more jobs over the batch to count and show it.
    """
    replayed = batch_dir(output, batch_id).exists()
    written: list[pa.Table] = []

    def write(path: Path) -> None:
        counts.select("key", "count").write.mode("error").parquet(str(path))
        rows = read_batch(path)
        if files is not None:
            if rows.num_rows == 0:  # Spark's empty part file and _SUCCESS: only the manifest stays
                for entry in path.iterdir():
                    entry.unlink()
            write_manifest(path, files)
        written.append(rows)

    folder = replace_batch(output, batch_id, write)
    if written[0].num_rows == 0 and files is None:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return WrittenBatch(folder, written[0], replayed)


def write_manifest(folder: Path, files: Iterable[str]) -> None:
    """The batch's input files by name (a path or URI is reduced to its last component)."""
    names = sorted({str(name).rstrip("/").rsplit("/", 1)[-1] for name in files})
    (Path(folder) / MANIFEST).write_text(json.dumps({"files": names}) + "\n", encoding="utf-8")


def read_manifest(folder: Path) -> list[str] | None:
    """The files a batch folder records, or None if it has no manifest."""
    try:
        text = (Path(folder) / MANIFEST).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return [str(name) for name in json.loads(text)["files"]]


def recorded_files(output: Path) -> set[str]:
    """The union of the manifests in ``output`` (what DStream processed): the newest snapshot's,
    which holds those of every batch it folded, and every batch folder's."""
    listing = list_results(output)
    names: set[str] = set()
    for folder in [*([listing.snapshot] if listing.snapshot else []), *batch_dirs(output)]:
        names.update(read_manifest(folder) or ())
    return names


def read_batch(folder: Path) -> pa.Table:
    """One batch folder's rows, in Spark's partition order (part files sorted by name)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(p for p in Path(folder).iterdir() if p.suffix == ".parquet" and p.is_file())
    schema = pa.schema([("key", pa.string()), ("count", pa.int64())])
    tables = [pq.read_table(part, columns=["key", "count"]) for part in parts]
    return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


def batch_dirs(output: Path) -> list[Path]:
    """Every batch folder, folded into a snapshot or not (see :func:`list_results` for reading)."""
    return _visible_dirs(output, BATCH_PREFIX)


def snapshot_dir(output: Path, batch_id: int) -> Path:
    return Path(output) / f"{SNAPSHOT_PREFIX}{batch_id:020d}"


def folder_id(folder: Path) -> int:
    """The batch id in a ``batch=<id>`` or ``snapshot=<id>`` folder name."""
    return int(folder.name.split("=", 1)[1])


def _visible_dirs(output: Path, prefix: str) -> list[Path]:
    output = Path(output)
    if not output.is_dir():
        return []
    return sorted(p for p in output.iterdir() if p.name.startswith(prefix) and p.is_dir())


@dataclass(frozen=True)
class Listing:
    """What a reader reads: the newest snapshot and the batch folders after it."""

    snapshot: Path | None
    batches: tuple[Path, ...]  # after the snapshot, in batch order
    folded: tuple[Path, ...]  # older snapshots and folded batches a dead compaction left: not read

    @property
    def snapshot_id(self) -> int:
        return -1 if self.snapshot is None else folder_id(self.snapshot)

    @property
    def empty(self) -> bool:
        return self.snapshot is None and not self.batches

    def batch_count(self) -> int:
        """Batches with results in this epoch: those folded into the snapshot and those after it."""
        folded = 0 if self.snapshot is None else int(snapshot_info(self.snapshot)["batches"])
        return folded + len(self.batches)


def list_results(output: Path) -> Listing:
    snapshots = _visible_dirs(output, SNAPSHOT_PREFIX)
    newest = snapshots[-1] if snapshots else None
    cut = -1 if newest is None else folder_id(newest)
    batches = batch_dirs(output)
    return Listing(newest, tuple(b for b in batches if folder_id(b) > cut),
                   tuple([*snapshots[:-1], *(b for b in batches if folder_id(b) <= cut)]))


def snapshot_info(snapshot: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((Path(snapshot) / SNAPSHOT_INFO).read_text())
    return info


def batch_id_of(folder: Path) -> int:
    return int(Path(folder).name[len(BATCH_PREFIX):])


def remove_batches_after(output: Path, batch_id: int | None) -> list[int]:
    """Remove the batch folders with an id above ``batch_id`` (every one if None); their ids."""
    removed = []
    for folder in batch_dirs(output):
        if batch_id is None or batch_id_of(folder) > batch_id:
            shutil.rmtree(folder)
            removed.append(batch_id_of(folder))
    return removed


def remove_temp_folders(output: Path) -> int:
    """Remove what :func:`replace_batch` left half done (a crash while writing or swapping)."""
    output = Path(output)
    if not output.is_dir():
        return 0
    temps = [p for p in output.iterdir() if p.name.startswith(TEMP_PREFIXES) and p.is_dir()
             and not p.is_symlink()]
    for folder in temps:
        shutil.rmtree(folder)
    return len(temps)


def read_totals(output: Path, semantics: Semantics) -> dict[str, int]:
    """Every key with its total: the newest snapshot, then the batches after it."""
    for attempt in range(READ_ATTEMPTS):
        listing = list_results(output)
        try:
            return _fold(listing.snapshot, listing.batches, semantics)
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _fold(snapshot: Path | None, batches: Iterable[Path], semantics: Semantics) -> dict[str, int]:
    totals: dict[str, int] = {}
    if snapshot is not None:
        table = read_batch(snapshot)
        totals = dict(zip(table.column("key").to_pylist(), table.column("count").to_pylist(), strict=True))
    for folder in batches:
        table = read_batch(folder)
        keys = table.column("key").to_pylist()
        counts = table.column("count").to_pylist()
        if semantics == "running-totals":
            totals.update(zip(keys, counts, strict=True))
        else:
            for key, count in zip(keys, counts, strict=True):
                totals[key] = totals.get(key, 0) + count
    return totals


@dataclass(frozen=True)
class Compaction:
    """What :func:`compact` did."""

    snapshot: Path | None  # the newest snapshot after it (None: still nothing to fold)
    folded: int  # batch folders folded into it by this compaction
    keys: int  # keys in the snapshot
    removed: int  # folders deleted: the folded ones, the older snapshot, what a dead compaction left


def compact(output: Path, semantics: Semantics, upto: int) -> Compaction | None:
    """Fold the batch folders with an id up to ``upto`` into a new snapshot (see the module docstring).

    None when another compaction of ``output`` is running, or there is no output.
    """
    output = Path(output)
    if not output.is_dir():
        return None
    try:
        with control.hold_lock(output, COMPACT_LOCK, wait_seconds=0):
            return _compact(output, semantics, upto)
    except control.EngineBusyError:
        return None


def _compact(output: Path, semantics: Semantics, upto: int) -> Compaction:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for leftover in output.glob(f"{_COMPACTING_PREFIX}*"):  # a dead compaction's: nobody writes it now
        shutil.rmtree(leftover)
    listing = list_results(output)
    fold = [folder for folder in listing.batches if folder_id(folder) <= upto]
    if not fold:
        removed = _remove(listing.folded)
        keys = 0 if listing.snapshot is None else int(snapshot_info(listing.snapshot)["keys"])
        return Compaction(listing.snapshot, 0, keys, removed)
    totals = _fold(listing.snapshot, fold, semantics)
    batch_id = folder_id(fold[-1])
    final = snapshot_dir(output, batch_id)
    tmp = output / f"{_COMPACTING_PREFIX}{final.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    ordered = sorted(totals)
    table = pa.table({"key": pa.array(ordered, pa.string()),
                      "count": pa.array([totals[key] for key in ordered], pa.int64())})
    pq.write_table(table, tmp / SNAPSHOT_PART)
    fsync_file(tmp / SNAPSHOT_PART)
    sources = [*([listing.snapshot] if listing.snapshot else []), *fold]
    manifests = [read_manifest(folder) for folder in sources]
    if any(names is not None for names in manifests):  # DStream's record of what it processed goes along
        write_manifest(tmp, (name for names in manifests for name in names or ()))
        fsync_file(tmp / MANIFEST)
    write_json_atomically(tmp / SNAPSHOT_INFO, {
        "batch_id": batch_id, "semantics": semantics, "keys": len(ordered),
        "batches": listing.batch_count() - len(listing.batches) + len(fold),
        "created_at": control.utc_now(),
    })
    fsync_dir(tmp)
    os.replace(tmp, final)  # from here on readers take the new snapshot and skip what it folded
    fsync_dir(output)
    removed = _remove([*fold, *([listing.snapshot] if listing.snapshot else []), *listing.folded])
    return Compaction(final, len(fold), len(ordered), removed)


def foldable_upto(engine: str, checkpoint: Path, remember_seconds: float, now: float) -> int | None:
    """The newest batch id of ``engine`` a compaction may fold, even while the engine runs.

    Structured: the last batch in the commit log (Spark never runs it again). DStream: batches older
    than the remember window (its batch id is its batch time in ms); a batch written later with an
    older id is a recovered replay of the same files, ignored once folded.
    """
    if engine == "structured":
        from wordstream.engines.spark_probes import structured_last_commit

        return structured_last_commit(checkpoint)
    return int((now - remember_seconds) * 1000)


def _remove(folders: Iterable[Path]) -> int:
    removed = 0
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


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
