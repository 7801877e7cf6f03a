"""Shared fixtures: one local[2] Spark session per test run, offline model settings, data paths,
and the pipeline runs that the slow tests share (each made once per test session):

* ``small_runs`` -- three 30-document sources (books, code, web) of the fixture corpus, run in
  process through ``mix`` (``reference``), plus the same without books through ``mix`` (``two``).
  Both are below every Spark threshold (``ingest.distributed_min_mb``, ``order.embed_distributed_min_docs``,
  ``order.distributed_min_docs``): no stage runs a Spark job.
  tests/test_e2e.py compares every CLI run (spark-submit onto a one-core standalone cluster,
  ``distributed_run``; SIGKILL, then a crash by injected fault, then a resume; subprocesses started
  with the session, ``e2e_scenarios``) against ``reference``;
  tests/test_hardening.py compares ``two`` with ``reference`` and edits copies of ``two``.
* ``full_run`` -- all nine fixture sources through every stage (in process: 1.4 MB, 449 documents):
  utility (embedding), UtiliMax, Megatron and MDS exports and a 3-step training run. tests/test_pipeline_spark.py checks every
  stage; tests/test_run_exports.py reuses it up to ``pack`` (its own UniMax ``mix`` and all-format
  ``export`` go to its own folders through ``overrides``) and reads the exports with each
  trainer's library.
* ``distributed_run`` -- the cluster scenario's run (tests/e2e_scenarios.py: spark-submit onto a
  one-core standalone cluster, started with the session as a subprocess): the small corpus's three
  sources through ``export`` with ingest and every ICP stage on its Spark path (ingest and embed as
  Spark jobs, the exact kNN join, dedup, order as the sharded job with 3 clusters, pack with 3 windows a
  file, a Megatron export). tests/test_jobs_knn.py, test_jobs_order.py and test_jobs_pack.py each
  check their stage of that one run against the in-process path on the same inputs; tests/test_e2e.py
  checks its ingest, count and embed against ``reference``. Tests that use it run last (with
  test_e2e.py's), when the scenario has finished.

Tests must not change these folders (copy them, or write through ``overrides`` to a tmp folder).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import sys
import types
from pathlib import Path

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread a process (torch's intra-op pool, faiss, OpenBLAS), inherited by the workers'
# subprocesses (CLI runs, Spark's Python workers): `make test`'s two xdist workers already keep both
# cores busy, and two OpenMP threads each made four spinning threads on two cores. Whole suite, four
# alternated pairs (2026-12-04, two or one threads): 183.5 -> 167.9, 162.3 -> 156.8, 164.8 -> 150.8 and
# 187.1 -> 176.6 s of pytest; busy CPU 341.7 -> 307.0, 299.9 -> 290.4, 304.7 -> 275.1 and 347.6 ->
# 327.5 s. Tests that pin threads still set their own; OMP_NUM_THREADS=N overrides.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"

#: the full run's window length (tests/test_pipeline_spark.py, tests/test_run_exports.py)
FULL_SEQ_LEN = 256


FAST_JVM = {key: "-XX:TieredStopAtLevel=1" for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")}
"""JVM flags for the tests' short-lived Spark JVMs: the C1 compiler only (C2's warm-up costs more CPU
than it saves in a job of seconds); ``get_spark`` puts them after its own (log4j, SerialGC)."""

NO_CODEGEN = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
"""Interpreted Spark SQL for the tests' tiny jobs: compiling generated Java (Janino) for each plan costs
more JVM CPU than it saves on a few hundred rows (session start + the full run's ingest, measured side
by side: JVM 16.2 -> 14.4 CPU-s). Results do not depend on it."""


@pytest.fixture(scope="session")
def spark():
    """The tests' local[2] session. Two shuffle partitions, one per core: every shuffle still splits
    across tasks, and each stage of the tests' many tiny jobs schedules half the tasks it did with 4
    (Spark tests side by side: 128.5/113.1 -> 114.3/102.1 busy CPU-s). Tests whose claim is about
    partitioning set it themselves (tests/test_jobs_dedup.py, tests/test_jobs_order.py)."""
    from mixweave.jobs.spark import get_spark

    session = get_spark(
        "local[2]",
        driver_memory="2g",
        conf={"spark.sql.shuffle.partitions": "2", **FAST_JVM, **NO_CODEGEN},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return CORPUS


@pytest.fixture(scope="session")
def backend_embeddings():
    """``backend -> float32 [72, 384]``: tests/test_encoder_backends.py's 72 fixture documents embedded by
    one encoder backend (``MAX_TOKENS`` tokens, batches of 16, one thread), once per backend in a worker. The torch
    reference and OpenVINO f32 serve tests/test_encoder_backends.py and tests/test_openvino_bf16.py (one
    xdist unit, :data:`SHARED_UNITS`); the encoders are ``load_encoder``'s cached ones."""
    import torch

    from mixweave.retrieval.encoders import embed_texts, load_encoder
    from tests.test_encoder_backends import MAX_TOKENS, TEXTS

    done: dict = {}

    def get(backend: str):
        if backend not in done:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                enc = load_encoder("default", "cpu", backend="torch") if backend == "torch" else \
                    load_encoder("default", "cpu", backend=backend, threads=1)
                done[backend] = embed_texts(enc, TEXTS, max_tokens=MAX_TOKENS, batch_size=16)
            finally:
                torch.set_num_threads(before)
        return done[backend]

    return get


