"""``python -m bench`` (``make bench``): run the measurements, print the table, save JSON and Markdown.

Options::

    --quick          every measurement shrunk (small corpora, one repeat): for developing
    --only P1,P3     run only these measurements
    --minutes N      P8's soak length (default 30; under 10 counts as a shrunk run, like --quick)
    --repeats N      override every measurement's number of repeats
    --work DIR       scratch folder, kept afterwards; generated corpora are reused from it
    --keep           keep the default temporary scratch folder (logs of every Spark and Airflow process)

A full run takes about 50 minutes on two cores (P8's soak 33, P3 and P7 together 7, P1 and P2 3
each); the figures and their ratios are always taken in the same run, side by side, because the
machine's load changes between runs. A full-size run also rewrites README's table (and soak block)
from the saved results (:mod:`bench.readme`). P8, the soak (:mod:`bench.soak`), runs alone with
``python -m bench --only P8``; it also saves a chart beside the JSON (``<run>-P8.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import readme, report
from bench.common import Context, Result

RESULTS_DIR = Path(__file__).with_name("results")


def _p1(ctx: Context) -> list[Result]:
    from bench import throughput

    return [throughput.measure(ctx, "structured")]


def _p2(ctx: Context) -> list[Result]:
    from bench import throughput

    return [throughput.measure(ctx, "dstream")]


def _p3_p7(ctx: Context, which: set[str]) -> list[Result]:
    from bench import latency

    return latency.measure(ctx, which)


def _p4(ctx: Context) -> list[Result]:
    from bench import staging_speed

    return [staging_speed.measure(ctx)]


def _p5(ctx: Context) -> list[Result]:
    from bench import dag_parse

    return [dag_parse.measure(ctx)]


def _p6(ctx: Context) -> list[Result]:
    from bench import state_store

    return [state_store.measure(ctx)]


def _p8(ctx: Context) -> list[Result]:
    from bench import soak

    return [soak.measure(ctx, ctx.soak_minutes)]


IDS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")
MEASURES = {
    "P1": "structured stream sustained throughput", "P2": "DStream throughput",
    "P3": "latency landing -> totals", "P4": "staging speed and memory", "P5": "DAG parse time",
    "P6": "1,000,000 keys of state", "P7": "trigger -> first batch committed",
    "P8": "soak: steady feed, what grows, a cleanup halfway",
}


def plan(selected: list[str]) -> list[tuple[list[str], Callable[[Context], list[Result]]]]:
    """Measurements in run order; P3 and P7 share one Airflow stack (starting one costs about 15 s)."""
    steps: list[tuple[list[str], Callable[[Context], list[Result]]]] = []
    simple = {"P1": _p1, "P2": _p2, "P4": _p4, "P5": _p5, "P6": _p6}
    for key in ("P5", "P4", "P1", "P2", "P6"):
        if key in selected:
            steps.append(([key], simple[key]))
    stacked = sorted({"P3", "P7"} & set(selected))
    if stacked:
        steps.append((stacked, lambda ctx: _p3_p7(ctx, set(stacked))))
    if "P8" in selected:
        steps.append((["P8"], _p8))
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shrink every measurement (development)")
    parser.add_argument("--only", default=",".join(IDS), help="comma-separated ids, e.g. P1,P3")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every measurement")
    parser.add_argument("--minutes", type=int, default=None, help="P8's soak length in minutes (default 30)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and its logs")
    args = parser.parse_args(argv)
    args.selected = [part.strip().upper() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in args.selected if part not in IDS]
    if unknown:
        parser.error(f"unknown measurement {', '.join(unknown)}: choose from {', '.join(IDS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.minutes is not None and args.minutes < 3:
        parser.error("--minutes must be at least 3 (a minute before the cleanup and two after)")
    return args


def shrunk(args: argparse.Namespace) -> bool:
    """A run whose sizes are not the real ones: ``--quick``, or a soak too short to show a trend
    after its cleanup (under ``SAVED_MINUTES``; a saved soak names its length in its headline)."""
    from bench.soak import SAVED_MINUTES

    return bool(args.quick or (args.minutes is not None and args.minutes < SAVED_MINUTES))


def soak_outputs(results: list[Result], json_path: Path, merged: bool, ctx: Context) -> None:
    """P8's table (printed) and chart (``<run>-P8.png``; ``P8-latest.png`` too when in latest.*)."""
    from bench import soak_series

    for result in results:
        if result.id != "P8" or result.error:
            continue
        print()
        print(soak_series.block(result.details, result.checks, None))
        png = soak_series.draw(result.details, json_path.with_name(f"{json_path.stem}-P8.png"))
        ctx.say(f"saved {png}")
        if merged:
            shutil.copyfile(png, RESULTS_DIR / soak_series.LATEST_CHART)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="wordstream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(work=work.resolve(), quick=args.quick, repeats=args.repeats, soak_minutes=args.minutes)
    small = shrunk(args)
    ctx.say(f"measuring {', '.join(args.selected)}{' (shrunk)' if small else ''}; scratch: {ctx.work}")
    started = time.time()
    collected: list[Result] = []
    failed = False
    try:
        for ids, step in plan(args.selected):
            began = time.monotonic()
            load_before = os.getloadavg()[0]
            try:
                found = step(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one failed measurement must not lose the others
                failed = True
                ctx.say(f"{'/'.join(ids)} failed: {exc}")
                traceback.print_exc()
                found = [Result(key, MEASURES[key], error=f"{type(exc).__name__}: {exc}"[:2000])
                         for key in ids]
            for result in found:
                result.seconds = time.monotonic() - began
                result.taken_at = datetime.now(UTC).isoformat(timespec="seconds")
                # Other work on the machine moves every figure: say how busy it was.
                result.details["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            collected.extend(found)
            ctx.say(f"{'/'.join(ids)} done in {time.monotonic() - began:.0f} s")
    finally:
        if collected:
            collected.sort(key=lambda r: IDS.index(r.id))
            json_path, md_path, rows = report.save(collected, RESULTS_DIR, started, quick=small,
                                                   selected=args.selected, order=IDS)
            print()
            print(report.markdown(collected if small else rows, quick=small, info=report.machine()))
            also = f" and {md_path}" if md_path else " (shrunk: latest.md untouched)"
            ctx.say(f"saved {json_path}{also}")
            soak_outputs(collected, json_path, md_path is not None, ctx)
            if md_path:
                try:
                    changed = readme.update()
                    ctx.say(f"README.md's benchmark table {'rewritten' if changed else 'unchanged'}")
                except readme.ReadmeError as exc:
                    ctx.say(f"README.md not updated: {exc}")
        if args.keep or args.work is not None:
            ctx.say(f"kept the scratch folder {ctx.work}")
        else:
            shutil.rmtree(ctx.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
