"""The example DAG downstream of staging (examples/dags/on_new_words.py): it parses, and it really runs
after a staging run that published files, on that run's counts.

The chain runs on a metadata database of its own: the staging DAG through ``dag.test()`` (real
sensor, real staging, real asset events), one scheduler step (which creates the asset-triggered run
of the example; ``dag.test()`` has no scheduler) and ``airflow tasks test`` of the example's task.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from wordstream.settings import Settings
from wordstream_dev.airflow_env import AirflowInstance

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dags" / "on_new_words.py"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("on_new_words_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_parses_and_follows_the_dag_policies() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLE.parent))
    assert bag.import_errors == {}
    dag = bag.dags["on_new_words"]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [asset.name for asset in dag.timetable.asset_condition.objects] == ["wordstream_watch"]
    assert dag.max_active_runs != 1  # see the example's docstring
    assert dag.doc_md and len(dag.doc_md) > 200 and dag.catchup is False
    assert dag.start_date is not None and dag.start_date.tzinfo is not None
    for task in dag.tasks:
        assert task.owner != "airflow" and task.retries >= 1, task.task_id


def test_the_example_sums_every_event_it_consumes() -> None:
    summarise = example_module().summarise
    assert summarise([]) == {"runs": 0, "published": {}, "staged": 0, "duplicates": 0, "quarantined": 0}
    assert summarise([
        {"published": {"structured": 3, "dstream": 3}, "staged": 3, "duplicates": 1, "quarantined": 0,
         "waves": 4},
        {"published": {"dstream": 2}, "staged": 0, "duplicates": 2, "quarantined": 1},
        {},  # an event without an extra (set by hand, say) counts as a run
    ]) == {"runs": 3, "published": {"structured": 3, "dstream": 5}, "staged": 3, "duplicates": 3,
           "quarantined": 1}


CHAIN = """
import json, os, shutil, sys
from pathlib import Path
from sqlalchemy import select
from airflow.dag_processing.dagbag import DagBag
from airflow.jobs.job import Job
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.models.asset import AssetDagRunQueue, AssetEvent
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
from airflow.utils.sqlalchemy import prohibit_commit

landing = Path(os.environ["WORDSTREAM_DATA_DIR"]) / "landing"
staging = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["stage_incoming_files"]
for wave in sys.argv[1:]:
    for path in sorted(Path(wave).iterdir()):
        shutil.move(path, landing / path.name)
    staging.test()
with create_session() as session:
    events = [e.extra for e in session.scalars(select(AssetEvent).order_by(AssetEvent.id))]
    queued = session.scalars(select(AssetDagRunQueue.target_dag_id)).all()
# One scheduler step: it creates the asset-triggered run (a private API, pinned by this test).
runner = SchedulerJobRunner(job=Job(), executors=[])
with create_session() as session, prohibit_commit(session) as guard:
    runner._create_dagruns_for_dags(guard, session)
with create_session() as session:
    runs = session.scalars(select(DagRun).where(DagRun.dag_id == "on_new_words")).all()
    consumed = [[r.run_id, r.run_type, [e.extra for e in r.consumed_asset_events]] for r in runs]
print("CHAIN " + json.dumps({"events": events, "queued": queued, "runs": consumed}))
"""


def chain_env(tmp_path: Path, settings: Settings) -> dict[str, str]:
    """A fresh metadata database; a DAGs folder with the staging DAG and the example, both unpaused."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "stage_incoming_files.py").symlink_to(REPO / "dags" / "stage_incoming_files.py")
    (dags / "on_new_words.py").symlink_to(EXAMPLE)
    home = tmp_path / "airflow_home"
    env = AirflowInstance(repo_dir=REPO, airflow_home=home, data_dir=settings.data_dir).environment()
    env.update({"AIRFLOW__CORE__DAGS_FOLDER": str(dags), "WORDSTREAM_STAGING_RUN_SECONDS": "0",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False"})
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


def test_the_example_runs_after_a_staging_run_that_published_and_reads_its_counts(
        tmp_path: Path, settings: Settings) -> None:
    first, second = tmp_path / "wave-1", tmp_path / "wave-2"
    for folder, files in ((first, {"a.txt": b"alpha beta\n", "b.txt": b"gamma\n", "bad.txt": b"\x00\x01"}),
                          (second, {"copy-of-a.txt": b"alpha beta\n"})):  # a duplicate only: no event
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
    env = chain_env(tmp_path, settings)

    done = subprocess.run([sys.executable, "-c", CHAIN, str(first), str(second)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("CHAIN ")]
    chain: dict[str, Any] = json.loads(line.removeprefix("CHAIN "))
    extra = {"published": {"structured": 2, "dstream": 2}, "staged": 2, "duplicates": 0, "quarantined": 1,
             "waves": 1}
    assert chain["events"] == [extra]  # the second staging run published nothing: skipped, no event
    assert chain["queued"] == ["on_new_words"]
    [[run_id, run_type, consumed]] = chain["runs"]
    assert run_type == "asset_triggered" and consumed == [extra]

    task = subprocess.run([AIRFLOW, "tasks", "test", "on_new_words", "new_files", run_id], env=env,
                          capture_output=True, text=True, timeout=300)
    out = task.stdout + task.stderr
    assert task.returncode == 0, out[-4000:]
    assert "1 staging runs published structured 2, dstream 2: 2 staged, 0 duplicates, 1 quarantined" in out
    assert "1 files were quarantined" in out
    assert list(settings.landing.iterdir()) == []  # the duplicate was archived too