# ------------------------------------------------------------------- tiny trainer inputs (no Spark)
@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models run fastest on one torch thread (and stay fast on a busy 2-core machine); a module
    asks for it with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sample_inputs(tmp_path_factory):
    """``build_sample_inputs`` on the corpus fixture (books, code, web; a 512-id BPE trained on them,
    32-token windows), built once per distinct settings in the session: ``sample_inputs(**changes)``.
    Tests must not change its folders."""
    from mixweave.trainer.sample_data import build_sample_inputs

    built: dict = {}

    def make(**changes):
        settings = {"seq_len": 32, "corpus_dir": CORPUS, "sources": ["books", "code", "web"],
                    "max_chars_per_source": 20_000, "vocab_size": 512, **changes}
        key = json.dumps(settings, sort_keys=True, default=str)
        if key not in built:
            built[key] = build_sample_inputs(tmp_path_factory.mktemp("sample_inputs"), **settings)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_sample(sample_inputs):
    """The DoReMi, RegMix and learned-mix tests' pack: 20,000 characters a source."""
    return sample_inputs()


# ------------------------------------------------------------------------------- the small runs
def write_subset(root: Path, source: str, n: int, *, short: bool = False) -> str:
    """The first ``n`` documents of a fixture source (or ``n`` one-word documents) as one jsonl
    under ``root/source``; returns its glob."""
    folder = root / source
    folder.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for path in sorted((CORPUS / source).glob("*.jsonl")) if not short else []:
        lines.extend(path.read_text().splitlines())
    records = [json.dumps({"id": f"{source}-{i}", "text": "word"}) for i in range(n)] if short else lines[:n]
    (folder / "part.jsonl").write_text("\n".join(records) + "\n")
    return str(folder / "*.jsonl")


def small_config_data(out: Path, sources: dict[str, str], **extra) -> dict:
    """The small runs' settings as plain data (``mixweave run`` reads the same as YAML)."""
    data = {"out": str(out), "seed": 5, "sources": {n: {"paths": [g]} for n, g in sources.items()},
            "order": {"k": 4, "seq_len": 128, "max_tokens": 32, "batch_size": 64, "shard_rows": 16},
            "mix": {"method": "unimax", "max_epochs": 4}}
    data.update(extra)
    return data


def small_config(out: Path, sources: dict[str, str], **extra):
    from mixweave.pipeline.config import parse_config

    return parse_config(small_config_data(out, sources, **extra))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """The small runs' input: books, code and web, 30 documents each (name -> glob)."""
    data = tmp_path_factory.mktemp("small_corpus")
    return types.SimpleNamespace(data=data, globs={name: write_subset(data, name, 30) for name in ("books", "code", "web")},
                                 config_data=small_config_data)


@pytest.fixture(scope="session")
def small_runs(small_corpus, tmp_path_factory):
    """``reference``: books + code + web (30 documents each) through mix; ``two``: code + web."""
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    root = tmp_path_factory.mktemp("small_runs")
    data, globs = small_corpus.data, small_corpus.globs
    reference = root / "reference"
    run_stages(build_stages(), small_config(reference, globs))
    two = root / "two"
    run_stages(build_stages(), small_config(two, {"code": globs["code"], "web": globs["web"]}), wanted=["mix"])
    return types.SimpleNamespace(root=root, data=data, globs=globs, reference=reference, two=two,
                                 config=small_config, config_data=small_config_data, subset=write_subset)


