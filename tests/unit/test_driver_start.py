"""What a driver checks before its stream starts: an unfinished reset, a pending stop request, and
the ledger against the engine's own commit record. In-process (no Spark is started before these)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest
from support import write_structured_record

from wordstream import control
from wordstream.engines import app_args
from wordstream.engines.driver import REFUSED, Driver
from wordstream.ledger import Ledger
from wordstream.settings import Engine, Settings


@pytest.fixture(autouse=True)
def keep_sigterm() -> Iterator[None]:
    """A driver that starts installs its own SIGTERM handler."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def driver(settings: Settings, engine: Engine = "structured") -> Driver:
    return Driver(engine, app_args.parse(engine, app_args.AppArgs.for_engine(settings, engine).to_argv()))


def test_a_stop_requested_before_the_start_is_honoured(settings: Settings) -> None:
    """A reset's request must not be swallowed by a driver that happens to start meanwhile."""
    token = control.request_stop(settings.state, "structured")
    with pytest.raises(SystemExit) as exit_info, driver(settings):
        pytest.fail("the stream must not start")
    assert exit_info.value.code == 0
    status = control.read_status(settings.state, "structured")
    assert status["state"] == "stopped" and not status["lock_held"]
    assert "a stop was requested before this driver started" in status["reason"]
    assert control.stop_path(settings.state, "structured").read_text().strip() == token  # its writer's


def test_no_driver_starts_while_a_reset_is_unfinished(settings: Settings,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    journal = control.reset_journal_path(settings.state, "dstream")
    journal.write_text(json.dumps({"engine": "dstream", "epoch": str(settings.rotated / "dstream-x")}))
    with pytest.raises(SystemExit) as exit_info, driver(settings, "dstream"):
        pytest.fail("the stream must not start")
    assert exit_info.value.code == REFUSED == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("dstream: refusing to start: a reset of dstream did not finish")
    assert "wordstream reset --engine dstream" in err
    assert not control.is_running(settings.state, "dstream")
    assert control.read_status(settings.state, "dstream")["state"] == "never started"


def test_the_ledger_is_reconciled_with_the_commit_log_before_the_stream_starts(settings: Settings) -> None:
    """The previous driver was killed right after committing batch 0 and before marking its file."""
    ledger = Ledger(settings.ledger)
    names = []
    for letter in "ab":
        row = ledger.begin(f"{letter}.txt", letter * 64, 2)
        name = f"{letter * 16}-{letter}.txt"
        ledger.claim(row.id, letter * 64, "structured", name)
        ledger.record_published(letter * 64, "structured")
        (settings.watch("structured") / name).write_text(f"{letter}\n")
        names.append(name)
    ledger.mark_processed("structured", "1", [names[1]])  # a mark the commit log does not back
    write_structured_record(settings.checkpoint("structured"), [[settings.watch("structured") / names[0]],
                                                                 [settings.watch("structured") / names[1]]],
                            committed=0)
    with driver(settings):
        assert ledger.processed_watch_names("structured") == {names[0]}
        assert ledger.unprocessed("structured") == [names[1]]
