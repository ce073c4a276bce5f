"""The apps' command line: each engine's defaults, its knobs as flags and Params, their bounds.

Every knob reaches the command line however the app is started (settings, Params, flags), comes back
from it unchanged, and a bad one is refused with one line (exit 2) naming the flag.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from wordstream.engines import app_args
from wordstream.engines.app_args import AppArgs, knob_problems, parse
from wordstream.settings import DEFAULT_BATCH_SECONDS, ENGINES, STATE_STORE_PROVIDERS, Engine, Settings


def argv_without_interval(settings: Settings, engine: Engine) -> list[str]:
    argv = AppArgs.for_engine(settings, engine).to_argv()
    at = argv.index("--batch-seconds")
    return argv[:at] + argv[at + 2:]


def folders(settings: Settings, engine: Engine) -> list[str]:
    return AppArgs.for_engine(settings, engine).to_argv()[:8]


def refused(engine: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a bad command line gets (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        parse(engine, argv)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    return line


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


def test_structured_params_become_flags_and_come_back_unchanged(settings: Settings) -> None:
    params = {"keys": "lines", "batch_seconds": 0.5, "timeout_seconds": 30, "max_files_per_trigger": 1,
              "max_bytes_per_trigger": None, "state_store": "hdfs", "shuffle_partitions": 2}
    args = AppArgs.from_params(settings, "structured", params)
    argv = args.to_argv()
    assert argv[8:] == ["--keys", "lines", "--batch-seconds", "0.5", "--timeout", "30",
                        "--max-files-per-trigger", "1", "--state-store", "hdfs", "--shuffle-partitions", "2"]
    assert parse("structured", argv) == args
    assert args.knobs() == {"batch_seconds": 0.5, "max_files_per_trigger": 1, "max_bytes_per_trigger": None,
                            "state_store": "hdfs", "shuffle_partitions": 2}
    assert args.spark_conf()["spark.sql.shuffle.partitions"] == "2"
    assert args.spark_conf()["spark.sql.streaming.stateStore.providerClass"] == STATE_STORE_PROVIDERS["hdfs"]
    by_bytes = AppArgs.from_params(settings, "structured", {"max_bytes_per_trigger": 65536})
    assert "--max-bytes-per-trigger" in by_bytes.to_argv()
    assert parse("structured", by_bytes.to_argv()).max_bytes_per_trigger == 65536


def test_dstream_params_become_flags_and_come_back_unchanged(settings: Settings) -> None:
    params = {"keys": "lines", "batch_seconds": 2, "remember_seconds": 120}
    args = AppArgs.from_params(settings, "dstream", params)
    argv = args.to_argv()
    assert argv[8:] == ["--keys", "lines", "--batch-seconds", "2", "--remember-seconds", "120"]
    assert parse("dstream", argv) == args
    assert args.knobs() == {"batch_seconds": 2, "remember_seconds": 120}
    assert args.spark_conf()["spark.streaming.fileStream.minRememberDuration"] == "120s"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_env_defaults_hold_until_a_flag_or_a_param_overrides_them(
        settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORDSTREAM_STATE_STORE", "hdfs")
    monkeypatch.setenv("WORDSTREAM_SHUFFLE_PARTITIONS", "3")
    monkeypatch.setenv("WORDSTREAM_DSTREAM_REMEMBER_SECONDS", "90")
    settings = Settings.from_env()
    provider = settings.spark_conf()["spark.sql.streaming.stateStore.providerClass"]
    assert provider == STATE_STORE_PROVIDERS["hdfs"]
    base = folders(settings, engine)
    args = parse(engine, base)  # no knob on the command line: the settings'
    assert (args.state_store, args.shuffle_partitions, args.remember_seconds) == ("hdfs", 3, 90)
    assert AppArgs.from_params(settings, engine, {}) == dataclasses.replace(args,
                                                                            watch=settings.watch(engine))
    if engine == "structured":
        flagged = parse(engine, [*base, "--state-store", "rocksdb", "--shuffle-partitions", "8"])
        assert (flagged.state_store, flagged.shuffle_partitions) == ("rocksdb", 8)
        from_params = AppArgs.from_params(settings, engine,
                                          {"state_store": "rocksdb", "shuffle_partitions": 8})
        assert (from_params.state_store, from_params.shuffle_partitions) == ("rocksdb", 8)
    else:
        assert parse(engine, [*base, "--remember-seconds", "7"]).remember_seconds == 7
        assert AppArgs.from_params(settings, engine, {"remember_seconds": 7}).remember_seconds == 7


def test_a_bad_state_store_setting_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WORDSTREAM_STATE_STORE: unknown state store 'memory'"):
        Settings.from_env({"WORDSTREAM_DATA_DIR": str(tmp_path), "WORDSTREAM_STATE_STORE": "memory"})


@pytest.mark.parametrize(("engine", "flags", "message"), [
    ("structured", ["--batch-seconds", "0.1"], "--batch-seconds must be from 0.25 to 3600, got 0.1"),
    ("structured", ["--batch-seconds", "0"], "--batch-seconds must be from 0.25 to 3600, got 0"),
    ("dstream", ["--batch-seconds", "0.5"],
     "--batch-seconds must be a whole number of seconds from 1 to 3600 for the dstream engine, got 0.5"),
    ("structured", ["--max-files-per-trigger", "1", "--max-bytes-per-trigger", "1024"],
     "--max-files-per-trigger and --max-bytes-per-trigger exclude each other (Spark's file source takes "
     "one limit): give one"),
    ("structured", ["--max-files-per-trigger", "0"],
     "--max-files-per-trigger must be between 1 and 1,000,000, got 0"),
    ("structured", ["--max-bytes-per-trigger", "-1"],
     "--max-bytes-per-trigger must be between 1 and 1,099,511,627,776, got -1"),
    ("structured", ["--shuffle-partitions", "0"], "--shuffle-partitions must be between 1 and 1,000, got 0"),
    ("structured", ["--shuffle-partitions", "1001"],
     "--shuffle-partitions must be between 1 and 1,000, got 1001"),
    ("dstream", ["--remember-seconds", "0"], "--remember-seconds must be between 1 and 3,600, got 0"),
    ("structured", ["--remember-seconds", "30"],
     "--remember-seconds is supported by the dstream engine only"),
    ("dstream", ["--state-store", "hdfs"], "--state-store is supported by the structured engine only"),
    ("dstream", ["--max-files-per-trigger", "1"],
     "--max-files-per-trigger is supported by the structured engine only"),
    ("dstream", ["--available-now"], "--available-now is supported by the structured engine only"),
    ("structured", ["--state-store", "memory"], "argument --state-store: invalid choice: 'memory'"),
    ("structured", ["--shuffle-partitions", "two"],
     "argument --shuffle-partitions: invalid int value: 'two'"),
])
def test_a_bad_knob_is_one_line_naming_the_flag(settings: Settings, engine: Engine, flags: list[str],
                                                message: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(engine, [*folders(settings, engine), *flags], capsys)
    assert line.startswith(f"{engine}_wordcount.py: error: ") and message in line, line


def test_a_bad_knob_from_the_environment_is_refused_too(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORDSTREAM_SHUFFLE_PARTITIONS", "0")
    line = refused("structured", folders(settings, "structured"), capsys)
    assert line.endswith("--shuffle-partitions must be between 1 and 1,000, got 0"), line


def test_the_stream_dag_refuses_both_limits_without_starting_spark(settings: Settings) -> None:
    """The trigger form cannot say "one of the two"; the task fails at once, before spark-submit, and
    without a retry (the application would refuse it every time)."""
    from airflow.sdk.exceptions import AirflowFailException

    from wordstream.orchestration.stream_operator import StreamSubmitOperator

    operator = StreamSubmitOperator(task_id="run_stream", engine="structured")
    params: dict[str, Any] = {"max_files_per_trigger": 1, "max_bytes_per_trigger": 1024}
    with pytest.raises(AirflowFailException, match="exclude each other"):
        operator.execute({"params": params})
    assert knob_problems(AppArgs.from_params(settings, "structured", {"max_files_per_trigger": 1})) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_each_dag_offers_its_own_engines_knobs_within_the_apps_bounds(settings: Settings,
                                                                      engine: Engine) -> None:
    from airflow.sdk import ParamsDict
    from airflow.sdk.definitions.param import ParamValidationError

    from wordstream.orchestration.stream_operator import stream_params

    params = stream_params(engine, settings)
    own = {"structured": {"max_files_per_trigger", "max_bytes_per_trigger", "state_store",
                          "shuffle_partitions"},
           "dstream": {"remember_seconds"}}
    assert set(params) == {"keys", "batch_seconds", "timeout_seconds", *own[engine]}
    resolved = ParamsDict(params).validate()
    assert AppArgs.from_params(settings, engine, resolved) == AppArgs.for_engine(settings, engine)

    def accepted(name: str, value: object) -> bool:
        try:
            params[name].resolve(value)
        except ParamValidationError:
            return False
        return True

    low = app_args.MIN_BATCH_SECONDS[engine]
    assert accepted("batch_seconds", low) and not accepted("batch_seconds", low / 2)
    assert accepted("batch_seconds", 0.5) is (engine == "structured")
    assert not accepted("batch_seconds", app_args.MAX_BATCH_SECONDS + 1)
    if engine == "structured":
        assert accepted("max_files_per_trigger", None) and accepted("max_files_per_trigger", 1)
        assert not accepted("max_files_per_trigger", 0)
        assert not accepted("shuffle_partitions", app_args.SHUFFLE_PARTITIONS_RANGE[1] + 1)
        assert not accepted("state_store", "memory")
    else:
        assert accepted("remember_seconds", 1) and not accepted("remember_seconds", 0)
        assert not accepted("remember_seconds", app_args.REMEMBER_SECONDS_RANGE[1] + 1)


def test_a_structured_knob_asked_of_dstream_reaches_the_app_which_refuses_it(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    asked = AppArgs.for_engine(settings, "dstream", available_now=True, max_files_per_trigger=2)
    line = refused("dstream", asked.to_argv(), capsys)
    assert line == ("dstream_wordcount.py: error: --available-now is supported by the structured engine "
                    "only; --max-files-per-trigger is supported by the structured engine only"), line
