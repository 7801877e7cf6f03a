"""The ``utility`` stage under hostile conditions, through ``mixweave run``: an LLM server that
fails every request, fails a whole source, or echoes credentials back; and the embedding method
reusing the ``embed`` artifact instead of encoding the sampled documents again.

The ingest artifact is written by hand (with the fingerprint the runner expects, so ``run`` skips
Spark) and the embed stage runs its real per-unit code in-process instead of in Spark tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from test_utility_openai import FaultServer

from mixweave.cli import main
from mixweave.pipeline.config import load_config
from mixweave.data.ingest import write_docs_file
from mixweave.data.manifest import atomic_stage_dir, build_manifest, read_manifest, write_json_atomic
from mixweave.pipeline.runner import StageContext, stage_fingerprint
from mixweave.pipeline.stages import build_stages
from mixweave.pipeline.stages.utility import utility_inputs

KEY = "sk-hostile-key-0123456789"
QUERY_SECRET = "qsecret-777-abc"
PASSWORD = "pw-hidden-555"
SECRETS = (KEY, QUERY_SECRET, PASSWORD)

DOCS = {
    "code": [f"def f{i}(x):\n    return x * {i} + doc-c{i}" for i in range(4)],
    "wiki": [f"The river number {i} flows to the sea. doc-w{i}" for i in range(4)],
}
BENCH = [{"benchmark": "trivia", "split": "dev", "id": f"t{i}", "prompt": f"Which river {i}?", "answer": "Nile"}
         for i in range(3)] + [{"benchmark": "humaneval", "split": "dev", "id": f"h{i}",
                                "prompt": f"def add{i}(a, b):", "answer": "return a + b"} for i in range(3)]


def write_run(tmp_path: Path, **sections) -> Path:
    """Source jsonl files, benchmarks.jsonl and a run config with ``sections``; returns the config path."""
    sources = {}
    for name, texts in DOCS.items():
        folder = tmp_path / "src" / name
        folder.mkdir(parents=True)
        (folder / "part.jsonl").write_text("".join(json.dumps({"id": f"{name}{i}", "text": t}) + "\n"
                                                   for i, t in enumerate(texts)))
        sources[name] = {"paths": [str(folder / "*.jsonl")]}
    bench = tmp_path / "benchmarks.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in BENCH))
    config = {"out": str(tmp_path / "out"), "seed": 0, "sources": sources, "benchmarks": str(bench), **sections}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fake_ingest(config_path: Path) -> None:
    """The ingest artifact the real stage would write for DOCS, with the fingerprint ``run`` expects."""
    config = load_config(config_path)
    ctx = StageContext(config=config, out=Path(config.out))
    value, _ = stage_fingerprint(build_stages()["ingest"], ctx)
    with atomic_stage_dir(ctx.artifact("ingest")) as tmp:
        sources = {}
        for name, texts in DOCS.items():
            rel = f"docs/{name}/part-00000.parquet"
            table = pa.table({"doc_id": [f"{name}{i}" for i in range(len(texts))], "source": [name] * len(texts),
                              "text": texts, "n_bytes": [len(t.encode()) for t in texts],
                              "n_tokens": [len(t.split()) for t in texts], "meta": ["{}"] * len(texts)})
            write_docs_file(table, tmp / rel)
            sources[name] = {"files": [rel], "n_docs": len(texts)}
        manifest = build_manifest(stage="ingest", stage_version=1, config={}, fingerprint_value=value, inputs={},
                                  root=tmp, extra={"sources": sources})
        write_json_atomic(tmp / "_manifest.json", manifest)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def medu_section(url: str, **settings) -> dict:
    options = {"base_url": url, "api_key_env": "MW_HOSTILE_KEY", "concurrency": 2, "timeout_s": 2.0,
               "max_retries": 1, "backoff_s": 0.01, "backoff_max_s": 0.02}
    return {"method": "medu", "backend": "openai", "model": "tiny", "mode": "logprob", "per_source": 4,
            "descriptions": {"trivia": "facts", "humaneval": "code"}, "n_boot": 50,
            "model_params": 1e9, "backend_options": options, **settings}


# -- every request fails / a whole source fails: nothing is committed --------------------------------
def test_all_requests_failing_commits_nothing_and_a_rerun_retries(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MW_HOSTILE_KEY", KEY)
    with FaultServer() as srv:
        config = write_run(tmp_path, utility=medu_section(srv.url))
        fake_ingest(config)
        srv.faults = {"doc-": ["500"] * 1000}
        code, output = run_cli(["run", str(config), "--stage", "utility"], capsys)
        assert code != 0 and "internal error" not in output
        assert "error: all 16 rating requests to the openai backend" in output
        assert "HTTP 500" in output and "re-run" in output
        assert read_manifest(tmp_path / "out" / "utility") is None  # nothing committed
        srv.faults = {}
        code, output = run_cli(["run", str(config), "--stage", "utility"], capsys)
    assert code == 0, output
    table = pq.read_table(tmp_path / "out" / "utility" / "utility.parquet").to_pylist()
    assert len(table) == 4 and all(r["n"] == 4 for r in table)


def test_failing_describe_step_names_the_first_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MW_HOSTILE_KEY", KEY)
    with FaultServer() as srv:
        section = medu_section(srv.url)
        del section["descriptions"]
        config = write_run(tmp_path, utility=section)
        fake_ingest(config)
        srv.faults = {"": ["429"] * 1000}  # every request
        code, output = run_cli(["run", str(config), "--stage", "utility"], capsys)
    assert code != 0 and "internal error" not in output
    assert "failed 2 of 2 describe requests" in output and "first error:" in output and "HTTP 429" in output
    assert read_manifest(tmp_path / "out" / "utility") is None


def test_a_source_with_no_successful_rating_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MW_HOSTILE_KEY", KEY)
    with FaultServer() as srv:
        config = write_run(tmp_path, utility=medu_section(srv.url))
        fake_ingest(config)
        srv.faults = {"doc-w": ["500"] * 1000, "doc-c1": ["400"] * 10}  # wiki: all fail; code: one doc fails
        code, output = run_cli(["run", str(config), "--stage", "utility"], capsys)
        assert code != 0 and "internal error" not in output
        assert "2 of 4 source/benchmark cells have no rated document (wiki/humaneval, wiki/trivia)" in output
        assert "8 of their ratings failed" in output and "HTTP 500" in output
        assert read_manifest(tmp_path / "out" / "utility") is None
        srv.faults = {"doc-c1": ["400"] * 10}  # the partial failure alone is committed, with a warning
        code, output = run_cli(["run", str(config), "--stage", "utility"], capsys)
    assert code == 0, output
    assert "2 of 16 ratings failed after retries" in output
    rows = {(r["source"], r["benchmark"]): r for r in pq.read_table(tmp_path / "out/utility/utility.parquet").to_pylist()}
    assert rows[("code", "trivia")]["n"] == 3 and rows[("wiki", "trivia")]["n"] == 4
    assert read_manifest(tmp_path / "out" / "utility")["drops"]["failed"] == 2


# -- secrets ---------------------------------------------------------------------------------------
def test_no_artifact_or_log_line_holds_a_credential(tmp_path, capsys, monkeypatch):
    """The server echoes request line and headers in its error bodies; the key, the URL password and
    the secret query parameter must appear in no file the stage writes and not on stderr."""
    monkeypatch.setenv("MW_HOSTILE_KEY", KEY)
    with FaultServer() as srv:
        host = srv.url.split("//", 1)[1]
        url = f"http://user:{PASSWORD}@{host}?api_key={QUERY_SECRET}&api-version=2024"
        config = write_run(tmp_path, utility=medu_section(url))
        fake_ingest(config)
        srv.faults = {"doc-c0": ["echo"] * 10, "doc-w2": ["echo"] * 10}
        code, output = run_cli(["-v", "run", str(config), "--stage", "utility"], capsys)
        seen = [(path, headers) for path, _, headers in srv.requests]
    assert code == 0, output
    # the credentials did go over the wire (key as Bearer, the query parameter on every request)
    assert all(h["Authorization"] == f"Bearer {KEY}" for _, h in seen)
    assert all(f"api_key={QUERY_SECRET}" in p and p.startswith("/v1/chat/completions?") for p, _ in seen)
    folder = tmp_path / "out" / "utility"
    written = sorted(p for p in folder.rglob("*") if p.is_file())
    assert {"cost.json", "ratings.parquet", "_manifest.json"} <= {p.name for p in written}
    ratings = pq.read_table(folder / "ratings.parquet").to_pylist()
    assert sum(1 for r in ratings if r["error"] and "HTTP 500" in r["error"] and "***" in r["error"]) == 4
    for blob, where in [(p.read_bytes(), str(p)) for p in written] + [(output.encode(), "stderr")]:
        for secret in SECRETS:
            assert secret.encode() not in blob, f"{secret} leaked into {where}"
    manifest = read_manifest(folder)
    shown = manifest["config"]["utility"]["backend_options"]["base_url"]
    assert shown == f"http://***@{host}?api_key=***&api-version=2024"


# -- embedding: reuse the embed artifact -----------------------------------------------------------
def in_process_run_embed(spark, *, units, out_root, encoder, max_tokens, batch_size, torch_threads, device,
                         backend="auto"):
    """The embed job's own per-unit function, without Spark."""
    from mixweave.jobs.embed import _embed_units
    from mixweave.retrieval.encoder_backends import resolve_backend

    backend = resolve_backend(backend, device)  # what run_embed does on the driver
    run = _embed_units(str(Path(out_root).resolve()), encoder, max_tokens, batch_size, torch_threads, device, backend)
    done = list(run(iter([units])))
    return {"rows": sum(d["rows"] for d in done), "encoder_seconds": 0.0, "slowest_unit_s": 0.0, "backend": backend}


