"""
### Stage incoming files

Moves files that producers drop into `data/landing/` into the folders the streams watch, safely.

1. **wait_for_landing_files** — a sensor that succeeds as soon as a file in landing is *stable* or
   will be within half a second (not growing, not a hidden/temp/partial name).
2. **stage_files** — stages in *waves* until `WORDSTREAM_STAGING_RUN_SECONDS` (default 60) after the
   run started: each wave takes every stable file: validate (readable UTF-8 text within the size
   limit), dedupe by content hash, publish atomically into each engine's `data/watch/<engine>/` with
   a fresh mtime, move the original to `data/archive/`, send rejects to `data/quarantine/` with a
   reason file, record everything in the ledger (`wordstream ledger`), log one line. Between waves it
   waits (inotify on landing) for the next file to be stable. If the task dies half way, the next
   run completes the wave; no file is ever staged twice.
3. **announce** — emits an event on the `wordstream_watch` asset when the run published files, with
   the counts in its extra (`published` per engine, `staged`, `duplicates`, `quarantined`, `waves`);
   skipped when nothing was published, so a DAG scheduled on the asset runs only for new data.

**Why runs of a minute.** One run per file wave would be one DAG run (and two task logs) per second
under a steady arrival. A run that keeps staging for a bounded time makes at most 1,440 runs a day
at the default, whatever the rate, and a file that lands during a run is staged without any
scheduler hand-over: as soon as it has been quiet for `WORDSTREAM_STABLE_SECONDS` (the loop saw it
arrive, so its re-check is already done). Files that land while one run hands over to the next are
picked up by the next run's sensor.

**Why a poking sensor on a continuous schedule.** `@continuous` starts the next run as soon as one
ends, and the sensor pokes every half second in `poke` mode. It fires half a second before a file
has been quiet for `WORDSTREAM_STABLE_SECONDS` (or for a file already stable, or a symlink or other
entry to quarantine), so the hand-over to `stage_files` overlaps the end of the stability window. A
deferrable sensor frees its worker slot while waiting, but each hand-over between triggerer and
worker adds seconds before staging starts. A sensor that sees nothing for an hour skips, and the
next run starts at once. Its XCom names the files it fired for (name, size, mtime, inode) and when
its pokes first saw each of them as it is: `stage_files` takes those still unchanged without the
half-second re-check pause once that first look is half a second old.

**Guards.** `execution_timeout` on `stage_files` is a hang guard only (the run's length plus
15 minutes, room for a wave over a large backlog); a timeout or a crash mid-wave is completed by
the retry. After 5 failed runs in a row Airflow pauses the DAG instead of starting failing runs
back to back: fix the cause (the task log says it), then unpause.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from wordstream.settings import STAGING_DAG_ID, Settings

# A stable name, whatever the data directory: a DAG with schedule=[Asset("wordstream_watch")] runs
# after every staging run that published files (examples/dags/on_new_words.py).
WATCH_ASSET = Asset(name="wordstream_watch")
log = logging.getLogger(__name__)
POKE_SECONDS = 0.5
# The sensor fires this long before a file is stable: about what the hand-over to stage_files takes.
LEAD_SECONDS = 0.5
HANG_GUARD = timedelta(minutes=15)


@dag(
    dag_id=STAGING_DAG_ID,
    description="Sensor-driven staging: data/landing → data/watch/<engine>",
    doc_md=__doc__,
    schedule="@continuous",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    tags=["wordstream", "staging"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(seconds=5)},
)
def stage_incoming_files() -> None:
    @task.sensor(poke_interval=POKE_SECONDS, mode="poke", timeout=3600, soft_fail=True)
    def wait_for_landing_files() -> PokeReturnValue:
        from wordstream import staging

        observed = staging.observe_landing(Settings.from_env(), lead_seconds=LEAD_SECONDS,
                                           looks=staging.SENSOR_LOOKS)
        return PokeReturnValue(is_done=observed is not None,
                               xcom_value=observed.to_xcom() if observed else None)

    @task(execution_timeout=timedelta(seconds=Settings.from_env().staging_run_seconds) + HANG_GUARD)
    def stage_files(observed: dict[str, Any] | None, dag_run: Any = None) -> dict[str, Any]:
        from dataclasses import asdict

        from wordstream import staging

        settings = Settings.from_env()
        started = dag_run.start_date.timestamp() if dag_run and dag_run.start_date else time.time()
        report = staging.stage_until(settings, started + settings.staging_run_seconds, progress=log.info,
                                     observed=staging.LandingObservation.from_xcom(observed))
        return asdict(report)

    @task(outlets=[WATCH_ASSET])
    def announce(report: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        from wordstream import staging

        extra = staging.StageReport(**report).event_extra()
        if extra is None:
            raise AirflowSkipException("nothing published by this run: no wordstream_watch event")
        outlet_events[WATCH_ASSET].extra = extra
        return extra

    announce(stage_files(wait_for_landing_files()))  # type: ignore[arg-type]  # XComArgs, resolved at run time


stage_incoming_files()
