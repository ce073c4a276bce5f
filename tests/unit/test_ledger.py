"""The ledger: file rows, deliveries, the drivers' mark_processed, and several processes at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
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
    assert ledger.mark_returned("dstream", watch_name) == 1
    assert ledger.deliveries(SHA)["dstream"].state == "returned"
    ledger.mark_processed("structured", "1", [watch_name])
    assert ledger.mark_returned("structured", watch_name) == 0  # processed is never given back
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
    assert entries[1]["deliveries"]["structured"] == {"state": "published", "batch": None}
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
