"""The streaming DAGs on a real Spark standalone cluster, and Airflow's metadata in a real PostgreSQL.

What tests/dags cannot show with ``local[2]``: with ``spark_default`` pointing at a ``spark://``
master (client mode, as in docker-compose.yaml) the driver runs under the Airflow task while the
executors run in JVMs the workers start, with their own Python workers, which must import the
``wordstream`` package (the DStream job's functions live there: exact DStream totals prove they do).
Both engines run side by side, one core each; a reset stops a driver whose executors live elsewhere;
no driver, executor or Python worker outlives a run; and one run keeps Airflow's metadata in
PostgreSQL, as the compose set-up does.

Every Airflow command is an ``airflow dags test`` subprocess (an in-process DagRun) in its own
process group, against a migrated metadata database of its own.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import pytest
from postgres_server import PostgresServer, PostgresUnavailable, server_bin_dir
from support import reference_counts, wait_none_left, wait_until, write_corpus

from wordstream import control, results
from wordstream.settings import ENGINES, Engine, Settings
from wordstream.staging import stage
from wordstream_dev.airflow_env import AirflowInstance
from wordstream_dev.cluster import HOST, LocalCluster
from wordstream_dev.processes import LoggedProcess, alive, find_free_port

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
# The first micro-batch starts as soon as a stream runs, and a timeout lets the running batch commit:
# the timeout bounds the run, not the work. 20 s keep both engines side by side for a while: the
# second's spark-submit starts about 12 s after the first's, whose query starts 8 s after it.
STREAM_SECONDS = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two 1-core workers; an application gets one core, so both engines fit at the same time."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), master_port=find_free_port(),
                         webui_port=find_free_port(), workers=2, worker_cores=1, app_cores=1,
                         start_timeout=90)
    try:
        yield local.start()
    finally:
        local.stop()  # raises if any process of the cluster survives SIGKILL


def migrate(env: dict[str, str]) -> None:
    """``airflow db migrate`` on the metadata database ``env`` names (SQLite or PostgreSQL)."""
    done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def sqlite_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite metadata database for the module's runs on the cluster."""
    home = tmp_path_factory.mktemp("airflow_home")
    migrate(AirflowInstance(repo_dir=REPO, airflow_home=home, data_dir=home / "unused").environment())
    return home


def cluster_airflow_env(airflow_home: Path, settings: Settings, cluster: LocalCluster) -> dict[str, str]:
    """Airflow's environment with ``spark_default`` on the cluster's master.

    The provider takes a ``spark`` connection whose host already has a scheme as the master and
    appends the port: ``spark-submit --master spark://127.0.0.1:<port>``. The driver listens on
    loopback (``spark_env``), where the executors reach it.
    """
    env = AirflowInstance(repo_dir=REPO, airflow_home=airflow_home, data_dir=settings.data_dir).environment()
    env["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps(
        {"conn_type": "spark", "host": f"spark://{HOST}", "port": cluster.master_port})
    return env


class DagTest(LoggedProcess):
    """One ``airflow dags test`` subprocess in its own process group (the task's Spark driver joins it)."""

    def __init__(self, env: dict[str, str], dag_id: str, conf: dict[str, Any], log: Path) -> None:
        super().__init__([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], log, env=env)
        self.dag_id = dag_id
        self.start()

    def succeeded(self, timeout: float) -> str:
        """Wait for the run; it must exit 0 (its DagRun did not fail). Returns the log."""
        assert self.wait(timeout) == 0, self.exited(self.dag_id)
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if not self.running():
            raise AssertionError(self.exited(self.dag_id))

    def kill(self) -> None:
        """SIGKILL the group while the run still goes (after a failure); what outlives a finished run
        is left for the test's leak check to see."""
        if self.running():
            super().kill()
        self.wait(30)


def publish_corpus(settings: Settings, folder: Path, seed: int) -> list[Path]:
    """Generated files through landing and staging into every engine's watch folder."""
    corpus = write_corpus(folder, files=4, seed=seed)
    for path in corpus:
        (settings.landing / path.name).write_bytes(path.read_bytes())
    stage(settings, progress=lambda _message: None)
    for engine in ENGINES:
        assert len(list(settings.watch(engine).iterdir())) == len(corpus), engine
    return corpus


