"""The Spark pack (mixweave.jobs.pack) equals the in-process pack byte for byte, and a run with
``distributed_min_docs: 0`` exports multi-file packs that the trainers' own libraries read.

Pure checks first (partition prefix sums + :func:`cut_windows` per partition == one-process
pack, on random documents, without Spark); then the Spark job on a real ingest of the fixture
corpus (GPT-2 tokenizer) for window lengths that make windows straddle one or several
partitions, plus_one on/off, shuffle on/off, 1 vs 3 tasks; then a pipeline run."""

from __future__ import annotations

import tempfile
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from streaming_import import import_streaming

from mixweave.jobs.pack import plan_cuts
from mixweave.retrieval.pack import cut_windows, pack_windows, shuffled_rows, spans_table

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
EOS = 0


# -- pure: partitions + prefix sums + cut_windows == pack_windows ---------------------------------------------


def partitioned_pack(docs, order, cuts_at, *, seq_len, plus_one, shuffle, seed):
    """What jobs.pack does, in one process: partitions of ``order`` cut at ``cuts_at``, per-partition
    counts, plan_cuts, cut_windows per partition with its spill, output rows by shuffled_rows."""
    parts = np.split(np.asarray(order), cuts_at)
    counts = {p: (len(ids), int(sum(len(docs[i]) for i in ids))) for p, ids in enumerate(parts) if len(ids)}
    cuts, summary = plan_cuts(counts, len(parts), seq_len=seq_len, plus_one=plus_one)
    n_win = summary["n_windows"]
    width = seq_len + plus_one
    windows = np.full((n_win, width), -1, np.int64)
    spans = []
    for c in cuts:
        ids = np.concatenate([parts[q] for q in [c["part"], *c["spill"]]])
        lengths = np.array([len(docs[i]) for i in ids], np.int64)
        flat = np.concatenate([np.asarray(docs[i], np.int64) for i in ids]) if ids.size else np.zeros(0, np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        cut = cut_windows(flat, starts, lengths, stream_base=c["base"], lo=c["lo"], hi=c["hi"], seq_len=seq_len,
                          plus_one=plus_one, eos_id=EOS, dtype=np.dtype(np.int32))
        rows = shuffled_rows(np.arange(c["lo"], c["hi"]), n_win, seed) if shuffle else np.arange(c["lo"], c["hi"])
        assert (windows[rows] == -1).all()  # each window is cut by exactly one partition
        windows[rows] = cut.windows
        spans.append(np.stack([rows[cut.span_window - c["lo"]], cut.span_start, ids[cut.span_seg], cut.span_end,
                               cut.span_doc_offset], 1))
    spans = np.concatenate(spans) if spans else np.zeros((0, 5), np.int64)
    spans = spans[np.lexsort((spans[:, 1], spans[:, 0]))]
    return windows, spans, summary


@pytest.mark.parametrize("seed", range(40))
def test_partitioned_cut_equals_one_process_pack(seed):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, 1000, size=int(rng.integers(0, 25))).tolist() for _ in range(int(rng.integers(1, 40)))]
    order = rng.permutation(len(docs))[: max(1, len(docs) - seed % 4)]
    cuts_at = np.sort(rng.integers(0, order.size + 1, size=int(rng.integers(0, 8))))  # empty partitions too
    seq_len, plus_one, shuffle = int(rng.integers(1, 60)), bool(seed % 2), bool(seed % 3)
    p = pack_windows(docs, order, seq_len=seq_len, eos_id=EOS, plus_one=plus_one, shuffle=shuffle, seed=seed)
    windows, spans, summary = partitioned_pack(docs, order, cuts_at, seq_len=seq_len, plus_one=plus_one,
                                               shuffle=shuffle, seed=seed)
    assert summary["n_windows"] == p.n_windows and summary["dropped_tokens"] == p.dropped_tokens
    assert summary["stream_tokens"] == p.stream_tokens
    assert np.array_equal(windows, p.windows)
    expected = np.stack([p.span_window, p.span_start, p.span_doc, p.span_end, p.span_doc_offset], 1)
    assert np.array_equal(spans, expected.reshape(-1, 5))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 17, 64, 65, 1000, 4099])
