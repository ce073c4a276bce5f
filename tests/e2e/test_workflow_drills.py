"""Fault drills that need the real scheduler: the streaming task marked failed, or cleared, through
the REST API must take its whole Spark application down within seconds."""

from __future__ import annotations

import time

import psutil
import pytest
from support import processes_mentioning, wait_until

from wordstream import control
from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.drill]

TASK = "run_stream"
KILL_DEADLINE = 10.0


def spark_processes(stack: Stack) -> list[psutil.Process]:
    """The driver JVM, the Python driver and its Python workers all carry the data dir in argv/env."""
    watch = str(stack.settings.watch("structured"))
    return processes_mentioning(watch)


def start_stream(stack: Stack, api: AirflowClient) -> str:
    api.unpause("stream_structured")
    for active in api.list_dag_runs("stream_structured", states=("queued", "running")):
        api.set_task_instance_state("stream_structured", active["dag_run_id"], TASK, "failed")
    wait_until(lambda: not control.is_running(stack.settings.state, "structured"), 60, "no stream")
    run_id: str = api.trigger_dag_run("stream_structured", conf={"batch_seconds": 1})["dag_run_id"]
    wait_until(lambda: control.read_status(stack.settings.state, "structured").get("state") == "running",
               240, "the stream to run")
    assert spark_processes(stack), "no Spark process found while the stream runs"
    return run_id


def test_mark_failed_kills_the_spark_application(stack: Stack, api: AirflowClient) -> None:
    run_id = start_stream(stack, api)
    marked = time.monotonic()
    api.mark_task_failed("stream_structured", run_id, TASK)
    wait_until(lambda: not spark_processes(stack), KILL_DEADLINE + 5, "the Spark application to exit")
    elapsed = time.monotonic() - marked
    assert elapsed <= KILL_DEADLINE, f"Spark outlived the failed task by {elapsed:.1f} s"
    assert api.task_instance("stream_structured", run_id, TASK)["state"] == "failed"


def test_clear_restarts_the_stream_without_an_orphan(stack: Stack, api: AirflowClient) -> None:
    run_id = start_stream(stack, api)
    first_pid = control.read_status(stack.settings.state, "structured")["pid"]
    api.clear_task_instance("stream_structured", run_id, TASK)
    wait_until(lambda: control.read_status(stack.settings.state, "structured").get("pid") != first_pid
               and control.read_status(stack.settings.state, "structured").get("state") == "running",
               240, "the cleared task to start a new driver")
    alive = {p.pid for p in spark_processes(stack)}
    assert first_pid not in alive, "the old driver outlived the clear"
    api.mark_task_failed("stream_structured", run_id, TASK)
    wait_until(lambda: not spark_processes(stack), KILL_DEADLINE + 5, "the Spark application to exit")
