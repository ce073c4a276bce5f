"""P8 — soak: the real stack fed at a steady rate for ``--minutes``, every growing thing sampled each minute.

One :class:`wordstream_dev.stack.Stack` (as P3/P7 start it, :func:`bench.latency.stack_for`) runs
both engines (``stream_structured`` and ``stream_dstream``, their default batch intervals) and the
staging DAG. A feeder renames ``RATE`` files a second (about 2,000 words each, from the
deterministic corpus, plus one marker word of its own) into ``landing/``; a poller per engine notes
when each marker first shows in a new results folder (:class:`bench.latency.Poller`), which gives
landing → counted per file. Each minute the soak samples what grows (:mod:`bench.soak_series`):
the Airflow task logs (bytes, files), the DAG runs (REST ``total_entries``), the metadata database,
the output folders, the checkpoints, the ledger's rows, driver and scheduler RSS, and the time of a
``wordstream totals`` and of the status API the page reads.

Halfway, after that minute's sample, ``wordstream cleanup`` runs once with the stack's Airflow
environment (the same code as the maintenance DAG's cleanup task; triggering the DAG would have
its ``@hourly`` schedule add runs of its own once unpaused). The growth of each series is judged
after it. At the end the feed stops; once every marker is counted, both engines' totals must equal
an independent ``Counter`` over the fed files, and still do after one more file is counted.
"""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests

from bench import soak_series
from bench.common import Check, Context, Figure, Result, bench_settings, role
from bench.corpus import counter_word_count, decoded, write_corpus
from bench.latency import STAGING_DAG, Poller, Probe, stack_for, write_atomically
from wordstream import control, results
from wordstream.control import wait_for
from wordstream.ledger import Ledger
from wordstream.maintenance.folders import tree_bytes
from wordstream.settings import DAG_IDS, ENGINES, Engine, Settings, stream_dag_id
from wordstream.staging import is_temp_name
from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.processes import processes_mentioning
from wordstream_dev.stack import Stack

MINUTES = 30
QUICK_MINUTES = 4
SAVED_MINUTES = 10  # shorter soaks are development runs: never saved as the latest figures
RATE = 2.0  # files a second
WORDS_PER_FILE = 2000
FILE_BYTES = 10_000  # about 2,000 words of the corpus (2,581 words in 13,000 bytes)
SEED = 88
STREAM_CONF = {"keys": "words", "timeout_seconds": 0}
LATENCY_WINDOW_MINUTES = 5


@dataclass
class Feeder:
    """Renames one file into landing every ``1 / rate`` s (on a fixed schedule), each with a marker word."""

    texts: list[Path]
    landing: Path
    pollers: Mapping[Engine, Poller]
    rate: float
    started: float = 0.0
    sent: int = 0
    probes: dict[Engine, list[Probe]] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        self.started = time.time()
        for index, source in enumerate(self.texts):
            delay = self.started + index / self.rate - time.time()
            if self.stop.wait(max(0.0, delay)):
                return
            marker = f"soak{index:05d}x{uuid.uuid4().hex[:8]}"
            for engine, poller in self.pollers.items():
                probe = Probe(word=marker, path="airflow")
                poller.expect(probe)
                self.probes.setdefault(engine, []).append(probe)
            text = source.read_text(encoding="utf-8") + f"{marker}\n"
            sent = write_atomically(self.landing, f"soak-{index:05d}.txt", text)
            for engine in self.pollers:
                self.probes[engine][-1].sent = sent
            self.markers.append(marker)
            self.sent = index + 1


