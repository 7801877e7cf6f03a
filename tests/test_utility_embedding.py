"""Embedding-similarity utility: the top-k core against brute force, and the whole CLI path on the
real fixture corpus (tests/data/corpus) with all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixweave.data.utility_table import read_utility_table
from mixweave.errors import ConfigError
from mixweave.utility.embedding import example_text, topk_mean_similarity

CORPUS = Path(__file__).parent / "data" / "corpus"


def test_topk_mean_similarity_vs_brute_force():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(7, 16)).astype(np.float32)
    b = rng.normal(size=(5, 16)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    for k in (1, 3, 5, 9):
        want = [np.mean(sorted((float(x @ y) for y in b), reverse=True)[:min(k, 5)]) for x in d]
        assert topk_mean_similarity(d, b, k) == pytest.approx(want, abs=1e-6)
    assert topk_mean_similarity(d, b[:0], 3).tolist() == [0.0] * 7
    with pytest.raises(ConfigError):
        topk_mean_similarity(d, b, 0)
    assert example_text({"prompt": "Q?", "answer": "A."}) == "Q?\nA."


INLINE_CODE = [
    "def is_palindrome(s: str) -> bool:\n    s = ''.join(c.lower() for c in s if c.isalnum())\n"
    "    return s == s[::-1]\n",
    "def flatten(xs):\n    out = []\n    for x in xs:\n"
    "        out.extend(flatten(x) if isinstance(x, list) else [x])\n    return out\n",
    "def gcd(a: int, b: int) -> int:\n    while b:\n        a, b = b, a % b\n    return a\n",
]
INLINE_PROSE = [
    "The Danube is Europe's second-longest river, flowing through ten countries to the Black Sea.",
    "Mozart composed more than six hundred works, including symphonies, concertos and operas.",
    "The French Revolution began in 1789 and abolished the absolute monarchy in France.",
]
INLINE_BENCH = [
    {"benchmark": "humaneval", "split": "test", "id": "h0", "answer": "    return sorted(set(xs))\n",
     "prompt": "def unique(xs: list) -> list:\n    \"\"\"Return sorted unique elements in a list.\"\"\"\n"},
    {"benchmark": "humaneval", "split": "test", "id": "h1", "answer": "    return max(xs)\n",
     "prompt": "def max_element(xs: list):\n    \"\"\"Return the maximum element in the list.\"\"\"\n"},
    {"benchmark": "history", "split": "dev", "id": "t0", "answer": "1789",
     "prompt": "In which year did the French Revolution begin?"},
    {"benchmark": "history", "split": "dev", "id": "t1", "answer": "Vienna",
     "prompt": "Which city on the Danube was the capital of the Habsburg monarchy?"},
]


def _inputs(tmp_path, use_fixture=True):
    """The fixture corpus when present, else a small inline corpus of real text."""
    if use_fixture and (CORPUS / "benchmarks.jsonl").is_file() and any(CORPUS.glob("code/*.jsonl")):
        return str(CORPUS), CORPUS / "benchmarks.jsonl", 6, {"humaneval": "code"}
    docs = tmp_path / "corpus"
    for src, texts in (("code", INLINE_CODE), ("encyclopedic", INLINE_PROSE)):
        (docs / src).mkdir(parents=True)
        (docs / src / "part.jsonl").write_text("".join(json.dumps({"id": f"{src}{i}", "text": t}) + "\n"
                                                       for i, t in enumerate(texts)))
    bench = tmp_path / "benchmarks.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in INLINE_BENCH))
    return str(docs), bench, 3, {"humaneval": "code", "history": "encyclopedic"}


@pytest.mark.parametrize("use_fixture", [True, False], ids=["fixture-corpus", "inline-text"])
def test_cli_embedding_utility_ranks_code_first_for_code_benchmarks(tmp_path, use_fixture):
    from click.testing import CliRunner

    from mixweave.cli.utility import command as utility_command

    docs, bench, per_source, expected_top = _inputs(tmp_path, use_fixture)
    out = tmp_path / "utility"
    res = CliRunner().invoke(utility_command, ["--method", "embedding", "--docs", docs, "--benchmarks", str(bench),
                                               "--out", str(out), "--per-source", str(per_source), "--top-k", "3",
                                               "--max-tokens", "128",
                                               *([] if use_fixture else ["--encoder-backend", "openvino"])])
    assert res.exit_code == 0, res.output + repr(res.exception)
    table = pq.read_table(out / "utility.parquet").to_pylist()
    ut = read_utility_table(out / "utility.csv")
    benchmarks = {r["benchmark"] for r in table}
    assert len(benchmarks) >= 2 and set(expected_top) <= benchmarks
    n_sources = len({r["source"] for r in table})
    assert len(table) == n_sources * len(benchmarks)
    for bench_name, source in expected_top.items():
        cells = {r["source"]: r["mean"] for r in table if r["benchmark"] == bench_name}
        assert max(cells, key=cells.get) == source, (bench_name, cells)
    humaneval = {r["source"]: r for r in table if r["benchmark"] == "humaneval"}
    assert humaneval[expected_top["humaneval"]]["mean"] == pytest.approx(1.0)  # minmax per benchmark
    assert min(r["mean"] for r in humaneval.values()) == pytest.approx(0.0)
    for r in table:
        assert r["n"] == per_source and r["n_unparseable"] == 0 and r["ci_low"] <= r["mean"] <= r["ci_high"]
    i = ut.sources.index(expected_top["humaneval"])
    assert ut.scores[i, ut.benchmarks.index("humaneval")] == pytest.approx(1.0)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["method"] == "embedding" and cost["tokens"]["in"] > 0 and cost["flops"]["estimator"] > 0
    from mixweave.retrieval.encoder_backends import resolve_lossless_backend

    assert cost["estimator"]["encoder_backend"] == ("openvino" if not use_fixture else resolve_lossless_backend("auto"))
    assert cost["ablation"]["all_runs_over_estimator"] > 1e3
    assert set(cost["normalize"]["per_benchmark"]) == benchmarks
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["stage"] == "utility" and {f["path"] for f in manifest["files"]} >= {"utility.parquet", "cost.json"}
    assert "humaneval" in res.output


def test_utility_cli_ablation_and_table_methods(tmp_path):
    """`mixweave utility --method ablation` trains per source on a real pack and writes the standard
    table; `--method table` adopts that table again. Both are read by the mixers' reader."""
    from mixweave.cli import main
    from mixweave.data.utility_table import read_utility_table
    from mixweave.trainer.model import GPT, GPTConfig
    from mixweave.trainer.sample_data import build_sample_inputs

    corpus = Path(__file__).parent / "data" / "corpus"
    small = build_sample_inputs(tmp_path / "in", seq_len=32, corpus_dir=corpus, sources=["books", "code"],
                                vocab_size=512, max_chars_per_source=60_000)
    budget = 4 * GPT(GPTConfig.from_depth(1, vocab_size=512, seq_len=32)).flops_per_token(32) * 8 * 31
    try:
        main(["utility", "--method", "ablation", "--pack", str(small.pack_dir), "--benchmarks",
              str(small.benchmarks_path), "--flops-budget", str(budget), "--depth", "1", "--out", str(tmp_path / "abl")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    table = read_utility_table(tmp_path / "abl" / "utility.parquet")
    assert table.sources == ("books", "code") and len(table.benchmarks) >= 4
    try:
        main(["utility", "--method", "table", "--table", str(tmp_path / "abl" / "utility.parquet"), "--out",
              str(tmp_path / "tbl")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    again = read_utility_table(tmp_path / "tbl" / "utility.parquet")
    assert again.sources == table.sources and (again.scores == table.scores).all()


def _inline_docs():
    import pyarrow as pa

    records = [json.loads(line) for path in sorted((CORPUS / "encyclopedic").glob("*.jsonl"))
               for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    long_text = next(r["text"] for r in records if len(r["text"]) > 5000)  # cut at max_tokens
    texts = INLINE_CODE + INLINE_PROSE + [long_text]
    docs = pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts,
                     "source": ["code"] * len(INLINE_CODE) + ["encyclopedic"] * (len(INLINE_PROSE) + 1)})
    examples = {b: [r for r in INLINE_BENCH if r["benchmark"] == b] for b in ("humaneval", "history")}
    return docs, examples


def test_auto_backend_on_cpu_is_the_fp32_export_with_torchs_scores_and_costs():
    """``auto`` on CPU: the fp32 OpenVINO export (never bf16: the table must not depend on the CPU),
    with torch's scores to float32 rounding and the same cost inputs (parameters, tokens read, each
    document cut at ``max_tokens``); lossy backends are refused with one line."""
    from mixweave.errors import InputError
    from mixweave.utility.embedding import embedding_document_scores

    docs, examples = _inline_docs()
    kw = {"top_k": 2, "max_tokens": 128, "batch_size": 4, "device": "cpu"}
    rows_t, info_t = embedding_document_scores(docs, examples, backend="torch", **kw)
    rows_a, info_a = embedding_document_scores(docs, examples, backend="auto", **kw)
    assert (info_t["encoder_backend"], info_a["encoder_backend"]) == ("torch", "openvino")
    assert info_a["encoder_params"] == info_t["encoder_params"] > 20_000_000  # all-MiniLM-L6-v2: 22.7M
    assert info_a["tokens_in"] == info_t["tokens_in"]
    assert [(r["doc_id"], r["benchmark"]) for r in rows_a] == [(r["doc_id"], r["benchmark"]) for r in rows_t]
    np.testing.assert_allclose([r["score"] for r in rows_a], [r["score"] for r in rows_t], atol=2e-5)
    for lossy in ("openvino-bf16", "onnx-int8", "static"):
        with pytest.raises(InputError, match="not lossless"):
            embedding_document_scores(docs, examples, backend=lossy, **kw)


def test_auto_backend_on_cpu_imports_no_torch():
    """The CPU utility loads neither torch nor sentence-transformers (~8 CPU-s a process)."""
    import subprocess
    import sys

    from mixweave.retrieval.encoder_backends import ensure_export
    from mixweave.retrieval.encoders import resolve_encoder_path

    ensure_export(resolve_encoder_path("default").resolve(), "openvino")  # built once per machine (with torch)
    code = ("import sys, json, pyarrow as pa\n"
            "from mixweave.utility.embedding import embedding_document_scores\n"
            "docs = pa.table({'doc_id': ['a', 'b'], 'source': ['x', 'y'], 'text': ['def f(): pass', 'The Danube.']})\n"
            "rows, info = embedding_document_scores(docs, {'q': [{'prompt': 'def g():', 'answer': 'pass'}]}, top_k=1)\n"
            "print(json.dumps([info['encoder_backend'], len(rows), sorted(m for m in ('torch', 'sentence_transformers') "
            "if m in sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["openvino", 2, []], out.stderr[-2000:]
