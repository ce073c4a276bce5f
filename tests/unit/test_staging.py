"""Staging on real files: stability, validation, dedupe, atomic publish, weird names, crashes."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import crash_point
import pytest

from wordstream import control, staging
from wordstream.engines import dstream
from wordstream.ledger import Ledger
from wordstream.maintenance import reset
from wordstream.settings import ENGINES, Settings
from wordstream.staging import StageReport, StagingError, stage

WATCH_NAME = re.compile(r"^[0-9a-f]{16}-[A-Za-z0-9][A-Za-z0-9._-]*\.txt$")


def data_dir_settings(tmp_path: Path) -> Settings:
    """A data directory of its own with its layout; files must be a second old to be staged."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = Settings(data_dir=data_dir, stable_seconds=1)
    result.ensure_dirs()
    return result


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return data_dir_settings(tmp_path)


def land(settings: Settings, name: str, data: bytes, age: float = 60.0) -> Path:
    """A landing file last modified ``age`` seconds ago."""
    path = settings.landing / name
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def run(settings: Settings, lines: list[str] | None = None, **kwargs: object) -> StageReport:
    sink = lines if lines is not None else []
    return stage(settings, progress=sink.append, recheck_seconds=0.01, **kwargs)  # type: ignore[arg-type]


def visible(folder: Path) -> dict[str, bytes]:
    """What a Spark file source would read: non-hidden regular files."""
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.is_file() and not p.name.startswith((".", "_"))}


def hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith((".", "_"))]


def edit_in_place_after_validation(monkeypatch: pytest.MonkeyPatch, path: Path,
                                   head: bytes) -> Callable[..., staging.validation.Inspection]:
    """Make a producer overwrite the start of ``path`` with ``head`` right after staging validated it,
    keeping its size and mtime (only its ctime can tell). Returns the real validation."""
    st = path.stat()
    validate = staging.validation.inspect_content

    def validate_then_edit(fd: int, max_bytes: int, **limits: int) -> staging.validation.Inspection:
        result = validate(fd, max_bytes, **limits)
        if os.fstat(fd).st_ino == st.st_ino:
            with path.open("r+b") as handle:
                handle.write(head)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return result

    monkeypatch.setattr(staging.run, "inspect_content", validate_then_edit)
    return validate


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archived(settings: Settings) -> list[bytes]:
    return sorted(p.read_bytes() for p in settings.archive.rglob("*") if p.is_file())


def test_valid_files_are_published_to_every_engine_and_archived(settings: Settings) -> None:
    originals = {f"doc{i}.txt": f"hello world {i}\nsecond line é\n".encode() for i in range(5)}
    for name, data in originals.items():
        land(settings, name, data)
    started = time.time()
    report = run(settings)

    assert (report.staged, report.duplicates, report.quarantined, report.skipped_unstable) == (5, 0, 0, 0)
    assert report.published == {"structured": 5, "dstream": 5}
    for engine in ENGINES:
        files = visible(settings.watch(engine))
        assert sorted(files.values()) == sorted(originals.values())  # byte for byte
        assert all(WATCH_NAME.match(name) for name in files)
        for name, data in files.items():
            assert name.startswith(sha(data)[:16])
            # a fresh mtime, though the originals are a minute old: the DStream source needs it
            assert (settings.watch(engine) / name).stat().st_mtime >= started - 1
        assert hidden(settings.watch(engine)) == []
    assert list(settings.landing.iterdir()) == []
    assert archived(settings) == sorted(originals.values())
    assert all(p.parent.name == time.strftime("%Y-%m-%d", time.gmtime())
               for p in settings.archive.rglob("*") if p.is_file())
    ledger = Ledger(settings.ledger)
    assert ledger.summary()["files"] == {"landed": 0, "staged": 5, "quarantined": 0, "duplicate": 0}
    assert ledger.summary()["deliveries"]["dstream"]["published"] == 5
    assert sorted(e["name"] for e in ledger.entries(10)) == sorted(originals)


def test_a_second_run_with_nothing_new_changes_nothing(settings: Settings) -> None:
    land(settings, "a.txt", b"a b c\n")
    run(settings)
    before = {engine: visible(settings.watch(engine)) for engine in ENGINES}
    report = run(settings)
    assert report.handled == 0
    assert {engine: visible(settings.watch(engine)) for engine in ENGINES} == before


def test_fresh_and_growing_files_wait_until_they_are_stable(settings: Settings) -> None:
    land(settings, "old.txt", b"old\n")
    growing = settings.landing / "growing.txt"
    stop = threading.Event()

    def write_slowly() -> None:
        with growing.open("ab") as handle:
            while not stop.is_set():
                handle.write(b"more words\n")
                handle.flush()
                time.sleep(0.01)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        time.sleep(0.05)
        report = run(settings)
    finally:
        stop.set()
        writer.join()
    assert report.staged == 1
    assert report.skipped_unstable == 1
    assert growing.exists()
    assert list(visible(settings.watch("dstream")).values()) == [b"old\n"]

    then = time.time() - 60
    os.utime(growing, (then, then))  # the writer is done and the file has aged
    content = growing.read_bytes()
    report = run(settings)
    assert report.staged == 1
    assert sorted(visible(settings.watch("structured")).values()) == sorted([b"old\n", content])


