"""P3 and P7, through the real Airflow stack: a file's way to the totals, and a stream's start-up.

One :class:`wordstream_dev.stack.Stack` (``airflow standalone`` in scratch folders, on free ports) serves
both, since starting Airflow (a fresh metadata database included) takes about 15 s of both cores. Only
the DAGs measured are unpaused.

**P7 — trigger → first batch committed.** A small file is renamed into the engine's watch folder,
then ``stream_structured`` is triggered through the REST API; the time runs until Spark writes the
commit file of the first batch of that run (``checkpoint/commits/<id>``). Each repeat stops the
stream gracefully and waits for Airflow to record the run as finished before triggering again. The
time is split into phases: the task's start (Airflow's share), then the timestamps the driver keeps
in its status (``startup``: spark-submit started, the Python driver started, imports done, Spark
session ready, query started), then the commit; and the first batch's own durations as Spark
reports them (file listing, planning, the batch's job with the state store's first load).

**P3 — landing → totals.** With the stream running, files arrive one at a time, a random 1-3 s
apart, each with a word of its own. A poller reads every new results folder as it appears (what
``wordstream totals`` reads) and notes when each file's word shows up. Files alternate between the
real path (atomic rename into ``landing/``, staged by the ``stage_incoming_files`` DAG) and the
baseline, the raw file source (atomic rename straight into the engine's watch folder), so both
share the same stream, batches and load. Each Airflow file's time is split at its publication
(the mtime staging stamps on the watch copy). The staging DAG's runs during the probes and the
size of their task logs (on disk) are noted too: a run stages in waves for
``WORDSTREAM_STAGING_RUN_SECONDS``, so most files land while a run is already in its loop.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.common import PLACE_VARIABLES, Check, Context, Figure, Result
from wordstream import class_archive, control, results
from wordstream.control import wait_for
from wordstream.durable import write_text_atomically
from wordstream.settings import Engine, Settings
from wordstream_dev import task_log
from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.processes import free_ports
from wordstream_dev.stack import Stack

ENGINE: Engine = "structured"
DAG_ID = "stream_structured"
STAGING_DAG = "stage_incoming_files"
# The stream DAG's Params for P3 and P7: a 0.5 s trigger (the structured engine takes 0.25 s and up;
# its default is 2 s), the interval a user picks who wants files counted within two seconds.
STREAM_CONF = {"keys": "words", "batch_seconds": 0.5, "timeout_seconds": 0}
LATENCY_FILES = 30
QUICK_LATENCY_FILES = 6
P7_REPEATS = 3
SEED = 77


@dataclass
class Probe:
    """One file sent through one path, and what became of it."""

    word: str
    path: str  # "airflow" or "raw"
    sent: float = 0.0
    published: float | None = None
    visible: float | None = None


@dataclass
class Poller:
    """Notes when each awaited word first appears in a new results folder of the engine."""

    output: Path
    awaited: dict[str, Probe] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import pyarrow.parquet as pq

        while not self.stop.is_set():
            for folder in results.batch_dirs(self.output):
                if folder.name in self.seen:
                    continue
                now = time.time()
                self.seen.add(folder.name)
                try:
                    keys = set(pq.read_table(folder, columns=["key"]).column("key").to_pylist())
                except (OSError, ValueError):
                    self.seen.discard(folder.name)  # replaced under us by a replay: read it again
                    continue
                with self.lock:
                    for word in keys & self.awaited.keys():
                        probe = self.awaited.pop(word)
                        probe.visible = now
            self.stop.wait(0.05)

    def expect(self, probe: Probe) -> None:
        with self.lock:
            self.awaited[probe.word] = probe


def write_atomically(folder: Path, name: str, text: str) -> float:
    """A producer's drop: hidden temp name in the same folder, fsync, rename. Returns the rename time."""
    write_text_atomically(folder / name, text)
    return time.time()


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def last_commit(settings: Settings) -> int:
    commits = settings.checkpoint(ENGINE) / "commits"
    if not commits.is_dir():
        return -1
    ids = [int(p.name) for p in commits.iterdir() if p.name.isdigit()]
    return max(ids, default=-1)


# (label, the status ``startup`` key that ends the phase); the first phase ends at the task's start.
PHASES = (
    ("Airflow: trigger -> task started", None),
    ("task started -> spark-submit started", "spark_submit"),
    ("spark-submit, launcher and driver JVM -> Python driver started", "python"),
    ("Python driver start: imports, lock, status", "driver"),
    ("Spark session", "session"),
    ("query started", "query"),
    ("first batch, until its commit file", "commit"),
)
# Spark's durationMs of the first batch worth showing: file listing, planning, the batch itself.
FIRST_BATCH_DURATIONS = ("latestOffset", "queryPlanning", "addBatch", "walCommit", "commitOffsets")


