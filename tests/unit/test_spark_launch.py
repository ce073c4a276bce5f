"""How the Spark applications are launched (conf, JVM options, class archive, start-up phases) and
what their task log is made of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wordstream import class_archive, results
from wordstream.engines.driver import startup_summary
from wordstream.settings import Settings
from wordstream.spark_env import (
    LAUNCHER_JAVA_OPTS,
    LOG_CONFIG,
    conf_arguments,
    prefer_installed_pyspark,
    spark_env,
    submit_conf,
)
from wordstream_dev import task_log


def log4j2_properties(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            entries[key.strip()] = value.strip()
    return entries


def test_driver_and_executors_get_the_log_configuration(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(class_archive.ARCHIVE_ENV, "")
    conf = submit_conf(Settings(data_dir=tmp_path))
    option = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    assert conf["spark.driver.defaultJavaOptions"] == option
    assert conf["spark.executor.defaultJavaOptions"] == option
    assert conf["spark.sql.shuffle.partitions"] == "4"  # the settings' knobs are all there too
    assert conf_arguments({"a": "1", "b": "x y"}) == ["--conf", "a=1", "--conf", "b=x y"]


def test_the_launcher_jvm_starts_lean_unless_the_caller_set_its_options() -> None:
    """spark-submit's launcher JVM (it prints the driver's command and exits) takes
    SPARK_LAUNCHER_OPTS; tests/unit/test_install.py runs a real spark-submit with them."""
    assert spark_env({"PATH": "/usr/bin"})["SPARK_LAUNCHER_OPTS"] == LAUNCHER_JAVA_OPTS
    assert "TieredStopAtLevel=1" in LAUNCHER_JAVA_OPTS
    own = {"PATH": "/usr/bin", "SPARK_LAUNCHER_OPTS": "-Xmx64m"}
    assert spark_env(own)["SPARK_LAUNCHER_OPTS"] == "-Xmx64m"


def test_the_log_configuration_keeps_what_the_spark_provider_parses() -> None:
    """Spark's internals at WARN; org.apache.spark.deploy (application, driver and pod ids, exit
    codes that SparkSubmitHook reads in cluster deploy mode) at INFO; errors with stack traces."""
    entries = log4j2_properties(LOG_CONFIG)
    assert entries["rootLogger.level"] == "warn"
    levels = {entries[key]: entries[key.replace(".name", ".level")]
              for key in entries if key.startswith("logger.") and key.endswith(".name")}
    assert levels.pop("org.apache.spark.deploy") == "info"
    assert set(levels.values()) <= {"warn", "error"}
    assert entries["appender.stderr.target"] == "SYSTEM_ERR"
    assert entries["appender.stderr.layout.pattern"].endswith("%n%ex")  # the whole stack trace


def stamped_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "driver.jsa") -> Path:
    archive = tmp_path / name
    monkeypatch.setenv(class_archive.ARCHIVE_ENV, str(archive))
    archive.write_bytes(b"not really an archive")
    (tmp_path / f"{name}.json").write_text(json.dumps(class_archive.fingerprint()))
    return archive


def test_a_fresh_archive_is_passed_to_the_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = stamped_archive(tmp_path, monkeypatch)
    assert class_archive.driver_options() == [f"-XX:SharedArchiveFile={archive}"]
    conf = submit_conf(Settings(data_dir=tmp_path))
    assert conf["spark.driver.defaultJavaOptions"].split(" ") == [
        f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}", f"-XX:SharedArchiveFile={archive}"]
    assert "SharedArchiveFile" not in conf["spark.executor.defaultJavaOptions"]


def test_a_missing_stale_or_disabled_archive_is_not_passed(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    archive = stamped_archive(tmp_path, monkeypatch)
    stamp = tmp_path / "driver.jsa.json"
    stale = {**class_archive.fingerprint(), "jars": "built for other jars"}
    stamp.write_text(json.dumps(stale))
    assert class_archive.driver_options() == []
    stamp.write_text("{not json")
    assert class_archive.driver_options() == []
    stamp.unlink()
    assert class_archive.driver_options() == []
    stamped_archive(tmp_path, monkeypatch)
    archive.unlink()
    assert class_archive.driver_options() == []
    monkeypatch.setenv(class_archive.ARCHIVE_ENV, "")
    assert class_archive.archive_path() is None and class_archive.driver_options() == []
    assert class_archive.build() is None


def test_an_archive_path_spark_would_split_is_not_passed(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    stamped_archive(tmp_path, monkeypatch, name="driver archive.jsa")
    assert class_archive.usable() is not None
    assert class_archive.driver_options() == []


def test_the_fingerprint_follows_the_jvm_and_the_jars(tmp_path: Path) -> None:
    here = class_archive.fingerprint()
    assert here["jvm"] and here["jars"]
    fake_java = tmp_path / "jdk" / "bin" / "java"
    fake_java.parent.mkdir(parents=True)
    fake_java.write_text("#!/bin/sh\n")
    other = class_archive.fingerprint({"JAVA_HOME": str(tmp_path / "jdk")})
    assert other["jars"] == here["jars"] and other["jvm"] != here["jvm"]


def test_startup_summary_names_each_phase() -> None:
    startup = {"spark_submit": 100.0, "python": 101.2, "driver": 101.5, "session": 103.5, "query": 104.1,
               "first_batch": 106.4, "first_batch_ms": {"addBatch": 1800}}
    assert startup_summary(startup) == (
        "6.4 s from spark-submit to the first batch: spark-submit and JVM 1.2 s, driver start 0.3 s, "
        "session 2.0 s, query 0.6 s, first batch 2.3 s")


def records(lines: list[str]) -> list[task_log.Record]:
    return [task_log.Record(line, len(line) + 100) for line in lines]


def structured_print(batch_id: int, rows: list[tuple[str, int]], total: int) -> list[str]:
    """What ``structured.print_console`` prints, line by line."""
    table = results.show_string(("key", "count"), rows, total)
    return [task_log.CONSOLE_RULE, f"Batch: {batch_id}", task_log.CONSOLE_RULE, *(table + "\n").splitlines()]


def test_the_task_log_split_takes_only_console_prints_out() -> None:
    """Everything that is not a console print stays in ``other``, whatever sits between the prints."""
    batch_line = "[wordstream structured] batch {}: 40 rows in, 1 files, 27 keys out, 70 rows/s, 555 ms"
    warn = "26/12/01 14:37:27 WARN ProcessingTimeExecutor: Current batch is falling behind."
    dstream_print = [task_log.CONSOLE_RULE, "Time: 2026-12-01 14:26:13", task_log.CONSOLE_RULE,
                     *[f"('w{i}', {i})" for i in range(10)], "...", ""]
    lines = [
        "[wordstream structured] starting: watch=/data/watch/structured",
        *structured_print(0, [("a", 1), ("b", 2)], 2), batch_line.format(0),
        *structured_print(1, [(f"w{i}", i) for i in range(20)], 25), warn, batch_line.format(1),
        *dstream_print, "Traceback (most recent call last):", "|not a table row after a traceback",
        *structured_print(2, [("c", 3)], 1), batch_line.format(2),
    ]
    split = task_log.split_console(records(lines))
    assert [r.text for r in split.other] == [
        lines[0], batch_line.format(0), warn, batch_line.format(1), "Traceback (most recent call last):",
        "|not a table row after a traceback", batch_line.format(2)]
    assert split.console_rows() == [2, 20, 10, 1]
    per_batch, _split, batches = task_log.per_batch(records(lines), skip_batches=1)
    assert batches == 2  # after batch 0, up to batch 2
    steady = (warn, batch_line.format(1), "Traceback (most recent call last):",
              "|not a table row after a traceback", batch_line.format(2))
    assert per_batch == sum(len(line) + 100 for line in steady) / 2


def test_the_driver_imports_the_installed_pyspark_not_spark_submits_zip(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    lib = site / "pyspark" / "python" / "lib"
    lib.mkdir(parents=True)
    (site / "pyspark" / "__init__.py").write_text("")
    zipped, py4j = str(lib / "pyspark.zip"), str(lib / "py4j-0.10.9.9-src.zip")
    path = ["/app", zipped, py4j, str(site)]
    assert prefer_installed_pyspark(path) == [zipped]
    assert path == ["/app", py4j, str(site)]
    # Without the installed package on the path, or a pyspark.zip elsewhere, nothing changes.
    for other in (["/app", zipped, py4j], ["/app", str(tmp_path / "pyspark.zip"), str(site)]):
        assert prefer_installed_pyspark(list(other)) == []
    assert prefer_installed_pyspark(["pyspark.zip"]) == []
