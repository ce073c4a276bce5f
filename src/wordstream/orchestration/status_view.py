"""What the stream status page shows, as one JSON-ready dict per engine (no Airflow, no web code).

:func:`stream_view` gathers everything an operator wants to see about one engine: its state (from the
stop/status protocol), the last batches with their rates, the lag (files staged into its watch folder
and not processed yet), the ledger's counts with the latest quarantine reasons, and the top words from
the persisted results. It creates nothing: no folder, no status file and no ledger database, so
looking at a fresh installation leaves it fresh (an existing ledger may get its schema brought up to
date, once per process). :mod:`wordstream.orchestration.status_app`
serves it.

The lag counts what the engine's own commit record says it has not processed: the ledger is
reconciled with that record (:mod:`wordstream.engines.commits`) whenever the record has changed
since the last look, so a driver killed between a commit and its ledger marks shows no false lag.
``wordstream status`` shows the same lag (:func:`engine_lag`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wordstream import control, results
from wordstream.engines import commits
from wordstream.engines.spark_probes import CheckpointError
from wordstream.ledger import DELIVERY_STATES, FILE_STATUSES, Ledger
from wordstream.settings import ENGINES, Engine, Settings, check_engine, stream_dag_id

TOP_WORDS = 20
QUARANTINE_SHOWN = 5
REFRESH_SECONDS = 3


def stream_view(settings: Settings, engine: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything the status page of ``engine`` shows, JSON-ready.

    ``now`` is injectable so ages (lag, "since") are testable. Missing pieces (no status file, no
    ledger, no results yet) are reported in ``notes`` instead of raising: the page must work on a
    machine where nothing ever ran.
    """
    name = check_engine(engine)
    now = now or datetime.now(UTC)
    notes: list[str] = []
    status = _status(settings, name, notes)
    _reconcile(settings, name, notes)
    ledger = _ledger_view(settings, name, notes)
    return {
        "engine": name,
        "engines": list(ENGINES),
        "generated_at": now.isoformat(timespec="milliseconds"),
        "refresh_seconds": REFRESH_SECONDS,
        "status": status,
        "recent_batches": _recent_batches(status),
        "lag": _lag(settings, name, ledger.pop("unprocessed"), now),
        "ledger": ledger,
        "results": _results_view(settings, name, notes),
        "notes": notes,
    }


STATUS_FIELDS = (
    "state", "lock_held", "pid", "reason", "keys", "knobs", "started_at", "stopped_at", "updated_at",
    "batch_id", "batch_time", "input_rows", "input_rows_per_second", "processed_rows_per_second",
    "batch_duration_ms", "files_in_batch", "files_processed",
)


def _status(settings: Settings, engine: Engine, notes: list[str]) -> dict[str, Any]:
    """The protocol's status (lock-corrected), reduced to the fields the page shows, plus ``since``."""
    try:
        raw = control.read_status(settings.state, engine)
    except (OSError, ValueError) as error:  # unreadable file: say so, keep the rest of the page
        raw = {"state": "unknown", "reason": f"status file unreadable: {error}", "lock_held": False}
        notes.append(f"The status file of {engine} could not be read.")
    status = {field: raw.get(field) for field in STATUS_FIELDS}
    status["recent_batches"] = list(raw.get("recent_batches") or [])
    state = status["state"]
    if state == "never started":
        notes.append(f"No {engine} stream has run yet: start it with the {stream_dag_id(engine)} DAG.")
        status["since"] = None
    elif state in control.LIVE_STATES:
        status["since"] = status["started_at"]
    else:  # stopped / failed: since it ended (a killed driver wrote no stopped_at)
        status["since"] = status["stopped_at"] or status["updated_at"]
    if state in control.LIVE_STATES and status["batch_id"] is None:
        notes.append(f"The {engine} stream is {state} and has not finished a batch yet.")
    return status


RECENT_FIELDS = ("batch_id", "time", "input_rows", "input_rows_per_second", "processed_rows_per_second",
                 "batch_duration_ms")


