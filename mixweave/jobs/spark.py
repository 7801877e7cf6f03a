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


DEFAULT_DRIVER_MEMORY = "2g"
"""The driver heap when neither the run config, spark-defaults.conf nor spark-submit sets one."""

JVM_OPTION_KEYS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


def session_settings(defaults: Mapping[str, str], conf: Mapping[str, str] | None,
                     launched: Mapping[str, str], site: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """What :func:`get_spark` gives the session builder, by precedence: mixweave's ``defaults``, then
    the Spark install's spark-defaults.conf (``site``, read by :func:`site_defaults` when mixweave
    starts the JVM), then the run config's ``conf``, then what the JVM was launched with
    (``launched``: spark-submit's ``--conf`` and spark-defaults.conf, empty when mixweave starts the
    JVM), which wins as spark-submit's ``--master`` does: its keys are not set again (they would
    override it). JVM options are joined instead (ours, the site's, the config's, the launch's: later
    flags win), so the quiet log4j file and the class-data archive stay. Returns (settings, the
    launched keys that replaced ours or the config's)."""
    settings = dict(defaults)
    for layer in (site or {}, conf or {}):
        for key, value in layer.items():
            settings[key] = f"{settings[key]} {value}" if key in JVM_OPTION_KEYS and key in settings else str(value)
    replaced = []
    for key, value in sorted(launched.items()):
        if key not in settings:
            continue
        if key in JVM_OPTION_KEYS:
            if value not in settings[key]:
                settings[key] = f"{settings[key]} {value}"
                replaced.append(key)
        else:
            if settings.pop(key) != value:
                replaced.append(key)
    return settings, replaced


def run_conf(driver_memory: str | None, conf: Mapping[str, str] | None) -> dict[str, str]:
    """The run config's layer of :func:`session_settings`: ``spark.conf``, with ``spark.driver_memory``
    (when set) as ``spark.driver.memory`` unless ``spark.conf`` names that key itself."""
    layer = {} if driver_memory is None else {"spark.driver.memory": str(driver_memory)}
    return {**layer, **{k: str(v) for k, v in (conf or {}).items()}}


def read_spark_defaults(text: str) -> dict[str, str]:
    """The ``spark.*`` settings of a spark-defaults.conf, read as Spark reads it (a Java properties
    file: ``key value``, ``key=value`` or ``key: value`` a line, ``#``/``!`` comments, surrounding blanks
    dropped); other keys are ignored, as Spark ignores them."""
    import re

    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        match = re.match(r"([^\s=:]+)\s*[=:]?\s*(.*)", line)
        if match and match.group(1).startswith("spark."):
            found[match.group(1)] = match.group(2).strip()
    return found


def site_defaults() -> tuple[dict[str, str], Path | None]:
    """(settings, file) of the spark-defaults.conf that a JVM mixweave starts reads too:
    ``$SPARK_CONF_DIR/spark-defaults.conf``, else ``conf/`` of ``$SPARK_HOME`` (for pip's pyspark, its
    package folder). Empty when there is none or it cannot be read; under spark-submit the launch
    already holds it (:func:`launched_conf`)."""
    conf_dir = os.environ.get("SPARK_CONF_DIR")
    if not conf_dir:
        try:
            from pyspark.find_spark_home import _find_spark_home

            conf_dir = str(Path(_find_spark_home()) / "conf")
        except Exception:  # noqa: BLE001 - no Spark home found: no site file
            return {}, None
    path = Path(conf_dir) / "spark-defaults.conf"
    try:
        return read_spark_defaults(path.read_text(encoding="utf-8", errors="replace")), path
    except OSError:
        return {}, None


def launched_conf() -> dict[str, str]:
    """The spark.* settings the running JVM was launched with under spark-submit (its ``--conf`` and
    spark-defaults.conf); empty when mixweave launches the JVM itself."""
    if not under_spark_submit():
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def get_spark(
    master: str | None = "local[*]",
    *,
    app_name: str = "mixweave",
    driver_memory: str | None = None,
    conf: Mapping[str, str] | None = None,
):
    """Return a SparkSession (created once per process; later calls reuse it). ``driver_memory``, when
    given, is the run config's word (over spark-defaults.conf); unset, the site's or 2g."""
    prepare_environment()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from .spark_cds import archive_flags

    # the class-data archive of Spark's classes when one is built for this java and these jars
    # (mixweave/jobs/spark_cds.py: ~3 of the ~6.5 CPU-seconds a JVM start costs)
    java_opts = " ".join(filter(None, [f"-Dlog4j2.configurationFile=file:{LOG4J2_FILE} -XX:+UseSerialGC", archive_flags()]))
    defaults = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": "8",
        # every join of ours is per document (labels, kNN edges, order positions, texts): a broadcast
        # join would collect one side through the driver, whose memory must not grow with documents
        # (a 300k-document order failed so with a 1g driver); shuffle joins only
        "spark.sql.autoBroadcastJoinThreshold": "-1",
        "spark.driver.extraJavaOptions": java_opts,
        "spark.executor.extraJavaOptions": java_opts,
        "spark.driver.memory": DEFAULT_DRIVER_MEMORY,
        "spark.sql.session.timeZone": "UTC",
        "spark.executorEnv.PYTHONHASHSEED": "0",
        # PySpark's daemon, importing the installed pyspark (cached bytecode) instead of compiling
        # Spark's pyspark.zip in every Python worker: mixweave/jobs/pyspark_daemon.py
        "spark.python.daemon.module": "mixweave.jobs.pyspark_daemon",
    }
    conf = run_conf(driver_memory, conf)
    site, site_file = ({}, None) if under_spark_submit() else site_defaults()
    settings, left_to_launch = session_settings(defaults, conf, launched_conf(), site=site)
    overridden = sorted(k for k in site if k in defaults and k not in conf)
    if overridden:
        LOG.info("%s sets %s: its values are kept over mixweave's defaults", site_file, ", ".join(overridden))
    if left_to_launch:
        LOG.info("spark-submit set %s: its values are kept (JVM options after mixweave's)", ", ".join(left_to_launch))
    builder = SparkSession.builder.appName(app_name)
    if master and not under_spark_submit():
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - py4j/JVM failures have no common base class
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        memory = settings.get("spark.driver.memory", "as launched")
        raise InputError(f"Spark did not start with master {master!r} and driver memory {memory!r} ({first[:300]}); "
                         "check spark.master, spark.driver_memory, spark.conf and that Java 17 is installed") from None
    spark.sparkContext.setLogLevel("ERROR")
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        Interrupt.chain()
    LOG.info("spark session: master=%s parallelism=%d shuffle partitions=%s", spark.sparkContext.master,
             spark.sparkContext.defaultParallelism, spark.conf.get("spark.sql.shuffle.partitions"))
    return spark
