"""The stream status pages in the real Airflow UI, fed by real streams: true numbers, refreshed live.

On the session's stack (Airflow standalone, our plugin loaded from ``plugins/``) the structured stream
runs through its DAG; files are dropped into landing and staged by the ``stage_incoming_files`` DAG
(good files, a duplicate, files to quarantine). Debian's Chromium, driven by Playwright, does what a
person does: signs in, opens Browse → "Stream status: structured", reads the page. What the pages
show (state, last batch, files processed, lag, ledger counts, top words) is checked against what the
test dropped, the independent reference (``tests/support.py``) and the files on disk; then more files
arrive, and the open pages must show them through their own refresh, without a reload. The dstream
page shows the files waiting for an engine that never ran (the lag), then, once its DAG started it,
its own true numbers. Requests without a session are refused.

Both engines are reset at the end (fresh epochs, nothing waiting, nothing running), as the rest of the
e2e tier expects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from operate import reset, start_stream, unpause_all, wait_running
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Frame, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from support import land, reference_counts, wait_until, write_corpus

from wordstream import control
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Engine, Settings, stream_dag_id
from wordstream_dev.airflow_api import AirflowClient
from wordstream_dev.airflow_env import ADMIN_USER
from wordstream_dev.stack import Stack

pytestmark = pytest.mark.e2e

MENU_ITEM = "Stream status: structured"
BATCH_SECONDS = 1  # operate.STREAM_CONF
TOP = 20
BAD = {"latin1.txt": "caf\xe9\n".encode("latin-1"), "empty.txt": b""}

# What a status page shows, read from the DOM: every [data-field], the bars of the words chart, the
# quarantine list, the notes, when the shown view was generated, and a marker set once per load.
READ_PAGE = """() => {
  if (!document.querySelector('[data-field="state"]')) return null;
  const fields = {};
  document.querySelectorAll('[data-field]').forEach(e => {
    fields[e.dataset.field] = {text: e.textContent.trim(), value: e.dataset.value};
  });
  const words = Array.from(document.querySelectorAll('#words-chart g.word-row'))
    .map(g => [g.dataset.word, Number(g.dataset.count), g.querySelector('text.count').textContent]);
  const quarantine = Array.from(document.querySelectorAll('#quarantine li .name')).map(e => e.textContent);
  const notes = Array.from(document.querySelectorAll('#notes li')).map(li => li.textContent);
  return {fields, words, quarantine, notes, generated: document.body.dataset.generatedAt || null,
          loaded: window.wordstreamLoaded || null};
}"""


def number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


def top_words(files: list[Path]) -> list[tuple[str, int]]:
    """The reference's totals, ranked as the contract says: count descending, then word."""
    return sorted(reference_counts(files, "words").items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]


def newest_batch(settings: Settings, engine: Engine) -> int:
    """The id of the newest ``batch=<id>`` folder the engine wrote (the results layout, read by hand)."""
    names = [name for name in os.listdir(settings.output(engine)) if name.startswith("batch=")]
    return max(int(name.split("=", 1)[1]) for name in names)


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def read(frame: Frame | Page) -> dict[str, Any] | None:
    try:
        return frame.evaluate(READ_PAGE)
    except PlaywrightError:  # between two documents (a navigation): read again
        return None


def shows(seen: dict[str, Any] | None, state: str, processed: int, top: list[tuple[str, int]]) -> bool:
    if not seen:
        return False
    fields = seen["fields"]
    return (fields["state"]["text"] == state and fields["files_processed"]["value"] == str(processed)
            and [(word, count) for word, count, _ in seen["words"]] == top)


def settled(frame: Frame | Page, state: str, processed: int, top: list[tuple[str, int]],
            timeout: float = 180) -> dict[str, Any]:
    """What the page shows once it shows these numbers, and again after one more batch interval.

    The page refreshes by itself; a view it generated at least two batch intervals after the numbers
    first appeared must still show them, so a late over-count (a file counted twice) fails the test.
    """
    first = wait_until(lambda: seen if shows(seen := read(frame), state, processed, top) else None,
                       timeout, f"the page to show {state}, {processed} files processed and the top words")
    later = epoch_of(first["generated"]) + 2 * BATCH_SECONDS

    def refreshed() -> dict[str, Any] | None:
        seen = read(frame)
        return seen if seen and epoch_of(seen["generated"]) > later else None

    again = wait_until(refreshed, 30, "the page's next refresh")
    assert again["loaded"] == first["loaded"] == "once", "the page was reloaded instead of refreshing itself"
    assert shows(again, state, processed, top), again
    return dict(again)


