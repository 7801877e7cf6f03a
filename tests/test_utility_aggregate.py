"""Utility table statistics (vs numpy / exact bootstrap enumeration), normalisation, the file
format the mixers read, and the seeded stratified document sampler (pure and Spark)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixweave.data.utility_table import read_utility_table
from mixweave.errors import ConfigError, InputError
from mixweave.utility import (
    TABLE_COLUMNS,
    UtilityResult,
    aggregate_scores,
    bootstrap_ci,
    normalize_table,
    sample_docs,
    write_utility_outputs,
)
from mixweave.utility.cost import ablation_comparison, inference_flops, training_flops
from mixweave.utility.sampling import load_sampled_docs, sample_docs_spark


def exact_bootstrap_quantiles(values, qs):
    """Every one of the n^n resamples, each equally likely: exact quantiles of the bootstrap mean."""
    v = np.asarray(values, float)
    means = np.array([v[list(idx)].mean() for idx in itertools.product(range(v.size), repeat=v.size)])
    return np.quantile(means, qs, method="inverted_cdf")


@pytest.mark.parametrize("values", [[1, 2, 5, 4], [3, 3, 4, 5, 1], [2.5, 4.1, 3.3]])
def test_bootstrap_ci_matches_exact_enumeration(values):
    lo, hi = bootstrap_ci(np.array(values, float), n_boot=40_000, seed=3)
    want_lo, want_hi = exact_bootstrap_quantiles(values, [0.025, 0.975])
    spread = max(values) - min(values)
    assert lo == pytest.approx(want_lo, abs=0.04 * spread)
    assert hi == pytest.approx(want_hi, abs=0.04 * spread)
    assert lo <= np.mean(values) <= hi


def test_bootstrap_ci_edge_cases_and_seed():
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([])))
    assert bootstrap_ci(np.array([4.0])) == (4.0, 4.0)
    assert bootstrap_ci(np.array([3.0, 3.0, 3.0])) == (3.0, 3.0)
    x = np.random.default_rng(0).integers(1, 6, 300).astype(float)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=1)  # large n: close to the normal interval
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.35 * se)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.35 * se)


def _rows():
    rng = np.random.default_rng(7)
    rows = []
    for s, b, n, n_bad in [("code", "humaneval", 40, 3), ("code", "mmlu", 25, 0), ("wiki", "humaneval", 30, 5),
                           ("wiki", "mmlu", 1, 2)]:
        rows += [{"source": s, "benchmark": b, "score": float(rng.integers(1, 6))} for _ in range(n)]
        rows += [{"source": s, "benchmark": b, "score": None} for _ in range(n_bad)]
    rows.append({"source": "code", "benchmark": "mmlu", "score": None, "error": "HTTP 500"})  # failed: not counted
    return rows


def test_aggregate_matches_numpy():
    rows = _rows()
    table = aggregate_scores(rows, n_boot=500, seed=0)
    assert tuple(table.column_names) == TABLE_COLUMNS
    got = {(r["source"], r["benchmark"]): r for r in table.to_pylist()}
    assert list(got) == sorted(got)
    for (s, b), r in got.items():
        vals = np.array([x["score"] for x in rows if x["source"] == s and x["benchmark"] == b
                         and x["score"] is not None and not x.get("error")])
        bad = sum(1 for x in rows if x["source"] == s and x["benchmark"] == b and x["score"] is None
                  and not x.get("error"))
        assert r["n"] == vals.size and r["n_unparseable"] == bad
        assert r["mean"] == pytest.approx(vals.mean())
        assert r["std"] == pytest.approx(vals.std(ddof=1) if vals.size > 1 else 0.0)
        assert r["se"] == pytest.approx(vals.std(ddof=1) / math.sqrt(vals.size) if vals.size > 1 else 0.0)
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
    # a cell's interval does not depend on which other cells exist
    alone = aggregate_scores([x for x in rows if x["source"] == "code" and x["benchmark"] == "humaneval"],
                             n_boot=500, seed=0).to_pylist()[0]
    assert alone == got[("code", "humaneval")]


def test_aggregate_forces_empty_cells():
    table = aggregate_scores([{"source": "a", "benchmark": "x", "score": 3.0}], sources=["a", "b"],
                             benchmarks=["x"], n_boot=10)
    rows = table.to_pylist()
    assert [r["source"] for r in rows] == ["a", "b"]
    assert rows[1]["n"] == 0 and math.isnan(rows[1]["mean"])
    with pytest.raises(ConfigError):
        aggregate_scores([], alpha=1.5)


def test_normalize_minmax_and_zscore():
    table = aggregate_scores(_rows(), n_boot=200)
    raw = {(r["source"], r["benchmark"]): r for r in table.to_pylist()}
    norm, params = normalize_table(table, "minmax")
    for r in norm.to_pylist():
        p = params[r["benchmark"]]
        o = raw[(r["source"], r["benchmark"])]
        assert r["mean"] == pytest.approx((o["mean"] - p["offset"]) / p["scale"])
        assert r["ci_low"] == pytest.approx((o["ci_low"] - p["offset"]) / p["scale"])
        assert r["std"] == pytest.approx(o["std"] / p["scale"])
        assert r["se"] == pytest.approx(o["se"] / p["scale"])
    for b in ("humaneval", "mmlu"):
        means = [r["mean"] for r in norm.to_pylist() if r["benchmark"] == b]
        assert min(means) == pytest.approx(0.0) and max(means) == pytest.approx(1.0)
    z, _ = normalize_table(table, "zscore")
    for b in ("humaneval", "mmlu"):
        means = np.array([r["mean"] for r in z.to_pylist() if r["benchmark"] == b])
        assert means.mean() == pytest.approx(0.0, abs=1e-12) and means.std() == pytest.approx(1.0)
    mx, mx_params = normalize_table(table, "max")
    for b in ("humaneval", "mmlu"):
        means = [r["mean"] for r in mx.to_pylist() if r["benchmark"] == b]
        assert max(means) == pytest.approx(1.0) and mx_params[b]["offset"] == 0.0
    negative = aggregate_scores([{"source": s, "benchmark": "x", "score": v} for s, v in (("a", -1.0), ("b", 2.0))],
                                n_boot=10)
    with pytest.raises(ConfigError, match="normalize='max' needs non-negative"):
        normalize_table(negative, "max")
    tied = aggregate_scores([{"source": s, "benchmark": "x", "score": 2.0} for s in "ab"], n_boot=10)
    assert [r["mean"] for r in normalize_table(tied, "minmax")[0].to_pylist()] == [1.0, 1.0]
    with pytest.raises(ConfigError):
        normalize_table(table, "softmax")


def test_written_table_is_read_by_the_mixers(tmp_path):
    table = aggregate_scores(_rows(), n_boot=200)
    table = table.filter(pa.compute.greater(table.column("n"), 1))  # mixers refuse NaN cells
    keep = {(r["source"], r["benchmark"]) for r in table.to_pylist()}
    table = aggregate_scores([r for r in _rows() if (r["source"], r["benchmark"]) in keep or r["source"] == "wiki"
                              and r["benchmark"] == "mmlu" and r["score"]], n_boot=200)
    cost = {"tokens": {"in": 1, "out": 0}, "wall_s": {"total": 0.1}, "n_docs": 3}
    out = write_utility_outputs(UtilityResult(table, cost), tmp_path / "utility")
    for name in ("utility.parquet", "utility.csv", "cost.json", "_manifest.json"):
        assert (out / name).is_file()
    for name in ("utility.parquet", "utility.csv"):
        ut = read_utility_table(out / name)
        assert set(ut.sources) == {"code", "wiki"} and set(ut.benchmarks) == {"humaneval", "mmlu"}
        assert ut.std is not None and ut.se is not None and ut.ci_low is not None
        i, j = ut.sources.index("code"), ut.benchmarks.index("humaneval")
        assert ut.scores[i, j] == pytest.approx(table.to_pylist()[0]["mean"])
    assert pq.read_table(out / "utility.parquet").column_names == list(TABLE_COLUMNS)


def test_cost_formulas():
    assert inference_flops(70e9, 2.1e6) == pytest.approx(2.94e17)
    assert inference_flops(None, 10) is None
    assert training_flops(1e9, 1e10) == 6e19
    cmp = ablation_comparison(3e17, n_sources=19, ablation_params=1e9, ablation_tokens=1e10)
    assert cmp["one_run_over_estimator"] == pytest.approx(200.0)  # the paper's footnote
    assert cmp["flops_total"] == pytest.approx(19 * 6e19)
    assert ablation_comparison(None, n_sources=2)["tokens_per_run"] == 2e10


# -- sampling -----------------------------------------------------------------------------------
def _docs(n_per=(30, 5, 12), seed=0):
    rows = []
    for s, n in zip(("code", "tiny", "wiki"), n_per):
        rows += [{"doc_id": f"{s}-{i}", "source": s, "text": f"{s} document {i}"} for i in range(n)]
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return pa.table({c: [r[c] for r in rows] for c in ("doc_id", "source", "text")})


def test_sample_docs_stratified_seeded_order_free_nested():
    t = _docs()
    a = sample_docs(t, 10, seed=3)
    counts = {s: a.column("source").to_pylist().count(s) for s in ("code", "tiny", "wiki")}
    assert counts == {"code": 10, "tiny": 5, "wiki": 10}
    assert sample_docs(_docs(seed=99), 10, seed=3).equals(a)  # row order does not matter
    assert sample_docs(t, 10, seed=4).column("doc_id").to_pylist() != a.column("doc_id").to_pylist()
    small = set(sample_docs(t, 4, seed=3).column("doc_id").to_pylist())
    assert small <= set(a.column("doc_id").to_pylist())  # nested
    per = sample_docs(t, {"code": 2, "*": 1}, seed=3)
    assert sorted(per.column("source").to_pylist()) == ["code", "code", "tiny", "wiki"]
    assert sample_docs(t, None).num_rows == t.num_rows
    # partitioned: the union of per-part samples, re-sampled, equals the global sample
    parts = [t.slice(0, 17), t.slice(17, 9), t.slice(26)]
    union = pa.concat_tables([sample_docs(p, 10, seed=3) for p in parts])
    assert sample_docs(union, 10, seed=3).equals(a)
    with pytest.raises(InputError):
        sample_docs(t.drop(["source"]), 3)


def test_load_sampled_docs_from_parquet_and_jsonl(tmp_path):
    t = _docs()
    for s in ("code", "tiny", "wiki"):
        part = t.filter(pa.compute.equal(t.column("source"), s))
        (tmp_path / "docs" / s).mkdir(parents=True)
        pq.write_table(part.slice(0, part.num_rows // 2), tmp_path / "docs" / s / "part-00000.parquet")
        pq.write_table(part.slice(part.num_rows // 2), tmp_path / "docs" / s / "part-00001.parquet")
    got = load_sampled_docs(tmp_path, 10, seed=3)
    assert got.column("doc_id").to_pylist() == sample_docs(t, 10, seed=3).column("doc_id").to_pylist()
    jdir = tmp_path / "corpus" / "web"
    jdir.mkdir(parents=True)
    (jdir / "a.jsonl").write_text('{"id": "w1", "text": "hello"}\n{"text": ""}\nnot json\n{"text": "bye"}\n')
    j = load_sampled_docs(str(tmp_path / "corpus" / "*" / "*.jsonl"), None)
    assert sorted(j.column("doc_id").to_pylist()) == ["a.jsonl:3", "w1"]
    assert set(j.column("source").to_pylist()) == {"web"}
    with pytest.raises(InputError, match="no documents"):
        load_sampled_docs(tmp_path / "nothing-here", 3)


@pytest.mark.spark
def test_sample_docs_spark_equals_pure_core(spark, tmp_path):
    t = _docs()
    for k in range(3):  # three files -> several partitions
        pq.write_table(t.slice(k * 16, 16), tmp_path / f"part-{k:05d}.parquet")
    for per in ({"code": 3, "*": 2},):  # one query: Spark jobs cost seconds each
        got = sample_docs_spark(spark, str(tmp_path / "*.parquet"), per, seed=3)
        want = sample_docs(t, per, seed=3)
        assert got.column("doc_id").to_pylist() == want.column("doc_id").to_pylist()
        assert got.column("text").to_pylist() == want.column("text").to_pylist()
