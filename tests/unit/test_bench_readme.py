"""README's benchmark table is what the saved results generate, not a copy that drifts from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import readme
from bench.common import Result
from bench.report import table


def test_readme_table_is_the_one_the_saved_results_generate() -> None:
    """After `make bench` (or `python -m bench.readme`) README shows exactly bench/results/latest.json."""
    assert readme.current(readme.README.read_text()) == readme.block(readme.load())


def test_latest_md_shows_the_same_rows() -> None:
    rows = [Result.from_dict(row) for row in readme.load()["results"]]
    assert table(rows) in (readme.LATEST.with_name("latest.md")).read_text()


def test_rewriting_replaces_the_block_only_and_twice_is_once(tmp_path: Path) -> None:
    text = f"# intro\n\n{readme.BEGIN}\nold figures\n{readme.END}\n\nwhat limits them\n"
    new = readme.rewritten(text, "new figures\n")
    assert new == f"# intro\n\n{readme.BEGIN}\nnew figures\n{readme.END}\n\nwhat limits them\n"
    assert readme.rewritten(new, "new figures\n") == new
    assert readme.current(new) == "new figures\n"


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(readme.ReadmeError, match="no generated block"):
        readme.rewritten("# no markers here\n", "figures\n")
    with pytest.raises(readme.ReadmeError, match="no saved results"):
        readme.load(Path("/nonexistent/latest.json"))
