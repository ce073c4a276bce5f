"""A real standalone cluster on 127.0.0.1: a job runs on its workers, exactly, and stopping leaves nothing.

What this proves that ``local[*]`` cannot: the driver (spark-submit in client mode) and executors in
other JVMs, started by workers, agree on Python, Spark and file paths; and ``LocalCluster.stop()``
reaches every process the cluster forked (executors and their Python workers included).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import reference_counts, write_corpus

from wordstream_dev.cluster import ClusterError, LocalCluster
from wordstream_dev.processes import alive, find_free_port

pytestmark = pytest.mark.cluster

# The job splits on ASCII whitespace only (the key contract, wordstream.engines.keys); str.split()
# would also split on U+00A0 and friends, which the corpus contains on purpose.
WORDCOUNT_JOB = textwrap.dedent('''
    import json
    import re
    import sys
    from operator import add

    from pyspark.sql import SparkSession

    source, target, app_name = sys.argv[1:4]
    spark = SparkSession.builder.appName(app_name).getOrCreate()
    counts = (
        spark.sparkContext.textFile(source, minPartitions=4)
        .flatMap(lambda line: re.split(r"[ \\t\\n\\x0b\\x0c\\r]+", line))
        .filter(lambda word: word != "")
        .map(lambda word: (word, 1))
        .reduceByKey(add)
        .collect()
    )
    with open(target, "w", encoding="utf-8") as out:
        json.dump({"app_id": spark.sparkContext.applicationId, "counts": dict(counts)}, out)
    spark.stop()
''')


def started_processes(cluster: LocalCluster) -> list[psutil.Process]:
    """Every process the cluster started: daemons, their group members and all their descendants."""
    found: dict[int, psutil.Process] = {}
    for daemon in cluster.daemons():
        for proc in daemon.members():  # the leader included, while it lives
            try:
                children = proc.children(recursive=True)
            except psutil.NoSuchProcess:  # spark-class's short-lived launcher JVM, say
                continue
            found[proc.pid] = proc
            found.update((child.pid, child) for child in children)
    return list(found.values())


def still_alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [proc for proc in processes if alive(proc)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path / "cluster", master_port=find_free_port(), webui_port=find_free_port(),
                         workers=2, start_timeout=90, progress=print)
    try:
        yield local.start()
    finally:
        local.stop()


def test_job_runs_on_both_workers_and_stop_leaves_nothing(cluster: LocalCluster, tmp_path: Path) -> None:
    inputs = write_corpus(tmp_path / "input", files=1, seed=7, lines=400)
    job = tmp_path / "wordcount_job.py"
    job.write_text(WORDCOUNT_JOB, encoding="utf-8")
    result_file = tmp_path / "result.json"
    app_name = f"cluster-wordcount-{uuid.uuid4().hex[:8]}"

    status = cluster.master_json()
    assert status["status"] == "ALIVE"
    assert [worker["state"] for worker in status["workers"]] == ["ALIVE", "ALIVE"]

    submit_log = tmp_path / "submit.log"
    code = cluster.submit([str(job), str(inputs[0]), str(result_file), app_name], submit_log, timeout=300)
    assert code == 0, submit_log.read_text()[-4000:]

    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert result["counts"] == reference_counts(inputs, "words")

    # The master saw the application finish, with the cores of both 1-core workers.
    apps = [app for app in cluster.master_json()["completedapps"] if app["name"] == app_name]
    assert len(apps) == 1, cluster.master_json()["completedapps"]
    assert apps[0]["id"] == result["app_id"]
    assert apps[0]["state"] == "FINISHED"
    assert apps[0]["cores"] == 2
    # ... and each worker ran one of its executors.
    executors_per_worker = [
        [executor for executor in worker["finishedexecutors"] if executor["appid"] == result["app_id"]]
        for worker in cluster.workers_json()
    ]
    assert [len(executors) for executors in executors_per_worker] == [1, 1], executors_per_worker

    # `up` twice: the second start is a no-op on the same processes.
    pids = [daemon.pid for daemon in cluster.daemons()]
    cluster.start()
    assert [daemon.pid for daemon in cluster.daemons()] == pids
    status_cmd = subprocess.run(
        [sys.executable, "-m", "wordstream_dev.cluster", "status", "--run-dir", str(cluster.run_dir)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert status_cmd.returncode == 0, status_cmd.stderr
    assert f"{cluster.master_url} workers alive: 2/2" in status_cmd.stdout

    processes = started_processes(cluster)
    assert len(processes) >= 3
    cluster.stop()
    assert still_alive(processes) == []
    assert not cluster.state_file.exists()
    assert not list(cluster.run_dir.glob("*.pid"))
    cluster.stop()  # idempotent


def test_timeout_reports_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that cannot finish in time says so and leaves no daemon behind."""
    local = LocalCluster(tmp_path / "cluster", master_port=find_free_port(), webui_port=find_free_port(),
                         workers=1, start_timeout=0.5)
    processes: list[psutil.Process] = []
    wait_for = local._wait_for

    def record_then_wait(*args: Any) -> None:
        processes.extend(started_processes(local))
        wait_for(*args)

    monkeypatch.setattr(local, "_wait_for", record_then_wait)
    with pytest.raises(ClusterError, match="timed out"):
        local.start()
    assert processes, "the master was never started"
    assert still_alive(processes) == []
    assert not local.state_file.exists()


def test_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        local = LocalCluster(tmp_path / "cluster", master_port=port, webui_port=find_free_port())
        with pytest.raises(ClusterError, match=f"port {port}"):
            local.start()
    assert not (tmp_path / "cluster" / "master.pid").exists()
    assert local.daemons() == []
