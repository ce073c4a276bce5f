"""P6: the structured engine holding 1,000,000 distinct words of state in a 1 GB driver.

Running totals live in Spark's state store. The default provider (HDFS-backed) keeps every key in
the JVM heap, in more than one version; RocksDB keeps them off-heap in native memory and on local
disk. Both run here with ``--driver-memory 1g`` (in local mode the driver's heap is the executors'
heap too), each over the same input:

* load: files with disjoint slices of the keys, one batch each, until the state holds them all;
* update: files that count again a slice of keys already in the state, one batch each: the
  steady state of a long-running stream with a large vocabulary.

Reported per provider: whether it survived, the batch durations of each phase (the engine's own
progress lines), and peak resident memory of the JVM and of the Python driver, sampled every 0.2 s.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Check, Context, Figure, Result, RssSampler, bench_settings
from bench.corpus import Corpus, distinct_words_corpus
from bench.throughput import batch_lines, publish
from wordstream import results
from wordstream.settings import StateStore
from wordstream_dev.spark_submit import StreamApp

KEYS = 1_000_000
QUICK_KEYS = 100_000
LOAD_FILES = 4
UPDATE_FILES = 3
DRIVER_MEMORY = "1g"
PROVIDERS: dict[str, StateStore] = {"HDFS-backed (Spark default)": "hdfs", "RocksDB": "rocksdb"}
SEED = 1_000_003


@dataclass
class StateRun:
    provider: str
    survived: bool = False
    load_ms: list[int] = field(default_factory=list)
    update_ms: list[int] = field(default_factory=list)
    jvm_peak_mb: float = 0.0
    python_peak_mb: float = 0.0
    worker_peak_mb: float = 0.0
    keys_in_output: int = 0
    failure: str = ""


def corpora(ctx: Context, keys: int) -> tuple[Corpus, Corpus]:
    """Load files (disjoint key slices, each key twice) and update files (a tenth of the keys each)."""
    folder = ctx.work / f"corpus-state-{keys}"
    if not (folder / "done.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        ctx.say(f"writing {keys:,} distinct keys ...", "P6")
        load = distinct_words_corpus(folder / "load", keys, LOAD_FILES, repeats=2, seed=SEED)
        update = distinct_words_corpus(folder / "update", keys // 10 * UPDATE_FILES, UPDATE_FILES,
                                       repeats=1, seed=SEED + 1, prefix="again")
        (folder / "done.json").write_text(json.dumps({
            "load": [[str(p) for p in load.files], list(load.words)],
            "update": [[str(p) for p in update.files], list(update.words)]}))
    recorded = json.loads((folder / "done.json").read_text())

    def corpus(entry: list[list[str] | list[int]]) -> Corpus:
        return Corpus(tuple(Path(str(p)) for p in entry[0]), tuple(int(w) for w in entry[1]))

    return corpus(recorded["load"]), corpus(recorded["update"])


def run_provider(ctx: Context, label: str, store: StateStore, load: Corpus, update: Corpus,
                 repeat: int) -> StateRun:
    run = StateRun(label)
    root = ctx.fresh_dir(f"state-{store}-r{repeat}")
    settings = bench_settings(root / "data")
    settings.data_dir.mkdir(parents=True)
    settings.ensure_dirs()
    log = root / "driver.log"
    app = StreamApp("structured", settings, log, batch_seconds=1, driver_memory=DRIVER_MEMORY,
                    state_store=store)  # the app's --state-store: it wins over any --conf
    try:
        with app:
            app.wait_running()
            with RssSampler(app.pid) as sampler:
                done = 0
                for phase, corpus in (("load", load), ("update", update)):
                    for path in corpus.files:
                        publish(settings, (path,))
                        done += 1
                        app.wait_processed(done, timeout=900)
                        ms = batch_lines(log, "structured")[-1]["ms"]
                        (run.load_ms if phase == "load" else run.update_ms).append(ms)
                        peaks = ", ".join(f"{name} {rss / 2**20:.0f} MB"
                                          for name, rss in sorted(sampler.peak_by_name.items()))
                        ctx.say(f"{label} {phase} batch {done}: {ms} ms; peak RSS {peaks}", "P6")
            run.jvm_peak_mb = sampler.peak_by_name.get("java", 0) / 2**20
            run.python_peak_mb = sampler.peak_by_name.get("python driver", 0) / 2**20
            run.worker_peak_mb = sampler.peak_by_name.get("python worker", 0) / 2**20
        run.keys_in_output = len(results.read_totals(settings.output("structured"), "running-totals"))
        run.survived = True
    except (RuntimeError, TimeoutError) as exc:
        text = log.read_text(errors="replace") if log.exists() else ""
        run.failure = "OutOfMemoryError" if "OutOfMemoryError" in text else f"{exc}"[:300]
        ctx.say(f"{label} failed: {run.failure}", "P6")
    shutil.rmtree(settings.watch_root, ignore_errors=True)
    return run


def measure(ctx: Context) -> Result:
    result = Result("P6", f"state of {ctx.size(KEYS, QUICK_KEYS):,} distinct words, driver memory 1 GB")
    keys = ctx.size(KEYS, QUICK_KEYS)
    load, update = corpora(ctx, keys)
    repeats = ctx.repeats_for(2, 1)
    ctx.say(f"{keys:,} keys in {len(load.files)} load batches, then {len(update.files)} update batches "
            f"of {keys // 10:,} keys; {repeats} run(s) per provider", result.id)
    runs: dict[str, list[StateRun]] = {label: [] for label in PROVIDERS}
    for repeat in range(1, repeats + 1):
        for label, store in PROVIDERS.items():
            runs[label].append(run_provider(ctx, label, store, load, update, repeat))
    figures: dict[str, Figure] = {}
    for label, provider_runs in runs.items():
        ok = [r for r in provider_runs if r.survived]
        figures[f"{label} update"] = Figure(
            f"{label}: update batch with {keys:,} keys in state", "ms",
            tuple(float(statistics.median(r.update_ms)) for r in ok), higher_is_better=False)
        result.extra.append(Figure(f"{label}: load batch ({keys // len(load.files):,} new keys)", "ms",
                                   tuple(float(statistics.median(r.load_ms)) for r in ok),
                                   higher_is_better=False))
        result.extra.append(Figure(f"{label}: peak JVM RSS", "MB", tuple(r.jvm_peak_mb for r in ok),
                                   higher_is_better=False))
        result.extra.append(Figure(f"{label}: peak Python driver RSS", "MB",
                                   tuple(r.python_peak_mb for r in ok), higher_is_better=False))
        complete = all(r.keys_in_output == keys for r in ok)
        failures = [r.failure for r in provider_runs if not r.survived]
        result.checks.append(Check(f"{label}: no OOM", not failures and complete,
                                   "; ".join(failures) or f"{len(ok)} run(s), all {keys:,} keys in totals"))
    rocks = figures["RocksDB update"]
    hdfs = figures["HDFS-backed (Spark default) update"]
    result.figure = rocks
    result.baselines = [hdfs]
    if rocks.values and hdfs.values:
        result.ratios["update batch time, default / RocksDB (above 1: RocksDB faster)"] = (
            hdfs.median / rocks.median)
    jvm = {f.name.split(":")[0]: f for f in result.extra if f.name.endswith("peak JVM RSS")}
    result.details = {
        "keys": keys, "driver_memory": DRIVER_MEMORY, "repeats": repeats,
        "runs": {label: [r.__dict__ for r in provider_runs] for label, provider_runs in runs.items()},
        "headline": f"RocksDB update batch {rocks.median:,.0f} ms, JVM {jvm['RocksDB'].median:,.0f} MB; "
                    f"default {hdfs.median:,.0f} ms, JVM "
                    f"{jvm['HDFS-backed (Spark default)'].median:,.0f} MB (n={rocks.n})"
        if rocks.values and hdfs.values else "see checks",
    }
    result.notes.append("The Python driver reads each batch's rows back from the Parquet it has just written "
                        "(console lines, top words): its RSS follows the largest batch "
                        f"({keys // len(load.files):,} new keys), not the keys held in state.")
    result.notes.append(f"{repeats} run(s) per provider (each loads {keys:,} keys: the large ones get "
                        "fewer repeats); batch times are medians over the batches of each phase.")
    return result
