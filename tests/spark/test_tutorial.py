"""The tutorial's own code (``examples/``) and the engines in ``lines`` mode print the same counts.

Each example runs under a real spark-submit launched as the engines are (the environment of
:func:`wordstream.spark_env.spark_env`, the engines' Spark settings: only the application differs),
beside the matching engine (``--keys lines``, 1 s batches), over the same small files copied into
both watch folders. The test reads only what each printed:
DStream ``pprint()`` blocks (``Time: ...`` and ``('key', n)`` lines), and the console sink's
``Batch: N`` tables, which the structured engine draws with :func:`wordstream.results.show_string`.

* DStream: each round of files lands in one batch of both streams (1 s batch times fall on whole
  seconds, the files are published just after one); both print the same pairs at the same batch time,
  equal to the reference of that round.
* Structured: batches may split differently, so the final total of each key (its last printed
  update) is compared; both equal the reference, and every table is drawn exactly as Spark's console
  sink draws one.
"""

from __future__ import annotations

import ast
import os
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from support import SparkApp, reference_counts, wait_until

from wordstream import results
from wordstream.settings import REPO_DIR, Engine, Settings
from wordstream.spark_env import submit_conf
from wordstream_dev.spark_submit import SparkSubmit

pytestmark = pytest.mark.spark

EXAMPLES = REPO_DIR / "examples"
SECONDS = 25  # each application's --timeout / the example's timeout argument

# Whole lines are the keys: repeated lines, an empty line, LF, CRLF and CR endings, a missing final
# newline, non-ASCII (double-width in a table), a tab (escaped in a table). Few keys (pprint shows
# ten, the console twenty) of at most 20 characters (the console cuts longer ones), none with
# leading or trailing blanks (a table's padding).
ROUNDS = (
    {
        "a.txt": "to be or not to be\nthat is the question\nto be or not to be\n\n",
        "b.txt": "to be or not to be\r\nnaïve Straße 日本語\r\n\r\nthat is the question",
    },
    {
        "c.txt": "that is the question\rto be or not to be\rwhether 'tis nobler\rtab\tseparated\r",
    },
)

TIME_HEADER = re.compile(r"^Time: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)$")
BATCH_HEADER = re.compile(r"^Batch: (\d+)$")
RULE = re.compile(r"^\+(?:-+\+)+$")


# -- what the applications printed ---------------------------------------------------------------
def pprint_batches(text: str) -> list[tuple[str, dict[str, int]]]:
    """``(batch time, pairs)`` of every ``pprint()`` block that printed pairs, in order.

    Anything else in the log (a driver's or Spark's lines) between the pairs is skipped; a block
    ends at its blank line or at the next header.
    """
    found: list[tuple[str, dict[str, int]]] = []
    current: dict[str, int] | None = None
    for line in text.split("\n"):
        header = TIME_HEADER.match(line)
        if header:
            current = {}
            found.append((header.group(1), current))
        elif current is not None and line == "":
            current = None
        elif current is not None and line == "...":
            raise AssertionError("a batch printed more than ten pairs: the test's files have too many keys")
        elif current is not None and line.startswith("(") and line.endswith(")"):
            key, count = ast.literal_eval(line)
            assert key not in current, f"{key!r} printed twice in one batch"
            current[key] = count
    return [(batch_time, pairs) for batch_time, pairs in found if pairs]


def console_tables(text: str) -> list[tuple[int, str]]:
    """``(batch id, table)`` of every ``Batch: N`` table printed, in order (lines of other output
    that came between its lines left out)."""
    tables: list[tuple[int, str]] = []
    lines = text.split("\n")
    for index, line in enumerate(lines):
        header = BATCH_HEADER.match(line)
        if not header:
            continue
        drawn: list[str] = []
        for following in lines[index + 1:]:
            if RULE.match(following) or following.startswith("|"):
                drawn.append(following)
                if sum(1 for row in drawn if RULE.match(row)) == 3:
                    break
        tables.append((int(header.group(1)), "\n".join(drawn) + "\n"))
    return tables


def table_rows(table: str) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """The header and the ``(key, count)`` rows of one table (cells padded with blanks, tabs shown
    as ``\\t``)."""
    rows = [[cell.strip(" ").replace("\\t", "\t") for cell in line[1:-1].split("|")]
            for line in table.split("\n") if line.startswith("|")]
    header, body = rows[0], rows[1:]
    assert len(header) == 2, table
    return (header[0], header[1]), [(key, int(count)) for key, count in body]


def printed_batches(count: int, text: str) -> bool:
    return len(pprint_batches(text)) >= count


def final_totals(text: str, key_column: str) -> dict[str, int]:
    """Each key's last printed running total, checking every table is drawn as Spark draws it."""
    totals: dict[str, int] = {}
    tables = console_tables(text)
    assert [batch_id for batch_id, _ in tables] == sorted({batch_id for batch_id, _ in tables}), tables
    for _batch_id, table in tables:
        header, rows = table_rows(table)
        assert header == (key_column, "count"), table
        assert table == results.show_string(header, rows, len(rows)), table
        totals.update(rows)
    return totals