def test_shuffled_rows_is_a_seeded_bijection(n):
    a, b = shuffled_rows(np.arange(n), n, 11), shuffled_rows(np.arange(n), n, 12)
    assert sorted(a.tolist()) == list(range(n)) and sorted(b.tolist()) == list(range(n))
    if n > 4:
        assert not np.array_equal(a, b) and not np.array_equal(a, np.arange(n))
    idx = np.random.default_rng(n).integers(0, n, 7)
    assert np.array_equal(shuffled_rows(idx, n, 11), a[idx])  # any subset, placed independently
    p = pack_windows([[1] * (3 * n)], [0], seq_len=3, eos_id=EOS, seed=11)
    assert np.array_equal(p.window_perm[a], np.arange(n))  # pack_windows uses the same bijection


# -- the Spark job on a real ingest ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingested(spark, small_corpus, tmp_path_factory):
    """code + web of the small corpus through ``ingest`` (Spark), and an order of code's documents
    (a seeded subset, as after dedup) in three order files, one of them empty."""
    from mixweave.data.artifacts import docs_files_by_source, read_source_texts
    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    root = tmp_path_factory.mktemp("jobs_pack")
    config = parse_config(small_corpus.config_data(root / "run", {"code": small_corpus.globs["code"]}))
    run_stages(build_stages(), config, wanted=["ingest"])
    ingest = root / "run" / "ingest"
    texts = read_source_texts(ingest, "code")
    order = np.random.default_rng(4).permutation(len(texts))[:-3]
    files = []
    for i, piece in enumerate(np.split(order, [9, 9, 20])):
        files.append(root / f"order-{i:05d}.npy")
        np.save(files[-1], piece.astype(np.int64))
    tokenizer = load_tokenizer("default")
    return types.SimpleNamespace(root=root, ingest=ingest, order=order, order_files=files, texts=texts,
                                 tokenizer=tokenizer, docs_files=docs_files_by_source(ingest)["code"])


def in_process(ing, out: Path, *, seq_len, plus_one, shuffle, seed, per_file):
    """The pack stage's in-process path for ``code``."""
    from mixweave.data.windows import write_windows_files

    tok = ing.tokenizer
    tokens = tok.encode_batch([ing.texts[i] for i in ing.order])
    p = pack_windows(tokens, np.arange(len(tokens)), seq_len=seq_len, eos_id=tok.eos_id, plus_one=plus_one,
                     shuffle=shuffle, seed=seed, dtype=np.dtype(tok.info["dtype"]))
    spans = spans_table(p)
    spans = spans.set_column(1, "doc", pa.array(ing.order[spans.column("doc").to_numpy()], pa.int64()))
    return p, write_windows_files(out, "code", p.windows, spans, per_file=per_file)


