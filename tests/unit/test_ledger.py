"""The ledger: file rows, deliveries, the drivers' mark_processed, and several processes at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wordstream.control import utc_now
from wordstream.ledger import Ledger, watch_basename

SHA = "a" * 64


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state" / "ledger.sqlite")


def published(ledger: Ledger, name: str = "a.txt", sha: str = SHA, engines: tuple[str, ...] = (
        "structured", "dstream")) -> int:
    row = ledger.begin(name, sha, 10)
    for engine in engines:
        ledger.claim(row.id, sha, engine, f"{sha[:16]}-{name}")
        ledger.record_published(sha, engine)
    ledger.finish(row.id, "staged", watch_name=f"{sha[:16]}-{name}")
    return row.id


def test_database_is_in_wal_mode(ledger: Ledger) -> None:
    ledger.summary()
    with sqlite3.connect(ledger.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_begin_resumes_an_unfinished_row_and_adds_a_new_one_otherwise(ledger: Ledger) -> None:
    first = ledger.begin("a.txt", SHA, 10)
    assert ledger.begin("a.txt", SHA, 10).id == first.id  # same file, unfinished: resumed
    assert ledger.begin("a.txt", "b" * 64, 10).id != first.id  # other content
    ledger.finish(first.id, "staged")
    assert ledger.begin("a.txt", SHA, 10).id != first.id  # finished rows are never resumed
    assert ledger.begin("link", None, None).id == ledger.begin("link", None, None).id


def test_reconcile_makes_the_marks_those_of_the_engine_record(ledger: Ledger) -> None:
    names = {}
    for letter in "abcde":
        published(ledger, f"{letter}.txt", letter * 64)
        names[letter] = f"{letter * 16}-{letter}.txt"
    ledger.mark_processed("dstream", "1", [names["a"], names["c"], names["e"]])
    late = utc_now()  # the engine's record is read now: it names a and b
    ledger.mark_processed("dstream", "2", [names["d"]])  # a driver's mark made after that read
    in_watch = {names["a"], names["b"], names["c"], names["d"]}  # e's file left with an earlier epoch

    assert ledger.reconcile("dstream", {names["a"], f"file:///w/{names['b']}"}, in_watch, late) == (1, 1)

    states = {letter: ledger.deliveries(letter * 64)["dstream"].state for letter in "abcde"}
    assert states == {"a": "processed", "b": "processed",  # b's mark was lost: now made
                      "c": "published",  # marked, but the engine never committed it: open again
                      "d": "processed",  # marked after the record was read: may be newer, kept
                      "e": "processed"}  # not in this epoch's folder: an earlier epoch counted it
    assert all(ledger.deliveries(letter * 64)["structured"].state == "published" for letter in "abcde")
    assert ledger.reconcile("dstream", {names["a"], names["b"]}, in_watch, late) == (0, 0)


def test_mark_processed_is_idempotent_and_keeps_the_first_batch(ledger: Ledger) -> None:
    published(ledger)
    name = f"{SHA[:16]}-a.txt"
    assert ledger.unprocessed("dstream") == [name]
    assert ledger.mark_processed("dstream", "7", [name, f"file:///data/watch/dstream/{name}"]) == 1
    assert ledger.mark_processed("dstream", "8", [name]) == 0
    assert ledger.deliveries(SHA)["dstream"].state == "processed"
    assert ledger.deliveries(SHA)["dstream"].batch == "7"
    assert ledger.deliveries(SHA)["structured"].state == "published"  # the other engine untouched
    assert ledger.unprocessed("dstream") == []
    assert (ledger.processed_count("dstream"), ledger.processed_count("structured")) == (1, 0)
    assert ledger.unprocessed("structured") == [name]
    assert ledger.mark_processed("dstream", "9", ["unknown.txt"]) == 0
    assert ledger.mark_processed("dstream", "9", []) == 0


def test_processed_is_not_downgraded_by_a_late_publish_record(ledger: Ledger) -> None:
    row = ledger.begin("a.txt", SHA, 10)
    ledger.claim(row.id, SHA, "structured", "w.txt")
    ledger.mark_processed("structured", "0", ["w.txt"])  # the driver saw the file first
    ledger.record_published(SHA, "structured")
    assert ledger.deliveries(SHA)["structured"].state == "processed"


def test_returned_delivery_and_original_name(ledger: Ledger) -> None:
    published(ledger, name="orig name.txt")
    watch_name = f"{SHA[:16]}-orig name.txt"
    assert ledger.original_name("dstream", watch_name) == "orig name.txt"
    old = ledger.current_epoch("dstream")
    assert ledger.mark_returned("dstream", watch_name, "dstream-next") == 1
    assert "dstream" not in ledger.deliveries(SHA)  # returned to the next epoch, not started yet
    assert ledger.start_epoch("dstream", old, "dstream-next")
    assert ledger.deliveries(SHA)["dstream"].state == "returned"
    assert ledger.deliveries(SHA)["dstream"].epoch == "dstream-next"
    ledger.mark_processed("structured", "1", [watch_name])
    assert ledger.mark_returned("structured", watch_name, "structured-next") == 0  # processed: never
    assert ledger.processed_watch_names("structured") == {watch_name}


def test_forget_keeps_rows_that_own_deliveries(ledger: Ledger) -> None:
    owner = ledger.begin("a.txt", SHA, 10)
    ledger.claim(owner.id, SHA, "dstream", "w.txt")
    ledger.forget(owner.id)
    assert ledger.file(owner.id) is not None
    loose = ledger.begin("b.txt", "c" * 64, 10)
    ledger.forget(loose.id)
    assert ledger.file(loose.id) is None


def test_summary_entries_and_quarantine_reasons(ledger: Ledger) -> None:
    published(ledger)
    bad = ledger.begin("bad.bin", None, 3)
    ledger.plan_move(bad.id, "quarantine/2-bad.bin", "binary: NUL byte at offset 0")
    ledger.finish(bad.id, "quarantined")
    summary = ledger.summary()
    assert summary["files"] == {"landed": 0, "staged": 1, "quarantined": 1, "duplicate": 0}
    assert summary["total_files"] == 2
    assert summary["deliveries"]["dstream"]["published"] == 1
    entries = ledger.entries(10)
    assert [entry["name"] for entry in entries] == ["bad.bin", "a.txt"]
    assert entries[1]["deliveries"]["structured"] == {
        "state": "published", "batch": None, "epoch": ledger.current_epoch("structured")}
    assert [entry["name"] for entry in ledger.entries(10, status="staged")] == ["a.txt"]
    assert ledger.latest_quarantine(5)[0]["reason"] == "binary: NUL byte at offset 0"
    assert ledger.latest_quarantine(5)[0]["moved_to"] == "quarantine/2-bad.bin"
    with pytest.raises(ValueError, match="unknown file status"):
        ledger.entries(10, status="nope")


def test_finish_refuses_a_non_final_status(ledger: Ledger) -> None:
    row = ledger.begin("a.txt", SHA, 10)
    with pytest.raises(ValueError):
        ledger.finish(row.id, "landed")


def test_watch_basename() -> None:
    assert watch_basename("file:///data/watch/dstream/x.txt") == "x.txt"
    assert watch_basename("x.txt") == "x.txt"


WRITER = """
import sys
from pathlib import Path
from wordstream.ledger import Ledger
ledger = Ledger(Path(sys.argv[1]))
tag = sys.argv[2]
for i in range(150):
    sha = f"{tag}{i:063d}"[:64]
    row = ledger.begin(f"{tag}-{i}.txt", sha, i)
    ledger.claim(row.id, sha, "dstream", f"{tag}-{i}.txt")
    ledger.record_published(sha, "dstream")
    ledger.mark_processed("dstream", str(i), [f"{tag}-{i}.txt"])
    ledger.finish(row.id, "staged")
