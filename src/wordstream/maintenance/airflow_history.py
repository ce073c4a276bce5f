"""The Airflow side of retention: the metadata and task logs of wordstream's DAGs, the DAG processor's logs.

At 1 file/s the continuous staging DAG makes tens of thousands of runs a day, each with a ``run_id=``
log folder and rows in the metadata database. Airflow 3.3 expires neither by itself
(``[logging] delete_local_logs`` applies to remote logging only; ``airflow db clean`` is a command
someone has to run), so the hourly cleanup does both for the project's DAGs, with one cutoff:

* metadata: :mod:`wordstream.orchestration.metadb_clean`, in a process of its own given the database
  URL (``WORDSTREAM_METADB_CONN``; a task process has no usable one), see that module;
* task logs: ``<base_log_folder>/dag_id=<ours>/run_id=*/`` folders whose newest file is older than
  the cutoff, except those of runs still queued or running (a stream run may be quiet for days).
  Only together with the metadata, whose clean names the unfinished runs: the UI should not list
  runs whose logs are gone, nor logs outlive their runs for long;
* DAG processor logs: ``<dag_processor_child_process_log_directory>/<YYYY-MM-DD>/`` day folders
  before the cutoff's day (Airflow writes one a day, for every DAG file; ``latest`` links today's).

Nothing here imports Airflow: the DAG describes its Airflow as an :class:`AirflowSite` from
Airflow's configuration, the command line from the environment (:meth:`AirflowSite.from_env`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from wordstream import Progress
from wordstream.maintenance.folders import day_of, human_bytes, remove, sorted_entries, tree_stats

METADB_CONN_ENV = "WORDSTREAM_METADB_CONN"
CONN_ENVS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__SQL_ALCHEMY_CONN")
# What Airflow 3 puts into a task process's environment instead of the database URL.
BLOCKED_CONN_PREFIX = "airflow-db-not-allowed"
METADB_TIMEOUT_SECONDS = 3600.0
PROGRESS_EVERY_RUNS = 10_000


class AirflowCleanupError(RuntimeError):
    """The metadata could not be cleaned; the message says why, in one line."""


@dataclass(frozen=True)
class AirflowSite:
    """Where one Airflow keeps what the project's DAGs leave behind."""

    log_folder: Path  # [logging] base_log_folder
    dag_processor_log_folder: Path  # [logging] dag_processor_child_process_log_directory
    metadb_conn: str | None  # the metadata database URL; None: not reachable from here

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AirflowSite | None:
        """The Airflow of ``AIRFLOW_HOME`` and its ``AIRFLOW__*`` settings; None without ``AIRFLOW_HOME``."""
        env = os.environ if env is None else env
        home = env.get("AIRFLOW_HOME")
        if not home:
            return None
        logs = Path(env.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER") or Path(home) / "logs")
        processor = env.get("AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY")
        return cls(logs, Path(processor) if processor else Path(home) / "logs" / "dag_processor",
                   metadb_conn(env))


def metadb_conn(env: Mapping[str, str]) -> str | None:
    """Airflow's own URL, or ``WORDSTREAM_METADB_CONN`` where Airflow put a dummy (a task process)."""
    for name in (*CONN_ENVS, METADB_CONN_ENV):
        value = env.get(name)
        if value and not value.startswith(BLOCKED_CONN_PREFIX):
            return value
    return None


@dataclass
class AirflowReport:
    runs_removed: dict[str, int] = field(default_factory=dict)  # dag_id -> DAG runs deleted
    runs_left: dict[str, int] = field(default_factory=dict)
    task_instances_removed: int = 0
    audit_log_removed: int = 0
    asset_events_removed: int = 0
    log_runs_removed: int = 0  # run_id= folders
    log_bytes_removed: int = 0
    log_runs_left: int = 0
    log_bytes_left: int = 0
    processor_days_removed: int = 0
    error: str | None = None  # the metadata (and so the task logs) could not be cleaned

    def line(self) -> str:
        if self.error:
            metadata = f"metadata and task logs not cleaned: {self.error}"
        else:
            metadata = (f"removed {sum(self.runs_removed.values())} DAG runs "
                        f"({self.task_instances_removed} task instances, {self.asset_events_removed} "
                        f"asset events), {self.log_runs_removed} task log folders "
                        f"({human_bytes(self.log_bytes_removed)}); left {sum(self.runs_left.values())} "
                        f"runs, {self.log_runs_left} log folders ({human_bytes(self.log_bytes_left)})")
        return f"airflow: {metadata}; {self.processor_days_removed} DAG processor log days removed"


def expire_airflow(site: AirflowSite, dag_ids: Collection[str], before: datetime,
                   progress: Progress) -> AirflowReport:
    """Expire the metadata and task logs of ``dag_ids`` and the DAG processor's logs before ``before``."""
    report = AirflowReport()
    report.processor_days_removed = prune_day_folders(site.dag_processor_log_folder, before)
    try:
        result = clean_metadata(site, dag_ids, before, progress)
    except AirflowCleanupError as error:
        report.error = str(error)
        progress(report.line())
        return report
    before_counts, after = result["before"], result["after"]

    def removed(table: str) -> int:
        return sum(before_counts[table].values()) - sum(after[table].values())

    report.runs_removed = {dag: before_counts["dag_runs"][dag] - after["dag_runs"][dag] for dag in dag_ids}
    report.runs_left = dict(after["dag_runs"])
    report.task_instances_removed = removed("task_instances")
    report.audit_log_removed = removed("audit_log")
    report.asset_events_removed = int(result["asset_events_removed"])
    unfinished = {dag: set(runs) for dag, runs in result["unfinished"].items()}
    logs = prune_task_logs(site.log_folder, dag_ids, before.timestamp(), unfinished, progress)
    report.log_runs_removed, report.log_bytes_removed, report.log_runs_left, report.log_bytes_left = logs
    progress(report.line())
    return report


def clean_metadata(site: AirflowSite, dag_ids: Collection[str], before: datetime,
                   progress: Progress, timeout: float = METADB_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Run :mod:`wordstream.orchestration.metadb_clean` with the database URL; its JSON result.

    Its progress lines (stderr) are passed on as they come: the first clean of a big backlog takes
    minutes.
    """
    if site.metadb_conn is None:
        raise AirflowCleanupError(f"no metadata database URL here: set {METADB_CONN_ENV} (the embedded "
                                  "stack and docker-compose.yaml set it for the Airflow processes)")
    env = {name: value for name, value in os.environ.items() if name not in CONN_ENVS}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = site.metadb_conn
    command = [sys.executable, "-m", "wordstream.orchestration.metadb_clean",
               "--before", before.isoformat(), "--dag-ids", ",".join(dag_ids)]
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace") as proc:
        assert proc.stderr is not None and proc.stdout is not None
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            for raw in proc.stderr:
                line = raw.rstrip()
                tail.append(line)
                if _is_progress(line):
                    progress(f"airflow metadata: {line.strip()}")
            out = proc.stdout.read()
            code = proc.wait()
        finally:
            watchdog.cancel()
    if code == -signal.SIGKILL:
        raise AirflowCleanupError(f"the metadata clean took longer than {timeout:g}s and was stopped")
    if code != 0:
        reason = next((line for line in reversed(tail) if line.strip()), f"exit status {code}")
        raise AirflowCleanupError(reason.strip()[:500])
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _is_progress(line: str) -> bool:
    """The lines that say where a long clean is: ours, and ``run_cleanup``'s per deleted batch."""
    return line.startswith(("metadata of ", "asset events: ", "Performing Delete (batch"))


def prune_task_logs(log_folder: Path, dag_ids: Collection[str], cutoff: float,
                    keep: Mapping[str, Collection[str]], progress: Progress) -> tuple[int, int, int, int]:
    """Remove ``dag_id=<id>/run_id=<run>/`` folders whose newest file is older than ``cutoff``.

    ``keep`` names runs (per DAG id) kept whatever their age: the unfinished ones. Returns folders and
    bytes removed, then folders and bytes left.
    """
    removed = removed_bytes = left = left_bytes = seen = 0
    for dag_id in dag_ids:
        kept_runs = {f"run_id={run_id}" for run_id in keep.get(dag_id, ())}
        for entry in sorted_entries(Path(log_folder) / f"dag_id={dag_id}"):
            if not entry.name.startswith("run_id=") or not entry.is_dir(follow_symlinks=False):
                continue
            size, newest = tree_stats(Path(entry.path))
            if newest < cutoff and entry.name not in kept_runs:
                remove(Path(entry.path))
                removed += 1
                removed_bytes += size
            else:
                left += 1
                left_bytes += size
            seen += 1
            if seen % PROGRESS_EVERY_RUNS == 0:
                progress(f"task logs: {seen} run folders looked at, {removed} removed")
    return removed, removed_bytes, left, left_bytes


def prune_day_folders(folder: Path, before: datetime) -> int:
    """Remove the ``YYYY-MM-DD`` folders of ``folder`` before the day of ``before``."""
    removed = 0
    for entry in sorted_entries(folder):
        day = day_of(entry.name)
        if day is not None and day < before.date() and entry.is_dir(follow_symlinks=False):
            remove(Path(entry.path))
            removed += 1
    return removed
