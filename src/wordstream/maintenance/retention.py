"""Cleanup: the retention of everything the workflow writes, and a report of what is left.

**Cleanup** (:func:`cleanup`, hourly from ``streaming_maintenance``, or ``wordstream cleanup``) bounds
what a running workflow keeps adding to, each item past ``WORDSTREAM_RETENTION_DAYS`` unless said
otherwise:

* rotated epochs (by the folder's mtime, set at rotation);
* hidden ``.*.tmp`` files in watch folders older than an hour (a dead staging run's copies);
* watch files processed by their engine and older than max(1 h, 2 x the DStream remember window):
  counted already (the ledger marks a file processed only after its batch committed), originals
  archived, and too old for a restarted DStream to list. Also while the engine runs: a file source
  lists its whole folder every batch, so a folder that only grows slows every batch down;
* archive day folders and quarantined files;
* the ledger's finished history (:meth:`wordstream.ledger.Ledger.expire`: content first seen within
  the retention is still a duplicate);
* the Airflow metadata and task logs of the project's DAGs, and the DAG processor's logs
  (:mod:`wordstream.maintenance.airflow_history`), when the caller names its Airflow.

It also compacts each engine's output (:func:`wordstream.results.compact`, the batches a running
engine will never write again), which its driver does every ``WORDSTREAM_COMPACT_BATCHES`` batches
anyway: here it folds what a stopped driver left.

It never touches the checkpoint, stale temp files or rotated epochs of an engine whose lock is held.
``now`` (epoch seconds) is for tests.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wordstream import Progress, control, results
from wordstream.engines import epoch
from wordstream.engines.spark_probes import FILE_SOURCE_LOG
from wordstream.ledger import Ledger
from wordstream.maintenance.airflow_history import AirflowReport, AirflowSite, expire_airflow
from wordstream.maintenance.folders import age, day_of, human_bytes, remove, sorted_entries, tree_bytes
from wordstream.maintenance.reset import epoch_engine
from wordstream.settings import DAG_IDS, ENGINES, Engine, Settings
from wordstream.staging import is_temp_name

STALE_TEMP_SECONDS = 3600
MIN_WATCH_AGE_SECONDS = 3600
DAY_SECONDS = 86400

SIZE_PARTS = ("checkpoint", "output", "watch", "rotated")


@dataclass
class CleanupReport:
    rotated_removed: int = 0
    temp_removed: int = 0
    watch_removed: int = 0
    archive_removed: int = 0  # day folders
    quarantine_removed: int = 0
    ledger_removed: dict[str, int] = field(default_factory=dict)  # contents, deliveries, files
    compacted: dict[str, int] = field(default_factory=dict)  # engine -> batch folders folded
    skipped_engines: list[str] = field(default_factory=list)  # running: their checkpoint, temps, epochs kept
    airflow: AirflowReport | None = None  # None: no Airflow named (a shell without AIRFLOW_HOME)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # engine -> part -> bytes
    left: dict[str, dict[str, int]] = field(default_factory=dict)  # engine -> what is left, counted
    shared_sizes: dict[str, int] = field(default_factory=dict)  # archive, quarantine, ledger -> bytes
    ledger_left: dict[str, int] = field(default_factory=dict)  # files, deliveries -> rows
    seconds: float = 0.0

    def line(self) -> str:
        skipped = f"; skipped running {', '.join(self.skipped_engines)}" if self.skipped_engines else ""
        ledger = self.ledger_removed
        compacted = ", ".join(f"{engine} {folders}" for engine, folders in self.compacted.items())
        return (
            f"removed {self.rotated_removed} rotated epochs, {self.temp_removed} stale temp files, "
            f"{self.watch_removed} processed watch files, {self.archive_removed} archive days, "
            f"{self.quarantine_removed} quarantined files; ledger: {ledger.get('files', 0)} file rows, "
            f"{ledger.get('deliveries', 0)} deliveries ({ledger.get('contents', 0)} contents no longer "
            f"duplicates); compacted batch folders: {compacted or 'none'}{skipped}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the DAG returns it as its XCom)."""
        return asdict(self)


