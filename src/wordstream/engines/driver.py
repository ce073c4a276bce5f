"""The life of a streaming driver, shared by both engines.

The engine and checkpoint locks, the checks before a start (no unfinished reset, no pending stop
request), the ledger reconciled with the engine's own commit record, the stop marker / SIGTERM loop,
per-batch progress lines and status, and the watchdogs that keep a driver from outliving whoever
launched it. The engines differ only in how they build and stop their Spark stream
(:mod:`wordstream.engines`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from wordstream import control, results
from wordstream.engines import commits, epoch, spark_probes
from wordstream.engines.app_args import AppArgs
from wordstream.ledger import Ledger
from wordstream.settings import Engine, Settings
from wordstream.spark_env import submit_conf

STOP_WITH_LAUNCHER_ENV = "WORDSTREAM_STOP_WITH_LAUNCHER"
TOP_WORDS = 20
# The status keeps this many recent batches, so the UI can chart rates without a history store.
RECENT_BATCHES = 30


def spark_conf_defaults(conf: Any) -> Any:
    """Fill in wordstream's Spark settings that spark-submit did not set (never the master).

    For an application started by hand without them. The driver's JVM options cannot take effect
    any more at this point (the executors' still do), so the class archive is not looked for.
    """
    for key, value in submit_conf(Settings.from_env(), shared_classes=False).items():
        if not conf.contains(key):
            conf.set(key, value)
    return conf


def spark_conf_for(conf: Any, args: AppArgs) -> Any:
    """:func:`spark_conf_defaults`, then the run's knobs (``--shuffle-partitions``, ``--state-store``,
    ``--remember-seconds``), which win over spark-submit's ``--conf`` of the env defaults."""
    spark_conf_defaults(conf)
    for key, value in args.spark_conf().items():
        conf.set(key, value)
    return conf


def _ppid_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# (label, the ``startup`` key that ends the phase), in order: what the start-up line reports.
STARTUP_PHASES = (
    ("spark-submit and JVM", "python"), ("driver start", "driver"), ("session", "session"),
    ("query", "query"), ("first batch", "first_batch"),
)


def launch_times() -> dict[str, float]:
    """When spark-submit started (the driver JVM, this process's parent, is spark-submit exec'd) and
    when this Python process started: the first two start-up timestamps."""
    return {"spark_submit": round(psutil.Process(os.getppid()).create_time(), 3),
            "python": round(psutil.Process().create_time(), 3)}


def startup_summary(startup: Mapping[str, Any]) -> str:
    """``6.4 s from spark-submit to the first batch: spark-submit and JVM 1.1 s, driver start 0.3 s, ...``"""
    parts = []
    previous = startup["spark_submit"]
    for label, key in STARTUP_PHASES:
        if key in startup:
            parts.append(f"{label} {startup[key] - previous:.1f} s")
            previous = startup[key]
    total = previous - startup["spark_submit"]
    return f"{total:.1f} s from spark-submit to the first batch: " + ", ".join(parts)


REFUSED = 3  # exit status of a driver that refuses to start (busy lock, unfinished reset)


