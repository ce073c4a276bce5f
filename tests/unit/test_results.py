"""The results contract read back: top keys kept batch by batch equal a full re-read, exactly."""

from __future__ import annotations

import random
from pathlib import Path

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
