"""The DAGs run for real: `airflow dags test` (in-process DagRun) with real local Spark and real files.

Each run is a subprocess with its own AIRFLOW_HOME and data directory, so a test can also kill it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from support import SparkApp, processes_mentioning, reference_counts, wait_until, write_corpus

from wordstream import control, results
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Engine, Settings, stream_dag_id
from wordstream.staging import stage
from wordstream_dev import task_log
from wordstream_dev.airflow_env import AirflowInstance

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite metadata database for the module's DAG runs."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = AirflowInstance(repo_dir=REPO, airflow_home=home, data_dir=home / "unused").environment()
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return home


@pytest.fixture
def airflow(airflow_home: Path, settings: Settings) -> Iterator[dict[str, str]]:
    env = AirflowInstance(repo_dir=REPO, airflow_home=airflow_home, data_dir=settings.data_dir).environment()
    env["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": "local[2]"})
    env["WORDSTREAM_STAGING_RUN_SECONDS"] = "0"  # one wave per staging run, unless a test says otherwise
    yield env


def dags_test(env: dict[str, str], dag_id: str, conf: dict[str, object] | None = None,
              log: Path | None = None) -> subprocess.Popen[bytes]:
    command = [AIRFLOW, "dags", "test", dag_id]
    if conf is not None:
        command += ["-c", json.dumps(conf)]
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_dag(env: dict[str, str], dag_id: str, log: Path, conf: dict[str, object] | None = None,
            timeout: float = 300) -> str:
    proc = dags_test(env, dag_id, conf, log)
    proc.wait(timeout=timeout)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return text


def test_staging_dag_stages_validates_and_dedupes(airflow: dict[str, str], settings: Settings,
                                                  tmp_path: Path) -> None:
    good = write_corpus(settings.landing, files=3, seed=21)
    (settings.landing / "copy-of-first.txt").write_bytes(good[0].read_bytes())
    (settings.landing / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    (settings.landing / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (settings.landing / ".hidden-partial.txt").write_text("still being written")
    originals = {p.name: p.read_bytes() for p in good}

    run_dag(airflow, "stage_incoming_files", tmp_path / "stage.log")

    for engine in ("structured", "dstream"):
        published = sorted(p.read_bytes() for p in settings.watch(engine).iterdir()
                           if not p.name.startswith("."))
        assert published == sorted(originals.values()), engine
    reasons = sorted(p.read_text() for p in settings.quarantine.rglob("*.reason.txt"))
    assert len(reasons) == 2, reasons
    assert any("UTF-8" in r for r in reasons) and any("binary" in r.lower() for r in reasons), reasons
    assert [p.name for p in settings.landing.iterdir()] == [".hidden-partial.txt"]
    summary = Ledger(settings.ledger).summary()
    assert json.dumps(summary)  # readable through `wordstream ledger` too
    run = subprocess.run([sys.executable, "-m", "wordstream.cli", "ledger", "--json"], env=airflow,
                         capture_output=True, text=True, check=True)
    assert "duplicate" in run.stdout and "quarantined" in run.stdout


# What the metadata database holds of the staging DAG's runs and of the asset events.
METADATA = """
import json
from sqlalchemy import select
from airflow.models.asset import AssetEvent
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
with create_session() as session:
    runs = session.scalars(select(DagRun).where(DagRun.dag_id == "stage_incoming_files")).all()
    events = session.scalars(select(AssetEvent).order_by(AssetEvent.id)).all()
    print(json.dumps({"runs": sorted(r.run_id for r in runs),
                      "events": [[e.asset.name, e.source_run_id, e.extra] for e in events]}))