@pytest.fixture(scope="session")
def cluster_run(small_corpus, tmp_path_factory):
    """The cluster scenario (tests/e2e_scenarios.py) started in a background thread: its future."""
    from e2e_scenarios import start_cluster

    pool, future = start_cluster(small_corpus, tmp_path_factory)
    yield future
    pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def distributed_run(cluster_run):
    """The cluster scenario's finished run (waits for it): ``out``, ``reports`` (stage -> status, from
    its output), ``order`` (its order settings), ``config_for(**changes)`` (its config with sections
    replaced, for in-process stages on its folders)."""
    from e2e_scenarios import stage_statuses

    from mixweave.pipeline.config import parse_config

    run = cluster_run.result()
    if not run.master_started or run.result.returncode != 0:
        output = "" if run.result is None else run.result.stderr[-3000:]
        pytest.fail(f"the cluster scenario's run failed (tests/test_e2e.py says how): {output}{run.log}")
    data = json.loads((run.out.parent / "c.yaml").read_text())
    return types.SimpleNamespace(out=run.out, reports=stage_statuses(run.result.stdout + run.result.stderr),
                                 order=data["order"], config_for=lambda **changes: parse_config({**data, **changes}))


# ------------------------------------------------------------------- the end-to-end CLI scenarios
SHARED_RUNS = frozenset({"small_runs", "distributed_run", "cluster_run", "full_run", "e2e_scenarios"})
"""The session fixtures that build pipeline runs (and the CLI scenarios compared with them)."""


@functools.lru_cache(maxsize=None)
def uses_shared_runs(test_file: Path) -> bool:
    """Whether a test file names one of :data:`SHARED_RUNS` (what the xdist controller, which collects
    nothing, can know of a file; ``pytest_collection_modifyitems`` checks it against the collection)."""
    return re.search(r"\b(" + "|".join(sorted(SHARED_RUNS)) + r")\b", Path(test_file).read_text()) is not None


SHARED_UNITS = {"test_encoder_backends.py": "encoder_backends", "test_openvino_bf16.py": "encoder_backends",
                "test_export.py": "shared_runs"}
"""Files without Spark that share session fixtures (``backend_embeddings``): one xdist unit, so one worker
computes each. tests/test_export.py joins the shared runs' unit: it reads exports with the trainers'
libraries, as the shared runs' export tests do, and their imports cost more than its tests (Megatron-Core
~3.3 CPU-s over torch, OLMo-core ~1.6, MosaicML Streaming ~1.0), paid once in one worker instead of in both."""