class Driver:
    """Context manager around one streaming driver's life.

    ``with Driver(engine, args) as driver:`` holds the locks, reconciles the ledger, writes
    ``starting``; on exit writes ``stopped`` or ``failed``. ``batch_done`` is called after each batch.
    A start is refused (exit 3, one line) while another driver holds the engine's lock or the
    checkpoint's, while a reset of the engine is unfinished, or when the run asks for a key mode or
    a knob its checkpoint cannot change (:mod:`wordstream.engines.epoch`; the checkpoint is left as
    it was); a stop requested before the start is honoured at once (exit 0, status ``stopped``).

    The status keeps when each start-up phase ended (``startup``: epoch seconds of ``spark_submit``,
    ``python``, ``driver``, ``session``, ``query``, ``first_batch``), and the driver prints them as one
    line after its first batch: where a slow start went.
    """

    def __init__(self, engine: Engine, args: AppArgs) -> None:
        self.engine = engine
        self.args = args
        self.stop = control.StopWatcher(args.state_dir, engine)
        self.ledger = Ledger(args.state_dir / "ledger.sqlite")
        self._locks = ExitStack()
        self._top = results.TopKeys(args.output, results.SEMANTICS[engine], TOP_WORDS)
        self._settings = Settings.from_env()
        self._since_compaction = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_BATCHES)
        self._closing = threading.Event()
        self._startup: dict[str, Any] = launch_times()

    def __enter__(self) -> Driver:
        try:
            self._locks.enter_context(control.hold_lock(self.args.state_dir, self.engine))
            self._refuse_unfinished_reset()
            self._refuse_what_the_checkpoint_cannot_change()
            self._locks.enter_context(control.hold_checkpoint_lock(self.args.checkpoint))
        except control.EngineBusyError as error:
            self._refuse(str(error))
        epoch.record(self.args)
        marker = control.stop_path(self.args.state_dir, self.engine)
        if marker.exists():  # e.g. a reset's request, meant for the driver this one would replace
            reason = (f"a stop was requested before this driver started ({marker}; its writer "
                      "removes it when done, or remove it by hand to start)")
            control.write_status(self.args.state_dir, self.engine, state="stopped", reason=reason,
                                 stopped_at=control.utc_now())
            self.log(f"stopped: {reason}")
            self._locks.close()
            raise SystemExit(0)
        self.stop.install_signal_handlers()
        self._start_watchdogs()
        self._startup["driver"] = round(time.time(), 3)
        control.write_status(
            self.args.state_dir, self.engine, state="starting", pid=os.getpid(),
            started_at=control.utc_now(), keys=self.args.keys, knobs=self.args.knobs(), batch_id=None,
            reason=None, recent_batches=[],
            watch=str(self.args.watch), output=str(self.args.output), startup=self._startup,
        )
        knobs = " ".join(f"{name}={value}" for name, value in self.args.knobs().items())
        self.log(f"starting: watch={self.args.watch} keys={self.args.keys} {knobs} "
                 f"timeout={self.args.timeout}")
        self.reconcile()
        return self

    def reconcile(self) -> None:
        """Bring the ledger in line with what the engine committed (a driver may have died between
        a commit and its marks). An unreadable record is Spark's to report: the start goes on."""
        try:
            marked, reopened = commits.reconcile(self.ledger, self.engine, self.args.checkpoint,
                                                 self.args.output, self.args.watch)
        except spark_probes.CheckpointError as error:
            self.log(f"the ledger was not reconciled: {error}")
            return
        if marked or reopened:
            self.log(f"ledger reconciled with the engine's commits: {marked} deliveries marked "
                     f"processed, {reopened} back to published")

    def _refuse(self, why: str) -> None:
        print(f"{self.engine}: refusing to start: {why}", file=sys.stderr, flush=True)
        self._locks.close()
        raise SystemExit(REFUSED) from None

    def _refuse_unfinished_reset(self) -> None:
        journal = control.reset_journal_path(self.args.state_dir, self.engine)
        if journal.exists():
            self._refuse(f"a reset of {self.engine} did not finish ({journal}); run "
                         f"`wordstream reset --engine {self.engine}` to finish it")

    def _refuse_what_the_checkpoint_cannot_change(self) -> None:
        try:
            epoch.check(self.args)
        except epoch.CheckpointMismatch as error:
            self._refuse(str(error))
        except spark_probes.CheckpointError as error:  # Spark reports an unreadable checkpoint itself
            self.log(f"the checkpoint's settings were not compared: {error}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._closing.set()
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            fields: dict[str, Any] = {"state": "stopped", "reason": self.stop.reason or "finished"}
        else:
            fields = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
        control.write_status(self.args.state_dir, self.engine, stopped_at=control.utc_now(), **fields)
        self.log(f"{fields['state']}: {fields['reason']}")
        self._locks.close()

    # -- progress ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        print(f"[wordstream {self.engine}] {message}", file=sys.stderr, flush=True)

    def session_ready(self) -> None:
        """The Spark session (or context) exists."""
        self._startup["session"] = round(time.time(), 3)

    def running(self) -> None:
        """The stream has started."""
        self._startup["query"] = round(time.time(), 3)
        control.write_status(self.args.state_dir, self.engine, state="running", startup=self._startup)

    def batch_done(self, batch_id: int | str, rows_in: int, seconds: float, files: list[str],
                   rows_out: int, input_rate: float | None = None,
                   durations_ms: Mapping[str, int] | None = None) -> None:
        """One progress line, the ledger's processed marks and a fresh status, after each batch.

        ``durations_ms``: where the batch's time went, as Spark reports it; kept for the first batch
        of the run (``startup.first_batch_ms``).
        """
        if "first_batch" not in self._startup:
            self._startup["first_batch"] = round(time.time(), 3)
            if durations_ms:
                self._startup["first_batch_ms"] = dict(durations_ms)
            self.log(startup_summary(self._startup))

        ledger = self.ledger
        if files:  # the fast path; the reconciliation with the commit record is what counts
            ledger.mark_processed(self.engine, str(batch_id), [Path(f).name for f in files])
        processed_rate = rows_in / seconds if seconds > 0 else 0.0
        self.log(f"batch {batch_id}: {rows_in} rows in, {len(files)} files, {rows_out} keys out, "
                 f"{processed_rate:,.0f} rows/s, {seconds * 1000:.0f} ms")
        batch = {
            "batch_id": batch_id, "time": control.utc_now(), "input_rows": rows_in,
            "input_rows_per_second": round(input_rate if input_rate is not None else processed_rate, 1),
            "processed_rows_per_second": round(processed_rate, 1),
            "batch_duration_ms": round(seconds * 1000),
        }
        self._recent.append(batch)
        control.write_status(
            self.args.state_dir, self.engine, state="running", batch_id=batch_id,
            batch_time=batch["time"], input_rows=rows_in, batch_duration_ms=batch["batch_duration_ms"],
            input_rows_per_second=batch["input_rows_per_second"],
            processed_rows_per_second=batch["processed_rows_per_second"],
            files_in_batch=len(files), files_processed=ledger.processed_count(self.engine),
            top_words=self._top.top(), recent_batches=list(self._recent), startup=self._startup,
        )
        self._since_compaction += 1
        if self._settings.compact_batches and self._since_compaction >= self._settings.compact_batches:
            self._since_compaction = 0
            self.compact()

    def compact(self) -> None:
        """Fold the output's final batches into its snapshot, so reading totals stays O(keys).

        A failure costs nothing but the speed of reading: it is logged, and the next one retries.
        """
        upto = results.foldable_upto(self.engine, self.args.checkpoint,
                                     self.args.remember_seconds, time.time())
        if upto is None:
            return
        try:
            done = results.compact(self.args.output, results.SEMANTICS[self.engine], upto)
        except (OSError, ValueError) as error:
            self.log(f"compaction failed, the next one retries: {type(error).__name__}: {error}")
            return
        if done is not None and done.snapshot is not None and done.folded:
            self.log(f"compacted {done.folded} batch folders into {done.snapshot.name} ({done.keys} keys)")

    def batch_written(self, batch: results.WrittenBatch) -> None:
        """A sink persisted a batch: keep the top words from its rows (status, UI)."""
        self._top.add(batch)

    # -- the stop loop ----------------------------------------------------------------------
    def run_until_stopped(self, await_termination: Callable[[int], bool]) -> str:
        """Poll every second until the stream ends, the timeout passes or a stop is requested.

        ``await_termination(seconds)`` returns True when the stream has terminated by itself.
        Returns why the loop ended.
        """
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        while True:
            if await_termination(1):
                return "terminated"
            if self.stop.should_stop():
                return self.stop.reason
            if deadline is not None and time.monotonic() >= deadline:
                self.stop.reason = f"timeout after {self.args.timeout:g} s"
                return self.stop.reason

    def stopping(self) -> None:
        control.write_status(self.args.state_dir, self.engine, state="stopping",
                             reason=self.stop.reason)
        self.log(f"stopping gracefully ({self.stop.reason})")

    # -- watchdogs --------------------------------------------------------------------------
    def _start_watchdogs(self) -> None:
        """Never outlive the launcher.

        The Python driver is a child of the spark-submit JVM. If that JVM dies (the Spark provider's
        on_kill SIGKILLs it) the driver exits at once. When launched by Airflow
        (``WORDSTREAM_STOP_WITH_LAUNCHER=1``) the driver also stops gracefully if the process that
        ran spark-submit (the task) disappears, so a killed task leaves no Spark behind.
        """
        jvm = os.getppid()
        launcher = _ppid_of(jvm) if os.environ.get(STOP_WITH_LAUNCHER_ENV) == "1" else None

        def watch() -> None:
            while not self._closing.is_set():
                if os.getppid() != jvm:
                    self.log("spark-submit JVM is gone; exiting")
                    control.write_status(self.args.state_dir, self.engine, state="failed",
                                         reason="spark-submit JVM exited under the driver")
                    os._exit(1)
                if launcher is not None and _ppid_of(jvm) != launcher and not self.stop.reason:
                    self.stop.request("launcher exited")
                time.sleep(0.5)

        threading.Thread(target=watch, name="wordstream-watchdog", daemon=True).start()
