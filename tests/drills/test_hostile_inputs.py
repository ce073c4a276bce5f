"""Hostile input: each case is quarantined with a reason a user can read, or handled, and nothing is lost.

Covered elsewhere and not repeated here (tests/unit/test_staging.py): empty, binary, invalid or
truncated UTF-8, too large, files still being written, hidden/temporary names, symlinks (never
followed) and FIFOs, directories, weird names that must not escape the data directory, the same
content under two names, a missing landing folder, crashes at every step.

Here: a UTF-8 byte order mark through both real engines, a file the staging process may not read,
files that vanish at each moment between listing and archiving, names with line breaks and ``..``
that are quarantined, and bad command lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from probes import stage_files
from support import (
    SparkApp,
    assert_totals_stay,
    reference_counts,
    reference_lines,
    reference_tokens,
)

from wordstream import control, results, staging
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Settings
from wordstream.staging.landing import Candidate

NOBODY = 65534
WORDSTREAM = str(Path(sys.executable).parent / "wordstream")


def land(settings: Settings, name: str, data: bytes) -> Path:
    path = settings.landing / name
    path.write_bytes(data)
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


# -- a UTF-8 byte order mark --------------------------------------------------------------------
BOM = "\ufeff"
BOM_FILES = {
    "bom-words.txt": f"{BOM}alpha beta\r\nbeta {BOM}gamma\n",
    "bom-only-line.txt": f"{BOM}\n",
    "bom-twice.txt": f"{BOM}{BOM}double\n",
    "bom-inside.txt": f"x{BOM}y z\n{BOM}q\n",
    "no-bom.txt": "alpha\n",
}


def as_spark_reads(data: bytes) -> str:
    """The text a Spark file source reads: Hadoop's line reader drops one UTF-8 BOM at the start of a
    file; anywhere else U+FEFF is an ordinary character (not whitespace, so part of a word)."""
    text = data.decode("utf-8")
    return text[1:] if text.startswith(BOM) else text


def bom_reference(paths: list[Path], mode: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in paths:
        for line in reference_lines(as_spark_reads(path.read_bytes())):
            for key in [line] if mode == "lines" else reference_tokens(line):
                counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.spark
@pytest.mark.parametrize(("engine", "mode"), [("structured", "lines"), ("dstream", "words")])
def test_a_byte_order_mark_is_counted_as_spark_reads_it(settings: Settings, tmp_path: Path, engine: str,
                                                        mode: str) -> None:
    paths = []
    for name, text in BOM_FILES.items():
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8"))
        paths.append(path)
    app = SparkApp(engine, settings, tmp_path / "app.log", keys=mode, available_now=engine == "structured")
    if engine == "structured":
        assert stage_files(settings, paths).staged == len(paths)
        app.start()
        assert app.wait(300) == 0, app.tail()
    else:
        app.start()
        app.wait_running()
        assert stage_files(settings, paths).staged == len(paths)
    try:
        expected = bom_reference(paths, mode)
        assert expected != reference_counts(paths, mode)  # the BOM makes a difference here
        output = settings.output(engine)
        if engine == "structured":  # an available-now run: it has finished
            assert results.read_totals(output, results.SEMANTICS[engine]) == expected
        else:
            paths.append(assert_totals_stay(
                lambda: results.read_totals(output, results.SEMANTICS[engine]), expected,
                lambda more: stage_files(settings, more), tmp_path / "sentinels", f"{engine} totals", 120))
        # Staging publishes the bytes as they came: the BOM is still in the watch file.
        published = {p.read_bytes() for p in settings.watch(engine).iterdir() if not p.name.startswith(".")}
        assert published == {path.read_bytes() for path in paths}
        if engine == "dstream":
            assert app.stop_gracefully() == 0, app.tail()
    finally:
        app.cleanup()


# -- one line of 200 MB ---------------------------------------------------------------------------
ONE_LINE_BYTES = 200 * 1000 * 1000
WORD = b"alpha beta gamma delta "
STAGE_AND_MEASURE = """
import resource, sys
from pathlib import Path
from wordstream.settings import Settings
from wordstream.staging import stage
report = stage(Settings.from_env(), progress=lambda _line: None, recheck_seconds=0)
print(report.quarantined, report.staged, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_one_line(path: Path, size: int, word: bytes) -> int:
    """``word`` repeated up to ``size`` bytes, no line break; returns the number of words."""
    copies = size // len(word)
    per_write = 1 << 16
    with open(path, "wb") as out:
        for _ in range(copies // per_write):
            out.write(word * per_write)
        out.write(word * (copies % per_write))
    past = time.time() - 60
    os.utime(path, (past, past))
    return copies


def stage_measured(settings: Settings, **env: str) -> tuple[int, int, int]:
    """Stage in a fresh process; (quarantined, staged, peak RSS in KiB) of that process."""
    env = {**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir), **env}
    run = subprocess.run([sys.executable, "-c", STAGE_AND_MEASURE], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    quarantined, staged, peak = (int(field) for field in run.stdout.split())
    return quarantined, staged, peak


def test_a_200_mb_file_of_one_line_is_quarantined_and_memory_stays_flat(settings: Settings) -> None:
    """The structured engine runs out of memory on a line of a few ten MB of short words (and would on
    every retry, the batch being replayed from the checkpoint): such a file never reaches it. Read to
    the end (a limit raised above its size), staging's memory still does not grow with the file."""
    land(settings, "small.txt", b"one small file\n")
    _, staged, baseline = stage_measured(settings)
    assert staged == 1

    huge = settings.landing / "one-line.txt"
    size = write_one_line(huge, ONE_LINE_BYTES, WORD) * len(WORD)
    quarantined, staged, peak = stage_measured(settings)
    assert (quarantined, staged) == (1, 0)
    [moved] = [p for p in settings.quarantine.iterdir() if not p.name.endswith(".reason.txt")]
    assert moved.stat().st_size == size  # moved whole, not copied
    reason = staging.names.reason_path(moved).read_text()
    assert reason == (f"line too long: more than {settings.max_line_bytes} bytes without a line break, "
                      "from byte offset 0 (landing name 'one-line.txt')\n")
    for engine in ENGINES:
        assert [p.read_bytes() for p in settings.watch(engine).iterdir()] == [b"one small file\n"]
    assert peak - baseline < 16 * 1024, f"peak RSS grew by {(peak - baseline) / 1024:.0f} MiB"

    os.replace(moved, huge)  # as if it came again, with the line limit raised above its size
    os.utime(huge, (time.time() - 60, time.time() - 60))
    quarantined, staged, peak = stage_measured(settings, WORDSTREAM_MAX_LINE_BYTES=str(ONE_LINE_BYTES))
    assert (quarantined, staged) == (0, 1)
    assert peak - baseline < 16 * 1024, f"peak RSS grew by {(peak - baseline) / 1024:.0f} MiB"
    for engine in ENGINES:
        assert sorted(p.stat().st_size for p in settings.watch(engine).iterdir())[-1] == size


@pytest.mark.spark
def test_a_line_at_the_limit_is_counted_exactly_by_the_structured_engine(settings: Settings,
                                                                         tmp_path: Path) -> None:
    """The worst case the default line limit lets through: one line of one-letter words."""
    path = tmp_path / "at-the-limit.txt"
    words = write_one_line(path, settings.max_line_bytes, b"a ")
    assert path.stat().st_size == settings.max_line_bytes
    assert stage_files(settings, [path]).staged == 1
    app = SparkApp("structured", settings, tmp_path / "app.log", available_now=True).start()
    try:
        assert app.wait(300) == 0, app.tail()
    finally:
        app.cleanup()
    assert results.read_totals(settings.output("structured"), "running-totals") == {"a": words}


# -- a file the staging process may not read ----------------------------------------------------
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def without_read_override() -> None:
    """In the child, before exec: give up root's power to read any file (the capabilities that
    bypass file permissions), so the staging process reads like an unprivileged service account."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


STAGE_ONCE = """
import sys
from pathlib import Path
from wordstream.settings import Settings
from wordstream.staging import stage
print(stage(Settings(data_dir=Path(sys.argv[1]), stable_seconds=0), progress=lambda _line: None,
            recheck_seconds=0).line())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user, tests/unit/test_staging.py covers it")
def test_a_file_staging_may_not_read_is_quarantined_with_the_reason(settings: Settings) -> None:
    """A producer left another user's private file (0600) in landing. Root reads every file, so the
    staging process runs as root without the capabilities that bypass file permissions."""
    secret = land(settings, "private.txt", b"not for you\n")
    os.chown(secret, NOBODY, NOBODY)
    secret.chmod(0o600)
    land(settings, "public.txt", b"for everyone\n")

    run = subprocess.run([sys.executable, "-c", STAGE_ONCE, str(settings.data_dir)],
                         preexec_fn=without_read_override, capture_output=True, text=True, timeout=120)
    if "prctl(PR_CAPBSET_DROP) failed" in run.stderr:
        pytest.skip("this container does not let a process drop capabilities")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("staged 1, duplicates 0, quarantined 1"), run.stdout

    [moved] = [p for p in settings.quarantine.iterdir() if not p.name.endswith(".reason.txt")]
    assert moved.read_bytes() == b"not for you\n" and moved.stat().st_uid == NOBODY  # moved, not copied
    reason = staging.names.reason_path(moved).read_text()
    assert reason == "unreadable: Permission denied (landing name 'private.txt')\n"
    for engine in ENGINES:
        assert [p.read_bytes() for p in settings.watch(engine).iterdir()] == [b"for everyone\n"]
    assert list(settings.landing.iterdir()) == []
    [row] = Ledger(settings.ledger).latest_quarantine(1)
    assert row["name"] == "private.txt" and row["reason"] == "unreadable: Permission denied"


# -- files that vanish between listing and archiving --------------------------------------------
def test_files_vanishing_at_every_step_lose_nothing(settings: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer (or an operator) deletes landing files while staging works on them:

    * during the re-check pause after the listing: never opened, nothing recorded;
    * after the re-check, before staging opens it: nothing recorded;
    * after it was opened and validated: the validated content is published from the open file and
      recorded as staged; only archiving the original is skipped, and the ledger says so.
    """
    stays = land(settings, "stays.txt", b"stays here\n")
    during_pause = land(settings, "gone-during-pause.txt", b"gone early\n")
    before_open = land(settings, "gone-before-open.txt", b"gone before open\n")
    after_check = land(settings, "gone-after-validation.txt", b"gone after validation\n")

    monkeypatch.setattr(staging.run, "_pause", lambda _seconds: during_pause.unlink())
    recheck = staging.landing.still_unchanged

    def recheck_then_delete(candidates: list[Candidate]) -> tuple[list[Candidate], int]:
        result = recheck(candidates)
        before_open.unlink()
        return result

    monkeypatch.setattr(staging.run, "still_unchanged", recheck_then_delete)
    inspect = staging.validation.inspect_content

    def inspect_then_delete(fd: int, max_bytes: int, **limits: int) -> staging.validation.Inspection:
        result = inspect(fd, max_bytes, **limits)
        if after_check.exists() and os.fstat(fd).st_ino == after_check.stat().st_ino:
            after_check.unlink()
        return result

    monkeypatch.setattr(staging.run, "inspect_content", inspect_then_delete)
    report = staging.stage(settings, progress=lambda _line: None)

    assert (report.staged, report.quarantined, report.duplicates) == (2, 0, 0)
    for engine in ENGINES:
        published = sorted(p.read_bytes() for p in settings.watch(engine).iterdir())
        assert published == [b"gone after validation\n", b"stays here\n"]  # whole files, no temp left
    assert list(settings.landing.iterdir()) == []
    ledger = Ledger(settings.ledger)
    rows = {row["name"]: row for row in ledger.entries(10)}
    assert set(rows) == {"stays.txt", "gone-after-validation.txt"}  # the others were never taken
    assert rows["stays.txt"]["status"] == "staged" and rows["stays.txt"]["moved_to"].startswith("archive/")
    assert rows["gone-after-validation.txt"]["status"] == "staged"
    assert "original not archived" in rows["gone-after-validation.txt"]["reason"]
    assert ledger.summary()["files"]["landed"] == 0
    assert not stays.exists()


def test_a_file_swapped_for_a_symlink_after_the_listing_is_not_followed(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the listing and the open, a producer replaces a landing file by a link to a file
    outside landing: staging opens without following links, so the outside file is never read."""
    outside = tmp_path / "outside-secret.txt"
    outside.write_bytes(b"outside the data directory\n")
    swapped = land(settings, "swapped.txt", b"harmless\n")
    recheck = staging.landing.still_unchanged

    def recheck_then_swap(candidates: list[Candidate]) -> tuple[list[Candidate], int]:
        result = recheck(candidates)
        swapped.unlink()
        swapped.symlink_to(outside)
        return result

    monkeypatch.setattr(staging.run, "still_unchanged", recheck_then_swap)
    report = staging.stage(settings, progress=lambda _line: None)
    assert report.skipped_unstable == 1 and report.handled == 0
    for engine in ENGINES:
        assert list(settings.watch(engine).iterdir()) == []
    assert not any(p.is_file() and p.read_bytes() == outside.read_bytes()
                   for p in settings.data_dir.rglob("*") if not p.is_symlink())

    monkeypatch.setattr(staging.run, "still_unchanged", recheck)
    report = staging.stage(settings, progress=lambda _line: None)  # next run: the link is quarantined
    assert report.quarantined == 1
    [moved] = [p for p in settings.quarantine.iterdir() if not p.name.endswith(".reason.txt")]
    assert moved.is_symlink() and os.readlink(moved) == str(outside)
    assert outside.read_bytes() == b"outside the data directory\n"


# -- names with line breaks and dots ------------------------------------------------------------
HOSTILE_NAMES = ["evil\nname.txt", "..\n..\nescape", "a\r\n..\\..\\win.txt", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                 "-..-..-etc-passwd", "x\x1b[31mred\x1b[0m.txt"]


def test_hostile_names_of_rejected_files_stay_inside_with_one_line_reasons(settings: Settings) -> None:
    for index, name in enumerate(HOSTILE_NAMES):
        land(settings, name, b"\xff\xfe not utf-8 " + bytes([65 + index]) + b"\n")
    report = staging.stage(settings, progress=lambda _line: None, recheck_seconds=0)
    # "..\n..\nescape" starts with a dot: a hidden name, left for its producer to finish.
    assert report.quarantined == len(HOSTILE_NAMES) - 1 and report.ignored == 1

    entries = sorted(p for p in settings.quarantine.iterdir() if not p.name.endswith(".reason.txt"))
    assert len(entries) == len(HOSTILE_NAMES) - 1
    for entry in entries:
        assert re.fullmatch(r"\d+-[A-Za-z0-9][A-Za-z0-9._-]*", entry.name), entry.name
        assert entry.parent == settings.quarantine
        reason = staging.names.reason_path(entry).read_text()
        assert reason.count("\n") == 1 and reason.endswith("\n")
        assert reason.startswith("not valid UTF-8") and "(landing name '" in reason
    ledger_text = subprocess.run([WORDSTREAM, "ledger", "--status", "quarantined"], capture_output=True,
                                 text=True, env={**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir)},
                                 check=True).stdout
    for name in HOSTILE_NAMES[:1] + HOSTILE_NAMES[2:]:
        [line] = [line for line in ledger_text.splitlines() if repr(name) in line and "quarantined" in line]
        assert "\x1b" not in line and "\r" not in line


# -- bad command lines --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["totals", "--engine", "nope"], "argument --engine: invalid choice: 'nope'"),
        (["totals", "--engine", "structured", "--top", "0"], "argument --top: must be at least 1, got 0"),
        (["totals", "--engine", "structured", "--top", "ten"], "argument --top: 'ten' is not a whole number"),
        (["totals"], "the following arguments are required: --engine"),
        (["reset"], "one of the arguments --engine --all is required"),
        (["reset", "--engine", "structured", "--wait-timeout", "-1"],
         "argument --wait-timeout: must be at least 0"),
        (["status", "--engine", "both"], "argument --engine: invalid choice: 'both'"),
        (["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    ],
    ids=["engine-nope", "top-0", "top-word", "no-engine", "reset-no-engine", "negative-wait", "status-engine",
         "no-such-command"],
)
def test_bad_cli_arguments_give_one_clear_line(settings: Settings, argv: list[str], message: str) -> None:
    run = subprocess.run([WORDSTREAM, *argv], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("wordstream: error: ") and message in line, line


@pytest.mark.spark
@pytest.mark.parametrize("engine", ENGINES)
def test_spark_app_with_zero_batch_seconds_gives_one_clear_line(settings: Settings, tmp_path: Path,
                                                                 engine: str) -> None:
    app = SparkApp(engine, settings, tmp_path / "bad.log", batch_seconds=1)
    app.args[app.args.index("--batch-seconds") + 1] = "0"
    app.start()
    assert app.wait(120) == 2
    # The JVM's own notice comes first; everything the application says is one line.
    lines = [line for line in app.log.read_text().splitlines()
             if line.strip() and not line.startswith("WARNING: Using incubator modules")]
    allowed = {"structured": "from 0.25 to 3600",
               "dstream": "a whole number of seconds from 1 to 3600 for the dstream engine"}[engine]
    assert lines == [f"{engine}_wordcount.py: error: --batch-seconds must be {allowed}, got 0"], lines
    assert control.read_status(settings.state, engine)["state"] == "never started"
    assert not settings.checkpoint(engine).exists()
