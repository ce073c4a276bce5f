"""Every DAG file imports cleanly, fast, and follows the project's DAG policies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wordstream.settings import DEFAULT_BATCH_SECONDS, Settings

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
APPROVED_TAGS = {"wordstream", "streaming", "staging", "maintenance"}
EXPECTED_DAGS = {"stream_structured", "stream_dstream", "stage_incoming_files", "streaming_maintenance"}


def load(path: Path):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(path))


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_without_errors(path: Path) -> None:
    bag = load(path)
    assert bag.import_errors == {}
    assert bag.dags, f"{path.name} defines no DAG"


@pytest.fixture(scope="module")
def dags():  # type: ignore[no-untyped-def]
    bag = load(REPO / "dags")
    assert bag.import_errors == {}
    return bag.dags


def test_expected_dags_exist(dags) -> None:  # type: ignore[no-untyped-def]
    assert set(dags) == EXPECTED_DAGS


def test_policies(dags) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id}: doc_md should explain the DAG"
        assert dag.tags and set(dag.tags) <= APPROVED_TAGS, f"{dag_id}: tags {dag.tags}"
        assert dag.catchup is False, dag_id
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id}: owner"
            assert task.retries >= 1, f"{dag_id}.{task.task_id}: retries"


def test_streaming_dags_contract(dags) -> None:  # type: ignore[no-untyped-def]
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    for engine in ("structured", "dstream"):
        dag = dags[f"stream_{engine}"]
        assert dag.max_active_runs == 1 and type(dag.timetable).__name__ == "NullTimetable"
        (task,) = dag.tasks
        assert isinstance(task, SparkSubmitOperator)
        assert task.execution_timeout is None and task.retries >= 1
        assert task.application.endswith(f"spark_apps/{engine}_wordcount.py")
        assert {"keys", "batch_seconds", "timeout_seconds"} <= set(dag.params)
        # The trigger form shows the interval the engine runs with (DStream: the tutorial's 1 s).
        assert dag.params["batch_seconds"] == Settings.from_env().batch_seconds_for(engine)
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.schema.get("type") and param.schema.get("title"), name
            assert param.description, name
    assert DEFAULT_BATCH_SECONDS == {"structured": 2, "dstream": 1}


def test_staging_dag_contract(dags) -> None:  # type: ignore[no-untyped-def]
    dag = dags["stage_incoming_files"]
    assert type(dag.timetable).__name__ == "ContinuousTimetable"
    assert dag.max_consecutive_failed_dag_runs == 5  # paused instead of failing back to back
    tasks = {task.task_id: task for task in dag.tasks}
    assert set(tasks) == {"wait_for_landing_files", "stage_files", "announce"}
    assert tasks["announce"].upstream_task_ids == {"stage_files"}
    # Only announce emits the asset event (and skips when nothing was published).
    assert [asset.name for asset in tasks["announce"].outlets] == ["wordstream_watch"]
    assert not tasks["stage_files"].outlets and not tasks["wait_for_landing_files"].outlets
    timeout = tasks["stage_files"].execution_timeout
    assert timeout is not None and timeout.total_seconds() >= 60 + 15 * 60  # a hang guard, not a limit


def test_ruff_airflow3_rules_are_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    run = subprocess.run([str(ruff), "check", "--preview", "--select", "AIR3", str(REPO / "dags"),
                          str(REPO / "examples" / "dags")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_parses_without_heavy_imports(path: Path) -> None:
    """A DAG file must not import pyspark or pandas at parse time (best practice: parse fast)."""
    code = (
        "import sys, airflow.sdk, runpy; "
        f"runpy.run_path({str(path)!r}); "
        "heavy = [m for m in ('pyspark', 'pandas') if m in sys.modules]; "
        "print('HEAVY=' + ','.join(heavy))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "HEAVY=\n" in run.stdout, f"heavy imports at parse time: {run.stdout[-500:]}"


def test_maintenance_replay_param_accepts_what_the_cli_accepts(dags) -> None:  # type: ignore[no-untyped-def]
    from airflow.sdk.definitions.param import ParamValidationError

    from wordstream.maintenance.replay import parse_replay

    param = dags["streaming_maintenance"].params.get_param("replay")
    assert param.value == "none" and param.schema.get("title") and "since=" in (param.description or "")
    for good in ("none", "all", "since=2026-03-04", "since=2026-03-04T05:06"):
        assert param.resolve(good) == good
        parse_replay(good)
    for bad in ("", "yes", "since=2026-03-04 05:06", "since=2026-3-4", "since=2026-03-04T05:06:07"):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)
        with pytest.raises(ValueError):
            parse_replay(bad)