@pytest.mark.spark
@pytest.mark.parametrize("seq_len,plus_one,shuffle,tasks", [
    (64, True, False, 1),     # windows straddle partition boundaries
    (64, False, True, 3),
    (700, True, True, 3),     # spill across several partitions
    (10**6, False, True, 1),  # no window at all: the whole stream is the dropped tail
])
def test_spark_pack_equals_in_process_pack_byte_for_byte(spark, ingested, tmp_path, seq_len, plus_one, shuffle, tasks):
    from mixweave.jobs.pack import run_spark_pack

    per_file = 7
    p, ref_files = in_process(ingested, tmp_path / "local", seq_len=seq_len, plus_one=plus_one, shuffle=shuffle,
                              seed=99, per_file=per_file)
    res = run_spark_pack(spark, source="code", order_paths=ingested.order_files, docs_files=ingested.docs_files,
                         out_root=tmp_path / "spark", work_dir=tmp_path / "spark" / ".work",
                         tokenizer_path="default", tokenizer_pattern=None, eos_id=ingested.tokenizer.eos_id,
                         dtype=ingested.tokenizer.info["dtype"], seq_len=seq_len, plus_one=plus_one, shuffle=shuffle,
                         seed=99, part_docs=4, per_file=per_file, n_tasks=tasks)
    assert res["files"] == ref_files
    assert (res["n_windows"], res["dropped_tokens"], res["stream_tokens"], res["n_docs"]) == \
        (p.n_windows, p.dropped_tokens, p.stream_tokens, len(ingested.order))
    assert res["partitions"] == 3 + 3 + 2  # order files of 9, 0, 11, 7 documents in pieces of <= 4
    local = sorted(q.relative_to(tmp_path / "local") for q in (tmp_path / "local").rglob("*") if q.is_file())
    remote = sorted(q.relative_to(tmp_path / "spark") for q in (tmp_path / "spark").rglob("*") if q.is_file())
    assert local == remote and not (tmp_path / "spark" / ".work").exists()
    assert len([q for q in local if q.parts[0] == "windows"]) == max(1, -(-p.n_windows // per_file))
    for rel in local:
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "spark" / rel).read_bytes(), rel
    if seq_len == 64:  # windows do straddle partitions here
        assert p.n_windows > 2 * per_file


@pytest.mark.spark
@pytest.mark.parametrize("min_tokens,seq_len,shuffle", [
    ("median", 64, True),   # both groups, several files each: ids renumbered across files and tasks
    ("median", 700, False),
    (1, 64, True),          # every window long: only code.long
    (10**9, 64, True),      # none long: only code
])
def test_spark_long_docs_split_equals_the_in_process_phase_pack(spark, ingested, tmp_path, min_tokens, seq_len, shuffle):
    """A long_docs phase on the Spark path (each cut task classifies its windows, one aggregation
    counts each file's windows per group, ``_renumber`` renumbers each group in output order) writes
    ``pack_phase_source``'s files byte for byte, with its entries and statistics."""
    from mixweave.jobs.pack import run_spark_pack
    from mixweave.mixers.long_context import LongDocs
    from mixweave.pipeline.stages.pack import pack_phase_source

    tok = ingested.tokenizer
    tokens = tok.encode_batch([ingested.texts[i] for i in ingested.order])
    if min_tokens == "median":
        min_tokens = int(np.median([len(t) for t in tokens]))
    long_docs = LongDocs(min_tokens=min_tokens, upsample=2)
    entries, stats = pack_phase_source(tmp_path / "local", "code", tokens, ingested.order, seq_len=seq_len,
                                       long_docs=long_docs, plus_one=True, shuffle=shuffle, seed=5, eos_id=tok.eos_id,
                                       dtype=np.dtype(tok.info["dtype"]), sink_id=None, file_setting=3)
    res = run_spark_pack(spark, source="code", order_paths=ingested.order_files, docs_files=ingested.docs_files,
                         out_root=tmp_path / "spark", work_dir=tmp_path / "spark" / ".work", tokenizer_path="default",
                         tokenizer_pattern=None, eos_id=tok.eos_id, dtype=tok.info["dtype"], seq_len=seq_len,
                         plus_one=True, shuffle=shuffle, seed=5, part_docs=4, per_file=3, n_tasks=3,
                         long_min_tokens=min_tokens, long_name="code.long")
    assert {n: {k: v for k, v in e.items() if k != "path"} for n, e in res["groups"].items()} == \
        {n: {k: v for k, v in e.items() if k != "path"} for n, e in entries.items()}
    assert res["long_docs"] == stats
    groups = sorted(entries)
    assert groups == {1: ["code.long"], 10**9: ["code"]}.get(min_tokens, ["code", "code.long"])
    if len(groups) == 2 and seq_len == 64:
        assert min(e["n_windows"] for e in entries.values()) > 3  # each group spans several files
    local = sorted(q.relative_to(tmp_path / "local") for q in (tmp_path / "local").rglob("*") if q.is_file())
    remote = sorted(q.relative_to(tmp_path / "spark") for q in (tmp_path / "spark").rglob("*") if q.is_file())
    assert local == remote and local and not (tmp_path / "spark" / ".work").exists()
    for rel in local:
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "spark" / rel).read_bytes(), rel


