"""The results contract read back: top keys kept batch by batch equal a full re-read, exactly."""

from __future__ import annotations

import random
from pathlib import Path

import crash_point
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wordstream import results


def write(output: Path, batch_id: int, rows: dict[str, int]) -> results.WrittenBatch:
    """One batch in the results layout, as a sink leaves it, and what write_batch returns for it."""
    folder = results.batch_dir(output, batch_id)
    replayed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"key": pa.array(list(rows), pa.string()),
                      "count": pa.array(list(rows.values()), pa.int64())})
    pq.write_table(table, folder / "part-00000-x.snappy.parquet")
    return results.WrittenBatch(folder, results.read_batch(folder), replayed)


def running_batches(rng: random.Random, batches: int) -> list[dict[str, int]]:
    """Running totals as the structured engine writes them: each batch, the new totals of the keys it saw."""
    totals: dict[str, int] = {}
    out = []
    for _ in range(batches):
        seen = rng.sample(range(300), rng.randint(1, 60))
        for key in seen:  # many ties: counts are small
            totals[f"k{key}"] = totals.get(f"k{key}", 0) + rng.randint(1, 3)
        out.append({f"k{key}": totals[f"k{key}"] for key in seen})
    return out


@pytest.mark.parametrize("seed", range(5))
def test_running_totals_top_equals_a_full_reread_after_every_batch(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    top = results.TopKeys(tmp_path, "running-totals", 10)
    for batch_id, rows in enumerate(running_batches(rng, 40)):
        top.add(write(tmp_path, batch_id, rows))
        expected = results.ranked(results.read_totals(tmp_path, "running-totals"), 10)
        assert top.top() == expected


def test_batch_counts_top_sums_batches_and_rereads_after_a_replay(tmp_path: Path) -> None:
    rng = random.Random(3)
    top = results.TopKeys(tmp_path, "batch-counts", 5)
    batches = [{f"k{rng.randrange(40)}": rng.randint(1, 9) for _ in range(20)} for _ in range(12)]
    for batch_id, rows in enumerate(batches):
        top.add(write(tmp_path, batch_id, rows))
    # A replay after a crash rewrites batch 11 with the same rows: counted once, not twice.
    top.add(write(tmp_path, 11, batches[11]))
    summed: dict[str, int] = {}
    for rows in batches:
        for key, count in rows.items():
            summed[key] = summed.get(key, 0) + count
    assert top.top() == results.ranked(summed, 5)
    assert results.read_totals(tmp_path, "batch-counts") == summed


def test_top_of_a_recovered_epoch_starts_from_the_persisted_results(tmp_path: Path) -> None:
    write(tmp_path, 0, {"a": 5, "b": 2})
    write(tmp_path, 1, {"b": 9})
    top = results.TopKeys(tmp_path, "running-totals", 2)  # a new driver over an old epoch
    top.add(write(tmp_path, 2, {"c": 1}))
    assert top.top() == [("b", 9), ("a", 5)]


def test_ranked_orders_by_count_then_key() -> None:
    totals = {"b": 2, "a": 2, "c": 5, "d": 1}
    assert results.ranked(totals) == [("c", 5), ("a", 2), ("b", 2), ("d", 1)]
    assert results.ranked(totals, 2) == [("c", 5), ("a", 2)]


def test_manifests_record_the_files_of_each_batch_and_folders_without_rows_read_as_empty(
        tmp_path: Path) -> None:
    write(tmp_path, 0, {"a": 1})
    results.write_manifest(results.batch_dir(tmp_path, 0), ["file:///w/x.txt", "/w/y.txt"])
    blank = results.batch_dir(tmp_path, 1)  # a batch of blank lines: files, no keys, no parquet
    blank.mkdir()
    results.write_manifest(blank, ["z.txt"])
    write(tmp_path, 2, {"a": 2})  # no manifest: records nothing
    assert results.read_manifest(results.batch_dir(tmp_path, 0)) == ["x.txt", "y.txt"]
    assert results.read_manifest(results.batch_dir(tmp_path, 2)) is None
    assert results.recorded_files(tmp_path) == {"x.txt", "y.txt", "z.txt"}
    assert results.read_totals(tmp_path, "batch-counts") == {"a": 3}
    assert results.read_batch(blank).num_rows == 0


def test_removing_uncommitted_batches_and_unfinished_writes(tmp_path: Path) -> None:
    for batch_id in range(4):
        write(tmp_path, batch_id, {"a": batch_id + 1})
    (tmp_path / "_tmp-batch=00000000000000000004-0a1b").mkdir()
    (tmp_path / "_old-batch=00000000000000000002-0a1b").mkdir()
    assert results.remove_batches_after(tmp_path, 1) == [2, 3]
    assert results.remove_temp_folders(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [results.batch_dir(tmp_path, i).name for i in (0, 1)]
    assert results.read_totals(tmp_path, "running-totals") == {"a": 2}
    assert results.remove_batches_after(tmp_path, None) == [0, 1]
    assert results.remove_temp_folders(tmp_path / "missing") == 0


# -- compaction ------------------------------------------------------------------------------------
def summed(batches: list[dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for rows in batches:
        for key, count in rows.items():
            totals[key] = totals.get(key, 0) + count
    return totals


def latest(batches: list[dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for rows in batches:
        totals.update(rows)
    return totals


def layout(output: Path) -> list[str]:
    return sorted(p.name for p in output.iterdir())


@pytest.mark.parametrize("semantics", ["running-totals", "batch-counts"])
def test_compaction_keeps_the_totals_and_folds_only_up_to_the_given_batch(
        tmp_path: Path, semantics: results.Semantics) -> None:
    rng = random.Random(11)
    batches = running_batches(rng, 30) if semantics == "running-totals" else [
        {f"k{rng.randrange(50)}": rng.randint(1, 9) for _ in range(15)} for _ in range(30)]
    expected = latest if semantics == "running-totals" else summed
    written = 0
    for upto in (9, 9, 20, 29):
        while written <= upto:
            write(tmp_path, written, batches[written])
            written += 1
        folded_before = results.list_results(tmp_path).batch_count()
        done = results.compact(tmp_path, semantics, upto - 3)  # the last three stay batch folders
        assert done is not None and done.snapshot == results.snapshot_dir(tmp_path, upto - 3)
        assert results.read_totals(tmp_path, semantics) == expected(batches[:written])
        listing = results.list_results(tmp_path)
        assert [results.folder_id(b) for b in listing.batches] == list(range(upto - 2, written))
        assert listing.folded == () and listing.batch_count() == folded_before == written
        assert results.snapshot_info(done.snapshot)["keys"] == done.keys == len(
            expected(batches[:upto - 2]))
    assert layout(tmp_path) == [".compact.lock", *(f"batch={i:020d}" for i in range(27, 30)),
                                f"snapshot={26:020d}"]
    # A replay of a folded batch (same id, same rows) is ignored; the next compaction removes it.
    write(tmp_path, 5, batches[5])
    assert results.read_totals(tmp_path, semantics) == expected(batches)
    assert results.list_results(tmp_path).folded == (results.batch_dir(tmp_path, 5),)
    again = results.compact(tmp_path, semantics, 26)
    assert again is not None and (again.folded, again.removed) == (0, 1)
    assert results.batch_dir(tmp_path, 5).exists() is False
    # Running totals: a key's total is its row in the newest batch or snapshot that has it.
    top = results.TopKeys(tmp_path, semantics, 5)
    assert top.top() == results.ranked(expected(batches), 5)


def test_a_second_compaction_at_once_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, 0, {"a": 1})
    from wordstream import control

    with control.hold_lock(tmp_path, results.COMPACT_LOCK):
        assert results.compact(tmp_path, "batch-counts", 0) is None
    assert results.compact(tmp_path / "missing", "batch-counts", 0) is None
    assert results.compact(tmp_path, "batch-counts", 0) is not None


CRASHING_COMPACTION = """
import os, shutil, sys
from pathlib import Path
import pyarrow.parquet as pq
from crash_point import die_after
from wordstream import results

output, semantics, point, allowed = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
owner, attr = {
    "write_table": (pq, "write_table"), "fsync_file": (results, "fsync_file"),
    "write_json": (results, "write_json_atomically"), "fsync_dir": (results, "fsync_dir"),
    "os.replace": (os, "replace"), "rmtree": (shutil, "rmtree"),
}[point]
# A torn write_table leaves half a file, as a kill in the middle of the write does.
die_after(owner, attr, allowed, last_words=(lambda *args, **kwargs: Path(args[1]).write_bytes(b"PAR1 torn"))
          if point == "write_table" else None)
results.compact(output, semantics, int(sys.argv[5]))
"""


@pytest.mark.drill
@pytest.mark.parametrize("semantics", ["running-totals", "batch-counts"])
@pytest.mark.parametrize(("point", "allowed"), [
    ("write_table", 0), ("fsync_file", 0), ("write_json", 0), ("fsync_dir", 0), ("fsync_dir", 1),
    ("os.replace", 0), ("rmtree", 0), ("rmtree", 1), ("rmtree", 4), ("rmtree", 7),
])
def test_a_compaction_killed_at_any_point_leaves_exact_totals(
        tmp_path: Path, semantics: results.Semantics, point: str, allowed: int) -> None:
    import subprocess

    rng = random.Random(5)
    batches = running_batches(rng, 12) if semantics == "running-totals" else [
        {f"k{rng.randrange(30)}": rng.randint(1, 9) for _ in range(10)} for _ in range(12)]
    expected = latest(batches) if semantics == "running-totals" else summed(batches)
    for batch_id, rows in enumerate(batches[:6]):
        write(tmp_path, batch_id, rows)
    assert results.compact(tmp_path, semantics, 2) is not None  # a snapshot to replace
    for batch_id, rows in enumerate(batches[6:], start=6):
        write(tmp_path, batch_id, rows)

    died = subprocess.run(crash_point.script(CRASHING_COMPACTION, tmp_path, semantics, point, allowed, 9),
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == crash_point.EXIT, died.stderr  # it really died half way
    assert results.read_totals(tmp_path, semantics) == expected
    top = results.TopKeys(tmp_path, semantics, 4)
    assert top.top() == results.ranked(expected, 4)

    done = results.compact(tmp_path, semantics, 9)  # the next compaction finishes the job
    assert done is not None
    assert results.read_totals(tmp_path, semantics) == expected
    assert layout(tmp_path) == [".compact.lock", *(f"batch={i:020d}" for i in (10, 11)),
                                f"snapshot={9:020d}"]
    assert results.list_results(tmp_path).batch_count() == 12


def test_a_compaction_keeps_what_the_folded_batches_recorded(tmp_path: Path) -> None:
    """DStream's record of processed files lives in its batch folders: folding them must carry it."""
    for batch_id in range(4):
        write(tmp_path, batch_id, {"a": 1})
        results.write_manifest(results.batch_dir(tmp_path, batch_id), [f"f{batch_id}.txt"])
    assert results.compact(tmp_path, "batch-counts", 1) is not None
    assert results.read_manifest(results.snapshot_dir(tmp_path, 1)) == ["f0.txt", "f1.txt"]
    assert results.compact(tmp_path, "batch-counts", 2) is not None  # the older snapshot's go along
    assert results.recorded_files(tmp_path) == {f"f{i}.txt" for i in range(4)}
    assert results.read_totals(tmp_path, "batch-counts") == {"a": 4}
    assert not results.batch_dir(tmp_path, 2).exists()
