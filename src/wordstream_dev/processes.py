"""The processes the tooling starts, finds and stops: ports, identities, process groups, logs.

The stack, the local cluster, the benchmarks and the tests all start long-lived processes (Airflow,
Spark daemons, spark-submit) and must stop every one of them, and only them. One definition of each
piece they share:

* ports: whether one is in use, free ones for a second instance beside the first, who holds one;
* identity: a recorded pid is only still "ours" while its creation time matches (pids are reused,
  pid files outlive their processes);
* finding processes: by process group, by command line, by an inherited environment variable, by
  working directory;
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
def live_processes(match: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    """Live processes ``match`` accepts, skipping those that vanish or hide while being looked at."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and match(proc):
                found.append(proc)
        except _GONE:
            continue
    return found


def group_members(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group."""
    return live_processes(lambda proc: os.getpgid(proc.pid) == pgid)


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
    return live_processes(lambda proc: all(text in " ".join(proc.cmdline()) for text in texts))


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment shows ``name=value``.

    The variable is inherited across forks, execs and sessions, but ``/proc/<pid>/environ`` is the
    memory the environment had at the last exec: a process that renames itself with
    ``setproctitle`` (Airflow's task, supervisor and executor processes do) overwrites it and shows
    none; :func:`detached_processes_in` still finds those.
    """
    return live_processes(lambda proc: proc.environ().get(name) == value)


def detached_processes_in(directory: Path) -> list[psutil.Process]:
    """Live processes without a controlling terminal whose working directory is ``directory``.

    A process that renamed itself keeps its working directory when its command line and its
    environment say nothing any more. Everything a tool starts in a session of its own has no
    terminal; a shell or an editor a user opened in that directory has one, and is not taken for
    the tool's. Only that directory itself counts, not what lies under it, so a home that contains
    other things (``$HOME``) does not claim their processes.
    """
    return live_processes(lambda proc: Path(proc.cwd()) == directory and not has_terminal(proc))


def has_terminal(proc: psutil.Process) -> bool:
    """True when ``proc`` has a controlling terminal (``tty_nr`` of ``/proc/<pid>/stat``).

    Read directly: ``psutil.Process.terminal()`` maps it through a table of ``/dev`` built once per
    process, which does not know a terminal opened later.
    """
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except FileNotFoundError:
        raise psutil.NoSuchProcess(proc.pid) from None
    return int(stat.rsplit(")", 1)[1].split()[4]) != 0


def processes_using(directory: Path) -> list[psutil.Process]:
    """Live processes other than this one that name ``directory`` in their command line, work in it,
    or have their ``AIRFLOW_HOME`` in it: what a test that owns ``directory`` must not leave behind."""
    root = Path(directory)

    def uses(proc: psutil.Process) -> bool:
        if proc.pid == os.getpid():
            return False
        if str(root) in " ".join(proc.cmdline()) or Path(proc.cwd()).is_relative_to(root):
            return True
        home = proc.environ().get("AIRFLOW_HOME")
        return home is not None and Path(home).is_relative_to(root)
    return live_processes(uses)


# -- stopping -----------------------------------------------------------------------------------
def stop_processes(find: Callable[[], list[psutil.Process]], grace: float, *, groups: Sequence[int] = (),
                   reap: Callable[[], object] | None = None,
                   on_kill: Callable[[list[psutil.Process]], None] | None = None,
                   kill_wait: float = 10.0) -> list[psutil.Process]:
    """SIGTERM, up to ``grace`` seconds, then SIGKILL: to the process ``groups`` and all ``find`` returns.

    ``find`` is asked again every 0.2 s while waiting, and a process it returns for the first time
    gets the signal of the moment too: one forked while the others stop (a task a supervisor was
    starting) is stopped with them, not left for the SIGKILL or missed. Done when two listings in a
    row (50 ms apart) find nothing. A process in one of ``groups`` gets the group's signal only.
    ``reap`` collects the exit status of the caller's own children (else they linger as zombies);
    ``on_kill`` hears which processes outlived the grace period. Returns what is still alive after
    SIGKILL and ``kill_wait`` seconds.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        pending = find()
        if not pending:
            return []
        if sig == signal.SIGKILL and on_kill is not None:
            on_kill(pending)
        _send(sig, groups, pending)
        signalled = set(pending)
        empty_listings = 0
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            pending = find()
            new = [proc for proc in pending if proc not in signalled]
            _send(sig, (), new)
            signalled.update(new)
            empty_listings = 0 if pending else empty_listings + 1
            if empty_listings == 2:
                return []
            time.sleep(0.2 if pending else 0.05)
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