def _recent_batches(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The driver's last batches, oldest first; a status from before that list holds the last one."""
    recent = status.pop("recent_batches")
    if not recent and status.get("batch_id") is not None:
        recent = [{**status, "time": status.get("batch_time")}]
    return [{field: batch.get(field) for field in RECENT_FIELDS}
            for batch in recent if isinstance(batch, dict)]


def _ledger_view(settings: Settings, engine: Engine, notes: list[str]) -> dict[str, Any]:
    files = {status: 0 for status in FILE_STATUSES}
    deliveries = {state: 0 for state in DELIVERY_STATES}
    view: dict[str, Any] = {"exists": False, "files": files, "total_files": 0, "deliveries": deliveries,
                            "latest_quarantine": [], "unprocessed": [], "epoch": None}
    if not settings.ledger.exists():  # never create the database just by looking
        notes.append("No file has been staged yet (the ledger is empty).")
        return view
    try:
        ledger = _open_ledger(settings.ledger)
        summary = ledger.summary()
        quarantine = ledger.latest_quarantine(QUARANTINE_SHOWN)
        unprocessed = ledger.unprocessed(engine)
        epoch = ledger.current_epoch(engine)
    except sqlite3.Error as error:
        _LEDGERS.pop(settings.ledger, None)
        notes.append(f"The ledger could not be read: {error}.")
        return view
    files.update(summary["files"])
    deliveries.update(summary["deliveries"].get(engine, {}))
    view.update(
        exists=True, total_files=summary["total_files"], unprocessed=unprocessed, epoch=epoch,
        latest_quarantine=[{"name": row["name"], "reason": row["reason"], "at": row["updated_at"]}
                           for row in quarantine],
    )
    return view


# One Ledger per database: a Ledger creates its schema on first use (a short write transaction),
# which a page refreshing every few seconds should not repeat.
_LEDGERS: dict[Path, Ledger] = {}


def _open_ledger(path: Path) -> Ledger:
    ledger = _LEDGERS.get(path)
    if ledger is None:
        ledger = _LEDGERS[path] = Ledger(path)
    return ledger


def engine_lag(settings: Settings, engine: str, now: datetime | None = None) -> dict[str, Any]:
    """The lag of ``engine`` alone (``wordstream status``), the ledger reconciled first.

    ``notes`` says what could not be read.
    """
    name = check_engine(engine)
    notes: list[str] = []
    _reconcile(settings, name, notes)
    unprocessed = _ledger_view(settings, name, notes)["unprocessed"]
    return {**_lag(settings, name, unprocessed, now or datetime.now(UTC)), "notes": notes}


# The signature of each engine's commit record when the ledger was last reconciled with it: the
# page refreshes every few seconds, the record changes at most once per batch.
_RECONCILED: dict[tuple[Path, Engine], tuple[object, ...]] = {}


def _reconcile(settings: Settings, engine: Engine, notes: list[str]) -> None:
    """Reconcile the ledger with the engine's commit record, if the record changed since last time."""
    if not settings.ledger.exists():  # never create the database just by looking
        return
    checkpoint, output = settings.checkpoint(engine), settings.output(engine)
    key = (settings.data_dir, engine)
    try:
        signature = commits.record_signature(engine, checkpoint, output)  # before the record is read
        if _RECONCILED.get(key) == signature:
            return
        commits.reconcile(_open_ledger(settings.ledger), engine, checkpoint, output, settings.watch(engine))
    except (CheckpointError, OSError, ValueError, sqlite3.Error) as error:
        notes.append(f"The ledger could not be reconciled with the {engine} checkpoint: {error}.")
        return
    _RECONCILED[key] = signature


def _lag(settings: Settings, engine: Engine, unprocessed: list[str], now: datetime) -> dict[str, Any]:
    """Files waiting for ``engine``: the ledger names them, their mtime in the watch folder dates them.

    Staging sets a published file's mtime to the moment it appeared, so the oldest mtime is how long
    the engine has kept someone waiting. A name without a file (still being copied, or removed by
    hand) is counted but cannot be dated.
    """
    watch = settings.watch(engine)
    oldest_name: str | None = None
    oldest_mtime: float | None = None
    for name in unprocessed:
        try:
            mtime = (watch / name).stat().st_mtime
        except OSError:
            continue
        if oldest_mtime is None or mtime < oldest_mtime:
            oldest_name, oldest_mtime = name, mtime
    age = None if oldest_mtime is None else max(0.0, round(now.timestamp() - oldest_mtime, 1))
    oldest_at = None if oldest_mtime is None else (
        datetime.fromtimestamp(oldest_mtime, UTC).isoformat(timespec="milliseconds"))
    return {"files": len(unprocessed), "oldest_name": oldest_name, "oldest_at": oldest_at,
            "oldest_age_seconds": age}


def _results_view(settings: Settings, engine: Engine, notes: list[str]) -> dict[str, Any]:
    semantics = results.SEMANTICS[engine]
    output = settings.output(engine)
    totals, batches = _cached_totals(output, semantics)
    if not batches:
        notes.append(f"No results yet in {output}.")
    return {
        "semantics": semantics,
        "batches": batches,
        "distinct_words": len(totals),
        "total_count": sum(totals.values()),
        "top_words": [[word, count] for word, count in results.ranked(totals, TOP_WORDS)],
    }


# Totals of one output folder, recomputed only when what a reader reads changes (the snapshot and the
# batch folders after it): re-reading them on every refresh would cost more than the stream.
_TOTALS: dict[Path, tuple[tuple[tuple[str, int], ...], dict[str, int]]] = {}
_TOTALS_LOCK = threading.Lock()


def _cached_totals(output: Path, semantics: results.Semantics) -> tuple[dict[str, int], int]:
    listing = results.list_results(output)
    folders = [*([listing.snapshot] if listing.snapshot else []), *listing.batches]
    signature = tuple((folder.name, _mtime_ns(folder)) for folder in folders)
    try:
        batches = listing.batch_count()
    except (OSError, ValueError):  # the snapshot was replaced under us: next refresh
        batches = len(listing.batches)
    with _TOTALS_LOCK:
        cached = _TOTALS.get(output)
        if cached is not None and cached[0] == signature:
            return cached[1], batches
    try:
        totals = results.read_totals(output, semantics)
    except (OSError, ValueError):  # a folder replaced under us (a replayed batch): next refresh
        return (cached[1] if cached else {}), batches
    with _TOTALS_LOCK:
        _TOTALS[output] = (signature, totals)
    return totals, batches


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


