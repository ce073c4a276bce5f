"""A session-scoped in-process SparkSession for transform tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from wordstream.spark_env import spark_env


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    os.environ.update(spark_env())
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
