"""The real stack for end-to-end tests: Airflow standalone in temporary folders, on free ports.

One stack for all e2e tests (starting Airflow costs about 15 s of two CPUs), stopped as soon as
the last e2e test is done, so it does not idle beside the Spark tests that run after it. It is
isolated from a developer's running ``make run``: its own AIRFLOW_HOME, data directory, run
directory and ports, and an environment without the caller's ``AIRFLOW*`` variables (the DAG tests
set some in-process). Stopping it fails the run if any of its processes, or any process using its
folders, is still alive.

The browser of the UI test is pytest-playwright's, launched on Debian's Chromium (installed through
apt when missing), not on a browser Playwright would download.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import group_members, wait_none_left

from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.prerequisites import MissingPrerequisite, ensure_chromium
from wordstream_dev.processes import free_ports
from wordstream_dev.stack import Stack

E2E_DIR = Path(__file__).resolve().parent
_running: list[Stack] = []


def stop_and_check(stack: Stack) -> None:
    """Stop the stack and prove nothing of it is left: by stack id, process group and its folders."""
    recorded = stack.recorded()
    stack.stop()
    left = stack.processes()  # still knows the stack id after stop
    assert not left, f"left running: {left}"
    group = recorded.get("airflow_pid")
    if group:
        assert not group_members(int(group)), f"Airflow's process group {group} still has members"
    wait_none_left(stack.instance.airflow_home, stack.instance.data_dir, stack.run_dir)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared stack right after the last e2e test instead of at the end of the session.

    Last of the teardown hooks: the module fixtures that still use the stack are finalized before.
    """
    if _running and (nextitem is None or E2E_DIR not in Path(str(nextitem.path)).parents):
        stop_and_check(_running.pop())


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A started :class:`~wordstream_dev.stack.Stack`; DAGs are registered but still paused."""
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
    _running.append(started)
    try:
        started.start()
        yield started
    finally:
        if started in _running:
            _running.remove(started)
            stop_and_check(started)


@pytest.fixture(scope="session")
def api(stack: Stack) -> AirflowClient:
    """A REST API client logged in as ``admin``."""
    return stack.client()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright launches Debian's Chromium; a machine that cannot have it fails in one line."""
    try:
        chromium = ensure_chromium()
    except MissingPrerequisite as exc:
        pytest.fail(str(exc), pytrace=False)
    return {**browser_type_launch_args, "executable_path": str(chromium)}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1440, "height": 1000}}