@dataclass
class Startup:
    total: float
    run_id: str
    phases: dict[str, float] = field(default_factory=dict)  # label -> seconds
    first_batch_ms: dict[str, int] = field(default_factory=dict)


def startup_phases(started: float, task_start: float | None, startup: dict[str, Any],
                   committed: float) -> dict[str, float]:
    """Seconds of each phase of :data:`PHASES` that has both ends (a missing mark merges two)."""
    marks = {**startup, "commit": committed}
    phases: dict[str, float] = {}
    previous = started
    for label, key in PHASES:
        end = task_start if key is None else marks.get(key)
        if end is not None:
            phases[label] = end - previous
            previous = end
    return phases


def trigger_until_first_commit(ctx: Context, api: AirflowClient, settings: Settings, number: int) -> Startup:
    """P7 once: data waiting, trigger, wait for the commit file of the run's first batch."""
    before = last_commit(settings)
    write_atomically(settings.watch(ENGINE), f"startup-{number}-{uuid.uuid4().hex[:8]}.txt",
                     f"startup{number} words to count\n")
    started = time.time()
    run_id = api.trigger_dag_run(DAG_ID, conf=STREAM_CONF, note="bench P7")["dag_run_id"]
    commits = settings.checkpoint(ENGINE) / "commits"

    def committed() -> float | None:
        newer = last_commit(settings)
        return (commits / str(newer)).stat().st_mtime if newer > before else None

    done = wait_for(committed, 300, "the first batch of the new run to commit", interval=0.05)

    def reported() -> dict[str, Any] | None:
        startup = control.read_status(settings.state, ENGINE).get("startup") or {}
        fresh = startup.get("spark_submit", 0) >= started
        return startup if fresh and "first_batch" in startup else None

    startup = wait_for(reported, 30, "the driver to report its first batch", interval=0.05)
    task = api.task_instance(DAG_ID, run_id, "run_stream")
    task_start = epoch(task.get("start_date"))
    return Startup(total=done - started, run_id=run_id,
                   phases=startup_phases(started, task_start, startup, done),
                   first_batch_ms={k: v for k, v in (startup.get("first_batch_ms") or {}).items()
                                   if k in FIRST_BATCH_DURATIONS})


def breakdown(startup: Startup) -> str:
    """``task started 0.8 s, spark-submit started 1.1 s, ...``: each phase named by how it ends."""
    return ", ".join(f"{label.split(' -> ')[-1]} {s:.1f} s" for label, s in startup.phases.items())


def stop_stream(api: AirflowClient, settings: Settings, run_id: str) -> None:
    if not control.stop_engine(settings.state, ENGINE, 120):
        raise RuntimeError("the stream did not stop within 120 s")
    api.wait_for_dag_run(DAG_ID, run_id, states=("success",), timeout=180)


def send_probes(ctx: Context, settings: Settings, files: int) -> list[Probe]:
    """P3: alternate Airflow-path and raw files, 1-3 s apart, and wait until every word is visible."""
    poller = Poller(settings.output(ENGINE))
    thread = threading.Thread(target=poller.run, name="totals-poller", daemon=True)
    thread.start()
    rng = random.Random(SEED)
    probes: list[Probe] = []
    try:
        for index in range(files):
            for path in ("airflow", "raw"):
                probe = Probe(word=f"latency{path}{index:03d}x{uuid.uuid4().hex[:6]}", path=path)
                poller.expect(probe)
                folder = settings.landing if path == "airflow" else settings.watch(ENGINE)
                name = f"{probe.word}.txt"
                probe.sent = write_atomically(folder, name, f"{probe.word} and some words\n")
                probes.append(probe)
                time.sleep(rng.uniform(1.0, 3.0))
            if (index + 1) % 5 == 0 or index + 1 == files:
                done = [p for p in probes if p.visible is not None]
                ctx.say(f"{index + 1}/{files} pairs sent, {len(done)}/{len(probes)} visible", "P3")
        wait_for(lambda: all(p.visible is not None for p in probes), 180, "every latency word in totals",
                 interval=0.2)
    finally:
        poller.stop.set()
        thread.join(timeout=5)
    published = {entry.name: entry.stat().st_mtime for entry in os.scandir(settings.watch(ENGINE))}
    for probe in probes:
        if probe.path == "airflow":
            match = [mtime for name, mtime in published.items() if name.endswith(f"-{probe.word}.txt")]
            probe.published = match[0] if match else None
    return probes


