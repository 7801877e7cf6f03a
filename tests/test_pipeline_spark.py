"""The whole plan on the real fixture corpus: ingest -> count -> embed -> knn -> dedup -> order -> pack ->
utility -> mix -> export -> train, on the session's shared ``full_run`` (tests/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixweave.data.artifacts import load_keep, load_order
from mixweave.data.manifest import read_manifest, verify_stage
from mixweave.data.typed import to_plain
from mixweave.data.mixture_manifest import read_mixture_manifest
from mixweave.data.windows import read_windows, windows_info
from mixweave.pipeline.runner import run_stages
from mixweave.pipeline.stages import build_stages

pytestmark = [pytest.mark.timeout(600)]

SEQ_LEN = 256  # the full run's (tests/conftest.py, ``full_run``)


def test_every_stage_ran_and_verifies(full_run):
    out, reports = full_run.out, full_run.reports
    assert full_run.seq_len == SEQ_LEN
    assert [r.name for r in reports] == ["ingest", "count", "embed", "knn", "dedup", "order", "pack", "utility", "mix",
                                         "export", "train", "study"]
    assert reports[-1].status == "disabled"  # no study section here (tests/test_study.py runs one)
    reports = reports[:-1]
    assert all(r.status == "ran" for r in reports)
    for r in reports:
        verify_stage(out / r.name)


def test_embeddings_are_normalised_and_aligned(full_run):
    out = full_run.out
    manifest = read_manifest(out / "embed")
    ingest = read_manifest(out / "ingest")
    for source, info in manifest["embeddings"].items():
        X = np.concatenate([np.load(out / "embed" / f) for f in info["files"]])
        assert X.dtype == np.float32 and X.shape == (ingest["sources"][source]["n_docs"], 384)
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)


def test_order_is_a_permutation_of_kept_docs(full_run):
    out = full_run.out
    for source, info in read_manifest(out / "dedup")["dedup"].items():
        keep = load_keep(out / "dedup", source)
        order = load_order(out / "order", source)
        assert order.dtype == np.int64
        assert sorted(order.tolist()) == np.flatnonzero(keep).tolist()
        metrics = json.loads((out / "order" / source / "metrics.json").read_text())
        if info["kept"] > 20:
            # the ICP path links related documents far more often than a random order
            assert metrics["mean_adjacent_cosine"] > metrics["random_order_mean_adjacent_cosine"]
            assert metrics["jump_rate"] < metrics["random_order_jump_rate"]


def test_windows_are_exact_and_hold_the_ordered_stream(full_run):
    from mixweave.data.tokenizer import load_tokenizer

    out = full_run.out
    info = windows_info(out / "pack")
    tok = load_tokenizer()
    for source, entry in info.sources.items():
        windows = read_windows(out / "pack", source)
        assert windows.shape == (entry["n_windows"], SEQ_LEN) and windows.dtype == np.uint16
        if entry["n_windows"] == 0:
            continue
        # rebuild the EOS-joined stream in ICP order; un-shuffle windows with the spans' window ids
        order = load_order(out / "order", source)
        texts = []
        for f in read_manifest(out / "ingest")["sources"][source]["files"]:
            texts.extend(pq.read_table(out / "ingest" / f, columns=["text"]).column("text").to_pylist())
        stream = np.concatenate([np.append(tok.encode(texts[i]), tok.eos_id) for i in order])
        spans = pq.read_table(out / "pack" / "spans" / source / "part-00000.parquet").to_pandas()
        first_doc = spans.sort_values(["window_id", "start"]).groupby("window_id").first()
        # every window appears in the stream exactly where its first span says
        offsets = np.concatenate([[0], np.cumsum([len(tok.encode(texts[i])) + 1 for i in order])])
        position = {int(d): offsets[k] for k, d in enumerate(order)}
        for window_id, row in first_doc.head(20).iterrows():
            begin = position[int(row["doc"])] + int(row["doc_offset"])
            np.testing.assert_array_equal(windows[window_id], stream[begin : begin + SEQ_LEN])


def test_mixture_uses_window_tokens(full_run):
    out = full_run.out
    mixture = read_mixture_manifest(out / "mix" / "mixture.json")
    info = windows_info(out / "pack")
    assert mixture["order"] == {"method": "icp", "windows": "../pack"}
    assert mixture["method"]["name"] == "utilimax" and mixture["method"]["status"] == "optimal"
    assert all(s["utility"] for s in mixture["sources"])  # the utility stage's table reached the manifest
    assert abs(sum(s["weight"] for s in mixture["sources"]) - 1) < 1e-9
    for s in mixture["sources"]:
        assert s["n_tokens"] == info.sources[s["name"]]["n_tokens"]
        assert s["epochs"] <= s["max_epochs"] + 1e-9
    assert (out / "mix" / "mixture.png").stat().st_size > 1000


@pytest.mark.spark
def test_rerun_skips_and_partitioning_does_not_change_bytes(full_run, small_runs, tmp_path):
    out = full_run.out
    again = run_stages(build_stages(), full_run.config_for(out))
    assert (again[-1].name, again[-1].status) == ("study", "disabled")  # no study section here
    assert all(r.status == "skipped" for r in again[:-1]), [(r.name, r.status) for r in again]
    # the small runs' reference config (3 sources, 90 documents, embedded in process) with embed as a Spark
    # job on 5 tasks, on the reference's ingest: the same bytes. (Ingest on Spark, 1 or 5 tasks, equals
    # ingest in process on this corpus: tests/test_ingest_spark.py; the embed job on any tasks equals
    # in-process embedding, unit by unit: tests/test_jobs_embed.py.) The stages after embed are not rerun:
    # each is a function of its inputs' bytes and its config section, which do not change here (another
    # process recomputing them writes the same bytes: tests/test_e2e.py's resumed runs).
    reference, other = small_runs.reference, tmp_path / "run"
    order = small_runs.config_data(reference, small_runs.globs)["order"]
    on_spark = {"spark": {"partitions": 5}, "order": {**order, "embed_distributed_min_docs": 0}}
    reports = run_stages(build_stages(), small_runs.config(other, small_runs.globs, **on_spark), wanted=["embed"],
                         overrides={"ingest": reference / "ingest"})
    assert {r.name: r.status for r in reports} == {"ingest": "skipped", "embed": "ran"}
    assert read_manifest(reference / "embed")["path"] == "in_process" and read_manifest(other / "embed")["path"] == "spark"
    files = [f for f in read_manifest(reference / "embed")["files"] if f["path"] != "cost.json"]  # wall times
    assert len(files) >= 3 and files == [f for f in read_manifest(other / "embed")["files"] if f["path"] != "cost.json"]


def test_report_renders_in_headless_chromium(full_run, tmp_path):
    import re

    from test_report_browser import render

    from mixweave.pipeline.report import write_report

    out = full_run.out
    report = write_report(out, tmp_path / "report.html")
    text = report.read_text()
    headings = re.findall(r"<h[12]>(.*?)</h[12]>", text)
    assert headings == ["mixweave run", "Sources", "Quarantine", "Mixture: utilimax", "Skills", "Utility",
                        "In-Context Pretraining order", "Semantic dedup (cosine ≥ 0.95)", "Stage timings"]
    assert "<script" not in text and text.count("data:image/png;base64,") >= 3
    seen = render(report, tmp_path / "chromium")
    assert seen["headings"] == headings  # every section rendered, in order
    assert len(seen["images"]) == text.count("<img") and all(i["width"] > 0 and i["height"] > 0
                                                            for i in seen["images"]), seen["images"]
    assert seen["errors"] == []


def test_exports_and_training_ran(full_run):
    out = full_run.out
    exports = read_manifest(out / "export")["exports"]
    assert set(exports) == {"megatron", "mds"} and all(e["windows"] > 0 for e in exports.values())
    assert (out / "export" / "megatron" / "_manifest.json").is_file()
    train = read_manifest(out / "train")["train"]
    assert train["finished"] and train["last_step"] == 3 and train["first_loss"] > 0


def test_partitioned_order_stage_is_a_permutation_close_to_global(full_run, tmp_path):
    out = full_run.out
    from mixweave.data.typed import to_plain

    # the full run's order settings (so upstream fingerprints match and its stages are reused) + 4 clusters
    config = full_run.config_for(tmp_path / "run", order={**to_plain(full_run.config.order), "partitions": 4})
    reused = {name: out / name for name in ("ingest", "count", "embed", "knn", "dedup")}
    reports = run_stages(build_stages(), config, wanted=["order"], overrides=reused)
    assert {r.name: r.status for r in reports}["order"] == "ran"
    assert all(r.status == "skipped" for r in reports if r.name != "order")
    for source in read_manifest(out / "dedup")["dedup"]:
        order = load_order(tmp_path / "run" / "order", source)
        assert np.array_equal(np.sort(order), np.sort(load_order(out / "order", source)))
        part = json.loads((tmp_path / "run" / "order" / source / "metrics.json").read_text())
        whole = json.loads((out / "order" / source / "metrics.json").read_text())
        if whole.get("mean_adjacent_cosine") and whole["n_docs"] > 40:
            assert part["mean_adjacent_cosine"] > part["random_order_mean_adjacent_cosine"]
            assert part["mean_adjacent_cosine"] >= 0.8 * whole["mean_adjacent_cosine"]
