"""SparkSubmitOperator for a long-running wordstream engine.

Builds the application command line from the run's Params, sets the environment spark-submit needs,
and makes stopping the task stop Spark: first gracefully (stop marker, so the running batch commits),
then the provider's own kill of spark-submit. The driver's watchdog (:mod:`wordstream.engines.driver`)
covers the rest: it exits when its JVM dies and stops when the task process disappears.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from wordstream import control
from wordstream.engines.app_args import AppArgs
from wordstream.engines.driver import STOP_WITH_LAUNCHER_ENV
from wordstream.settings import Engine, Settings
from wordstream.spark_env import application, spark_env, submit_conf

GRACEFUL_KILL_SECONDS = 3.0
KILLED_EXIT_SECONDS = 10.0  # the driver's watchdog exits within a second of its JVM


class StreamSubmitOperator(SparkSubmitOperator):
    """Runs one engine until it is stopped; a graceful stop ends the task as success."""

    def __init__(self, *, engine: Engine, **kwargs: Any) -> None:
        kwargs.setdefault("conn_id", "spark_default")
        kwargs.setdefault("name", f"wordstream-{engine}")
        super().__init__(application=application(engine), **kwargs)
        self.engine = engine

    def execute(self, context: Any) -> Any:
        settings = Settings.from_env()
        settings.ensure_dirs()
        self.application_args = AppArgs.from_params(settings, self.engine, context["params"]).to_argv()
        self.conf = {**submit_conf(settings), **(self.conf or {})}
        self.env_vars = {
            **spark_env(),
            "WORDSTREAM_DATA_DIR": str(settings.data_dir),
            STOP_WITH_LAUNCHER_ENV: "1",
            **(self.env_vars or {}),
        }
        self.log.info("starting %s: %s", self.engine, " ".join(self.application_args))
        return super().execute(context)

    def on_kill(self) -> None:
        """Ask the driver to stop after its batch; if it has not within a few seconds, kill it.

        The stop request is withdrawn once the driver is gone (killed or not), so it cannot stop the
        task's next try as that starts.
        """
        state_dir = Settings.from_env().state
        running = control.is_running(state_dir, self.engine)
        token = control.request_stop(state_dir, self.engine) if running else None
        try:
            if running and control.wait_until_stopped(state_dir, self.engine, GRACEFUL_KILL_SECONDS):
                self.log.info("%s stopped gracefully", self.engine)
            super().on_kill()
        finally:
            if token is not None:
                control.wait_until_stopped(state_dir, self.engine, KILLED_EXIT_SECONDS)
                control.clear_stop(state_dir, self.engine, token)
