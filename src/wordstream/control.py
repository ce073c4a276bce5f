"""The stop/status protocol of a streaming engine, in one place (docs/architecture.md, "Stop, status
and locks").

Files per engine in the state directory:

* ``<engine>.lock`` — held with ``flock`` by the driver for its whole life. The kernel drops the lock
  when the process dies, however it dies, so "is the lock held" is the truth about "is it running".
  The driver also holds ``wordstream.lock`` inside its checkpoint, so two drivers with different
  state directories cannot share a checkpoint either.
* ``<engine>.stop`` — the stop marker. The driver polls it (and SIGTERM) at least every second and
  stops between batches; a driver that finds it at start stops at once. Only the writer of a marker
  removes it, once the driver it meant is gone (:func:`stop_engine`), so a stop request is never
  swallowed by a driver that happens to be starting or exiting.
* ``<engine>.status.json`` — replaced atomically (write + fsync + rename) after every batch.
* ``<engine>.reset.json`` — the journal of a reset in progress (:mod:`wordstream.maintenance.reset`);
  no driver starts while it exists.

Used by the Spark apps, the DAGs, the CLI and the UI; nothing else reimplements it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from wordstream.durable import write_json_atomically

LIVE_STATES = ("starting", "running", "stopping")
T = TypeVar("T")


class EngineBusyError(RuntimeError):
    """Another driver of the same engine holds the lock."""


def lock_path(state_dir: Path, engine: str) -> Path:
    return Path(state_dir) / f"{engine}.lock"


def stop_path(state_dir: Path, engine: str) -> Path:
    return Path(state_dir) / f"{engine}.stop"


def status_path(state_dir: Path, engine: str) -> Path:
    return Path(state_dir) / f"{engine}.status.json"


def reset_journal_path(state_dir: Path, engine: str) -> Path:
    return Path(state_dir) / f"{engine}.reset.json"


CHECKPOINT_LOCK = "wordstream.lock"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextmanager
def hold_lock(state_dir: Path, engine: str, wait_seconds: float = 2.0) -> Iterator[None]:
    """Hold the engine lock for the duration of the block, or raise EngineBusyError.

    Waits briefly because :func:`is_running` probes the lock with a shared flock for an instant.
    """
    with _hold(lock_path(state_dir, engine), f"{engine} is already running", wait_seconds):
        yield


@contextmanager
def hold_checkpoint_lock(checkpoint: Path, wait_seconds: float = 2.0) -> Iterator[None]:
    """Hold the lock inside ``checkpoint`` (created if missing), or raise EngineBusyError."""
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    with _hold(Path(checkpoint) / CHECKPOINT_LOCK, f"checkpoint {checkpoint} is in use", wait_seconds):
        yield


@contextmanager
def _hold(path: Path, busy: str, wait_seconds: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    raise EngineBusyError(
                        f"{busy} (lock {path} held" + (f" by pid {holder})" if holder else ")")
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_running(state_dir: Path, engine: str) -> bool:
    """True while some process holds the engine lock."""
    path = lock_path(state_dir, engine)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        return False
    finally:
        os.close(fd)


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_until_stopped(state_dir: Path, engine: str, timeout: float) -> bool:
    """Wait until the lock is released; True if it was within ``timeout`` seconds."""
    try:
        wait_for(lambda: not is_running(state_dir, engine), timeout, f"{engine} to stop", 0.2)
    except TimeoutError:
        return False
    return True


def request_stop(state_dir: Path, engine: str) -> str:
    """Ask a running driver to stop gracefully after its current batch; returns the request's token.

    The writer of a request removes it (:func:`clear_stop` with the token) once the driver it meant
    is gone; the driver never does, so a driver that is just starting honours it too.
    """
    path = stop_path(state_dir, engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{utc_now()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
    path.write_text(token + "\n")
    return token


def clear_stop(state_dir: Path, engine: str, token: str | None = None) -> None:
    """Withdraw a stop request: the one with ``token`` (not a later writer's), or any if None."""
    path = stop_path(state_dir, engine)
    if token is not None:
        try:
            if path.read_text().strip() != token:
                return
        except FileNotFoundError:
            return
    path.unlink(missing_ok=True)


def stop_engine(state_dir: Path, engine: str, timeout: float) -> bool:
    """Stop a running driver gracefully; True if it is gone within ``timeout``.

    The request is withdrawn either way: the driver it meant is gone, or the caller gives up on a
    graceful stop (and kills it).
    """
    token = request_stop(state_dir, engine)
    try:
        return wait_until_stopped(state_dir, engine, timeout)
    finally:
        clear_stop(state_dir, engine, token)


def write_status(state_dir: Path, engine: str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the engine's status file and stamp ``updated_at``."""
    path = status_path(state_dir, engine)
    status = _load(path) or {}
    status.update(fields, engine=engine, updated_at=utc_now())
    write_json_atomically(path, status)
    return status


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def read_status(state_dir: Path, engine: str) -> dict[str, Any]:
    """The engine's status, corrected by the lock: a live state without a live driver is ``failed``."""
    status = _load(status_path(state_dir, engine)) or {"engine": engine, "state": "never started"}
    running = is_running(state_dir, engine)
    if status.get("state") in LIVE_STATES and not running:
        status["state"] = "failed"
        status["reason"] = "driver exited without writing a final status (killed?)"
    status["lock_held"] = running
    return status


class StopWatcher:
    """Turns the stop marker and SIGTERM into one flag the driver loop polls.

    SIGTERM is the same graceful path as the marker; the handler only sets a flag, the loop stops.
    """

    def __init__(self, state_dir: Path, engine: str) -> None:
        self.state_dir = Path(state_dir)
        self.engine = engine
        self._signalled = threading.Event()
        self.reason = ""

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            self.reason = f"signal {signal.Signals(signum).name}"
            self._signalled.set()

        signal.signal(signal.SIGTERM, on_signal)

    def request(self, reason: str) -> None:
        """Stop from inside the driver (timeout, launcher gone), same path as the marker."""
        self.reason = reason
        self._signalled.set()

    def should_stop(self) -> bool:
        if self._signalled.is_set():
            return True
        if stop_path(self.state_dir, self.engine).exists():
            self.reason = "stop marker"
            return True
        return False
