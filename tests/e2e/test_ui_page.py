"""The stream status page in the real Airflow UI: behind its login, in its menu, showing true numbers.

Against the session's real stack (Airflow standalone, our plugin loaded from ``plugins/``), with a
real status file, ledger, watch folder and Parquet results written into the stack's data directory,
and Debian's Chromium (installed by the test when missing) doing what a person does: sign in, open
Browse → "Stream status: structured", read the page. Its numbers are checked against
``wordstream status --json`` and against what the test wrote; a screenshot is kept in the test's tmp
directory. Requests without a session are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from headless_chromium import Chromium, ensure_chromium

from wordstream import control, results
from wordstream.ledger import Ledger
from wordstream.settings import Engine, Settings
from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.airflow_env import ADMIN_USER
from wordstream_dev.stack import Stack

pytestmark = pytest.mark.e2e

ENGINE: Engine = "structured"
MENU_ITEM = f"Stream status: {ENGINE}"
BATCHES = 12

# What the test writes, so the expectations below do not come from the code under test.
RESULT_BATCHES = [
    {f"w{i:02d}": 100 - i for i in range(25)} | {"<i>tag</i>": 50},
    {"w00": 140, "naïve": 77, "w24": 99},  # running totals: the newest batch of a key wins
]
TOP_EXPECTED = sorted({**RESULT_BATCHES[0], **RESULT_BATCHES[1]}.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
QUARANTINED = [("latin1.txt", "not UTF-8 text (byte 0xe9 at offset 3)"), ("huge.txt", "larger than 16 bytes"),
               ("empty.txt", "empty file")]
PROCESSED, WAITING = ["p1.txt", "p2.txt", "p3.txt"], ["w1.txt", "w2.txt"]
WAITING_AGES = [75.0, 12.0]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def batch_record(batch_id: int, when: datetime) -> dict[str, Any]:
    return {"batch_id": batch_id, "time": iso(when), "input_rows": 1000 + 37 * batch_id,
            "input_rows_per_second": 500.0 + 11.5 * batch_id,
            "processed_rows_per_second": 2400.0 + 95.5 * batch_id, "batch_duration_ms": 300 + 7 * batch_id}


def write_running_status(state_dir: Path, last_batch: int, started: datetime) -> dict[str, Any]:
    """What the driver writes after batch ``last_batch``, with the recent-batches history."""
    now = datetime.now(UTC)
    recent = [batch_record(b, now - timedelta(seconds=2 * (last_batch - b)))
              for b in range(max(0, last_batch - BATCHES + 1), last_batch + 1)]
    latest = recent[-1]
    return control.write_status(
        state_dir, ENGINE, state="running", pid=os.getpid(), started_at=iso(started), keys="words",
        reason=None, batch_id=last_batch, batch_time=latest["time"], input_rows=latest["input_rows"],
        input_rows_per_second=latest["input_rows_per_second"],
        processed_rows_per_second=latest["processed_rows_per_second"],
        batch_duration_ms=latest["batch_duration_ms"], files_in_batch=1, files_processed=len(PROCESSED),
        top_words=[], recent_batches=recent,
    )


# -- the data in the stack's data directory -----------------------------------------------------
MOVABLE = ("state/structured.status.json", "state/ledger.sqlite", "state/ledger.sqlite-wal",
           "state/ledger.sqlite-shm", "output/structured", "watch/structured")


@pytest.fixture(scope="module")
def stream_data(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A structured engine with history, held "running" by this process's lock.

    The stack is shared by the session: whatever its data directory holds for this engine is moved
    aside first and put back afterwards, so other tests find it as they left it.
    """
    settings = stack.settings
    if control.is_running(settings.state, ENGINE):
        pytest.skip(f"a {ENGINE} stream is running in the shared stack")
    aside = tmp_path_factory.mktemp("moved-aside")
    moved = []
    for relative in MOVABLE:
        source = settings.data_dir / relative
        if source.exists():
            (aside / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, aside / relative)
            moved.append(relative)
    settings.watch(ENGINE).mkdir(parents=True, exist_ok=True)
    try:
        populate(settings)
        with control.hold_lock(settings.state, ENGINE):
            write_running_status(settings.state, BATCHES - 1, datetime.now(UTC) - timedelta(minutes=7))
            yield settings
    finally:
        for relative in MOVABLE:
            target = settings.data_dir / relative
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        for relative in moved:
            shutil.move(aside / relative, settings.data_dir / relative)
        settings.watch(ENGINE).mkdir(parents=True, exist_ok=True)


