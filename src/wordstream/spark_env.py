"""How to launch spark-submit so it runs the Spark this project pinned.

``spark-submit`` finds SPARK_HOME through whichever ``python3`` is first on PATH, so a launcher
(Airflow's task, a test, the stack) must set PATH, SPARK_HOME and the Python of driver and executors
explicitly. One definition, used everywhere spark-submit is started.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from wordstream.settings import SPARK_APPS_DIR, Engine, Settings

# Spark's logging for driver and executors: WARN, plus what Airflow's SparkSubmitHook parses.
LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
# spark-submit first runs a launcher JVM that only prints the driver's command line and exits: the
# client compiler alone and the serial collector start it in 0.12-0.18 s instead of 0.35 s. The
# driver's JVM keeps its defaults (C2 for a stream that runs for weeks).
LAUNCHER_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def spark_home() -> Path:
    """The pip-installed pyspark folder: a full Spark with bin/spark-submit and jars/."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed in this Python; run `make setup`")
    return Path(spec.origin).parent


def spark_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables to add to a spark-submit's environment (PATH with this venv's bin first).

    Spark binds its driver, block manager and UI to ``SPARK_LOCAL_IP``: loopback unless the caller
    set another address (a driver that cluster executors must reach, as in docker-compose). The
    launcher JVM's options (:data:`LAUNCHER_JAVA_OPTS`) give way to the caller's own.
    """
    base = os.environ if base is None else base
    bin_dir = str(Path(sys.executable).parent)
    path = base.get("PATH", "/usr/bin:/bin")
    if path.split(os.pathsep)[0] != bin_dir:
        path = os.pathsep.join([bin_dir, path])
    return {
        "PATH": path,
        "SPARK_HOME": str(spark_home()),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": base.get("SPARK_LOCAL_IP") or "127.0.0.1",
        "SPARK_LAUNCHER_OPTS": base.get("SPARK_LAUNCHER_OPTS") or LAUNCHER_JAVA_OPTS,
    }


def spark_submit_binary() -> str:
    return str(spark_home() / "bin" / "spark-submit")


def application(engine: Engine) -> str:
    """The path of an engine's Spark application file."""
    return str(SPARK_APPS_DIR / f"{engine}_wordcount.py")


def submit_conf(settings: Settings, shared_classes: bool = True) -> dict[str, str]:
    """The Spark conf every wordstream application is submitted with (``--conf`` pairs).

    The knobs of :meth:`Settings.spark_conf`, plus the JVM options: the log4j2 configuration for
    driver and executors, and for the driver the class-data sharing archive when one fits
    (:mod:`wordstream.class_archive`; ``shared_classes=False`` leaves it out). They go into Spark's
    ``defaultJavaOptions``, so a user's own ``extraJavaOptions`` add to them. In client mode the
    driver's options take effect only on the spark-submit command line: its JVM is already running
    when the application's code starts.
    """
    from wordstream import class_archive

    log_config = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    driver = [log_config, *(class_archive.driver_options() if shared_classes else [])]
    return {
        **settings.spark_conf(),
        "spark.driver.defaultJavaOptions": " ".join(driver),
        "spark.executor.defaultJavaOptions": log_config,
    }


def conf_arguments(conf: Mapping[str, str]) -> list[str]:
    """``--conf key=value`` for each setting, as spark-submit takes them."""
    return [item for key, value in conf.items() for item in ("--conf", f"{key}={value}")]


def prefer_installed_pyspark(path: list[str] | None = None) -> list[str]:
    """Drop spark-submit's ``pyspark.zip`` from ``path`` (``sys.path``) where pip's pyspark is installed.

    spark-submit puts ``$SPARK_HOME/python/lib/pyspark.zip`` first on a Python driver's path, and
    Python keeps no compiled modules for a zip: every driver start compiled pyspark again (0.4 s on
    an idle machine, more beside a starting JVM). With pip's pyspark that zip lies inside the
    installed package, the same code with its compiled modules cached: the applications call this
    before they import pyspark, to import that one. Returns the entries it removed.
    """
    path = sys.path if path is None else path
    entries = {Path(entry) for entry in path if entry}

    def installed_twin(entry: str) -> bool:
        parents = Path(entry).parents  # <site-packages>/pyspark/python/lib/pyspark.zip
        if not entry.endswith("pyspark.zip") or len(parents) < 3:
            return False
        package = parents[2]
        return package.name == "pyspark" and (package / "__init__.py").is_file() and package.parent in entries

    removed = [entry for entry in path if installed_twin(entry)]
    path[:] = [entry for entry in path if entry not in removed]
    return removed
