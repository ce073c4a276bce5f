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
from operate import reset, start_stream, unpause_all, wait_running
from support import assert_totals_stay, land, reference_counts, wait_until, write_corpus

from wordstream import control, results
from wordstream.ledger import Ledger
from wordstream.settings import DAG_IDS, ENGINES, Settings
from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.stack import Stack

pytestmark = pytest.mark.e2e


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


def wait_exact_totals(stack: Stack, expected: dict[str, int], folder: Path, timeout: float = 300) -> None:
    """Both engines reach the reference and stay there one batch more; then both have counted the
    files of those extra batches too, so a reset that follows finds nothing in flight."""
    extras: list[Path] = []
    for engine in ENGINES:
        extras.append(assert_totals_stay(
            lambda engine=engine: totals_of(stack, engine), {**expected, **reference_counts(extras, "words")},
            lambda paths: land(stack.settings.landing, paths), folder, f"{engine} totals", timeout))
    for engine in ENGINES:
        wait_until(lambda engine=engine: totals_of(stack, engine) == {
            **expected, **reference_counts(extras, "words")}, timeout, f"{engine} to count the extra files")


def test_stage_count_reset_and_restart_through_the_api(stack: Stack, api: AirflowClient,
                                                        tmp_path: Path) -> None:
    settings = stack.settings
    unpause_all(api)
    stream_runs = {engine: start_stream(api, engine) for engine in ENGINES}
    wait_running(settings, ENGINES)
    # The ledger keeps the files of earlier tests on this stack: only what this test adds counts.
    before = Ledger(settings.ledger).summary()["files"]

    corpus = write_corpus(tmp_path / "first", files=6, seed=101)
    slow = corpus.pop()
    land(settings.landing, corpus)
    land_slowly(settings, slow)
    wait_exact_totals(stack, reference_counts([*corpus, slow], "words"), tmp_path / "sentinels")
    summary = Ledger(settings.ledger).summary()
    assert summary["files"].get("staged", 0) - before.get("staged", 0) >= len(corpus) + 1, summary
    assert summary["files"].get("quarantined", 0) == before.get("quarantined", 0), summary

    reset(api, ENGINES, restart=False)
    for engine in ENGINES:
        api.wait_for_dag_run(f"stream_{engine}", stream_runs[engine], states=("success",), timeout=120)
        assert not control.is_running(settings.state, engine)
        assert list(settings.watch(engine).iterdir()) == []
        assert not settings.checkpoint(engine).exists()
        assert not results.batch_dirs(settings.output(engine))
        refused = cli_totals(stack, engine)
        assert refused.returncode == 2 and "no results yet" in refused.stderr

    reset(api, ENGINES, restart=True)
    wait_running(settings, ENGINES)
    second = write_corpus(tmp_path / "second", files=4, seed=202)
    land(settings.landing, second)
    wait_exact_totals(stack, reference_counts(second, "words"), tmp_path / "sentinels")


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
