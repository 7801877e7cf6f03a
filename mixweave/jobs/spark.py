"""The Spark session builder every job uses.

``local[*]`` by default, any ``--master`` for a cluster; under ``spark-submit`` the session that
spark-submit created is reused (its master wins). Quiet console (a log4j2 file shipped in the
package, no progress bar, no UI port), Arrow enabled, and workers forced onto this interpreter
(``PYSPARK_PYTHON = sys.executable``) so UDFs import the same venv.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Mapping

from ..errors import InputError, Interrupt

LOG = logging.getLogger(__name__)
LOG4J2_FILE = Path(__file__).with_name("log4j2.properties")


def prepare_environment() -> None:
    """Environment every Spark process of ours needs; safe to call repeatedly."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")


def under_spark_submit() -> bool:
    """True when spark-submit launched this interpreter (its JVM gateway is already running);
    then the master and resources come from spark-submit's flags, not from our config."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(
    master: str | None = "local[*]",
    *,
    app_name: str = "mixweave",
    driver_memory: str = "2g",
    conf: Mapping[str, str] | None = None,
):
    """Return a SparkSession (created once per process; later calls reuse it)."""
    prepare_environment()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from .spark_cds import archive_flags

    # the class-data archive of Spark's classes when one is built for this java and these jars
    # (mixweave/jobs/spark_cds.py: ~3 of the ~6.5 CPU-seconds a JVM start costs)
    java_opts = " ".join(filter(None, [f"-Dlog4j2.configurationFile=file:{LOG4J2_FILE} -XX:+UseSerialGC", archive_flags()]))
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "8")
        # every join of ours is per document (labels, kNN edges, order positions, texts): a broadcast
        # join would collect one side through the driver, whose memory must not grow with documents
        # (a 300k-document order failed so with a 1g driver); shuffle joins only
        .config("spark.sql.autoBroadcastJoinThreshold", "-1")
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.executor.extraJavaOptions", java_opts)
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executorEnv.PYTHONHASHSEED", "0")
        # PySpark's daemon, importing the installed pyspark (cached bytecode) instead of compiling
        # Spark's pyspark.zip in every Python worker: mixweave/jobs/pyspark_daemon.py
        .config("spark.python.daemon.module", "mixweave.jobs.pyspark_daemon")
    )
    if master and not under_spark_submit():
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        if key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
            value = f"{java_opts} {value}"  # the user's JVM flags come after ours (quiet log4j) and win
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - py4j/JVM failures have no common base class
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise InputError(f"Spark did not start with master {master!r} and driver memory {driver_memory!r} ({first[:300]}); "
                         "check spark.master, spark.driver_memory, spark.conf and that Java 17 is installed") from None
    spark.sparkContext.setLogLevel("ERROR")
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        Interrupt.chain()
    LOG.info("spark session: master=%s parallelism=%d", spark.sparkContext.master, spark.sparkContext.defaultParallelism)
    return spark
