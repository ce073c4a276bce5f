"""The key transforms against the independent reference, on inline edge rows."""

from __future__ import annotations

from collections import Counter

import pytest
from support import reference_counts, reference_lines, reference_tokens

from wordstream import results
from wordstream.engines.keys import count_keys, keys_frame, line_keys

pytestmark = pytest.mark.spark

EDGE_LINES = [
    "",
    "   ",
    "\t\t",
    "plain words here",
    "  leading and trailing  ",
    "tabs\tbetween\twords",
    "vertical\x0btab and\x0cform feed",
    "naïve Straße 日本語 emoji🙂",
    "non\u00a0breaking space stays one word",
    "punctuation, kept! (yes) don't \"quote\"",
    "Case case CASE",
    "x " * 5000,
]


@pytest.mark.parametrize("mode", ["words", "lines"])
def test_keys_frame_matches_reference(spark, mode: str) -> None:
    frame = spark.createDataFrame([(line,) for line in EDGE_LINES], "value string")
    got = Counter(row.key for row in keys_frame(frame, mode).collect())
    expected: Counter[str] = Counter()
    for line in EDGE_LINES:
        expected.update([line] if mode == "lines" else reference_tokens(line))
    assert got == expected


@pytest.mark.parametrize("mode", ["words", "lines"])
def test_line_keys_matches_reference(mode: str) -> None:
    for line in EDGE_LINES:
        assert line_keys(line, mode) == ([line] if mode == "lines" else reference_tokens(line))


@pytest.mark.parametrize("mode", ["words", "lines"])
def test_text_source_line_endings(spark, tmp_path, mode: str) -> None:
    """CR, CRLF and LF endings, blank lines and a missing final newline, read by Spark's text source."""
    path = tmp_path / "endings.txt"
    path.write_bytes(b"a b\r\nc\rd e\n\n\r\nlast line")
    assert reference_lines(path.read_bytes().decode()) == ["a b", "c", "d e", "", "", "last line"]
    lines = spark.read.text(str(path))
    got = {row.key: row["count"] for row in count_keys(lines, mode).collect()}
    assert got == reference_counts([path], mode)


@pytest.mark.parametrize("truncate", [20, 0])
@pytest.mark.parametrize("shown", [3, 20])
def test_console_print_draws_batches_as_spark_show_does(spark, capsys, shown: int, truncate: int) -> None:
    """The structured sink prints each batch from its Parquet rows: it must look like Spark's show(),
    by default as the console sink calls it (cells cut to 20 characters)."""
    rows = [("the", 12), ("naïve", 3), ("日本語", 2), ("emoji🙂", 1), ("x", 1000000), ("", 7),
            ("\uff46\uff55\uff4c\uff4c", 4), ("a" * 30, 2), ("tab\tand\x0bvt\x07bel\x0cff\x08bs", 5),
            ("back\\slash", 6), ("🙂" * 9 + "abc", 8), ("日本語" * 7, 9), ("é" * 21, 10)]
    spark.createDataFrame(rows, "key string, count long").show(shown, truncate=truncate)
    drawn = results.show_string(("key", "count"), rows[:shown], len(rows), truncate=truncate)
    assert drawn + "\n" == capsys.readouterr().out
