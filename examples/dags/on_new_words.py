"""
### On new words (an example of a DAG downstream of staging)

`schedule=[Asset("wordstream_watch")]`: Airflow runs this DAG after a `stage_incoming_files` run
published files (a run that only found duplicates, rejects or nothing emits no event). Copy it into
your DAGs folder and replace the last step with your own: refresh a report, notify someone about
quarantined files, start a batch job over the day's archive.

* **Event.** One per staging run that published, at the end of the run (at most one a
  `WORDSTREAM_STAGING_RUN_SECONDS`), with the run's counts in its `extra`:
  `{"published": {"structured": 3, "dstream": 3}, "staged": 3, "duplicates": 1, "quarantined": 0,
  "waves": 12}`.
* **Several events per run.** One run of this DAG may consume several events (they queue while it
  runs or waits): always sum over `triggering_asset_events`. Do not set `max_active_runs=1` here:
  in Airflow 3.3 it can hold a queued event back until the next one arrives.
* **Published, not yet counted.** The files are in the engines' watch folders; each stream counts them
  in its next batch (`wordstream totals`). The counts are a notification; the ledger
  (`wordstream ledger`) is the record of every file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, dag, task

WATCH_ASSET = Asset(name="wordstream_watch")
log = logging.getLogger(__name__)


def summarise(extras: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of the events' extras: runs, files published per engine, staged, duplicates, quarantined."""
    total: dict[str, Any] = {"runs": 0, "published": {}, "staged": 0, "duplicates": 0, "quarantined": 0}
    for extra in extras:
        total["runs"] += 1
        for engine, count in (extra.get("published") or {}).items():
            total["published"][engine] = total["published"].get(engine, 0) + int(count)
        for key in ("staged", "duplicates", "quarantined"):
            total[key] += int(extra.get(key, 0))
    return total


@dag(
    dag_id="on_new_words",
    description="Example: runs after each staging run that published files",
    doc_md=__doc__,
    schedule=[WATCH_ASSET],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["wordstream", "example"],
    default_args={"owner": "data-engineering", "retries": 1, "retry_delay": timedelta(seconds=10)},
)
def on_new_words() -> None:
    @task
    def new_files(triggering_asset_events: Any = None) -> dict[str, Any]:
        events = [event for _asset, queued in (triggering_asset_events or {}).items() for event in queued]
        summary = summarise(event.extra or {} for event in events)
        published = ", ".join(f"{engine} {count}" for engine, count in summary["published"].items())
        log.info("%d staging runs published %s: %d staged, %d duplicates, %d quarantined", summary["runs"],
                 published or "nothing", summary["staged"], summary["duplicates"], summary["quarantined"])
        if summary["quarantined"]:
            log.warning("%d files were quarantined: see `wordstream ledger` for the reasons",
                        summary["quarantined"])
        return summary

    new_files()


on_new_words()