def test_a_file_that_changes_between_the_two_looks_is_skipped(settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = land(settings, "sneaky.txt", b"first\n")
    mtime = path.stat().st_mtime

    def producer_appends(_seconds: float) -> None:  # a writer that keeps the old mtime (cp -p, rsync -t)
        with path.open("ab") as handle:
            handle.write(b"second\n")
        os.utime(path, (mtime, mtime))

    monkeypatch.setattr(staging.run, "_pause", producer_appends)
    report = run(settings)
    assert report.skipped_unstable == 1 and report.handled == 0
    assert path.read_bytes() == b"first\nsecond\n"
    assert visible(settings.watch("dstream")) == {}


def test_hidden_temporary_and_partial_names_are_not_touched(settings: Settings) -> None:
    names = [".hidden", "_SUCCESS", "upload.tmp", "big.txt._COPYING_", "download.part"]
    for name in names:
        land(settings, name, b"words\n")
    report = run(settings)
    assert report.ignored == 5 and report.handled == 0
    assert sorted(p.name for p in settings.landing.iterdir()) == sorted(names)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"caf\xe9 latin-1\n", "not valid UTF-8"),
        (b"ok\n\xe2\x82", "truncated multi-byte character"),
        (b"PK\x03\x04\x00\x00binary", "binary: NUL byte at offset 4"),
        (b"", "empty file"),
        (b"x" * 33, "too large: 33 bytes > limit 32"),
    ],
    ids=["latin-1", "truncated", "binary", "empty", "too-large"],
)
def test_rejects_go_to_quarantine_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir, max_file_bytes=32)
    land(settings if settings.landing.exists() else _with_dirs(settings), "bad name.txt", data)
    report = run(settings)

    assert report.quarantined == 1 and report.staged == 0
    quarantined = [p for p in settings.quarantine.iterdir() if not p.name.endswith(".reason.txt")]
    assert [p.read_bytes() for p in quarantined] == [data]
    assert re.fullmatch(r"\d+-bad_name\.txt", quarantined[0].name)
    text = (settings.quarantine / f"{quarantined[0].name}.reason.txt").read_text()
    assert reason in text and "'bad name.txt'" in text
    assert text.count("\n") == 1  # one line
    assert list(settings.landing.iterdir()) == []
    assert all(visible(settings.watch(engine)) == {} for engine in ENGINES)
    [entry] = Ledger(settings.ledger).entries(5)
    assert entry["status"] == "quarantined" and reason in entry["reason"]
    assert entry["moved_to"] == f"quarantine/{quarantined[0].name}"


def _with_dirs(settings: Settings) -> Settings:
    settings.ensure_dirs()
    return settings


def test_multibyte_characters_across_the_chunk_boundary_are_valid(settings: Settings) -> None:
    euro = "€".encode()  # three bytes: put the boundary of the 1 MiB chunks inside it
    data = b"a" * (staging.validation.CHUNK_BYTES - 1) + euro + " 😀 ünïcødé\n".encode()
    land(settings, "big.txt", data)
    assert run(settings).staged == 1
    assert list(visible(settings.watch("structured")).values()) == [data]


def test_invalid_utf8_offset_is_reported_across_chunks(settings: Settings) -> None:
    data = b"a" * (staging.validation.CHUNK_BYTES - 1) + b"\xe2\x82" + b"X"
    land(settings, "broken.txt", data)
    run(settings)
    reason = Ledger(settings.ledger).latest_quarantine(1)[0]["reason"]
    assert f"offset {staging.validation.CHUNK_BYTES - 1}" in reason


def test_same_content_under_two_names_is_published_once(settings: Settings) -> None:
    land(settings, "first.txt", b"same words\n", age=120)
    land(settings, "second.txt", b"same words\n", age=60)
    report = run(settings)
    assert (report.staged, report.duplicates) == (1, 1)
    for engine in ENGINES:
        assert list(visible(settings.watch(engine)).values()) == [b"same words\n"]
    assert archived(settings) == [b"same words\n", b"same words\n"]  # both originals kept
    ledger = Ledger(settings.ledger)
    [duplicate] = ledger.entries(5, status="duplicate")
    assert duplicate["name"] == "second.txt" and "first.txt" in duplicate["reason"]

    land(settings, "third.txt", b"same words\n")  # a later run still knows the content
    assert run(settings).duplicates == 1
    assert len(visible(settings.watch("dstream"))) == 1


