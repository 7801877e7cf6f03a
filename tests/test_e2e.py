"""End to end through the CLI in subprocesses: crash and resume, determinism, a real Spark cluster.

Every test runs ``mixweave run`` on three sources of the real fixture corpus with small settings,
and compares artifacts by the sha256 lists of their manifests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixweave.data.manifest import read_manifest

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).parents[1]
CORPUS = ROOT / "tests" / "data" / "corpus"
STAGES = ("ingest", "count", "embed", "knn", "dedup", "order", "pack", "mix")


def write_config(path: Path, out: Path, master: str = "local[2]") -> Path:
    path.write_text(
        f"""out: {out}
seed: 1
spark: {{master: "{master}", driver_memory: 1g}}
sources:
  code:  {{paths: ["{CORPUS}/code/*.jsonl"]}}
  books: {{paths: ["{CORPUS}/books/*.jsonl"]}}
  web:   {{paths: ["{CORPUS}/web/*.jsonl"]}}
order: {{k: 5, max_tokens: 64, batch_size: 64, seq_len: 128}}
mix: {{method: unimax, max_epochs: 2}}
"""
    )
    return path


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    result = mixweave_run(write_config(tmp / "c.yaml", tmp / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "report:" in result.stdout
    return tmp / "out"


def test_local1_equals_local2(reference, tmp_path):
    result = mixweave_run(write_config(tmp_path / "c.yaml", tmp_path / "out", master="local[1]"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert fingerprints(tmp_path / "out") == fingerprints(reference)
    assert (tmp_path / "out/mix/mixture.json").read_bytes() == (reference / "mix/mixture.json").read_bytes()


def test_fault_injection_then_resume_is_identical(reference, tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "out")
    crashed = mixweave_run(config, MIXWEAVE_FAULT="pack:before_manifest")
    assert crashed.returncode == 77, crashed.stderr[-2000:]
    out = tmp_path / "out"
    assert read_manifest(out / "order") is not None  # earlier stages completed
    assert not (out / "pack").exists() and not (out / "mix").exists()  # no partial artifact exposed
    resumed = mixweave_run(config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "order      skipped" in resumed.stderr and "pack       ran" in resumed.stderr
    assert fingerprints(out) == fingerprints(reference)
    assert not list(out.glob(".*.tmp-*"))


def test_sigkill_mid_run_then_rerun_is_identical(reference, tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "out")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mixweave.cli", "run", str(config)], env=env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(out.glob(".embed.tmp-*")):  # killed while embedding
            time.sleep(0.2)
        assert list(out.glob(".embed.tmp-*")), "the run never reached the embed stage"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert read_manifest(out / "ingest") is not None
    assert not (out / "embed").exists()  # the half-done stage is invisible
    rerun = mixweave_run(config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert fingerprints(out) == fingerprints(reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_cluster_equals_local(reference, tmp_path):
    """A real Spark standalone master and worker on loopback, started with the classes pyspark ships."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    spark_class = spark_home / "bin" / "spark-class"
    port = _free_port()
    cluster_env = env(SPARK_HOME=str(spark_home), SPARK_LOG_DIR=str(tmp_path / "logs"),
                      SPARK_WORKER_DIR=str(tmp_path / "work"), SPARK_NO_DAEMONIZE="1")
    logs = open(tmp_path / "cluster.log", "w")
    master = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(_free_port())],
                              env=cluster_env, stdout=logs, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    worker = None
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the Spark master did not start: " + (tmp_path / "cluster.log").read_text()[-2000:])
        worker = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                                   "--host", "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port", str(_free_port())],
                                  env=cluster_env, stdout=logs, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        result = mixweave_run(write_config(tmp_path / "c.yaml", tmp_path / "out", master=f"spark://127.0.0.1:{port}"))
        assert result.returncode == 0, result.stderr[-3000:] + (tmp_path / "cluster.log").read_text()[-2000:]
        assert fingerprints(tmp_path / "out") == fingerprints(reference)
    finally:
        for proc in (worker, master):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        logs.close()


def test_runs_under_spark_submit(tmp_path):
    """spark-submit needs a .py entry file (mixweave/submit.py); its --master wins over ours."""
    import pyspark

    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    entry = subprocess.run([sys.executable, "-m", "mixweave.submit", "--path"], capture_output=True, text=True,
                           check=True).stdout.strip()
    result = subprocess.run(
        [str(spark_submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false", entry, "-v", "ingest",
         "--source", f"books={CORPUS}/books/*.jsonl", "--out", str(tmp_path / "ingest")],
        capture_output=True, text=True, env=env(), timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "ingest")
    assert manifest["spark_master"] == "local[1]"
    assert manifest["counts"]["n_docs"] > 0 and manifest["counts"]["input_equals_kept_plus_quarantined"]
