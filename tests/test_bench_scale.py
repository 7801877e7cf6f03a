"""The scale benchmark's parts that a unit test can check in seconds (bench/synthetic.py, bench/scale.py):
the synthetic corpus (seeded, streaming, log-normal lengths, topic clusters, near-duplicates, words
that are single GPT-2 tokens) and the measuring helpers (/proc sampling, event-log parsing,
projection). The benchmark itself (a standalone cluster, minutes to hours) is `make bench-scale`."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, as_name: str):
    """A bench script as a module (bench/ is not a package; scale.py imports ``synthetic`` by name)."""
    if as_name in sys.modules:
        return sys.modules[as_name]
    spec = importlib.util.spec_from_file_location(as_name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[as_name] = module
    spec.loader.exec_module(module)
    return module


synthetic = _load("synthetic", "synthetic")
scale = _load("scale", "bench_scale")


def batches(spec, source=0):
    return list(synthetic.iter_batches(spec, source))


def texts(spec, source=0):
    return [t for b in batches(spec, source) for t in b.text.to_pylist()]


def test_seeded_and_layout_independent_of_consumer():
    spec = synthetic.CorpusSpec(n_docs=1500, batch_docs=500, docs_per_file=500)
    a, b = texts(spec), texts(spec)
    assert a == b and len(a) == 1500
    other = texts(synthetic.CorpusSpec(n_docs=1500, batch_docs=500, docs_per_file=500, seed=1))
    assert sum(x == y for x, y in zip(a, other)) == 0
    ids = [i for b in batches(spec) for i in b.ids]
    assert ids == [f"synth-{i:09d}" for i in range(1500)]


def test_words_are_real_single_gpt2_tokens():
    from mixweave.data.tokenizer import load_tokenizer

    words = synthetic.word_list()
    assert len(words) > 5000 and words[:3] == ("the", "and", "that")
    assert len(set(words)) == len(words)
    tok = load_tokenizer("default")
    spec = synthetic.CorpusSpec(n_docs=50, batch_docs=50, docs_per_file=50)
    b = batches(spec)[0]
    for text, n_words in zip(b.text.to_pylist(), b.n_words.tolist()):
        assert len(text.split(" ")) == n_words
        n_tokens = len(tok.encode(" " + text))  # with its leading space every word is one token
        assert n_tokens == n_words


def test_lengths_are_lognormal_and_clipped():
    spec = synthetic.CorpusSpec(n_docs=10_000, median_words=128, sigma=1.0, min_words=8, max_words=4096,
                                batch_docs=5000, docs_per_file=5000, dup_rate=0.0)
    n = np.concatenate([b.n_words for b in batches(spec)])
    assert n.min() >= 8 and n.max() <= 4096
    assert abs(np.median(n) / 128 - 1) < 0.05
    logs = np.log(n[(n > 8) & (n < 4096)])
    assert abs(logs.std() - 1.0) < 0.08  # clipping trims a little of both tails
    assert n.mean() > 1.4 * np.median(n)  # long right tail (log-normal: mean = median x e^(sigma^2/2))


def _bow(texts, vocab):
    index = {w: i for i, w in enumerate(vocab)}
    X = np.zeros((len(texts), len(vocab)))
    for r, text in enumerate(texts):
        for w in text.split(" "):
            X[r, index[w]] += 1
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def test_topics_cluster_and_near_duplicates_are_near():
    spec = synthetic.CorpusSpec(n_docs=2000, batch_docs=1000, docs_per_file=1000, docs_per_topic=200, dup_rate=0.05)
    bs = batches(spec)
    docs = [t for b in bs for t in b.text.to_pylist()]
    topic = np.concatenate([b.topic for b in bs])
    dup_of = np.concatenate([b.dup_of for b in bs])
    assert spec.n_topics == 10 and len(set(topic.tolist())) == 10
    # bag-of-words cosine: same topic far above different topics (the background words are shared)
    X = _bow(docs, synthetic.word_list())
    originals = np.flatnonzero(dup_of < 0)[:600]
    S = X[originals] @ X[originals].T
    same = topic[originals][:, None] == topic[originals][None, :]
    off_diag = ~np.eye(len(originals), dtype=bool)
    assert S[same & off_diag].mean() > S[~same].mean() + 0.1
    # a document's nearest original is of its own topic nearly always
    np.fill_diagonal(S, -1)
    assert (topic[originals][S.argmax(1)] == topic[originals]).mean() > 0.9
    # near-duplicates: ~5 %, each a copy of an earlier original of the same batch with ~2 % of words edited
    dups = np.flatnonzero(dup_of >= 0)
    assert 0.03 < dups.size / 2000 < 0.07
    for j in dups.tolist():
        s = int(dup_of[j])
        assert s < j and s // 1000 == j // 1000 and dup_of[s] < 0 and topic[s] == topic[j]
        a, b = docs[j].split(" "), docs[s].split(" ")
        assert len(a) == len(b) and np.mean([x == y for x, y in zip(a, b)]) > 0.9
        if len(a) >= 50:  # a 2 % edit of a short document is a word or two: not near in every encoder
            assert float(X[j] @ X[s]) > 0.95


def test_written_corpus_streams_files_and_is_cached(tmp_path):
    spec = synthetic.CorpusSpec(n_docs=1200, n_sources=2, batch_docs=200, docs_per_file=400)
    folder, summary = synthetic.ensure_corpus(spec, tmp_path)
    assert folder.name == spec.key() and (folder / synthetic.MARKER).is_file()
    for s, name in enumerate(["synth0", "synth1"]):
        files = sorted((folder / name).glob("*.parquet"))
        assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet"]
        table = pq.read_table(files)  # written = generated, in global-index order
        assert table.column("text").to_pylist() == texts(spec, s)
        assert summary["sources"][name]["n_docs"] == 600
    mtime = (folder / synthetic.MARKER).stat().st_mtime_ns
    again, _ = synthetic.ensure_corpus(spec, tmp_path)  # cached: not rewritten
    assert again == folder and (folder / synthetic.MARKER).stat().st_mtime_ns == mtime
    zst = synthetic.CorpusSpec(n_docs=300, batch_docs=100, docs_per_file=300, format="jsonl.zst")
    zfolder, _ = synthetic.ensure_corpus(zst, tmp_path)
    import zstandard

    raw = zstandard.ZstdDecompressor().stream_reader(open(zfolder / "synth" / "part-00000.jsonl.zst", "rb")).read()
    rows = [json.loads(line) for line in raw.decode().splitlines()]
    assert [r["text"] for r in rows] == texts(zst) and rows[0]["id"] == "synth-000000000"


def test_spec_checks():
    with pytest.raises(ValueError):
        synthetic.CorpusSpec(n_docs=10, docs_per_file=150, batch_docs=100)
    with pytest.raises(ValueError):
        synthetic.CorpusSpec(n_docs=10, min_words=200, median_words=100)


def test_sampler_sees_a_child_tree_peak_rss_and_cpu():
    code = ("import os, time\nchild = os.fork()\nif child == 0:\n"
            "    x = bytearray(200 * 2**20)\n    for i in range(0, len(x), 4096): x[i] = 1\n"
            "    t = time.process_time()\n    while time.process_time() - t < 0.25: pass\n    time.sleep(1.0)\n"
            "    os._exit(0)\nos.waitpid(child, 0)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = scale.Sampler(driver=proc.pid, workers=[], interval=0.05).start()
    proc.wait()
    sampler.stop()
    peaks = sampler.peak_by_role()
    assert peaks["other"] >= 200 * 2**20  # the forked child (role from its command line)
    assert peaks["driver_python"] < 100 * 2**20  # the parent never touched the buffer
    assert sampler.samples[-1]["cpu_s"] >= 0.2
    window = sampler.window(sampler.samples[0]["t"], sampler.samples[-1]["t"])
    assert window["max_rss"]["other"] >= 200 * 2**20 and window["cpu_s"] >= 0.2
    assert scale.read_status(proc.pid) is None and scale.read_cpu_s(proc.pid) is None
    me = scale.read_status(os.getpid())
    assert me["VmHWM"] >= me["VmRSS"] > 0


def test_classify_spark_processes():
    table = {
        1: (0, "/usr/bin/python -m mixweave.cli run c.yaml"),
        2: (1, "/usr/lib/jvm/java-17/bin/java -cp x org.apache.spark.deploy.SparkSubmit pyspark-shell"),
        3: (0, "/usr/lib/jvm/java-17/bin/java -cp x org.apache.spark.deploy.worker.Worker spark://127.0.0.1:7077"),
        4: (3, "/usr/lib/jvm/java-17/bin/java -cp x org.apache.spark.executor.CoarseGrainedExecutorBackend --app-id a"),
        5: (4, "/venv/bin/python -m pyspark.daemon"),
        6: (5, "/venv/bin/python -m pyspark.daemon"),
    }
    roles = {pid: scale.classify(pid, table) for pid in table}
    assert roles == {1: "other", 2: "driver_jvm", 3: "worker_daemon", 4: "executor_jvm", 5: "python_daemon",
                     6: "python_worker"}
    assert sorted(scale.descendants(3, table)) == [4, 5, 6] and scale.descendants(6, table) == []


def test_event_log_shuffle_bytes_by_stage_window(tmp_path):
    def task(stage, finish_ms, written, remote, local, spilled=0, peak=0):
        return {"Event": "SparkListenerTaskEnd", "Stage ID": stage, "Task Type": "ShuffleMapTask",
                "Task Info": {"Task ID": finish_ms, "Launch Time": finish_ms - 10, "Finish Time": finish_ms,
                              "Failed": False},
                "Task Metrics": {"Peak Execution Memory": peak, "Memory Bytes Spilled": spilled, "Disk Bytes Spilled": 0,
                                 "Shuffle Read Metrics": {"Remote Bytes Read": remote, "Local Bytes Read": local},
                                 "Shuffle Write Metrics": {"Shuffle Bytes Written": written}}}

    lines = [{"Event": "SparkListenerApplicationStart", "App Name": "mixweave", "Timestamp": 1000},
             task(0, 10_500, 100, 0, 0, peak=7), task(0, 11_000, 50, 0, 0, peak=9),
             task(1, 20_100, 0, 30, 120, spilled=4), {"Event": "SparkListenerTaskEnd", "Stage ID": 2,
                                                       "Task Info": {"Finish Time": 40_000, "Failed": True}}]
    path = tmp_path / "app-1"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    tasks = scale.parse_event_log(path)
    assert len(tasks) == 4 and tasks[0]["shuffle_write_bytes"] == 100 and tasks[2]["shuffle_read_bytes"] == 150
    out = scale.shuffle_by_window(tasks, {"knn": (10.0, 15.0), "order": (20.0, 21.0), "pack": (30.0, 50.0)})
    assert out["knn"] == {"tasks": 2, "shuffle_write_bytes": 150, "shuffle_read_bytes": 0, "spill_bytes": 0,
                          "max_peak_execution_memory": 9, "failed_tasks": 0}
    assert out["order"]["shuffle_read_bytes"] == 150 and out["order"]["spill_bytes"] == 4
    assert out["pack"]["tasks"] == 1 and out["pack"]["failed_tasks"] == 1


def test_projection_scales_with_nodes_and_swaps_gpu_embedding():
    cost = {"embed": 2e-3, "knn": 1e-3, "order": 5e-4}
    proj = scale.projection(cost, n_docs=1e8, nodes=(8, 32), cores_per_node=16, gpus_per_node=4,
                            gpu_embed_docs_per_s=10_000)
    h8, h32 = proj["nodes"][8], proj["nodes"][32]
    assert math.isclose(h8["cpu_embedding_h"]["knn"], 1e-3 * 1e8 / (8 * 16) / 3600)
    assert math.isclose(h8["total_cpu_embedding_h"], 4 * h32["total_cpu_embedding_h"])
    assert math.isclose(h8["gpu_embedding_h"]["embed"], 1e8 / (8 * 4 * 10_000) / 3600)
    assert h8["gpu_embedding_h"]["knn"] == h8["cpu_embedding_h"]["knn"]
    assert math.isclose(proj["order_cpu_h"], 5e-4 * 1e8 / 3600) and proj["paper_traversal_cpu_h"] == 240



def test_marginal_cost_removes_fixed_costs():
    # stage cost = fixed + per-document: 30 s + 2 ms/doc and 5 s + 0.5 ms/doc, measured at 10k and 40k docs
    def per_doc(n, fixed, slope):
        return (fixed + slope * n) / n

    c1 = {"embed": per_doc(10_000, 30, 2e-3), "order": per_doc(10_000, 5, 5e-4)}
    c2 = {"embed": per_doc(40_000, 30, 2e-3), "order": per_doc(40_000, 5, 5e-4), "pack": 1e-3}
    out = scale.marginal_cost(10_000, c1, 40_000, c2)
    assert set(out) == {"embed", "order"}
    assert math.isclose(out["embed"], 2e-3) and math.isclose(out["order"], 5e-4)
    assert scale.marginal_cost(10, {"x": 2.0}, 20, {"x": 0.5})["x"] == 0.0  # a noisy drop is floored at 0
