"""Staging: stable files from ``data/landing/`` become validated, atomic copies in each watch folder.

This is the only writer of ``data/watch/<engine>/``. One :func:`stage` call (a *wave*) handles every
stable file in landing (thousands are fine) and returns a :class:`StageReport`; the staging DAG's
task runs :func:`stage_until`, waves until a deadline, so one DAG run serves a sustained arrival
(:mod:`~wordstream.staging.loop`). Each wave:

1. **Stable only.** A regular file is taken when its name is not hidden/temporary/partial (``.x``,
   ``_x``, ``*.tmp``, ``*._COPYING_``, ``*.part``), its mtime is at least ``stable_seconds`` old, and
   two looks at least ``RECHECK_SECONDS`` apart found the same inode, size and mtime, the second one
   after it became stable (the re-check). The first look is the earliest on record: the sensor's
   (see :class:`LandingObservation`), the staging loop's while the file waited out its stability
   window, or else the wave's own scan, followed by a pause of ``RECHECK_SECONDS``. Symlinks,
   FIFOs, sockets and devices are never followed or opened: the entry itself is moved to quarantine.
   Directories are left alone (staging does not recurse) and named once per run in the progress
   output.
2. **Validated while hashed and copied**, in one streaming read of 1 MiB chunks: readable, non-empty,
   at most ``max_file_bytes``, UTF-8 (incremental decoder, so a character split across chunks is
   fine), no NUL byte, no line longer than ``max_line_bytes`` (an engine that gets one runs out of
   memory on every retry). The same read writes the copy to publish, under a hidden name in a watch
   folder: the bytes published are the bytes hashed. A file written to while it was read (its
   inode's ctime moved, which catches a producer who put size and mtime back) is left for a later
   wave. A reject goes to ``data/quarantine/<id>-<safe name>`` with ``<that name>.reason.txt``; its
   copy is removed.
3. **Deduplicated by sha256**, per engine and epoch: content that the current epoch of every engine
   already has (published or processed) is a ``duplicate`` and is only archived; content counted by
   an older epoch only is new to the current one. A delivery ``returned`` by a reset (a give-back or
   a replay of an archived original) is published to the engines it was returned to only.
4. **Published atomically**, a group of files at a time (up to ``GROUP_FILES`` files or
   ``GROUP_BYTES``): the group's copies made durable by one ``syncfs`` (an fsync of the copy for a
   group of one file, or where ``syncfs`` does not exist), each copy's mtime set to now (the DStream
   source ignores files older than its remember window), then its final name
   ``<sha256[:16]>-<safe name>.txt`` made in each engine's watch folder that needs it, by a hard link
   (one inode, one write and one flush for every engine; a folder that cannot link gets a copy of
   its own, renamed into place), and the watch folders fsync'ed before anything is recorded as
   published or archived. A duplicate's copy is emptied before it is ever written back to the disk,
   and reused. Linked files share one mtime and one content, so nothing may touch or move a
   published file in place: a new DStream epoch gives a shared file an inode of its own before it
   touches it, and a reset gives a shared file back to landing as a copy.
5. **Archived**: the original moves to ``data/archive/<YYYY-MM-DD UTC>/<id>-<safe name>``.

Crash safety: waves are serialised by ``data/state/staging.lock``, held for one wave (also taken by a
reset while it empties a watch folder, and by a new DStream epoch while it gives the waiting files a
new mtime). The ledger records each intent before the file operation it announces (the intents of a
group in one transaction, before any of its files is published or moved), and
``recover`` starts every wave by finishing what a dead one left: hidden temp files are removed (on the
first wave of a run), a ``publishing`` delivery whose final watch file exists is recorded as published
(never copied again), one without it is withdrawn, and a ``landed`` row whose original was already moved
gets its final status. A landing file with an unfinished row is resumed, not taken for a duplicate.
Final watch names appear only as links to (or renames of) a complete, durable copy, so no partial
file is ever visible under a name Spark reads, not even after a power cut.

Names: every name staging writes is built from the content hash and a sanitised copy of the landing
name (only ``[A-Za-z0-9._-]``, bounded, never hidden), so no landing name can escape ``data_dir`` or
collide. A missing landing folder is created (with the rest of the layout) when the data directory
exists; a missing data directory is an error, because it means a wrong ``WORDSTREAM_DATA_DIR``.

The modules follow the steps: :mod:`~wordstream.staging.names`, :mod:`~wordstream.staging.landing`
(step 1 and the sensor's hand-over), :mod:`~wordstream.staging.validation` (step 2),
:mod:`~wordstream.staging.publish` (the copies of step 4), :mod:`~wordstream.staging.run` (the
transaction of one wave: steps 3 to 5 and the recovery) and :mod:`~wordstream.staging.loop` (the
waves of one DAG run).
"""

from wordstream.staging.landing import (
    RECHECK_SECONDS,
    SENSOR_LOOKS,
    LandingObservation,
    Looks,
    observe_landing,
)
from wordstream.staging.loop import stage_until
from wordstream.staging.names import is_partial_name, is_temp_name, safe_name, watch_name_for
from wordstream.staging.run import STAGING_LOCK, StageReport, StagingError, stage

__all__ = [
    "RECHECK_SECONDS",
    "SENSOR_LOOKS",
    "STAGING_LOCK",
    "LandingObservation",
    "Looks",
    "StageReport",
    "StagingError",
    "is_partial_name",
    "is_temp_name",
    "observe_landing",
    "safe_name",
    "stage",
    "stage_until",
    "watch_name_for",
]
