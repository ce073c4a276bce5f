"""P4: how fast staging takes many small files, and that one huge file does not grow its memory.

Staging runs as the DAG task runs it, in a process of its own (``python -m bench.staging_speed
--probe``, which calls :func:`wordstream.staging.stage` once and reports its time and peak RSS).
Every landing file is older than ``stable_seconds``, so the figures are the work itself: the
scan, the 0.5 s stability re-check, one read per file that validates, hashes and writes its copy,
the copy linked into every engine's watch folder, made durable (one syncfs and two folder fsyncs per
group of files) and renamed, the move to the archive and the ledger rows (three transactions per
group).

The baseline is the naive way to the same folders, a shell loop of ``cp`` and ``mv`` per file: copy
to a hidden name in each engine's watch folder, rename, move the original to the archive. It
validates nothing, hashes nothing, fsyncs nothing and records nothing.

Memory: peak RSS of the staging process for one 1 GB file, next to the same process staging one
small file; staging reads in 1 MiB chunks, so the two should differ by a few MB, not by the file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Check, Context, Figure, Result, bench_settings, ratio
from bench.corpus import line_pool
from wordstream.settings import ENGINES, REPO_DIR, Settings

SMALL_FILES = 10_000
QUICK_SMALL_FILES = 1_000
BIG_BYTES = 1_000_000_000
QUICK_BIG_BYTES = 100_000_000
TARGET_FILES_PER_SECOND = 1_000.0
SEED = 4_242

SHELL_LOOP = r"""
set -e
cd "$1"
for f in *; do
  cp "$f" "$2/.$f.tmp"; mv "$2/.$f.tmp" "$2/$f"
  cp "$f" "$3/.$f.tmp"; mv "$3/.$f.tmp" "$3/$f"
  mv "$f" "$4/$f"
done
"""


def peak_rss_kb() -> int:
    """This process's peak RSS. ``ru_maxrss`` keeps the parent's peak across fork and exec, so a probe
    started by a big benchmark process would report the parent; ``VmHWM`` is this image's own."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def probe(data_dir: Path, max_file_bytes: int) -> dict[str, float | int]:
    """Inside a fresh process: one staging run, timed, with RSS before and the peak after."""
    from wordstream import staging
    from wordstream.staging import run as staging_run

    settings = bench_settings(data_dir, WORDSTREAM_MAX_FILE_BYTES=str(max_file_bytes))
    synced = {"calls": 0, "seconds": 0.0}
    real_fsync, real_flush = os.fsync, staging_run.flush_filesystem

    def timed(sync: Any) -> Any:  # how much of staging is waiting for the disk
        def wrapper(target: Any) -> None:
            began = time.perf_counter()
            sync(target)
            synced["calls"] += 1
            synced["seconds"] += time.perf_counter() - began
        return wrapper

    os.fsync, staging_run.flush_filesystem = timed(real_fsync), timed(real_flush)
    before = peak_rss_kb()
    started = time.perf_counter()
    report = staging.stage(settings, progress=lambda _line: None)
    seconds = time.perf_counter() - started
    peak = peak_rss_kb()
    os.fsync, staging_run.flush_filesystem = real_fsync, real_flush
    return {"seconds": seconds, "staged": report.staged, "quarantined": report.quarantined,
            "rss_before_kb": before, "rss_peak_kb": peak, "fsync_calls": synced["calls"],
            "fsync_seconds": synced["seconds"]}


