"""The end-to-end scenarios of tests/test_e2e.py: each runs ``mixweave run`` (the CLI, in
subprocesses) on the small runs' three 30-document sources (tests/conftest.py, ``small_corpus``)
with the reference's settings and returns what its tests check; none asserts, so a failure is
reported by the test it belongs to.

They are independent processes, each in its own folder, started in background threads
(:func:`start_cluster`, :func:`start_failures`): tests/conftest.py starts them with the first test
that uses a shared run, whenever a test that needs them is selected, and orders those tests last, so
the rest of the suite runs while the scenarios do (the suite alone keeps the two cores far from busy:
Spark start-ups, subprocesses, waits). The cluster scenario's run is also conftest's
``distributed_run``: the run whose Spark-path stages tests/test_jobs_knn.py, test_jobs_order.py and
test_jobs_pack.py compare with the in-process path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from mixweave.data.manifest import read_manifest
from mixweave.jobs.spark_cds import archive_flags

ROOT = Path(__file__).parents[1]
STAGES = ("ingest", "count", "embed", "knn", "dedup", "order", "pack", "mix")


FAST_JVM_FLAGS = " ".join(filter(None, ["-XX:TieredStopAtLevel=1 -XX:+UseSerialGC", archive_flags()]))
"""Short-lived test JVMs: C1 only (C2's warm-up costs more CPU than it saves in a job of seconds), and
the class-data archive of Spark's classes where ``make install`` built one (mixweave/jobs/spark_cds.py;
JVMs that mixweave starts get it from ``get_spark``; spark-submit's driver and the standalone daemons
from these flags)."""


DISTRIBUTED_ORDER = {"partitions": 3, "distributed_min_docs": 0, "embed_distributed_min_docs": 0,
                     "pack_file_windows": 3}
"""The cluster scenario's order settings over the reference's: embed, knn, dedup, order (3 clusters) and
pack (3 windows a file) on their Spark paths. The run is conftest's ``distributed_run``: the tests of
tests/test_jobs_knn.py, test_jobs_order.py and test_jobs_pack.py compare each of those stages with the
in-process path on the same inputs."""


CLUSTER_EXPORT = {"formats": ["megatron"]}
"""The cluster scenario's export section: a Megatron export of the multi-file Spark pack."""


ON_SPARK_INGEST = {"distributed_min_mb": 0}
"""The cluster scenario's ingest settings: a Spark job (the reference, 90 small documents, ingests in
process), so the cluster's bytes are checked against the in-process ingest's."""


SUBMIT_SHUFFLE_PARTITIONS = 2
"""spark-submit's ``--conf spark.sql.shuffle.partitions`` in the cluster scenario: it must win over
mixweave's default (8), as ``--master`` wins over the config's master, and change no byte."""


NO_JAVA = {"PATH": str(Path(sys.executable).parent), "JAVA_HOME": "/nonexistent-java"}
"""Environment of the failure scenario's runs: no ``java`` on PATH nor under JAVA_HOME (a run below every
Spark threshold must not need one)."""