def populate(settings: Settings) -> None:
    ledger = Ledger(settings.ledger)
    names = {}
    for i, name in enumerate(PROCESSED + WAITING):
        sha = f"{i:02d}" * 32
        row = ledger.begin(name, sha, 64)
        names[name] = f"{sha[:16]}-{name}"
        ledger.claim(row.id, sha, ENGINE, names[name])
        ledger.record_published(sha, ENGINE)
        ledger.finish(row.id, "staged", watch_name=names[name])
        (settings.watch(ENGINE) / names[name]).write_text("words words\n")
    ledger.mark_processed(ENGINE, "3", [names[name] for name in PROCESSED])
    now = time.time()
    for name, age in zip(WAITING, WAITING_AGES, strict=True):
        os.utime(settings.watch(ENGINE) / names[name], (now - age, now - age))
    for name, reason in QUARANTINED:
        row = ledger.begin(name, None, 3)
        ledger.finish(row.id, "quarantined", reason=reason)
    again = ledger.begin("p1-copy.txt", "00" * 32, 64)
    ledger.finish(again.id, "duplicate")
    for batch_id, counts in enumerate(RESULT_BATCHES):
        folder = results.batch_dir(settings.output(ENGINE), batch_id)
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"key": pa.array(list(counts), pa.string()),
                                 "count": pa.array(list(counts.values()), pa.int64())}),
                       folder / "part-00000.parquet")


