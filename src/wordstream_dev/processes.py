"""The processes the tooling starts, finds and stops: ports, identities, process groups, logs.

The stack, the local cluster, the benchmarks and the tests all start long-lived processes (Airflow,
Spark daemons, spark-submit) and must stop every one of them, and only them. One definition of each
piece they share:

* ports: whether one is in use, free ones for a second instance beside the first, who holds one;
* identity: a recorded pid is only still "ours" while its creation time matches (pids are reused,
  pid files outlive their processes);
* finding processes: by process group, by command line, by an inherited environment variable;
* stopping: SIGTERM, a grace period, SIGKILL, for whole process groups and single processes alike;
* :class:`LoggedProcess`: a command in a session of its own with its output in a log file;
* the tail of a log, for error messages that say where to look.

Zombies count as gone everywhere: they have exited and only wait to be reaped by their parent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Self

import psutil

HOST = "127.0.0.1"
# psutil's create_time() is rounded differently on the way into a JSON file and back.
CREATE_TIME_TOLERANCE = 1.0
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ProcessLookupError)


# -- ports ------------------------------------------------------------------------------------------
def port_in_use(port: int, host: str = HOST) -> bool:
    """True when a server already listens on ``host:port`` (IPv4 or IPv6 address).

    Binds with SO_REUSEADDR, as the servers started here do: connections of a server that just
    stopped linger in TIME_WAIT for a minute and must not count as "in use".
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return True
        return False


def find_free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (tests and benchmarks run instances side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports nothing listens on right now (an Airflow needs three)."""
    ports: list[int] = []
    while len(ports) < count:
        port = find_free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def port_owner(port: int) -> psutil.Process | None:
    """The process listening on ``port`` (any address), when the system lets us see it."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                return psutil.Process(conn.pid)
            except psutil.NoSuchProcess:
                continue
    return None


# -- identity -----------------------------------------------------------------------------------
def alive(proc: psutil.Process) -> bool:
    """Still running and not a zombie; ``is_running`` also notices a pid reused by another process."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def creation_time(pid: int) -> float:
    """When ``pid`` was created, to record beside it; 0.0 (matching no process) if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return 0.0


def started_process(pid: int, created: float) -> psutil.Process | None:
    """The live process ``pid``, if it still is the one created at ``created``; else None."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) < CREATE_TIME_TOLERANCE and alive(proc):
            return proc
    except psutil.NoSuchProcess:
        pass
    return None


def describe(proc: psutil.Process) -> str:
    """``pid N (command line)``, for messages."""
    try:
        command = " ".join(" ".join(proc.cmdline()).split()) or proc.name()  # setproctitle pads
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        command = "?"
    return f"pid {proc.pid} ({command[:100]})"


def names(processes: Iterable[psutil.Process]) -> str:
    """The distinct process names, sorted and comma-separated, for messages."""
    found = set()
    for proc in processes:
        try:
            found.add(proc.name())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            found.add("?")
    return ", ".join(sorted(found))


# -- finding processes --------------------------------------------------------------------------
def group_members(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except _GONE:
            continue
    return members


def recorded_group(leader: int, created: float) -> list[psutil.Process]:
    """The live members of the group a recorded session leader (pid ``leader``) started.

    Empty when that pid now belongs to an unrelated process: the group is not ours. When the leader is
    gone, orphans may still carry its group id, and they are returned.
    """
    try:
        if abs(psutil.Process(leader).create_time() - created) >= CREATE_TIME_TOLERANCE:
            return []
    except psutil.NoSuchProcess:
        pass
    return group_members(leader)


def processes_mentioning(*texts: str) -> list[psutil.Process]:
    """Live processes whose command line contains every one of ``texts`` (e.g. a data directory)."""
    found = []
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] != psutil.STATUS_ZOMBIE and all(text in command for text in texts):
                found.append(proc)
        except _GONE:
            continue
    return found


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has ``name=value`` (inherited across forks, execs, sessions)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.environ().get(name) == value:
                found.append(proc)
        except _GONE:
            continue
    return found


# -- stopping -----------------------------------------------------------------------------------
def stop_processes(find: Callable[[], list[psutil.Process]], grace: float, *, groups: Sequence[int] = (),
                   reap: Callable[[], object] | None = None,
                   on_kill: Callable[[list[psutil.Process]], None] | None = None,
                   kill_wait: float = 10.0) -> list[psutil.Process]:
    """SIGTERM, up to ``grace`` seconds, then SIGKILL: to the process ``groups`` and all ``find`` returns.

    ``find`` is asked again while waiting, so a process that appears while the others stop is caught
    too; a process in one of ``groups`` gets the group's signal only. ``reap`` collects the exit status
    of the caller's own children (else they linger as zombies); ``on_kill`` hears which processes
    outlived the grace period. Returns what is still alive after SIGKILL and ``kill_wait`` seconds.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        pending = find()
        if not pending:
            return []
        if sig == signal.SIGKILL and on_kill is not None:
            on_kill(pending)
        _send(sig, groups, pending)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            if not find():
                return []
            time.sleep(0.2)
    if reap is not None:
        reap()
    return find()


def _send(sig: signal.Signals, groups: Sequence[int], processes: Iterable[psutil.Process]) -> None:
    signalled = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            signalled.add(pgid)
        except (ProcessLookupError, PermissionError):
            continue
    for proc in processes:
        try:
            if os.getpgid(proc.pid) not in signalled:
                proc.send_signal(sig)  # psutil refuses when the pid was reused meanwhile
        except _GONE:
            continue


def kill_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGKILL a whole process group and wait until none of it is left (TimeoutError otherwise)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"process group {pgid} still has members {timeout:g} s after SIGKILL")
        time.sleep(0.1)


