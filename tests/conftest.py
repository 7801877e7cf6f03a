"""Shared fixtures: one local[2] Spark session per test run, offline model settings, data paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"


@pytest.fixture(scope="session")
def spark():
    from mixweave.jobs.spark import get_spark

    session = get_spark(
        "local[2]",
        driver_memory="2g",
        conf={"spark.sql.shuffle.partitions": "4", "spark.driver.extraJavaOptions":
              f"-Dlog4j2.configurationFile=file:{Path(__file__).parents[1] / 'mixweave/jobs/log4j2.properties'}"
              " -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return CORPUS
