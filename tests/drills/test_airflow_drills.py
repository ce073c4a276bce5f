"""Drills under the real scheduler, on a stack of their own (Airflow is killed and restarted here).

Both streams run under Airflow, triggered through the REST API with Params; files arrive in landing
and are staged by the real `stage_incoming_files` DAG. In order:

1. bad Params in a trigger are refused with a 400 that names the param;
2. Airflow's API and every socket of the running Spark applications listen on loopback only;
3. kill -9 in the middle of a batch (the structured Python driver, the DStream spark-submit JVM):
   the task's retry starts the driver again, it recovers from its checkpoint, totals stay exact;
4. every Airflow process is killed (scheduler, API server, DAG processor, triggerer, executor
   workers and the task processes; not Spark), then Airflow is started again on the same home: the
   drivers stop by themselves, Airflow re-runs the orphaned task, totals stay exact, one driver per
   engine, and a graceful stop ends the run as success.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from probes import (
    add_counts,
    busy_for,
    driver_processes,
    is_loopback,
    listening,
    sha256_of,
    spark_processes,
    spark_ui,
    write_repeated,
)
from support import (
    assert_totals_stay,
    corpus_text,
    reference_counts,
    wait_none_left,
    wait_until,
    write_corpus,
)

from wordstream import control, results
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Settings
from wordstream_dev.airflow_api import AirflowApiError, AirflowClient
from wordstream_dev.processes import free_ports
from wordstream_dev.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.drill]

TASK = "run_stream"
STREAM_CONF = {"keys": "words", "batch_seconds": 2, "timeout_seconds": 0}
BIG_FILE_COPIES = 150  # one batch of several seconds for both engines


@dataclass
class Feed:
    """What producers dropped into landing so far, and the totals every engine must reach."""

    settings: Settings
    references: dict[Path, dict[str, int]] = field(default_factory=dict)

    def land(self, paths: list[Path], references: dict[Path, dict[str, int]] | None = None) -> None:
        for path in paths:
            self.references[path] = (references or {}).get(path) or reference_counts([path], "words")
            temp = self.settings.landing / f".{path.name}.part"
            temp.write_bytes(path.read_bytes())
            os.replace(temp, self.settings.landing / path.name)

    def expected(self) -> dict[str, int]:
        return add_counts(*self.references.values())

    def wait_exact(self, folder: Path, timeout: float = 240) -> None:
        """Every engine's totals equal the reference, and stay so one batch more (the file of that
        batch, written to ``folder``, joins the references)."""
        for engine in ENGINES:
            output = self.settings.output(engine)
            assert_totals_stay(lambda output=output, engine=engine: results.read_totals(
                output, results.SEMANTICS[engine]), self.expected(), self.land, folder,
                f"{engine} totals of {len(self.references)} files", timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own: the drills kill and restart its Airflow."""
    root = tmp_path_factory.mktemp("drill-stack")
    api_port, worker_log_port, trigger_log_port = free_ports(3)
    started = Stack(
        airflow_home=root / "airflow_home", data_dir=root / "data", run_dir=root / "run",
        port=api_port, worker_log_port=worker_log_port, trigger_log_port=trigger_log_port,
        env={name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")},
        stream_stop_timeout=60.0, grace_seconds=15.0,
    )
    try:
        started.start()
        yield started
    finally:
        started.stop()
        assert not started.processes(), f"left running: {started.processes()}"
        wait_none_left(root)


@pytest.fixture(scope="module")
def api(stack: Stack) -> AirflowClient:
    client = stack.client()
    assert not client.wait_for_dags(["stream_structured", "stream_dstream", "stage_incoming_files"],
                                    timeout=180)
    return client


@pytest.fixture(scope="module")
def feed(stack: Stack) -> Feed:
    return Feed(stack.settings)


@pytest.fixture(scope="module")
def streams(stack: Stack, api: AirflowClient) -> dict[str, str]:
    """Both streams running under Airflow; engine -> the DAG run id."""
    for dag_id in ("stage_incoming_files", "stream_structured", "stream_dstream"):
        api.unpause(dag_id)
    runs = {engine: api.trigger_dag_run(f"stream_{engine}", conf=STREAM_CONF)["dag_run_id"]
            for engine in ENGINES}
    for engine in ENGINES:
        wait_until(lambda engine=engine: status(stack, engine)["state"] == "running", 300,
                   f"{engine} to be running")
    return runs


def status(stack: Stack, engine: str) -> dict[str, object]:
    return control.read_status(stack.settings.state, engine)


def one_driver(stack: Stack, engine: str) -> int:
    """The pid of the engine's only driver; the status file and the lock agree with it."""
    drivers = driver_processes(stack.settings.data_dir, engine)
    assert len(drivers) == 1, f"{engine}: {len(drivers)} drivers: {drivers}"
    current = status(stack, engine)
    assert current["state"] == "running" and current["lock_held"], current
    assert current["pid"] == drivers[0].pid, current
    return drivers[0].pid


def try_number(api: AirflowClient, engine: str, run_id: str) -> int:
    return int(api.task_instance(f"stream_{engine}", run_id, TASK)["try_number"])


def restarted(stack: Stack, api: AirflowClient, engine: str, run_id: str, old_pid: object,
              old_try: int) -> bool:
    """The run's task is running a later try, and it has a new driver that is running."""
    ti = api.task_instance(f"stream_{engine}", run_id, TASK)
    current = status(stack, engine)
    return (ti["state"] == "running" and int(ti["try_number"]) > old_try
            and current["state"] == "running" and current["pid"] != old_pid)


# -- 1. bad Params ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"keys": "bogus"}, "Invalid input for param keys: 'bogus' is not one of ['words', 'lines']"),
        ({"batch_seconds": 0.1},
         "Invalid input for param batch_seconds: 0.1 is less than the minimum of 0.25"),
        ({"batch_seconds": "2"}, "Invalid input for param batch_seconds: '2' is not of type 'number'"),
        ({"shuffle_partitions": 0},
         "Invalid input for param shuffle_partitions: 0 is less than the minimum of 1"),
        ({"state_store": "memory"},
         "Invalid input for param state_store: 'memory' is not one of ['rocksdb', 'hdfs']"),
        ({"timeout_seconds": -5},
         "Invalid input for param timeout_seconds: -5 is less than the minimum of 0"),
    ],
    ids=["keys-bogus", "batch-seconds-0.1", "batch-seconds-string", "shuffle-partitions-0",
         "state-store-bogus", "timeout-negative"],
)
def test_bad_params_are_refused_naming_the_param(api: AirflowClient, conf: dict[str, object],
                                                 message: str) -> None:
    before = len(api.list_dag_runs("stream_structured"))
    with pytest.raises(AirflowApiError) as refused:
        api.trigger_dag_run("stream_structured", conf=conf)
    assert refused.value.status == 400
    assert refused.value.detail.splitlines()[0] == message
    assert len(api.list_dag_runs("stream_structured")) == before  # no run was created