# -- a command with its log ---------------------------------------------------------------------
def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log, or ``(no log)``."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LoggedProcess:
    """A command in a session (so a process group) of its own, its output appended to ``log``
    (its standard error to ``errors`` instead, when given: a printout read apart from the logging).

    The group is what stopping it means: whatever the command forks stays in the group, unless it
    starts a session of its own. Its own session also keeps a Ctrl-C in the terminal away from it.
    """

    def __init__(self, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, errors: Path | None = None) -> None:
        self.command = list(command)
        self.log = log
        self.errors = errors
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as files:
            out = files.enter_context(self.log.open("ab"))
            err = files.enter_context(self.errors.open("ab")) if self.errors else subprocess.STDOUT
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=self.env, cwd=self.cwd, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        """The command's pid, which is also its process group's id."""
        if self.proc is None:
            raise RuntimeError(f"{self.command[0]} was not started")
        return self.proc.pid

    def running(self) -> bool:
        """True while the command itself has not exited (what it forked may outlive it)."""
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.command[0]} was not started")
        return self.proc.wait(timeout=timeout)

    def members(self) -> list[psutil.Process]:
        """Every live process of the command's group (empty before ``start``)."""
        return group_members(self.proc.pid) if self.proc is not None else []

    def stop(self, grace: float = 5.0) -> list[psutil.Process]:
        """SIGTERM the group, SIGKILL what is left after ``grace`` seconds; returns any survivor."""
        if self.proc is None:
            return []
        proc = self.proc
        left = stop_processes(self.members, grace, groups=[proc.pid], reap=proc.poll, kill_wait=30.0)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return left

    def kill(self) -> None:
        """SIGKILL the whole group at once (a ``kill -9``) and wait until all of it is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None or self.members():
            kill_group(self.proc.pid)
        self.proc.wait(timeout=30)

    def tail(self, lines: int = 60) -> str:
        return log_tail(self.errors or self.log, lines)

    def exited(self, what: str) -> str:
        """``<what> exited <code>; see <log>:`` and the log's tail: the message for a premature exit."""
        code = self.proc.returncode if self.proc is not None else None
        return f"{what} exited {code}; see {self.log}:\n{self.tail()}"
