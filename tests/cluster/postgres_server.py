"""A throw-away PostgreSQL server: Debian's binaries, a fresh cluster in a temp dir, 127.0.0.1 only.

Airflow's metadata lives in PostgreSQL in docker-compose.yaml; this gives a test the same database
without Docker. The cluster is created with ``initdb`` in its own directory, listens on 127.0.0.1 on
the port given (TCP connections need the generated password) and on a Unix socket in that directory,
and is gone, processes and files, when the ``with`` block ends::

    with PostgresServer(port=find_free_port()) as server:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = server.url("postgresql+psycopg2")

PostgreSQL refuses to run as root, so as root every server command runs as the ``postgres`` user
(``runuser``), which is also why the directory is a fresh one under the system temp folder: pytest's
own temp folders are private to root. Durability is switched off (``fsync=off``): nothing here has to
survive a crash, and the disk is shared with other test runs.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from wordstream_dev.prerequisites import MissingPrerequisite, apt_install
from wordstream_dev.processes import alive, log_tail

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
SUPERUSER = "postgres"
SPEED_OVER_DURABILITY = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed and cannot be installed here; the message says why."""


class PostgresError(RuntimeError):
    """The server could not be created, started or stopped; the message carries the log's tail."""


def _newest_bin_dir() -> Path | None:
    candidates = [path / "bin" for path in DEBIAN_ROOT.glob("*") if (path / "bin" / "initdb").is_file()]
    return max(candidates, key=lambda path: int(path.parent.name), default=None) if candidates else None


def server_bin_dir(install: bool = True) -> Path:
    """Debian's ``/usr/lib/postgresql/<newest>/bin``, installing the ``postgresql`` package if missing.

    Raises :class:`PostgresUnavailable` when it is missing and apt cannot be used (not root).
    """
    found = _newest_bin_dir()
    if found is not None:
        return found
    if not install:
        raise PostgresUnavailable(f"no PostgreSQL server under {DEBIAN_ROOT}: apt-get install postgresql")
    try:
        apt_install("postgresql", "the cluster tests keep Airflow's metadata in it", recommends=False)
    except MissingPrerequisite as exc:
        raise PostgresUnavailable(str(exc)) from None
    found = _newest_bin_dir()
    if found is None:
        raise PostgresUnavailable(f"apt-get installed postgresql but {DEBIAN_ROOT}/*/bin/initdb is missing")
    return found


@dataclass
class PostgresServer:
    """One PostgreSQL cluster with one database owned by one login role (a generated password)."""

    port: int
    database: str = "airflow"
    user: str = "airflow"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    start_timeout: int = 60
    root: Path | None = field(default=None, init=False)
    _bin: Path | None = field(default=None, init=False, repr=False)
    _processes: list[psutil.Process] = field(default_factory=list, init=False, repr=False)

    # -- addresses ------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "socket"

    @property
    def log(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "postgres.log"

    def url(self, scheme: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL over TCP with the password (token_urlsafe needs no quoting)."""
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def connect(self) -> Any:
        """A psycopg2 connection to the database as its owner, over TCP (checks from a test)."""
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=self.database)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        """initdb, start, create the role and the database; on any failure stop and clean up."""
        self._bin = server_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="wordstream-postgres-"))
        try:
            self.socket_dir.mkdir()
            if os.geteuid() == 0:
                owner = pwd.getpwnam(SERVER_USER)
                for path in (self.root, self.socket_dir):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            self._server_command(["initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-E", "UTF8",
                                  "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"])
            options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} "
                       f"{SPEED_OVER_DURABILITY}")
            self._server_command(["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-o", options,
                                  "-w", "-t", str(self.start_timeout), "start"])
            self._processes = self.processes()
            # The socket directory is the server user's; trust authentication applies there only.
            self._server_command(["psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER,
                                  "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
                                  "-c", f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'",
                                  "-c", f"CREATE DATABASE {self.database} OWNER {self.user}"])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; every server process must be gone, then the directory is removed."""
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                # Backends started since start() (client connections) are the postmaster's children now.
                self._processes = list({proc.pid: proc for proc in [*self._processes, *self.processes()]}
                                       .values())
                self._server_command(["pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w",
                                      "-t", str(self.start_timeout), "stop"])
            # `pg_ctl stop -w` returns once the postmaster is gone, and it goes after its children.
            deadline = time.monotonic() + 5
            living = [proc for proc in self._processes if alive(proc)]
            while living and time.monotonic() < deadline:
                time.sleep(0.2)
                living = [proc for proc in living if alive(proc)]
            if living:
                for proc in living:
                    proc.kill()
                raise PostgresError(f"PostgreSQL processes outlived `pg_ctl stop`: {[p.pid for p in living]}")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- inspection -----------------------------------------------------------------------------
    def processes(self) -> list[psutil.Process]:
        """The postmaster (first line of ``postmaster.pid``) and its children, while running."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            postmaster = psutil.Process(pid)
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, psutil.NoSuchProcess):
            return []

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines) if self.root is not None else "(no log)"

    # -- internals ------------------------------------------------------------------------------
    def _server_command(self, command: list[str]) -> None:
        assert self._bin is not None and self.root is not None
        argv = [str(self._bin / command[0]), *command[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        done = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, check=False,
                              timeout=self.start_timeout + 30)
        if done.returncode != 0:
            raise PostgresError(f"{command[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}\n"
                                f"--- {self.log}\n{self.tail()}")