def stack_for(ctx: Context, name: str, extra_env: dict[str, str]) -> Stack:
    root = ctx.fresh_dir(name)
    api_port, worker_port, trigger_port = free_ports(3)
    # Locations and ports are the stack's own; tuning knobs (WORDSTREAM_STABLE_SECONDS ...) pass through.
    base_env = {name: value for name, value in os.environ.items()
                if not name.startswith("AIRFLOW") and name not in PLACE_VARIABLES}
    return Stack(airflow_home=root / "airflow_home", data_dir=root / "data", run_dir=root / "run",
                 port=api_port, worker_log_port=worker_port, trigger_log_port=trigger_port,
                 env={**base_env, **extra_env}, progress=lambda line: ctx.say(line, "stack"),
                 stream_stop_timeout=60.0, grace_seconds=15.0)


@dataclass
class StagingFootprint:
    """What the staging DAG left while the probes ran: its runs and the size of their task logs."""

    seconds: float = 0.0  # how long the probes ran
    runs: int = 0  # staging DAG runs started meanwhile
    log_bytes: dict[str, list[int]] = field(default_factory=dict)  # task id -> one log per run (bytes)
    log_lines: dict[str, list[int]] = field(default_factory=dict)
    # From the end of one run's stage_files to the start of the next run's sensor: no staging task
    # watches landing then (the files that land meanwhile wait for the next sensor).
    gaps: list[float] = field(default_factory=list)


def staging_footprint(stack: Stack, api: AirflowClient, run_ids_before: set[str],
                      seconds: float) -> StagingFootprint:
    """The staging runs started while the probes ran, and their task logs on disk (one per task and try)."""
    every_run = (run["dag_run_id"] for run in api.list_dag_runs(STAGING_DAG))
    runs = [run_id for run_id in every_run if run_id not in run_ids_before]
    found = StagingFootprint(seconds=seconds, runs=len(runs))
    logs = stack.instance.airflow_home / "logs" / f"dag_id={STAGING_DAG}"
    times: list[tuple[float | None, float | None]] = []  # (sensor start, stage_files end) per run
    for run_id in sorted(runs):
        tasks = {ti["task_id"]: ti for ti in api.task_instances(STAGING_DAG, run_id)}
        times.append((epoch(tasks.get("wait_for_landing_files", {}).get("start_date")),
                      epoch(tasks.get("stage_files", {}).get("end_date"))))
    found.gaps = [start - end for (_s, end), (start, _e) in pairwise(times)
                  if start is not None and end is not None]
    for run_id in runs:
        for log in sorted(logs.glob(f"run_id={run_id}/task_id=*/attempt=*.log")):
            task_id = log.parent.name.removeprefix("task_id=")
            data = log.read_bytes()
            found.log_bytes.setdefault(task_id, []).append(len(data))
            found.log_lines.setdefault(task_id, []).append(data.count(b"\n"))
    return found


@dataclass
class Series:
    """What one stack measured."""

    label: str
    startups: list[Startup] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    stack_start_seconds: float = 0.0
    staging: StagingFootprint | None = None
    task_log: TaskLogSize | None = None


@dataclass(frozen=True)
class TaskLogSize:
    """The stream task's log over the latency probes' batches, as Airflow wrote it."""

    other_bytes_per_batch: float
    console_bytes_per_batch: float
    batches: int


def task_log_size(stack: Stack, run_id: str) -> TaskLogSize | None:
    """Bytes per batch of the first attempt's task log in the steady state (None: too few batches)."""
    folder = stack.instance.airflow_home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    logs = sorted(folder.glob("task_id=run_stream/attempt=1.log"))
    if not logs:
        return None
    other, split, batches = task_log.per_batch(task_log.json_records(logs[0]))
    if not batches:
        return None
    return TaskLogSize(other, split.console_bytes / batches, batches)


