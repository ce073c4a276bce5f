"""P8's pure part: the series a soak samples, their growth, the checks, the table and the chart.

A sample is one minute's reading of every series (``{"minute": 3, "t": 180.4, "files": 360, ...}``,
``t`` in seconds since the feed began, ``files`` the files fed by then). Every series states its
bound, which the samples after the cleanup are checked against:

* :class:`PerFile` — what only a retention bounds (logs, DAG runs, metadata, ledger rows, the file
  source's log): it may grow, by at most ``limit`` a file fed (the least-squares slope after the
  cleanup);
* :class:`Cap` — what the running system keeps bounded (batch folders between compactions): never
  above ``limit`` after the cleanup;
* :class:`Flat` — what must not drift (memory, read times): at the end at most ``ratio`` times what
  it was right after the cleanup (medians of up to three samples at each end, never overlapping).
  A read time that the load swings from one request to the next (the status API) is itself sampled
  as the median of a window of requests (:func:`typical_seconds`).

Everything here works on plain numbers, so the unit tests need no stack.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Check, Figure
from wordstream.settings import ENGINES

Sample = Mapping[str, float]


@dataclass(frozen=True)
class PerFile:
    limit: float

    def describe(self, unit: str) -> str:
        return f"<= {human(self.limit, unit)} a file"


@dataclass(frozen=True)
class Cap:
    limit: float

    def describe(self, unit: str) -> str:
        return f"<= {human(self.limit, unit)}"


@dataclass(frozen=True)
class Flat:
    ratio: float

    def describe(self, unit: str) -> str:
        return f"flat: end <= {self.ratio:g}x start"


Bound = PerFile | Cap | Flat


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    unit: str
    bound: Bound | None  # None: judged by a check of its own (the latency)
    panel: str  # the chart's subplot it is drawn in


def batch_folder_caps(compact_batches: int, dstream_remember_batches: int, slack: int = 30) -> dict[str, int]:
    """The most ``batch=`` folders each engine keeps: its driver folds every ``compact_batches``
    batches all that are final, which for DStream leaves the remember window's batches; ``slack``
    for the batches written while a compaction runs."""
    return {"structured": compact_batches + slack,
            "dstream": compact_batches + dstream_remember_batches + slack}


def series_specs(folder_caps: Mapping[str, int]) -> tuple[Series, ...]:
    """Every series of the soak, in table order; ``folder_caps`` is :func:`batch_folder_caps`'s."""
    shared = [
        Series("stream_log_bytes", "Airflow logs: the stream tasks'", "B", PerFile(4096),
               "Airflow logs (MB)"),
        Series("other_log_bytes", "Airflow logs: the rest (staging, DAG processor)", "B", PerFile(2048),
               "Airflow logs (MB)"),
        Series("log_files", "Airflow log files", "files", PerFile(0.1), "Airflow log files"),
        Series("dag_runs", "DAG runs (REST total_entries)", "runs", PerFile(0.05), "DAG runs"),
        Series("metadb_bytes", "metadata DB", "B", PerFile(4096), "metadata DB (MB)"),
        Series("ledger_rows", "ledger rows (files + deliveries)", "rows", PerFile(3.5), "ledger rows"),
        Series("scheduler_rss", "scheduler RSS", "B", Flat(1.25), "RSS (MB)"),
    ]
    per_engine = []
    for engine in ENGINES:
        per_engine += [
            Series(f"{engine}_batch_folders", f"{engine} batch= folders", "folders",
                   Cap(folder_caps[engine]), "output folders"),
            Series(f"{engine}_snapshot_folders", f"{engine} snapshot= folders", "folders", Cap(2),
                   "output folders"),
            Series(f"{engine}_watch_files", f"{engine} watch files", "files", PerFile(1.1), "watch files"),
            Series(f"{engine}_checkpoint_bytes", f"{engine} checkpoint", "B", PerFile(1024),
                   "checkpoint (MB)"),
            Series(f"{engine}_driver_rss", f"{engine} driver RSS (JVM + Python)", "B", Flat(1.25),
                   "RSS (MB)"),
            Series(f"{engine}_totals_seconds", f"`wordstream totals --engine {engine}`", "s", Flat(2.0),
                   "read time (s)"),
            Series(f"{engine}_status_seconds", f"status API /wordstream/api/{engine}", "s", Flat(2.0),
                   "read time (s)"),
            Series(f"{engine}_p50", f"{engine} landing -> counted p50", "s", None, "landing -> counted (s)"),
            Series(f"{engine}_p95", f"{engine} landing -> counted p95", "s", None, "landing -> counted (s)"),
        ]
    return (*shared, *per_engine)


