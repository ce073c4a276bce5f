"""The Python side and the JVM side of Spark are the same release.

The Spark provider depends on pyspark-client, which installs into the same ``pyspark/`` folder and
can overwrite pyspark's Python files with another version's.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pyspark

from wordstream.spark_env import spark_env, spark_home, spark_submit_binary


def test_pyspark_python_matches_spark_submit() -> None:
    run = subprocess.run([spark_submit_binary(), "--version"], env={**os.environ, **spark_env()},
                         capture_output=True, text=True, timeout=120, check=True)
    reported = re.search(r"version (\d+\.\d+\.\d+)", run.stdout + run.stderr)
    assert reported, run.stderr
    assert pyspark.__version__ == reported.group(1)


def test_spark_core_jar_matches_python() -> None:
    jars = [p.name for p in (spark_home() / "jars").glob("spark-core_*.jar")]
    assert jars and all(name.endswith(f"-{pyspark.__version__}.jar") for name in jars), jars


def test_requirements_pin_one_spark_version() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (Path(__file__).parents[2] / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["pyspark"] == pins["pyspark-client"] == pyspark.__version__