def wait_for_state(run: DagTest, settings: Settings, engine: Engine, states: tuple[str, ...]) -> None:
    def reached() -> bool:
        run.check_alive()
        return control.read_status(settings.state, engine).get("state") in states

    wait_until(reached, 240, f"{engine} to be {' or '.join(states)}")


def cli_totals(env: dict[str, str], engine: Engine) -> dict[str, int]:
    """``wordstream totals --format csv``, parsed back (RFC 4180) into word -> count."""
    command = [sys.executable, "-m", "wordstream.cli", "totals", "--engine", engine, "--format", "csv"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=120)
    rows = list(csv.reader(io.StringIO(done.stdout, newline="")))
    assert rows[0] == ["word", "count"], rows[:2]
    return {word: int(count) for word, count in rows[1:]}


def apps_named(cluster: LocalCluster, name: str, section: str = "completedapps") -> list[dict[str, Any]]:
    return [app for app in cluster.master_json()[section] if app["name"] == name]


def executors_of(cluster: LocalCluster, app_id: str, section: str = "finishedexecutors") -> list[str]:
    """The worker of each executor an application had (``section``: running ``executors`` instead)."""
    return [worker["id"] for worker in cluster.workers_json()
            for executor in worker[section] if executor["appid"] == app_id]


def cluster_leftovers(cluster: LocalCluster) -> list[str]:
    """Applications, executors or executor processes still alive on the cluster (empty when idle)."""
    status = cluster.master_json()
    left = [f"active application {app['id']} {app['name']}" for app in status["activeapps"]]
    left += [f"running executor {executor['id']} of {executor['appid']} on {worker['id']}"
             for worker in cluster.workers_json() for executor in worker["executors"]]
    # An executor JVM and its Python workers join their worker's process group.
    for daemon in cluster.daemons():
        for proc in daemon.members():
            try:
                if proc.pid != daemon.pid:
                    left.append(f"process {proc.pid} in the group of {daemon.name}: {proc.cmdline()[:3]}")
            except psutil.NoSuchProcess:
                continue
    return left


def assert_nothing_left(cluster: LocalCluster, settings: Settings) -> None:
    wait_none_left(settings.data_dir, timeout=60)  # the drivers: spark-submit's JVM and Python
    wait_until(lambda: not cluster_leftovers(cluster), 60, "the cluster to have no application or executor")


def test_both_engines_run_side_by_side_on_the_cluster_with_exact_totals(
        cluster: LocalCluster, sqlite_home: Path, settings: Settings, tmp_path: Path) -> None:
    env = cluster_airflow_env(sqlite_home, settings, cluster)
    corpus = publish_corpus(settings, tmp_path / "corpus", seed=61)
    earlier_apps = {app["id"] for app in cluster.master_json()["completedapps"]}
    conf = {"timeout_seconds": STREAM_SECONDS, "batch_seconds": 1}
    runs: dict[Engine, DagTest] = {}
    try:
        # One after the other by a few seconds: two `dags test` writing the same DAG file's rows into
        # one fresh SQLite database at the same instant could collide; the streams still overlap.
        # DStream first: its graceful stop also runs the batches queued behind a slow first one.
        start_order: tuple[Engine, ...] = ("dstream", "structured")
        for engine in start_order:
            runs[engine] = DagTest(env, f"stream_{engine}", conf, tmp_path / f"{engine}.log")
            wait_for_state(runs[engine], settings, engine, ("starting", "running"))
        logs = {engine: run.succeeded(timeout=300) for engine, run in runs.items()}
    finally:
        for run in runs.values():
            run.kill()

    expected = reference_counts(corpus, "words")
    placed: dict[Engine, str] = {}
    spans = []
    for engine in ENGINES:
        assert f"--master {cluster.master_url}" in logs[engine], "spark-submit was not given the cluster"
        assert cli_totals(env, engine) == expected, engine
        status = control.read_status(settings.state, engine)
        assert status["state"] == "stopped" and status["reason"].startswith("timeout"), status
        apps = [app for app in apps_named(cluster, f"wordstream-{engine}") if app["id"] not in earlier_apps]
        assert len(apps) == 1, apps
        assert apps[0]["state"] == "FINISHED" and apps[0]["cores"] == 1, apps[0]
        workers = executors_of(cluster, apps[0]["id"])
        assert len(workers) == 1, workers  # one executor: the application's one core
        # The executor logged with the applications' log4j2 file: no per-task INFO lines in its log.
        [executor_log] = (cluster.run_dir / "work").glob(f"*/{apps[0]['id']}/*/stderr")
        chatter = [line for line in executor_log.read_text(errors="replace").splitlines()
                   if " INFO Executor: " in line]
        assert not chatter, chatter[:3]
        placed[engine] = workers[0]
        spans.append((apps[0]["starttime"], apps[0]["starttime"] + apps[0]["duration"]))
    assert max(start for start, _end in spans) < min(end for _start, end in spans), f"no overlap: {spans}"
    assert placed["structured"] != placed["dstream"], placed
    assert_nothing_left(cluster, settings)


