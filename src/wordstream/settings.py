"""One definition of every path and knob.

Everything derives from ``WORDSTREAM_DATA_DIR`` (default ``<repo>/data``); other knobs are
``WORDSTREAM_*`` environment variables read when a :class:`Settings` is built, so a test or a DAG run
can point the whole workflow at another directory by setting one variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Engine = Literal["structured", "dstream"]
ENGINES: tuple[Engine, ...] = ("structured", "dstream")
KeyMode = Literal["words", "lines"]
KEY_MODES: tuple[KeyMode, ...] = ("words", "lines")
StateStore = Literal["rocksdb", "hdfs"]
# The structured engine's state store: RocksDB (off-heap, each commit writes the changed keys) or
# Spark's default, the HDFS-backed store (every key on the JVM heap).
STATE_STORE_PROVIDERS: dict[StateStore, str] = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}

REPO_DIR = Path(__file__).resolve().parents[2]
SPARK_APPS_DIR = REPO_DIR / "spark_apps"


# Each engine's micro-batch interval unless WORDSTREAM_BATCH_SECONDS or a run's Param sets one. DStream
# keeps the tutorial's StreamingContext(sc, 1): measured at 1 s against 2 s (README, "The tutorial,
# literally").
DEFAULT_BATCH_SECONDS: dict[Engine, int] = {"structured": 2, "dstream": 1}

STAGING_DAG_ID = "stage_incoming_files"
MAINTENANCE_DAG_ID = "streaming_maintenance"


def stream_dag_id(engine: Engine) -> str:
    """The DAG that runs ``engine``'s streaming application."""
    return f"stream_{engine}"


DAG_IDS: tuple[str, ...] = (*map(stream_dag_id, ENGINES), STAGING_DAG_ID, MAINTENANCE_DAG_ID)