# -- 2. listening addresses -------------------------------------------------------------------------
def non_loopback_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not is_loopback(address.address):
                return str(address.address)
    return None


def test_api_and_spark_listen_on_loopback_only(stack: Stack, streams: dict[str, str]) -> None:
    api_owner = [conn for conn in psutil.net_connections(kind="tcp") if conn.status == psutil.CONN_LISTEN
                 and conn.laddr and conn.laddr.port == stack.instance.port]
    assert api_owner, f"nothing listens on the API port {stack.instance.port}"
    assert all(is_loopback(conn.laddr.ip) for conn in api_owner), [conn.laddr for conn in api_owner]

    ports = listening(proc.pid for proc in spark_processes(stack.settings.data_dir))
    assert ports, "no listening socket of the Spark applications found"
    wide = {port: addresses for port, addresses in ports.items()
            if not all(is_loopback(address) for address in addresses)}
    assert not wide, f"Spark listens beyond loopback: {wide}"
    outside = non_loopback_address()
    for engine in ENGINES:
        ui = spark_ui(int(status(stack, engine)["pid"]))  # type: ignore[call-overload]
        ui_port = int(ui.rsplit(":", 1)[1])
        assert ui_port >= 4040
        if outside is not None:  # the UI must not answer on the machine's other addresses
            with socket.socket() as probe, pytest.raises(OSError):
                probe.settimeout(5)
                probe.connect((outside, ui_port))


# -- 3. kill -9 in the middle of a batch ------------------------------------------------------------
def kill_in_flight(stack: Stack, engine: str, sha256: str, target: str) -> tuple[int, bool]:
    """When the big file's batch is running, SIGKILL the driver (``python``) or its JVM (``jvm``).

    Returns the killed driver's pid and whether the batch was still uncommitted at the kill.
    """
    ledger = Ledger(stack.settings.ledger)

    def delivery_state() -> str | None:
        delivery = ledger.deliveries(sha256).get(engine)
        return None if delivery is None else delivery.state

    wait_until(lambda: delivery_state() in ("published", "processed"), 120,
               f"the big file staged to {engine}")
    pid = int(status(stack, engine)["pid"])  # type: ignore[call-overload]
    ui = spark_ui(pid)
    wait_until(lambda: busy_for(ui, 0.2) or delivery_state() == "processed", 120, f"{engine}'s big batch")
    victim = pid if target == "python" else psutil.Process(pid).ppid()
    in_flight = delivery_state() == "published"  # marked processed only after the commit
    os.kill(victim, signal.SIGKILL)
    return pid, in_flight