def run_series(ctx: Context, label: str, extra_env: dict[str, str], p7_repeats: int,
               probe_files: int) -> Series:
    """One stack: a first trigger (P7), the latency probes (P3) on that stream, more triggers (P7)."""
    series = Series(label)
    stack = stack_for(ctx, f"stack-{len(extra_env)}", extra_env)
    try:
        began = time.monotonic()
        stack.start()
        series.stack_start_seconds = time.monotonic() - began
        api = stack.client()
        missing = stack.bootstrap(api, dag_ids=[DAG_ID, STAGING_DAG], start_stream=None, copy_samples=False)
        if missing:
            raise RuntimeError(f"DAGs not registered: {missing}")
        settings = stack.settings
        settings.ensure_dirs()
        first = trigger_until_first_commit(ctx, api, settings, 1)
        series.startups.append(first)
        ctx.say(f"{label}: trigger -> first batch committed: {first.total:.1f} s ({breakdown(first)})", "P7")
        if probe_files:
            ctx.say(f"{label}: {probe_files} files through Airflow and {probe_files} straight into "
                    "watch, alternating", "P3")
            time.sleep(5)  # let the staging DAG settle into its sensor loop
            before = {run["dag_run_id"] for run in api.list_dag_runs(STAGING_DAG)}
            began = time.monotonic()
            series.probes = send_probes(ctx, settings, probe_files)
            series.staging = staging_footprint(stack, api, before, time.monotonic() - began)
        stop_stream(api, settings, first.run_id)
        series.task_log = task_log_size(stack, first.run_id)
        for number in range(2, p7_repeats + 1):
            startup = trigger_until_first_commit(ctx, api, settings, number)
            series.startups.append(startup)
            ctx.say(f"{label}: trigger -> first batch committed: {startup.total:.1f} s "
                    f"({breakdown(startup)})", "P7")
            stop_stream(api, settings, startup.run_id)
    finally:
        stack.stop()  # the data directory stays, with the logs, for a look afterwards (--keep)
    return series


def measure(ctx: Context, which: set[str]) -> list[Result]:
    """The project's configuration first; then, for P3, the same with ``WORDSTREAM_STABLE_SECONDS=0``.

    The variant shows how much of the latency is the landing stability wait (a file must be a
    second old): producers that rename finished files into landing can do without it.
    """
    files = ctx.size(LATENCY_FILES, QUICK_LATENCY_FILES) if "P3" in which else 0
    p7_repeats = ctx.repeats_for(P7_REPEATS, 1) if "P7" in which else 1
    configured = f"WORDSTREAM_STABLE_SECONDS={os.environ.get('WORDSTREAM_STABLE_SECONDS', '1')}"
    runs = [run_series(ctx, configured, {}, p7_repeats, files)]
    if files and os.environ.get("WORDSTREAM_STABLE_SECONDS", "1") != "0":
        runs.append(run_series(ctx, "WORDSTREAM_STABLE_SECONDS=0", {"WORDSTREAM_STABLE_SECONDS": "0"}, 1,
                               files))
    details = {"stack_start_seconds": [r.stack_start_seconds for r in runs]}
    found: list[Result] = []
    if "P7" in which:
        found.append(p7_result([s for r in runs for s in r.startups], details))
    if "P3" in which:
        found.append(p3_result(runs, details))
    return found


def p7_result(startups: list[Startup], details: dict[str, Any]) -> Result:
    result = Result("P7", "trigger of the streaming DAG -> first batch committed")
    total = Figure("trigger -> first batch committed", "s", tuple(s.total for s in startups),
                   higher_is_better=False)
    result.figure = total
    result.extra = [
        Figure(label, "s", tuple(s.phases[label] for s in startups if label in s.phases),
               higher_is_better=False)
        for label, _key in PHASES
    ] + [
        Figure(f"first batch: Spark's {name}", "ms",
               tuple(s.first_batch_ms[name] for s in startups if name in s.first_batch_ms),
               higher_is_better=False)
        for name in FIRST_BATCH_DURATIONS
    ]
    result.checks.append(Check("<= 8 s", total.median <= 8, f"{total.median:.1f} s"))
    result.details = {**details, "startups": [s.__dict__ for s in startups],
                      "class_archive": "in use" if class_archive.driver_options() else "not used"}
    result.notes.append("The first trigger on each fresh stack is a cold start (no checkpoint yet); later "
                        "triggers recover the checkpoint of the previous run. Stream runs are triggered "
                        f"with {STREAM_CONF}. The driver's class archive (AppCDS) was "
                        f"{result.details['class_archive']}.")
    return result