def check_numbers(seen: dict[str, Any], settings: Settings, engine: Engine, *, processed: int,
                  files: list[Path], ledger: dict[str, int], deliveries: dict[str, int]) -> None:
    """The numbers of one settled page against the files dropped, the reference and the disk."""
    fields = seen["fields"]
    assert fields["batch_id"]["text"] == str(newest_batch(settings, engine))
    assert number(fields["files_processed"]["text"]) == processed
    assert number(fields["lag_files"]["text"]) == 0
    assert fields["lag_oldest_age"]["text"] == "—"
    assert {f"ledger_{k}": number(fields[f"ledger_{k}"]["text"]) for k in ledger} == \
        {f"ledger_{k}": v for k, v in ledger.items()}
    assert number(fields["ledger_total"]["text"]) == sum(ledger.values())
    assert {f"delivery_{k}": number(fields[f"delivery_{k}"]["text"]) for k in deliveries} == \
        {f"delivery_{k}": v for k, v in deliveries.items()}
    reference = reference_counts(files, "words")
    assert number(fields["distinct_words"]["text"]) == len(reference)
    assert number(fields["total_count"]["text"]) == sum(reference.values())
    assert all(number(shown) == count for _, count, shown in seen["words"])
    assert sorted(seen["quarantine"]) == sorted(BAD)
    assert seen["notes"] == []


def cli_status(settings: Settings, engine: Engine) -> dict[str, Any]:
    """``wordstream status --json``, run as an operator would."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("wordstream")), "status", "--engine", engine, "--json"],
        env={**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir)}, capture_output=True, text=True,
        timeout=60, check=True,
    )
    return dict(json.loads(done.stdout))


def sign_in(page: Page, password: str) -> None:
    page.fill("input[name=username]", ADMIN_USER)
    page.fill("input[type=password]", password)
    page.click("button[type=submit]:not([disabled])")


def mark_loaded(frame: Frame | Page) -> None:
    """Set a marker in the page's window: a reload would lose it, a refresh keeps it."""
    frame.evaluate("() => { window.wordstreamLoaded = 'once'; }")


# -- the streams --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(stack: Stack, api: AirflowClient) -> Iterator[dict[Engine, str]]:
    """The structured stream running on the session's stack; the test starts dstream.

    Afterwards both engines are reset (new epochs from zero) and their runs must end as success.
    """
    settings = stack.settings
    assert not settings.ledger.exists() or Ledger(settings.ledger).summary()["total_files"] == 0, \
        "the UI test expects a stack on which nothing was staged yet"
    unpause_all(api)
    started = {"structured": start_stream(api, "structured")}
    try:
        wait_running(settings, ["structured"])
        yield started
    finally:
        reset(api, ENGINES, restart=False)
        for engine, run_id in started.items():
            api.wait_for_dag_run(stream_dag_id(engine), run_id, states=("success",), timeout=120)


def processed(settings: Settings, engine: Engine, files: int) -> None:
    wait_until(lambda: control.read_status(settings.state, engine).get("files_processed") == files, 180,
               f"{engine} to process {files} files")