def human(value: float, unit: str) -> str:
    """Sizes in B, KB or MB (binary), seconds with two decimals, counts whole or to three figures."""
    if math.isnan(value):
        return "-"
    if unit == "B":
        size = abs(value)
        if size >= 10 * 2**20:
            return f"{value / 2**20:.0f} MB"
        if size >= 2**20:
            return f"{value / 2**20:.1f} MB"
        if size >= 10 * 2**10:
            return f"{value / 2**10:.0f} KB"
        return f"{value:,.0f} B"
    if unit == "s":
        return f"{value:.2f} s"
    number = f"{value:,.0f}" if value == int(value) or abs(value) >= 100 else f"{value:.3g}"
    return f"{number} {unit}"


STATUS_READS = 5  # GETs of the status API a minute's reading is the median of
STATUS_READ_PAUSE = 2.0  # seconds between them: the window spans about ten seconds of load


def typical_seconds(timings: Sequence[float]) -> float:
    """The median of the timings that succeeded (a failed request is NaN); NaN when none did.

    One GET of the status API takes 0.1 s or 2 s depending on what the two busy drivers do at that
    moment; a single one a minute would compare one moment's load with another's, not the API's
    time at the start with its time at the end.
    """
    done = [t for t in timings if not math.isnan(t)]
    return statistics.median(done) if done else float("nan")


# -- growth ------------------------------------------------------------------------------------
def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs``; NaN with fewer than two distinct ``xs``."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    if len(points) < 2:
        return float("nan")
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return float("nan")
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def after(samples: Sequence[Sample], cleanup_end: float) -> list[Sample]:
    """The samples taken once the cleanup had finished."""
    return [s for s in samples if s["t"] >= cleanup_end]


def values(samples: Sequence[Sample], key: str) -> list[float]:
    return [float(s.get(key, float("nan"))) for s in samples]


def growth_per_hour(samples: Sequence[Sample], key: str, cleanup_end: float) -> float:
    later = after(samples, cleanup_end)
    return slope([s["t"] for s in later], values(later, key)) * 3600


def growth_per_file(samples: Sequence[Sample], key: str, cleanup_end: float) -> float:
    later = after(samples, cleanup_end)
    return slope([s["files"] for s in later], values(later, key))


