"""The real stack for end-to-end tests: Airflow standalone in temporary folders, on free ports.

One stack per test session (starting Airflow costs half a minute of two CPUs). It is isolated from a
developer's running ``make run``: its own AIRFLOW_HOME, data directory, run directory and ports,
and an environment without the caller's ``AIRFLOW*`` variables (the DAG tests set some in-process).
Teardown stops it and fails the session if any of its processes, or any process using its data
directory, is still alive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import group_members, processes_mentioning, wait_until

from wordstream.airflow_api import AirflowClient
from wordstream.cluster import find_free_port
from wordstream.stack import Stack


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now."""
    ports: list[int] = []
    while len(ports) < count:
        port = find_free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A started :class:`~wordstream.stack.Stack`; DAGs are registered but still paused."""
    root: Path = tmp_path_factory.mktemp("stack")
    api_port, worker_log_port, trigger_log_port = free_ports(3)
    base_env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    started = Stack(
        airflow_home=root / "airflow_home",
        data_dir=root / "data",
        run_dir=root / "run",
        port=api_port,
        worker_log_port=worker_log_port,
        trigger_log_port=trigger_log_port,
        env=base_env,
        stream_stop_timeout=60.0,
        grace_seconds=15.0,
    )
    try:
        started.start()
        yield started
    finally:
        group = started.recorded().get("airflow_pid")
        started.stop()
        assert not started.processes(), f"left running: {started.processes()}"
        if group:
            assert not group_members(int(group)), f"Airflow's process group {group} still has members"
        data_dir = str(started.instance.data_dir)
        wait_until(lambda: not processes_mentioning(data_dir), 30, f"every process using {data_dir} to exit")


@pytest.fixture(scope="session")
def api(stack: Stack) -> AirflowClient:
    """A REST API client logged in as ``admin``."""
    return stack.client()
