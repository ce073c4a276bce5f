"""The local stack: Airflow standalone with this project's DAGs, started and stopped as one unit.

Usage::

    python -m wordstream_dev.stack run      # start, unpause the DAGs, start a stream; Ctrl-C stops all
    python -m wordstream_dev.stack stop     # from another shell: stop what `run` started
    python -m wordstream_dev.stack status   # is it up, where, and what the streams are doing

``airflow standalone`` does not stop its children on SIGTERM, and Airflow runs each task in a
process group of its own, so "stop Airflow" is done here, for every process the stack started:

1. the streams first, gracefully (stop marker, so the running batch commits), with a timeout;
2. Airflow's process group (SIGTERM, a grace period, then SIGKILL), together with every process
   that carries this stack's id in its environment or works in its AIRFLOW_HOME (task processes
   and the Spark they launched left that group but inherited both); task processes get a SIGINT
   first, as Airflow's own supervisor does (they carry on after a SIGTERM);
3. any leftover Spark application of this repo working on this stack's data directory.

The run directory (``<repo>/run``, or ``WORDSTREAM_RUN_DIR``) holds ``airflow.log``, ``stack.pid``
(the ``run`` process, which ``stop`` signals) and ``stack.json`` (what was started, so ``stop`` works
even when ``run`` is gone).

From Python (the e2e tests, the benchmarks) every location and port can be overridden::

    api_port, worker_log_port, trigger_log_port = free_ports(3)  # wordstream_dev.processes
    with Stack(airflow_home=tmp / "home", data_dir=tmp / "data", run_dir=tmp / "run", port=api_port,
               worker_log_port=worker_log_port, trigger_log_port=trigger_log_port) as stack:
        api = stack.client()
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import psutil

from wordstream import Progress, control
from wordstream.durable import write_json_atomically
from wordstream.settings import DAG_IDS, ENGINES, Engine, Settings, stream_dag_id
from wordstream_dev.airflow_api import HEALTH_COMPONENTS, AirflowApiError, AirflowClient
from wordstream_dev.airflow_env import ADMIN_USER, AirflowInstance
from wordstream_dev.prerequisites import java_problem
from wordstream_dev.processes import (
    LoggedProcess,
    alive,
    creation_time,
    describe,
    detached_processes_in,
    log_tail,
    names,
    port_in_use,
    port_owner,
    processes_mentioning,
    processes_with_env,
    recorded_group,
    started_process,
    stop_processes,
)

STARTED_STREAM = stream_dag_id("structured")
STACK_ID_ENV = "WORDSTREAM_STACK_ID"
STATE_FILE = "stack.json"
PID_FILE = "stack.pid"
LOG_FILE = "airflow.log"
DB_STAMP = ".wordstream-db-version"


def say(message: str) -> None:
    print(message, flush=True)


class StackError(RuntimeError):
    """The stack cannot start or stop; the message is one line a user can act on."""


# -- the stack ----------------------------------------------------------------------------------
class Stack:
    """One Airflow standalone for this repo's DAGs, with its own home, data directory and ports.

    ``start()`` returns when the API server answers and scheduler, DAG processor and triggerer are
    healthy; ``stop()`` leaves no process of the stack behind. Both are idempotent, and a ``Stack``
    built with the same directories in another process can stop one started elsewhere.
    """

    def __init__(
        self,
        repo_dir: Path | None = None,
        airflow_home: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        run_dir: Path | None = None,
        bind: str | None = None,
        worker_log_port: int | None = None,
        trigger_log_port: int | None = None,
        env: Mapping[str, str] | None = None,
        progress: Progress = say,
        start_timeout: float = 300.0,
        stream_stop_timeout: float = 90.0,
        grace_seconds: float = 20.0,
    ) -> None:
        self.base_env = dict(os.environ if env is None else env)
        self.instance = AirflowInstance.from_env(
            self.base_env, repo_dir=repo_dir, airflow_home=airflow_home, data_dir=data_dir, port=port,
            bind=bind, worker_log_port=worker_log_port, trigger_log_port=trigger_log_port,
        )
        self.run_dir = Path(run_dir or self.base_env.get("WORDSTREAM_RUN_DIR")
                            or self.instance.repo_dir / "run").resolve()
        self.progress = progress
        self.start_timeout = start_timeout
        self.stream_stop_timeout = stream_stop_timeout
        self.grace_seconds = grace_seconds
        self._airflow: LoggedProcess | None = None  # when started by this object
        self._last_state: dict[str, Any] = {}  # kept after stop() so processes() can still check

    # -- locations ------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return Settings.from_env({**self.base_env, "WORDSTREAM_DATA_DIR": str(self.instance.data_dir)})

    @property
    def api_url(self) -> str:
        return self.instance.api_url

    @property
    def log_file(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def state_file(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def pid_file(self) -> Path:
        return self.run_dir / PID_FILE

    @property
    def samples_dir(self) -> Path:
        return self.instance.repo_dir / "samples"

    @property
    def spark_apps_dir(self) -> Path:
        return self.instance.repo_dir / "spark_apps"

    def environment(self, stack_id: str | None = None) -> dict[str, str]:
        """Airflow's environment (:mod:`wordstream_dev.airflow_env`), tagged with this stack's id."""
        env = self.instance.environment(self.base_env)
        # A caller's test configuration or config file must not leak into a real Airflow.
        for name in ("AIRFLOW_CONFIG", "AIRFLOW__CORE__UNIT_TEST_MODE"):
            env.pop(name, None)
        if stack_id:
            env[STACK_ID_ENV] = stack_id
        return env

    # -- recorded state -------------------------------------------------------------------------
    def recorded(self) -> dict[str, Any]:
        """What ``stack.json`` says this run directory started (empty when nothing)."""
        try:
            state = dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StackError(f"unreadable {self.state_file}: {exc}; remove it after checking `ps`") from None
        self._last_state = state
        return state

    def _airflow_leader(self, state: Mapping[str, Any]) -> psutil.Process | None:
        """The recorded ``airflow standalone`` process, if it is still that process."""
        pid = state.get("airflow_pid")
        return started_process(int(pid), float(state.get("airflow_create_time", 0))) if pid else None

    def is_running(self) -> bool:
        """True while the recorded ``airflow standalone`` of this run directory is alive."""
        return self._airflow_leader(self.recorded()) is not None

    def processes(self) -> list[psutil.Process]:
        """Every live process this stack started: Airflow's group, tasks, and Spark on our data.

        Recognised by Airflow's process group; by the stack id in the environment (inherited by
        everything Airflow forks or execs, also after a task moves to a process group of its own);
        by the working directory, AIRFLOW_HOME, where Airflow starts and every process it forks
        inherits: a task process renames itself (``airflow worker -- <ti>``), which blanks the
        environment ``/proc`` shows, and sits in a group of its own, so once its supervisor is gone
        only that directory still tells it is ours (shells and editors with a terminal are left
        alone); and by a Spark command line naming this repo's ``spark_apps`` and this stack's data
        directory. After :meth:`stop` the last recorded stack is still checked, so a test can prove
        it is gone.
        """
        state = self.recorded() or self._last_state
        found: dict[int, psutil.Process] = {}
        if state.get("airflow_pid"):
            group = recorded_group(int(state["airflow_pid"]), float(state.get("airflow_create_time", 0)))
            found.update((proc.pid, proc) for proc in group)
        apps = str(self.spark_apps_dir) + os.sep
        data = str(self.instance.data_dir) + os.sep
        found.update((proc.pid, proc) for proc in processes_mentioning(apps, data))
        found.update((proc.pid, proc) for proc in detached_processes_in(self.instance.airflow_home))
        if state.get("stack_id"):
            found.update((proc.pid, proc) for proc in processes_with_env(STACK_ID_ENV, state["stack_id"]))
        found.pop(os.getpid(), None)
        return list(found.values())

    # -- checks ---------------------------------------------------------------------------------
    def check_prerequisites(self) -> None:
        """One clear line per problem: Java for Spark, the airflow command, free ports."""
        problem = java_problem(self.base_env)
        if problem:
            raise StackError(problem)
        if not os.access(self.airflow_bin, os.X_OK):
            raise StackError(f"{self.airflow_bin} not found: run `make setup` first")
        names = {self.instance.port: "API server / UI", self.instance.worker_log_port: "worker log server",
                 self.instance.trigger_log_port: "triggerer log server"}
        for port, what in names.items():
            host = self.instance.bind if port == self.instance.port else "0.0.0.0"
            if port_in_use(port, host):
                owner = port_owner(port)
                held_by = f" by {describe(owner)}" if owner else ""
                hint = "WORDSTREAM_AIRFLOW_PORT" if port == self.instance.port else (
                    "WORDSTREAM_WORKER_LOG_PORT" if port == self.instance.worker_log_port
                    else "WORDSTREAM_TRIGGER_LOG_PORT")
                raise StackError(f"port {port} ({what}) is already in use{held_by}: stop that or choose "
                                 f"another port with {hint}=...")

    @property
    def airflow_bin(self) -> Path:
        return Path(sys.executable).parent / "airflow"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Stack:
        """Prepare AIRFLOW_HOME, start ``airflow standalone`` in its own session, wait for health."""
        if self.is_running():
            self.progress(f"Airflow already running for {self.instance.airflow_home} at {self.api_url}")
            return self
        if self.recorded():
            self.progress("an earlier stack in this run directory was not stopped: cleaning up first")
            self.stop()
        self.check_prerequisites()
        self.prepare()
        stack_id = uuid.uuid4().hex
        env = self.environment(stack_id)
        self._rotate_log()
        with open(self.log_file, "ab") as log:
            log.write(f"==== wordstream stack {stack_id} starting {datetime.now(UTC).isoformat()}\n".encode())
        # Own session: Ctrl-C in the terminal reaches only `stack run`, which then stops the streams
        # before Airflow; and killpg reaches every Airflow component at once.
        self._airflow = LoggedProcess([str(self.airflow_bin), "standalone"], self.log_file, env=env,
                                      cwd=self.instance.airflow_home).start()
        self._write_state({
            "stack_id": stack_id, "airflow_pid": self._airflow.pid,
            "airflow_create_time": creation_time(self._airflow.pid),
            "api_url": self.api_url, "airflow_home": str(self.instance.airflow_home),
            "data_dir": str(self.instance.data_dir), "port": self.instance.port,
            "log": str(self.log_file), "started_at": datetime.now(UTC).isoformat(),
        })
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def prepare(self) -> None:
        """Create the folders and migrate the metadata DB only when it is new or Airflow changed."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.instance.airflow_home.mkdir(parents=True, exist_ok=True)
        self.settings.ensure_dirs()
        version = metadata.version("apache-airflow-core")
        stamp = self.instance.airflow_home / DB_STAMP
        if self.instance.database.exists() and stamp.exists() and stamp.read_text().strip() == version:
            return
        self.progress(f"preparing the Airflow metadata database in {self.instance.airflow_home} ...")
        with open(self.log_file, "ab") as log:
            result = subprocess.run([str(self.airflow_bin), "db", "migrate"], env=self.environment(),
                                    stdout=log, stderr=subprocess.STDOUT, cwd=self.instance.airflow_home,
                                    timeout=600, check=False)
        if result.returncode != 0:
            raise StackError(f"`airflow db migrate` failed (exit {result.returncode}); see {self.log_file}")
        stamp.write_text(version + "\n")

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Until ``/api/v2/monitor/health`` reports every component healthy and the execution API
        answers (:meth:`AirflowClient.execution_health`); a progress line each 10 s."""
        timeout = self.start_timeout if timeout is None else timeout
        probe = AirflowClient(self.api_url, timeout=5.0, retries=0)
        warmed = False
        started = time.monotonic()
        last_report = started
        self.progress(f"starting Airflow (log: {self.log_file}) ...")
        while True:
            if self._airflow is not None and not self._airflow.running():
                raise StackError(self._airflow.exited("airflow standalone"))
            try:
                health = probe.health()
            except AirflowApiError:
                health = {}
            states = {name: (health.get(name) or {}).get("status") for name in HEALTH_COMPONENTS}
            if health and not warmed:  # the API server answers: build the execution API now
                try:
                    warmed = bool(probe.execution_health())
                except AirflowApiError:
                    pass  # asked again on the next round; the timeout below still holds
            if warmed and all(state == "healthy" for state in states.values()):
                self.progress(f"Airflow is up after {time.monotonic() - started:.0f} s")
                return
            now = time.monotonic()
            if now - started > timeout:
                raise StackError(f"Airflow not healthy after {timeout:g} s ({_summary(states, health)}); "
                                 f"last lines of {self.log_file}:\n{self.log_tail()}")
            if now - last_report >= 10:
                self.progress(f"  ... {now - started:.0f} s: {_summary(states, health)}")
                last_report = now
            time.sleep(1.0)

    def stop(self) -> None:
        """Streams gracefully, then every process of the stack (SIGTERM, grace, SIGKILL). Idempotent.

        Does nothing when this run directory records no stack: streams or Spark applications started
        some other way on the same data are not this stack's to stop.
        """
        state = self.recorded()
        if not state:
            return
        stop_requested = self._stop_streams()
        pending = self.processes()
        if pending:
            self.progress(f"stopping Airflow ({len(pending)} processes) ...")
            leader = self._airflow_leader(state)

            def killing(left: list[psutil.Process]) -> None:
                self.progress(f"{len(left)} processes still running after {self.grace_seconds:g} s "
                              f"({names(left)}): killing")

            self._interrupt_tasks(int(state.get("airflow_pid", 0)))
            left = stop_processes(self.processes, self.grace_seconds, reap=self._reap, on_kill=killing,
                                  groups=[leader.pid] if leader is not None else [])
            if left:
                raise StackError("still alive after SIGKILL: " + ", ".join(describe(p) for p in left))
        for engine, token in stop_requested.items():  # its driver is gone: withdraw the request
            control.clear_stop(self.settings.state, engine, token)
        self.state_file.unlink(missing_ok=True)
        self.progress("stack stopped: no process left running")

    def _interrupt_tasks(self, airflow_group: int) -> None:
        """SIGINT to the task processes: those working in AIRFLOW_HOME outside Airflow's group.

        Airflow 3.3's task runner answers SIGTERM by calling the operator's ``on_kill`` and going on,
        so a sensor would keep poking until the SIGKILL after the grace period (and, were its
        supervisor gone first, to the end of its timeout). SIGINT, the first signal Airflow's own
        supervisor sends a task it stops, ends it.
        """
        for proc in detached_processes_in(self.instance.airflow_home):
            try:
                if os.getpgid(proc.pid) != airflow_group:
                    proc.send_signal(signal.SIGINT)
            except (psutil.Error, ProcessLookupError):
                continue

    def _stop_streams(self) -> dict[Engine, str]:
        """Ask every running engine on our data to stop after its batch; the requests' tokens."""
        state_dir = self.settings.state
        running = [engine for engine in ENGINES if control.is_running(state_dir, engine)]
        if not running:
            return {}
        self.progress(f"stopping streams gracefully: {', '.join(running)} ...")
        tokens = {engine: control.request_stop(state_dir, engine) for engine in running}
        deadline = time.monotonic() + self.stream_stop_timeout
        stopped = []
        for engine in running:
            if control.wait_until_stopped(state_dir, engine, max(0.0, deadline - time.monotonic())):
                self.progress(f"  {engine} stopped")
                stopped.append(engine)
            else:
                self.progress(f"  {engine} did not stop within {self.stream_stop_timeout:g} s: killing it")
        if stopped:
            self._wait_stream_runs_finished([stream_dag_id(engine) for engine in stopped])
        return tokens

    def _wait_stream_runs_finished(self, dag_ids: list[str], timeout: float = 45.0) -> None:
        """Let Airflow record the stopped streams' runs as finished before Airflow itself stops.

        The driver releases its lock a few seconds before spark-submit exits and the task reports
        success; stopping Airflow in between would leave the run "running" and have it retried (the
        stream restarting by itself) on the next start.
        """
        try:
            api = self.client()
            deadline = time.monotonic() + timeout
            while any(api.list_dag_runs(dag_id, states=("running",)) for dag_id in dag_ids):
                if time.monotonic() >= deadline:
                    self.progress(f"  Airflow has not recorded the end of {', '.join(dag_ids)}; going on")
                    return
                time.sleep(1.0)
        except (AirflowApiError, StackError) as exc:
            self.progress(f"  cannot ask Airflow about the stream runs ({exc}); going on")

    def _reap(self) -> None:
        """Collect our own child's exit status so it does not linger as a zombie."""
        if self._airflow is not None:
            self._airflow.running()

    # -- after start ----------------------------------------------------------------------------
    def admin_password(self, timeout: float = 60.0) -> str:
        """The ``admin`` password the simple auth manager generated into AIRFLOW_HOME."""
        path = self.instance.passwords_file
        deadline = time.monotonic() + timeout
        while True:
            try:
                return str(json.loads(path.read_text())[ADMIN_USER])
            except (FileNotFoundError, ValueError, KeyError):
                if time.monotonic() >= deadline:
                    raise StackError(f"no {ADMIN_USER} password in {path} after {timeout:g} s") from None
                time.sleep(0.5)

    def client(self) -> AirflowClient:
        """An API client logged in as ``admin``."""
        return AirflowClient.login(self.api_url, ADMIN_USER, self.admin_password())

    def bootstrap(self, api: AirflowClient, dag_ids: Iterable[str] = DAG_IDS,
                  start_stream: str | None = STARTED_STREAM, copy_samples: bool = True,
                  dag_timeout: float = 180.0) -> list[str]:
        """Wait for the DAGs, unpause them, start a stream, feed the samples. Returns missing DAG ids.

        Idempotent: a stream already queued or running is not triggered again, and a sample already
        in ``landing/`` is not copied twice (content seen before is recorded as a duplicate by staging).
        """
        wanted = list(dag_ids)
        missing = api.wait_for_dags(wanted, timeout=dag_timeout, progress=self.progress)
        for dag_id in missing:
            self.progress(f"warning: DAG {dag_id} is not registered (see `airflow dags list-import-errors`)")
        present = [dag_id for dag_id in wanted if dag_id not in missing]
        for dag_id in present:
            api.unpause(dag_id)
        if present:
            self.progress(f"unpaused: {', '.join(present)}")
        if start_stream and start_stream in present:
            active = api.list_dag_runs(start_stream, states=("queued", "running"))
            if active:
                self.progress(f"{start_stream} already has an active run: {active[0]['dag_run_id']}")
            else:
                run = api.trigger_dag_run(start_stream, note="started by `make run`")
                self.progress(f"triggered {start_stream}: {run['dag_run_id']}")
        if copy_samples:
            copied = self.copy_samples()
            if copied:
                self.progress(f"copied {len(copied)} sample files into {self.settings.landing}: "
                              + ", ".join(path.name for path in copied))
        return sorted(missing)

    def copy_samples(self) -> list[Path]:
        """Publish ``samples/*.txt`` into ``landing/`` whole (hidden temp name, fsync, rename)."""
        landing = self.settings.landing
        landing.mkdir(parents=True, exist_ok=True)
        copied = []
        for sample in sorted(self.samples_dir.glob("*.txt")):
            target = landing / sample.name
            if target.exists():
                continue
            temp = landing / f".{sample.name}.tmp"
            with open(sample, "rb") as src, open(temp, "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(temp, target)
            copied.append(target)
        return copied

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.log_file, lines)

    # -- internals ------------------------------------------------------------------------------
    def _write_state(self, state: Mapping[str, Any]) -> None:
        self._last_state = dict(state)
        write_json_atomically(self.state_file, self._last_state)

    def _rotate_log(self) -> None:
        if self.log_file.exists() and self.log_file.stat().st_size > 0:
            os.replace(self.log_file, self.log_file.with_name(LOG_FILE + ".1"))

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _summary(states: Mapping[str, str | None], health: Mapping[str, Any]) -> str:
    if not health:
        return "API server not answering yet"
    return ", ".join(f"{name} {state or 'starting'}" for name, state in states.items())


