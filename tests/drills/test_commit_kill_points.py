"""Drills: kill -9 around an engine's commit, and of the reset itself, then a new epoch.

Each ends with the same proof against the independent reference: the old epoch (its rotated output)
holds exactly the files the ledger says it processed, and the new epoch exactly all the others, so
every file is counted once across the two epochs.

* **the moment the commit is durable** — the driver tree is SIGKILLed as soon as a batch's commit
  exists (structured: ``commits/<n>``; DStream: its batch folder with the manifest), before the
  driver marks the batch's files processed; more files are staged while it is down. Then the reset,
  itself SIGKILLed twice (after giving one file back, after moving the checkpoint), a driver start
  refused while the reset is unfinished, and the reset run again;
* **between output and commit** — structured: the batch folder is in place and ``commits/<n>`` not
  yet (a batch of many distinct keys keeps that moment open for a while); DStream: the batch folder
  is still being written. The reset removes that output and gives the batch's files back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from probes import add_counts, batch_ids, files_by_watch_name, kill_when, stage_files, watch_files
from support import SparkApp, assert_totals_stay, reference_counts, write_corpus

from wordstream import control, maintenance, results
from wordstream.engines.driver import REFUSED
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Engine, Settings

pytestmark = [pytest.mark.spark, pytest.mark.drill]

# The real reset in a process of its own that SIGKILLs itself at a point: just before the second file
# it gives back (one is back in landing), or just before the output follows the checkpoint.
KILLED_RESET = """
import os, signal, sys
from wordstream.maintenance import reset
from wordstream.settings import Settings

engine, point = sys.argv[1], sys.argv[2]
settings = Settings.from_env()
give_back, move_entry, given_back = reset.give_back, reset.move_entry, []

def back(path, dest):  # a file given back to landing: moved, or copied when both engines share it
    if point == "after-giving-back" and given_back:
        os.kill(os.getpid(), signal.SIGKILL)
    given_back.append(dest)
    give_back(path, dest)

def move(source, dest):
    if point == "after-checkpoint-moved" and dest.name == "output":
        os.kill(os.getpid(), signal.SIGKILL)
    move_entry(source, dest)

reset.give_back, reset.move_entry = back, move
reset.reset_engine(settings, engine, wait_timeout=60, progress=print)
"""


def kill_the_reset(settings: Settings, engine: Engine, point: str) -> None:
    env = {**os.environ, "WORDSTREAM_DATA_DIR": str(settings.data_dir)}
    run = subprocess.run([sys.executable, "-c", KILLED_RESET, engine, point], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, (point, run.returncode, run.stdout, run.stderr)
    assert control.reset_journal_path(settings.state, engine).exists()


def totals(engine: Engine, output: Path) -> dict[str, int]:
    return results.read_totals(output, results.SEMANTICS[engine])


def new_epoch_counts_the_rest(settings: Settings, engine: Engine, tmp_path: Path,
                              reference: dict[Path, dict[str, int]], report: maintenance.ResetReport) -> None:
    """The proof: the old epoch holds exactly the files processed, the new one all the others."""
    assert report.rotated_to is not None
    processed = set(watch_files(Ledger(settings.ledger).processed_watch_names(
        engine, Path(report.rotated_to).name), files_by_watch_name(reference)))
    old_output = Path(report.rotated_to) / "output"
    old_epoch = totals(engine, old_output)
    assert old_epoch == add_counts(*(reference[path] for path in processed))
    assert not control.reset_journal_path(settings.state, engine).exists()

    later = write_corpus(tmp_path / "later", files=2, seed=73)
    reference.update({path: reference_counts([path], "words") for path in later})
    app = SparkApp(engine, settings, tmp_path / "epoch2.log").start()
    try:
        app.wait_running()
        stage_files(settings, later)  # with the files the reset gave back to landing
        rest = add_counts(*(counts for path, counts in reference.items() if path not in processed))
        extra = assert_totals_stay(lambda: totals(engine, settings.output(engine)), rest,
                                   lambda paths: stage_files(settings, paths), tmp_path / "sentinels",
                                   f"{engine} new epoch totals")
        assert app.stop_gracefully() == 0, app.tail()
    finally:
        app.cleanup()
    everything = add_counts(*reference.values(), reference_counts([extra], "words"))
    assert add_counts(old_epoch, totals(engine, settings.output(engine))) == everything
    assert totals(engine, old_output) == old_epoch  # the new epoch never touched the old one
    print(f"{engine}: old epoch {len(processed)} files, new epoch {len(reference) - len(processed)} files")


def committed(settings: Settings, engine: Engine) -> bool:
    """The engine's first commit is durable: its commit log entry, or its manifest-bearing folder."""
    if engine == "structured":
        return bool(batch_ids(settings.checkpoint(engine) / "commits"))
    return any((folder / results.MANIFEST).exists() for folder in results.batch_dirs(settings.output(engine)))