def cleanup(settings: Settings, now: float | None = None, progress: Progress = print,
            airflow: AirflowSite | None = None) -> CleanupReport:
    """Expire what is past retention (see the module docstring) and report what is left."""
    started = time.monotonic()
    now = time.time() if now is None else now
    retention = settings.retention_days * DAY_SECONDS
    cutoff = datetime.fromtimestamp(now - retention, UTC)
    report = CleanupReport()
    idle: list[Engine] = []
    for engine in ENGINES:
        if control.is_running(settings.state, engine):
            report.skipped_engines.append(engine)
            progress(f"{engine} is running (lock held): its checkpoint, temp files and rotated epochs "
                     "are left alone")
        else:
            idle.append(engine)

    for entry in sorted_entries(settings.rotated):
        owner = epoch_engine(entry.name)
        if owner in idle and age(entry, now) > retention:
            remove(Path(entry.path))
            report.rotated_removed += 1

    expire_watch_files(settings, idle, now, report)
    for entry in sorted_entries(settings.archive):
        day = day_of(entry.name)
        if day is not None and day < cutoff.date() and entry.is_dir(follow_symlinks=False):
            remove(Path(entry.path))
            report.archive_removed += 1
    report.quarantine_removed = _expire_quarantine(settings.quarantine, now - retention)
    if settings.ledger.exists():
        report.ledger_removed = _expire_ledger(settings, cutoff, progress)
    for engine in ENGINES:
        report.compacted[engine] = _compact_output(settings, engine, now, progress)
    progress(report.line())

    if airflow is not None:
        report.airflow = expire_airflow(airflow, DAG_IDS, cutoff, progress)
    else:
        progress("airflow: not cleaned from here (no AIRFLOW_HOME)")
    report_what_is_left(settings, report, progress)
    report.seconds = time.monotonic() - started
    progress(f"cleanup done in {report.seconds:.2f}s")
    return report


def expire_watch_files(settings: Settings, idle: list[Engine], now: float, report: CleanupReport) -> None:
    """Processed old watch files of every engine; stale temp files of idle engines only."""
    processed = _processed_names(settings)
    watch_age = max(MIN_WATCH_AGE_SECONDS, 2 * dstream_remember_seconds(settings))
    for engine in ENGINES:
        for entry in sorted_entries(settings.watch(engine)):
            if not entry.is_file(follow_symlinks=False):
                continue
            entry_age = age(entry, now)
            if is_temp_name(entry.name):
                if engine in idle and entry_age > STALE_TEMP_SECONDS:
                    os.unlink(entry.path)
                    report.temp_removed += 1
            elif entry.name in processed[engine] and entry_age > watch_age:
                os.unlink(entry.path)
                report.watch_removed += 1


def dstream_remember_seconds(settings: Settings) -> int:
    """The remember window of the DStream epoch (a run may have set its own), or the setting's."""
    return max(settings.dstream_remember_seconds,
               epoch.remember_seconds(settings.checkpoint("dstream"), settings.dstream_remember_seconds))


def _processed_names(settings: Settings) -> dict[str, set[str]]:
    if not settings.ledger.exists():  # nothing was ever staged, so nothing is known to be processed
        return {engine: set() for engine in ENGINES}
    ledger = Ledger(settings.ledger)
    with ledger.session():
        return {engine: ledger.processed_watch_names(engine) for engine in ENGINES}


def _expire_ledger(settings: Settings, cutoff: datetime, progress: Progress) -> dict[str, int]:
    """Forget the ledger's finished history from before ``cutoff`` whose watch files are gone."""
    watched: dict[str, set[str]] = {engine: {entry.name for entry in sorted_entries(settings.watch(engine))}
                                    for engine in ENGINES}
    ledger = Ledger(settings.ledger)
    with ledger.session():
        expired = ledger.expire(cutoff.isoformat(timespec="milliseconds"),
                                lambda engine, name: name in watched.get(engine, set()), progress=progress)
    return asdict(expired)


def _compact_output(settings: Settings, engine: Engine, now: float, progress: Progress) -> int:
    """Fold ``engine``'s final batches; a failure (a reset moving the output away) only costs speed."""
    upto = results.foldable_upto(engine, settings.checkpoint(engine), dstream_remember_seconds(settings), now)
    try:
        done = None if upto is None else results.compact(settings.output(engine), results.SEMANTICS[engine],
                                                         upto)
    except (OSError, ValueError) as error:
        progress(f"{engine}: compaction failed, the next one retries: {type(error).__name__}: {error}")
        return 0
    if done is None or done.snapshot is None:
        return 0
    if done.folded:
        progress(f"{engine}: compacted {done.folded} batch folders into {done.snapshot.name} "
                 f"({done.keys} keys)")
    return done.folded


