"""What a streaming task's log is made of, per batch: the console print, and everything else.

Airflow's SparkSubmitHook logs every line spark-submit prints as one record of the task log, for as
long as the stream runs. The console print of each batch (the tutorial's ``show()`` / ``pprint()``,
bounded by its row limit) is there by design; everything else must stay small per batch. The log-size
test and the benchmark both measure it here, from the records' text and their size as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONSOLE_RULE = "-" * 43
CONSOLE_HEADING = re.compile(r"(Batch: \d+|Time: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?)$")
# Rows of Dataset.show() (rules, cells, footer) and of DStream.pprint() (tuples, "...").
CONSOLE_ROW = re.compile(r"([+|].*|only showing top \d+ rows?|\(.*\)|\.\.\.)$")
HOOK_LOGGER = "airflow.task.hooks.airflow.providers.apache.spark.hooks.spark_submit.SparkSubmitHook"
BATCH_LINE = re.compile(r"\[wordstream (?P<engine>\w+)\] batch (?P<id>\d+): ")


@dataclass(frozen=True)
class Record:
    """One record of a task log: the line spark-submit printed, and its size in the log (bytes)."""

    text: str
    size: int


@dataclass
class Split:
    """A stretch of task log taken apart: console prints (rows counted) and every other record."""

    console_blocks: list[list[Record]] = field(default_factory=list)
    other: list[Record] = field(default_factory=list)

    @property
    def other_bytes(self) -> int:
        return sum(record.size for record in self.other)

    @property
    def console_bytes(self) -> int:
        return sum(record.size for block in self.console_blocks for record in block)

    def console_rows(self) -> list[int]:
        """Rows shown by each console print (table rows or tuples, without rules and footers)."""
        def shown(block: list[Record]) -> int:
            lines = [r.text for r in block[3:] if r.text.startswith(("|", "("))]
            return len(lines) - (1 if lines and lines[0].startswith("|") else 0)  # a table's header

        return [shown(block) for block in self.console_blocks]


def split_console(records: Sequence[Record]) -> Split:
    """Take each batch's console print (rule, heading, rule, rows, one blank line) out of ``records``."""
    split = Split()
    index = 0
    while index < len(records):
        head = [record.text for record in records[index:index + 3]]
        if len(head) == 3 and head[0] == head[2] == CONSOLE_RULE and CONSOLE_HEADING.match(head[1]):
            end = index + 3
            while end < len(records) and CONSOLE_ROW.match(records[end].text):
                end += 1
            if end < len(records) and records[end].text == "":
                end += 1
            split.console_blocks.append(list(records[index:end]))
            index = end
        else:
            split.other.append(records[index])
            index += 1
    return split


def steady_state(records: Sequence[Record], skip_batches: int = 2) -> tuple[list[Record], int]:
    """The records after the ``skip_batches``-th batch line up to the last one, and how many batch
    lines that stretch holds: start-up and shutdown left out, every batch in it whole."""
    marks = [i for i, record in enumerate(records) if BATCH_LINE.search(record.text)]
    if len(marks) <= skip_batches:
        return [], 0
    start, end = marks[skip_batches - 1] + 1 if skip_batches else 0, marks[-1] + 1
    return list(records[start:end]), len(marks) - skip_batches


def per_batch(records: Sequence[Record], skip_batches: int = 2) -> tuple[float, Split, int]:
    """Bytes per batch of everything but the console print, in the steady state; and what it split."""
    window, batches = steady_state(records, skip_batches)
    split = split_console(window)
    return (split.other_bytes / batches if batches else float("nan")), split, batches


def json_records(path: Path) -> list[Record]:
    """The records of a task log file as Airflow writes it (one JSON object per line)."""
    records = []
    with path.open("rb") as log:
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                records.append(Record(line.decode(errors="replace").rstrip("\n"), len(line)))
                continue
            records.append(Record(str(event.get("event", "")), len(line)))
    return records


def rendered_records(lines: Iterable[str]) -> list[Record]:
    """The hook's records in a console rendering of the task log (``airflow dags test`` prints
    ``<time> [<level>] <text> [<logger>] loc=...`` per record), each with its size as printed."""
    marker = f" [{HOOK_LOGGER}] "
    records = []
    for line in lines:
        if marker in line:
            head = line.rsplit(marker, 1)[0]
            text = head.split("] ", 1)[1] if "] " in head else head
            records.append(Record(text.rstrip(), len(line.encode()) + 1))
    return records