def cli_status(settings: Settings) -> dict[str, Any]:
    """``wordstream status --json``, run as an operator would."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("wordstream")), "status", "--engine", ENGINE, "--json"],
        env={**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir)}, capture_output=True, text=True,
        timeout=60, check=True,
    )
    return dict(json.loads(done.stdout))


# -- the browser --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = ensure_chromium()
    with Chromium(tmp_path_factory.mktemp("chromium") / "profile", binary=binary) as chromium:
        yield chromium


def by_text(selector: str, text: str) -> str:
    """JavaScript finding the first element matching ``selector`` whose text is exactly ``text``."""
    return (f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
            f".find(e => e.textContent.trim() === {json.dumps(text)})")


FRAME = f"document.querySelector('iframe[title={json.dumps(MENU_ITEM)}]')"
READ_FIELDS = """(() => {
  const frame = FRAME_EXPRESSION;
  const doc = frame ? frame.contentDocument : document;
  if (!doc || !doc.querySelector('[data-field="state"]')) return null;
  const fields = {};
  doc.querySelectorAll('[data-field]').forEach(e => {
    fields[e.dataset.field] = {text: e.textContent.trim(), value: e.dataset.value};
  });
  const words = Array.from(doc.querySelectorAll('#words-chart g.word-row'))
    .map(g => [g.dataset.word, Number(g.dataset.count), g.querySelector('text.count').textContent]);
  const dots = doc.querySelectorAll('#rates-chart circle').length;
  const quarantine = Array.from(doc.querySelectorAll('#quarantine li')).map(li => li.textContent);
  const notes = Array.from(doc.querySelectorAll('#notes li')).map(li => li.textContent);
  return {fields, words, dots, quarantine, notes, url: doc.location.href};
})()"""


def read_page(frame: str | None = None) -> str:
    """JavaScript returning what the status page shows (in Airflow's ``frame``, or the page itself)."""
    return READ_FIELDS.replace("FRAME_EXPRESSION", frame or "null")


def number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


def sign_in(browser: Chromium, password: str) -> None:
    browser.wait_for("!!document.querySelector('input[type=password]')", what="the login form")
    browser.type_into("document.querySelector('input[name=username]')", ADMIN_USER, what="user name")
    browser.type_into("document.querySelector('input[type=password]')", password, what="password")
    browser.click("document.querySelector('button[type=submit]:not([disabled])')", what="Sign in")
    browser.wait_for("!location.pathname.startsWith('/auth/')", what="the login to finish")


# -- the tests ----------------------------------------------------------------------------------
def test_without_a_session_everything_is_refused(stack: Stack, stream_data: Settings) -> None:
    base = f"{stack.api_url}/wordstream"
    anonymous = requests.get(f"{base}/api/{ENGINE}", timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    assert "stream" not in anonymous.text.lower()  # no data leaks in the refusal
    forged = requests.get(f"{base}/api/{ENGINE}", headers={"Authorization": "Bearer not.a.jwt"}, timeout=30)
    assert forged.status_code in (401, 403)
    page = requests.get(f"{base}/{ENGINE}", allow_redirects=False, timeout=30)
    assert page.status_code == 307
    assert page.headers["location"].startswith("/auth/login?next=")
    assert requests.get(f"{base}/", allow_redirects=False, timeout=30).status_code == 307


def test_json_endpoint_with_a_token_matches_the_cli(stack: Stack, api: AirflowClient,
                                                    stream_data: Settings) -> None:
    response = api.session.get(f"{stack.api_url}/wordstream/api/{ENGINE}", timeout=30)
    assert response.status_code == 200
    view = response.json()
    status = cli_status(stream_data)
    for field in ("state", "pid", "batch_id", "input_rows", "input_rows_per_second",
                  "processed_rows_per_second", "batch_duration_ms", "files_processed", "started_at"):
        assert view["status"][field] == status[field], field
    assert view["status"]["state"] == "running"
    assert [b["batch_id"] for b in view["recent_batches"]] == list(range(BATCHES))
    assert view["results"]["top_words"] == [list(row) for row in TOP_EXPECTED]


def test_the_page_from_the_airflow_menu_shows_the_stream(stack: Stack, stream_data: Settings,
                                                        browser: Chromium, tmp_path: Path) -> None:
    # A page asked for without a session goes through Airflow's login and comes back.
    browser.open(f"{stack.api_url}/wordstream/{ENGINE}")
    assert "/auth/login" in browser.evaluate("location.href")
    sign_in(browser, stack.admin_password())
    assert browser.evaluate("location.pathname") == f"/wordstream/{ENGINE}"
    browser.wait_for(read_page(), what="the page after signing in")

    # As a person finds it: Airflow's home, Browse, the menu entry; the page opens in Airflow's frame.
    browser.open(f"{stack.api_url}/")
    browser.click(by_text("nav button, button", "Browse"), what="the Browse menu")
    browser.click(by_text("[role=menuitem]", MENU_ITEM), what=f"the {MENU_ITEM!r} menu entry")
    browser.wait_for(f"location.pathname.startsWith('/plugin/wordstream-{ENGINE}')", what="the plugin route")
    seen = browser.wait_for(read_page(FRAME), what="the status page inside Airflow's frame")
    fields = seen["fields"]

    status = cli_status(stream_data)
    assert fields["state"]["text"] == status["state"] == "running"
    assert fields["pid"]["text"] == str(status["pid"])
    assert fields["batch_id"]["text"] == str(status["batch_id"]) == str(BATCHES - 1)
    for field in ("input_rows", "input_rows_per_second", "processed_rows_per_second", "batch_duration_ms",
                  "files_processed"):
        assert number(fields[field]["text"]) == pytest.approx(status[field]), field
    assert fields["since"]["value"] == status["started_at"]
    assert fields["batch_time"]["value"] == status["batch_time"]

    assert number(fields["lag_files"]["text"]) == len(WAITING)
    assert float(fields["lag_oldest_age"]["value"]) == pytest.approx(WAITING_AGES[0], abs=30)
    expected_ledger = {"ledger_staged": len(PROCESSED + WAITING), "ledger_quarantined": len(QUARANTINED),
                       "ledger_duplicate": 1, "ledger_landed": 0, "delivery_processed": len(PROCESSED),
                       "delivery_published": len(WAITING), "delivery_returned": 0}
    assert {key: number(fields[key]["text"]) for key in expected_ledger} == expected_ledger
    assert [item.split(":")[0] for item in seen["quarantine"]] == [name for name, _ in reversed(QUARANTINED)]
    assert QUARANTINED[0][1] in seen["quarantine"][-1]

    assert [(word, count) for word, count, _ in seen["words"]] == TOP_EXPECTED
    assert all(number(shown) == count for _, count, shown in seen["words"])
    assert seen["dots"] == 2 * BATCHES  # input and processed rate of every recent batch
    assert seen["notes"] == []

    shot = browser.screenshot(tmp_path / "stream-status-structured.png")
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")

    # It refreshes by itself: the next batch shows up without a reload.
    write_running_status(stream_data.state, BATCHES, datetime.now(UTC) - timedelta(minutes=7))
    browser.wait_for(f"(() => {{ const r = {read_page(FRAME)}; return r && r.fields.batch_id.text === "
                     f"'{BATCHES}'; }})()", timeout=20, what="the page to show the next batch")


def test_an_engine_that_never_ran_says_so(stack: Stack, stream_data: Settings, browser: Chromium) -> None:
    if control.status_path(stream_data.state, "dstream").exists():
        pytest.skip("dstream has history in the shared stack")
    browser.open(f"{stack.api_url}/wordstream/dstream")
    seen = browser.wait_for(read_page(), what="the dstream page")
    assert seen["fields"]["state"]["text"] == "never started"
    assert any("No dstream stream has run yet" in note for note in seen["notes"])
    assert browser.evaluate("document.getElementById('problem').hidden") is True