# -- a pipeline run on the distributed path, exported and read back -------------------------------------------


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_distributed_pipeline_run_exports_multi_file_packs(distributed_run, tmp_path):
    """The shared ``distributed_run`` (tests/conftest.py: the small corpus spark-submitted onto a one-core
    standalone cluster with ``distributed_min_docs: 0`` and 3 windows a file): the Spark pack equals the
    in-process pack stage on the same order (every file, byte for byte), and its Megatron, OLMo and
    MDS exports, several files a source, read back token-exact with each trainer's own library."""
    import json

    from mixweave.data.manifest import read_manifest
    from mixweave.data.windows import read_windows
    from mixweave.pipeline.export import export
    from mixweave.pipeline.runner import StageContext, run_stage
    from mixweave.pipeline.stages import build_stages

    run, reports, order = distributed_run.out, distributed_run.reports, distributed_run.order
    assert order["distributed_min_docs"] == 0 and order["pack_file_windows"] == 3
    assert reports["pack"] == reports["mix"] == "ran", reports
    # the in-process pack stage on the same order, into its own folder
    local_config = distributed_run.config_for(order={**order, "distributed_min_docs": 10**9})
    run_stage(build_stages()["pack"], StageContext(config=local_config, out=run, overrides={"pack": tmp_path / "local"}))
    info = read_manifest(run / "pack")["windows"]["sources"]
    local = read_manifest(tmp_path / "local")["windows"]["sources"]
    for name, entry in info.items():
        assert entry["path"] == "spark" and local[name]["path"] == "local"
        assert len(entry["files"]) == -(-entry["n_windows"] // 3) > 1
        for key in ("n_windows", "dropped_tokens", "stream_tokens", "n_docs", "files"):
            assert entry[key] == local[name][key], (name, key)
        for kind in ("windows", "spans"):
            for path in sorted((tmp_path / "local" / kind / name).iterdir()):
                assert path.read_bytes() == (run / "pack" / kind / name / path.name).read_bytes(), path
        metrics = json.loads((run / "pack" / "metrics" / f"{name}.json").read_text())
        assert metrics["sampled"] is True and 0 <= metrics["jump_rate"] <= 1 and metrics["sample_windows"] > 0
    # exports of the multi-file pack, read by the trainers' libraries
    mixture = run / "mix" / "mixture.json"
    S = 128
    windows = {n: read_windows(run / "pack", n) for n in info}
    meg = export("megatron", run / "pack", mixture, tmp_path / "megatron")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for name, prefix in meg["prefixes"].items():
        ds = IndexedDataset(prefix)
        assert np.array_equal(np.stack([ds[i] for i in range(len(ds))]), windows[name])
    olmo = export("olmo", run / "pack", mixture, tmp_path / "olmo", max_file_bytes=5 * S * 2)
    from olmo_core.data import NumpyFSLDatasetConfig, TokenizerConfig

    tok = TokenizerConfig(vocab_size=50257, eos_token_id=50256, pad_token_id=50256)
    for name, paths in olmo["paths"].items():
        assert len(paths) == -(-windows[name].shape[0] // 5)
        ds = NumpyFSLDatasetConfig(tokenizer=tok, paths=paths, sequence_length=S, dtype="uint16",
                                   work_dir=str(tmp_path / "olmo-work" / name)).build()
        ds.prepare()
        assert np.array_equal(np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))]), windows[name])
    export("mds", run / "pack", mixture, tmp_path / "mds", mds_size_limit=4 * (S * 2 + 4) + 400)
    old_tmp = tempfile.tempdir
    try:
        StreamingDataset = _streaming_dataset(tmp_path / "streaming-tmp")
        for name in info:
            index = json.loads((tmp_path / "mds" / name / "index.json").read_text())
            assert len(index["shards"]) > 1
            ds = StreamingDataset(local=str(tmp_path / "mds" / name), shuffle=False, batch_size=1)
            assert np.array_equal(np.stack([ds[i]["tokens"] for i in range(len(ds))]), windows[name])
    finally:
        tempfile.tempdir = old_tmp


def _streaming_dataset(tmp: Path):
    return import_streaming(tmp)[1]
