"""What every measurement shares: the run context, summaries of repeats, results, memory sampling.

A benchmark that leaves a Spark driver or an Airflow behind spoils every figure taken after it, so
every process started here runs in a process group of its own (:mod:`wordstream_dev.spark_submit`,
:class:`wordstream_dev.stack.Stack`) and is stopped, group and all, when its ``with`` block ends,
whatever happened to the measurement.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from wordstream.settings import Settings
from wordstream_dev.processes import group_members
from wordstream_dev.spark_submit import LOCAL_MASTER

MASTER = LOCAL_MASTER


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Context:
    """Options of one ``python -m bench`` run and where it keeps its scratch files."""

    work: Path
    quick: bool = False
    repeats: int | None = None  # None: each measurement's own default
    soak_minutes: int | None = None  # P8's length; None: its default
    started: float = field(default_factory=time.monotonic)

    def say(self, message: str, tag: str = "bench") -> None:
        """One progress line, with the time since the run began (long runs must show life)."""
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] [{tag}] {message}", flush=True)

    def repeats_for(self, full: int, quick: int = 1) -> int:
        if self.repeats is not None:
            return max(1, self.repeats)
        return quick if self.quick else full

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def fresh_dir(self, name: str) -> Path:
        path = self.work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path


def bench_settings(data_dir: Path, **overrides: str) -> Settings:
    """Settings for a scratch data directory, with the ``WORDSTREAM_*`` knobs of the environment.

    ``WORDSTREAM_SHUFFLE_PARTITIONS=2 make bench`` measures that configuration; the report lists
    every knob that was set.
    """
    return Settings.from_env({**os.environ, **overrides, "WORDSTREAM_DATA_DIR": str(data_dir)})


def knobs() -> dict[str, str]:
    """The ``WORDSTREAM_*`` tuning knobs set in this environment (not locations or ports)."""
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith("WORDSTREAM_") and name not in PLACE_VARIABLES}


PLACE_VARIABLES = frozenset({
    "WORDSTREAM_DATA_DIR", "WORDSTREAM_RUN_DIR", "WORDSTREAM_AIRFLOW_HOME", "WORDSTREAM_AIRFLOW_PORT",
    "WORDSTREAM_BIND", "WORDSTREAM_WORKER_LOG_PORT", "WORDSTREAM_TRIGGER_LOG_PORT",
})


# -- summaries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """Repeated observations of one quantity, summarised by median and spread (min-max, IQR)."""

    name: str
    unit: str
    values: tuple[float, ...]
    higher_is_better: bool = True

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def quartiles(self) -> tuple[float, float]:
        if len(self.values) < 2:
            return (self.median, self.median)
        q = statistics.quantiles(self.values, n=4, method="inclusive")
        return (q[0], q[2])

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile (p in 0..100): a value that was actually observed."""
        ordered = sorted(self.values)
        if not ordered:
            return float("nan")
        rank = max(1, -(-len(ordered) * p // 100))
        return ordered[int(rank) - 1]

    def as_dict(self) -> dict[str, Any]:
        q1, q3 = self.quartiles()
        return {"name": self.name, "unit": self.unit, "n": self.n, "median": self.median,
                "min": self.low, "max": self.high, "q1": q1, "q3": q3, "values": list(self.values),
                "higher_is_better": self.higher_is_better}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Figure:
        better = bool(data.get("higher_is_better", True))
        return cls(data["name"], data["unit"], tuple(data["values"]), better)


@dataclass(frozen=True)
class Check:
    """One target of the brief and whether this run met it."""

    target: str
    met: bool | None  # None: could not be measured
    detail: str = ""


@dataclass
class Result:
    """Everything one measurement (P1…P7) found, ready for the JSON file and the Markdown table."""

    id: str
    measure: str
    figure: Figure | None = None
    baselines: list[Figure] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    extra: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    taken_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "measure": self.measure, "seconds": round(self.seconds, 1),
            "taken_at": self.taken_at,
            "figure": self.figure.as_dict() if self.figure else None,
            "baselines": [b.as_dict() for b in self.baselines],
            "ratios": self.ratios,
            "checks": [{"target": c.target, "met": c.met, "detail": c.detail} for c in self.checks],
            "extra": [e.as_dict() for e in self.extra],
            "details": self.details, "notes": self.notes, "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """Back from the JSON file, so a partial run can be merged with the rows it did not redo."""
        return cls(
            id=data["id"], measure=data["measure"],
            figure=Figure.from_dict(data["figure"]) if data.get("figure") else None,
            baselines=[Figure.from_dict(b) for b in data.get("baselines", [])],
            ratios=dict(data.get("ratios", {})),
            checks=[Check(c["target"], c["met"], c.get("detail", "")) for c in data.get("checks", [])],
            extra=[Figure.from_dict(e) for e in data.get("extra", [])],
            details=dict(data.get("details", {})), notes=list(data.get("notes", [])),
            error=data.get("error"), seconds=float(data.get("seconds", 0.0)),
            taken_at=data.get("taken_at", ""),
        )


def ratio(a: Figure, b: Figure) -> float:
    """Ratio of medians, oriented so that above 1 means ``a`` is better than ``b``."""
    if not a.values or not b.values or a.median == 0 or b.median == 0:
        return float("nan")
    return a.median / b.median if a.higher_is_better else b.median / a.median


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    """Per-repeat ratios of two series taken side by side (repeat i of ``a`` with repeat i of ``b``)."""
    return tuple(x / y for x, y in zip(a, b, strict=False) if y)


# -- processes ---------------------------------------------------------------------------------
class RssSampler:
    """Peak resident memory of a process group, sampled in the background (per process and summed)."""

    def __init__(self, pgid: int, interval: float = 0.2) -> None:
        self.pgid = pgid
        self.interval = interval
        self.peak_total = 0
        self.peak_by_name: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for proc in group_members(self.pgid):
                try:
                    rss = proc.memory_info().rss
                    name = role(proc)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), rss)
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(self.interval)


def role(proc: psutil.Process) -> str:
    """``java`` (the JVM: driver and, in local mode, executors), ``python driver`` or ``python worker``."""
    command = proc.cmdline()
    if command and os.path.basename(command[0]) == "java":
        return "java"
    return "python driver" if any("spark_apps" in part for part in command[1:2]) else "python worker"
