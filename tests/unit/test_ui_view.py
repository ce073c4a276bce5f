"""The stream status view: real status files, a real ledger and real Parquet results, numbers checked.

Also the app around it, with Airflow's access check replaced by a stand-in (the real one is proved
against a running Airflow in tests/e2e/test_ui_page.py).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from support import write_structured_record

from wordstream import control, results
from wordstream.engines import app_args
from wordstream.engines.driver import RECENT_BATCHES, Driver
from wordstream.ledger import Ledger
from wordstream.orchestration.status_app import URL_PREFIX, create_app, render_page
from wordstream.orchestration.status_view import REFRESH_SECONDS, TOP_WORDS, stream_view
from wordstream.settings import Engine, Settings

NOW = datetime(2025, 11, 24, 12, 0, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def write_batch(output: Path, batch_id: int, counts: dict[str, int]) -> None:
    """One batch in the results layout, written with pyarrow as Spark would (key string, count long)."""
    folder = results.batch_dir(output, batch_id)
    folder.mkdir(parents=True)
    table = pa.table({"key": pa.array(list(counts), pa.string()),
                      "count": pa.array(list(counts.values()), pa.int64())})
    pq.write_table(table, folder / "part-00000.parquet")


def stage(ledger: Ledger, name: str, sha: str, engines: tuple[str, ...] = ("structured", "dstream")) -> str:
    """A landing file published to ``engines``, as the staging task records it; returns its watch name."""
    row = ledger.begin(name, sha, 100)
    watch_name = f"{sha[:16]}-{name}"
    for engine in engines:
        ledger.claim(row.id, sha, engine, watch_name)
        ledger.record_published(sha, engine)
    ledger.finish(row.id, "staged", watch_name=watch_name)
    return watch_name


def quarantine(ledger: Ledger, name: str, reason: str) -> None:
    row = ledger.begin(name, None, 5)
    ledger.finish(row.id, "quarantined", reason=reason)


def publish_file(settings: Settings, engine: Engine, watch_name: str, age_seconds: float) -> None:
    path = settings.watch(engine) / watch_name
    path.write_text("some words\n")
    stamp = NOW.timestamp() - age_seconds
    os.utime(path, (stamp, stamp))


KNOBS = {"batch_seconds": 0.5, "max_files_per_trigger": 1, "max_bytes_per_trigger": None,
         "state_store": "hdfs", "shuffle_partitions": 2}
RECENT = [
    {"batch_id": i, "time": iso(NOW - timedelta(seconds=2 * (3 - i))), "input_rows": 100 * i,
     "input_rows_per_second": 50.0 * i, "processed_rows_per_second": 125.5 * i, "batch_duration_ms": 400 + i}
    for i in range(1, 4)
]


@pytest.fixture
def populated(settings: Settings) -> Iterator[Settings]:
    """Both engines have history; structured is running (its lock is held for the test)."""
    started = NOW - timedelta(minutes=5)
    control.write_status(
        settings.state, "structured", state="running", pid=4242, started_at=iso(started), keys="words",
        batch_id=3, batch_time=RECENT[-1]["time"], input_rows=300, input_rows_per_second=150.0,
        processed_rows_per_second=376.5, batch_duration_ms=403, files_in_batch=1, files_processed=2,
        top_words=[["stale", 1]], recent_batches=RECENT, knobs=KNOBS,
    )
    control.write_status(settings.state, "dstream", state="stopped", pid=99, started_at=iso(started),
                         stopped_at=iso(NOW - timedelta(minutes=1)), reason="stop marker", batch_id=11)

    ledger = Ledger(settings.ledger)
    done_a = stage(ledger, "a.txt", "a" * 64)
    done_b = stage(ledger, "b.txt", "b" * 64)
    waiting_old = stage(ledger, "c.txt", "c" * 64)
    waiting_new = stage(ledger, "d.txt", "d" * 64)
    only_dstream = stage(ledger, "e.txt", "e" * 64, engines=("dstream",))
    # The engine's own record: batch 0 read a and b and committed; batch 1 (c) is only planned. The
    # ledger is behind (b's mark was lost with its driver) and wrong (d was never processed).
    write_structured_record(settings.checkpoint("structured"),
                            [[settings.watch("structured") / done_a, settings.watch("structured") / done_b],
                             [settings.watch("structured") / waiting_old]], committed=0)
    ledger.mark_processed("structured", "2", [done_a, waiting_new])
    ledger.mark_processed("dstream", "9", [done_a, done_b, waiting_old, waiting_new, only_dstream])
    duplicate = ledger.begin("a-again.txt", "a" * 64, 100)
    ledger.finish(duplicate.id, "duplicate")
    for i in range(7):
        quarantine(ledger, f"bad{i}.bin", f"not UTF-8 text (byte 0xff at offset {i})")
    ledger.begin("in-flight.txt", "f" * 64, 100)  # staging is working on it right now

    for name in (done_a, done_b):
        publish_file(settings, "structured", name, age_seconds=600)
    publish_file(settings, "structured", waiting_old, age_seconds=42.5)
    publish_file(settings, "structured", waiting_new, age_seconds=3)

    # structured: running totals, the newest batch holding a key wins.
    write_batch(settings.output("structured"), 0, {"the": 3, "spark": 1, "<b>x</b>": 2})
    write_batch(settings.output("structured"), 1, {"the": 7, "naïve": 2})
    # dstream: per-batch counts, summed.
    write_batch(settings.output("dstream"), 0, {"the": 3, "spark": 1})
    write_batch(settings.output("dstream"), 1, {"the": 7, "spark": 4, "Spark": 4})

    with control.hold_lock(settings.state, "structured"):
        yield settings


def test_running_engine_view_has_the_numbers_of_status_ledger_watch_folder_and_results(
        populated: Settings) -> None:
    view = stream_view(populated, "structured", now=NOW)

    status = view["status"]
    assert status["state"] == "running" and status["lock_held"] is True
    assert status["since"] == iso(NOW - timedelta(minutes=5))
    assert (status["pid"], status["batch_id"], status["input_rows"]) == (4242, 3, 300)
    assert status["input_rows_per_second"] == 150.0
    assert status["processed_rows_per_second"] == 376.5
    assert status["batch_duration_ms"] == 403
    assert status["files_processed"] == 2
    assert status["knobs"] == KNOBS  # the run's own knobs, as its driver recorded them
    assert view["recent_batches"] == RECENT

    # c and d published to structured and not processed; c is the oldest, 42.5 s before NOW. The
    # ledger now says what the checkpoint says: b processed, d not.
    assert view["lag"] == {
        "files": 2, "oldest_name": f"{'c' * 16}-c.txt", "oldest_age_seconds": 42.5,
        "oldest_at": iso(NOW - timedelta(seconds=42.5)),
    }
    assert Ledger(populated.ledger).processed_watch_names("structured") == {f"{'a' * 16}-a.txt",
                                                                            f"{'b' * 16}-b.txt"}

    ledger = view["ledger"]
    assert ledger["exists"] is True
    assert ledger["files"] == {"landed": 1, "staged": 5, "quarantined": 7, "duplicate": 1}
    assert ledger["total_files"] == 14
    assert ledger["deliveries"] == {"publishing": 0, "published": 2, "processed": 2, "returned": 0}
    assert [item["name"] for item in ledger["latest_quarantine"]] == [f"bad{i}.bin" for i in (6, 5, 4, 3, 2)]
    assert ledger["latest_quarantine"][0]["reason"] == "not UTF-8 text (byte 0xff at offset 6)"
    assert "unprocessed" not in ledger
    assert ledger["epoch"] == Ledger(populated.ledger).current_epoch("structured")
    assert ledger["epoch"].startswith("structured-")

    assert view["results"] == {
        "semantics": "running-totals", "batches": 2, "distinct_words": 4, "total_count": 7 + 1 + 2 + 2,
        "top_words": [["the", 7], ["<b>x</b>", 2], ["naïve", 2], ["spark", 1]],
    }
    assert view["notes"] == []
    assert view["refresh_seconds"] == REFRESH_SECONDS
    json.dumps(view)  # JSON-ready as it is


def test_the_lag_follows_the_commit_log(populated: Settings) -> None:
    """The ledger is reconciled again when the record changes (batch 1, c, commits), and only then:
    a driver's mark of its newest batch is not undone by the record as it was before that batch."""
    assert stream_view(populated, "structured", now=NOW)["lag"]["files"] == 2
    commits = populated.checkpoint("structured") / "commits"
    (commits / "1").write_text((commits / "0").read_text())
    assert stream_view(populated, "structured", now=NOW)["lag"]["oldest_name"] == f"{'d' * 16}-d.txt"
    ledger = Ledger(populated.ledger)
    ledger.mark_processed("structured", "2", [f"{'d' * 16}-d.txt"])  # newer than the record read
    assert stream_view(populated, "structured", now=NOW)["lag"]["files"] == 0


