"""The whole workflow through the real Airflow scheduler, driven only through the REST API.

Both streams are triggered with Params, files arrive in landing (one written slowly, in pieces, while
the sensor watches), both engines' totals must equal the independent reference, a reset through
`streaming_maintenance` stops the streams and starts a new epoch from zero, and a reset with restart
brings them back to count new files from zero.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import reference_counts, wait_until, write_corpus

from wordstream import control, results
from wordstream.ledger import Ledger
from wordstream.settings import DAG_IDS, ENGINES, Settings
from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.stack import Stack

pytestmark = pytest.mark.e2e

STREAM_CONF = {"keys": "words", "batch_seconds": 1, "timeout_seconds": 0}


def land(settings: Settings, paths: list[Path]) -> None:
    """Producers drop whole files: hidden temp name in landing, then rename."""
    for path in paths:
        temp = settings.landing / f".{path.name}.part"
        temp.write_bytes(path.read_bytes())
        os.replace(temp, settings.landing / path.name)


def land_slowly(settings: Settings, path: Path, pieces: int = 8, pause: float = 0.4) -> None:
    """A producer writing straight into landing, in pieces: staging must wait until it is complete."""
    data = path.read_bytes()
    step = len(data) // pieces + 1
    with open(settings.landing / path.name, "wb") as out:
        for start in range(0, len(data), step):
            out.write(data[start:start + step])
            out.flush()
            time.sleep(pause)


def cli_totals(stack: Stack, engine: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORDSTREAM_DATA_DIR": str(stack.settings.data_dir)}
    return subprocess.run([sys.executable, "-m", "wordstream.cli", "totals", "--engine", engine,
                           "--format", "csv"], env=env, capture_output=True, text=True, check=False)


def totals_of(stack: Stack, engine: str) -> dict[str, int]:
    import csv
    import io

    run = cli_totals(stack, engine)
    if run.returncode != 0:
        return {}
    rows = list(csv.reader(io.StringIO(run.stdout, newline="")))
    return {word: int(count) for word, count in rows[1:]}


def wait_streams_running(settings: Settings, timeout: float = 240) -> None:
    for engine in ENGINES:
        wait_until(lambda engine=engine: control.read_status(settings.state, engine)["state"] == "running",
                   timeout, f"{engine} to be running")


def wait_exact_totals(stack: Stack, expected: dict[str, int], timeout: float = 300) -> None:
    for engine in ENGINES:
        wait_until(lambda engine=engine: totals_of(stack, engine) == expected, timeout,
                   f"{engine} totals to equal the reference")


def reset(api: AirflowClient, restart: bool) -> None:
    run = api.trigger_dag_run("streaming_maintenance", conf={
        "action": "reset", "engines": list(ENGINES), "restart": restart, "wait_timeout": 120})
    api.wait_for_dag_run("streaming_maintenance", run["dag_run_id"], timeout=300)


def test_stage_count_reset_and_restart_through_the_api(stack: Stack, api: AirflowClient,
                                                        tmp_path: Path) -> None:
    settings = stack.settings
    assert not api.wait_for_dags(DAG_IDS, timeout=180)
    for dag_id in DAG_IDS:
        api.unpause(dag_id)
    stream_runs = {engine: api.trigger_dag_run(f"stream_{engine}", conf=STREAM_CONF)["dag_run_id"]
                   for engine in ENGINES}
    wait_streams_running(settings)

    corpus = write_corpus(tmp_path / "first", files=6, seed=101)
    slow = corpus.pop()
    land(settings, corpus)
    land_slowly(settings, slow)
    wait_exact_totals(stack, reference_counts([*corpus, slow], "words"))
    summary = Ledger(settings.ledger).summary()
    assert summary["files"].get("staged", 0) >= len(corpus) + 1, summary
    assert summary["files"].get("quarantined", 0) == 0, summary

    reset(api, restart=False)
    for engine in ENGINES:
        api.wait_for_dag_run(f"stream_{engine}", stream_runs[engine], states=("success",), timeout=120)
        assert not control.is_running(settings.state, engine)
        assert list(settings.watch(engine).iterdir()) == []
        assert not settings.checkpoint(engine).exists()
        assert not results.batch_dirs(settings.output(engine))
        refused = cli_totals(stack, engine)
        assert refused.returncode == 2 and "no results yet" in refused.stderr

    reset(api, restart=True)
    wait_streams_running(settings)
    second = write_corpus(tmp_path / "second", files=4, seed=202)
    land(settings, second)
    wait_exact_totals(stack, reference_counts(second, "words"))


def test_cleanup_reaches_the_metadata_from_a_real_task(stack: Stack, api: AirflowClient) -> None:
    """A real task process has no database URL of its own: the metadata clean must still run."""
    assert not api.wait_for_dags(DAG_IDS, timeout=180)
    api.unpause("streaming_maintenance")
    run = api.trigger_dag_run("streaming_maintenance", conf={"action": "cleanup"})
    api.wait_for_dag_run("streaming_maintenance", run["dag_run_id"], timeout=300)
    report = api.api("GET", f"/dags/streaming_maintenance/dagRuns/{run['dag_run_id']}/taskInstances/"
                            "cleanup/xcomEntries/return_value")["value"]
    airflow = report["airflow"]
    assert airflow["error"] is None, airflow
    assert sum(airflow["runs_removed"].values()) == 0  # everything here is younger than the retention
    assert airflow["runs_left"]["streaming_maintenance"] >= 1  # it read the real database ...
    assert airflow["log_runs_left"] >= 1 and airflow["log_bytes_left"] > 0  # ... and the real task logs
