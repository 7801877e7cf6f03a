"""End to end through the CLI in subprocesses: crash and resume, determinism, a real Spark cluster.

Every scenario runs ``mixweave run`` on the small runs' three 30-document sources (tests/conftest.py,
``small_corpus``) with the same settings, and compares artifacts by the sha256 lists of their
manifests against the session's ``reference`` run of that config (``small_runs``: in process, on
local[2]). Crash scenarios start from a copy of the reference's stages before the one they break.

The scenarios are independent processes, each in its own folder, so the module starts them all at
once (the ones that need the reference as soon as it exists) and each test waits for its own and
checks it: the suite waits for the slowest scenario, not for their sum.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mixweave.data.manifest import read_manifest

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).parents[1]
STAGES = ("ingest", "count", "embed", "knn", "dedup", "order", "pack", "mix")


FAST_JVM_FLAGS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""Short-lived test JVMs: C1 only (C2's warm-up costs more CPU than it saves in a job of seconds)."""


def write_config(corpus, work: Path, master: str = "local[2]") -> Path:
    """The reference's config as YAML (JSON is YAML) with ``spark.master``, writing to ``work/out``."""
    work.mkdir(parents=True, exist_ok=True)
    conf = {"spark.driver.extraJavaOptions": FAST_JVM_FLAGS, "spark.executor.extraJavaOptions": FAST_JVM_FLAGS}
    data = corpus.config_data(work / "out", corpus.globs, spark={"master": master, "driver_memory": "1g", "conf": conf})
    (work / "c.yaml").write_text(json.dumps(data, indent=1))
    return work / "c.yaml"


def copy_stages(reference: Path, out: Path, stages: tuple[str, ...]) -> None:
    """The reference's finished ``stages`` into ``out``: a later run skips them (same fingerprints)."""
    for stage in stages:
        shutil.copytree(reference / stage, out / stage)


def env(**extra: str) -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", SPARK_LOCAL_IP="127.0.0.1",
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
# Each returns what its test checks; none asserts, so a failure is reported by the test it belongs to.


def fault_then_resume(corpus, work: Path, reference: Path):
    config, out = write_config(corpus, work), work / "out"
    copy_stages(reference, out, STAGES[:STAGES.index("pack")])  # ingest .. order done
    crashed = mixweave_run(config, MIXWEAVE_FAULT="pack:before_manifest")
    after_crash = {"order": read_manifest(out / "order") is not None, "pack": (out / "pack").exists(),
                   "mix": (out / "mix").exists()}
    return types.SimpleNamespace(out=out, crashed=crashed, after_crash=after_crash, resumed=mixweave_run(config))


def sigkill_then_rerun(corpus, work: Path, reference: Path):
    config, out = write_config(corpus, work), work / "out"
    copy_stages(reference, out, ("ingest",))
    proc = subprocess.Popen([sys.executable, "-m", "mixweave.cli", "run", str(config)], env=env(), cwd=ROOT,
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
    return types.SimpleNamespace(out=out, after_kill=after_kill, rerun=mixweave_run(config))


def standalone_cluster(corpus, work: Path):
    """A real Spark standalone master and worker on loopback, started with the classes pyspark ships."""
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
            return types.SimpleNamespace(master_started=False, log=log_path.read_text()[-2000:], result=None, out=None)
        worker = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                                   "--host", "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port", str(_free_port())],
                                  env=cluster_env, stdout=logs, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        result = mixweave_run(write_config(corpus, work, master=f"spark://127.0.0.1:{port}"))
        return types.SimpleNamespace(master_started=True, log=log_path.read_text()[-2000:], result=result,
                                     out=work / "out")
    finally:
        for proc in (worker, master):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        logs.close()


