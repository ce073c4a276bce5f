"""What the drills look at from outside: Spark's own REST API, listening sockets, driver processes,
big files with a known reference, and the mapping from watch names back to the files a test wrote.

Nothing here imports the code under test beyond paths and the ledger, so what a drill observes is
what an operator would observe.
"""

from __future__ import annotations

import calendar
import hashlib
import ipaddress
import os
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import requests
from support import land, reference_counts, wait_until

from wordstream_dev.processes import alive

LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


# -- addresses ---------------------------------------------------------------------------------
def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (``::ffff:127.0.0.1``, what a JVM reports)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in LOOPBACK_NETWORKS)


def listening(pids: Iterable[int]) -> dict[int, set[str]]:
    """Port -> the addresses it listens on, for every TCP listening socket of these processes."""
    wanted = set(pids)
    ports: dict[int, set[str]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in wanted and conn.laddr:
            ports.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
    return ports


# -- the Spark driver of an engine ---------------------------------------------------------------
def driver_processes(data_dir: Path, engine: str) -> list[psutil.Process]:
    """Live Python drivers of ``engine`` working on ``data_dir`` (not the JVM that launched them)."""
    app = f"spark_apps/{engine}_wordcount.py"
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if (proc.status() != psutil.STATUS_ZOMBIE and "java" not in (proc.info["name"] or "")
                    and any(arg.endswith(app) for arg in cmdline[:2])
                    and any(str(data_dir) in arg for arg in cmdline)):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def spark_processes(data_dir: Path) -> list[psutil.Process]:
    """Every live Spark process on ``data_dir``: JVMs, Python drivers and their Python workers."""
    mine: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])
            if (proc.status() != psutil.STATUS_ZOMBIE and "spark_apps/" in command
                    and str(data_dir) in command):
                mine[proc.pid] = proc
                for child in proc.children(recursive=True):
                    mine[child.pid] = child
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return [proc for proc in mine.values() if alive(proc)]


def spark_ui(driver_pid: int, timeout: float = 60.0) -> str:
    """The URL of the Spark UI of the application whose Python driver is ``driver_pid``.

    The driver's parent is the spark-submit JVM; of its listening ports, the UI is the one whose
    ``/api/v1/applications`` answers. Polled: on a loaded machine the UI can answer late.
    """
    jvm = psutil.Process(driver_pid).parent()
    assert jvm is not None and "java" in jvm.name(), f"the parent of driver {driver_pid} is not a JVM"

    def find() -> str | None:
        for port, addresses in sorted(listening([jvm.pid]).items()):
            host = "127.0.0.1" if any(is_loopback(a) or a in ("0.0.0.0", "::") for a in addresses) \
                else sorted(addresses)[0]
            url = f"http://{host}:{port}"
            try:
                answer = requests.get(f"{url}/api/v1/applications", timeout=5)
            except requests.RequestException:
                continue
            if answer.ok and answer.headers.get("content-type", "").startswith("application/json"):
                return url
        return None

    return str(wait_until(find, timeout, f"a Spark UI among the ports of JVM {jvm.pid}", interval=1.0))


def running_jobs(ui: str) -> list[dict[str, Any]]:
    """Spark jobs running right now, with their submission time (Spark's REST API)."""
    apps = requests.get(f"{ui}/api/v1/applications", timeout=15).json()
    jobs: list[dict[str, Any]] = []
    for app in apps:
        answer = requests.get(f"{ui}/api/v1/applications/{app['id']}/jobs",
                              params={"status": "running"}, timeout=15)
        if answer.ok:
            jobs.extend(answer.json())
    return jobs


def busy_for(ui: str, seconds: float) -> bool:
    """True when a job with tasks has been running for at least ``seconds`` (a batch, not a blip)."""
    for job in running_jobs(ui):
        submitted = job.get("submissionTime")
        if job.get("numTasks", 0) > 0 and submitted:
            started = calendar.timegm(time.strptime(submitted[:19], "%Y-%m-%dT%H:%M:%S"))  # GMT
            if time.time() - started >= seconds:
                return True
    return False


# -- files with a known reference ----------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_repeated(path: Path, unit: str, copies: int) -> dict[str, int]:
    """``unit`` written ``copies`` times; returns the file's reference word counts.

    ``unit`` ends with a newline, so no line spans two copies and the reference is exactly
    ``copies`` times the reference of one copy (computed by the independent reference).
    """
    assert unit.endswith("\n") and not unit.startswith("\n")
    data = unit.encode("utf-8")
    with open(path, "wb") as out:
        for _ in range(copies):
            out.write(data)
    one = path.with_name(f".unit-{path.name}")
    one.write_bytes(data)
    try:
        per_copy = reference_counts([one], "words")
    finally:
        one.unlink()
    return {word: count * copies for word, count in per_copy.items()}


def add_counts(*parts: dict[str, int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)


# -- landing and staging -------------------------------------------------------------------------
def stage_files(settings: Any, paths: Iterable[Path]) -> Any:
    """Drop whole files into landing (hidden name, then rename) and run the real staging once."""
    from wordstream.staging import stage

    land(settings.landing, paths)
    return stage(settings, progress=lambda _line: None)


def files_by_watch_name(paths: Iterable[Path]) -> dict[str, Path]:
    """Watch names start with the first 16 hex digits of the content's sha256: map them back."""
    return {sha256_of(path)[:16]: path for path in paths}


def watch_files(names: Iterable[str], by_prefix: dict[str, Path]) -> list[Path]:
    """The test's own files behind these watch names (every name must be one of them)."""
    found = []
    for name in names:
        prefix = name.split("-", 1)[0]
        assert prefix in by_prefix, f"{name} is not one of the files this test wrote"
        found.append(by_prefix[prefix])
    return found


# -- kill points -----------------------------------------------------------------------------------
def kill_when(app: Any, ready: Any, timeout: float, what: str) -> None:
    """SIGKILL the whole application (JVM, driver, workers) the moment ``ready()`` holds.

    Polled every millisecond: the moments the drills aim at (a commit just written, a batch folder
    just swapped in) last tens of milliseconds.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if app.proc.poll() is not None:
            raise AssertionError(f"{app.engine} exited {app.proc.returncode} before {what}:\n{app.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}:\n{app.tail()}")
        time.sleep(0.001)
    app.kill9()


def batch_ids(folder: Path) -> set[int]:
    """The batch ids of a Spark metadata log folder (``commits/``, ``offsets/``): whole files only."""
    try:
        return {int(name) for name in os.listdir(folder) if name.isdigit()}
    except FileNotFoundError:
        return set()
