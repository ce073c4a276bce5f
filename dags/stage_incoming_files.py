"""
### Stage incoming files

Moves files that producers drop into `data/landing/` into the folders the streams watch, safely.

1. **wait_for_landing_files** — a sensor that succeeds as soon as a *stable* file is in landing
   (not growing, not a hidden/temp/partial name).
2. **stage_files** — stages every stable file in one batch: validate (readable UTF-8 text within the
   size limit), dedupe by content hash, publish atomically into each engine's `data/watch/<engine>/`
   with a fresh mtime, move the original to `data/archive/`, send rejects to `data/quarantine/` with a
   reason file, record everything in the ledger (`wordstream ledger`). Emits an event on the
   `wordstream_watch` asset. If the task dies half way, the next run completes the batch; no file is
   ever staged twice.

**Why a poking sensor on a continuous schedule.** `@continuous` starts the next run as soon as one
ends, and the sensor pokes every half second in `poke` mode; a file that is still too fresh is
awaited inside the poke, so the sensor fires the moment the file has been quiet for
`WORDSTREAM_STABLE_SECONDS`. A deferrable sensor frees its worker slot while waiting, but each
hand-over between triggerer and worker adds seconds before staging starts; a rescheduled sensor pays
the scheduler's loop on every poke. The stream's latency budget (file dropped → counted within a few
seconds) is dominated by that wait, so this DAG keeps one light process poking and nothing else. A
sensor that sees nothing for an hour skips, and the next run starts at once.

**What the sensor hands over.** Its XCom names the stable files it saw (name, size, mtime, inode)
and when. `stage_files` takes those still unchanged without the half-second re-check pause: the
hand-over between the two tasks was the re-check. Files the sensor did not see get the pause.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, PokeReturnValue, dag, task

from wordstream.settings import STAGING_DAG_ID, Settings

# A stable name, whatever the data directory: consumers schedule on it.
WATCH_ASSET = Asset(name="wordstream_watch")
log = logging.getLogger(__name__)
POKE_SECONDS = 0.5


@dag(
    dag_id=STAGING_DAG_ID,
    description="Sensor-driven staging: data/landing → data/watch/<engine>",
    doc_md=__doc__,
    schedule="@continuous",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["wordstream", "staging"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(seconds=5)},
)
def stage_incoming_files() -> None:
    @task.sensor(poke_interval=POKE_SECONDS, mode="poke", timeout=3600, soft_fail=True)
    def wait_for_landing_files() -> PokeReturnValue:
        from wordstream import staging

        observed = staging.observe_landing(Settings.from_env(), wait_seconds=POKE_SECONDS)
        return PokeReturnValue(is_done=observed is not None,
                               xcom_value=observed.to_xcom() if observed else None)

    @task(outlets=[WATCH_ASSET])
    def stage_files(observed: dict[str, Any] | None) -> dict[str, Any]:
        from dataclasses import asdict

        from wordstream import staging

        report = staging.stage(Settings.from_env(), progress=log.info,
                               observed=staging.LandingObservation.from_xcom(observed))
        return asdict(report)

    stage_files(wait_for_landing_files())  # type: ignore[arg-type]  # an XComArg, resolved at run time

stage_incoming_files()
