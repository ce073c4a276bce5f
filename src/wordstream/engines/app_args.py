"""The Spark applications' command line: one contract, built, parsed and mapped from Params here.

``spark-submit spark_apps/<engine>_wordcount.py --watch DIR --checkpoint DIR --output DIR
--state-dir DIR [--keys words|lines] [--batch-seconds N] [--timeout SECONDS]`` plus each engine's
own knobs: structured ``[--available-now] [--max-files-per-trigger N | --max-bytes-per-trigger N]
[--state-store rocksdb|hdfs] [--shuffle-partitions N]``, DStream ``[--remember-seconds N]``.

* :meth:`AppArgs.for_engine` — the arguments of an engine under a :class:`~wordstream.settings.Settings`
  (the DAGs, the tests and the benchmarks start the apps with them);
* :meth:`AppArgs.from_params` — the same from a streaming DAG run's Params;
* :meth:`AppArgs.to_argv` — the command line;
* :func:`parse` — the apps' side: parse and validate, one line on stderr and exit 2 when wrong.

A knob left out takes its ``WORDSTREAM_*`` default (:mod:`wordstream.settings`); a flag (or a Param)
overrides it for that run. The bounds below are the flags' and the Params' alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from wordstream.engines.keys import check_key_mode
from wordstream.settings import (
    KEY_MODES,
    STATE_STORE_PROVIDERS,
    Engine,
    KeyMode,
    Settings,
    StateStore,
    check_engine,
    check_state_store,
    knob_conf,
)

# The trigger interval. Structured Streaming fires a trigger at each multiple of it, or at once after
# a trigger that overran it, so a short interval costs only idle file listings; a DStream generates a
# batch every interval whether the last one has finished or not (the backlog queues), so it keeps
# whole seconds.
MIN_BATCH_SECONDS: dict[Engine, float] = {"structured": 0.25, "dstream": 1}
MAX_BATCH_SECONDS = 3600
# (minimum, maximum) of each scale knob.
SHUFFLE_PARTITIONS_RANGE = (1, 1000)  # structured: one state store per partition
MAX_FILES_PER_TRIGGER_RANGE = (1, 1_000_000)  # structured
MAX_BYTES_PER_TRIGGER_RANGE = (1, 1 << 40)  # structured
REMEMBER_SECONDS_RANGE = (1, 3600)  # DStream

# Flags of one engine only: (flag, the engine).
ENGINE_FLAGS: dict[str, Engine] = {
    "--available-now": "structured", "--max-files-per-trigger": "structured",
    "--max-bytes-per-trigger": "structured", "--state-store": "structured",
    "--shuffle-partitions": "structured", "--remember-seconds": "dstream",
}


def seconds_text(seconds: float) -> str:
    """``2`` for 2.0, ``0.5`` for 0.5: as the flag is written."""
    return f"{seconds:g}"


def plain_number(value: float) -> int | float:
    """2.0 as 2 (status, records), 0.5 as it is."""
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class AppArgs:
    """One engine's command line, validated."""

    engine: Engine
    watch: Path
    checkpoint: Path
    output: Path
    state_dir: Path
    batch_seconds: float
    keys: KeyMode = "words"
    timeout: float | None = None  # absent: run until stopped
    available_now: bool = False  # structured only: process what is there, commit, exit 0
    # Structured only: a file source limit per trigger (at most one of the two), the state store, the
    # partitions of the aggregation's shuffle and state.
    max_files_per_trigger: int | None = None
    max_bytes_per_trigger: int | None = None
    state_store: StateStore = Settings.state_store
    shuffle_partitions: int = Settings.shuffle_partitions
    remember_seconds: int = Settings.dstream_remember_seconds  # DStream only: the file remember window

    @classmethod
    def for_engine(cls, settings: Settings, engine: Engine, keys: KeyMode = "words",
                   batch_seconds: float | None = None, timeout: float | None = None,
                   available_now: bool = False, max_files_per_trigger: int | None = None,
                   max_bytes_per_trigger: int | None = None, state_store: StateStore | None = None,
                   shuffle_partitions: int | None = None, remember_seconds: int | None = None) -> AppArgs:
        """The folders of ``engine`` under ``settings``, with the run's knobs (None: the setting's)."""
        return cls(
            engine=engine, watch=settings.watch(engine), checkpoint=settings.checkpoint(engine),
            output=settings.output(engine), state_dir=settings.state, keys=keys,
            batch_seconds=batch_seconds or settings.batch_seconds_for(engine), timeout=timeout or None,
            available_now=available_now, max_files_per_trigger=max_files_per_trigger,
            max_bytes_per_trigger=max_bytes_per_trigger,
            state_store=state_store or settings.state_store,
            shuffle_partitions=shuffle_partitions or settings.shuffle_partitions,
            remember_seconds=remember_seconds or settings.dstream_remember_seconds,
        )

    @classmethod
    def from_params(cls, settings: Settings, engine: Engine, params: Mapping[str, Any]) -> AppArgs:
        """A streaming DAG run's Params (``timeout_seconds`` 0 = run until stopped; a knob absent,
        None or 0: its setting). Each engine's DAG has only its own knobs' Params."""
        def number(name: str) -> int | None:
            return int(params.get(name) or 0) or None

        return cls.for_engine(
            settings, engine,
            keys=check_key_mode(str(params.get("keys", "words"))),
            batch_seconds=float(params.get("batch_seconds") or 0) or None,
            timeout=number("timeout_seconds"),
            max_files_per_trigger=number("max_files_per_trigger"),
            max_bytes_per_trigger=number("max_bytes_per_trigger"),
            state_store=check_state_store(str(params["state_store"])) if params.get("state_store") else None,
            shuffle_partitions=number("shuffle_partitions"),
            remember_seconds=number("remember_seconds"),
        )

    def knobs(self) -> dict[str, Any]:
        """The run's knobs of this engine, by flag name without dashes (the status shows them)."""
        interval = plain_number(self.batch_seconds)
        if self.engine == "dstream":
            return {"batch_seconds": interval, "remember_seconds": self.remember_seconds}
        return {"batch_seconds": interval, "max_files_per_trigger": self.max_files_per_trigger,
                "max_bytes_per_trigger": self.max_bytes_per_trigger, "state_store": self.state_store,
                "shuffle_partitions": self.shuffle_partitions}

    def spark_conf(self) -> dict[str, str]:
        """The Spark settings of the run's knobs: they win over spark-submit's ``--conf``."""
        return knob_conf(self.shuffle_partitions, self.state_store, self.remember_seconds)

    def to_argv(self) -> list[str]:
        argv = [
            "--watch", str(self.watch),
            "--checkpoint", str(self.checkpoint),
            "--output", str(self.output),
            "--state-dir", str(self.state_dir),
            "--keys", self.keys,
            "--batch-seconds", seconds_text(self.batch_seconds),
        ]
        if self.timeout:
            argv += ["--timeout", f"{self.timeout:g}"]
        # What a run asked for goes on the line even for the other engine, for the app to refuse.
        if self.available_now:
            argv.append("--available-now")
        if self.max_files_per_trigger is not None:
            argv += ["--max-files-per-trigger", str(self.max_files_per_trigger)]
        if self.max_bytes_per_trigger is not None:
            argv += ["--max-bytes-per-trigger", str(self.max_bytes_per_trigger)]
        if self.engine == "dstream":
            return [*argv, "--remember-seconds", str(self.remember_seconds)]
        return [*argv, "--state-store", self.state_store,
                "--shuffle-partitions", str(self.shuffle_partitions)]


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block (see --help)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _out_of(flag: str, value: int | None, bounds: tuple[int, int]) -> str | None:
    low, high = bounds
    if value is None or low <= value <= high:
        return None
    return f"{flag} must be between {low:,} and {high:,}, got {value}"


