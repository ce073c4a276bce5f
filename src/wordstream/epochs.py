"""The epochs of an engine as a user sees them: the current one and the rotated ones, and their totals.

An epoch is named ``<engine>-<UTC start>`` (the ledger's ``epochs`` table, see
:mod:`wordstream.ledger`); a reset moves it to ``rotated/<name>/`` (checkpoint, output, status), where
it stays until cleanup expires it. Rotated folders from before epochs were recorded in the ledger
are epochs too (named by their reset time, nothing known of their start or files).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wordstream import results
from wordstream.ledger import Ledger
from wordstream.maintenance.folders import sorted_entries
from wordstream.maintenance.reset import epoch_engine
from wordstream.settings import Engine, Settings


@dataclass(frozen=True)
class EpochInfo:
    name: str
    current: bool
    started: str | None  # None: not recorded (a rotated epoch from before the ledger knew epochs)
    ended: str | None
    files: int | None  # files it processed (the ledger's deliveries); None: not recorded
    keys: int
    occurrences: int
    output: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def epoch_outputs(settings: Settings, engine: Engine) -> dict[str, Path]:
    """Every epoch of ``engine`` by name, with the output folder its totals are read from."""
    outputs: dict[str, Path] = {}
    for entry in sorted_entries(settings.rotated):
        if epoch_engine(entry.name) == engine and entry.is_dir(follow_symlinks=False):
            outputs[entry.name] = Path(entry.path) / "output"
    if settings.ledger.exists():
        outputs[Ledger(settings.ledger).current_epoch(engine)] = settings.output(engine)
    return outputs


def list_epochs(settings: Settings, engine: Engine) -> list[EpochInfo]:
    """The rotated epochs of ``engine``, oldest first, then the current one (with their totals)."""
    recorded = {epoch.name: epoch for epoch in Ledger(settings.ledger).epochs(engine)} \
        if settings.ledger.exists() else {}
    listed = []
    for name, output in epoch_outputs(settings, engine).items():
        totals = results.read_totals(output, results.SEMANTICS[engine]) if output.is_dir() else {}
        known = recorded.get(name)
        ended = known.ended_at if known else _mtime(output.parent)
        listed.append(EpochInfo(name=name, current=known is not None and known.ended_at is None,
                                started=known.started_at if known else None,
                                ended=ended, files=known.files if known else None, keys=len(totals),
                                occurrences=sum(totals.values()), output=str(output)))
    return sorted(listed, key=lambda epoch: (epoch.current, epoch.started or epoch.ended or "", epoch.name))


def _mtime(path: Path) -> str | None:
    """When a rotated folder was rotated (the reset sets its mtime)."""
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, UTC).isoformat(timespec="milliseconds")
    except FileNotFoundError:
        return None