"""


def metadata(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", METADATA], env=env, capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_files_landed_while_a_staging_run_loops_are_staged_by_that_run(
        airflow: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    """One DAG run, many waves: files landed during its loop are staged by it, one asset event at the end."""
    env = {**airflow, "WORDSTREAM_STAGING_RUN_SECONDS": "20"}
    before = metadata(env)
    corpus = write_corpus(tmp_path / "corpus", files=3, seed=51)
    waves = [{corpus[0].name: corpus[0].read_bytes()},
             {corpus[1].name: corpus[1].read_bytes(), "copy.txt": corpus[0].read_bytes(),
              "binary.txt": b"\x00 not text"},
             {corpus[2].name: corpus[2].read_bytes()}]
    ledger = Ledger(settings.ledger)

    def finished(expected: int) -> bool:
        return sum(n for status, n in ledger.summary()["files"].items() if status != "landed") >= expected

    proc = dags_test(env, "stage_incoming_files", log=tmp_path / "stage.log")
    try:
        done = 0
        for wave in waves:  # each lands after the previous one is staged: the run is in its loop by then
            for name, data in wave.items():
                (settings.landing / name).write_bytes(data)
            done += len(wave)
            wait_until(partial(finished, done), 120, f"{done} files staged")
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = (tmp_path / "stage.log").read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]

    assert ledger.summary()["files"] == {"landed": 0, "staged": 3, "quarantined": 1, "duplicate": 1}
    for engine in ("structured", "dstream"):
        published = sorted(p.read_bytes() for p in settings.watch(engine).iterdir())
        assert published == sorted(path.read_bytes() for path in corpus), engine
    assert list(settings.landing.iterdir()) == []
    after = metadata(env)
    new_runs = sorted(set(after["runs"]) - set(before["runs"]))
    assert len(new_runs) == 1, new_runs  # one DAG run staged all three waves
    [event] = after["events"][len(before["events"]):]
    assert event[:2] == ["wordstream_watch", new_runs[0]]
    assert event[2] == {"published": {"structured": 3, "dstream": 3}, "staged": 3, "duplicates": 1,
                        "quarantined": 1, "waves": event[2]["waves"]}
    assert event[2]["waves"] >= 3
    assert text.count("staging run: ") == 1 and f"staging run: {event[2]['waves']} waves" in text
    assert "Poking callable" not in text  # cut by AIRFLOW__LOGGING__NAMESPACE_LEVELS


STREAM_TIMEOUT = 30  # s after the query started: the 5 files took 8 s alone, 11-13 s side by side


def test_stream_dag_with_timeout_counts_exactly(airflow: dict[str, str], settings: Settings,
                                                tmp_path: Path) -> None:
    """Files staged by the staging DAG, counted by each streaming DAG: structured words at a decimal
    interval, two files per trigger, and DStream the tutorial's whole lines at the interval its
    trigger form offers (the tutorial's 1 s) with a remember window of its own: the Params reach the
    application's command line and its status. The two DAG runs overlap, each with its own log."""
    corpus = write_corpus(tmp_path / "corpus", files=5, seed=31)
    for path in corpus:
        (settings.landing / path.name).write_bytes(path.read_bytes())
    run_dag(airflow, "stage_incoming_files", tmp_path / "stage.log")
    confs: dict[Engine, dict[str, object]] = {
        "structured": {"keys": "words", "batch_seconds": 0.5, "max_files_per_trigger": 2},
        "dstream": {"keys": "lines", "remember_seconds": 30}}
    flags = {"structured": f"--keys words --batch-seconds 0.5 --timeout {STREAM_TIMEOUT} "
                           "--max-files-per-trigger 2 ",
             "dstream": f"--keys lines --batch-seconds 1 --timeout {STREAM_TIMEOUT} --remember-seconds 30"}
    runs: dict[Engine, subprocess.Popen[bytes]] = {}
    try:
        for engine, conf in confs.items():
            params = {**conf, "timeout_seconds": STREAM_TIMEOUT}
            runs[engine] = dags_test(airflow, stream_dag_id(engine), params, tmp_path / f"{engine}.log")
            # The next `dags test` starts once this one has written its runs' rows (both DAGs come
            # from one file): two writing them into one SQLite database at once could collide.
            wait_until(lambda engine=engine: runs[engine].poll() is not None or control.read_status(
                settings.state, engine).get("state") in ("starting", "running"), 240, f"{engine} to start")
        for run in runs.values():
            run.wait(timeout=300)
    finally:
        for run in runs.values():
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(timeout=30)
    for engine, conf in confs.items():
        text = (tmp_path / f"{engine}.log").read_text(errors="replace")
        assert runs[engine].returncode == 0, text[-4000:]
        assert flags[engine] in text, engine
        totals = results.read_totals(settings.output(engine), results.SEMANTICS[engine])
        assert totals == reference_counts(corpus, str(conf["keys"])), engine
        status = control.read_status(settings.state, engine)
        assert status["state"] == "stopped" and status["reason"].startswith("timeout"), status
        assert {key: status["knobs"][key] for key in conf if key != "keys"} == {
            key: value for key, value in conf.items() if key != "keys"}, status["knobs"]


def test_reset_stops_a_running_stream_and_leaves_watch_and_checkpoint_clean(
        airflow: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    app = SparkApp("structured", settings, tmp_path / "app.log").start()
    try:
        app.wait_running()
        for path in write_corpus(tmp_path / "corpus", files=2, seed=41):
            (settings.landing / path.name).write_bytes(path.read_bytes())
        run_dag(airflow, "stage_incoming_files", tmp_path / "stage.log")
        wait_until(lambda: results.batch_dirs(settings.output("structured")), 120, "a committed batch")
        run_dag(airflow, "streaming_maintenance", tmp_path / "reset.log",
                {"action": "reset", "engines": ["structured"], "restart": False, "wait_timeout": 60,
                 "replay": "all"})
        assert app.wait(30) == 0, app.tail()
    finally:
        app.cleanup()
    assert not control.is_running(settings.state, "structured")
    assert [p for p in settings.watch("structured").iterdir()] == []
    # replay=all: both archived originals wait in landing for the new epoch (staging takes them next)
    archived = Ledger(settings.ledger).archived_files()
    assert len(archived) == 2
    assert sorted(p.name for p in settings.landing.iterdir()) == sorted(
        f"replay-{row.id}-{row.name}" for row in archived)
    assert not settings.checkpoint("structured").exists()
    assert not results.batch_dirs(settings.output("structured"))
    rotated = list(settings.rotated.iterdir())
    assert len(rotated) == 1 and (rotated[0] / "checkpoint").is_dir()


def test_cleanup_refuses_a_locked_checkpoint(airflow: dict[str, str], settings: Settings,
                                             tmp_path: Path) -> None:
    old_epoch = settings.rotated / "structured-20200101T000000Z"
    (old_epoch / "checkpoint").mkdir(parents=True)
    (old_epoch / "checkpoint" / "metadata").write_text("{}")
    old = time.time() - 400 * 86400
    os.utime(old_epoch, (old, old))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from wordstream import control; from pathlib import Path\n"
         f"with control.hold_lock(Path({str(settings.state)!r}), 'structured'):\n"
         "    print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        text = run_dag(airflow, "streaming_maintenance", tmp_path / "cleanup.log", {"action": "cleanup"})
        assert old_epoch.exists(), "cleanup removed an epoch of an engine whose lock is held"
        assert "structured" in text and "lock" in text.lower()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_killing_the_stream_task_leaves_no_spark_process(airflow: dict[str, str], settings: Settings,
                                                         tmp_path: Path) -> None:
    """SIGKILL of the process running the task: on_kill never runs, the driver must notice alone."""
    proc = dags_test(airflow, "stream_structured", {"batch_seconds": 1}, tmp_path / "stream.log")
    try:
        wait_until(lambda: control.read_status(settings.state, "structured").get("state") == "running",
                   180, "the stream to run")
        spark = [p for p in processes_mentioning(str(settings.data_dir)) if p.pid != proc.pid]
        assert spark, "no Spark process found while the stream runs"
        os.kill(proc.pid, signal.SIGKILL)  # the task process only; its children must follow alone
        wait_until(lambda: not processes_mentioning(str(settings.data_dir)), 20,
                   "every Spark process of the task to exit")
    finally:
        if processes_mentioning(str(settings.data_dir)):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


LOG_BUDGET_PER_BATCH = 1024  # bytes of task log per batch besides the console print
CONSOLE_ROW_LIMIT = {"structured": 20, "dstream": 10}  # show() and pprint() defaults


@pytest.mark.parametrize("engine", ENGINES)
def test_stream_task_log_stays_under_1_kb_per_batch_besides_the_console_print(
        airflow: dict[str, str], settings: Settings, tmp_path: Path, engine: Engine) -> None:
    """The task log of a running stream, as the operator and SparkSubmitHook write it (one record
    per line spark-submit prints; ``airflow dags test`` renders each with time, level and logger).

    A file arrives every second into a 1 s stream. In the steady state (from the third batch on)
    everything but the batch's console print must stay under 1 KB per batch, the console print
    must show at most its row limit, and the totals must be exact.
    """
    corpus = write_corpus(tmp_path / "corpus", files=10, seed=47, lines=30)
    log = tmp_path / "stream.log"
    proc = dags_test(airflow, stream_dag_id(engine), {"timeout_seconds": len(corpus) + 6, "batch_seconds": 1},
                     log)
    try:
        wait_until(lambda: proc.poll() is not None
                   or control.read_status(settings.state, engine).get("state") == "running",
                   240, f"{engine} to run")
        for path in corpus:
            shutil.copy2(path, settings.landing / path.name)
            stage(settings, progress=lambda line: None)
            time.sleep(1)
        assert proc.wait(timeout=180) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    records = task_log.rendered_records(log.read_text(errors="replace").splitlines())
    per_batch, split, batches = task_log.per_batch(records)
    assert batches >= len(corpus) // 2, [r.text for r in records]
    assert per_batch < LOG_BUDGET_PER_BATCH, "\n".join(r.text for r in split.other)
    rows = split.console_rows()
    assert rows and max(rows) <= CONSOLE_ROW_LIMIT[engine], rows
    totals = results.read_totals(settings.output(engine), results.SEMANTICS[engine])
    assert totals == reference_counts(corpus, "words")
    print(f"{engine}: {per_batch:.0f} B per batch besides the console print "
          f"({split.console_bytes / batches:.0f} B of console print per batch), {batches} batches")