def spark_submit_local1(corpus, work: Path):
    """The whole run under spark-submit (it needs a .py entry file, mixweave/submit.py) with
    ``--master local[1]``, which wins over the config's local[2]: one task at a time must give the
    reference's bytes."""
    import pyspark

    config = write_config(corpus, work)
    spark_submit_bin = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    entry = subprocess.run([sys.executable, "-m", "mixweave.submit", "--path"], capture_output=True, text=True,
                           check=True).stdout.strip()
    result = subprocess.run(
        [str(spark_submit_bin), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         "--driver-java-options", FAST_JVM_FLAGS, "--conf", f"spark.executor.extraJavaOptions={FAST_JVM_FLAGS}",
         entry, "run", str(config)],
        capture_output=True, text=True, env=env(), timeout=600, stdin=subprocess.DEVNULL, cwd=work,
    )
    return types.SimpleNamespace(result=result, out=work / "out")


@pytest.fixture(scope="module")
def scenarios(request, small_corpus, tmp_path_factory):
    """Every scenario started at once: those that only need the input first, then the in-process
    reference is built (``small_runs``) while they run, then the two that copy from it."""
    import pyspark.sql  # noqa: F401 - imported here once: a first import racing in two threads fails

    root = tmp_path_factory.mktemp("e2e")
    corpus = small_corpus
    with ThreadPoolExecutor(max_workers=4) as pool:
        started = {"submit_local1": pool.submit(spark_submit_local1, corpus, root / "submit_local1"),
                   "standalone": pool.submit(standalone_cluster, corpus, root / "standalone")}
        reference = request.getfixturevalue("small_runs").reference
        started["fault"] = pool.submit(fault_then_resume, corpus, root / "fault", reference)
        started["sigkill"] = pool.submit(sigkill_then_rerun, corpus, root / "sigkill", reference)
        yield types.SimpleNamespace(reference=reference, **started)


# ------------------------------------------------------------------------------------------ tests
def test_spark_submit_local1_equals_local2(scenarios):
    run = scenarios.submit_local1.result()
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    ingest = read_manifest(run.out / "ingest")
    assert ingest["spark_master"] == "local[1]"  # spark-submit's --master won over the config's local[2]
    assert ingest["counts"]["n_docs"] > 0 and ingest["counts"]["input_equals_kept_plus_quarantined"]
    assert "report:" in run.result.stdout and (run.out / "report.html").is_file()
    assert fingerprints(run.out) == fingerprints(scenarios.reference)
    assert (run.out / "mix/mixture.json").read_bytes() == (scenarios.reference / "mix/mixture.json").read_bytes()


def test_fault_injection_then_resume_is_identical(scenarios):
    run = scenarios.fault.result()
    assert run.crashed.returncode == 77, run.crashed.stderr[-2000:]
    assert "order      skipped" in run.crashed.stderr
    assert run.after_crash["order"]  # earlier stages kept
    assert not run.after_crash["pack"] and not run.after_crash["mix"]  # no partial artifact exposed
    assert run.resumed.returncode == 0, run.resumed.stderr[-3000:]
    assert "order      skipped" in run.resumed.stderr and "pack       ran" in run.resumed.stderr
    assert fingerprints(run.out) == fingerprints(scenarios.reference)
    assert not list(run.out.glob(".*.tmp-*"))


def test_sigkill_mid_run_then_rerun_is_identical(scenarios):
    run = scenarios.sigkill.result()
    assert run.after_kill["reached_embed"], "the run never reached the embed stage"
    assert run.after_kill["returncode"] == -signal.SIGKILL
    assert run.after_kill["ingest"]
    assert not run.after_kill["embed"]  # the half-done stage is invisible
    assert run.rerun.returncode == 0, run.rerun.stderr[-3000:]
    assert fingerprints(run.out) == fingerprints(scenarios.reference)


def test_standalone_cluster_equals_local(scenarios):
    run = scenarios.standalone.result()
    assert run.master_started, "the Spark master did not start: " + run.log
    assert run.result.returncode == 0, run.result.stderr[-3000:] + run.log
    assert fingerprints(run.out) == fingerprints(scenarios.reference)
