"""Test support: an independent reference, a deterministic corpus and real spark-submit processes.

The reference is written from the key contract (``wordstream.engines.keys``: lines as Hadoop's reader
ends them, words split on ASCII whitespace) with plain loops, sharing no code with the package, so a
bug in ``wordstream.engines.keys`` cannot hide itself. Processes are found, started
and stopped with :mod:`wordstream_dev.processes`, as the tooling does (``group_members`` and
``processes_mentioning`` are re-exported from there).
"""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from wordstream import control
from wordstream_dev.processes import group_members as group_members
from wordstream_dev.processes import processes_mentioning as processes_mentioning
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


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """:func:`wordstream.control.wait_for`, failing the test (AssertionError) on timeout."""
    try:
        return control.wait_for(predicate, timeout, what, interval)
    except TimeoutError as error:
        raise AssertionError(str(error)) from None


class SparkApp(StreamApp):
    """One engine's application under a real spark-submit (:class:`wordstream_dev.spark_submit.StreamApp`).

    ``kill9`` is a drill's SIGKILL of the whole application (JVM, Python driver, Python workers);
    ``cleanup``, in a test's ``finally``, is the same and does nothing once all of it has exited.
    """

    kill9 = StreamApp.kill
    cleanup = StreamApp.kill