def test_a_returned_delivery_is_published_again_to_that_engine_only(settings: Settings) -> None:
    land(settings, "a.txt", b"alpha\n")
    run(settings)
    [name] = visible(settings.watch("dstream"))
    ledger = Ledger(settings.ledger)
    ledger.mark_returned("dstream", name)  # what a reset does before it moves the file back
    os.replace(settings.watch("dstream") / name, settings.landing / "a.txt")
    os.utime(settings.landing / "a.txt", (time.time() - 60, time.time() - 60))
    report = run(settings)
    assert report.published == {"structured": 0, "dstream": 1} and report.staged == 1
    assert visible(settings.watch("dstream")) == {name: b"alpha\n"}
    assert visible(settings.watch("structured")) == {name: b"alpha\n"}
    assert ledger.deliveries(sha(b"alpha\n"))["dstream"].state == "published"


def test_symlinks_and_other_entries_are_quarantined_without_following_them(
        settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret outside\n")
    inside = land(settings, "real.txt", b"real\n")
    (settings.landing / "to-outside.txt").symlink_to(outside)
    (settings.landing / "to-inside.txt").symlink_to(inside)
    (settings.landing / "dangling.txt").symlink_to(tmp_path / "nowhere")
    os.mkfifo(settings.landing / "pipe.txt")
    lines: list[str] = []
    report = run(settings, lines)

    assert report.quarantined == 4 and report.staged == 1
    moved = {p.name.split("-", 1)[1]: p for p in settings.quarantine.iterdir()
             if not p.name.endswith(".reason.txt")}
    assert set(moved) == {"to-outside.txt", "to-inside.txt", "dangling.txt", "pipe.txt"}
    assert moved["to-outside.txt"].is_symlink()  # the link itself moved ...
    assert os.readlink(moved["to-outside.txt"]) == str(outside)
    assert outside.read_bytes() == b"secret outside\n"  # ... its target untouched
    assert "symlink" in staging.names.reason_path(moved["dangling.txt"]).read_text()
    assert "fifo" in staging.names.reason_path(moved["pipe.txt"]).read_text()
    assert list(visible(settings.watch("structured")).values()) == [b"real\n"]  # staged once, directly
    assert b"secret outside\n" not in archived(settings)


def test_directories_in_landing_are_left_alone(settings: Settings) -> None:
    (settings.landing / "sub").mkdir()
    (settings.landing / "sub" / "inner.txt").write_bytes(b"inner\n")
    lines: list[str] = []
    report = run(settings, lines)
    assert report.handled == 0
    assert (settings.landing / "sub" / "inner.txt").read_bytes() == b"inner\n"
    assert any("'sub'" in line and "directories" in line for line in lines)


WEIRD_NAMES = [
    "with space.txt", "new\nline.txt", "ünïcødé 文字.txt", "x..txt", "a...", "-..-", "~..%2fescape",
    "%2e%2e%2fup.txt", "a:b*?[x]{y}.txt", "back\\slash.txt", "tab\tand\rcr", "x" * 250, "😀",
    "semi;colon$(rm -rf).txt",
]


def test_names_starting_with_dots_are_hidden_and_ignored(settings: Settings) -> None:
    for name in ("..txt", "...", "..%2fescape"):
        land(settings, name, b"words\n")
    assert run(settings).ignored == 3
    assert len(list(settings.landing.iterdir())) == 3


def test_weird_names_never_escape_or_collide(settings: Settings, tmp_path: Path) -> None:
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(settings.data_dir)}
    contents = {name: f"content of {name!r}\n".encode() for name in WEIRD_NAMES}
    for name, data in contents.items():
        land(settings, name, data)
    report = run(settings)

    assert report.staged == len(WEIRD_NAMES)
    for engine in ENGINES:
        files = visible(settings.watch(engine))
        assert sorted(files.values()) == sorted(contents.values())
        assert all(WATCH_NAME.match(name) and len(name) <= 120 for name in files), files.keys()
    assert list(settings.landing.iterdir()) == []
    assert archived(settings) == sorted(contents.values())
    after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(settings.data_dir)}
    assert after == before  # nothing written outside the data directory
    names = {entry["name"] for entry in Ledger(settings.ledger).entries(100)}
    assert names == set(WEIRD_NAMES)  # the ledger keeps the original names


def test_safe_name_and_watch_name() -> None:
    assert staging.safe_name("../../etc/passwd") == "etc_passwd"
    assert staging.safe_name("...") == "file"
    assert staging.safe_name(".hidden") == "hidden"
    assert len(staging.safe_name("y" * 1000)) == staging.names.SAFE_NAME_MAX
    assert staging.watch_name_for("f" * 64, "a b.txt") == "ffffffffffffffff-a_b.txt"
    assert staging.watch_name_for("f" * 64, "log") == "ffffffffffffffff-log.txt"