def test_reset_stops_a_stream_running_on_the_cluster(
        cluster: LocalCluster, sqlite_home: Path, settings: Settings, tmp_path: Path) -> None:
    """A reset while the first batch may still be running on the executor: it commits or is given back."""
    env = cluster_airflow_env(sqlite_home, settings, cluster)
    stream = DagTest(env, "stream_structured", {"batch_seconds": 1}, tmp_path / "stream.log")
    try:
        wait_for_state(stream, settings, "structured", ("running",))
        [app] = apps_named(cluster, "wordstream-structured", "activeapps")
        assert len(executors_of(cluster, app["id"], "executors")) == 1, "no executor on the workers"
        corpus = publish_corpus(settings, tmp_path / "corpus", seed=62)

        reset = DagTest(env, "streaming_maintenance",
                        {"action": "reset", "engines": ["structured"], "restart": False, "wait_timeout": 120},
                        tmp_path / "reset.log")
        try:
            reset.succeeded(timeout=300)
        finally:
            reset.kill()
        assert stream.proc.wait(timeout=60) == 0, stream.tail()
    finally:
        stream.kill()

    assert not control.is_running(settings.state, "structured")
    assert list(settings.watch("structured").iterdir()) == []
    assert not settings.checkpoint("structured").exists()
    assert not results.batch_dirs(settings.output("structured"))
    [epoch] = list(settings.rotated.iterdir())
    assert (epoch / "checkpoint").is_dir()
    # Nothing lost, nothing counted twice: a file is either in the old epoch's totals or back in landing.
    given_back = {path.name for path in settings.landing.iterdir()}
    assert given_back <= {path.name for path in corpus}, given_back
    counted = [path for path in corpus if path.name not in given_back]
    assert results.read_totals(epoch / "output", "running-totals") == reference_counts(counted, "words")
    assert [done["state"] for done in apps_named(cluster, "wordstream-structured")
            if done["id"] == app["id"]] == ["FINISHED"]
    assert_nothing_left(cluster, settings)


def test_stream_run_with_airflow_metadata_in_postgresql(
        cluster: LocalCluster, settings: Settings, tmp_path: Path) -> None:
    """As in docker-compose.yaml: migrated PostgreSQL metadata, the run recorded there, exact totals."""
    try:
        server_bin_dir()
    except PostgresUnavailable as missing:
        pytest.skip(str(missing))
    with PostgresServer(port=find_free_port()) as server:
        env = cluster_airflow_env(tmp_path / "airflow_home", settings, cluster)
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = server.url("postgresql+psycopg2")
        # SQLite's busy timeout; psycopg2 would reject it as an unknown connection option.
        del env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"]
        migrate(env)
        corpus = publish_corpus(settings, tmp_path / "corpus", seed=63)

        run = DagTest(env, "stream_structured", {"timeout_seconds": STREAM_SECONDS}, tmp_path / "stream.log")
        try:
            run.succeeded(timeout=300)
        finally:
            run.kill()
        assert results.read_totals(settings.output("structured"), "running-totals") == \
            reference_counts(corpus, "words")
        with closing(server.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT state FROM dag_run WHERE dag_id = %s", ("stream_structured",))
            assert cursor.fetchall() == [("success",)]
        server_processes = server.processes()
        assert server_processes, "no PostgreSQL process found while the server runs"
    assert [proc.pid for proc in server_processes if alive(proc)] == []
    assert_nothing_left(cluster, settings)