@pytest.fixture
def counted_encoder(monkeypatch):
    """Every text handed to the encoder, in order."""
    pytest.importorskip("sentence_transformers")
    import torch

    import mixweave.retrieval.encoders as encoders

    seen: list[str] = []
    real = encoders.embed_texts

    def counting(model, texts, **kw):
        seen.extend(texts)
        return real(model, texts, **kw)

    monkeypatch.setattr(encoders, "embed_texts", counting)
    before = torch.get_num_threads()
    yield seen
    torch.set_num_threads(before)


def test_utility_reuses_the_embed_artifact(tmp_path, capsys, monkeypatch, counted_encoder):
    import mixweave.jobs.embed as embed_job
    from mixweave.utility.api import run_estimate

    monkeypatch.setattr(embed_job, "run_embed", in_process_run_embed)
    monkeypatch.setattr(StageContext, "spark", lambda self: None)
    config = write_run(tmp_path, order={"encoder": "default", "encoder_backend": "openvino", "max_tokens": 64,
                                        "batch_size": 4},
                       utility={"method": "embedding", "max_tokens": 64, "per_source": 3, "top_k": 2,
                                "n_boot": 50})
    fake_ingest(config)
    code, output = run_cli(["run", str(config), "--stage", "embed"], capsys)
    assert code == 0, output
    counted_encoder.clear()
    code, output = run_cli(["run", str(config), "--stage", "utility"], capsys)
    assert code == 0, output
    all_docs = {t for texts in DOCS.values() for t in texts}
    assert not all_docs & set(counted_encoder)  # the documents were not encoded again
    assert len(counted_encoder) == len(BENCH)  # only the benchmark examples
    folder = tmp_path / "out" / "utility"
    assert set(read_manifest(folder)["inputs"]) == {"ingest", "embed"}
    assert json.loads((folder / "cost.json").read_text())["estimator"]["doc_embeddings"] == "reused"
    reused = pq.read_table(folder / "utility.parquet")
    encoded = run_estimate("embedding", str(tmp_path / "out" / "ingest" / "docs"), str(tmp_path / "benchmarks.jsonl"),
                           encoder="default", max_tokens=64, per_source=3, top_k=2, n_boot=50, seed=0)
    assert encoded.cost["estimator"]["doc_embeddings"] == "encoded"
    assert reused.column_names == encoded.table.column_names
    assert reused.column("source").to_pylist() == encoded.table.column("source").to_pylist()
    assert reused.column("benchmark").to_pylist() == encoded.table.column("benchmark").to_pylist()
    assert reused.column("n").to_pylist() == encoded.table.column("n").to_pylist()
    for col in ("mean", "std", "ci_low", "ci_high"):
        np.testing.assert_allclose(reused.column(col).to_numpy(), encoded.table.column(col).to_numpy(), atol=1e-4)


