"""End to end through the CLI in subprocesses: crash and resume, determinism, a real Spark cluster.

Every scenario (tests/e2e_scenarios.py) runs ``mixweave run`` on the small runs' three 30-document
sources (tests/conftest.py, ``small_corpus``) with the same settings, and compares artifacts by the
sha256 lists of their manifests against the session's ``reference`` run of that config
(``small_runs``: 90 small documents, every stage in process, no Spark job). Crash scenarios start
from a copy of the reference's stages before the one they break. The cluster scenario (spark-submit
onto a standalone master and a one-core worker) runs ingest, embed, knn, dedup, order and pack on
their Spark paths (``ON_SPARK_INGEST``, ``DISTRIBUTED_ORDER``): its ingest, count and embed are compared
with the reference's here; its knn, dedup, order and pack with the in-process path on the same inputs
by tests/test_jobs_knn.py, test_jobs_order.py and test_jobs_pack.py (the run is conftest's
``distributed_run``). The failure scenario (every stage in process, no java on PATH) kills a run while
it embeds, crashes its rerun by injected fault before pack commits, and resumes it.

The scenarios are independent processes: tests/conftest.py starts them all with the first test that
uses a shared run and these tests, ordered last, each wait for their own and check it: the suite
waits for the slowest scenario, and the other tests run meanwhile.
"""

from __future__ import annotations

import signal

import pytest
from e2e_scenarios import STAGES, SUBMIT_SHUFFLE_PARTITIONS, fingerprints

from mixweave.data.manifest import read_manifest

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def scenarios(e2e_scenarios):
    return e2e_scenarios


def assert_spark_paths(out, reference) -> None:
    """A scenario run with ``ON_SPARK_INGEST`` and ``DISTRIBUTED_ORDER``: ingest, count and embed (on
    Spark; the reference's in process) equal the reference's, and every source of order and pack took
    its Spark path (their bytes against the in-process path: tests/test_jobs_order.py, test_jobs_pack.py)."""
    got, ref = fingerprints(out), fingerprints(reference)
    first = STAGES.index("knn")
    assert {s: got[s] for s in STAGES[:first]} == {s: ref[s] for s in STAGES[:first]}
    assert read_manifest(out / "ingest")["path"] == "spark" and read_manifest(reference / "ingest")["path"] == "in_process"
    assert read_manifest(out / "embed")["path"] == "spark" and read_manifest(reference / "embed")["path"] == "in_process"
    assert {e["path"] for e in read_manifest(out / "knn")["knn"].values()} == {"spark"}
    assert {e["path"] for e in read_manifest(out / "order")["order"].values()} == {"spark"}
    assert {e["path"] for e in read_manifest(out / "pack")["windows"]["sources"].values()} == {"spark"}


# ------------------------------------------------------------------------------------------ tests
def test_spark_submit_master_and_conf_win(scenarios):
    run = scenarios.cluster.result()
    assert run.master_started, "the Spark master did not start: " + run.log
    assert run.result.returncode == 0, run.result.stderr[-3000:] + run.log
    ingest = read_manifest(run.out / "ingest")
    assert ingest["spark_master"] == run.master  # spark-submit's --master won over the config's local[2]
    # and its --conf over mixweave's default (shuffle partitions 8): session_settings
    # (spark-submit's JVM relays the Python driver's stderr to its own stdout)
    ours = [line for line in (run.result.stdout + run.result.stderr).splitlines() if " mixweave." in line]
    assert any(f"shuffle partitions={SUBMIT_SHUFFLE_PARTITIONS}" in line for line in ours), "\n".join(ours)[-3000:]
    assert ingest["counts"]["n_docs"] > 0 and ingest["counts"]["input_equals_kept_plus_quarantined"]
    assert "report:" in run.result.stdout and (run.out / "report.html").is_file()
    assert_spark_paths(run.out, scenarios.reference)


def test_standalone_cluster_equals_local(scenarios):
    run = scenarios.cluster.result()
    assert run.master_started, "the Spark master did not start: " + run.log
    assert run.result.returncode == 0, run.result.stderr[-3000:] + run.log
    assert run.one_core_executor, run.log  # the worker launched the executor that ran the tasks, with one core
    assert read_manifest(run.out / "ingest")["spark_master"].startswith("spark://")
    assert_spark_paths(run.out, scenarios.reference)


def test_sigkill_mid_run_then_rerun_redoes_only_the_killed_stage(scenarios):
    run = scenarios.failures.result()
    assert run.after_kill["reached_embed"], "the run never reached the embed stage"
    assert run.after_kill["returncode"] == -signal.SIGKILL
    assert run.after_kill["ingest"]
    assert not run.after_kill["embed"]  # the half-done stage is invisible
    assert "ingest     skipped" in run.crashed.stderr and "embed      ran" in run.crashed.stderr, run.crashed.stderr[-3000:]
    # 90 small documents: no JVM, and no java on PATH or under JAVA_HOME (e2e_scenarios.NO_JAVA)
    assert "spark session" not in run.crashed.stderr + run.resumed.stderr
    assert run.resumed.returncode == 0, run.resumed.stderr[-3000:]
    assert fingerprints(run.out) == fingerprints(scenarios.reference)


def test_fault_injection_then_resume_is_identical(scenarios):
    run = scenarios.failures.result()
    assert run.crashed.returncode == 77, run.crashed.stderr[-2000:]
    assert "order      ran" in run.crashed.stderr
    assert run.after_crash["order"]  # earlier stages kept
    assert not run.after_crash["pack"] and not run.after_crash["mix"]  # no partial artifact exposed
    assert run.resumed.returncode == 0, run.resumed.stderr[-3000:]
    assert "order      skipped" in run.resumed.stderr and "pack       ran" in run.resumed.stderr
    assert fingerprints(run.out) == fingerprints(scenarios.reference)
    assert not list(run.out.glob(".*.tmp-*"))