# -- command line -------------------------------------------------------------------------------
def _runner(stack: Stack) -> psutil.Process | None:
    """The live ``stack run`` process recorded in the pid file, if any."""
    try:
        pid = int(stack.pid_file.read_text().strip())
        proc = psutil.Process(pid)
        if alive(proc) and pid != os.getpid() and "wordstream_dev.stack" in " ".join(proc.cmdline()):
            return proc
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def _next_steps(stack: Stack, password: str) -> str:
    landing = stack.settings.landing
    bind_note = "" if stack.instance.client_host == "127.0.0.1" and stack.instance.bind == "127.0.0.1" \
        else f" (listening on {stack.instance.bind})"
    return f"""
wordstream is running.
  Airflow UI   {stack.api_url}{bind_note}   user: {ADMIN_USER}   password: {password}
  Airflow log  {stack.log_file}

Next:
  * drop .txt files into {landing}/ (stage_incoming_files publishes them to the streams)
  * wordstream totals --engine structured         every word with its total
  * wordstream status                             what each stream is doing
  * start the DStream engine: trigger stream_dstream in the UI
  * reset a stream: trigger streaming_maintenance with action=reset in the UI
  * stop everything: Ctrl-C here, or `make stop` from another shell
"""


def cmd_run(stack: Stack) -> int:
    """Start everything, stay in the foreground, stop everything on Ctrl-C / SIGTERM / `make stop`."""
    runner = _runner(stack)
    if runner is not None and stack.is_running():
        say(f"wordstream is already running ({describe(runner)}) at {stack.api_url}; "
            "stop it with `make stop`")
        return 0

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    stack.pid_file.write_text(f"{os.getpid()}\n")
    status = 0
    try:
        stack.start()
        password = stack.admin_password()
        missing = stack.bootstrap(stack.client())
        say(_next_steps(stack, password))
        if missing:
            say(f"warning: not registered yet: {', '.join(missing)}")
        while stack.is_running():
            time.sleep(1.0)
        say(f"Airflow exited unexpectedly; last lines of {stack.log_file}:\n{stack.log_tail()}")
        status = 1
    except KeyboardInterrupt:
        say("\nstopping wordstream ...")
    except (StackError, AirflowApiError, TimeoutError) as exc:
        say(f"wordstream: {exc}")
        status = 1
    finally:
        def patience(_signum: int, _frame: FrameType | None) -> None:
            say("still stopping; please wait (nothing is left running when this returns)")

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, patience)
        try:
            stack.stop()
        finally:
            stack.pid_file.unlink(missing_ok=True)
    return status