def test_embed_is_an_input_only_when_encoder_and_max_tokens_match(tmp_path):
    base = {"order": {"encoder": "default", "max_tokens": 64, "encoder_backend": "openvino"}}  # fp32: reusable
    cases = [({"method": "embedding", "max_tokens": 64}, ("ingest", "embed")),
             ({"method": "embedding", "max_tokens": 128}, ("ingest",)),
             ({"method": "embedding", "max_tokens": 64, "encoder": str(tmp_path)}, ("ingest",)),
             ({"method": "medu", "model": "m"}, ("ingest",))]
    for i, (utility, want) in enumerate(cases):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        assert utility_inputs(load_config(write_run(folder, utility=utility, **base))) == want, utility
    plain = tmp_path / "no-order"
    plain.mkdir()
    assert utility_inputs(load_config(write_run(plain, utility={"method": "embedding"}))) == ("ingest",)


def test_gather_reads_rows_across_blocks():
    from mixweave.pipeline.stages.utility import _gather

    full = np.arange(30, dtype=np.float32).reshape(10, 3)
    blocks = [full[:4], full[4:5], full[5:]]
    positions = np.array([9, 0, 4, 5, 3, 3])
    np.testing.assert_array_equal(_gather(blocks, positions), full[positions])


@pytest.mark.parametrize("backend, reused", [("auto", "fp32 here"), ("torch", True), ("openvino", True), ("onnx", True),
                                             ("openvino-bf16", False), ("onnx-int8", False), ("static", False)])
def test_utility_reuses_only_lossless_embed_vectors(tmp_path, backend, reused):
    """The utility embeds benchmark examples with torch: document vectors of another space (int8) or
    another dimension (static) must not be mixed with them."""
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.stages.utility import reuses_embed, utility_inputs

    config = parse_config({"out": str(tmp_path / "out"), "sources": {"a": {"paths": ["x/*.jsonl"]}},
                           "benchmarks": str(tmp_path / "b.jsonl"),
                           "order": {"encoder_backend": backend, "max_tokens": 64},
                           "utility": {"method": "embedding", "max_tokens": 64}})
    if reused == "fp32 here":  # auto: openvino-bf16 on a CPU with bf16 instructions (not reused), else openvino
        from mixweave.retrieval.encoder_backends import cpu_has_bf16

        reused = not cpu_has_bf16()
    assert reuses_embed(config) is reused
    assert ("embed" in utility_inputs(config)) is reused
