"""P8's pure part: growth per hour after the cleanup, the bounds and targets, the JSON and the rendering."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from bench import readme, soak, soak_series
from bench.common import Check, Figure, Result
from bench.soak_series import Cap, Flat, PerFile, Series, bound_check

CLEANUP_END = 190.0  # seconds since the feed began


def samples(series: Mapping[str, Callable[[int, int], float]], minutes: int = 6) -> list[dict[str, float]]:
    """One sample a minute at 2 files/s; each series is a function of (minute, files) -> value."""
    found = []
    for minute in range(1, minutes + 1):
        files = 120 * minute
        row: dict[str, float] = {"minute": minute, "t": 60.0 * minute, "files": files}
        row.update({key: float(value(minute, files)) for key, value in series.items()})
        found.append(row)
    return found


def test_growth_is_taken_after_the_cleanup_only() -> None:
    # 3 rows a file until the cleanup, which removes half; then 3 rows a file again.
    rows = samples({"ledger_rows": lambda minute, files: 3 * files if minute <= 3 else 3 * files - 500})
    assert soak_series.growth_per_file(rows, "ledger_rows", CLEANUP_END) == pytest.approx(3.0)
    assert soak_series.growth_per_hour(rows, "ledger_rows", CLEANUP_END) == pytest.approx(3 * 2 * 3600)
    assert soak_series.growth_per_hour(rows, "ledger_rows", 0.0) != pytest.approx(3 * 2 * 3600)


def test_a_slope_needs_two_distinct_points() -> None:
    assert math.isnan(soak_series.slope([1.0], [2.0]))
    assert math.isnan(soak_series.slope([1.0, 1.0], [2.0, 3.0]))
    assert math.isnan(soak_series.slope([1.0, 2.0], [2.0, float("nan")]))
    assert soak_series.slope([0.0, 1.0, 2.0], [5.0, 5.0, 5.0]) == 0.0


def test_per_file_bound() -> None:
    series = Series("ledger_rows", "ledger rows", "rows", PerFile(3.5), "ledger rows")
    kept = bound_check(series, samples({"ledger_rows": lambda _m, files: 3 * files}), CLEANUP_END)
    assert kept.met is True and kept.detail == "3 rows a file"
    broken = bound_check(series, samples({"ledger_rows": lambda _m, files: 4 * files}), CLEANUP_END)
    assert broken.met is False and broken.detail == "4 rows a file"


def test_dstream_keeps_its_remember_window_beside_the_compaction_interval() -> None:
    assert soak_series.batch_folder_caps(100, 60) == {"structured": 130, "dstream": 190}


def test_cap_bound_counts_only_what_follows_the_cleanup() -> None:
    series = Series("structured_batch_folders", "batch folders", "folders", Cap(130), "output folders")
    rows = samples({"structured_batch_folders": lambda minute, _f: 400 if minute <= 3 else 20 * minute})
    assert bound_check(series, rows, CLEANUP_END).met is True
    rows[-1]["structured_batch_folders"] = 131
    check = bound_check(series, rows, CLEANUP_END)
    assert check.met is False and check.detail == "at most 131 folders"


def test_flat_bound_and_too_few_samples() -> None:
    series = Series("scheduler_rss", "scheduler RSS", "B", Flat(1.25), "RSS (MB)")
    flat = samples({"scheduler_rss": lambda minute, _f: 300e6 + minute * 1e6})
    assert bound_check(series, flat, CLEANUP_END).met is True
    growing = samples({"scheduler_rss": lambda minute, _f: 100e6 * minute})
    assert bound_check(series, growing, CLEANUP_END).met is False  # 6/4 = 1.5x
    assert bound_check(series, growing[:4], CLEANUP_END).met is None  # one sample after the cleanup
    reads = Series("dstream_totals_seconds", "totals", "s", Flat(2.0), "read time (s)")
    noisy = samples({"dstream_totals_seconds": lambda minute, _f: 3.0 if minute == 5 else 1.0}, minutes=9)
    assert bound_check(reads, noisy, CLEANUP_END).met is True  # one slow reading is no drift


def test_a_status_reading_is_the_median_of_its_window_of_requests() -> None:
    assert soak_series.typical_seconds([0.3, 2.1, 0.2, 0.4, 0.1]) == 0.3  # one GET during a busy batch
    assert soak_series.typical_seconds([float("nan"), 0.2, 0.4]) == pytest.approx(0.3)  # a failed GET
    assert math.isnan(soak_series.typical_seconds([float("nan")] * 3))  # a gap in the series
    # The last soak's structured readings, one GET a minute: 0.11 s after the cleanup, 0.77 s at the
    # end, failed the 2x bound on load alone. A window of five per minute, one of them slow at
    # either end, keeps to the API's own time.
    status = Series("structured_status_seconds", "status API", "s", Flat(2.0), "read time (s)")
    windows = {minute: [0.1, 0.15, 0.2, 0.25, 2.0 if minute in (4, 6) else 0.3] for minute in range(1, 7)}
    rows = samples({status.key: lambda minute, _f: soak_series.typical_seconds(windows[minute])})
    assert bound_check(status, rows, CLEANUP_END).met is True
    drifting = samples({status.key: lambda minute, _f: soak_series.typical_seconds(
        [t * (3 if minute >= 5 else 1) for t in windows[minute]])})
    assert bound_check(status, drifting, CLEANUP_END).met is False  # the API itself got 3x slower


def test_totals_time_target() -> None:
    rows = samples({"structured_totals_seconds": lambda minute, _f: 0.5 if minute == 1 else 0.9})
    check = soak_series.totals_time_check(rows, CLEANUP_END, "structured")
    assert check.met is True and check.detail.startswith("0.90 s (median")
    rows[-1]["structured_totals_seconds"] = rows[-2]["structured_totals_seconds"] = 1.1
    assert soak_series.totals_time_check(rows, CLEANUP_END, "structured").met is False
    assert soak_series.totals_time_check(rows, CLEANUP_END, "dstream").met is None


def test_latency_target_and_intervals() -> None:
    first = Figure("first", "s", (1.0,) * 18 + (2.0, 2.0))  # nearest-rank p95 of 20: the 19th
    assert soak_series.latency_check(first, Figure("last", "s", (2.3,)), "structured", 5).met is True
    assert soak_series.latency_check(first, Figure("last", "s", (2.5,)), "structured", 5).met is False
    assert soak_series.latency_check(first, Figure("last", "s", ()), "structured", 5).met is None
    pairs = [(10.0, 1.0), (20.0, 3.0), (70.0, 2.0)]
    p = soak_series.interval_percentiles(pairs, 3)
    assert p[0] == (1.0, 3.0) and p[1] == (2.0, 2.0) and all(math.isnan(v) for v in p[2])


def soak_result() -> Result:
    """A complete P8 row as :func:`bench.soak.result_of` makes it from a run's measurements."""
    run = soak.Soak(minutes=6, cleanup_minute=3, cleanup_start=181.0, cleanup_end=CLEANUP_END,
                    cleanup_seconds=9.0, cleanup_line="removed 0 rotated epochs", files=720)
    caps = soak_series.batch_folder_caps(100, 60)
    specs = soak_series.series_specs(caps)
    run.samples = samples({s.key: (lambda minute, files: 10.0 + files) for s in specs})
    run.latencies = {engine: [(t, 1.0 + (t % 7) / 10) for t in range(0, 360, 3)]
                     for engine in ("structured", "dstream")}
    run.totals = {"structured": "exact", "dstream": "3 words differ (of 50000)"}
    return soak.result_of(run, caps)


