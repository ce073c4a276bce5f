"""SparkSubmitOperator for a long-running wordstream engine.

Builds the application command line from the run's Params, sets the environment spark-submit needs,
and makes stopping the task stop Spark: first gracefully (stop marker, so the running batch commits),
then the provider's own kill of spark-submit. The driver's watchdog (:mod:`wordstream.engines.driver`)
covers the rest: it exits when its JVM dies and stops when the task process disappears.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from wordstream import control
from wordstream.engines import app_args
from wordstream.engines.app_args import AppArgs
from wordstream.engines.driver import STOP_WITH_LAUNCHER_ENV
from wordstream.settings import KEY_MODES, STATE_STORE_PROVIDERS, Engine, Settings
from wordstream.spark_env import application, spark_env, submit_conf

GRACEFUL_KILL_SECONDS = 3.0
KILLED_EXIT_SECONDS = 10.0  # the driver's watchdog exits within a second of its JVM


def _bounded(default: int | float | None, bounds: tuple[int, int] | tuple[float, int], title: str,
             description: str, number: str = "integer") -> Param:
    kind: str | list[str] = number if default is not None else ["null", number]
    return Param(default, type=kind, minimum=bounds[0], maximum=bounds[1], title=title,
                 description=description)


def stream_params(engine: Engine, settings: Settings) -> dict[str, Param]:
    """The trigger form of ``engine``'s DAG: what every run sets, then this engine's own knobs.

    Defaults are the ``WORDSTREAM_*`` settings; bounds are the application's
    (:mod:`wordstream.engines.app_args`), so a run the form accepts is one the application accepts.
    """
    interval = (app_args.MIN_BATCH_SECONDS[engine], app_args.MAX_BATCH_SECONDS)
    params = {
        "keys": Param("words", type="string", enum=list(KEY_MODES), title="Keys",
                      description="words: split on whitespace; lines: each whole line is a key"),
        "batch_seconds": _bounded(
            settings.batch_seconds_for(engine), interval, "Batch seconds",
            "micro-batch (trigger) interval; shorter: less latency, more idle file listings"
            if engine == "structured" else
            "micro-batch interval, whole seconds; fixed for the checkpoint's life (reset to change it)",
            number="number" if engine == "structured" else "integer"),
        "timeout_seconds": Param(0, type="integer", minimum=0, title="Timeout (seconds)",
                                 description="stop gracefully after this long; 0 = run until stopped"),
    }
    if engine == "dstream":
        params["remember_seconds"] = _bounded(
            settings.dstream_remember_seconds, app_args.REMEMBER_SECONDS_RANGE, "Remember seconds",
            "how far back textFileStream remembers files it read: files older than this are never "
            "read; longer costs checkpoint size and keeps processed watch files longer; fixed for the "
            "checkpoint's life (reset to change it)")
        return params
    params.update(
        max_files_per_trigger=_bounded(
            None, app_args.MAX_FILES_PER_TRIGGER_RANGE, "Max files per trigger",
            "at most this many new files per batch (empty: all that wait); a backlog is worked "
            "off in even batches instead of one large one. Not with max bytes per trigger"),
        max_bytes_per_trigger=_bounded(
            None, app_args.MAX_BYTES_PER_TRIGGER_RANGE, "Max bytes per trigger",
            "at most about this many bytes of new files per batch (at least one file; empty: all "
            "that wait). Not with max files per trigger"),
        state_store=Param(settings.state_store, type="string", enum=list(STATE_STORE_PROVIDERS),
                          title="State store",
                          description="where the running totals live: rocksdb (off-heap, small "
                                      "commits) or hdfs (Spark's default, every key on the JVM heap); "
                                      "fixed for the checkpoint's life (reset to change it)"),
        shuffle_partitions=_bounded(
            settings.shuffle_partitions, app_args.SHUFFLE_PARTITIONS_RANGE, "Shuffle partitions",
            "partitions of the count's shuffle and state: one state store each, so more means more "
            "parallel work and more files per commit; fixed for the checkpoint's life (reset to "
            "change it)"),
    )
    return params


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
        args = AppArgs.from_params(settings, self.engine, context["params"])
        problems = app_args.knob_problems(args)
        if problems:  # the application would refuse them too, on every retry
            raise AirflowFailException("; ".join(problems))
        self.application_args = args.to_argv()
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