def bound_check(series: Series, samples: Sequence[Sample], cleanup_end: float) -> Check:
    """Whether ``series`` kept its bound after the cleanup (None: not measurable, too few samples)."""
    bound = series.bound
    target = f"{series.label}: {bound.describe(series.unit) if bound else '-'}"
    later = [v for v in values(after(samples, cleanup_end), series.key) if not math.isnan(v)]
    if bound is None or len(later) < 2:
        return Check(target, None, "too few samples after the cleanup" if bound else "")
    if isinstance(bound, PerFile):
        per_file = growth_per_file(samples, series.key, cleanup_end)
        return Check(target, per_file <= bound.limit, f"{human(per_file, series.unit)} a file")
    if isinstance(bound, Cap):
        return Check(target, max(later) <= bound.limit, f"at most {human(max(later), series.unit)}")
    window = max(1, min(3, len(later) // 2))  # medians of up to three: one slow reading is no drift
    start, end = statistics.median(later[:window]), statistics.median(later[-window:])
    drift = end / start if start else float("inf")
    return Check(target, drift <= bound.ratio, f"{drift:.2f}x")


# -- the targets -------------------------------------------------------------------------------
def totals_time_check(samples: Sequence[Sample], cleanup_end: float, engine: str) -> Check:
    """`wordstream totals` after the cleanup (median) within 2x of its time at minute 1."""
    key = f"{engine}_totals_seconds"
    first = values(samples[:1], key)
    later = sorted(v for v in values(after(samples, cleanup_end), key) if not math.isnan(v))
    target = f"{engine}: `wordstream totals` after the cleanup <= 2x minute 1"
    if not first or math.isnan(first[0]) or not later:
        return Check(target, None, "not measured")
    median = later[len(later) // 2]
    return Check(target, median <= 2 * first[0],
                 f"{median:.2f} s (median, max {later[-1]:.2f} s) vs {first[0]:.2f} s")


def latency_check(first: Figure, last: Figure, engine: str, window_minutes: float) -> Check:
    """Landing -> counted p95 of the last window within 1.2x of the first window's."""
    window = f"{window_minutes:g} min"
    target = f"{engine}: landing -> counted p95, last {window} <= 1.2x first {window}"
    if not first.values or not last.values:
        return Check(target, None, "no probes in a window")
    p_first, p_last = first.percentile(95), last.percentile(95)
    return Check(target, p_last <= 1.2 * p_first, f"{p_last:.1f} s vs {p_first:.1f} s")


def interval_percentiles(sent_and_latency: Sequence[tuple[float, float]], minutes: int
                         ) -> list[tuple[float, float]]:
    """(p50, p95) of the probes sent in each minute (``sent`` in seconds since the feed began)."""
    found = []
    for minute in range(1, minutes + 1):
        inside = Figure("", "s", tuple(lat for sent, lat in sent_and_latency
                                       if minute - 1 <= sent / 60 < minute))
        found.append((inside.percentile(50), inside.percentile(95)))
    return found


# -- the table ---------------------------------------------------------------------------------
def _at(samples: Sequence[Sample], series: Series, index: int) -> str:
    return "-" if not samples else human(values([samples[index]], series.key)[0], series.unit)


def table(specs: Sequence[Series], samples: Sequence[Sample], cleanup_end: float) -> str:
    """One row per series: its values at minute 1, around the cleanup and at the end, its growth
    per hour and per file after the cleanup, its bound and whether it held."""
    before = [s for s in samples if s["t"] < cleanup_end]
    later = after(samples, cleanup_end)
    lines = ["| series | minute 1 | before cleanup | after cleanup | end | growth / h after cleanup "
             "| per file | bound: met? |",
             "|---|---|---|---|---|---|---|---|"]
    for series in specs:
        check = bound_check(series, samples, cleanup_end)
        mark = {True: "yes", False: "**no**", None: "n/a"}[check.met]
        bound = f"{series.bound.describe(series.unit)}: {mark}" if series.bound else "see the p95 check"
        per_hour = growth_per_hour(samples, series.key, cleanup_end)
        per_file = growth_per_file(samples, series.key, cleanup_end)
        lines.append(
            f"| {series.label} | {_at(samples, series, 0)} | {_at(before, series, -1)} "
            f"| {_at(later, series, 0)} | {_at(samples, series, -1)} "
            f"| {_signed(per_hour, series.unit)} | {_signed(per_file, series.unit)} | {bound} |")
    return "\n".join(lines)


def _signed(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    return ("+" if value >= 0 else "-") + human(abs(value), unit)


def block(details: Mapping[str, Any], checks: Sequence[Check], chart: str | None) -> str:
    """README's soak block from P8's row (its ``details`` and checks): the run, checks, table, chart."""
    specs = series_specs(details["batch_folder_caps"])
    samples = details["samples"]
    marks = "; ".join(f"{c.target}: **{'yes' if c.met else ('no' if c.met is False else 'n/a')}**"
                      + (f" ({c.detail})" if c.detail else "")
                      for c in checks if not c.target.startswith(tuple(s.label + ":" for s in specs)))
    parts = [
        f"Taken {details['taken_at'][:16].replace('T', ' ')} UTC: {details['minutes']} minutes of the real "
        f"stack (both engines, the staging DAG) fed {details['rate']:g} files/s of about "
        f"{details['words_per_file']:,} words, {details['files']:,} files; one cleanup (`wordstream "
        f"cleanup`, {details['cleanup_seconds']:.1f} s) at minute {details['cleanup_minute']}. "
        f"Checks: {marks}.",
        "",
        table(specs, samples, float(details["cleanup_end"])),
    ]
    if chart:
        parts += ["", f"![P8 soak: every series by minute]({chart})"]
    return "\n".join(parts) + "\n"


# -- the chart ---------------------------------------------------------------------------------
SCALE = {"B": 1 / 2**20}
LATEST_CHART = "P8-latest.png"  # beside latest.json, from the run whose P8 row latest.json holds


def draw(details: Mapping[str, Any], path: Path) -> Path:
    """The chart of P8's row (its ``details``) as a PNG at ``path``."""
    title = (f"P8 soak, {details['taken_at'][:16].replace('T', ' ')} UTC: {details['minutes']} min at "
             f"{details['rate']:g} files/s")
    return chart(series_specs(details["batch_folder_caps"]), details["samples"],
                 float(details["cleanup_end"]), path, title)


def chart(specs: Sequence[Series], samples: Sequence[Sample], cleanup_end: float, path: Path,
          title: str) -> Path:
    """Every series by minute, one subplot per panel, the cleanup marked; a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[Series]] = {}
    for series in specs:
        panels.setdefault(series.panel, []).append(series)
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(15, 3.2 * rows), squeeze=False)
    minutes = [s["t"] / 60 for s in samples]
    for ax, (panel, members) in zip(axes.flat, panels.items(), strict=False):
        for series in members:
            scale = SCALE.get(series.unit, 1.0)
            ax.plot(minutes, [v * scale for v in values(samples, series.key)], marker=".", label=series.label)
        ax.axvline(cleanup_end / 60, color="grey", linestyle="--", linewidth=1)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("minute", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(f"{title} (dashed: the cleanup)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
