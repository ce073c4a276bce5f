"""What a checkpoint was created with, and the refusal to run it with what Spark cannot change in place.

An epoch (a checkpoint, from its first start to a reset) counts with one key mode, and Spark keeps
some knobs for the checkpoint's whole life whatever a restart asks for:

* structured: ``spark.sql.shuffle.partitions`` and the state store provider. Spark records them (with
  its other state-relevant SQL confs) in every ``offsets/<batch id>`` and, on restart, puts the
  recorded values back into the session, silently. They are compared with that record, Spark's own
  (:func:`wordstream.engines.spark_probes.structured_checkpoint_conf`): it is exactly what Spark will
  run with, it exists from the first planned batch on (before that a new value simply applies), and
  it covers checkpoints written before wordstream recorded anything of its own.
* DStream: the batch interval and the file remember window. A recovered StreamingContext is its
  checkpoint's serialized graph (``FileInputDStream`` keeps ``minRememberDurationS`` and the number
  of batches to remember as fields), which nothing outside the JVM can read. So the driver keeps its
  own record of them in :data:`EPOCH_FILE` beside the key mode, and compares with it once Spark has a
  checkpoint to recover (``checkpoint-<time>`` files).

A mismatch refuses the start with one line that says to reset the engine (:func:`check`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wordstream import control
from wordstream.durable import write_json_atomically
from wordstream.engines import spark_probes
from wordstream.engines.app_args import AppArgs, seconds_text
from wordstream.settings import STATE_STORE_PROVIDERS

EPOCH_FILE = "wordstream-epoch.json"
SHUFFLE_PARTITIONS_CONF = "spark.sql.shuffle.partitions"
STATE_STORE_CONF = "spark.sql.streaming.stateStore.providerClass"
DSTREAM_CHECKPOINT_PREFIX = "checkpoint-"
DSTREAM_FIXED = ("batch_seconds", "remember_seconds")  # kept in a DStream checkpoint's graph


class CheckpointMismatch(RuntimeError):
    """The run asks for what its checkpoint cannot change; the message says what to do."""


def read_record(checkpoint: Path) -> dict[str, Any]:
    """The epoch's own record (empty when there is none yet)."""
    try:
        record = json.loads((Path(checkpoint) / EPOCH_FILE).read_text())
    except FileNotFoundError:
        return {}
    return record if isinstance(record, dict) else {}


def _flag(name: str, value: Any) -> str:
    return f"--{name.replace('_', '-')} {seconds_text(value) if isinstance(value, float) else value}"


def _dstream_checkpointed(checkpoint: Path) -> bool:
    return any(path.name.startswith(DSTREAM_CHECKPOINT_PREFIX) for path in Path(checkpoint).glob("*"))


def created_with(args: AppArgs) -> dict[str, Any]:
    """The knobs of ``args`` that the existing checkpoint has fixed, with the values it fixed them at.

    Empty for a new checkpoint. Only knobs whose value the checkpoint records are included.
    """
    record = read_record(args.checkpoint)
    fixed: dict[str, Any] = {}
    if "keys" in record:
        fixed["keys"] = record["keys"]
    if args.engine == "structured":
        conf = spark_probes.structured_checkpoint_conf(args.checkpoint)
        if SHUFFLE_PARTITIONS_CONF in conf:
            fixed["shuffle_partitions"] = int(conf[SHUFFLE_PARTITIONS_CONF])
        if STATE_STORE_CONF in conf:
            by_class = {provider: name for name, provider in STATE_STORE_PROVIDERS.items()}
            fixed["state_store"] = by_class.get(conf[STATE_STORE_CONF], conf[STATE_STORE_CONF])
    elif _dstream_checkpointed(args.checkpoint):
        fixed.update({name: record[name] for name in DSTREAM_FIXED if name in record})
    return fixed


def mismatch(args: AppArgs, fixed: Mapping[str, Any]) -> str | None:
    """The refusal's one line, or None when the run asks for what the checkpoint has."""
    asked = {"keys": args.keys, **args.knobs()}
    differ = [name for name, value in asked.items() if name in fixed and fixed[name] != value]
    if not differ:
        return None
    was = " ".join(_flag(name, fixed[name]) for name in differ)
    now = " ".join(_flag(name, asked[name]) for name in differ)
    return (f"checkpoint {args.checkpoint} was created with {was}, which Spark cannot change in place; "
            f"reset the engine to run with {now} (wordstream reset --engine {args.engine}, or "
            f"streaming_maintenance with action=reset): the new epoch counts from zero")


def check(args: AppArgs) -> None:
    """Raise :class:`CheckpointMismatch` if the run asks for what its checkpoint cannot change.

    Reads only: a refused start leaves the checkpoint as it was.
    """
    problem = mismatch(args, created_with(args))
    if problem is not None:
        raise CheckpointMismatch(problem)


def record(args: AppArgs) -> None:
    """Write the epoch's record when it has none, or none Spark has acted on yet (DStream: no
    checkpoint to recover), so it holds what the epoch runs with."""
    existing = read_record(args.checkpoint)
    if existing and (args.engine == "structured" or _dstream_checkpointed(args.checkpoint)):
        return
    knobs = args.knobs()
    fixed_by_spark = ({name: knobs[name] for name in DSTREAM_FIXED}
                      if args.engine == "dstream" else {})  # structured: Spark's offsets record them
    args.checkpoint.mkdir(parents=True, exist_ok=True)
    write_json_atomically(args.checkpoint / EPOCH_FILE, {
        "engine": args.engine, "keys": args.keys, **fixed_by_spark,
        "started_at": existing.get("started_at") or control.utc_now(),
    })


def remember_seconds(checkpoint: Path, default: int) -> int:
    """The DStream file remember window the epoch of ``checkpoint`` runs with (``default`` when it
    recorded none): what may be cleaned up or folded waits for it."""
    value = read_record(checkpoint).get("remember_seconds")
    return value if isinstance(value, int) else default