def _batch_seconds_problem(engine: Engine, seconds: float) -> str | None:
    low = MIN_BATCH_SECONDS[engine]
    if engine == "dstream" and not (float(seconds).is_integer() and low <= seconds <= MAX_BATCH_SECONDS):
        return f"--batch-seconds must be a whole number of seconds from 1 to {MAX_BATCH_SECONDS} " \
               f"for the dstream engine, got {seconds_text(seconds)}"
    if not low <= seconds <= MAX_BATCH_SECONDS:
        return f"--batch-seconds must be from {seconds_text(low)} to {MAX_BATCH_SECONDS}, " \
               f"got {seconds_text(seconds)}"
    return None


def knob_problems(args: AppArgs) -> list[str]:
    """What is wrong with the knobs of ``args``, one phrase each (the app exits 2 with them joined;
    the stream DAG's task fails without retrying)."""
    problems = [problem for problem in (
        _batch_seconds_problem(args.engine, args.batch_seconds),
        _out_of("--max-files-per-trigger", args.max_files_per_trigger, MAX_FILES_PER_TRIGGER_RANGE),
        _out_of("--max-bytes-per-trigger", args.max_bytes_per_trigger, MAX_BYTES_PER_TRIGGER_RANGE),
        _out_of("--shuffle-partitions", args.shuffle_partitions, SHUFFLE_PARTITIONS_RANGE),
        _out_of("--remember-seconds", args.remember_seconds, REMEMBER_SECONDS_RANGE),
    ) if problem]
    if args.max_files_per_trigger is not None and args.max_bytes_per_trigger is not None:
        problems.append("--max-files-per-trigger and --max-bytes-per-trigger exclude each other "
                        "(Spark's file source takes one limit): give one")
    return problems