def test_progress_lines_every_n_files_and_a_summary(settings: Settings) -> None:
    for i in range(7):
        land(settings, f"f{i}.txt", f"file {i}\n".encode())
    lines: list[str] = []
    run(settings, lines, progress_every=3)
    assert [line.split(" (")[0] for line in lines[:-1]] == ["staging: 3/7 files", "staging: 6/7 files"]
    assert lines[-1].startswith("staged 7, duplicates 0, quarantined 0")


def test_leftover_temp_files_from_a_dead_run_are_removed(settings: Settings) -> None:
    leftover = settings.watch("dstream") / ".0123456789abcdef-x.txt.tmp"
    leftover.write_bytes(b"half a fi")
    run(settings)
    assert not leftover.exists()


def test_missing_data_dir_is_an_error_and_a_missing_landing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "landing"
    assert staging.landing.scan_landing(missing, time.time(), 1) == staging.landing.LandingScan()
    with pytest.raises(StagingError, match="does not exist"):
        stage(Settings(data_dir=tmp_path / "nope"), progress=lambda _line: None)
    assert not (tmp_path / "nope").exists()
    (tmp_path / "fresh").mkdir()
    report = stage(Settings(data_dir=tmp_path / "fresh"), progress=lambda _line: None)
    assert report.handled == 0
    assert (tmp_path / "fresh" / "landing").is_dir()
    assert (tmp_path / "fresh" / "watch" / "dstream").is_dir()