# -- running them --------------------------------------------------------------------------------
class Example(SparkSubmit):
    """One examples/ file under a real spark-submit, launched as the engines are (their environment
    and Spark settings, in a process group of its own); only the application differs. What it prints
    is read from its standard output, apart from the logging on its standard error."""

    def __init__(self, script: str, watch: Path, settings: Settings, logs: Path) -> None:
        self.script = script
        super().__init__(str(EXAMPLES / script), [str(watch), str(SECONDS)], log=logs / f"{script}.out",
                         errors=logs / f"{script}.err", conf=submit_conf(settings),
                         env={"PYTHONUNBUFFERED": "1"})

    def printed(self) -> str:
        if self.proc is not None and self.proc.poll() not in (None, 0):
            raise AssertionError(self.exited(self.script))
        return self.log.read_text(errors="replace")

    def wait_done(self) -> None:
        assert self.wait(timeout=SECONDS + 120) == 0, self.tail()


def write_round(folders: list[Path], files: dict[str, str], originals: Path) -> list[Path]:
    """The same files into every folder, each renamed from a hidden name (streams skip dot files);
    returns the copies kept in ``originals`` for the reference."""
    originals.mkdir()
    for folder in [originals, *folders]:
        for name, text in files.items():
            temp = folder / f".{name}"
            temp.write_bytes(text.encode("utf-8"))
            os.replace(temp, folder / name)
    return [originals / name for name in files]


def engine_printed(app: SparkApp) -> str:
    assert app.proc is not None
    if app.proc.poll() not in (None, 0):
        raise AssertionError(f"{app.engine} exited {app.proc.returncode}:\n{app.tail()}")
    return app.log.read_text(errors="replace")


def wait_printed(example: Example, app: SparkApp, done: Callable[[str], object], what: str) -> None:
    """Until both the example and the engine have printed ``what``."""
    wait_until(lambda: done(example.printed()), 180, f"the tutorial's {what}")
    wait_until(lambda: done(engine_printed(app)), 180, f"the engine's {what}")


def start_pair(settings: Settings, tmp_path: Path, engine: Engine, script: str, watch: Path,
               monkeypatch: pytest.MonkeyPatch) -> tuple[Example, SparkApp]:
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # the engine's pprint reaches its log as it prints
    example = Example(script, watch, settings, tmp_path).start()
    app = SparkApp(engine, settings, tmp_path / f"{engine}.log", keys="lines", batch_seconds=1,
                   timeout=SECONDS).start()
    return example, app


def test_dstream_tutorial_and_engine_print_the_same_batches(settings: Settings, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    watch = tmp_path / "tutorial-watch"
    watch.mkdir()
    example, app = start_pair(settings, tmp_path, "dstream", "tutorial_dstream.py", watch, monkeypatch)
    try:
        # Both print a block every second once they run (textFileStream skips older files).
        wait_printed(example, app, lambda text: any(map(TIME_HEADER.match, text.split("\n"))),
                     "first batch")
        expected = []
        for number, files in enumerate(ROUNDS, start=1):
            time.sleep(1.1 - time.time() % 1)  # just after a batch time: the next batch lists them all
            paths = write_round([watch, settings.watch("dstream")], files, tmp_path / f"round{number}")
            expected.append(reference_counts(paths, "lines"))
            wait_printed(example, app, partial(printed_batches, number), f"round {number}")
        example.wait_done()
        assert app.wait(120) == 0, app.tail()
    finally:
        example.kill()
        app.cleanup()

    tutorial = pprint_batches(example.log.read_text())
    assert [pairs for _, pairs in tutorial] == expected, tutorial
    assert pprint_batches(app.log.read_text()) == tutorial


def test_structured_tutorial_and_engine_print_the_same_totals(settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    watch = tmp_path / "tutorial-watch"
    watch.mkdir()
    # Unlike textFileStream, the file source also reads what is there when it starts.
    first = write_round([watch, settings.watch("structured")], ROUNDS[0], tmp_path / "round1")
    example, app = start_pair(settings, tmp_path, "structured", "tutorial_structured.py", watch,
                              monkeypatch)
    try:
        wait_printed(example, app, console_tables, "first batch")
        second = write_round([watch, settings.watch("structured")], ROUNDS[1], tmp_path / "round2")
        example.wait_done()
        assert app.wait(120) == 0, app.tail()
    finally:
        example.kill()
        app.cleanup()

    expected = reference_counts(first + second, "lines")
    tutorial = final_totals(example.log.read_text(), "value")
    assert tutorial == expected
    assert final_totals(app.log.read_text(), "key") == tutorial