def write_config(corpus, work: Path, master: str = "local[2]", name: str = "c.yaml", ingest: dict | None = None,
                 export: dict | None = None, **order) -> Path:
    """The reference's config as YAML (JSON is YAML) at ``work/name`` with ``spark.master``, ``ingest``,
    ``export`` and ``order`` settings over the reference's, writing to ``work/out``."""
    work.mkdir(parents=True, exist_ok=True)
    conf = {"spark.driver.extraJavaOptions": FAST_JVM_FLAGS, "spark.executor.extraJavaOptions": FAST_JVM_FLAGS,
            "spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}  # conftest.NO_CODEGEN
    data = corpus.config_data(work / "out", corpus.globs, spark={"master": master, "driver_memory": "1g", "conf": conf})
    data["order"] = {**data["order"], **order}
    if ingest:
        data["ingest"] = ingest
    if export:
        data["export"] = export
    (work / name).write_text(json.dumps(data, indent=1))
    return work / name


def copy_stages(reference: Path, out: Path, stages: tuple[str, ...]) -> None:
    """The reference's finished ``stages`` into ``out``: a later run skips them (same fingerprints)."""
    for stage in stages:
        shutil.copytree(reference / stage, out / stage)


BASE_ENV = dict(os.environ)
"""The environment when the scenarios start (with the session): tests that run meanwhile may
monkeypatch ``os.environ`` (a temporary encoder cache, a fault), which the scenarios must not see."""


def env(**extra: str) -> dict:
    e = dict(BASE_ENV, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", SPARK_LOCAL_IP="127.0.0.1",
             PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    e.pop("MIXWEAVE_FAULT", None)
    e.update(extra)
    return e


def mixweave_run(config: Path, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mixweave.cli", "run", str(config)], capture_output=True, text=True,
                          env=env(**extra_env), timeout=600, stdin=subprocess.DEVNULL, cwd=ROOT)


def fingerprints(out: Path) -> dict:
    return {stage: read_manifest(out / stage)["files"] for stage in STAGES}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------- the scenarios


def kill_crash_and_resume(corpus, work: Path, reference: Path):
    """One run folder through three failures and recoveries: a run SIGKILLed while embedding (from a
    copy of the reference's ingest), a rerun that crashes by injected fault before pack's manifest
    (``MIXWEAVE_FAULT``, exit 77), and a resume that must end with the reference's bytes. Every stage
    runs in process (90 small documents: no JVM), and the three runs find no ``java`` (:data:`NO_JAVA`)."""
    config, out = write_config(corpus, work), work / "out"
    copy_stages(reference, out, ("ingest",))
    proc = subprocess.Popen([sys.executable, "-m", "mixweave.cli", "run", str(config)], env=env(**NO_JAVA), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(out.glob(".embed.tmp-*")) and proc.poll() is None:
            time.sleep(0.1)  # killed while embedding
        reached_embed = bool(list(out.glob(".embed.tmp-*")))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    after_kill = {"reached_embed": reached_embed, "returncode": proc.returncode,
                  "ingest": read_manifest(out / "ingest") is not None, "embed": (out / "embed").exists()}
    crashed = mixweave_run(config, MIXWEAVE_FAULT="pack:before_manifest", **NO_JAVA)
    after_crash = {"order": read_manifest(out / "order") is not None, "pack": (out / "pack").exists(),
                   "mix": (out / "mix").exists()}
    return types.SimpleNamespace(out=out, after_kill=after_kill, crashed=crashed, after_crash=after_crash,
                                 resumed=mixweave_run(config, **NO_JAVA))


def spark_submit_on_a_standalone_cluster(corpus, work: Path):
    """A real Spark standalone master and worker on loopback (the classes pyspark ships), the worker
    offering **one core**, and the whole run under spark-submit (it needs a ``.py`` entry file,
    mixweave/submit.py) with ``--master spark://...``, which wins over the config's local[2],
    :data:`ON_SPARK_INGEST` and :data:`DISTRIBUTED_ORDER` (and :data:`CLUSTER_EXPORT`): ingest and every
    ICP stage as Spark tasks on the cluster's executor, one task at a time. Its ingest, count and embed
    must give the reference's bytes (in process there: tests/test_e2e.py); knn, dedup, order and pack
    the in-process path's on the same inputs (the run is conftest's ``distributed_run``, which
    tests/test_jobs_knn.py, test_jobs_order.py and test_jobs_pack.py check). One from-scratch CLI run
    for every claim (spark-submit's master and conf, a cluster's executors, one task slot, each Spark
    path in a pipeline run): each costs ~50 CPU-seconds of the suite's budget."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    spark_class = spark_home / "bin" / "spark-class"
    port = _free_port()
    work.mkdir(parents=True, exist_ok=True)
    cluster_env = env(SPARK_HOME=str(spark_home), SPARK_LOG_DIR=str(work / "logs"),
                      SPARK_WORKER_DIR=str(work / "work"), SPARK_NO_DAEMONIZE="1",
                      SPARK_DAEMON_JAVA_OPTS=FAST_JVM_FLAGS)
    log_path = work / "cluster.log"
    logs = open(log_path, "w")  # noqa: SIM115 - closed in the finally below
    master = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(_free_port())],
                              env=cluster_env, stdout=logs, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    worker = None
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            return types.SimpleNamespace(master_started=False, log=log_path.read_text()[-2000:], result=None,
                                         out=None, master=None)
        worker = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                                   "--host", "127.0.0.1", "--cores", "1", "--memory", "2g", "--webui-port", str(_free_port())],
                                  env=cluster_env, stdout=logs, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        config = write_config(corpus, work, ingest=ON_SPARK_INGEST, export=CLUSTER_EXPORT,
                              **DISTRIBUTED_ORDER)  # master overridden below
        spark_submit_bin = spark_home / "bin" / "spark-submit"
        entry = subprocess.run([sys.executable, "-m", "mixweave.submit", "--path"], capture_output=True, text=True,
                               check=True).stdout.strip()
        result = subprocess.run(
            [str(spark_submit_bin), "--master", f"spark://127.0.0.1:{port}", "--conf", "spark.ui.enabled=false",
             "--conf", f"spark.sql.shuffle.partitions={SUBMIT_SHUFFLE_PARTITIONS}",  # wins over mixweave's 8
             "--driver-java-options", FAST_JVM_FLAGS, "--conf", f"spark.executor.extraJavaOptions={FAST_JVM_FLAGS}",
             entry, "run", str(config)],
            capture_output=True, text=True, env=env(), timeout=600, stdin=subprocess.DEVNULL, cwd=work,
        )
        log = log_path.read_text()
        # the worker logs each executor's command line: a one-core executor ran the tasks
        one_core_executor = "executor.CoarseGrainedExecutorBackend" in log and '"--cores" "1"' in log
        return types.SimpleNamespace(master_started=True, log=log[-2000:], result=result, out=work / "out",
                                     master=f"spark://127.0.0.1:{port}", one_core_executor=one_core_executor)
    finally:
        for proc in (worker, master):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        logs.close()


def start_cluster(small_corpus, tmp_path_factory) -> tuple[ThreadPoolExecutor, Future]:
    """The cluster scenario started in a background thread (it only needs the input); returns the pool
    (shut it down when done) and its future."""
    import pyspark.sql  # noqa: F401 - imported here once: a first import racing in two threads fails

    from mixweave.retrieval.encoder_backends import prepare_default_export

    # the runs' encoder export: built once, here, when the cache is empty (make install builds it), not by
    # several processes at once
    prepare_default_export()
    pool = ThreadPoolExecutor(max_workers=1)
    return pool, pool.submit(spark_submit_on_a_standalone_cluster, small_corpus, tmp_path_factory.mktemp("cluster"))


def start_failures(small_corpus, tmp_path_factory, reference: Path) -> tuple[ThreadPoolExecutor, Future]:
    """The failure scenario started in a background thread, once the reference exists (it copies from
    it); returns the pool and its future."""
    pool = ThreadPoolExecutor(max_workers=1)
    return pool, pool.submit(kill_crash_and_resume, small_corpus, tmp_path_factory.mktemp("failures"), reference)


STAGE_LINE = re.compile(r"^\s+(\w+)\s+(ran|skipped|disabled)\s+[\d.]+s\s", re.M)
"""A stage's report line in ``mixweave run``'s output (``cli/common.print_reports``)."""


def stage_statuses(output: str) -> dict[str, str]:
    """Stage name -> status from a ``mixweave run``'s output."""
    return dict(STAGE_LINE.findall(output))
