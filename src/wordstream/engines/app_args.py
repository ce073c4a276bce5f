"""The Spark applications' command line: one contract, built, parsed and mapped from Params here.

``spark-submit spark_apps/<engine>_wordcount.py --watch DIR --checkpoint DIR --output DIR
--state-dir DIR [--keys words|lines] [--batch-seconds N] [--timeout SECONDS] [--available-now]``

* :meth:`AppArgs.for_engine` — the arguments of an engine under a :class:`~wordstream.settings.Settings`
  (the DAGs, the tests and the benchmarks start the apps with them);
* :meth:`AppArgs.from_params` — the same from a streaming DAG run's Params;
* :meth:`AppArgs.to_argv` — the command line;
* :func:`parse` — the apps' side: parse and validate, one line on stderr and exit 2 when wrong.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from wordstream.engines.keys import check_key_mode
from wordstream.settings import KEY_MODES, Engine, KeyMode, Settings, check_engine


@dataclass(frozen=True)
class AppArgs:
    """One engine's command line, validated."""

    watch: Path
    checkpoint: Path
    output: Path
    state_dir: Path
    batch_seconds: int
    keys: KeyMode = "words"
    timeout: float | None = None  # absent: run until stopped
    available_now: bool = False  # structured only: process what is there, commit, exit 0

    @classmethod
    def for_engine(cls, settings: Settings, engine: Engine, keys: KeyMode = "words",
                   batch_seconds: int | None = None, timeout: float | None = None,
                   available_now: bool = False) -> AppArgs:
        """The folders of ``engine`` under ``settings``, with the run's knobs."""
        return cls(
            watch=settings.watch(engine), checkpoint=settings.checkpoint(engine),
            output=settings.output(engine), state_dir=settings.state, keys=keys,
            batch_seconds=batch_seconds or settings.batch_seconds_for(engine), timeout=timeout or None,
            available_now=available_now,
        )

    @classmethod
    def from_params(cls, settings: Settings, engine: Engine, params: Mapping[str, Any]) -> AppArgs:
        """A streaming DAG run's Params (``timeout_seconds`` 0 = run until stopped)."""
        return cls.for_engine(
            settings, engine,
            keys=check_key_mode(str(params.get("keys", "words"))),
            batch_seconds=int(params.get("batch_seconds") or 0) or None,
            timeout=int(params.get("timeout_seconds") or 0) or None,
        )

    def to_argv(self) -> list[str]:
        argv = [
            "--watch", str(self.watch),
            "--checkpoint", str(self.checkpoint),
            "--output", str(self.output),
            "--state-dir", str(self.state_dir),
            "--keys", self.keys,
            "--batch-seconds", str(self.batch_seconds),
        ]
        if self.timeout:
            argv += ["--timeout", f"{self.timeout:g}"]
        if self.available_now:
            argv.append("--available-now")
        return argv


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block (see --help)
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse(engine: str, argv: Sequence[str] | None = None) -> AppArgs:
    """Parse and validate; on a bad argument print one line to stderr and exit 2."""
    defaults = Settings.from_env()
    parser = _OneLineParser(prog=f"{engine}_wordcount.py")
    parser.add_argument("--watch", type=Path, required=True, help="directory the stream reads")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="Parquet results of this engine")
    parser.add_argument("--state-dir", type=Path, required=True, help="lock, stop marker, status, ledger")
    parser.add_argument("--keys", choices=KEY_MODES, default="words")
    parser.add_argument("--batch-seconds", type=int, default=defaults.batch_seconds_for(check_engine(engine)))
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop gracefully after this many seconds (absent: run until stopped)")
    parser.add_argument("--available-now", action="store_true",
                        help="process everything present, commit, exit 0 (structured only)")
    ns = parser.parse_args(argv)
    problems = []
    if ns.batch_seconds < 1:
        problems.append(f"--batch-seconds must be at least 1, got {ns.batch_seconds}")
    if ns.timeout is not None and ns.timeout <= 0:
        problems.append(f"--timeout must be positive, got {ns.timeout}")
    if ns.available_now and engine != "structured":
        problems.append("--available-now is supported by the structured engine only")
    if not ns.watch.is_dir():
        problems.append(f"--watch {ns.watch} is not a directory")
    if problems:
        parser.error("; ".join(problems))
    return AppArgs(
        watch=ns.watch.resolve(), checkpoint=ns.checkpoint.resolve(), output=ns.output.resolve(),
        state_dir=ns.state_dir.resolve(), keys=check_key_mode(ns.keys), batch_seconds=ns.batch_seconds,
        timeout=ns.timeout, available_now=ns.available_now,
    )
