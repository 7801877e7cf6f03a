"""mixweave/jobs/pyspark_daemon.py: PySpark's workers import the installed pyspark (cached bytecode),
not Spark's pyspark.zip (compiled from source in every worker), only when the versions agree; a reused
worker's collection after each task walks only what the task made (``gc.freeze``), yet finds all
cyclic garbage."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pyspark
import pytest

from mixweave.jobs.pyspark_daemon import prefer_installed_pyspark

LIB = Path(pyspark.__file__).parent / "python" / "lib"
SPARK_ZIPS = [str(LIB / "pyspark.zip"), *map(str, sorted(LIB.glob("py4j-*-src.zip")))]

WHERE = """
import sys
from mixweave.jobs.pyspark_daemon import prefer_installed_pyspark
if sys.argv[1] == "prefer":
    sys.path[:] = prefer_installed_pyspark(sys.path)
import pyspark, pyspark.worker
print(pyspark.worker.__file__)
"""


def imported_from(*, prefer: bool, zips: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(zips))
    return subprocess.run([sys.executable, "-c", WHERE, "prefer" if prefer else "as-is"], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_spark_zips_are_dropped_when_the_installed_pyspark_has_their_version():
    assert len(SPARK_ZIPS) == 2 and all(Path(z).is_file() for z in SPARK_ZIPS)
    assert ".zip" in imported_from(prefer=False, zips=SPARK_ZIPS)  # what Spark's PYTHONPATH does
    installed = imported_from(prefer=True, zips=SPARK_ZIPS)
    assert ".zip" not in installed and Path(installed).is_file()
    path = ["/somewhere", *SPARK_ZIPS, "/else"]
    assert prefer_installed_pyspark(path) == ["/somewhere", "/else"]


def test_path_is_kept_when_the_zip_has_another_version_or_none(tmp_path):
    other = tmp_path / "lib" / "pyspark.zip"
    other.parent.mkdir()
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("pyspark/__init__.py", "")
        z.writestr("pyspark/version.py", "__version__: str = '0.0.1'\n")
    path = ["/a", str(other), SPARK_ZIPS[1]]
    assert prefer_installed_pyspark(path) == path
    broken = tmp_path / "broken" / "pyspark.zip"
    broken.parent.mkdir()
    broken.write_bytes(b"not a zip")
    assert prefer_installed_pyspark([str(broken)]) == [str(broken)]
    assert prefer_installed_pyspark(["/a", "/b"]) == ["/a", "/b"]


@pytest.mark.spark
def test_spark_python_workers_import_the_installed_pyspark(spark):
    assert spark.sparkContext.getConf().get("spark.python.daemon.module") == "mixweave.jobs.pyspark_daemon"

    def where(_):
        import pyspark.worker

        yield pyspark.worker.__file__

    files = spark.sparkContext.parallelize(range(4), 2).mapPartitions(where).collect()
    assert len(files) == 2 and not any(".zip" in f for f in files), files

    def frozen(_):
        import gc

        yield gc.get_freeze_count()

    # the daemon's forks collect-then-freeze after each task: reused workers hold frozen objects
    counts = spark.sparkContext.parallelize(range(4), 2).mapPartitions(frozen).collect()
    assert len(counts) == 2 and all(c > 0 for c in counts), counts


FREEZE = textwrap.dedent("""
    import gc, weakref
    from mixweave.jobs.pyspark_daemon import CollectThenFreeze

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return a

    collector = CollectThenFreeze(full_every=3)
    gc.disable()  # only the collector collects
    garbage = weakref.ref(cycle())  # a task's cyclic garbage
    kept = cycle()  # survives the task: frozen by the first collect
    assert collector.collect() > 0 and garbage() is None
    assert gc.get_freeze_count() > 0
    old = weakref.ref(kept)
    del kept  # a frozen object becomes cyclic garbage
    collector.collect()
    assert old() is not None  # the second collect walks only what was made since the first
    collector.collect()  # the third (full_every) unfreezes and walks everything
    assert old() is None
    print("ok")
""")


def test_collect_then_freeze_frees_every_cycle_and_walks_only_new_objects():
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