def app_rss(engine: Engine, data_dir: Path) -> int:
    """Resident bytes of the engine's Spark application: the spark-submit JVM and its Python children."""
    total = 0
    for proc in processes_mentioning(f"{engine}_wordcount.py", str(data_dir)):
        try:
            if role(proc) == "java":
                total += sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def scheduler_rss(stack: Stack) -> int:
    """Resident bytes of the ``airflow scheduler`` process itself (not the task processes it forks)."""
    def is_scheduler(proc: psutil.Process | None) -> bool:
        # ``airflow scheduler`` as standalone starts it, or the title it may give itself
        return proc is not None and "airflow scheduler" in " ".join(proc.cmdline())

    for proc in stack.processes():
        try:
            if is_scheduler(proc) and not is_scheduler(proc.parent()):
                return int(proc.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return 0


def cli_totals(settings: Settings, engine: Engine) -> tuple[float, dict[str, int]]:
    """``wordstream totals --engine E --format csv`` as a user runs it: its wall time and the totals."""
    command = [str(Path(sys.executable).parent / "wordstream"), "totals", "--engine", engine,
               "--format", "csv"]
    env = {**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir)}
    began = time.monotonic()
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    seconds = time.monotonic() - began
    if run.returncode != 0:
        return seconds, {}
    rows = list(csv.reader(io.StringIO(run.stdout, newline="")))
    return seconds, {word: int(count) for word, count in rows[1:]}


def status_seconds(api: AirflowClient, stack: Stack, engine: Engine) -> float:
    """The JSON the status page polls (``/wordstream/api/<engine>``), logged in: the median time of
    :data:`~bench.soak_series.STATUS_READS` GETs, :data:`~bench.soak_series.STATUS_READ_PAUSE` apart."""
    timings: list[float] = []
    for read in range(soak_series.STATUS_READS):
        if read:
            time.sleep(soak_series.STATUS_READ_PAUSE)
        began = time.monotonic()
        try:
            api.session.get(f"{stack.api_url}/wordstream/api/{engine}", timeout=60).raise_for_status()
        except requests.RequestException:
            timings.append(float("nan"))  # all failed: shown as a gap, judged on what the series has
            continue
        timings.append(time.monotonic() - began)
    return soak_series.typical_seconds(timings)


def dag_runs(api: AirflowClient) -> int:
    return sum(int(api.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1})["total_entries"])
               for dag_id in DAG_IDS)


def log_stats(folder: Path) -> tuple[int, int, int]:
    """Bytes of the stream tasks' logs and of the rest under Airflow's logs folder, and its files."""
    streams = {f"dag_id={stream_dag_id(engine)}" for engine in ENGINES}
    stream_bytes = other_bytes = files = 0
    for path in folder.rglob("*"):
        try:
            if not path.is_file() or path.is_symlink():
                continue
            size = path.stat().st_size
        except FileNotFoundError:  # removed by the cleanup while walking
            continue
        files += 1
        if streams & set(path.relative_to(folder).parts):
            stream_bytes += size
        else:
            other_bytes += size
    return stream_bytes, other_bytes, files


def ledger_rows(settings: Settings) -> int:
    if not settings.ledger.exists():
        return 0
    summary = Ledger(settings.ledger).summary()
    deliveries = sum(sum(states.values()) for states in summary["deliveries"].values())
    return int(summary["total_files"]) + deliveries


def sample(stack: Stack, api: AirflowClient, feeder: Feeder, minute: int) -> dict[str, float]:
    """Every series of :func:`bench.soak_series.series_specs` now (the latency is added afterwards)."""
    settings = stack.settings
    home = stack.instance.airflow_home
    stream_logs, other_logs, log_files = log_stats(home / "logs")
    database = stack.instance.database
    found: dict[str, float] = {
        "minute": minute, "t": time.time() - feeder.started, "files": feeder.sent,
        "stream_log_bytes": stream_logs, "other_log_bytes": other_logs, "log_files": log_files,
        "dag_runs": dag_runs(api),
        "metadb_bytes": tree_bytes(database) + tree_bytes(database.with_name(database.name + "-wal")),
        "ledger_rows": ledger_rows(settings), "scheduler_rss": scheduler_rss(stack),
    }
    for engine in ENGINES:
        output = settings.output(engine)
        found[f"{engine}_batch_folders"] = len(results.batch_dirs(output))
        found[f"{engine}_snapshot_folders"] = sum(1 for p in output.glob(f"{results.SNAPSHOT_PREFIX}*")
                                                  if p.is_dir())
        found[f"{engine}_checkpoint_bytes"] = tree_bytes(settings.checkpoint(engine))
        found[f"{engine}_driver_rss"] = app_rss(engine, settings.data_dir)
        found[f"{engine}_totals_seconds"] = cli_totals(settings, engine)[0]
        found[f"{engine}_status_seconds"] = status_seconds(api, stack, engine)
        found[f"{engine}_watch_files"] = sum(1 for p in settings.watch(engine).iterdir()
                                             if not is_temp_name(p.name))
    return found