def test_only_one_staging_run_at_a_time(settings: Settings) -> None:
    with control.hold_lock(settings.state, staging.STAGING_LOCK), \
            pytest.raises(control.EngineBusyError, match="staging is already running"):
        run(settings, lock_wait=0.2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_quarantined(settings: Settings) -> None:
    path = land(settings, "locked.txt", b"words\n")
    path.chmod(0)
    assert run(settings).quarantined == 1
    assert "unreadable" in Ledger(settings.ledger).latest_quarantine(1)[0]["reason"]


# -- crashes ---------------------------------------------------------------------------------------
CRASHING_RUN = """
import os, sys
from pathlib import Path
from crash_point import die_after
from wordstream import staging
from wordstream.ledger import Ledger
from wordstream.settings import Settings

data_dir, point, allowed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
staging.run.GROUP_FILES = int(sys.argv[4])
owner, attr = {
    "os.replace": (os, "replace"), "os.rename": (os, "rename"), "os.fsync": (os, "fsync"),
    "os.link": (os, "link"),
    "os.write": (os, "write"), "flush_filesystem": (staging.run, "flush_filesystem"),
    "claim": (Ledger, "claim"), "record_published": (Ledger, "record_published"),
    "plan_move": (Ledger, "plan_move"), "finish": (Ledger, "finish"),
}[point]
die_after(owner, attr, allowed)
staging.stage(Settings(data_dir=data_dir, stable_seconds=0), progress=lambda line: None, recheck_seconds=0)
"""

VALID = {f"file {i}.txt": f"words of file {i}\n".encode() * (i + 1) for i in range(6)}
VALID["copy of file 2.txt"] = VALID["file 2.txt"]
INVALID = {"latin.txt": b"caf\xe9\n", "empty.txt": b""}


def crash_run(settings: Settings, point: str, allowed: int, group: int = 3) -> int:
    """Stage in a process that dies at the ``allowed + 1``-th call of ``point``; groups of ``group`` files."""
    result = subprocess.run(crash_point.script(CRASHING_RUN, settings.data_dir, point, allowed, group),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, crash_point.EXIT), result.stderr
    return result.returncode


def land_crash_set(settings: Settings) -> None:
    """Valid files with the rejects in between (files are staged oldest first), and a symlink."""
    ordered = list(VALID)
    ordered[1:1] = ["latin.txt"]
    ordered[4:4] = ["empty.txt"]
    for index, name in enumerate(ordered):
        land(settings, name, {**VALID, **INVALID}[name], age=600 - index)
    (settings.landing / "link.txt").symlink_to(settings.landing / "file 0.txt")


def assert_no_partial_file_is_visible(settings: Settings) -> None:
    full = {sha(data) for data in VALID.values()}
    for engine in ENGINES:
        assert all(sha(data) in full for data in visible(settings.watch(engine)).values())


def entries_link_id(settings: Settings) -> int:
    [row] = [e for e in Ledger(settings.ledger).entries(100) if e["name"] == "link.txt"]
    return int(row["id"])


def assert_staged_exactly_once(settings: Settings) -> None:
    distinct = sorted(set(VALID.values()))
    for engine in ENGINES:
        assert sorted(visible(settings.watch(engine)).values()) == distinct  # each content exactly once
        assert hidden(settings.watch(engine)) == []
    assert list(settings.landing.iterdir()) == []  # nothing left behind ...
    assert archived(settings) == sorted(VALID.values())  # ... and nothing lost
    entries = [p for p in settings.quarantine.iterdir() if not p.name.endswith(".reason.txt")]
    assert sorted(p.read_bytes() for p in entries if not p.is_symlink()) == sorted(INVALID.values())
    assert [p.name for p in entries if p.is_symlink()] == [f"{entries_link_id(settings)}-link.txt"]
    assert len(list(settings.quarantine.glob("*.reason.txt"))) == len(entries) == 3
    ledger = Ledger(settings.ledger)
    summary = ledger.summary()
    assert summary["files"] == {"landed": 0, "staged": 6, "quarantined": 3, "duplicate": 1}
    for engine in ENGINES:
        assert summary["deliveries"][engine] == {"publishing": 0, "published": 6, "processed": 0,
                                                 "returned": 0}


@pytest.mark.drill
@pytest.mark.parametrize(
    ("point", "allowed", "group"),
    # Groups of 3 files: the nine landing files make three groups (and the symlink one of its own),
    # so the crash points fall in every step of a group and between groups; 100: one group for all.
    [("os.write", 3, 3), ("os.link", 0, 3), ("os.link", 3, 3), ("os.link", 0, 100),
     ("flush_filesystem", 0, 3), ("flush_filesystem", 1, 3), ("flush_filesystem", 0, 100),
     ("os.fsync", 0, 3), ("os.fsync", 1, 3), ("os.fsync", 3, 3), ("os.fsync", 5, 3), ("os.fsync", 1, 100),
     ("os.replace", 0, 3), ("os.replace", 1, 3), ("os.replace", 2, 3), ("os.link", 1, 3),
     ("os.link", 6, 3), ("os.link", 6, 100), ("os.link", 11, 100), ("os.rename", 0, 3), ("os.rename", 1, 3),
     ("os.rename", 2, 3), ("claim", 3, 3), ("claim", 3, 100), ("record_published", 0, 3),
     ("record_published", 5, 3), ("plan_move", 0, 3), ("plan_move", 2, 3), ("plan_move", 4, 3),
     ("plan_move", 4, 100), ("finish", 0, 3), ("finish", 1, 3), ("finish", 6, 3), ("finish", 6, 100)],
)
def test_a_crash_anywhere_is_completed_by_the_next_run(settings: Settings, point: str, allowed: int,
                                                        group: int) -> None:
    land_crash_set(settings)
    assert crash_run(settings, point, allowed, group) == crash_point.EXIT  # it really died half way
    assert_no_partial_file_is_visible(settings)
    lines: list[str] = []
    report = run(settings, lines)
    # The next run takes what is left in landing, or (a crash in the last step) only recovers.
    assert report.handled > 0 or lines[0].startswith("recovered an unfinished run")
    assert_staged_exactly_once(settings)


@pytest.mark.drill
@pytest.mark.parametrize(
    ("point", "allowed"),
    # each run dies at its n-th call; n is large enough for one file to get through per run
    [("os.link", 1), ("record_published", 1), ("finish", 1), ("os.fsync", 4)],
)
def test_crash_after_crash_still_converges(settings: Settings, point: str, allowed: int) -> None:
    land_crash_set(settings)
    for _attempt in range(60):
        if crash_run(settings, point, allowed) == 0:
            break
        assert_no_partial_file_is_visible(settings)
    else:
        pytest.fail("staging never completed")
    assert_staged_exactly_once(settings)


def test_cli_stage(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    from wordstream import cli

    land(settings, "a.txt", b"a b c\n")
    monkeypatch.setenv("WORDSTREAM_DATA_DIR", str(settings.data_dir))
    assert cli.main(["stage"]) == 0
    assert capsys.readouterr().out.startswith("staged 1, duplicates 0")
    assert list(visible(settings.watch("dstream")).values()) == [b"a b c\n"]
    monkeypatch.setenv("WORDSTREAM_DATA_DIR", str(settings.data_dir / "missing"))
    assert cli.main(["stage"]) == 2
    assert capsys.readouterr().err.startswith("wordstream: error: data directory")


def test_a_landing_file_removed_after_a_crash_is_settled(settings: Settings) -> None:
    land(settings, "published.txt", b"made it\n")
    assert crash_run(settings, "plan_move", 0) == crash_point.EXIT  # published to both engines, not archived
    (settings.landing / "published.txt").unlink()  # someone cleans landing by hand
    run(settings)
    [entry] = Ledger(settings.ledger).entries(5)
    assert entry["status"] == "staged" and "left landing" in entry["reason"]
    assert all(list(visible(settings.watch(engine)).values()) == [b"made it\n"] for engine in ENGINES)

    land(settings, "never.txt", b"never published\n")
    assert crash_run(settings, "claim", 0) == crash_point.EXIT  # a row, no delivery yet
    (settings.landing / "never.txt").unlink()
    run(settings)
    assert [e["name"] for e in Ledger(settings.ledger).entries(5)] == ["published.txt"]
    assert all(len(visible(settings.watch(engine))) == 1 for engine in ENGINES)


def test_bytes_changed_while_validated_are_not_published(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    path = land(settings, "edited.txt", b"version one\n")
    validate = edit_in_place_after_validation(monkeypatch, path, b"VERSION TWO\n")
    report = run(settings)
    assert report.skipped_unstable == 1 and report.handled == 0
    assert all(list(settings.watch(engine).iterdir()) == [] for engine in ENGINES)  # not even a temp
    assert Ledger(settings.ledger).entries(5) == []
    monkeypatch.setattr(staging.run, "inspect_content", validate)
    assert run(settings).staged == 1
    assert list(visible(settings.watch("dstream")).values()) == [b"VERSION TWO\n"]


def test_a_file_with_the_content_of_a_file_that_changed_while_validated_is_published(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two names, one content, one group: the first is edited in place while it is validated. The
    change is seen before the ledger plans anything, so the second is no duplicate of it: it is
    published, and the first, with its new content, by the next run."""
    first = land(settings, "first.txt", b"same words\n", age=120)
    land(settings, "second.txt", b"same words\n", age=60)
    validate = edit_in_place_after_validation(monkeypatch, first, b"SAME")
    report = run(settings)
    assert (report.staged, report.duplicates, report.skipped_unstable) == (1, 0, 1)
    for engine in ENGINES:
        assert list(visible(settings.watch(engine)).values()) == [b"same words\n"]
        assert hidden(settings.watch(engine)) == []
    assert [e["name"] for e in Ledger(settings.ledger).entries(5)] == ["second.txt"]
    monkeypatch.setattr(staging.run, "inspect_content", validate)
    report = run(settings)
    assert (report.staged, report.duplicates) == (1, 0)
    for engine in ENGINES:
        assert sorted(visible(settings.watch(engine)).values()) == [b"SAME words\n", b"same words\n"]
    assert list(settings.landing.iterdir()) == []


def test_many_files_are_published_in_groups_with_one_flush_each(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[Path] = []
    flush = staging.run.flush_filesystem

    def counted(folder: Path) -> None:
        flushed.append(folder)
        flush(folder)

    monkeypatch.setattr(staging.run, "flush_filesystem", counted)
    monkeypatch.setattr(staging.run, "GROUP_FILES", 4)
    for i in range(10):
        land(settings, f"f{i}.txt", f"file {i}\n".encode(), age=60 - i)
    report = run(settings)
    assert report.staged == 10 and report.published == dict.fromkeys(ENGINES, 10)
    assert len(flushed) == 3  # groups of 4, 4 and 2 files; both watch folders share one file system
    for engine in ENGINES:
        assert sorted(visible(settings.watch(engine)).values()) == sorted(f"file {i}\n".encode()
                                                                          for i in range(10))
        assert hidden(settings.watch(engine)) == []


def test_a_group_of_one_file_fsyncs_its_copy_instead_of_flushing_the_file_system(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A syncfs would also wait for every other writer's dirty data on the file system."""
    flushed: list[Path] = []
    monkeypatch.setattr(staging.run, "flush_filesystem", flushed.append)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    land(settings, "one.txt", b"a file on its own\n")
    assert run(settings).published == dict.fromkeys(ENGINES, 1)
    assert flushed == []
    [copy] = {p.stat().st_ino for engine in ENGINES for p in settings.watch(engine).iterdir()}
    assert synced.count(copy) == 1  # the one copy both engines' files are


def test_one_copy_serves_every_engine_and_a_reset_of_one_leaves_the_other_alone(
        settings: Settings) -> None:
    """One write and one flush for both engines: their files are hard links of one inode. A reset
    gives its engine's file back to landing as a copy, and staging publishes it again; the other
    engine's file keeps its inode, its content and its mtime (the structured source reads a file
    again whose mtime moved, once it has forgotten it)."""
    settings = dataclasses.replace(settings, stable_seconds=0)  # given back, it is as old as its copy
    land(settings, "shared.txt", b"words for both engines\n")
    run(settings)
    [structured] = settings.watch("structured").iterdir()
    [dstream] = settings.watch("dstream").iterdir()
    assert structured.name == dstream.name and os.path.samefile(structured, dstream)
    assert structured.stat().st_nlink == 2
    before = structured.stat()

    reset.reset_engine(settings, "dstream", wait_timeout=1, progress=lambda _line: None)
    given_back = settings.landing / "shared.txt"
    assert list(settings.landing.iterdir()) == [given_back]
    # A file of its own: a producer overwriting that landing name must not rewrite the other's file.
    assert not os.path.samefile(given_back, structured) and structured.stat().st_nlink == 1
    assert given_back.stat().st_mtime_ns == before.st_mtime_ns
    report = run(settings)
    assert report.published == {"structured": 0, "dstream": 1}
    [republished] = settings.watch("dstream").iterdir()
    assert republished.read_bytes() == b"words for both engines\n"
    assert not os.path.samefile(republished, structured)
    after = structured.stat()
    assert (after.st_ino, after.st_mtime_ns, structured.read_bytes()) == (
        before.st_ino, before.st_mtime_ns, b"words for both engines\n")


def test_a_new_dstream_epoch_gives_shared_files_an_inode_of_their_own_before_touching_them(
        settings: Settings) -> None:
    """textFileStream skips files older than its start, so a new epoch gives the waiting files a new
    mtime; the structured engine's name of a shared file keeps its inode and mtime."""
    land(settings, "both.txt", b"for both engines\n", age=120)
    run(settings)
    (settings.watch("dstream") / "0123456789abcdef-own.txt").write_bytes(b"dstream only\n")
    old = time.time() - 600
    for path in settings.watch("dstream").iterdir():
        os.utime(path, (old, old))
    [structured] = settings.watch("structured").iterdir()
    before = structured.stat()
    own_inode = (settings.watch("dstream") / "0123456789abcdef-own.txt").stat().st_ino
    started = time.time()

    assert dstream.announce_waiting_files(settings.watch("dstream"), settings.state) == 2
    after = structured.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_nlink) == (before.st_ino, before.st_mtime_ns, 1)
    copied = settings.watch("dstream") / structured.name
    assert copied.read_bytes() == b"for both engines\n" and copied.stat().st_ino != before.st_ino
    own = settings.watch("dstream") / "0123456789abcdef-own.txt"
    assert own.stat().st_ino == own_inode  # not shared: touched in place
    assert all(p.stat().st_mtime >= started - 1 for p in (copied, own))
    assert hidden(settings.watch("dstream")) == []


def test_the_copies_of_duplicates_and_rejects_are_emptied_and_reused(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file created and removed per duplicate slows every later creation in the folder."""
    land(settings, "first.txt", b"the same words\n", age=300)
    run(settings)
    opened: list[Path] = []
    open_copy = staging.run.open_copy

    def counted(folder: Path) -> tuple[int, Path]:
        fd, path = open_copy(folder)
        opened.append(path)
        return fd, path

    monkeypatch.setattr(staging.run, "open_copy", counted)
    monkeypatch.setattr(staging.run, "GROUP_FILES", 5)
    for i in range(5):
        land(settings, f"again-{i}.txt", b"the same words\n", age=200 - i)
        land(settings, f"latin-{i}.txt", b"caf\xe9\n", age=100 - i)
    land(settings, "new.txt", b"new words, longer than the emptied copy before it\n", age=50)
    report = run(settings)
    assert (report.staged, report.duplicates, report.quarantined) == (1, 5, 5)
    # A group's copies are written before the ledger says which are duplicates: five copies for the
    # first group (the duplicates), emptied and reused by the rejects and by the last file.
    assert len(opened) == 5
    for engine in ENGINES:
        assert sorted(visible(settings.watch(engine)).values()) == [
            b"new words, longer than the emptied copy before it\n", b"the same words\n"]
        assert hidden(settings.watch(engine)) == []


def test_a_watch_folder_that_cannot_link_gets_a_copy_of_its_own(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders on different file systems (or one without hard links): each engine gets its own copy."""
    def no_link(_source: object, _target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    land(settings, "apart.txt", b"two file systems\n")
    assert run(settings).published == dict.fromkeys(ENGINES, 1)
    files = [p for engine in ENGINES for p in settings.watch(engine).iterdir()]
    assert [p.read_bytes() for p in files] == [b"two file systems\n"] * 2
    assert not os.path.samefile(*files)
    assert all(hidden(settings.watch(engine)) == [] for engine in ENGINES)


# -- the sensor's observation ------------------------------------------------------------------------
def observed_earlier(settings: Settings, seconds_ago: float) -> staging.LandingObservation:
    """What the sensor saw, as if it had looked ``seconds_ago`` (the hand-over to the staging task)."""
    observed = staging.observe_landing(settings)
    assert observed is not None
    return dataclasses.replace(observed, seen_at=observed.seen_at - seconds_ago,
                               first_seen=tuple(t - seconds_ago for t in observed.first_seen))


def test_files_the_sensor_saw_unchanged_are_staged_without_the_pause(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    land(settings, "a.txt", b"seen by the sensor\n")
    land(settings, "b.txt", b"also seen\n")
    observed = observed_earlier(settings, staging.RECHECK_SECONDS)
    pauses: list[float] = []
    monkeypatch.setattr(staging.run, "_pause", pauses.append)
    report = stage(settings, progress=lambda _line: None, observed=observed)
    assert report.staged == 2 and pauses == []
    assert sorted(visible(settings.watch("structured")).values()) == [b"also seen\n", b"seen by the sensor\n"]


def test_files_the_sensor_did_not_see_or_saw_differently_get_the_pause(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = land(settings, "seen.txt", b"first\n")
    mtime = seen.stat().st_mtime
    observed = observed_earlier(settings, staging.RECHECK_SECONDS)
    with seen.open("ab") as handle:  # changed after the sensor looked, mtime kept (cp -p, rsync -t)
        handle.write(b"second\n")
    os.utime(seen, (mtime, mtime))
    land(settings, "later.txt", b"landed after the sensor looked\n")
    pauses: list[float] = []

    def producer_appends_again(seconds: float) -> None:
        pauses.append(seconds)
        with seen.open("ab") as handle:
            handle.write(b"third\n")
        os.utime(seen, (mtime, mtime))

    monkeypatch.setattr(staging.run, "_pause", producer_appends_again)
    report = stage(settings, progress=lambda _line: None, observed=observed)
    assert pauses == [pytest.approx(staging.RECHECK_SECONDS, abs=0.05)]  # from the scan that saw them
    assert report.staged == 1 and report.skipped_unstable == 1
    assert list(visible(settings.watch("dstream")).values()) == [b"landed after the sensor looked\n"]
    assert seen.read_bytes() == b"first\nsecond\nthird\n"  # still in landing, for a later run


def test_after_a_short_hand_over_only_the_rest_of_the_recheck_is_waited(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    path = land(settings, "a.txt", b"just seen\n")
    mtime = path.stat().st_mtime
    observed = observed_earlier(settings, 0.2)
    pauses: list[float] = []

    def producer_appends(seconds: float) -> None:  # during what is left of the re-check
        pauses.append(seconds)
        with path.open("ab") as handle:
            handle.write(b"more\n")
        os.utime(path, (mtime, mtime))

    monkeypatch.setattr(staging.run, "_pause", producer_appends)
    report = stage(settings, progress=lambda _line: None, observed=observed)
    assert len(pauses) == 1 and 0.2 < pauses[0] <= staging.RECHECK_SECONDS - 0.2
    assert report.skipped_unstable == 1 and report.handled == 0  # the re-check still caught the change
    monkeypatch.setattr(staging.run, "_pause", pauses.append)
    assert stage(settings, progress=lambda _line: None, observed=observed_earlier(settings, 0.2)).staged == 1


def test_the_sensor_fires_early_for_a_file_about_to_be_stable(settings: Settings) -> None:
    assert staging.observe_landing(settings) is None  # empty landing
    path = land(settings, "fresh.txt", b"almost stable\n", age=settings.stable_seconds - 0.3)
    assert staging.observe_landing(settings, lead_seconds=0.0) is None
    observed = staging.observe_landing(settings, lead_seconds=0.5)
    assert observed is not None and observed.waiting == 1
    st = path.stat()
    assert observed.files == (("fresh.txt", st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino),)
    assert observed.seen_at < st.st_mtime + settings.stable_seconds  # before it is stable


def test_the_sensor_remembers_its_first_look_from_one_poke_to_the_next(settings: Settings) -> None:
    looks = staging.Looks()  # what the sensor keeps between pokes (staging.SENSOR_LOOKS)
    path = land(settings, "a.txt", b"seen by two pokes\n", age=settings.stable_seconds - 0.8)
    assert staging.observe_landing(settings, lead_seconds=0.5, looks=looks) is None  # 0.8 s to go
    [first_poke] = looks.first.values()
    time.sleep(0.4)  # the next poke, a little later
    observed = staging.observe_landing(settings, lead_seconds=0.5, looks=looks)
    assert observed is not None and [name for name, *_ in observed.files] == [path.name]
    assert observed.first_seen == (first_poke,) and first_poke < observed.seen_at
    assert observed.looks().first == {observed.files[0]: first_poke}  # what stage_files starts from


def test_an_observation_survives_the_xcom_round_trip_and_anything_else_is_ignored(settings: Settings) -> None:
    land(settings, "a.txt", b"a\n")
    (settings.landing / "link.txt").symlink_to(settings.landing / "a.txt")
    observed = staging.observe_landing(settings)
    assert observed is not None and observed.waiting == 2 and len(observed.files) == 1
    assert staging.LandingObservation.from_xcom(json.loads(json.dumps(observed.to_xcom()))) == observed
    older = {key: value for key, value in observed.to_xcom().items() if key != "first_seen"}
    assert staging.LandingObservation.from_xcom(older) == dataclasses.replace(observed, first_seen=())
    assert staging.LandingObservation.from_xcom(older).looks().first == observed.looks().first  # type: ignore[union-attr]
    for junk in (None, 3, {"files": []}, {"seen_at": "x", "files": [], "waiting": 1},
                 {**observed.to_xcom(), "first_seen": [1.0, 2.0]}):
        assert staging.LandingObservation.from_xcom(junk) is None
