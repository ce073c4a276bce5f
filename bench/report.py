"""The results of a run as JSON (everything) and as the Markdown table README shows."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.common import MASTER, Figure, Result, bench_settings, knobs
from wordstream import class_archive


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, memory, versions, and how busy the machine was."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
        "pyspark": version("pyspark"), "airflow": version("apache-airflow-core"),
        "platform": platform.platform(), "master": MASTER,
        "spark_conf": bench_settings(Path("/nonexistent")).spark_conf(),
        "class_archive": "in use" if class_archive.driver_options() else "not used",
        "knobs": knobs(),
    }


def fmt(value: float, unit: str) -> str:
    """Human figures: words/s in millions, seconds with two decimals, sizes in MB."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "words/s":
        return f"{value / 1e6:.2f} M words/s"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "files/s":
        return f"{value:,.0f} files/s"
    return f"{value:,.2f} {unit}"


def summary(figure: Figure) -> str:
    """``median (min-max, n=N)``; a single observation is shown alone."""
    if figure.n == 0:
        return "-"
    if figure.n == 1:
        return f"{fmt(figure.median, figure.unit)} (n=1)"
    return (f"{fmt(figure.median, figure.unit)} "
            f"({fmt(figure.low, figure.unit)}-{fmt(figure.high, figure.unit)}, n={figure.n})")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _met(result: Result) -> str:
    if result.error:
        return "error"
    marks = []
    for check in result.checks:
        mark = "yes" if check.met else ("no" if check.met is False else "n/a")
        marks.append(f"{check.target}: **{mark}**" + (f" ({check.detail})" if check.detail else ""))
    return "<br>".join(marks) or "-"


def table(results: Sequence[Result]) -> str:
    lines = [
        "| id | measure | result: median (min-max, n) | baseline(s), same run | ratio | target: met? |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.error:
            why = _cell(result.error[:200])
            lines.append(f"| {result.id} | {_cell(result.measure)} | not measured: {why} | - | - | error |")
            continue
        headline = result.details.get("headline") or (
            f"{result.figure.name}: {summary(result.figure)}" if result.figure else "-")
        baselines = result.details.get("baseline_headline") or (
            "<br>".join(f"{b.name}: {summary(b)}" for b in result.baselines) or "-")
        ratios = "<br>".join(f"{name}: {value:.2f}x" for name, value in result.ratios.items()) or "-"
        lines.append(f"| {result.id} | {_cell(result.measure)} | {_cell(headline)} | {_cell(baselines)} "
                     f"| {_cell(ratios)} | {_cell(_met(result))} |")
    return "\n".join(lines)


def taken(results: Sequence[Result], info: Mapping[str, Any]) -> str:
    """When, where and with what the figures were taken: the paragraph above the table."""
    moments = sorted(r.taken_at[:16].replace("T", " ") for r in results if r.taken_at)
    when = f"{moments[0]} - {moments[-1]} UTC" if moments and moments[0] != moments[-1] else (
        f"{moments[0]} UTC" if moments else "?")
    conf = ", ".join(f"`{key}={value.rsplit('.', 1)[-1]}`" for key, value in info["spark_conf"].items())
    knob_text = ", ".join(f"`{k}={v}`" for k, v in info["knobs"].items()) or "none (defaults)"
    archive = f" driver class archive (AppCDS) {info['class_archive']};" if "class_archive" in info else ""
    return (f"Taken {when} with `make bench` on {info['cpus']} cores, {info['memory_gb']} GB, Python "
            f"{info['python']}, PySpark {info['pyspark']}, Airflow {info['airflow']}; Spark master "
            f"`{info['master']}`, {conf};{archive} knobs set: {knob_text}. Each ratio compares medians "
            "taken side by side in the same run (the machine's load drifts between runs; other jobs "
            "shared the cores).")


def markdown(results: Sequence[Result], quick: bool, info: Mapping[str, Any]) -> str:
    """``latest.md``: the paragraph, the table, and every figure's details; ``info`` is :func:`machine`'s."""
    parts = [
        f"# wordstream benchmarks{' (quick run: shrunk sizes, not the real figures)' if quick else ''}",
        "",
        taken(results, info),
        "",
        table(results),
        "",
        "## Details",
    ]
    for result in results:
        parts.append("")
        took = f", {result.seconds:.0f} s" if result.seconds else ""
        load = result.details.get("load_average")
        if load:
            took += f", load average {load[0]} at the start, {load[1]} at the end"
        parts.append(f"**{result.id} — {result.measure}** ({result.taken_at[:16].replace('T', ' ')}{took})")
        parts.append("")
        for figure in [result.figure, *result.baselines, *result.extra]:
            if figure is not None:
                q1, q3 = figure.quartiles()
                iqr = f", IQR {fmt(q1, figure.unit)}-{fmt(q3, figure.unit)}" if figure.n >= 4 else ""
                parts.append(f"- {figure.name}: {summary(figure)}{iqr}")
        for note in result.notes:
            parts.append(f"- {note}")
        if result.error:
            parts.append(f"- error: {result.error}")
    return "\n".join(parts) + "\n"


def save(results: Sequence[Result], folder: Path, started: float, quick: bool,
         selected: Sequence[str], order: Sequence[str]) -> tuple[Path, Path | None, list[Result]]:
    """Write ``<timestamp>.json`` (this run, every observation; git-ignored).

    A full-size run is also merged into ``latest.json`` (git-ignored) by measurement id, and the
    merged rows become ``latest.md`` (committed): ``--only P3`` refreshes one row and keeps the
    others. Quick runs never touch ``latest.*``: their shrunk sizes are not figures to quote.
    Returns the paths and the rows of the table.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    payload = {"started_at": datetime.fromtimestamp(started, UTC).isoformat(), "quick": quick,
               "selected": list(selected), "machine": info,
               "results": [r.as_dict() for r in results]}
    json_path = folder / f"{stamp}{'-quick' if quick else ''}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if quick:
        return json_path, None, list(results)
    merged: dict[str, Result] = {}
    latest_json = folder / "latest.json"
    if latest_json.exists():
        try:
            for row in json.loads(latest_json.read_text()).get("results", []):
                merged[row["id"]] = Result.from_dict(row)
        except (OSError, ValueError, KeyError):
            merged = {}
    merged.update({r.id: r for r in results})
    rows = sorted(merged.values(), key=lambda r: order.index(r.id) if r.id in order else len(order))
    latest_json.write_text(json.dumps({**payload, "results": [r.as_dict() for r in rows]},
                                      indent=2, default=str) + "\n")
    md_path = folder / "latest.md"
    md_path.write_text(markdown(rows, quick=False, info=info))
    return json_path, md_path, rows