def cmd_stop(stack: Stack) -> int:
    """Signal the running ``stack run`` (it stops everything); stop directly if it is gone or stuck."""
    runner = _runner(stack)
    if runner is not None:
        say(f"asking the running stack ({describe(runner)}) to stop ...")
        runner.send_signal(signal.SIGTERM)
        budget = stack.stream_stop_timeout + stack.grace_seconds + 60.0
        try:
            runner.wait(timeout=budget)
        except psutil.TimeoutExpired:
            say(f"it did not finish within {budget:g} s; stopping directly")
        else:
            if not stack.recorded():
                say("wordstream stopped")
    elif not stack.recorded():
        say("wordstream is not running")
    stack.stop()
    stack.pid_file.unlink(missing_ok=True)
    return 0


def cmd_status(stack: Stack) -> int:
    state = stack.recorded()
    runner = _runner(stack)
    if not stack.is_running():
        say("Airflow: not running" + (" (stale stack.json; `make stop` cleans up)" if state else ""))
    else:
        health = AirflowClient(stack.api_url, timeout=5.0, retries=0)
        try:
            components = health.health()
            summary = ", ".join(f"{name} {(info or {}).get('status')}" for name, info in components.items())
        except AirflowApiError as exc:
            summary = f"API not answering ({exc.detail})"
        say(f"Airflow: running at {stack.api_url} (pid {state.get('airflow_pid')}): {summary}")
        say(f"  runner: {describe(runner) if runner else 'none (started from Python or orphaned)'}")
        say(f"  log: {stack.log_file}")
    for engine in ENGINES:
        status = control.read_status(stack.settings.state, engine)
        detail = f", batch {status['batch_id']}" if status.get("batch_id") is not None else ""
        say(f"stream {engine}: {status.get('state')}{detail}")
    return 0


COMMANDS: dict[str, Callable[[Stack], int]] = {"run": cmd_run, "stop": cmd_stop, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wordstream_dev.stack",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](Stack())
    except StackError as exc:
        say(f"wordstream: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