def parse(engine: str, argv: Sequence[str] | None = None) -> AppArgs:
    """Parse and validate; on a bad argument print one line to stderr and exit 2."""
    name = check_engine(engine)
    defaults = Settings.from_env()
    parser = _OneLineParser(prog=f"{engine}_wordcount.py")
    parser.add_argument("--watch", type=Path, required=True, help="directory the stream reads")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="Parquet results of this engine")
    parser.add_argument("--state-dir", type=Path, required=True, help="lock, stop marker, status, ledger")
    parser.add_argument("--keys", choices=KEY_MODES, default="words")
    parser.add_argument("--batch-seconds", type=float, default=defaults.batch_seconds_for(name),
                        help=f"trigger interval (structured: from {MIN_BATCH_SECONDS['structured']:g} s; "
                             "dstream: whole seconds)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop gracefully after this many seconds (absent: run until stopped)")
    parser.add_argument("--available-now", action="store_true",
                        help="process everything present, commit, exit 0 (structured only)")
    parser.add_argument("--max-files-per-trigger", type=int, default=None,
                        help="at most this many new files per batch (structured only)")
    parser.add_argument("--max-bytes-per-trigger", type=int, default=None,
                        help="at most about this many bytes of new files per batch (structured only)")
    parser.add_argument("--state-store", choices=tuple(STATE_STORE_PROVIDERS), default=None,
                        help=f"structured only (WORDSTREAM_STATE_STORE, {defaults.state_store})")
    parser.add_argument("--shuffle-partitions", type=int, default=None,
                        help="structured only "
                             f"(WORDSTREAM_SHUFFLE_PARTITIONS, {defaults.shuffle_partitions})")
    parser.add_argument("--remember-seconds", type=int, default=None,
                        help="the file remember window, dstream only "
                             f"(WORDSTREAM_DSTREAM_REMEMBER_SECONDS, {defaults.dstream_remember_seconds})")
    ns = parser.parse_args(argv)
    given = {flag for flag in ENGINE_FLAGS if getattr(ns, flag[2:].replace("-", "_")) not in (None, False)}
    problems = [f"{flag} is supported by the {ENGINE_FLAGS[flag]} engine only"
                for flag in sorted(given) if ENGINE_FLAGS[flag] != name]
    args = AppArgs(
        engine=name, watch=ns.watch.resolve(), checkpoint=ns.checkpoint.resolve(),
        output=ns.output.resolve(), state_dir=ns.state_dir.resolve(), keys=check_key_mode(ns.keys),
        batch_seconds=ns.batch_seconds, timeout=ns.timeout, available_now=ns.available_now,
        max_files_per_trigger=ns.max_files_per_trigger, max_bytes_per_trigger=ns.max_bytes_per_trigger,
        state_store=check_state_store(ns.state_store or defaults.state_store),
        shuffle_partitions=(defaults.shuffle_partitions if ns.shuffle_partitions is None
                            else ns.shuffle_partitions),
        remember_seconds=(defaults.dstream_remember_seconds if ns.remember_seconds is None
                          else ns.remember_seconds),
    )
    problems += knob_problems(args)
    if ns.timeout is not None and ns.timeout <= 0:
        problems.append(f"--timeout must be positive, got {ns.timeout}")
    if not ns.watch.is_dir():
        problems.append(f"--watch {ns.watch} is not a directory")
    if problems:
        parser.error("; ".join(problems))
    return args