def test_the_row_checks_the_targets() -> None:
    result = soak_result()
    met = {check.target: check.met for check in result.checks}
    assert met["structured totals exact at the end"] is True
    assert met["dstream totals exact at the end"] is False
    assert met["every series bounded"] is False  # folders growing 1 a file break their cap
    assert met["structured: landing -> counted p95, last 2 min <= 1.2x first 2 min"] is True
    assert result.details["growth_per_hour"]["ledger_rows"] == pytest.approx(2 * 3600)


def test_the_row_survives_the_json_and_renders_the_readme_block(tmp_path: Path) -> None:
    result = soak_result()
    saved = json.loads(json.dumps({"results": [result.as_dict()]}, default=str))
    back = Result.from_dict(saved["results"][0])
    text = readme.soak_block(saved)
    assert text == soak_series.block(back.details, back.checks, "bench/results/P8-latest.png")
    assert "| ledger rows (files + deliveries) | 130 rows | 370 rows | 490 rows | 730 rows | +7,200 rows " \
           "| +1 rows | <= 3.5 rows a file: yes |" in text
    assert "dstream totals exact at the end: **no** (3 words differ (of 50000))" in text
    assert "![P8 soak" in text
    page = f"{readme.BEGIN}\nold\n{readme.END}\n{readme.SOAK_BEGIN}\nold soak\n{readme.SOAK_END}\n"
    new = readme.generated(page, {**saved, "machine": _machine()})
    assert readme.current(new, (readme.SOAK_BEGIN, readme.SOAK_END)) == text
    assert readme.generated(new, {**saved, "machine": _machine()}) == new


def test_without_a_soak_the_block_says_so() -> None:
    assert readme.soak_block({"results": []}).startswith("No soak saved yet")
    failed = Result("P8", "soak", error="TimeoutError: no stack").as_dict()
    assert readme.soak_block({"results": [failed]}).startswith("No soak saved yet")


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    path = soak_series.draw(soak_result().details, tmp_path / "soak.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checks_are_plain_checks() -> None:
    assert all(isinstance(check, Check) for check in soak_result().checks)


def _machine() -> dict[str, Any]:
    return {"cpus": 2, "memory_gb": 23.5, "python": "3.11", "pyspark": "4.2.0", "airflow": "3.3.2",
            "master": "local[2]", "spark_conf": {}, "knobs": {}}


def test_the_soak_is_selectable_alone_and_a_short_one_is_shrunk() -> None:
    from bench import __main__ as bench_main

    short = bench_main.parse_args(["--only", "P8", "--minutes", "6"])
    assert [ids for ids, _step in bench_main.plan(short.selected)] == [["P8"]]
    assert bench_main.shrunk(short)  # like --quick: latest.* and README stay as they are
    assert not bench_main.shrunk(bench_main.parse_args(["--only", "P8"]))
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--only", "P8", "--minutes", "2"])


def test_the_logs_folder_is_split_into_the_stream_tasks_and_the_rest(tmp_path: Path) -> None:
    stream = tmp_path / "dag_id=stream_dstream" / "run_id=r1" / "task_id=run_stream"
    staging = tmp_path / "dag_id=stage_incoming_files" / "run_id=r2" / "task_id=stage_files"
    processor = tmp_path / "dag_processor" / "2026-12-01"
    for folder, size in ((stream, 700), (staging, 50), (processor, 9)):
        folder.mkdir(parents=True)
        (folder / "attempt=1.log").write_bytes(b"x" * size)
    (tmp_path / "latest").symlink_to(processor)
    assert soak.log_stats(tmp_path) == (700, 59, 3)
