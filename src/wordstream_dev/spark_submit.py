"""spark-submit from the tooling: the tests' and benchmarks' applications, and jobs on the local cluster.

One launcher, so every application outside Airflow starts the way the DAG starts it: the Spark this
project pinned and the environment :func:`wordstream.spark_env.spark_env` gives (PATH, SPARK_HOME,
the Python of driver and executors, SPARK_LOCAL_IP), the settings every wordstream application runs
with (:func:`wordstream.spark_env.submit_conf`), in a process group of its own whose log keeps
everything it printed::

    with StreamApp("structured", settings, tmp / "driver.log") as app:   # as stream_structured runs it
        app.wait_running()
    SparkSubmit("job.py", ["in.txt"], log=tmp / "job.log", master=cluster.master_url).run(timeout=300)
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from wordstream import control
from wordstream.engines.app_args import AppArgs
from wordstream.settings import Engine, KeyMode, Settings
from wordstream.spark_env import application, conf_arguments, spark_env, spark_submit_binary, submit_conf
from wordstream_dev.processes import LoggedProcess

LOCAL_MASTER = "local[2]"


def spark_submit_command(app: str, args: Sequence[str] = (), *, master: str = LOCAL_MASTER,
                         conf: Mapping[str, str] | None = None,
                         driver_memory: str | None = None) -> list[str]:
    """``spark-submit --master <master> [--conf k=v ...] [--driver-memory m] <app> <args>``."""
    options = conf_arguments(conf or {})
    if driver_memory:
        options += ["--driver-memory", driver_memory]
    return [spark_submit_binary(), "--master", master, *options, app, *args]


class SparkSubmit(LoggedProcess):
    """One spark-submit (the JVM, its Python driver and workers) in a process group of its own.

    ``env`` adds to this process's environment and :func:`~wordstream.spark_env.spark_env`;
    ``data_dir`` sets ``WORDSTREAM_DATA_DIR`` for a wordstream application. The command line is
    built when it starts, from ``args`` as they are then.
    """

    def __init__(self, app: str, args: Sequence[str] = (), *, log: Path, master: str = LOCAL_MASTER,
                 conf: Mapping[str, str] | None = None, driver_memory: str | None = None,
                 data_dir: Path | None = None, env: Mapping[str, str] | None = None,
                 errors: Path | None = None) -> None:
        environment = {**os.environ, **spark_env(os.environ), **(env or {})}
        if data_dir is not None:
            environment["WORDSTREAM_DATA_DIR"] = str(data_dir)
        self.app = app
        self.args = list(args)
        self.master = master
        self.conf = dict(conf or {})
        self.driver_memory = driver_memory
        super().__init__(self.build_command(), log, env=environment, errors=errors)

    def build_command(self) -> list[str]:
        return spark_submit_command(self.app, self.args, master=self.master, conf=self.conf,
                                    driver_memory=self.driver_memory)

    def start(self) -> Self:
        self.command = self.build_command()
        return super().start()

    def run(self, timeout: float) -> int:
        """Start, wait for the exit code; whatever is left of the group is stopped in any case."""
        try:
            return self.start().wait(timeout)
        finally:
            self.stop()


class StreamApp(SparkSubmit):
    """One engine's streaming application, started as its DAG starts it, watched through its status file.

    The application arguments come from :class:`~wordstream.engines.app_args.AppArgs` (``knobs``: its
    engine's scale knobs, e.g. ``max_files_per_trigger=1``) and the Spark
    settings from the ``settings`` the test or benchmark uses (``conf`` adds to or overrides them).
    As a context manager it is stopped gracefully when the block ends (the stop marker: the running
    batch commits), and its process group is stopped after that in any case.
    """

    def __init__(self, engine: Engine, settings: Settings, log: Path, *, keys: KeyMode = "words",
                 batch_seconds: float = 1, timeout: int | None = None, available_now: bool = False,
                 master: str = LOCAL_MASTER, conf: Mapping[str, str] | None = None,
                 driver_memory: str | None = None, state_dir: Path | None = None, **knobs: Any) -> None:
        self.engine = engine
        self.settings = settings
        app_args = AppArgs.for_engine(settings, engine, keys=keys, batch_seconds=batch_seconds,
                                      timeout=timeout, available_now=available_now, **knobs)
        self.state_dir = state_dir or app_args.state_dir
        args = dataclasses.replace(app_args, state_dir=self.state_dir).to_argv()
        super().__init__(application(engine), args, log=log, master=master,
                         conf={**submit_conf(settings), **(conf or {})}, driver_memory=driver_memory,
                         data_dir=settings.data_dir)

    def start(self) -> Self:
        self.settings.ensure_dirs()
        return super().start()

    def status(self) -> dict[str, Any]:
        return control.read_status(self.state_dir, self.engine)

    def check_running(self) -> None:
        """Raise RuntimeError, with the log's tail, once spark-submit has exited."""
        if not self.running():
            raise RuntimeError(self.exited(f"the {self.engine} stream"))

    def wait_running(self, timeout: float = 240.0) -> None:
        """Until the driver reports ``running`` (TimeoutError), or spark-submit exits (RuntimeError)."""
        def running() -> bool:
            self.check_running()
            return self.status().get("state") == "running"

        control.wait_for(running, timeout, f"{self.engine} to be running", interval=0.25)

    def wait_processed(self, files: int, timeout: float, interval: float = 0.05) -> dict[str, Any]:
        """Until the status counts ``files`` processed in this epoch; returns that status."""
        def done() -> dict[str, Any] | None:
            self.check_running()
            status = self.status()
            return status if int(status.get("files_processed") or 0) >= files else None

        return control.wait_for(done, timeout, f"{self.engine} to process {files} files", interval=interval)

    def stop_gracefully(self, timeout: float = 60.0) -> int:
        """The stop protocol as its writers use it: request (the driver commits its batch and exits 0),
        wait for the exit code, withdraw the request."""
        token = control.request_stop(self.state_dir, self.engine)
        try:
            return self.wait(timeout)
        finally:
            control.clear_stop(self.state_dir, self.engine, token)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.running():
                try:
                    self.stop_gracefully()
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self.stop()
