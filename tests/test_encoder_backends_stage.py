"""The embed stage with ``order.encoder_backend``: the config check, the backend and its export key in
the fingerprint and the manifest, and the stage's vectors equal to in-process embedding (one Spark
run of ingest + embed; the other backends are checked through their fingerprints only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixweave.errors import ConfigError
from mixweave.pipeline.config import parse_config
from mixweave.pipeline.runner import StageContext, run_stage, stage_fingerprint
from mixweave.pipeline.stages import build_stages

pytestmark = pytest.mark.spark

CORPUS = Path(__file__).parent / "data" / "corpus"


def config_data(tmp_path: Path, **order) -> dict:
    sources = {}
    for name in ("code", "encyclopedic"):
        lines = [ln for p in sorted((CORPUS / name).glob("*.jsonl")) for ln in p.read_text().splitlines()][:12]
        folder = tmp_path / "src" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part.jsonl").write_text("\n".join(lines) + "\n")
        sources[name] = {"paths": [str(folder / "*.jsonl")]}
    return {"out": str(tmp_path / "out"), "sources": sources,
            "order": {"max_tokens": 64, "batch_size": 8, "torch_threads": 1, "device": "cpu", **order}}


def test_backend_is_checked_with_the_config(tmp_path):
    with pytest.raises(ConfigError, match="encoder_backend"):
        parse_config(config_data(tmp_path, encoder_backend="tensorrt"))
    with pytest.raises(ConfigError, match="runs on CPU"):
        parse_config({**config_data(tmp_path), "order": {"encoder_backend": "static", "device": "cuda"}})


def test_embed_stage_records_and_fingerprints_its_backend(tmp_path, spark):
    from mixweave.data.artifacts import docs_files_by_source
    from mixweave.retrieval.encoder_backends import cpu_default, export_key
    from mixweave.retrieval.encoders import embed_texts, load_encoder, resolve_encoder_path

    stages = build_stages()
    auto = parse_config(config_data(tmp_path))
    ctx = StageContext(config=auto, out=Path(auto.out), _spark=spark)
    assert run_stage(stages["ingest"], ctx).status == "ran"
    assert run_stage(stages["embed"], ctx).status == "ran"
    manifest = json.loads((ctx.artifact("embed") / "_manifest.json").read_text())
    model = resolve_encoder_path("default").resolve()
    CPU_DEFAULT = cpu_default()  # openvino-bf16 on a CPU with bf16 instructions, else openvino
    assert manifest["backend"] == CPU_DEFAULT and manifest["export"] == export_key(model, CPU_DEFAULT)
    assert run_stage(stages["embed"], ctx).status == "skipped"  # same backend, same export: up to date

    # the stage's vectors are what embed_texts gives with the same backend, unit by unit
    enc = load_encoder("default", "cpu", backend=CPU_DEFAULT, threads=1)
    files = docs_files_by_source(ctx.artifact("ingest"))
    for source, info in manifest["embeddings"].items():
        texts = [t for f in files[source] for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
        got = np.concatenate([np.load(ctx.artifact("embed") / f) for f in info["files"]])
        np.testing.assert_allclose(got, embed_texts(enc, texts, max_tokens=64, batch_size=8), atol=1e-5)

    fingerprints = {}
    for backend in ("auto", CPU_DEFAULT, "torch", "onnx", "static"):
        c = parse_config(config_data(tmp_path, encoder_backend=backend))
        fingerprints[backend] = stage_fingerprint(stages["embed"], StageContext(config=c, out=Path(c.out)))[0]
    assert len(set(fingerprints.values())) == 5  # the setting and the resolved backend both count
