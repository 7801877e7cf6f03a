"""A class-data-sharing archive (AppCDS) of Spark's classes, so every Spark JVM we start maps them
instead of loading, verifying and linking them again.

A Spark driver loads ~15,000 classes before its first job: ~3 of the ~6.5 CPU-seconds a PySpark
session costs to start, paid by every ``mixweave`` command that runs a stage (a Makefile of stages
starts one JVM per stage) and by every executor. Java 17 can dump the classes a run loaded into a
dynamic archive (``-XX:ArchiveClassesAtExit``) and map it at the next start
(``-XX:SharedArchiveFile``): session start 6.5 -> 3.3 CPU-seconds on the test machine.

:func:`build` runs a small representative Spark job (the ingest job on a generated corpus: file
listing, Arrow UDFs, windows, shuffles, collect) in a child process whose JVM dumps the archive when
it exits, and writes a sidecar naming the ``java`` binary and the Spark jars it was built against.
:func:`archive_flags` returns the JVM flags that use it only when both still match: a JVM that is
given an archive built by another JDK or against other jars would refuse it with a warning.
``make install`` builds it into the venv (``<sys.prefix>/share/mixweave``); ``MIXWEAVE_SPARK_CDS``
names another path, or ``off``. Cost: ~20 CPU-seconds once, ~170 MB of disk.

    python -m mixweave.jobs.spark_cds            # build (or rebuild) the archive
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SIDECAR_SUFFIX = ".json"


def archive_path() -> Path | None:
    """Where the archive lives: ``$MIXWEAVE_SPARK_CDS`` (``off``: nowhere), else the venv's share folder."""
    setting = os.environ.get("MIXWEAVE_SPARK_CDS", "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else Path(sys.prefix) / "share" / "mixweave" / "spark-classes.jsa"


def _java_binary() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else (Path(w) if (w := shutil.which("java")) else None)
    return found.resolve() if found is not None and found.exists() else None


def _spark_jars() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    return Path(list(spec.submodule_search_locations)[0]) / "jars"


def fingerprint() -> dict | None:
    """What the archive depends on: the ``java`` binary (path, size, mtime) and Spark's jars folder
    (names, sizes, mtimes). None without java."""
    java = _java_binary()
    if java is None:
        return None
    jars = _spark_jars()
    stat = java.stat()
    return {"java": [str(java), stat.st_size, stat.st_mtime_ns],
            "jars": sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in jars.glob("*.jar"))}


def archive_flags() -> str:
    """``-XX:SharedArchiveFile=...`` (and CDS logging off) when a built archive matches this java and
    these jars, else ``""``: the flags every Spark JVM of ours gets (driver and executors)."""
    path = archive_path()
    if path is None or not path.is_file():
        return ""
    try:
        recorded = json.loads(Path(str(path) + SIDECAR_SUFFIX).read_text())
    except (OSError, ValueError):
        return ""
    if recorded != fingerprint():
        return ""
    return f"-XX:SharedArchiveFile={path} -Xlog:cds=off -Xlog:cds+dynamic=off"


_WORKLOAD = """
import json, sys, tempfile
from pathlib import Path
from mixweave.jobs.spark import get_spark
from mixweave.jobs.ingest import run_ingest
from mixweave.pipeline.config import parse_config
root = Path(tempfile.mkdtemp())
for name in ("a", "b"):
    (root / name).mkdir()
    rows = [json.dumps({"id": f"{name}{i}", "text": f"document {i} of source {name}. " * 20}) for i in range(200)]
    (root / name / "part.jsonl").write_text("\\n".join(rows + ["not json"]) + "\\n")
spark = get_spark("local[2]", conf={"spark.driver.extraJavaOptions": "-XX:ArchiveClassesAtExit=" + sys.argv[1],
                                    "spark.sql.shuffle.partitions": "4"})
config = parse_config({"out": str(root / "out"), "sources": {n: {"paths": [str(root / n / "*.jsonl")]} for n in "ab"}})
run_ingest(spark, sources=config.sources, out_root=root / "out" / "ingest")
numbers = spark.range(1000)
numbers.groupBy((numbers.id % 7).alias("k")).count().toArrow()
spark.stop()
"""


def build(path: Path | None = None) -> Path:
    """Build the archive at ``path`` (default :func:`archive_path`) with its sidecar; returns the path.
    The workload runs in a child interpreter (its JVM writes the archive when it exits)."""
    path = Path(path) if path is not None else archive_path()
    if path is None:
        raise SystemExit("MIXWEAVE_SPARK_CDS=off: no archive to build")
    recorded = fingerprint()
    if recorded is None:
        raise SystemExit("no java found (JAVA_HOME or PATH): Spark needs Java 17")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        dumped = Path(tmp) / path.name
        env = dict(os.environ, MIXWEAVE_SPARK_CDS="off")  # build from scratch, not on an older archive
        done = subprocess.run([sys.executable, "-c", _WORKLOAD, str(dumped)], env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=600)
        if done.returncode != 0 or not dumped.is_file():
            raise SystemExit(f"the archive was not built (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        os.replace(dumped, path)
    Path(str(path) + SIDECAR_SUFFIX).write_text(json.dumps(recorded))
    return path


if __name__ == "__main__":
    print(f"spark class-data archive: {build()}")
