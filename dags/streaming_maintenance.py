"""
### Streaming maintenance: reset and cleanup

**action = reset** (trigger by hand): for each selected engine, request a graceful stop (the running
batch commits), wait until the driver has released its lock (the run fails with a clear message if it
does not within *wait_timeout*), give the watch files it has not processed (by its own commit record)
back to `data/landing/` (staging publishes them again), and rotate its checkpoint and output away
together into `data/rotated/` — a new epoch starts from zero; the old one is kept until cleanup. A
reset interrupted half way is finished by the next one (its journal in `data/state/`); no stream of
that engine starts meanwhile. With *restart*, the engine's streaming DAG is triggered again.

*replay* chooses what the new epoch starts with: `none` (from zero), `all` (every original the
archive still holds, within the retention), or `since=YYYY-MM-DD[THH:MM]` (UTC, those that landed at
or after it). The originals go through staging again, to the reset engine only, each content once
(dedupe is per epoch), while new files keep arriving; the other engine is not touched.

This is the tutorial's restart procedure ("empty the watched directory, delete the checkpoint if that
is not enough"), made safe: nothing counted twice, nothing lost.

**action = cleanup** (the scheduled hourly runs): expire what is past the retention
(`WORDSTREAM_RETENTION_DAYS`): rotated checkpoints/outputs, stale temp files, processed watch files,
archive and quarantine, the ledger's finished history, and this Airflow's metadata and task logs of
the wordstream DAGs plus the DAG processor's logs; compact each engine's output; then log what is
left per engine. It never touches the checkpoint of an engine whose lock is held. The metadata clean
runs in a process of its own given `WORDSTREAM_METADB_CONN` (a task cannot reach the database
itself): without it the task fails, saying so, after everything else was cleaned. Hourly, so that
each run has little to do and a running engine's watch folder holds about two hours of files (a file
source lists it every batch).

Same code as `wordstream reset` and `wordstream cleanup`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from wordstream.maintenance.replay import REPLAY_PATTERN
from wordstream.settings import ENGINES, MAINTENANCE_DAG_ID, Settings, stream_dag_id

log = logging.getLogger(__name__)


@dag(
    dag_id=MAINTENANCE_DAG_ID,
    description="Reset a stream (stop, give back, rotate, restart) or clean up old epochs",
    doc_md=__doc__,
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["wordstream", "maintenance"],
    default_args={"owner": "data-engineering", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "action": Param("cleanup", type="string", enum=["reset", "cleanup"], title="Action",
                        description="reset: stop, give back unprocessed files, start a new epoch; "
                                    "cleanup: expire old epochs and files"),
        "engines": Param(list(ENGINES), type="array", items={"type": "string", "enum": list(ENGINES)},
                         minItems=1, uniqueItems=True, title="Engines", description="engines to reset"),
        "restart": Param(False, type="boolean", title="Restart",
                         description="trigger the engine's streaming DAG again after the reset"),
        "replay": Param("none", type="string", pattern=REPLAY_PATTERN, title="Replay",
                        description="what the new epoch is fed from the archive (reset only): none, all, "
                                    "or since=YYYY-MM-DD[THH:MM] (UTC, by landing time); only what "
                                    "the archive still holds within the retention"),
        "wait_timeout": Param(120, type="integer", minimum=1, maximum=3600, title="Wait timeout (s)",
                              description="how long to wait for a stream to stop"),
    },
)
def streaming_maintenance() -> None:
    @task.branch
    def choose_action(params: dict[str, Any] | None = None) -> str:
        assert params is not None  # Airflow passes the run's params by name
        return "reset_streams" if params["action"] == "reset" else "cleanup"

    @task
    def reset_streams(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        assert params is not None
        from dataclasses import asdict

        from wordstream import maintenance
        from wordstream.maintenance.replay import parse_replay

        replay = parse_replay(params["replay"])  # before any engine is stopped
        settings = Settings.from_env()
        return [
            asdict(maintenance.reset_engine(settings, engine, wait_timeout=params["wait_timeout"],
                                            progress=log.info, replay=replay))
            for engine in params["engines"]
        ]

    @task
    def cleanup() -> dict[str, Any]:
        import os
        from pathlib import Path

        from airflow.sdk import conf

        from wordstream import maintenance
        from wordstream.maintenance.airflow_history import metadb_conn

        site = maintenance.AirflowSite(
            log_folder=Path(conf.get("logging", "base_log_folder")),
            dag_processor_log_folder=Path(conf.get("logging", "dag_processor_child_process_log_directory")),
            metadb_conn=metadb_conn(os.environ),
        )
        report = maintenance.cleanup(Settings.from_env(), progress=log.info, airflow=site)
        if report.airflow is not None and report.airflow.error:
            raise RuntimeError(f"Airflow metadata and task logs not cleaned: {report.airflow.error}")
        return report.as_dict()

    reset = reset_streams()
    choose_action() >> [reset, cleanup()]
    for engine in ENGINES:

        @task.short_circuit(task_id=f"restart_{engine}_requested")
        def restart_requested(params: dict[str, Any] | None = None, engine: str = engine) -> bool:
            assert params is not None
            return bool(params["restart"]) and engine in params["engines"]

        reset >> restart_requested() >> TriggerDagRunOperator(
            task_id=f"trigger_{stream_dag_id(engine)}", trigger_dag_id=stream_dag_id(engine)
        )


streaming_maintenance()