def latency_figures(series: Series) -> dict[str, Figure]:
    airflow = [p for p in series.probes if p.path == "airflow" and p.visible is not None]
    raw = [p for p in series.probes if p.path == "raw" and p.visible is not None]
    label = series.label
    return {
        "through": Figure(f"landing -> totals via Airflow ({label})", "s",
                          tuple(p.visible - p.sent for p in airflow if p.visible), higher_is_better=False),
        "raw": Figure(f"raw file source: watch -> totals ({label})", "s",
                      tuple(p.visible - p.sent for p in raw if p.visible), higher_is_better=False),
        "staged": Figure(f"landing -> published by staging ({label})", "s",
                         tuple(p.published - p.sent for p in airflow if p.published), higher_is_better=False),
        "counted": Figure(f"published -> totals ({label})", "s",
                          tuple(p.visible - p.published for p in airflow if p.visible and p.published),
                          higher_is_better=False),
    }


def p50_p95(figure: Figure) -> str:
    return f"p50 {figure.percentile(50):.1f} s, p95 {figure.percentile(95):.1f} s (n={figure.n})"


def footprint_note(found: StagingFootprint) -> str:
    """The staging runs of the probe phase and their task logs, in one sentence."""
    logs = "; ".join(f"{task} {max(sizes) / 1024:.1f} KiB / {max(found.log_lines[task])} lines at most"
                     for task, sizes in sorted(found.log_bytes.items()))
    every = found.seconds / max(found.runs, 1)
    gaps = (f"; between two runs no staging task watched landing for {statistics.median(found.gaps):.1f} s "
            f"(median, max {max(found.gaps):.1f} s)") if found.gaps else ""
    return (f"{found.runs} staging DAG runs started in the {found.seconds:.0f} s of probes (one per "
            f"{every:.0f} s); task log of one run: {logs or 'none found'}{gaps}.")


def p3_result(runs: list[Series], details: dict[str, Any]) -> Result:
    result = Result("P3", "latency: landing -> visible in totals (Airflow staging DAG + stream)")
    main = latency_figures(runs[0])
    through, direct = main["through"], main["raw"]
    result.figure = through
    result.baselines = [direct]
    result.extra = [main["staged"], main["counted"]]
    size = runs[0].task_log
    if size is not None:
        result.extra.append(Figure("stream task log per batch, besides the console print", "B",
                                   (size.other_bytes_per_batch,), higher_is_better=False))
        result.notes.append(
            f"Task log of the stream over the probes ({size.batches} batches, as Airflow wrote it): "
            f"{size.other_bytes_per_batch:,.0f} B per batch besides the console print, which adds "
            f"{size.console_bytes_per_batch:,.0f} B per batch.")
    p50, p95 = through.percentile(50), through.percentile(95)
    raw50 = direct.percentile(50)
    result.ratios["Airflow path / raw, p50"] = p50 / raw50 if raw50 else float("nan")
    result.checks.append(Check("p50 <= 2.0 s", p50 <= 2.0, f"{p50:.1f} s"))
    result.checks.append(Check("p95 <= 2.5 s", p95 <= 2.5, f"{p95:.1f} s"))
    headline = [f"{runs[0].label}: {p50_p95(through)}"]
    baseline = [f"raw file source (renamed into watch), {runs[0].label}: {p50_p95(direct)}"]
    for variant in runs[1:]:
        other = latency_figures(variant)
        result.extra += list(other.values())
        headline.append(f"{variant.label}: {p50_p95(other['through'])}")
        baseline.append(f"raw, {variant.label}: {p50_p95(other['raw'])}")
        result.checks.append(Check(f"with {variant.label}: p50 <= 2.0 s (informative)",
                                   other["through"].percentile(50) <= 2.0,
                                   f"{other['through'].percentile(50):.1f} s"))
    for series in runs:
        figures = latency_figures(series)
        result.notes.append(
            f"{series.label}: landing -> published p50 {figures['staged'].percentile(50):.1f} s / p95 "
            f"{figures['staged'].percentile(95):.1f} s; published -> totals p50 "
            f"{figures['counted'].percentile(50):.1f} s / p95 {figures['counted'].percentile(95):.1f} s.")
        if series.staging is not None:
            result.notes.append(f"{series.label}: {footprint_note(series.staging)}")
    result.notes.append("p50/p95 are nearest-rank percentiles; the targets are judged on the first "
                        "configuration (the project's defaults unless knobs were set).")
    result.details = {
        **details, "probes": {r.label: [p.__dict__ for p in r.probes] for r in runs},
        "staging": {r.label: r.staging.__dict__ for r in runs if r.staging is not None},
        "headline": "<br>".join(headline), "baseline_headline": "<br>".join(baseline),
    }
    return result