def run_probe(data_dir: Path, max_file_bytes: int) -> dict[str, float | int]:
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    done = subprocess.run([sys.executable, "-m", "bench.staging_speed", "--probe", str(data_dir),
                           "--max-file-bytes", str(max_file_bytes)],
                          env=env, capture_output=True, text=True, timeout=3600, check=False, cwd=REPO_DIR)
    if done.returncode != 0:
        raise RuntimeError(f"staging probe failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def small_files(folder: Path, count: int) -> list[Path]:
    """``count`` distinct small text files (0.5-4 KB), last modified a minute ago."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, _ = line_pool(SEED, size=5_000)
    rng = random.Random(SEED)
    then = time.time() - 60
    paths = []
    for index in range(count):
        path = folder / f"small-{index:05d}.txt"
        body = "".join(rng.choices(lines, k=rng.randint(8, 60)))
        path.write_text(f"file {index}\n{body}", encoding="utf-8")
        os.utime(path, (then, then))
        paths.append(path)
    return paths


def big_file(path: Path, size: int) -> Path:
    """One text file of ``size`` bytes, written in chunks (never held in memory whole)."""
    lines, _ = line_pool(SEED + 1)
    rng = random.Random(SEED + 1)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < size:
            chunk = "".join(rng.choices(lines, k=20_000)).encode()[: size - written]
            text = chunk.decode("utf-8", errors="ignore")
            out.write(text)
            written += len(text.encode())
    then = time.time() - 60
    os.utime(path, (then, then))
    return path


def fresh_settings(ctx: Context, name: str) -> Settings:
    root = ctx.fresh_dir(name)
    settings = bench_settings(root)
    settings.ensure_dirs()
    return settings


def land(settings: Settings, files: list[Path]) -> None:
    """Hard links into landing: instant, and they keep the source's old mtime (already stable)."""
    for path in files:
        os.link(path, settings.landing / path.name)


def shell_loop(settings: Settings) -> float:
    archive = settings.archive / "loop"
    archive.mkdir(parents=True, exist_ok=True)
    watches = [str(settings.watch(engine)) for engine in ENGINES]
    started = time.perf_counter()
    subprocess.run(["bash", "-c", SHELL_LOOP, "loop", str(settings.landing), *watches, str(archive)],
                   check=True, timeout=3600)
    return time.perf_counter() - started


def measure(ctx: Context) -> Result:
    result = Result("P4", "staging: small files/s and peak RSS of one huge file")
    count = ctx.size(SMALL_FILES, QUICK_SMALL_FILES)
    big = ctx.size(BIG_BYTES, QUICK_BIG_BYTES)
    repeats = ctx.repeats_for(3)
    # Five processes per file: 10,000 files take minutes of loop, so it runs once at full size.
    loop_repeats = ctx.repeats_for(1, 1)
    source = ctx.work / f"staging-small-{count}"
    if not source.exists():
        ctx.say(f"writing {count:,} small files ...", result.id)
        small_files(source / "files", count)
    files = sorted((source / "files").iterdir())
    total_kb = sum(p.stat().st_size for p in files) / 1024
    staged_s: list[float] = []
    fsync_share: list[float] = []
    loop_s: list[float] = []
    # Each run gets a folder of its own, all removed at the end: removing the last run's 30,000 files
    # just before the next run slows the file creations of that run (ext4 without a journal skips
    # recently freed inodes, one by one), a cost no real staging run pays.
    for repeat in range(1, repeats + 1):
        settings = fresh_settings(ctx, f"staging-run/{repeat}")
        land(settings, files)
        found = run_probe(settings.data_dir, settings.max_file_bytes)
        if found["staged"] != count:
            raise RuntimeError(f"staging took {found['staged']} of {count} files")
        staged_s.append(float(found["seconds"]))
        fsync_share.append(100 * float(found["fsync_seconds"]) / staged_s[-1])
        if repeat <= loop_repeats:
            settings = fresh_settings(ctx, f"staging-run/loop-{repeat}")
            land(settings, files)
            loop_s.append(shell_loop(settings))
        loop = f", cp+mv loop {count / loop_s[-1]:,.0f} files/s" if repeat <= loop_repeats else ""
        ctx.say(f"repeat {repeat}/{repeats}: staging {count / staged_s[-1]:,.0f} files/s{loop}", result.id)
    shutil.rmtree(ctx.work / "staging-run", ignore_errors=True)
    staging_fps = Figure(f"staging {count:,} small files", "files/s", tuple(count / s for s in staged_s))
    loop_fps = Figure("cp + mv shell loop", "files/s", tuple(count / s for s in loop_s))
    result.figure = staging_fps
    result.baselines = [loop_fps]
    result.ratios["staging / loop"] = ratio(staging_fps, loop_fps)
    result.extra.append(Figure("share of staging time in fsync and syncfs", "%",
                               tuple(fsync_share), higher_is_better=False))
    result.checks.append(Check(f">= {TARGET_FILES_PER_SECOND:,.0f} files/s",
                               staging_fps.median >= TARGET_FILES_PER_SECOND, f"{staging_fps.median:,.0f}"))
    result.checks.append(Check(">= 0.8x the loop", result.ratios["staging / loop"] >= 0.8,
                               f"{result.ratios['staging / loop']:.2f}x"))

    # -- memory: one huge file next to one small one --------------------------------------------
    big_repeats = ctx.repeats_for(2, 1)
    big_path = ctx.work / "staging-big.txt"
    if not big_path.exists() or big_path.stat().st_size != big:
        ctx.say(f"writing one {big / 1e6:,.0f} MB file ...", result.id)
        big_file(big_path, big)
    limit = big * 2
    peaks: list[float] = []
    small_peaks: list[float] = []
    big_seconds: list[float] = []
    for repeat in range(1, big_repeats + 1):
        settings = fresh_settings(ctx, "staging-big-run")
        land(settings, [files[0]])
        small = run_probe(settings.data_dir, limit)
        settings = fresh_settings(ctx, "staging-big-run")
        land(settings, [big_path])
        found = run_probe(settings.data_dir, limit)
        if found["staged"] != 1:
            raise RuntimeError(f"the {big / 1e6:,.0f} MB file was not staged: {found}")
        peaks.append(float(found["rss_peak_kb"]) / 1024)
        small_peaks.append(float(small["rss_peak_kb"]) / 1024)
        big_seconds.append(float(found["seconds"]))
        ctx.say(f"huge file {repeat}/{big_repeats}: peak RSS {peaks[-1]:.0f} MB (one small file: "
                f"{small_peaks[-1]:.0f} MB), {big / 1e6 / big_seconds[-1]:.0f} MB/s", result.id)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    big_figure = Figure(f"peak RSS staging one {big / 1e9:g} GB file", "MB", tuple(peaks),
                        higher_is_better=False)
    small_figure = Figure("peak RSS staging one small file", "MB", tuple(small_peaks), higher_is_better=False)
    growth = big_figure.median - small_figure.median
    result.baselines.append(small_figure)
    result.extra += [big_figure, Figure(f"staging one {big / 1e9:g} GB file", "MB/s",
                                       tuple(big / 1e6 / s for s in big_seconds))]
    result.checks.append(Check("RSS flat (huge file adds < 16 MB)", growth < 16, f"+{growth:.1f} MB"))
    result.details = {
        "small_files": count, "small_kb_total": round(total_kb), "repeats": repeats,
        "big_bytes": big, "big_repeats": big_repeats, "max_file_bytes_for_big": limit,
        "staging_seconds": staged_s, "loop_seconds": loop_s, "big_seconds": big_seconds,
        "fsync_share_percent": fsync_share,
        "headline": f"{staging_fps.name}: {staging_fps.median:,.0f} files/s ({staging_fps.low:,.0f}-"
                    f"{staging_fps.high:,.0f}, n={staging_fps.n}); peak RSS one {big / 1e9:g} GB file "
                    f"{big_figure.median:.0f} MB (n={big_figure.n})",
    }
    result.notes.append("Staging publishes files in groups (at most 100 files or 64 MiB): per group one "
                        "syncfs makes the copy of every file durable (one inode, hard-linked into both "
                        "engines' watch folders), two folder fsyncs the renames, and three ledger "
                        "transactions record the intents, the publications and the final statuses; the "
                        "0.5 s stability re-check is paid once per run.")
    result.notes.append(f"Staging ran {repeats} times, the cp+mv loop {loop_repeats} time(s) (it spawns five "
                        "processes per file), alternating with staging's first run(s).")
    result.notes.append(f"The huge file runs with WORDSTREAM_MAX_FILE_BYTES={limit} (the default limit, "
                        "256 MiB, would quarantine it unread). Fewer repeats for it: it reads and "
                        f"writes {big / 1e9:g} GB per repeat.")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.staging_speed")
    parser.add_argument("--probe", type=Path, required=True, help="a data directory to stage once")
    parser.add_argument("--max-file-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.probe, args.max_file_bytes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
