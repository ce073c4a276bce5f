"""The environment Airflow runs in for this project: one definition for the stack, the tests and e2e.

Everything Airflow needs is passed as ``AIRFLOW__*`` / ``AIRFLOW_CONN_*`` variables rather than written
into ``airflow.cfg``, so a fresh ``AIRFLOW_HOME`` works without a setup step and a test can run a
second, isolated Airflow (own home, data directory and ports) next to a developer's stack.

Knobs (environment variables, all optional):

* ``WORDSTREAM_AIRFLOW_HOME`` — Airflow's home (default ``<repo>/airflow_home``, git-ignored). A
  generic ``AIRFLOW_HOME`` in the caller's shell is deliberately ignored: it usually belongs to some
  other Airflow installation.
* ``WORDSTREAM_AIRFLOW_PORT`` — API server / UI port (default 8080).
* ``WORDSTREAM_BIND`` — address the API server listens on (default ``127.0.0.1``; ``0.0.0.0`` to
  reach the UI from another machine).
* ``WORDSTREAM_WORKER_LOG_PORT`` / ``WORDSTREAM_TRIGGER_LOG_PORT`` — Airflow's log-serving ports
  (defaults 8793 / 8794, Airflow's own).
* ``WORDSTREAM_DATA_DIR`` — the data flow's root (see :mod:`wordstream.settings`).
* ``AIRFLOW_CONN_SPARK_DEFAULT`` — kept when already set (e.g. a ``spark://host:7077`` cluster);
  otherwise Spark runs with master ``local[*]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wordstream.settings import REPO_DIR, Settings, _env_int
from wordstream.spark_env import spark_env

ADMIN_USER = "admin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
PASSWORDS_FILE_NAME = "simple_auth_manager_passwords.json.generated"

# The Spark provider takes a ``spark`` connection whose host has no "://" and no port as the literal
# master, so this becomes ``spark-submit --master local[*]``.
LOCAL_SPARK_CONNECTION = json.dumps({"conn_type": "spark", "host": "local[*]"})

# Dev-stack timings: new or edited DAG files show up within seconds instead of minutes.
RESPONSIVE_TIMINGS = {
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",  # look for new DAG files (default 300 s)
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",  # re-parse a file (default 30 s)
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",  # four small files; spare the CPU
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    # An idle scheduler loop sleeps this long (default 1 s). Staging is two tasks, and a finished sensor
    # waits for the next loop before stage_files is queued: this sleep is part of every file's latency.
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
    # After Airflow itself died and came back, the tasks of the dead scheduler (a stream, the staging
    # sensor) look "running" until this check re-runs them (default 300 s): re-run within a minute.
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
    # LocalExecutor forks one worker per slot up front; two streams, the sensor, staging and
    # maintenance fit in 8, and 32 idle workers would cost a gigabyte for nothing.
    "AIRFLOW__CORE__PARALLELISM": "8",
}

# The staging sensor pokes every 0.5 s, and the sensor operator logs "Poking callable" at INFO on every
# poke: up to 7,200 lines an hour. Its own logger at WARNING drops them (and nothing of the poke's).
LOG_LEVELS = {
    "AIRFLOW__LOGGING__NAMESPACE_LEVELS":
        "airflow.task.operators.airflow.providers.standard.decorators.sensor.DecoratedSensorOperator=WARNING",
}

# Airflow imports this dict by name ([database] sql_alchemy_connect_args). SQLite's default busy
# timeout of 5 s turns a burst of writes (DAG processor, scheduler, tasks, API) into "database is
# locked" errors on a loaded laptop; waiting longer is the right trade for a single-user dev stack.
SQLITE_CONNECT_ARGS: dict[str, object] = {"timeout": 30}

_WILDCARD_ADDRESSES = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class AirflowInstance:
    """Where one Airflow for this project lives and listens; everything else is derived from it."""

    repo_dir: Path
    airflow_home: Path
    data_dir: Path
    port: int = 8080
    bind: str = "127.0.0.1"
    worker_log_port: int = 8793
    trigger_log_port: int = 8794

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        repo_dir: Path | None = None,
        airflow_home: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        bind: str | None = None,
        worker_log_port: int | None = None,
        trigger_log_port: int | None = None,
    ) -> AirflowInstance:
        """Resolve every field: explicit argument, else ``WORDSTREAM_*`` variable, else default."""
        env = os.environ if env is None else env
        repo = Path(repo_dir or REPO_DIR).resolve()
        home = airflow_home or env.get("WORDSTREAM_AIRFLOW_HOME") or repo / "airflow_home"
        data = data_dir or Settings.from_env(env).data_dir
        return cls(
            repo_dir=repo,
            airflow_home=Path(home).resolve(),
            data_dir=Path(data).resolve(),
            port=port if port is not None else _env_int(env, "WORDSTREAM_AIRFLOW_PORT", cls.port),
            bind=bind if bind is not None else (env.get("WORDSTREAM_BIND") or cls.bind),
            worker_log_port=worker_log_port if worker_log_port is not None
            else _env_int(env, "WORDSTREAM_WORKER_LOG_PORT", cls.worker_log_port),
            trigger_log_port=trigger_log_port if trigger_log_port is not None
            else _env_int(env, "WORDSTREAM_TRIGGER_LOG_PORT", cls.trigger_log_port),
        )

    # -- derived ---------------------------------------------------------------------------------
    @property
    def client_host(self) -> str:
        """The address a local client dials: loopback when the server listens on every address."""
        return "127.0.0.1" if self.bind in _WILDCARD_ADDRESSES else self.bind

    @property
    def api_url(self) -> str:
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{self.port}"

    @property
    def database(self) -> Path:
        return self.airflow_home / "airflow.db"

    @property
    def passwords_file(self) -> Path:
        """Where the simple auth manager writes the generated ``admin`` password on first start."""
        return self.airflow_home / PASSWORDS_FILE_NAME

    @property
    def dags_folder(self) -> Path:
        return self.repo_dir / "dags"

    @property
    def plugins_folder(self) -> Path:
        return self.repo_dir / "plugins"

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) plus everything Airflow needs here."""
        base = os.environ if base is None else base
        env = dict(base)
        env.update(spark_env(base))  # PATH with the venv first, SPARK_HOME, PYSPARK_PYTHON
        env.update(RESPONSIVE_TIMINGS)
        env.update(LOG_LEVELS)
        env.update({
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            # Exactly "admin:admin" is what makes `airflow standalone` generate and record a password.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.database}",
            # The same URL under the project's name: Airflow hides its own from task processes, and the
            # daily cleanup expires the wordstream DAGs' metadata from a process of its own with this one.
            "WORDSTREAM_METADB_CONN": f"sqlite:///{self.database}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
            "AIRFLOW__API__HOST": self.bind,
            "AIRFLOW__API__PORT": str(self.port),
            # Task processes report to the API server; its default URL assumes localhost:8080.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
            "WORDSTREAM_DATA_DIR": str(self.data_dir),
        })
        env["AIRFLOW_CONN_SPARK_DEFAULT"] = base.get("AIRFLOW_CONN_SPARK_DEFAULT") or LOCAL_SPARK_CONNECTION
        return env


def airflow_env(
    base: Mapping[str, str] | None = None,
    *,
    airflow_home: Path | None = None,
    data_dir: Path | None = None,
    port: int | None = None,
) -> dict[str, str]:
    """The full environment for running any ``airflow`` command for this project.

    Arguments left out come from ``WORDSTREAM_*`` variables in ``base`` or their defaults; use
    :class:`AirflowInstance` directly for the less common knobs (bind address, log ports).
    """
    instance = AirflowInstance.from_env(base, airflow_home=airflow_home, data_dir=data_dir, port=port)
    return instance.environment(base)