@functools.lru_cache(maxsize=None)
def uses_spark(test_file: Path) -> bool:
    """Whether a test file asks for the ``spark`` fixture or carries the ``spark`` marker (read from its
    text, as :func:`uses_shared_runs`)."""
    return re.search(r"def \w+\([^)]*\bspark\b|pytest\.mark\.spark", Path(test_file).read_text()) is not None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs the suite on two pytest-xdist workers (``-n 2``): every file that uses a shared
    run is one work unit (``shared_runs``, the largest, so the first handed out), so each run is built
    once, by one worker, with the e2e scenarios beside it; every other file that uses Spark joins a
    second unit (``spark_files``), so the other worker runs them one after the other on one warm session;
    the files of :data:`SHARED_UNITS` share a unit; every remaining file is a unit of its own (module
    fixtures built once).

    Why ``spark_files``: Spark's costs are mostly per session and per Python worker (JVM start, JIT
    warm-up, worker forks; Spark kills Python workers idle for 60 s), so Spark tests spread between
    other files pay them again and again. Measured on this machine (2026-12-03): the suite 299.8 s /
    572 busy CPU-s with one unit per file, 265.7 s / 505 CPU-s with ``spark_files``; with those files in
    ``shared_runs`` instead (one worker runs all Spark) 303.6 s / 534 CPU-s: less CPU, one overloaded
    worker."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = config.rootpath / nodeid.split("::", 1)[0]
            if uses_shared_runs(file):
                return "shared_runs"
            if uses_spark(file):
                return "spark_files"
            return SHARED_UNITS.get(file.name) or str(file.relative_to(config.rootpath))

    return SharedRunsTogether(config, log)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Once pytest is done in this process (after pytest's own last garbage collections, which surface
    unraisable exceptions): ``gc.freeze()``, so the interpreter's exit does not walk the ~900k objects
    an xdist worker holds by then (torch, transformers, Spark's py4j, ...) in its final collection.
    Both workers spent ~3 s with both cores busy in that exit after their last test."""
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    """tests/test_e2e.py and the tests that use ``distributed_run`` run last: their scenarios started with
    the shared runs (``cluster_run``, ``e2e_scenarios``); before them, the files that use Spark
    (:func:`uses_spark`) run first, back to back, so a worker's Spark session and Python workers stay
    warm instead of idling (Spark kills Python workers idle for 60 s) between files that need no Spark.
    The sort is stable: inside each group files and tests keep their order."""
    items.sort(key=lambda item: (item.path.name == "test_e2e.py" or "distributed_run" in getattr(item, "fixturenames", ()),
                                 not uses_spark(item.path)))
    missed = sorted({item.path.name for item in items if SHARED_RUNS & set(getattr(item, "fixturenames", ()))
                     and not uses_shared_runs(item.path)})
    if missed:  # a shared run reached through a fixture the file does not name: xdist would build it twice
        raise pytest.UsageError(f"{', '.join(missed)} use a shared run without naming it; name the fixture "
                                "(tests/conftest.py, uses_shared_runs)")


@pytest.fixture(scope="session")
def e2e_scenarios(small_corpus, small_runs, cluster_run, tmp_path_factory):
    """tests/test_e2e.py's CLI scenarios (tests/e2e_scenarios.py) in background threads: the cluster's
    (``cluster_run``, started first: it only needs the input) and the failure scenario's futures, and
    the ``reference`` they are compared with (built in process meanwhile)."""
    from e2e_scenarios import start_failures

    pool, failures = start_failures(small_corpus, tmp_path_factory, small_runs.reference)
    yield types.SimpleNamespace(reference=small_runs.reference, cluster=cluster_run, failures=failures)
    pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def _scenarios_wanted(request) -> tuple[bool, bool]:
    """(the cluster scenario is needed: a selected test uses ``distributed_run`` or is in
    tests/test_e2e.py; the others are needed: a test of tests/test_e2e.py is selected)."""
    e2e = any(item.path.name == "test_e2e.py" for item in request.session.items)
    return e2e or any("distributed_run" in getattr(item, "fixturenames", ()) for item in request.session.items), e2e


@pytest.fixture(autouse=True)
def _e2e_scenarios_start_with_the_shared_runs(request, _scenarios_wanted):
    """When a selected test needs them, the scenarios (subprocesses: Spark JVMs, a standalone cluster)
    start with the first test that uses a shared run (in the worker that has them, under xdist)
    instead of when the tests that check them come, so the other tests run meanwhile: alone, the suite
    leaves much of the two cores idle (Spark start-ups, subprocesses, waits)."""
    cluster, e2e = _scenarios_wanted  # e2e implies cluster
    if cluster and SHARED_RUNS & set(request.fixturenames):
        request.getfixturevalue("cluster_run")
        if e2e:
            request.getfixturevalue("e2e_scenarios")


# -------------------------------------------------------------------------------- the full run
def full_config(out: Path, **extra):
    """Every fixture source through every stage (utility, UtiliMax, Megatron + MDS exports, training)."""
    from mixweave.pipeline.config import parse_config

    sources = {d.name: {"paths": [str(d / "*.jsonl")]} for d in sorted(CORPUS.iterdir()) if d.is_dir()}
    data = {
        "out": str(out), "seed": 3, "sources": sources,
        "order": {"k": 8, "seq_len": FULL_SEQ_LEN, "max_tokens": 32, "batch_size": 64, "shard_rows": 16},
        "benchmarks": str(CORPUS / "benchmarks.jsonl"),
        "utility": {"method": "embedding", "per_source": 8, "max_tokens": 32},
        "mix": {"method": "utilimax", "max_epochs": 4},
        "export": {"formats": ["megatron", "mds"]},
        # 2 held-out windows a source for the final per-source eval (default 16: 9 x 16 windows of
        # 50257-way logits were half of the full run's training stage)
        "train": {"depth": 1, "steps": 3, "batch_size": 2, "log_interval": 1, "holdout_windows": 2},
    }
    data.update(extra)
    return parse_config(data)


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    out = tmp_path_factory.mktemp("full_run") / "run"
    config = full_config(out)
    reports = run_stages(build_stages(), config)
    return types.SimpleNamespace(out=out, config=config, reports=reports, corpus_dir=CORPUS, seq_len=FULL_SEQ_LEN,
                                 config_for=full_config)