def run_cleanup(stack: Stack, log: Path) -> tuple[float, str]:
    """``wordstream cleanup`` with the stack's Airflow environment; its seconds and its summary line."""
    env = stack.environment(stack.recorded().get("stack_id"))
    began = time.monotonic()
    with open(log, "w") as out:
        run = subprocess.run([str(Path(sys.executable).parent / "wordstream"), "cleanup"], env=env,
                             stdout=out, stderr=subprocess.STDOUT, check=False, timeout=600)
    seconds = time.monotonic() - began
    lines = log.read_text().splitlines()
    if run.returncode != 0:
        raise RuntimeError(f"`wordstream cleanup` failed (exit {run.returncode}); see {log}")
    removed = next((line for line in lines if line.startswith("removed ")), "")
    return seconds, removed


def exact_totals(ctx: Context, settings: Settings, feeder: Feeder, expected: dict[str, int],
                 pollers: Mapping[Engine, Poller]) -> dict[Engine, str]:
    """Each engine's totals against the reference, then again after one more file was counted."""
    outcome: dict[Engine, str] = {}
    wait_for(lambda: all(p.visible is not None for probes in feeder.probes.values() for p in probes), 300,
             "every fed file to be counted", interval=0.5)
    first = {engine: cli_totals(settings, engine)[1] for engine in ENGINES}
    sentinel = f"soaksentinel{uuid.uuid4().hex[:8]}"
    probes = {engine: Probe(word=sentinel, path="airflow") for engine in ENGINES}
    for engine, poller in pollers.items():
        poller.expect(probes[engine])
    write_atomically(settings.landing, f"{sentinel}.txt", f"{sentinel} {sentinel}\n")
    wait_for(lambda: all(p.visible is not None for p in probes.values()), 180, "the last file to be counted",
             interval=0.5)
    again = {**expected, sentinel: 2}
    for engine in ENGINES:
        second = cli_totals(settings, engine)[1]
        if first[engine] == expected and second == again:
            outcome[engine] = "exact"
        else:
            wrong = sum(1 for word in again.keys() | second.keys() if again.get(word) != second.get(word))
            outcome[engine] = f"{wrong} words differ (of {len(again)})"
        ctx.say(f"{engine} totals: {outcome[engine]}", "P8")
    return outcome


@dataclass
class Soak:
    minutes: int
    samples: list[dict[str, float]] = field(default_factory=list)
    cleanup_minute: int = 0
    cleanup_start: float = 0.0
    cleanup_end: float = 0.0
    cleanup_seconds: float = 0.0
    cleanup_line: str = ""
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (sent, latency)
    unseen: dict[str, int] = field(default_factory=dict)
    totals: dict[Engine, str] = field(default_factory=dict)
    files: int = 0
    stack_start_seconds: float = 0.0


