"""Expire the Airflow metadata of wordstream's DAGs: a process of its own, given the database URL.

Run as ``python -m wordstream.orchestration.metadb_clean --before <ISO 8601> --dag-ids a,b`` by
:func:`wordstream.maintenance.airflow_history.clean_metadata`, with ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``
set to the metadata database. A task process cannot do this itself: Airflow 3 blocks its ORM and
replaces that variable with a dummy, so the maintenance task starts this process with the URL the
deployment hands over as ``WORDSTREAM_METADB_CONN``. That bypasses the task isolation on purpose, for
these deletes only.

Per DAG, with Airflow's own ``run_cleanup`` (what ``airflow db clean`` runs), archive skipped, in
batches so the scheduler is never locked out for long:

* ``dag_run`` with its dependent tables (``task_instance``, ``task_instance_history``, ``xcom``,
  ``task_state_store``; rendered fields, notes, task maps by foreign-key cascade), ``log`` (the audit
  log) and ``job``. Its newest scheduled run is kept (``run_cleanup``'s continuity rule).
* The cutoff is the retention cutoff, or just before the start of the DAG's oldest unfinished run
  if that is earlier: ``run_cleanup`` ages runs and task instances by their start and ignores their
  state, and a stream run started weeks ago and still running would lose its rows, and Airflow
  would kill the stream's task.

Then the asset events these DAGs emitted (``source_dag_id``) before the cutoff, in batches through
the ORM: ``run_cleanup`` cannot filter ``asset_event`` by DAG in Airflow 3.3.2 (it filters on a
``dag_id`` column that table does not have), and cleaning it for every DAG would delete other
teams' events. Consumer runs' links to the events go with them (foreign-key cascade).

Prints one JSON object on stdout (counts before and after, per DAG); Airflow's own output and the
progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from contextlib import redirect_stdout
from datetime import datetime, timedelta
from typing import Any

CLEANED_TABLES = ["dag_run", "log", "job"]
BATCH_ROWS = 5000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wordstream.orchestration.metadb_clean")
    parser.add_argument("--before", required=True, type=datetime.fromisoformat,
                        help="expire what is older than this (ISO 8601 with a time zone)")
    parser.add_argument("--dag-ids", required=True, type=lambda text: text.split(","))
    parser.add_argument("--batch-size", type=int, default=BATCH_ROWS)
    args = parser.parse_args(argv)
    if args.before.tzinfo is None:
        parser.error("--before needs a time zone")
    started = time.monotonic()
    with redirect_stdout(sys.stderr):  # run_cleanup and Airflow's start-up print to stdout
        result = clean(args.before, args.dag_ids, args.batch_size)
    result["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(result, sort_keys=True))
    return 0


def clean(before: datetime, dag_ids: list[str], batch_size: int) -> dict[str, Any]:
    import pendulum
    from airflow.utils.db_cleanup import run_cleanup

    cutoffs: dict[str, str] = {}
    counts: dict[str, Any] = {"before": _counts(dag_ids), "cutoffs": cutoffs,
                              "unfinished": _unfinished_runs(dag_ids)}
    for dag_id in dag_ids:
        oldest = _oldest_unfinished_start(dag_id)
        # A second before it: on SQLite a stored time compares as earlier than the same time bound as
        # a parameter (its text lacks the zone suffix), which would take the unfinished run with it.
        cutoff = before if oldest is None else min(before, oldest - timedelta(seconds=1))
        cutoffs[dag_id] = cutoff.isoformat()
        run_cleanup(clean_before_timestamp=pendulum.instance(cutoff), table_names=CLEANED_TABLES,
                    dag_ids=[dag_id], skip_archive=True, confirm=False, batch_size=batch_size)
        old = _runs_started_before(dag_id, cutoff)  # all finished: the cutoff is before the unfinished
        if old > 1:  # more than the newest scheduled run: run_cleanup failed and only logged it
            raise SystemExit(f"the metadata of {dag_id} was not cleaned: {old} finished runs started "
                             f"before {cutoff.isoformat()} are left (see the warnings above)")
        runs = _counts([dag_id])["dag_runs"][dag_id]
        print(f"metadata of {dag_id}: {counts['before']['dag_runs'][dag_id] - runs} runs removed, "
              f"{runs} left (cutoff {cutoff.isoformat(timespec='seconds')})", flush=True)
    counts["asset_events_removed"] = _delete_asset_events(before, dag_ids, batch_size)
    counts["after"] = _counts(dag_ids)
    return counts


def _unfinished_runs(dag_ids: list[str]) -> dict[str, list[str]]:
    """The runs that are queued or running: their task logs are kept whatever their age."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    found: dict[str, list[str]] = {dag_id: [] for dag_id in dag_ids}
    finished = [DagRunState.SUCCESS, DagRunState.FAILED]
    with create_session() as session:
        query = select(DagRun.dag_id, DagRun.run_id).where(DagRun.dag_id.in_(dag_ids),
                                                           DagRun.state.not_in(finished))
        for dag_id, run_id in session.execute(query):
            found[dag_id].append(run_id)
    return found


def _oldest_unfinished_start(dag_id: str) -> datetime | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.min(func.coalesce(DagRun.start_date, DagRun.queued_at)))
                              .where(DagRun.dag_id == dag_id,
                                     DagRun.state.not_in([DagRunState.SUCCESS, DagRunState.FAILED])))


def _runs_started_before(dag_id: str, cutoff: datetime) -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return int(session.scalar(select(func.count()).select_from(DagRun)
                                  .where(DagRun.dag_id == dag_id, DagRun.start_date < cutoff)) or 0)


def _delete_asset_events(before: datetime, dag_ids: list[str], batch_size: int) -> int:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    removed = 0
    while True:
        with create_session() as session:
            batch = select(AssetEvent.id).where(AssetEvent.source_dag_id.in_(dag_ids),
                                                AssetEvent.timestamp < before).limit(batch_size)
            result: Any = session.execute(delete(AssetEvent).where(AssetEvent.id.in_(batch)))
            done = int(result.rowcount)
        removed += done
        if done < batch_size:
            return removed
        print(f"asset events: {removed} removed so far", flush=True)


def _counts(dag_ids: list[str]) -> dict[str, dict[str, int]]:
    from airflow.models.asset import AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.models.log import Log
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    def per_dag(column: Any) -> dict[str, int]:
        rows = session.execute(select(column, func.count()).where(column.in_(dag_ids)).group_by(column))
        found = {dag_id: int(count) for dag_id, count in rows}
        return {dag_id: found.get(dag_id, 0) for dag_id in dag_ids}

    with create_session() as session:
        return {"dag_runs": per_dag(DagRun.dag_id), "task_instances": per_dag(TaskInstance.dag_id),
                "audit_log": per_dag(Log.dag_id), "asset_events": per_dag(AssetEvent.source_dag_id)}


if __name__ == "__main__":
    sys.exit(main())