@pytest.mark.parametrize("engine", ENGINES)
def test_killed_at_the_commit_then_a_reset_killed_twice_counts_every_file_once(
        settings: Settings, tmp_path: Path, engine: Engine) -> None:
    first = write_corpus(tmp_path / "first", files=3, seed=71)
    while_down = write_corpus(tmp_path / "down", files=3, seed=72)
    reference = {path: reference_counts([path], "words") for path in [*first, *while_down]}
    ledger = Ledger(settings.ledger)

    app = SparkApp(engine, settings, tmp_path / "epoch1.log").start()
    try:
        app.wait_running()
        stage_files(settings, first)
        kill_when(app, lambda: committed(settings, engine), 120, f"{engine}'s first commit")
    finally:
        app.cleanup()
    print(f"{engine}: killed at the commit; the ledger had marked {ledger.processed_count(engine)} files")
    stage_files(settings, while_down)

    kill_the_reset(settings, engine, "after-giving-back")
    assert len(list(settings.landing.iterdir())) == 1
    refused = SparkApp(engine, settings, tmp_path / "refused.log").start()
    try:
        assert refused.wait(120) == REFUSED, refused.tail()
    finally:
        refused.cleanup()
    assert f"refusing to start: a reset of {engine} did not finish" in refused.log.read_text()
    kill_the_reset(settings, engine, "after-checkpoint-moved")
    [epoch] = list(settings.rotated.iterdir())
    assert (epoch / "checkpoint").is_dir() and settings.output(engine).is_dir()

    report = maintenance.reset_engine(settings, engine, wait_timeout=60, progress=lambda _line: None)
    assert report.resumed and report.rotated_to == str(epoch), report
    new_epoch_counts_the_rest(settings, engine, tmp_path, reference, report)


def distinct_keys(path: Path, keys: int) -> Path:
    """A file of ``keys`` distinct words: its batch writes that many rows, and the driver ranks them
    before the commit, which keeps the moment between output and commit open for a while."""
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, keys, 12):
            out.write(" ".join(f"k{i:07d}" for i in range(start, min(start + 12, keys))) + "\n")
    return path


def between_output_and_commit(settings: Settings, engine: Engine) -> bool:
    output = settings.output(engine)
    if engine == "structured":
        written = {results.batch_id_of(folder) for folder in results.batch_dirs(output)}
        return bool(written - batch_ids(settings.checkpoint(engine) / "commits"))
    return output.is_dir() and any(name.startswith(results.TEMP_PREFIXES) for name in os.listdir(output))


@pytest.mark.parametrize("engine", ENGINES)
def test_killed_between_output_and_commit_the_reset_gives_the_batch_back(
        settings: Settings, tmp_path: Path, engine: Engine) -> None:
    (tmp_path / "big").mkdir()
    big = distinct_keys(tmp_path / "big" / "many-keys.txt", 300_000 if engine == "structured" else 50_000)
    while_down = write_corpus(tmp_path / "down", files=2, seed=74)
    reference = {path: reference_counts([path], "words") for path in [big, *while_down]}

    app = SparkApp(engine, settings, tmp_path / "epoch1.log").start()
    try:
        app.wait_running()
        stage_files(settings, [big])
        kill_when(app, lambda: between_output_and_commit(settings, engine), 180,
                  f"{engine}'s batch between output and commit")
    finally:
        app.cleanup()
    output = settings.output(engine)
    if engine == "structured":  # the drill hit the moment: a batch folder without its commit
        assert results.batch_dirs(output) and not batch_ids(settings.checkpoint(engine) / "commits")
    else:
        assert not results.batch_dirs(output)
    stage_files(settings, while_down)

    report = maintenance.reset_engine(settings, engine, wait_timeout=60, progress=lambda _line: None)
    assert report.deleted == 0 and report.returned == len(reference), report
    assert report.uncommitted_removed == ([0] if engine == "structured" else [])
    new_epoch_counts_the_rest(settings, engine, tmp_path, reference, report)
