"""The hourly cleanup expires this Airflow's metadata of the wordstream DAGs, in a real metadata database.

Real runs (`airflow dags test`) of the staging and maintenance DAGs and of another team's DAG in one
SQLite metadata database; then the maintenance DAG's cleanup, whose metadata clean runs in a process
of its own, as from a task process whose database URL Airflow replaced with a dummy.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wordstream.maintenance.airflow_history import (
    AirflowCleanupError,
    AirflowSite,
    clean_metadata,
    metadb_conn,
)
from wordstream.settings import DAG_IDS, Settings
from wordstream_dev.airflow_env import AirflowInstance

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
OTHER_TEAM = '''
from datetime import UTC, datetime

from airflow.sdk import dag, task


@dag(dag_id="other_team", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False)
def other_team() -> None:
    @task
    def hello() -> int:
        return 1

    hello()


other_team()
'''


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated metadata database; a DAG folder with the wordstream DAGs and another team's."""
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    for dag_file in (REPO / "dags").glob("*.py"):
        (dags / dag_file.name).symlink_to(dag_file)
    (dags / "other_team.py").write_text(OTHER_TEAM)
    subprocess.run([AIRFLOW, "db", "migrate"], env=environment(home, home / "unused"), check=True,
                   capture_output=True, timeout=300)
    return home


def environment(home: Path, data_dir: Path) -> dict[str, str]:
    env = AirflowInstance(repo_dir=REPO, airflow_home=home, data_dir=data_dir).environment()
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
    env["WORDSTREAM_STAGING_RUN_SECONDS"] = "0"  # one wave per staging run
    return env


@pytest.fixture
def airflow(airflow_home: Path, settings: Settings) -> dict[str, str]:
    return environment(airflow_home, settings.data_dir)


def dags_test(env: dict[str, str], dag_id: str, log: Path, **extra_env: str) -> str:
    run = subprocess.run([AIRFLOW, "dags", "test", dag_id], env={**env, **extra_env}, capture_output=True,
                         text=True, timeout=300)
    log.write_text(run.stdout + run.stderr)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run.stdout + run.stderr


def rows(env: dict[str, str], table: str, column: str = "dag_id") -> dict[str, int]:
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        return dict(conn.execute(f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}").fetchall())


def test_cleanup_expires_our_runs_past_retention_and_leaves_the_rest(
        airflow: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    dags_test(airflow, "other_team", tmp_path / "other.log")
    (settings.landing / "a.txt").write_text("a b c\n")
    dags_test(airflow, "stage_incoming_files", tmp_path / "stage.log")
    tables = ("dag_run", "task_instance", "log")
    other_before = {table: rows(airflow, table)["other_team"] for table in tables}
    assert rows(airflow, "asset_event", "source_dag_id") == {"stage_incoming_files": 1}

    # Within the retention: nothing of ours goes; the run reports what is left.
    log = dags_test(airflow, "streaming_maintenance", tmp_path / "keep.log")
    assert "airflow: removed 0 DAG runs" in log
    assert rows(airflow, "dag_run") == {"other_team": 1, "stage_incoming_files": 1,
                                        "streaming_maintenance": 1}

    # Retention 0 days: every finished run of ours is past it. The running cleanup run itself stays.
    log = dags_test(airflow, "streaming_maintenance", tmp_path / "expire.log", WORDSTREAM_RETENTION_DAYS="0")
    assert "airflow: removed 2 DAG runs" in log
    assert "metadata of stage_incoming_files: 1 runs removed, 0 left" in log
    assert rows(airflow, "dag_run") == {"other_team": 1, "streaming_maintenance": 1}
    assert set(rows(airflow, "task_instance")) == {"other_team", "streaming_maintenance"}
    assert set(rows(airflow, "xcom")) <= {"other_team", "streaming_maintenance"}
    assert rows(airflow, "asset_event", "source_dag_id") == {}
    assert {table: rows(airflow, table)["other_team"] for table in tables} == other_before  # not ours
    database = airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:  # no archive tables left behind (skip_archive)
        archives = "SELECT name FROM sqlite_master WHERE name LIKE '_airflow_deleted%'"
        assert not conn.execute(archives).fetchall()


def test_metadata_clean_from_a_task_process_uses_the_projects_url(
        airflow: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What Airflow 3 leaves a task process: a dummy URL; the clean gets WORDSTREAM_METADB_CONN instead."""
    for name, value in {**airflow, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "airflow-db-not-allowed:///"}.items():
        monkeypatch.setenv(name, value)
    assert metadb_conn(os.environ) == airflow["WORDSTREAM_METADB_CONN"]
    site = AirflowSite(tmp_path / "logs", tmp_path / "logs" / "dag_processor", metadb_conn(os.environ))
    runs = rows(airflow, "dag_run")
    lines: list[str] = []
    result = clean_metadata(site, DAG_IDS, datetime(2000, 1, 1, tzinfo=UTC), lines.append)
    assert result["before"]["dag_runs"] == result["after"]["dag_runs"] == {
        dag_id: runs.get(dag_id, 0) for dag_id in DAG_IDS}  # it read the real database
    assert "airflow metadata: metadata of stage_incoming_files: 0 runs removed" in " ".join(lines)
    # Without the project's URL it says so in one line instead of cleaning some other database.
    monkeypatch.delenv("WORDSTREAM_METADB_CONN")
    assert metadb_conn(os.environ) is None
    with pytest.raises(AirflowCleanupError, match="set WORDSTREAM_METADB_CONN"):
        clean_metadata(AirflowSite(site.log_folder, site.dag_processor_log_folder, None), DAG_IDS,
                       datetime.now(UTC), lines.append)
