"""What an operator does to the session's stack through the REST API: unpause, start a stream, reset.

Only the REST API and the files of the data directory: the e2e tests drive Airflow as a person or a
script would, never through the scheduler's internals.
"""

from __future__ import annotations

from collections.abc import Iterable

from support import wait_until

from wordstream import control
from wordstream.settings import DAG_IDS, MAINTENANCE_DAG_ID, Engine, Settings, stream_dag_id
from wordstream_dev.airflow_api import AirflowClient

STREAM_CONF = {"keys": "words", "batch_seconds": 1, "timeout_seconds": 0}


def unpause_all(api: AirflowClient) -> None:
    """Every DAG of the project registered (no import error) and unpaused."""
    assert not api.wait_for_dags(DAG_IDS, timeout=180), api.import_errors()
    for dag_id in DAG_IDS:
        api.unpause(dag_id)


def start_stream(api: AirflowClient, engine: Engine) -> str:
    """Trigger the engine's streaming DAG with :data:`STREAM_CONF`; returns the run id."""
    return str(api.trigger_dag_run(stream_dag_id(engine), conf=STREAM_CONF)["dag_run_id"])


def wait_running(settings: Settings, engines: Iterable[Engine], timeout: float = 240) -> None:
    for engine in engines:
        wait_until(lambda engine=engine: control.read_status(settings.state, engine)["state"] == "running",
                   timeout, f"{engine} to be running")


def reset(api: AirflowClient, engines: Iterable[Engine], restart: bool) -> None:
    """``streaming_maintenance`` with ``action=reset``, waited for until it succeeded."""
    run = api.trigger_dag_run(MAINTENANCE_DAG_ID, conf={
        "action": "reset", "engines": list(engines), "restart": restart, "wait_timeout": 120})
    api.wait_for_dag_run(MAINTENANCE_DAG_ID, run["dag_run_id"], timeout=300)