def test_kill_9_mid_batch_is_retried_and_totals_stay_exact(stack: Stack, api: AirflowClient, feed: Feed,
                                                           streams: dict[str, str], tmp_path: Path) -> None:
    feed.land(write_corpus(tmp_path / "first", files=4, seed=301))
    feed.wait_exact(tmp_path / "sentinels")
    tries = {engine: try_number(api, engine, streams[engine]) for engine in ENGINES}

    big = tmp_path / "big.txt"
    unit = corpus_text(random.Random(302), 200).rstrip("\r\n") + "\n"
    feed.land([big], {big: write_repeated(big, unit, BIG_FILE_COPIES)})
    sha256 = sha256_of(big)
    killed = {}
    for engine, target in (("structured", "python"), ("dstream", "jvm")):
        killed[engine], in_flight = kill_in_flight(stack, engine, sha256, target)
        assert in_flight, f"{engine}: the big batch had committed before the kill; make the file bigger"
    for engine in ENGINES:
        wait_until(lambda engine=engine: status(stack, engine)["state"] == "failed", 60,
                   f"{engine} to be seen failed")

    for engine in ENGINES:  # retry_delay is 20 s, then the driver starts from its checkpoint
        wait_until(lambda engine=engine: restarted(stack, api, engine, streams[engine], killed[engine],
                                                   tries[engine]), 240, f"the retry of {engine}")
    feed.wait_exact(tmp_path / "sentinels")  # the next drill lands more files on these drivers
    for engine in ENGINES:
        one_driver(stack, engine)
        assert api.get_dag_run(f"stream_{engine}", streams[engine])["state"] == "running"


# -- 4. Airflow killed and started again --------------------------------------------------------------
def test_airflow_killed_and_restarted_keeps_exact_totals(stack: Stack, api: AirflowClient, feed: Feed,
                                                         streams: dict[str, str], tmp_path: Path) -> None:
    data_dir = stack.settings.data_dir
    drivers = {engine: one_driver(stack, engine) for engine in ENGINES}
    tries = {engine: try_number(api, engine, streams[engine]) for engine in ENGINES}
    feed.land(write_corpus(tmp_path / "before-crash", files=3, seed=401))

    spark = {proc.pid for proc in spark_processes(data_dir)}
    airflow = [proc for proc in stack.processes() if proc.pid not in spark]
    assert airflow and spark
    for proc in airflow:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    killed_at = time.monotonic()
    psutil.wait_procs(airflow, timeout=30)

    # The drivers notice their launcher is gone and stop gracefully; nothing of Spark stays behind.
    for engine in ENGINES:
        wait_until(lambda engine=engine: not control.is_running(stack.settings.state, engine), 60,
                   f"{engine} to stop without Airflow")
        final = status(stack, engine)
        assert final["state"] == "stopped" and final["reason"] == "launcher exited", final
    wait_until(lambda: not spark_processes(data_dir), 60, "every Spark process to exit")
    print(f"Spark stopped {time.monotonic() - killed_at:.1f} s after Airflow was killed")

    feed.land(write_corpus(tmp_path / "during-outage", files=2, seed=402))
    stack.start()  # the same home and run directory: what `make run` does after a crash
    api = stack.client()
    print(f"Airflow answered again {time.monotonic() - killed_at:.1f} s after it was killed")

    # Airflow resets the orphaned task (its scheduler is gone) and runs it again: same run, next try.
    for engine in ENGINES:
        wait_until(lambda engine=engine: restarted(stack, api, engine, streams[engine], drivers[engine],
                                                   tries[engine]), 300, f"Airflow to run {engine} again")
    print(f"streams running again {time.monotonic() - killed_at:.1f} s after Airflow was killed")
    feed.land(write_corpus(tmp_path / "after-restart", files=2, seed=403))
    feed.wait_exact(tmp_path / "sentinels")
    for engine in ENGINES:
        one_driver(stack, engine)

    # The record stays truthful: a graceful stop ends each run as success, nothing left running.
    tokens = {engine: control.request_stop(stack.settings.state, engine) for engine in ENGINES}
    for engine in ENGINES:
        api.wait_for_dag_run(f"stream_{engine}", streams[engine], states=("success",), timeout=180)
        assert not control.is_running(stack.settings.state, engine)
        assert not driver_processes(data_dir, engine)
        control.clear_stop(stack.settings.state, engine, tokens[engine])
