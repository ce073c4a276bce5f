"""Test support: an independent reference, a deterministic corpus and real spark-submit processes.

The reference is written from the key contract (``wordstream.engines.keys``: lines as Hadoop's reader
ends them, words split on ASCII whitespace) with plain loops, sharing no code with the package, so a
bug in ``wordstream.engines.keys`` cannot hide itself. Processes are found, started
and stopped with :mod:`wordstream_dev.processes`, as the tooling does (``group_members``,
``processes_mentioning`` and ``processes_using`` are re-exported from there).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from wordstream import control
from wordstream_dev.processes import group_members as group_members
from wordstream_dev.processes import processes_mentioning as processes_mentioning
from wordstream_dev.processes import processes_using as processes_using
from wordstream_dev.spark_submit import StreamApp

ASCII_WHITESPACE = " \t\n\x0b\x0c\r"


def reference_lines(text: str) -> list[str]:
    """Lines as Hadoop's line reader yields them: ``\\n``, ``\\r\\n`` or ``\\r`` end a line."""
    lines: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "\r\n":
            lines.append("".join(current))
            current = []
            if char == "\r" and i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        else:
            current.append(char)
        i += 1
    if current:
        lines.append("".join(current))
    return lines


def reference_tokens(line: str) -> list[str]:
    tokens: list[str] = []
    current: list[str] = []
    for char in line:
        if char in ASCII_WHITESPACE:
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        tokens.append("".join(current))
    return tokens


def reference_counts(paths: Iterable[Path], mode: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for path in paths:
        for line in reference_lines(Path(path).read_bytes().decode("utf-8")):
            counts.update([line] if mode == "lines" else reference_tokens(line))
    return dict(counts)


VOCABULARY = [
    "the", "The", "spark", "Spark", "stream", "word", "count", "data", "file", "end.", "(x)", "don't",
    "naïve", "Straße", "日本語", "emoji🙂", "a\u00a0b", "--", "x", "über", "ÉCOLE", "éc", "42", "3.14",
    "\"quoted\"", "comma,separated", "semi;colon",
]
SEPARATORS = [" ", " ", " ", "  ", "\t", " \t ", "\x0b", "\x0c"]
LINE_ENDS = ["\n", "\n", "\n", "\r\n", "\r"]


def corpus_text(rng: random.Random, lines: int) -> str:
    """Lines with the edge cases of the key contract: unicode, tabs, CR/CRLF, blanks, long lines."""
    out: list[str] = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.05:
            line = ""
        elif kind < 0.08:
            line = rng.choice(SEPARATORS) * 3
        elif kind < 0.10:
            line = " ".join(rng.choice(VOCABULARY) for _ in range(2000))
        else:
            words = [rng.choice(VOCABULARY) for _ in range(rng.randint(1, 12))]
            line = "".join(w + rng.choice(SEPARATORS) for w in words).rstrip(" ")
            if rng.random() < 0.1:
                line = " " + line
        out.append(line + rng.choice(LINE_ENDS))
    text = "".join(out)
    return text if rng.random() < 0.7 else text.rstrip("\r\n")


def write_corpus(folder: Path, files: int, seed: int, lines: int = 60, prefix: str = "part") -> list[Path]:
    """Deterministic text files (not yet visible to any stream: callers publish them)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(files):
        path = folder / f"{prefix}-{seed}-{index:04d}.txt"
        path.write_text(corpus_text(rng, lines), encoding="utf-8", newline="")
        paths.append(path)
    return paths


def land(landing: Path, paths: Iterable[Path]) -> None:
    """Drop whole files into landing as producers do: a hidden temporary name, then a rename."""
    for path in paths:
        temp = landing / f".{path.name}.part"
        shutil.copyfile(path, temp)
        os.replace(temp, landing / path.name)


def write_structured_record(checkpoint: Path, batches: list[list[Path]], committed: int | None) -> None:
    """A Structured Streaming checkpoint's record as Spark writes it (the format is pinned against real
    Spark by tests/spark/test_spark_probes.py): batch ``i`` read ``batches[i]`` (file source log id
    ``i``); batches up to ``committed`` are in the commit log, later ones only planned."""
    for folder in ("sources/0", "offsets", "commits"):
        (checkpoint / folder).mkdir(parents=True, exist_ok=True)
    for batch_id, files in enumerate(batches):
        entries = [json.dumps({"path": Path(path).absolute().as_uri(), "timestamp": 0, "batchId": batch_id})
                   for path in files]
        (checkpoint / "sources/0" / str(batch_id)).write_text("\n".join(["v1", *entries]))
        (checkpoint / "offsets" / str(batch_id)).write_text(
            f'v1\n{{"batchWatermarkMs":0,"batchTimestampMs":0,"conf":{{}}}}\n{{"logOffset":{batch_id}}}')
        if committed is not None and batch_id <= committed:
            (checkpoint / "commits" / str(batch_id)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """:func:`wordstream.control.wait_for`, failing the test (AssertionError) on timeout."""
    try:
        return control.wait_for(predicate, timeout, what, interval)
    except TimeoutError as error:
        raise AssertionError(str(error)) from None


def wait_none_left(*directories: Path, timeout: float = 30) -> None:
    """Until no process but this one names, works in or has its AIRFLOW_HOME in ``directories``.

    A process that renamed itself (Airflow's task processes do) is caught by its working directory
    or AIRFLOW_HOME when its command line no longer names anything of the test's.
    """
    wait_until(lambda: not any(processes_using(directory) for directory in directories), timeout,
               f"every process using {', '.join(map(str, directories))} to exit")


def assert_totals_stay(read: Callable[[], dict[str, int]], expected: Mapping[str, int],
                       feed: Callable[[list[Path]], object], folder: Path, what: str,
                       timeout: float = 240) -> Path:
    """Wait until ``read()`` equals ``expected``, then until the stream has committed one more batch,
    and check that batch added exactly its own input: a late over-count fails here.

    The later batch is a file of one word of its own, delivered by ``feed`` as the test delivers its
    files (``read`` may raise to say the stream died). Returns that file: later references count it.
    """
    wait_until(lambda: read() == expected, timeout, f"{what} to equal the reference")
    folder.mkdir(parents=True, exist_ok=True)
    word = f"sentinel{uuid.uuid4().hex[:12]}"
    sentinel = folder / f"{word}.txt"
    sentinel.write_text(word + "\n", encoding="utf-8")
    feed([sentinel])
    wait_until(lambda: word in read(), timeout, f"{what} to count one more batch")
    got, want = read(), {**expected, word: 1}
    diff = {key: (got.get(key), want.get(key)) for key in got.keys() | want.keys()
            if got.get(key) != want.get(key)}
    assert not diff, f"{what}: {len(diff)} keys differ after one more batch (got, expected): " \
                     f"{sorted(diff.items())[:5]}"
    return sentinel


class SparkApp(StreamApp):
    """One engine's application under a real spark-submit (:class:`wordstream_dev.spark_submit.StreamApp`).

    ``kill9`` is a drill's SIGKILL of the whole application (JVM, Python driver, Python workers);
    ``cleanup``, in a test's ``finally``, is the same and does nothing once all of it has exited.
    """

    kill9 = StreamApp.kill
    cleanup = StreamApp.kill