def run(ctx: Context, minutes: int) -> Soak:
    """The soak itself: stack, streams, feed, a sample a minute, the cleanup halfway, the totals."""
    soak = Soak(minutes)
    count = int(RATE * minutes * 60)
    ctx.say(f"corpus: {count} files of about {WORDS_PER_FILE} words", "P8")
    corpus = write_corpus(ctx.fresh_dir("soak-corpus"), count * FILE_BYTES, FILE_BYTES, SEED, prefix="soak")
    reference = decoded(counter_word_count(corpus.files))
    stack = stack_for(ctx, "stack-soak", {})
    pollers: dict[Engine, Poller] = {}
    threads: list[threading.Thread] = []
    feeder: Feeder | None = None
    try:
        began = time.monotonic()
        stack.start()
        soak.stack_start_seconds = time.monotonic() - began
        api = stack.client()
        missing = stack.bootstrap(api, dag_ids=[*(stream_dag_id(e) for e in ENGINES), STAGING_DAG],
                                  start_stream=None, copy_samples=False)
        if missing:
            raise RuntimeError(f"DAGs not registered: {missing}")
        settings = stack.settings
        for engine in ENGINES:
            api.trigger_dag_run(stream_dag_id(engine), conf=STREAM_CONF, note="bench P8")
        wait_for(lambda: all(control.read_status(settings.state, e).get("state") == "running"
                             for e in ENGINES), 300, "both streams to run", interval=0.5)
        ctx.say("both streams running; feeding", "P8")
        pollers = {engine: Poller(settings.output(engine)) for engine in ENGINES}
        feeder = Feeder(list(corpus.files), settings.landing, pollers, RATE)
        threads = [threading.Thread(target=p.run, name=f"poller-{e}", daemon=True)
                   for e, p in pollers.items()]
        threads.append(threading.Thread(target=feeder.run, name="feeder", daemon=True))
        for thread in threads:
            thread.start()
        wait_for(lambda: feeder is not None and feeder.started > 0, 10, "the feeder")
        soak.cleanup_minute = max(1, minutes // 2)
        for minute in range(1, minutes + 1):
            pause = feeder.started + 60 * minute - time.time()
            if pause > 0:
                time.sleep(pause)
            taken = sample(stack, api, feeder, minute)
            soak.samples.append(taken)
            engines = ", ".join(f"{e} totals {taken[f'{e}_totals_seconds']:.2f} s, "
                                f"{taken[f'{e}_batch_folders']:.0f} batch folders" for e in ENGINES)
            ctx.say(f"minute {minute}/{minutes}: {feeder.sent} files fed; {engines}; Airflow logs "
                    f"{(taken['stream_log_bytes'] + taken['other_log_bytes']) / 2**20:.1f} MB", "P8")
            if minute == soak.cleanup_minute:
                soak.cleanup_start = time.time() - feeder.started
                soak.cleanup_seconds, soak.cleanup_line = run_cleanup(stack, ctx.work / "soak-cleanup.log")
                soak.cleanup_end = time.time() - feeder.started
                ctx.say(f"cleanup in {soak.cleanup_seconds:.1f} s: {soak.cleanup_line}", "P8")
        feeder.stop.set()
        threads[-1].join(timeout=30)  # the feeder: a rename under way must be in the count
        soak.files = feeder.sent
        fed = feeder.markers
        expected = dict(reference) if soak.files == count else \
            decoded(counter_word_count(corpus.files[:soak.files]))
        for marker in fed:
            expected[marker] = expected.get(marker, 0) + 1
        soak.totals = exact_totals(ctx, settings, feeder, expected, pollers)
    finally:
        if feeder is not None:
            feeder.stop.set()
        for poller in pollers.values():
            poller.stop.set()
        for thread in threads:
            thread.join(timeout=10)
        stack.stop()
    for engine, probes in (feeder.probes.items() if feeder else []):
        soak.latencies[engine] = [(p.sent - feeder.started, p.visible - p.sent)
                                  for p in probes if p.visible is not None]
        soak.unseen[engine] = sum(1 for p in probes if p.visible is None)
        for taken, (p50, p95) in zip(soak.samples, soak_series.interval_percentiles(
                soak.latencies[engine], minutes), strict=False):
            taken[f"{engine}_p50"], taken[f"{engine}_p95"] = p50, p95
    return soak


def window_figures(soak: Soak, engine: str) -> tuple[Figure, Figure, float]:
    """Landing -> counted of the first and the last window (5 minutes, a third of shorter runs)."""
    window = min(LATENCY_WINDOW_MINUTES, soak.minutes / 3) * 60
    end = soak.minutes * 60
    pairs = soak.latencies.get(engine, [])
    first = Figure(f"{engine}: landing -> counted, first {window / 60:.3g} min", "s",
                   tuple(lat for sent, lat in pairs if sent < window), higher_is_better=False)
    last = Figure(f"{engine}: landing -> counted, last {window / 60:.3g} min", "s",
                  tuple(lat for sent, lat in pairs if sent >= end - window), higher_is_better=False)
    return first, last, round(window / 60, 2)


def result_of(soak: Soak, folder_caps: dict[str, int]) -> Result:
    result = Result("P8", "soak: the real stack at a steady rate, what grows, a cleanup halfway")
    specs = soak_series.series_specs(folder_caps)
    for engine in ENGINES:
        verdict = soak.totals.get(engine, "not checked")
        result.checks.append(Check(f"{engine} totals exact at the end", verdict == "exact", verdict))
    judged = [(s.label, soak_series.bound_check(s, soak.samples, soak.cleanup_end)) for s in specs if s.bound]
    bounds = [check for _label, check in judged]
    broken = [label for label, check in judged if check.met is False]
    unknown = [label for label, check in judged if check.met is None]
    result.checks.append(Check("every series bounded", False if broken else (None if unknown else True),
                               f"not: {', '.join(broken)}" if broken else f"{len(bounds)} series"))
    for engine in ENGINES:
        result.checks.append(soak_series.totals_time_check(soak.samples, soak.cleanup_end, engine))
    headline, baseline = [], []
    for engine in ENGINES:
        first, last, window = window_figures(soak, engine)
        result.checks.append(soak_series.latency_check(first, last, engine, window))
        result.extra += [first, last]
        headline.append(f"{engine}: landing -> counted p95 {last.percentile(95):.1f} s in the last "
                        f"{window:g} min (p50 {last.percentile(50):.1f} s)")
        baseline.append(f"{engine}: first {window:g} min p95 {first.percentile(95):.1f} s "
                        f"(p50 {first.percentile(50):.1f} s)")
    result.checks += bounds
    taken_at = datetime.now(UTC).isoformat(timespec="seconds")
    result.details = {
        "headline": "<br>".join([f"{soak.minutes} min at {RATE:g} files/s, {soak.files:,} files", *headline]),
        "baseline_headline": "<br>".join(baseline),
        "minutes": soak.minutes, "rate": RATE, "words_per_file": WORDS_PER_FILE, "files": soak.files,
        "batch_folder_caps": folder_caps, "taken_at": taken_at,
        "cleanup_minute": soak.cleanup_minute, "cleanup_start": soak.cleanup_start,
        "cleanup_end": soak.cleanup_end, "cleanup_seconds": soak.cleanup_seconds,
        "cleanup_line": soak.cleanup_line, "samples": soak.samples, "unseen": soak.unseen,
        "stack_start_seconds": soak.stack_start_seconds,
        "growth_per_hour": {s.key: _finite(soak_series.growth_per_hour(soak.samples, s.key, soak.cleanup_end))
                            for s in specs},
        "growth_per_file": {s.key: _finite(soak_series.growth_per_file(soak.samples, s.key, soak.cleanup_end))
                            for s in specs},
    }
    result.notes.append(f"The cleanup (`wordstream cleanup`, the maintenance DAG's code) ran after minute "
                        f"{soak.cleanup_minute} in {soak.cleanup_seconds:.1f} s: {soak.cleanup_line}")
    result.notes.append("Every minute's sample and each series' growth per hour and per file after the "
                        "cleanup are in this row's `details` in the JSON; the table and the chart are drawn "
                        "from them (bench.soak_series).")
    return result


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def measure(ctx: Context, minutes: int | None = None) -> Result:
    minutes = minutes or ctx.size(MINUTES, QUICK_MINUTES)
    settings = bench_settings(Path("/nonexistent"))
    remember = math.ceil(settings.dstream_remember_seconds / settings.batch_seconds_for("dstream"))
    soak = run(ctx, minutes)
    return result_of(soak, soak_series.batch_folder_caps(settings.compact_batches, remember))

