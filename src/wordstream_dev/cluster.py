"""A real Spark standalone cluster on 127.0.0.1, started from the pip-installed Spark.

The DAGs run the same applications on ``local[*]`` or on a ``spark://`` master; this module gives a
developer, the cluster tests and the benchmarks a genuine standalone master with workers (separate
JVMs, executors talking to the driver over the network) without Docker or a Spark download. The
pyspark wheel ships ``bin/spark-class`` and every jar, but not ``sbin/start-master.sh``, so the
daemons are started here directly with ``spark-class``.

Every daemon runs in its own session (so its own process group): a worker's executor JVMs and their
Python workers join the worker's group, and stopping the group stops all of them. The run directory
holds one log and one pid file per daemon and ``cluster.json``, which records what was started so a
later ``down`` (another process) stops exactly that and nothing else.

Usage:
    python -m wordstream_dev.cluster up [--run-dir DIR] [--master-port 7077] [--webui-port 8081] [--workers 2]
                                   [--worker-cores 1] [--worker-memory 1g] [--app-cores N]
    python -m wordstream_dev.cluster status [--run-dir DIR]
    python -m wordstream_dev.cluster down [--run-dir DIR]

Environment (each overridden by the matching option): ``WORDSTREAM_CLUSTER_DIR`` (default
``<repo>/run/cluster``), ``WORDSTREAM_CLUSTER_MASTER_PORT`` (7077), ``WORDSTREAM_CLUSTER_WEBUI_PORT``
(8081: Airflow's API server already has 8080), ``WORDSTREAM_CLUSTER_WORKERS`` (2),
``WORDSTREAM_CLUSTER_APP_CORES`` (unset: an application takes every free core).

From Python (tests, benchmarks; ``find_free_port`` is :mod:`wordstream_dev.processes`')::

    with LocalCluster(tmp_path, master_port=find_free_port(), webui_port=find_free_port()) as cluster:
        cluster.submit(["app.py"], tmp_path / "app.log")  # spark-submit --master cluster.master_url app.py
        cluster.master_json()["completedapps"]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from wordstream import Progress
from wordstream.durable import write_json_atomically
from wordstream.settings import REPO_DIR
from wordstream.spark_env import spark_env, spark_home
from wordstream_dev.prerequisites import java_problem
from wordstream_dev.processes import (
    HOST,
    LoggedProcess,
    creation_time,
    log_tail,
    port_in_use,
    recorded_group,
    started_process,
    stop_processes,
)
from wordstream_dev.spark_submit import SparkSubmit

DEFAULT_RUN_DIR = REPO_DIR / "run" / "cluster"
DEFAULT_MASTER_PORT = 7077
DEFAULT_WEBUI_PORT = 8081
DEFAULT_WORKERS = 2
STATE_FILE = "cluster.json"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    """The cluster could not be started or queried; the message says why and where the logs are."""


def daemon_env(run_dir: Path, name: str, base: Mapping[str, str] | None = None,
               app_cores: int | None = None) -> dict[str, str]:
    """The environment of one daemon, set explicitly so nothing is inherited by accident.

    SPARK_HOME, PATH and PYSPARK_PYTHON come from :func:`wordstream.spark_env.spark_env`, so
    executors run this very Python and Spark; SPARK_LOCAL_IP keeps every socket on the loopback
    interface; each worker gets its own SPARK_WORKER_DIR inside the run directory, so a stopped
    cluster leaves no executor folders elsewhere. The master's REST submission server (port 6066 by
    default) is switched off: client mode does not use it, and it would collide between clusters.
    """
    env = dict(os.environ if base is None else base)
    env.update(spark_env(env))
    env["SPARK_LOCAL_IP"] = HOST
    env["SPARK_WORKER_DIR"] = str(run_dir / "work" / name)
    master_opts = [env.get("SPARK_MASTER_OPTS", ""), "-Dspark.master.rest.enabled=false"]
    if app_cores:
        master_opts.append(f"-Dspark.deploy.defaultCores={app_cores}")
    env["SPARK_MASTER_OPTS"] = " ".join(filter(None, master_opts))
    # Spark's launcher would otherwise read a spark-env.sh/conf dir the user has lying around.
    env.pop("SPARK_CONF_DIR", None)
    return env


@dataclass
class Daemon:
    """One started daemon: its process group is its pid (it is a session leader)."""

    name: str
    pid: int
    create_time: float
    log: str

    def is_ours(self) -> bool:
        """False once the pid was reused by an unrelated process (pid files outlive processes)."""
        return started_process(self.pid, self.create_time) is not None

    def members(self) -> list[psutil.Process]:
        """Every live process of this daemon's group: the JVM, its executors and their Pythons.

        If the leader's pid now belongs to an unrelated process, the group is not ours: empty list.
        """
        return recorded_group(self.pid, self.create_time)


@dataclass
class LocalCluster:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1, usable as a context manager.

    ``start()`` returns once the master reports every worker ALIVE; ``stop()`` stops every process
    group it started (SIGTERM, then SIGKILL after ``grace_seconds``). Both are idempotent.

    ``app_cores`` caps the cores an application gets when it does not set ``spark.cores.max``
    (the master's ``spark.deploy.defaultCores``). Unset, the first application takes every core and
    a second one (the other engine) waits until it ends.
    """

    run_dir: Path = DEFAULT_RUN_DIR
    master_port: int = DEFAULT_MASTER_PORT
    webui_port: int = DEFAULT_WEBUI_PORT
    workers: int = DEFAULT_WORKERS
    worker_cores: int = 1
    worker_memory: str = "1g"
    app_cores: int | None = None
    start_timeout: float = 120.0
    grace_seconds: float = 5.0
    progress: Progress | None = None
    _started: list[LoggedProcess] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).resolve()
        if self.workers < 1:
            raise ValueError("a cluster needs at least one worker")

    # -- addresses ------------------------------------------------------------------------------
    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    @property
    def webui_url(self) -> str:
        return f"http://{HOST}:{self.webui_port}"

    @property
    def state_file(self) -> Path:
        return self.run_dir / STATE_FILE

    # -- queries --------------------------------------------------------------------------------
    def master_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The master's status document (``/json/``): workers, active and completed applications."""
        return _get_json(f"{self.webui_url}/json/", timeout)

    def workers_json(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Each registered worker's own ``/json/``: its running and finished executors per app."""
        return [
            _get_json(f"{worker['webuiaddress']}/json/", timeout)
            for worker in self.master_json(timeout)["workers"]
        ]

    def alive_workers(self) -> int:
        try:
            status = self.master_json(timeout=2.0)
        except ClusterError:
            return -1
        return sum(1 for worker in status.get("workers", []) if worker.get("state") == "ALIVE")

    def daemons(self) -> list[Daemon]:
        """What ``cluster.json`` says was started in this run directory (empty if nothing)."""
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ClusterError(f"unreadable {self.state_file}: {exc}") from None
        return [Daemon(**daemon) for daemon in state.get("daemons", [])]

    def is_running(self) -> bool:
        """True when the recorded master is alive and still the process this run directory started."""
        daemons = self.daemons()
        return bool(daemons) and daemons[0].is_ours()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Start master and workers, wait until all workers are ALIVE; on failure clean up and raise."""
        if self.is_running():
            self.adopt_recorded_addresses()
            self._say(f"already running: {self.master_url} (run dir {self.run_dir})")
            return self
        self.stop()  # leftovers of a crashed run: stale pid files, orphaned executors
        self._check_prerequisites()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        daemons: list[Daemon] = []
        try:
            daemons.append(self._spawn("master", [
                MASTER_CLASS, "--host", HOST, "--port", str(self.master_port),
                "--webui-port", str(self.webui_port),
            ]))
            self._write_state(daemons)
            self._wait_for(lambda: self.alive_workers() >= 0, "master web UI", daemons)
            for index in range(1, self.workers + 1):
                daemons.append(self._spawn(f"worker-{index}", [
                    WORKER_CLASS, self.master_url, "--host", HOST,
                    "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                    "--webui-port", "0",  # ephemeral: the master's JSON reports each address
                ]))
                self._write_state(daemons)
            self._wait_for(lambda: self.alive_workers() >= self.workers,
                           f"{self.workers} workers ALIVE", daemons)
        except BaseException:
            self.stop()
            raise
        self._say(f"Spark master {self.master_url} with {self.workers} workers (UI {self.webui_url})")
        return self

    def stop(self) -> None:
        """Stop every process group recorded in the run directory and remove the pid files.

        Workers go first so the master does not spend the grace period re-scheduling their executors.
        Logs stay in the run directory for a post-mortem.
        """
        daemons = self.daemons()
        daemons.sort(key=lambda daemon: daemon.name == "master")
        pending = [daemon for daemon in daemons if daemon.members()]
        left = stop_processes(lambda: [proc for daemon in pending for proc in daemon.members()],
                              self.grace_seconds, groups=[daemon.pid for daemon in pending], reap=self._reap)
        if left:
            raise ClusterError(f"processes still alive after SIGKILL: {[proc.pid for proc in left]}")
        for daemon in daemons:
            (self.run_dir / f"{daemon.name}.pid").unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- running applications -------------------------------------------------------------------
    def submit(self, args: Sequence[str], log: Path, conf: Mapping[str, str] | None = None,
               timeout: float = 600.0) -> int:
        """``spark-submit --master <this cluster> [--conf k=v ...] *args`` in client mode; its exit code.

        Its output goes to ``log``; whatever it leaves of its process group is stopped.
        """
        return SparkSubmit(args[0], args[1:], log=log, master=self.master_url, conf=conf,
                           env={"SPARK_LOCAL_IP": HOST}).run(timeout)

    # -- internals ------------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def _check_prerequisites(self) -> None:
        problem = java_problem()
        if problem:
            raise ClusterError(problem)
        spark_class = spark_home() / "bin" / "spark-class"
        if not os.access(spark_class, os.X_OK):
            raise ClusterError(f"{spark_class} is missing or not executable; reinstall pyspark")
        for port in (self.master_port, self.webui_port):
            if port_in_use(port, HOST):
                raise ClusterError(
                    f"port {port} on {HOST} is already in use: choose other ports "
                    "(--master-port/--webui-port or WORDSTREAM_CLUSTER_MASTER_PORT/_WEBUI_PORT)"
                )

    def _spawn(self, name: str, arguments: list[str]) -> Daemon:
        log = self.run_dir / f"{name}.log"
        (self.run_dir / "work" / name).mkdir(parents=True, exist_ok=True)
        env = daemon_env(self.run_dir, name, app_cores=self.app_cores)
        # Own session and process group: a Ctrl-C in the shell that ran `up` does not reach the
        # daemon, and killpg reaches the executors it forks.
        daemon = LoggedProcess([str(spark_home() / "bin" / "spark-class"), *arguments], log, env=env,
                               cwd=self.run_dir).start()
        self._started.append(daemon)
        (self.run_dir / f"{name}.pid").write_text(f"{daemon.pid}\n")
        self._say(f"started {name} (pid {daemon.pid}, log {log})")
        return Daemon(name=name, pid=daemon.pid, create_time=creation_time(daemon.pid), log=str(log))

    def _write_state(self, daemons: list[Daemon]) -> None:
        write_json_atomically(self.state_file, {
            "master_url": self.master_url,
            "master_port": self.master_port,
            "webui_port": self.webui_port,
            "workers": self.workers,
            "daemons": [daemon.__dict__ for daemon in daemons],
        })

    def adopt_recorded_addresses(self) -> None:
        """A second ``up`` with other options talks to the cluster that is actually running."""
        try:
            state = json.loads(self.state_file.read_text())
            self.master_port = int(state["master_port"])
            self.webui_port = int(state["webui_port"])
            self.workers = int(state["workers"])
        except (OSError, ValueError, KeyError):
            pass

    def _wait_for(self, ready: Callable[[], bool], what: str, daemons: list[Daemon]) -> None:
        started = time.monotonic()
        last_report = started
        while not ready():
            now = time.monotonic()
            for daemon in daemons:
                if not daemon.members():
                    raise ClusterError(f"{daemon.name} exited while waiting for {what}; "
                                       f"see {daemon.log}:\n{log_tail(Path(daemon.log), 15)}")
            if now - started > self.start_timeout:
                logs = "\n".join(f"--- {d.log}\n{log_tail(Path(d.log), 15)}" for d in daemons)
                raise ClusterError(f"timed out after {self.start_timeout:.0f}s waiting for {what}\n{logs}")
            if now - last_report >= 3.0:
                alive = max(self.alive_workers(), 0)
                self._say(f"waiting for {what} ({now - started:.0f}s, {alive}/{self.workers} workers alive)")
                last_report = now
            time.sleep(0.5)

    def _reap(self) -> None:
        """Collect exit statuses of daemons this process started, so none lingers as a zombie."""
        for daemon in self._started:
            daemon.running()


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ClusterError(f"cannot read {url}: {exc}") from None
    if not isinstance(data, dict):
        raise ClusterError(f"unexpected answer from {url}")
    return data


# -- command line ---------------------------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wordstream_dev.cluster",
                                     description="A local Spark standalone cluster on 127.0.0.1.")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--run-dir", type=Path,
                        default=Path(os.environ.get("WORDSTREAM_CLUSTER_DIR") or DEFAULT_RUN_DIR),
                        help="logs, pid files and worker dirs (default: %(default)s)")
    parser.add_argument("--master-port", type=int,
                        default=_env_int("WORDSTREAM_CLUSTER_MASTER_PORT", DEFAULT_MASTER_PORT))
    parser.add_argument("--webui-port", type=int,
                        default=_env_int("WORDSTREAM_CLUSTER_WEBUI_PORT", DEFAULT_WEBUI_PORT),
                        help="master web UI and /json/ (default %(default)s; Airflow uses 8080)")
    parser.add_argument("--workers", type=int,
                        default=_env_int("WORDSTREAM_CLUSTER_WORKERS", DEFAULT_WORKERS))
    parser.add_argument("--worker-cores", type=int, default=1)
    parser.add_argument("--worker-memory", default="1g")
    parser.add_argument("--app-cores", type=int, default=_env_int("WORDSTREAM_CLUSTER_APP_CORES", 0),
                        help="cores per application without spark.cores.max (default: all; 1 lets "
                             "both engines run at once on two 1-core workers)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for ALIVE workers")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def progress(message: str) -> None:
        print(f"cluster: {message}", file=sys.stderr, flush=True)

    cluster = LocalCluster(
        run_dir=args.run_dir, master_port=args.master_port, webui_port=args.webui_port,
        workers=args.workers, worker_cores=args.worker_cores, worker_memory=args.worker_memory,
        app_cores=args.app_cores or None, start_timeout=args.timeout, progress=progress,
    )
    try:
        if args.command == "up":
            cluster.start()
            print(cluster.master_url)
        elif args.command == "down":
            if not cluster.daemons():
                progress(f"nothing to stop in {cluster.run_dir}")
                return 0
            cluster.stop()
            progress(f"stopped every process started from {cluster.run_dir}")
        else:
            if not cluster.is_running():
                progress(f"not running (run dir {cluster.run_dir})")
                return 1
            cluster.adopt_recorded_addresses()
            alive = cluster.alive_workers()
            print(f"{cluster.master_url} workers alive: {max(alive, 0)}/{cluster.workers} "
                  f"UI {cluster.webui_url}")
            return 0 if alive >= cluster.workers else 1
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
