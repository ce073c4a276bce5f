"""A session-scoped in-process SparkSession for transform tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from wordstream.spark_env import spark_env


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    os.environ.update(spark_env())
    # py4j logs "Closing down clientserver connection" from __del__ at interpreter exit, after pytest
    # closed its log streams: a "--- Logging error ---" traceback after every run.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder
        .master("local[2]")
        .appName("wordstream-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()
