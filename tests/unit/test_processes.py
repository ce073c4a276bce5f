"""Finding and stopping processes with real ones: renamed like Airflow's task processes, in sessions
of their own, appearing while the others stop."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
import pytest
from support import processes_using

from wordstream_dev.processes import detached_processes_in, has_terminal, stop_processes
from wordstream_dev.stack import STACK_ID_ENV, Stack

# What Airflow's task runner does once its supervisor hands it the task: rename itself, which
# overwrites the command line and the environment /proc shows.
RENAMED = ("import setproctitle, time\n"
           "setproctitle.setproctitle('airflow worker -- 0199a2b4-task')\n"
           "print('ready', flush=True)\n"
           "time.sleep(600)\n")
PLAIN = "import time; print('ready', flush=True); time.sleep(600)"
# And its answer to SIGTERM: the operator's on_kill, then on with the task (a sensor keeps poking).
TASK_RUNNER = "import signal\nsignal.signal(signal.SIGTERM, lambda signum, frame: None)\n" + RENAMED


def clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name != STACK_ID_ENV and not name.startswith("AIRFLOW")}
    return {**env, **extra}


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The test's processes, each in a session of its own; killed whatever the test did."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_renamed(procs: list[subprocess.Popen[bytes]], cwd: Path, env: Mapping[str, str] | None = None,
                  script: str = RENAMED, **popen: object) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-c", script], cwd=cwd, env=dict(env or clean_env()), stdout=subprocess.PIPE,
        start_new_session=True, **popen)
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_a_renamed_process_shows_neither_its_command_nor_its_environment(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """Why the stack cannot rely on its id in the environment alone."""
    proc = start_renamed(started, tmp_path, clean_env(**{STACK_ID_ENV: "abc"}))
    seen = psutil.Process(proc.pid)
    assert STACK_ID_ENV not in seen.environ()
    assert sys.executable not in " ".join(seen.cmdline())
    assert Path(seen.cwd()) == tmp_path


def recorded_stack(tmp_path: Path, messages: list[str]) -> Stack:
    """A stack whose run directory records a start (its Airflow long gone), as after a crash."""
    stack = Stack(airflow_home=tmp_path / "airflow_home", data_dir=tmp_path / "data",
                  run_dir=tmp_path / "run", env=clean_env(), progress=messages.append, grace_seconds=20.0)
    stack.instance.airflow_home.mkdir(parents=True)
    stack.run_dir.mkdir(parents=True)
    stack.state_file.write_text(json.dumps({"stack_id": "f00d", "data_dir": str(stack.instance.data_dir),
                                            "airflow_home": str(stack.instance.airflow_home)}))
    return stack


def test_stop_ends_a_task_process_that_only_its_working_directory_ties_to_the_stack(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """A task process in a session of its own, renamed, without the stack id: its cwd is the home.
    Like Airflow's task runner it carries on after a SIGTERM: the SIGINT Airflow would send ends it."""
    messages: list[str] = []
    stack = recorded_stack(tmp_path, messages)
    orphan = start_renamed(started, stack.instance.airflow_home, script=TASK_RUNNER)

    assert [proc.pid for proc in stack.processes()] == [orphan.pid]
    stack.stop()

    assert orphan.wait(timeout=30) == -signal.SIGINT, "ended by SIGINT, not by the SIGKILL after the grace"
    assert not stack.processes()
    assert not stack.state_file.exists()
    assert "stack stopped: no process left running" in messages


def test_a_shell_with_a_terminal_in_the_home_is_not_the_stacks(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """Only processes without a controlling terminal count: a user's shell there is left alone."""
    stack = recorded_stack(tmp_path, [])
    controller, terminal = os.openpty()
    try:
        shell = start_renamed(started, stack.instance.airflow_home, stdin=terminal,
                              preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    finally:
        os.close(terminal)
    try:
        assert has_terminal(psutil.Process(shell.pid))
        assert not detached_processes_in(stack.instance.airflow_home)
        assert not stack.processes()
        assert [proc.pid for proc in processes_using(tmp_path)] == [shell.pid]  # a test's check sees it
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=30)
        os.close(controller)


def test_the_leak_check_sees_processes_by_working_directory_and_airflow_home(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """The command line names nothing of the folder: the cwd or the AIRFLOW_HOME under it tells."""
    (tmp_path / "home" / "logs").mkdir(parents=True)
    working = start_renamed(started, tmp_path / "home" / "logs")
    homed = start_renamed(started, Path("/"), clean_env(AIRFLOW_HOME=str(tmp_path / "home")), PLAIN)
    elsewhere = start_renamed(started, Path("/"))

    found = {proc.pid for proc in processes_using(tmp_path)}
    assert working.pid in found and homed.pid in found
    assert elsewhere.pid not in found
    assert os.getpid() not in found


def test_a_process_appearing_while_the_others_stop_gets_the_same_signal(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """A process first listed after the SIGTERM went out gets its SIGTERM too, not a late SIGKILL."""
    start_renamed(started, tmp_path)
    listings: list[int] = []

    def find() -> list[psutil.Process]:
        listings.append(len(listings))
        if len(listings) == 2:  # forked between the first listing and the next
            start_renamed(started, tmp_path)
        return [psutil.Process(proc.pid) for proc in started if proc.poll() is None]

    left = stop_processes(find, grace=20.0)

    assert left == []
    assert len(started) == 2
    assert [proc.returncode for proc in started] == [-signal.SIGTERM, -signal.SIGTERM]