def check_engine(name: str) -> Engine:
    """Return ``name`` as an :data:`Engine`, or raise ValueError with the accepted names."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    return name


def check_state_store(name: str) -> StateStore:
    """Return ``name`` as a :data:`StateStore`, or raise ValueError with the accepted names."""
    for store in STATE_STORE_PROVIDERS:
        if name == store:
            return store
    raise ValueError(f"unknown state store {name!r}: choose one of {', '.join(STATE_STORE_PROVIDERS)}")


def knob_conf(shuffle_partitions: int, state_store: StateStore, remember_seconds: int) -> dict[str, str]:
    """The Spark settings behind the engines' scale knobs (the env defaults, or a run's flags)."""
    return {
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.streaming.stateStore.providerClass": STATE_STORE_PROVIDERS[state_store],
        "spark.streaming.fileStream.minRememberDuration": f"{remember_seconds}s",
    }


def _env_optional_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _env_optional_int(env, name)
    return default if value is None else value


def _env_state_store(env: Mapping[str, str]) -> StateStore:
    raw = env.get("WORDSTREAM_STATE_STORE") or Settings.state_store
    try:
        return check_state_store(raw)
    except ValueError as error:
        raise ValueError(f"WORDSTREAM_STATE_STORE: {error}") from None


@dataclass(frozen=True)
class Settings:
    """Paths of the data flow and the knobs with their defaults."""

    data_dir: Path
    batch_seconds: int | None = None  # both engines; None: each its DEFAULT_BATCH_SECONDS
    stable_seconds: int = 1
    # One staging DAG run stages in waves for this long (at most one run per this many seconds).
    staging_run_seconds: int = 60
    staging_inotify: int = 1  # 0: the staging loop scans landing every 0.25 s instead of using inotify
    max_file_bytes: int = 256 * 1024 * 1024
    # A line is split into words in memory, in one piece: 4 MiB of one-letter words is about what a
    # 1 GiB driver counts safely; a file with a longer line is quarantined.
    max_line_bytes: int = 4 * 1024 * 1024
    shuffle_partitions: int = 4
    state_store: StateStore = "rocksdb"
    retention_days: int = 7
    # The driver folds its output into a snapshot every this many batches (0: only the daily cleanup).
    compact_batches: int = 100
    dstream_remember_seconds: int = 60
    spark_driver_host: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("WORDSTREAM_DATA_DIR") or REPO_DIR / "data").resolve()
        return cls(
            data_dir=data_dir,
            batch_seconds=_env_optional_int(env, "WORDSTREAM_BATCH_SECONDS"),
            stable_seconds=_env_int(env, "WORDSTREAM_STABLE_SECONDS", cls.stable_seconds),
            staging_run_seconds=_env_int(env, "WORDSTREAM_STAGING_RUN_SECONDS", cls.staging_run_seconds),
            staging_inotify=_env_int(env, "WORDSTREAM_STAGING_INOTIFY", cls.staging_inotify),
            max_file_bytes=_env_int(env, "WORDSTREAM_MAX_FILE_BYTES", cls.max_file_bytes),
            max_line_bytes=_env_int(env, "WORDSTREAM_MAX_LINE_BYTES", cls.max_line_bytes),
            shuffle_partitions=_env_int(env, "WORDSTREAM_SHUFFLE_PARTITIONS", cls.shuffle_partitions),
            state_store=_env_state_store(env),
            retention_days=_env_int(env, "WORDSTREAM_RETENTION_DAYS", cls.retention_days),
            compact_batches=_env_int(env, "WORDSTREAM_COMPACT_BATCHES", cls.compact_batches),
            dstream_remember_seconds=_env_int(
                env, "WORDSTREAM_DSTREAM_REMEMBER_SECONDS", cls.dstream_remember_seconds
            ),
            spark_driver_host=env.get("WORDSTREAM_SPARK_DRIVER_HOST", ""),
        )

    def batch_seconds_for(self, engine: Engine) -> int:
        """The micro-batch interval ``engine`` runs with when a run does not ask for another."""
        return self.batch_seconds or DEFAULT_BATCH_SECONDS[engine]

    # -- the folder layout (docs/architecture.md, "Folders under data/") ----------------------
    @property
    def landing(self) -> Path:
        return self.data_dir / "landing"

    @property
    def watch_root(self) -> Path:
        return self.data_dir / "watch"

    def watch(self, engine: Engine) -> Path:
        """Each engine watches its own folder, so resetting one never disturbs the other."""
        return self.watch_root / engine

    def checkpoint(self, engine: Engine) -> Path:
        return self.data_dir / "checkpoints" / engine

    def output(self, engine: Engine) -> Path:
        return self.data_dir / "output" / engine

    @property
    def rotated(self) -> Path:
        """Checkpoints and outputs of finished epochs, kept until cleanup expires them."""
        return self.data_dir / "rotated"

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def archive(self) -> Path:
        return self.data_dir / "archive"

    @property
    def state(self) -> Path:
        return self.data_dir / "state"

    @property
    def ledger(self) -> Path:
        return self.state / "ledger.sqlite"

    def ensure_dirs(self) -> None:
        """Create every folder of the layout (idempotent)."""
        for path in (self.landing, self.quarantine, self.archive, self.state, self.rotated):
            path.mkdir(parents=True, exist_ok=True)
        for engine in ENGINES:
            for path in (self.watch(engine), self.checkpoint(engine).parent, self.output(engine).parent):
                path.mkdir(parents=True, exist_ok=True)

    def spark_conf(self) -> dict[str, str]:
        """Spark settings every wordstream application runs with."""
        driver_host = {"spark.driver.host": self.spark_driver_host} if self.spark_driver_host else {}
        return {
            **driver_host,
            **knob_conf(self.shuffle_partitions, self.state_store, self.dstream_remember_seconds),
            "spark.ui.showConsoleProgress": "false",
            # Each commit writes the changed keys, not a snapshot of the whole store.
            "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
            # The file source's log keeps every file of the epoch in each compact file (135 B a file),
            # and Spark keeps every compact of its last 100 batches and last 10 minutes: every 10
            # batches (Spark's default) that is 10 to 30 full copies, each rewritten in turn. Every
            # 1000 batches: one or two copies, rewritten every 33 minutes of 2 s batches.
            "spark.sql.streaming.fileSource.log.compactInterval": "1000",
        }