def test_wordstream_status_shows_the_same_lag(populated: Settings, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from wordstream import cli

    monkeypatch.setenv("WORDSTREAM_DATA_DIR", str(populated.data_dir))
    assert cli.main(["status", "--engine", "structured", "--json"]) == 0
    lag = json.loads(capsys.readouterr().out)["lag"]
    assert (lag["files"], lag["oldest_name"], lag["notes"]) == (2, f"{'c' * 16}-c.txt", [])
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"2 files not processed yet (oldest {'c' * 16}-c.txt, waiting" in out
    assert "0 files not processed yet" in out  # dstream


def test_stopped_engine_view_sums_batch_counts_and_dates_state_from_the_stop(populated: Settings) -> None:
    view = stream_view(populated, "dstream", now=NOW)
    assert view["status"]["state"] == "stopped"
    assert view["status"]["since"] == iso(NOW - timedelta(minutes=1))
    assert view["status"]["reason"] == "stop marker"
    assert view["recent_batches"] == [{"batch_id": 11, "time": None, "input_rows": None,
                                       "input_rows_per_second": None, "processed_rows_per_second": None,
                                       "batch_duration_ms": None}]
    assert view["lag"]["files"] == 0 and view["lag"]["oldest_age_seconds"] is None
    assert view["ledger"]["deliveries"]["processed"] == 5
    assert view["results"]["top_words"] == [["the", 10], ["spark", 5], ["Spark", 4]]
    assert view["results"]["total_count"] == 19


def test_the_view_reads_a_compacted_output_and_refreshes_after_a_compaction(populated: Settings) -> None:
    before = stream_view(populated, "dstream", now=NOW)["results"]
    write_batch(populated.output("dstream"), 2, {"the": 1, "new": 1})
    done = results.compact(populated.output("dstream"), "batch-counts", 1)
    assert done is not None and done.folded == 2
    view = stream_view(populated, "dstream", now=NOW)["results"]
    assert view["batches"] == 3  # two folded into the snapshot, one after it
    assert view["top_words"] == [["the", 11], ["spark", 5], ["Spark", 4], ["new", 1]]
    assert view["total_count"] == before["total_count"] + 2
    assert results.compact(populated.output("dstream"), "batch-counts", 2) is not None  # all folded now
    assert stream_view(populated, "dstream", now=NOW)["results"] == {**view}


def test_a_driver_gone_without_final_status_shows_failed(settings: Settings) -> None:
    control.write_status(settings.state, "structured", state="running", pid=1, started_at=iso(NOW),
                         batch_id=0)
    view = stream_view(settings, "structured", now=NOW)
    assert view["status"]["state"] == "failed"
    assert "killed" in view["status"]["reason"]
    assert view["status"]["since"] == view["status"]["updated_at"]


def test_the_driver_status_feeds_the_charts_with_its_last_batches(settings: Settings) -> None:
    args = app_args.parse("dstream", app_args.AppArgs.for_engine(settings, "dstream").to_argv())
    sigterm = signal.getsignal(signal.SIGTERM)  # the driver installs its own handler
    try:
        with Driver("dstream", args) as driver:
            driver.running()
            for batch in range(RECENT_BATCHES + 5):
                driver.batch_done(batch, rows_in=10 * batch, seconds=0.5, files=[], rows_out=batch)
            view = stream_view(settings, "dstream")
            assert view["status"]["state"] == "running"
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    recent = view["recent_batches"]
    assert [b["batch_id"] for b in recent] == list(range(5, RECENT_BATCHES + 5))
    assert recent[-1] == {"batch_id": RECENT_BATCHES + 4, "time": view["status"]["batch_time"],
                          "input_rows": 10 * (RECENT_BATCHES + 4),
                          "input_rows_per_second": 20.0 * (RECENT_BATCHES + 4),
                          "processed_rows_per_second": 20.0 * (RECENT_BATCHES + 4), "batch_duration_ms": 500}
    assert stream_view(settings, "dstream")["status"]["state"] == "stopped"


def test_top_words_are_capped_and_ranked_by_count_then_word(settings: Settings) -> None:
    counts = {f"w{i:02d}": 100 - i // 2 for i in range(30)}  # pairs of equal counts
    write_batch(settings.output("dstream"), 0, counts)
    top = stream_view(settings, "dstream", now=NOW)["results"]["top_words"]
    assert len(top) == TOP_WORDS
    assert top[:3] == [["w00", 100], ["w01", 100], ["w02", 99]]
    assert top[-1] == ["w19", 91]


def test_results_are_reread_when_a_batch_is_added(settings: Settings) -> None:
    output = settings.output("dstream")
    write_batch(output, 0, {"a": 1})
    assert stream_view(settings, "dstream", now=NOW)["results"]["total_count"] == 1
    write_batch(output, 1, {"a": 2, "b": 1})
    assert stream_view(settings, "dstream", now=NOW)["results"]["top_words"] == [["a", 3], ["b", 1]]


def test_nothing_at_all_gives_a_view_with_notes_and_creates_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "never-used")
    view = stream_view(settings, "structured", now=NOW)
    assert view["status"]["state"] == "never started"
    assert view["status"]["since"] is None and view["status"]["pid"] is None
    assert view["recent_batches"] == []
    assert view["lag"] == {"files": 0, "oldest_name": None, "oldest_at": None, "oldest_age_seconds": None}
    assert view["ledger"]["exists"] is False and view["ledger"]["total_files"] == 0
    assert view["ledger"]["epoch"] is None
    assert view["results"]["top_words"] == [] and view["results"]["batches"] == 0
    assert any("never" in note or "No structured stream" in note for note in view["notes"])
    assert any("ledger" in note for note in view["notes"])
    assert any("No results" in note for note in view["notes"])
    assert not settings.data_dir.exists()
    assert "never started" in render_page(view)


def test_unknown_engine_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        stream_view(settings, "flink")


# -- the app ------------------------------------------------------------------------------------
def token_required(authorization: str | None = Header(default=None)) -> None:
    """Stand-in for Airflow's check: 401 without a token, 403 with a wrong one."""
    if authorization is None:
        raise HTTPException(status_code=401, detail="Not authenticated")
    if authorization != "Bearer good":
        raise HTTPException(status_code=403, detail="Forbidden")


@pytest.fixture
def client(populated: Settings) -> TestClient:
    """The app mounted as Airflow mounts plugin apps: under its prefix in a parent app."""
    root = FastAPI()
    root.mount(URL_PREFIX, create_app(access=token_required, settings=lambda: populated,
                                      login_url=lambda next_url: f"/auth/login?next={next_url}"))
    return TestClient(root, base_url="http://airflow.test", follow_redirects=False)


def test_json_endpoint_serves_the_view(client: TestClient, populated: Settings) -> None:
    response = client.get("/wordstream/api/structured", headers={"Authorization": "Bearer good"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    served = response.json()
    expected = stream_view(populated, "structured")
    for view in (served, expected):
        view.pop("generated_at")
        view["lag"].pop("oldest_age_seconds")
    assert served == expected


def test_page_embeds_the_view_safely_and_loads_local_assets_only(client: TestClient) -> None:
    response = client.get("/wordstream/structured", headers={"Authorization": "Bearer good"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<script src="static/stream.js"></script>' in page
    assert "http://" not in page and "https://" not in page  # no CDN: the machine may be offline
    assert "<b>x</b>" not in page  # a word is data, never markup
    embedded = page.split('id="initial-view">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["results"]["top_words"][1] == ["<b>x</b>", 2]
    script = client.get("/wordstream/static/stream.js")
    assert script.status_code == 200 and "api/" in script.text
    index = client.get("/wordstream/", headers={"Authorization": "Bearer good"})
    assert 'href="structured"' in index.text and "running" in index.text


def test_without_a_session_pages_redirect_to_login_and_the_api_refuses(client: TestClient) -> None:
    page = client.get("/wordstream/structured")
    assert page.status_code == 307
    assert page.headers["location"] == "/auth/login?next=http://airflow.test/wordstream/structured"
    assert client.get("/wordstream/api/structured").status_code == 401
    wrong = {"Authorization": "Bearer bad"}
    assert client.get("/wordstream/api/structured", headers=wrong).status_code == 403
    assert client.get("/wordstream/structured", headers=wrong).status_code == 403


def test_unknown_engine_is_404(client: TestClient) -> None:
    assert client.get("/wordstream/api/flink", headers={"Authorization": "Bearer good"}).status_code == 404
    assert client.get("/wordstream/flink", headers={"Authorization": "Bearer good"}).status_code == 404
