"""Drill: kill -9 of staging between copy and publication, and between publication and ledger update.

tests/unit/test_staging.py kills staging (``os._exit``) at many points and checks that the next run
completes exactly once. Here the process SIGKILLs itself at the points that matter most, and the
drill looks at what it left behind before any recovery:

* between copy and publication (before and after the syncfs or fsync that makes the copy durable):
  the copy, written by validation, exists only under its random hidden name in the first engine's
  folder (no Spark source lists it), complete; the ledger holds the intents (``publishing``);
* between publication and ledger update: the final file is visible, whole, in every engine's
  folder; the ledger still says ``publishing``, and the next run records it without copying it again.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wordstream import staging
from wordstream.ledger import Ledger
from wordstream.settings import ENGINES, Settings

pytestmark = pytest.mark.drill

KILLED_AT = """
import os, signal, sys
from pathlib import Path
from wordstream import staging
from wordstream.ledger import Ledger
from wordstream.settings import Settings

data_dir, point = Path(sys.argv[1]), sys.argv[2]

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "before-flush":  # the copy is written, not yet made durable by the group's syncfs
    staging.run.SYNCFS_FROM_FILES = 1
    staging.run.flush_filesystem = killed
elif point == "before-fsync":  # the same where a group of one file fsyncs its copy
    os.fsync = killed
elif point == "before-link":  # the copy is durable; its final names (hard links) are next
    os.link = killed
else:  # "before-ledger": the final names are there, record_published is next
    Ledger.record_published = killed
staging.stage(Settings(data_dir=data_dir, stable_seconds=0), progress=lambda line: None, recheck_seconds=0)
"""

CONTENT = b"".join(f"line {i} of a file that takes a few writes to copy\n".encode() for i in range(50_000))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = Settings(data_dir=data_dir, stable_seconds=0)
    result.ensure_dirs()
    path = result.landing / "report.txt"
    path.write_bytes(CONTENT)
    os.utime(path, (time.time() - 60, time.time() - 60))
    return result


def kill_staging_at(settings: Settings, point: str) -> None:
    run = subprocess.run([sys.executable, "-c", KILLED_AT, str(settings.data_dir), point],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr)


def entries(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def delivery_states(settings: Settings) -> dict[str, str]:
    deliveries = Ledger(settings.ledger).deliveries(hashlib.sha256(CONTENT).hexdigest())
    return {engine: delivery.state for engine, delivery in deliveries.items()}


def final_name() -> str:
    return staging.watch_name_for(hashlib.sha256(CONTENT).hexdigest(), "report.txt")


@pytest.mark.parametrize("point", ["before-flush", "before-fsync", "before-link"])
def test_killed_between_copy_and_publication(settings: Settings, point: str) -> None:
    kill_staging_at(settings, point)
    [copy] = settings.watch(ENGINES[0]).iterdir()
    assert staging.is_temp_name(copy.name) and copy.read_bytes() == CONTENT
    assert all(list(settings.watch(engine).iterdir()) == [] for engine in ENGINES[1:])
    assert delivery_states(settings) == dict.fromkeys(ENGINES, "publishing")
    assert (settings.landing / "report.txt").read_bytes() == CONTENT  # the original is untouched

    report = staging.stage(settings, progress=lambda _line: None, recheck_seconds=0)
    assert report.staged == 1 and report.published == dict.fromkeys(ENGINES, 1)
    for engine in ENGINES:
        assert entries(settings.watch(engine)) == {final_name(): CONTENT}
    assert os.path.samefile(*(settings.watch(engine) / final_name() for engine in ENGINES))
    assert delivery_states(settings) == dict.fromkeys(ENGINES, "published")
    assert list(settings.landing.iterdir()) == []


def test_killed_between_publication_and_ledger_update(settings: Settings) -> None:
    kill_staging_at(settings, "before-ledger")
    published = {}
    for engine in ENGINES:
        assert entries(settings.watch(engine)) == {final_name(): CONTENT}
        published[engine] = (settings.watch(engine) / final_name()).stat()
    assert delivery_states(settings) == dict.fromkeys(ENGINES, "publishing")

    staging.stage(settings, progress=lambda _line: None, recheck_seconds=0)
    for engine in ENGINES:
        after = (settings.watch(engine) / final_name()).stat()
        assert entries(settings.watch(engine)) == {final_name(): CONTENT}
        # Not copied again: an engine that already read the file would otherwise see it twice.
        assert (after.st_ino, after.st_mtime_ns) == (published[engine].st_ino, published[engine].st_mtime_ns)
    assert delivery_states(settings) == dict.fromkeys(ENGINES, "published")
    [row] = Ledger(settings.ledger).entries(5)
    assert row["status"] == "staged" and row["moved_to"].startswith("archive/")
    assert list(settings.landing.iterdir()) == []