def _expire_quarantine(folder: Path, cutoff: float) -> int:
    """Remove quarantined entries (and their reason files) quarantined before ``cutoff``.

    The reason file is written at quarantine time, so its mtime is the quarantine time; the entry
    itself keeps the producer's mtime.
    """
    removed = 0
    for entry in sorted_entries(folder):
        if entry.name.endswith(".reason.txt"):
            continue
        reason = Path(entry.path + ".reason.txt")
        try:
            quarantined_at = reason.stat().st_mtime
        except FileNotFoundError:
            quarantined_at = entry.stat(follow_symlinks=False).st_mtime
        if quarantined_at < cutoff:
            remove(Path(entry.path))
            reason.unlink(missing_ok=True)
            removed += 1
    for entry in sorted_entries(folder):  # reason files whose entry is gone
        if entry.name.endswith(".reason.txt") and not os.path.lexists(entry.path[: -len(".reason.txt")]) \
                and entry.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(entry.path)
    return removed


def report_what_is_left(settings: Settings, report: CleanupReport, progress: Progress) -> None:
    """Sizes and counts of what is left, one line per engine and one for what they share."""
    for engine in ENGINES:
        sizes = report.sizes[engine] = engine_sizes(settings, engine)
        left = report.left[engine] = engine_counts(settings, engine)
        batch = left["snapshot_batch"]
        snapshot = "no snapshot" if batch < 0 else f"snapshot of batch {batch}"
        progress(f"size {engine}: " + ", ".join(f"{part} {human_bytes(sizes[part])}" for part in SIZE_PARTS)
                 + f"; output: {snapshot} ({left['snapshot_keys']} keys) + {left['output_batches']} batch "
                 f"folders; {left['watch_files']} watch files; file-source log "
                 f"{human_bytes(left['file_source_log_bytes'])}")
    report.shared_sizes = {"archive": tree_bytes(settings.archive),
                           "quarantine": tree_bytes(settings.quarantine), "ledger": _ledger_bytes(settings)}
    if settings.ledger.exists():
        summary = Ledger(settings.ledger).summary()
        deliveries = sum(sum(states.values()) for states in summary["deliveries"].values())
        report.ledger_left = {"files": summary["total_files"], "deliveries": deliveries}
    progress("size shared: " + ", ".join(f"{part} {human_bytes(size)}"
                                         for part, size in report.shared_sizes.items())
             + f"; ledger {report.ledger_left.get('files', 0)} file rows, "
               f"{report.ledger_left.get('deliveries', 0)} deliveries")


def engine_sizes(settings: Settings, engine: Engine) -> dict[str, int]:
    """Bytes of an engine's checkpoint, output, watch folder and rotated epochs."""
    rotated = sum(tree_bytes(Path(entry.path)) for entry in sorted_entries(settings.rotated)
                  if epoch_engine(entry.name) == engine)
    return {
        "checkpoint": tree_bytes(settings.checkpoint(engine)),
        "output": tree_bytes(settings.output(engine)),
        "watch": tree_bytes(settings.watch(engine)),
        "rotated": rotated,
    }


def engine_counts(settings: Settings, engine: Engine) -> dict[str, int]:
    """What grows by count: the output's snapshot and batch folders after it, watch files; and the
    file source's metadata log, in bytes."""
    watch_files = sum(1 for entry in sorted_entries(settings.watch(engine))
                      if entry.is_file(follow_symlinks=False) and not is_temp_name(entry.name))
    listing = results.list_results(settings.output(engine))
    keys = 0 if listing.snapshot is None else int(results.snapshot_info(listing.snapshot)["keys"])
    return {
        "snapshot_batch": listing.snapshot_id,
        "snapshot_keys": keys,
        "output_batches": len(listing.batches),
        "watch_files": watch_files,
        "file_source_log_bytes": tree_bytes(settings.checkpoint(engine) / FILE_SOURCE_LOG),
    }


def _ledger_bytes(settings: Settings) -> int:
    """The ledger database with its write-ahead log."""
    path = settings.ledger
    return tree_bytes(path) + tree_bytes(path.with_name(path.name + "-wal"))
