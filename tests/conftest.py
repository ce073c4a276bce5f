"""Fixtures shared by every tier: an isolated data directory per test, and a leak check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_none_left

from wordstream.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A whole data directory of its own; no process that uses the test's folder may outlive it."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("WORDSTREAM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WORDSTREAM_DSTREAM_REMEMBER_SECONDS", "5")
    monkeypatch.setenv("WORDSTREAM_STABLE_SECONDS", "0")
    result = Settings.from_env()
    result.ensure_dirs()
    yield result
    wait_none_left(tmp_path)
