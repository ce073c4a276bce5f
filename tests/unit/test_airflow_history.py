"""The Airflow part of retention on real folders laid out as Airflow 3.3 writes them."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wordstream.maintenance.airflow_history import (
    AirflowSite,
    metadb_conn,
    prune_day_folders,
    prune_task_logs,
)

DAY = 86400


def attempt_log(logs: Path, dag_id: str, run_id: str, age_days: float, task_id: str = "t",
                size: int = 100) -> Path:
    """``dag_id=<d>/run_id=<r>/task_id=<t>/attempt=1.log`` (Airflow's default log_filename_template)."""
    path = logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}" / "attempt=1.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - age_days * DAY
    os.utime(path, (then, then))
    return path.parent.parent


def test_task_logs_of_our_runs_past_the_cutoff_go_unless_the_run_is_unfinished(tmp_path: Path) -> None:
    old = attempt_log(tmp_path, "stage_incoming_files", "manual__2026-01-01T00:00:00+00:00", 9)
    attempt_log(tmp_path, "stage_incoming_files", "manual__2026-01-01T00:00:00+00:00", 9, task_id="u")
    retried = attempt_log(tmp_path, "stage_incoming_files", "scheduled__2026-01-02T00:00:00+00:00", 9)
    (retried / "task_id=t" / "attempt=2.log").write_text("a later attempt, yesterday")  # newest file counts
    new = attempt_log(tmp_path, "stage_incoming_files", "scheduled__2026-01-08T00:00:00+00:00", 1)
    quiet_stream = attempt_log(tmp_path, "stream_structured", "manual__2026-01-01T00:00:00+00:00", 9)
    theirs = attempt_log(tmp_path, "other_team", "manual__2026-01-01T00:00:00+00:00", 30)
    cutoff = time.time() - 7 * DAY
    lines: list[str] = []

    removed = prune_task_logs(tmp_path, ["stage_incoming_files", "stream_structured"], cutoff,
                              {"stream_structured": ["manual__2026-01-01T00:00:00+00:00"]}, lines.append)

    assert removed == (1, 200, 3, 100 + 26 + 100 + 100)
    assert not old.exists()
    assert retried.exists() and new.exists() and quiet_stream.exists() and theirs.exists()
    assert (tmp_path / "dag_id=stage_incoming_files").exists()
    assert prune_task_logs(tmp_path, ["missing_dag"], cutoff, {}, lines.append) == (0, 0, 0, 0)


def test_dag_processor_day_folders_before_the_cutoff_day_go(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    days = [(now - timedelta(days=n)).strftime("%Y-%m-%d") for n in (9, 8, 7, 0)]
    for day in days:
        (tmp_path / day / "stage_incoming_files.py.log").parent.mkdir(parents=True)
        (tmp_path / day / "stage_incoming_files.py.log").write_text("parsed\n")
    (tmp_path / "latest").symlink_to(days[-1])
    (tmp_path / "not-a-day").mkdir()
    assert prune_day_folders(tmp_path, now - timedelta(days=7)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*days[2:], "latest", "not-a-day"])
    assert (tmp_path / "latest" / "stage_incoming_files.py.log").exists()
    assert prune_day_folders(tmp_path / "missing", now) == 0


def test_airflow_site_from_the_environment() -> None:
    assert AirflowSite.from_env({}) is None
    assert AirflowSite.from_env({"AIRFLOW_HOME": "/af"}) == AirflowSite(
        Path("/af/logs"), Path("/af/logs/dag_processor"), None)
    site = AirflowSite.from_env({
        "AIRFLOW_HOME": "/af", "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "/var/log/af",
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": "/var/log/parse",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://db/af"})
    assert site == AirflowSite(Path("/var/log/af"), Path("/var/log/parse"), "postgresql://db/af")


def test_the_metadata_url_is_airflows_unless_a_task_process_got_a_dummy() -> None:
    real = "sqlite:////af/airflow.db"
    assert metadb_conn({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": real, "WORDSTREAM_METADB_CONN": "x"}) == real
    assert metadb_conn({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "airflow-db-not-allowed:///",
                        "AIRFLOW__CORE__SQL_ALCHEMY_CONN": "airflow-db-not-allowed:///",
                        "WORDSTREAM_METADB_CONN": real}) == real
    assert metadb_conn({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "airflow-db-not-allowed:///"}) is None
