"""What a "word" is: the two key modes (docs/architecture.md, "Keys"), as pure transforms.

* ``words`` — each line split on runs of ASCII whitespace ``[ \\t\\n\\v\\f\\r]``; empty tokens dropped;
  case and punctuation kept.
* ``lines`` — the tutorial's semantics: each line, as Spark's text source yields it, is one key;
  empty lines count too.

The DataFrame form serves the structured engine, the per-line form the DStream engine; both are
tested against the same independent reference.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from wordstream.settings import KEY_MODES, KeyMode

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Java regex for Spark's split(); Python's \s would also split on unicode spaces.
WHITESPACE_JAVA = "[ \\t\\n\\u000B\\f\\r]+"
_WHITESPACE = re.compile("[ \t\n\x0b\f\r]+")


def check_key_mode(mode: str) -> KeyMode:
    if mode not in KEY_MODES:
        raise ValueError(f"unknown key mode {mode!r}: choose one of {', '.join(KEY_MODES)}")
    return mode


def line_keys(line: str, mode: KeyMode) -> list[str]:
    """The keys of one line (DStream ``flatMap``)."""
    if mode == "lines":
        return [line]
    return [token for token in _WHITESPACE.split(line) if token]


def keys_frame(lines: DataFrame, mode: KeyMode) -> DataFrame:
    """Lines (column ``value``) in, one row per key (column ``key``) out."""
    from pyspark.sql import functions as F

    if mode == "lines":
        return lines.select(F.col("value").alias("key"))
    return (
        lines
        .select(F.explode(F.split(F.col("value"), WHITESPACE_JAVA)).alias("key"))
        .where(F.col("key") != "")
    )


def count_keys(lines: DataFrame, mode: KeyMode) -> DataFrame:
    """The tutorial's ``groupBy(key).count()`` over the keys of ``lines``."""
    return keys_frame(lines, mode).groupBy("key").count()
