"""Each engine's default micro-batch interval reaches its command line, however the app is started."""

from __future__ import annotations

import pytest

from wordstream.engines.app_args import AppArgs, parse
from wordstream.settings import DEFAULT_BATCH_SECONDS, ENGINES, Engine, Settings


def argv_without_interval(settings: Settings, engine: Engine) -> list[str]:
    argv = AppArgs.for_engine(settings, engine).to_argv()
    at = argv.index("--batch-seconds")
    return argv[:at] + argv[at + 2:]


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_has_its_own_default_interval(settings: Settings, engine: Engine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORDSTREAM_BATCH_SECONDS", raising=False)
    settings = Settings.from_env()
    expected = DEFAULT_BATCH_SECONDS[engine]
    assert AppArgs.for_engine(settings, engine).batch_seconds == expected
    params = {"keys": "lines", "timeout_seconds": 0}  # a run that leaves the interval alone
    assert AppArgs.from_params(settings, engine, params).batch_seconds == expected
    assert parse(engine, argv_without_interval(settings, engine)).batch_seconds == expected
    assert AppArgs.from_params(settings, engine, {"batch_seconds": 5}).batch_seconds == 5


@pytest.mark.parametrize("engine", ENGINES)
def test_the_knob_sets_both_engines(settings: Settings, engine: Engine,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORDSTREAM_BATCH_SECONDS", "3")
    settings = Settings.from_env()
    assert AppArgs.for_engine(settings, engine).batch_seconds == 3
    assert parse(engine, argv_without_interval(settings, engine)).batch_seconds == 3