# -- the tests ----------------------------------------------------------------------------------
def test_without_a_session_everything_is_refused(stack: Stack) -> None:
    base = f"{stack.api_url}/wordstream"
    anonymous = requests.get(f"{base}/api/structured", timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    assert "stream" not in anonymous.text.lower()  # no data leaks in the refusal
    forged = requests.get(f"{base}/api/structured", headers={"Authorization": "Bearer not.a.jwt"}, timeout=30)
    assert forged.status_code in (401, 403)
    page = requests.get(f"{base}/structured", allow_redirects=False, timeout=30)
    assert page.status_code == 307
    assert page.headers["location"].startswith("/auth/login?next=")
    assert requests.get(f"{base}/", allow_redirects=False, timeout=30).status_code == 307


def test_the_pages_show_the_real_streams_and_follow_them(stack: Stack, api: AirflowClient,
                                                        runs: dict[Engine, str], page: Page,
                                                        tmp_path: Path) -> None:
    settings = stack.settings
    first = write_corpus(tmp_path / "first", files=4, seed=303)
    second = write_corpus(tmp_path / "second", files=3, seed=304)
    bad = []
    for name, data in BAD.items():
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / name).write_bytes(data)
        bad.append(tmp_path / "bad" / name)
    copy = tmp_path / "again" / "again.txt"  # the content of a file staged before, under a new name
    copy.parent.mkdir()
    shutil.copyfile(first[0], copy)

    land(settings.landing, [*first, *bad])
    processed(settings, "structured", len(first))
    wait_until(lambda: not any(settings.landing.iterdir()), 60, "staging to empty landing")

    # A page asked for without a session goes through Airflow's login and comes back.
    page.goto(f"{stack.api_url}/wordstream/structured")
    assert "/auth/login" in page.url
    sign_in(page, stack.admin_password())
    page.wait_for_url("**/wordstream/structured")
    assert wait_until(lambda: read(page), 30, "the page after signing in")["fields"]["engine"]["text"] \
        == "structured"

    # As a person finds it: Airflow's home, Browse, the menu entry; the page opens in Airflow's frame.
    page.goto(f"{stack.api_url}/")
    for attempt in range(3):  # a click on a menu that is still being drawn on a busy machine is lost
        page.get_by_role("button", name="Browse", exact=True).first.click()
        page.get_by_role("menuitem", name=MENU_ITEM, exact=True).click()
        try:
            page.wait_for_url("**/plugin/wordstream-structured", timeout=20_000)
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
            page.goto(f"{stack.api_url}/")
    handle = page.locator(f'iframe[title="{MENU_ITEM}"]').element_handle()
    frame = handle.content_frame() if handle else None
    assert frame is not None, "no frame for the status page"
    wait_until(lambda: read(frame), 30, "the status page inside Airflow's frame")
    mark_loaded(frame)

    ledger = {"landed": 0, "staged": len(first), "quarantined": len(bad), "duplicate": 0}
    seen = settled(frame, "running", len(first), top_words(first))
    check_numbers(seen, settings, "structured", processed=len(first), files=first, ledger=ledger,
                  deliveries={"published": 0, "publishing": 0, "processed": len(first), "returned": 0})
    shot = page.screenshot(path=str(tmp_path / "stream-status-structured.png"), full_page=True)
    assert len(shot) > 20_000
    print(f"screenshot: {tmp_path / 'stream-status-structured.png'}")

    # The dstream page: an engine that never ran, and the staged files waiting for it.
    dstream = page.context.new_page()
    dstream.goto(f"{stack.api_url}/wordstream/dstream")
    waiting = wait_until(lambda: read(dstream), 30, "the dstream page")
    mark_loaded(dstream)
    fields = waiting["fields"]
    assert fields["state"]["text"] == "never started"
    assert any("No dstream stream has run yet" in note for note in waiting["notes"])
    # Staging stamps one mtime on a group of files it publishes: the oldest may be any of a tie.
    mtimes = {entry.name: entry.stat().st_mtime for entry in os.scandir(settings.watch("dstream"))}
    assert number(fields["lag_files"]["text"]) == len(first) == len(mtimes)
    assert mtimes[fields["lag_oldest_name"]["text"]] == min(mtimes.values())
    age = epoch_of(waiting["generated"]) - min(mtimes.values())
    assert float(fields["lag_oldest_age"]["value"]) == pytest.approx(age, abs=0.2)
    assert number(fields["delivery_published"]["text"]) == len(first)
    assert number(fields["delivery_processed"]["text"]) == 0

    # More files: the open pages follow through their own refresh, the dstream page's lag grows.
    land(settings.landing, [*second, copy])
    everything = [*first, *second]
    ledger = {"landed": 0, "staged": len(everything), "quarantined": len(bad), "duplicate": 1}
    deliveries = {"published": 0, "publishing": 0, "processed": len(everything), "returned": 0}
    seen = settled(frame, "running", len(everything), top_words(everything))
    check_numbers(seen, settings, "structured", processed=len(everything), files=everything, ledger=ledger,
                  deliveries=deliveries)

    def waiting_grew() -> dict[str, Any] | None:
        seen = read(dstream)
        return seen if seen and seen["fields"]["lag_files"]["value"] == str(len(everything)) else None

    grown = wait_until(waiting_grew, 30, "the dstream page to show the new files waiting")
    assert grown["loaded"] == "once" and grown["fields"]["state"]["text"] == "never started"

    # Its DAG starts the dstream engine: it counts every waiting file, and its page follows.
    runs["dstream"] = start_stream(api, "dstream")
    seen_dstream = settled(dstream, "running", len(everything), top_words(everything), timeout=300)
    check_numbers(seen_dstream, settings, "dstream", processed=len(everything), files=everything,
                  ledger=ledger, deliveries=deliveries)

    # The JSON endpoint behind the page, with a token, says what the CLI says.
    view = api.session.get(f"{stack.api_url}/wordstream/api/structured", timeout=30).json()
    status = cli_status(settings, "structured")
    for field in ("state", "pid", "batch_id", "files_processed", "started_at"):
        assert view["status"][field] == status[field], field
    assert view["results"]["top_words"] == [list(row) for row in top_words(everything)]
