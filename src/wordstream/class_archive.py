"""The Spark driver JVM's class-data sharing archive (JDK AppCDS): where it lives, when it fits, how to build.

Before its first batch a driver JVM loads, parses and verifies thousands of classes from Spark's
jars: about 3 s of a cold start on two cores. A dynamic CDS archive holds them parsed and verified,
ready to map: the driver gets ``-XX:SharedArchiveFile=<archive>`` and skips that work.

The archive belongs to one JDK build and one set of Spark jars. It is built once (``make setup``,
or ``python -m wordstream.class_archive build``) by running the structured application for a few
batches over a scratch data directory with ``-XX:ArchiveClassesAtExit``, and a fingerprint of that JDK
and those jars is stored beside it. A launcher passes the archive only while the fingerprint still
matches, so a missing or stale archive means a slower start, never a failed one (the JVM checks the
archive against its class path too, and runs without it on a mismatch).

Location: ``WORDSTREAM_CLASS_ARCHIVE`` (a file path; empty: no archive), by default
``wordstream-spark-driver.jsa`` in the Python environment's prefix (``.venv/``), outside the
repository's tracked files. About 170 MB.

Usage::

    python -m wordstream.class_archive build [--force]   # build unless it is fresh; about 30 s
    python -m wordstream.class_archive status            # where it is and whether it is used
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from wordstream.durable import write_json_atomically
from wordstream.settings import Settings
from wordstream.spark_env import spark_home

ARCHIVE_ENV = "WORDSTREAM_CLASS_ARCHIVE"
DEFAULT_NAME = "wordstream-spark-driver.jsa"
# The build runs the structured application this long: start, batches, graceful stop, as in use.
BUILD_STREAM_SECONDS = 8
BUILD_TIMEOUT_SECONDS = 600


def archive_path(env: Mapping[str, str] | None = None) -> Path | None:
    """Where the archive lives, or None when ``WORDSTREAM_CLASS_ARCHIVE`` is set empty."""
    env = os.environ if env is None else env
    configured = env.get(ARCHIVE_ENV)
    if configured is None:
        return Path(sys.prefix) / DEFAULT_NAME
    return Path(configured).resolve() if configured else None


def _stamp_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".json")


def java_binary(env: Mapping[str, str] | None = None) -> Path | None:
    """The ``java`` spark-submit runs: ``$JAVA_HOME/bin/java``, else the first on PATH."""
    env = os.environ if env is None else env
    if env.get("JAVA_HOME"):
        return Path(env["JAVA_HOME"]) / "bin" / "java"
    found = shutil.which("java", path=env.get("PATH"))
    return Path(found) if found else None


def fingerprint(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the archive depends on: the JVM library of that ``java``, and every Spark jar.

    Names, sizes and modification times only (no hashing of 400 MB of jars on each launch).
    """
    java = java_binary(env)
    jvm: list[str] = []
    if java is not None and java.exists():
        real = java.resolve()
        library = real.parent.parent / "lib" / "server" / "libjvm.so"
        target = library if library.exists() else real
        stat = target.stat()
        jvm = [str(target), str(stat.st_size), str(stat.st_mtime_ns)]
    jars = hashlib.sha256()
    for jar in sorted((spark_home() / "jars").iterdir()):
        stat = jar.stat()
        jars.update(f"{jar.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return {"jvm": " ".join(jvm), "jars": jars.hexdigest()}


def usable(env: Mapping[str, str] | None = None) -> Path | None:
    """The archive, if it exists and was built for this JDK and these jars; else None."""
    archive = archive_path(env)
    if archive is None or not archive.is_file():
        return None
    try:
        stamp = json.loads(_stamp_path(archive).read_text())
        return archive if stamp == fingerprint(env) else None
    except (OSError, ValueError):
        return None


def driver_options(env: Mapping[str, str] | None = None) -> list[str]:
    """The driver JVM's options for the archive: none unless it is usable.

    Spark's launcher splits Java options at white space, so an archive path with spaces or quotes
    is not passed at all (``WORDSTREAM_CLASS_ARCHIVE`` can move it).
    """
    archive = usable(env)
    if archive is None or any(char.isspace() or char in "\"'\\" for char in str(archive)):
        return []
    return [f"-XX:SharedArchiveFile={archive}"]


def build(env: Mapping[str, str] | None = None, force: bool = False) -> Path | None:
    """Build the archive unless a usable one exists; returns it (None when disabled).

    Raises RuntimeError (with the run's last lines) when the run fails or writes no archive.
    """
    from wordstream.engines.app_args import AppArgs
    from wordstream.spark_env import application, conf_arguments, spark_env, spark_submit_binary, submit_conf

    env = dict(os.environ if env is None else env)
    archive = archive_path(env)
    if archive is None or (not force and usable(env) is not None):
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="wordstream-class-archive-") as scratch:
        settings = Settings.from_env({**env, "WORDSTREAM_DATA_DIR": str(Path(scratch) / "data")})
        settings.ensure_dirs()
        (settings.watch("structured") / "words.txt").write_text("the spark word count\n" * 40)
        conf = submit_conf(settings, shared_classes=False)
        conf["spark.driver.defaultJavaOptions"] += f" -XX:ArchiveClassesAtExit={partial} -Xlog:cds=off"
        args = AppArgs.for_engine(settings, "structured", batch_seconds=1, timeout=BUILD_STREAM_SECONDS)
        command = [spark_submit_binary(), "--master", "local[2]", *conf_arguments(conf),
                   application("structured"), *args.to_argv()]
        run_env = {**env, **spark_env(env), "WORDSTREAM_DATA_DIR": str(settings.data_dir)}
        try:
            done = subprocess.run(command, env=run_env, capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_SECONDS, check=False)
            if done.returncode != 0 or not partial.is_file():
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
                raise RuntimeError(f"building {archive} failed (exit {done.returncode}):\n{tail}")
            write_json_atomically(_stamp_path(archive), fingerprint(env))
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
    return archive


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wordstream.class_archive",
                                     description="The Spark driver JVM's class-data sharing archive.")
    parser.add_argument("command", choices=("build", "status"))
    parser.add_argument("--force", action="store_true", help="rebuild even if the archive is fresh")
    options = parser.parse_args(argv)
    archive = archive_path()
    if archive is None:
        print(f"class archive: disabled ({ARCHIVE_ENV} is empty)")
        return 0
    if options.command == "status":
        used = bool(driver_options())
        state = "in use" if used else ("not usable: rebuild it" if archive.exists() else "missing")
        print(f"class archive: {archive} ({state})")
        return 0 if used else 1
    if not options.force and usable() is not None:
        print(f"class archive: {archive} is up to date")
        return 0
    print(f"class archive: building {archive} (a short Spark run, about 30 s) ...", flush=True)
    try:
        build(force=options.force)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        print(f"class archive: {error}", file=sys.stderr)
        return 1
    print(f"class archive: {archive} ({archive.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