"""


def test_several_processes_write_at_once(ledger: Ledger) -> None:
    ledger.summary()  # create the schema first, as staging does before the drivers start
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(ledger.path), tag])
               for tag in ("1", "2", "3", "4")]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0, 0]
    summary = ledger.summary()
    assert summary["files"]["staged"] == 600
    assert summary["deliveries"]["dstream"]["processed"] == 600


def test_cli_ledger_shows_summary_entries_and_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from wordstream import cli

    monkeypatch.setenv("WORDSTREAM_DATA_DIR", str(tmp_path))
    assert cli.main(["ledger"]) == 2
    assert "no ledger yet" in capsys.readouterr().err
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite")
    published(ledger, name="new\nline.txt")
    bad = ledger.begin("bad.txt", None, 1)
    ledger.finish(bad.id, "quarantined", reason="binary: NUL byte at offset 0")
    assert cli.main(["ledger"]) == 0
    out = capsys.readouterr().out
    assert "files: 2 (landed 0, staged 1, quarantined 1, duplicate 0)" in out
    assert "'new\\nline.txt'" in out  # one line per entry whatever the name
    assert "'bad.txt': binary: NUL byte at offset 0" in out
    assert cli.main(["ledger", "--status", "staged", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in payload["entries"]] == ["new\nline.txt"]
    assert payload["summary"]["deliveries"]["dstream"]["published"] == 1
    assert cli.main(["ledger", "--status", "bogus"]) == 2


def test_a_transaction_commits_every_call_in_it_or_none(ledger: Ledger) -> None:
    with ledger.transaction():
        row = ledger.begin("a.txt", SHA, 10)
        ledger.claim(row.id, SHA, "dstream", "x.txt")
        assert ledger.deliveries(SHA)["dstream"].state == "publishing"  # reads see the open transaction
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.record_published(SHA, "dstream")
        ledger.finish(row.id, "staged")
        raise RuntimeError("died half way")
    assert ledger.deliveries(SHA)["dstream"].state == "publishing"
    assert ledger.unfinished_files() == [ledger.file(row.id)]


# -- retention -------------------------------------------------------------------------------------
def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")


def set_times(ledger: Ledger, days: float, file_ids: tuple[int, ...] = (), shas: tuple[str, ...] = (),
              processed_days: float | None = None) -> None:
    """Date rows back: file rows landed and updated ``days`` ago, deliveries updated then (or as given)."""
    with sqlite3.connect(ledger.path) as conn:
        conn.executemany("UPDATE files SET landed_at = ?, updated_at = ? WHERE id = ?",
                         [(days_ago(days), days_ago(days), file_id) for file_id in file_ids])
        done = days if processed_days is None else processed_days
        conn.executemany("UPDATE deliveries SET updated_at = ? WHERE sha256 = ?",
                         [(days_ago(done), sha) for sha in shas])


def content(letter: str) -> str:
    return letter * 64


def processed(ledger: Ledger, name: str, sha: str,
              engines: tuple[str, ...] = ("structured", "dstream")) -> int:
    file_id = published(ledger, name=name, sha=sha)
    for engine in engines:
        ledger.mark_processed(engine, "3", [f"{sha[:16]}-{name}"])
    return file_id


def test_expire_forgets_only_finished_history_from_before_the_cutoff(ledger: Ledger) -> None:
    gone = processed(ledger, "gone.txt", content("a"))  # old, processed by both, no copy left
    copy_of_gone = ledger.begin("copy of gone.txt", content("a"), 10)
    ledger.finish(copy_of_gone.id, "duplicate")
    watched = processed(ledger, "watched.txt", content("b"))  # old, but dstream still holds its copy
    waiting = processed(ledger, "waiting.txt", content("c"), engines=("structured",))  # dstream: published
    recent = processed(ledger, "recent.txt", content("d"))  # landed within the window
    copy_of_recent = ledger.begin("copy of recent.txt", content("d"), 10)
    ledger.finish(copy_of_recent.id, "duplicate")
    returned = processed(ledger, "returned.txt", content("e"), engines=("structured",))
    ledger.mark_returned("dstream", f"{content('e')[:16]}-returned.txt")
    late = processed(ledger, "late.txt", content("f"))  # landed long ago, processed within the window
    claimed = ledger.begin("claimed.txt", content("g"), 10)
    ledger.claim(claimed.id, content("g"), "dstream", "claimed-watch.txt")  # publishing
    crashed = ledger.begin("crashed.txt", content("h"), 10)  # landed: a dead run's trace
    old_bad = ledger.begin("old.bin", None, 3)
    ledger.finish(old_bad.id, "quarantined", reason="binary")
    new_bad = ledger.begin("new.bin", None, 3)
    ledger.finish(new_bad.id, "quarantined", reason="binary")
    old_rows = (gone, copy_of_gone.id, watched, waiting, copy_of_recent.id, returned, late, claimed.id,
                crashed.id, old_bad.id)
    set_times(ledger, 9, file_ids=old_rows, shas=(content("a"), content("b"), content("c"), content("e"),
                                                  content("g")))
    set_times(ledger, 9, shas=(content("f"),), processed_days=2)
    set_times(ledger, 2, file_ids=(recent, new_bad.id), shas=(content("d"),))
    dstream_copies = {f"{content('b')[:16]}-watched.txt"}

    expired = ledger.expire(days_ago(7), lambda engine, name: engine == "dstream" and name in dstream_copies)

    assert asdict(expired) == {"contents": 1, "deliveries": 2, "files": 4}
    assert ledger.deliveries(content("a")) == {}
    left = {entry["name"] for entry in ledger.entries(100)}
    assert left == {"watched.txt", "waiting.txt", "recent.txt", "returned.txt", "late.txt", "claimed.txt",
                    "crashed.txt", "new.bin"}  # gone, both copies and the old reject are forgotten
    for sha, states in [(content("b"), {"processed"}), (content("c"), {"processed", "published"}),
                        (content("d"), {"processed"}), (content("e"), {"processed", "returned"}),
                        (content("f"), {"processed"}), (content("g"), {"publishing"})]:
        assert {d.state for d in ledger.deliveries(sha).values()} == states, sha
    assert ledger.original_name("dstream", f"{content('c')[:16]}-waiting.txt") == "waiting.txt"  # reset
    assert ledger.unfinished_files() == [ledger.file(claimed.id), ledger.file(crashed.id)]
    # Once its last copy is gone, the watched content goes too; then there is nothing left to forget.
    assert asdict(ledger.expire(days_ago(7), lambda engine, name: False)) == {
        "contents": 1, "deliveries": 2, "files": 1}
    assert asdict(ledger.expire(days_ago(7), lambda engine, name: False)) == {
        "contents": 0, "deliveries": 0, "files": 0}


def test_expire_deletes_in_batches_of_short_write_transactions(ledger: Ledger) -> None:
    ids = tuple(processed(ledger, f"{i}.txt", f"{i:064d}") for i in range(7))
    set_times(ledger, 30, file_ids=ids, shas=tuple(f"{i:064d}" for i in range(7)))
    statements: list[str] = []
    open_connection = ledger._open

    def traced() -> sqlite3.Connection:
        conn = open_connection()
        conn.set_trace_callback(statements.append)
        return conn

    ledger._open = traced  # type: ignore[method-assign]
    lines: list[str] = []
    expired = ledger.expire(days_ago(7), lambda engine, name: False, batch_rows=2, progress=lines.append)
    assert asdict(expired) == {"contents": 7, "deliveries": 14, "files": 7}
    writes = [s for s in statements if s.startswith("DELETE")]
    assert len(writes) == 4 + 4  # 7 contents in batches of 2, then their 7 file rows in batches of 2
    assert statements.count("BEGIN IMMEDIATE") == len(writes)  # one short write transaction each
    assert ledger.summary()["total_files"] == 0


def test_expire_keeps_a_content_another_process_changed_since_it_was_read(ledger: Ledger) -> None:
    ids = (processed(ledger, "a.txt", content("a")), processed(ledger, "b.txt", content("b")))
    set_times(ledger, 9, file_ids=ids, shas=(content("a"), content("b")))

    def meanwhile(engine: str, name: str) -> bool:  # runs between the read and the delete
        with sqlite3.connect(ledger.path) as conn:  # e.g. a reconciliation reopening a delivery
            conn.execute("UPDATE deliveries SET state = 'published' WHERE sha256 = ? AND engine = 'dstream'",
                         (content("b"),))
        return False

    assert asdict(ledger.expire(days_ago(7), meanwhile)) == {"contents": 1, "deliveries": 2, "files": 1}
    assert ledger.deliveries(content("a")) == {}
    assert {d.state for d in ledger.deliveries(content("b")).values()} == {"processed", "published"}
    assert [entry["name"] for entry in ledger.entries(10)] == ["b.txt"]
