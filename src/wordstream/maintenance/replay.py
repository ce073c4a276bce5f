"""Replay: a reset feeds the archived originals of a time range to the engine's new epoch.

``--replay none|all|since=YYYY-MM-DD[THH:MM]`` (UTC; :func:`parse_replay`) chooses what the new epoch
of the reset engine starts with: nothing (the default), every original the archive still holds, or
those that landed at or after ``since``. The archive keeps the original of every staged or duplicate
landing file (``archive/<day>/<id>-<name>``) until cleanup removes its day folder, a retention
(``WORDSTREAM_RETENTION_DAYS``) after it; the ledger's file row names it (``moved_to``) and its
content (``sha256``). Only what both still hold can be replayed.

**Through the normal staging path, to that engine only** (:func:`feed_replay`, run by the reset after
the new epoch started, with the staging lock held): for each content in range (its oldest file row
whose original is still archived), the ledger first gets a ``returned`` delivery of it to the new
epoch of the engine, then the original lands as ``landing/replay-<id>-<name>``. Staging takes it
like any landing file (stability, validation, atomic publish, archive) and publishes it to the
engines it was returned to: this one. The other engine's deliveries are not read or written.

**A second name, not a copy.** The landing file is a hard link to the archived original (a copy
only where landing and the archive cannot share an inode): no bytes are written, so the feed holds
the staging lock for a ledger write and a link per file, and the replayed file archived again by
staging is one more name for the same bytes, not a second copy of the range. The archive is never
written in place; a ``replay-`` name in landing is the feed's own, for no producer to write into.

**Exactly once, resumable.** A content the new epoch already has (fed earlier, or landed meanwhile)
is skipped: dedupe is per epoch. Each step is safe to repeat: a reset killed during the replay is
finished by running it again (its journal keeps the choice), which links what was announced but
not linked yet (the announcement names the landing file's watch name) and skips the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from wordstream import Progress
from wordstream.durable import fsync_dir, link_or_copy
from wordstream.ledger import FileRow, Ledger
from wordstream.settings import Engine, Settings
from wordstream.staging import safe_name, watch_name_for

REPLAY_CHOICES = "none, all or since=YYYY-MM-DD[THH:MM] (UTC)"
# The DAG Param's pattern: the same choices, checked by the trigger form.
REPLAY_PATTERN = r"^(none|all|since=\d{4}-\d{2}-\d{2}(T\d{2}:\d{2})?)$"
PROGRESS_EVERY = 500
_SINCE = re.compile(r"since=(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}))?")


@dataclass(frozen=True)
class Replay:
    """What a reset feeds to the new epoch: nothing, everything archived, or what landed since."""

    kind: str  # none | all | since
    since: datetime | None = None

    def __str__(self) -> str:
        if self.since is None:
            return self.kind
        return f"since={self.since.strftime('%Y-%m-%dT%H:%M')}"

    @property
    def since_iso(self) -> str | None:
        """``since`` as the ledger writes times (ISO UTC, milliseconds); None without a bound."""
        return None if self.since is None else self.since.isoformat(timespec="milliseconds")


def parse_replay(text: str) -> Replay:
    """``none``, ``all`` or ``since=YYYY-MM-DD[THH:MM]`` (UTC); ValueError, one line, otherwise."""
    value = text.strip()
    if value in ("none", "all"):
        return Replay(value)
    match = _SINCE.fullmatch(value)
    if match is not None:
        try:
            since = datetime.strptime(f"{match[1]}T{match[2] or '00:00'}", "%Y-%m-%dT%H:%M")
        except ValueError:
            pass
        else:
            return Replay("since", since.replace(tzinfo=UTC))
    raise ValueError(f"--replay must be {REPLAY_CHOICES}, got {text!r}")


def select_replay(rows: Iterable[FileRow], replay: Replay) -> list[FileRow]:
    """The file rows ``replay`` feeds: per content, the oldest row in range (rows oldest first)."""
    if replay.kind == "none":
        return []
    since = replay.since_iso
    chosen: dict[str, FileRow] = {}
    for row in rows:
        if row.sha256 is not None and (since is None or row.landed_at >= since):
            chosen.setdefault(row.sha256, row)
    return list(chosen.values())


def replay_name(row: FileRow) -> str:
    """The landing name of the copy of an archived original: one per file row, so a repeat finds it."""
    return f"replay-{row.id}-{safe_name(row.name)}"


@dataclass
class ReplayReport:
    fed: int = 0  # copied to landing for the new epoch
    already: int = 0  # the new epoch has the content already (fed earlier, landed meanwhile)
    missing: int = 0  # the original is no longer in the archive (cleanup expired its day)

    def line(self, engine: str, epoch: str, replay: Replay) -> str:
        return (f"replay {replay} into {engine}'s epoch {epoch}: fed {self.fed} archived originals to "
                f"landing, {self.already} already in the epoch, {self.missing} no longer archived")


def feed_replay(settings: Settings, engine: Engine, epoch: str, replay: Replay,
                progress: Progress = print) -> ReplayReport:
    """Feed the archived originals ``replay`` selects to ``engine``'s ``epoch`` (module docstring).

    The caller holds the staging lock, so no staging run takes a copy before it is complete.
    """
    report = ReplayReport()
    ledger = Ledger(settings.ledger)
    with ledger.session():
        rows = select_replay(ledger.archived_files(), replay)
        if rows:
            progress(f"replay {replay}: {len(rows)} archived contents to feed to {engine}'s epoch {epoch}")
        for done, row in enumerate(rows, 1):
            assert row.sha256 is not None and row.moved_to is not None
            original = settings.data_dir / row.moved_to
            name = replay_name(row)
            watch_name = watch_name_for(row.sha256, name)
            dest = settings.landing / name
            existing = ledger.delivery_in(row.sha256, engine, epoch)
            if existing is None:
                if not original.is_file():
                    report.missing += 1
                    continue
                ledger.return_for_replay(row.id, row.sha256, engine, epoch, watch_name)
            elif existing.state != "returned" or existing.watch_name != watch_name or os.path.lexists(dest):
                report.already += 1  # another content row, given back, published, or copied already
                continue
            elif not original.is_file():
                report.missing += 1
                continue
            try:
                link_or_copy(original, dest)
            except FileExistsError:
                pass  # an earlier feed's name for the same original, not staged yet: it serves
            report.fed += 1
            if done % PROGRESS_EVERY == 0:
                progress(f"replay: {done}/{len(rows)} contents ({report.fed} fed)")
    if report.fed:
        fsync_dir(settings.landing)
    return report

