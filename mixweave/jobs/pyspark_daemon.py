"""PySpark's Python daemon (``spark.python.daemon.module``, set by :func:`mixweave.jobs.spark.get_spark`)
importing pyspark from the installed package instead of Spark's zips, and collecting a reused worker's
garbage without walking everything it imported.

Spark puts ``$SPARK_HOME/python/lib/pyspark.zip`` and ``py4j-*-src.zip`` first on its Python workers'
``PYTHONPATH``. Python never caches bytecode for modules imported from a zip, so the daemon and every
worker it forks compile pyspark's modules (``pyspark.worker``, ``pyspark.sql``, the Arrow serializers:
tens of thousands of lines) from source: about a CPU-second a worker, each time a worker starts. When
the same pyspark version is installed in the interpreter's site-packages (``pip install pyspark``, as
mixweave's dependencies do), this module drops the two zips from ``sys.path`` before importing
pyspark, so the daemon and its forks read the installed package's cached bytecode; then it runs
PySpark's own daemon unchanged. With another or no installed pyspark (a cluster's Spark distribution
whose workers' Python lacks it) the path is left as Spark set it.

Nothing else is imported before the fork: PySpark imports the worker module (pandas, pyarrow, which
start threads) only in the forked child, and so does this.

A reused worker runs ``gc.collect()`` after every task; in a worker that has imported pandas, pyarrow,
numba or torch that full collection walks 75,000-530,000 long-lived objects: 36-313 ms a task
(``bench/worker_gc.py``), more than most of our tasks take (the suite's Spark tests: 54 of ~100
Python-worker CPU-seconds over 749 tasks). The daemon's forks run :class:`CollectThenFreeze` instead:
collect, then ``gc.freeze()`` the survivors, so the next task's collection walks only the objects
created since (and every 64th walks everything).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import re
import sys
import zipfile

_VERSION = re.compile(r"""__version__(?:\s*:\s*str)?\s*=\s*["']([^"']+)["']""")


def _zip_version(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            match = _VERSION.search(archive.read("pyspark/version.py").decode())
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return match.group(1) if match else None


def _installed_version() -> str | None:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], "version.py"), encoding="utf-8") as f:
            match = _VERSION.search(f.read())
    except OSError:
        return None
    return match.group(1) if match else None


def prefer_installed_pyspark(path: list[str]) -> list[str]:
    """``path`` without Spark's ``pyspark.zip`` and ``py4j-*-src.zip`` when the pyspark found without them
    has the zip's version; otherwise ``path`` unchanged. Cost: one small zip read and one ``find_spec``."""
    zips = [p for p in path if os.path.basename(p) == "pyspark.zip"
            or (os.path.basename(p).startswith("py4j-") and p.endswith("-src.zip"))]
    spark_zip = next((p for p in zips if os.path.basename(p) == "pyspark.zip"), None)
    if spark_zip is None:
        return path
    wanted = _zip_version(spark_zip)
    kept = [p for p in path if p not in zips]
    before = sys.path[:]
    sys.path[:] = kept
    try:
        importlib.invalidate_caches()
        found = _installed_version() if importlib.util.find_spec("py4j") is not None else None
    finally:
        sys.path[:] = before
    return kept if wanted is not None and found == wanted else path


class CollectThenFreeze:
    """A stand-in for the ``gc`` module in PySpark's daemon, whose reused workers call ``gc.collect()``
    after each task: collect (the task's cyclic garbage is freed as before), then ``gc.freeze()`` what
    survived (modules, caches, loaded models), so each later collection costs O(objects the last task
    made) instead of O(everything imported). Trade-off: a frozen object that later becomes cyclic
    garbage is not found by those collections, so every ``full_every``-th call unfreezes first and
    collects everything (one full walk per ``full_every`` tasks, not one per task)."""

    def __init__(self, full_every: int = 64):
        self.full_every = full_every
        self.calls = 0

    def collect(self) -> int:
        self.calls += 1
        if self.calls % self.full_every == 0:
            gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        return found


if __name__ == "__main__":
    sys.path[:] = prefer_installed_pyspark(sys.path)
    from pyspark import daemon

    daemon.gc = CollectThenFreeze()  # the module's only use of gc: the reused worker's collect per task
    daemon.manager()
