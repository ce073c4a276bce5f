"""What a checkpoint fixed, read from Spark's record (structured) or the epoch's own (DStream), and
the one-line refusal of a run that asks for something else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import write_structured_record

from wordstream.engines import epoch
from wordstream.engines.app_args import AppArgs
from wordstream.settings import STATE_STORE_PROVIDERS, Settings


def with_conf(checkpoint: Path, conf: dict[str, str]) -> None:
    """Batches 0 and 1 planned, the newest offsets carrying ``conf`` as Spark writes it."""
    write_structured_record(checkpoint, [[], []], committed=0)
    newest = checkpoint / "offsets" / "1"
    version, metadata, source = newest.read_text().split("\n")
    newest.write_text("\n".join([version, json.dumps({**json.loads(metadata), "conf": conf}), source]))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_structured_compares_with_the_confs_spark_recorded(settings: Settings) -> None:
    args = AppArgs.for_engine(settings, "structured", state_store="hdfs", shuffle_partitions=8)
    assert epoch.created_with(args) == {}  # nothing planned yet: any value applies
    epoch.check(args)
    rocksdb = STATE_STORE_PROVIDERS["rocksdb"]
    with_conf(args.checkpoint, {"spark.sql.shuffle.partitions": "4",
                                "spark.sql.streaming.stateStore.providerClass": rocksdb,
                                "spark.sql.streaming.multipleWatermarkPolicy": "min"})
    assert epoch.created_with(args) == {"shuffle_partitions": 4, "state_store": "rocksdb"}
    before = snapshot(args.checkpoint)
    with pytest.raises(epoch.CheckpointMismatch) as refused:
        epoch.check(args)
    assert str(refused.value) == (
        f"checkpoint {args.checkpoint} was created with --state-store rocksdb --shuffle-partitions 4, "
        "which Spark cannot change in place; reset the engine to run with --state-store hdfs "
        "--shuffle-partitions 8 (wordstream reset --engine structured, or streaming_maintenance with "
        "action=reset): the new epoch counts from zero")
    assert snapshot(args.checkpoint) == before
    same = AppArgs.for_engine(settings, "structured", state_store="rocksdb", shuffle_partitions=4,
                              batch_seconds=0.5, max_files_per_trigger=3)  # these change in place
    epoch.check(same)


def test_the_key_mode_is_the_epochs_own_record(settings: Settings) -> None:
    words = AppArgs.for_engine(settings, "structured")
    epoch.record(words)
    lines = AppArgs.for_engine(settings, "structured", keys="lines")
    with pytest.raises(epoch.CheckpointMismatch, match=r"was created with --keys words, .* --keys lines "):
        epoch.check(lines)


def test_dstream_keeps_its_own_record_and_compares_once_spark_has_a_checkpoint(settings: Settings) -> None:
    first = AppArgs.for_engine(settings, "dstream", remember_seconds=60)
    epoch.record(first)
    assert epoch.read_record(first.checkpoint)["remember_seconds"] == 60
    other = AppArgs.for_engine(settings, "dstream", remember_seconds=120, batch_seconds=2)
    epoch.check(other)  # no checkpoint-<time> yet: Spark would build a new context, with these
    epoch.record(other)
    assert epoch.read_record(first.checkpoint)["remember_seconds"] == 120
    (first.checkpoint / "checkpoint-1764600000000").write_bytes(b"a serialized graph")
    with pytest.raises(epoch.CheckpointMismatch, match=r"was created with --remember-seconds 120, "):
        epoch.check(AppArgs.for_engine(settings, "dstream", remember_seconds=60, batch_seconds=2))
    with pytest.raises(epoch.CheckpointMismatch, match=r"was created with --batch-seconds 2, "):
        epoch.check(AppArgs.for_engine(settings, "dstream", remember_seconds=120, batch_seconds=1))
    epoch.record(first)  # Spark acted on the record: it stays
    assert epoch.read_record(first.checkpoint)["remember_seconds"] == 120
    assert epoch.remember_seconds(first.checkpoint, 60) == 120


def test_cleanup_waits_for_the_longest_remember_window(settings: Settings) -> None:
    from wordstream.maintenance.retention import dstream_remember_seconds

    assert dstream_remember_seconds(settings) == settings.dstream_remember_seconds
    epoch.record(AppArgs.for_engine(settings, "dstream", remember_seconds=900))
    assert dstream_remember_seconds(settings) == 900
