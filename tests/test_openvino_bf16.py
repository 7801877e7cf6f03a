"""The openvino-bf16 encoder backend: OpenVINO's bf16 inference precision on the fp32 ONNX export.

Against the torch reference and OpenVINO f32 on real fixture texts (the same 72 documents as
tests/test_encoder_backends.py): close to torch (cosine >= 0.999 per document, recall@10 >= 0.99),
really bf16 (not the f32 graph's bits), reproducible (1 vs 2 threads, batch vs one by one: the embed
job's byte identity across Spark layouts rests on it), and chosen by ``auto`` exactly where the CPU
has bf16 instructions; refused with one line where it has not."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mixweave.errors import InputError  # noqa: E402
from mixweave.retrieval import encoder_backends as eb  # noqa: E402
from mixweave.retrieval.encoders import embed_texts, encoder_backend, load_encoder  # noqa: E402
from tests.test_encoder_backends import MAX_TOKENS, SHORT, TEXTS, recall_at, reference  # noqa: E402,F401

needs_bf16 = pytest.mark.skipif(not eb.cpu_has_bf16(), reason="this CPU has no bf16 instructions")


@needs_bf16
def test_bf16_is_close_to_torch_and_really_bf16(reference, backend_embeddings):  # noqa: F811
    enc = load_encoder("default", "cpu", backend="openvino-bf16", threads=1)
    assert encoder_backend(enc) == "openvino-bf16" and enc.key == eb.export_key(enc.model_dir, "openvino")
    E = embed_texts(enc, TEXTS, max_tokens=MAX_TOKENS, batch_size=16)
    assert E.dtype == np.float32 and E.shape == reference.shape
    cos = (E * reference).sum(1)
    assert cos.min() >= 0.999, cos.min()
    assert recall_at(E, reference, 10) >= 0.99
    F = backend_embeddings("openvino")  # the f32 graph's vectors, as tests/test_encoder_backends.py's
    assert not np.array_equal(E, F)  # the bf16 hint took effect: not the f32 graph's bits
    assert ((E * F).sum(1) >= 0.9999).all()


@needs_bf16
def test_bf16_is_reproducible_across_threads_and_batches():
    one = load_encoder("default", "cpu", backend="openvino-bf16", threads=1)
    two = load_encoder("default", "cpu", backend="openvino-bf16", threads=2)
    texts = SHORT + TEXTS[:10]
    a = embed_texts(one, texts, max_tokens=MAX_TOKENS, batch_size=4)
    assert np.array_equal(a, embed_texts(two, texts, max_tokens=MAX_TOKENS, batch_size=4))
    one_by_one = np.stack([embed_texts(one, [t], max_tokens=MAX_TOKENS)[0] for t in texts])
    np.testing.assert_allclose(a, one_by_one, atol=2e-5)  # padding-independent
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert a[0] @ a[1] > a[0] @ a[2]  # cat ~ kitten, not revenue


def test_auto_picks_bf16_exactly_where_the_cpu_has_it(monkeypatch):
    assert eb.resolve_backend("auto", "cpu") == ("openvino-bf16" if eb.cpu_has_bf16() else "openvino")
    monkeypatch.setattr(eb, "cpu_has_bf16", lambda: False)
    assert eb.resolve_backend("auto", "cpu") == eb.CPU_DEFAULT == "openvino"
    with pytest.raises(InputError, match="bf16 instructions") as err:
        eb.resolve_backend("openvino-bf16", "cpu")
    assert len(str(err.value).splitlines()) == 1
    monkeypatch.setattr(eb, "cpu_has_bf16", lambda: True)
    assert eb.resolve_backend("auto", None) in ("openvino-bf16", "torch")  # torch only where CUDA is present
    assert eb.resolve_backend("auto", "cpu") == "openvino-bf16"


def test_bf16_vectors_are_not_reused_by_the_utility_stage(tmp_path):
    """The utility embeds benchmark examples with torch; bf16 document vectors moved its table by up to
    1.5e-3, so a bf16 embed is not reused (auto follows what it resolves to)."""
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.stages.utility import reuses_embed
    from tests.test_encoder_backends_stage import config_data

    def config(backend: str):
        data = config_data(tmp_path, encoder_backend=backend)
        data["utility"] = {"method": "embedding", "max_tokens": data["order"].get("max_tokens", 64)}
        data["benchmarks"] = str(Path(__file__).parent / "data" / "corpus" / "benchmarks.jsonl")
        return parse_config(data)

    assert reuses_embed(config("openvino")) and not reuses_embed(config("openvino-bf16"))
    assert reuses_embed(config("auto")) is (eb.resolve_backend("auto", "cpu") == "openvino")
    assert not reuses_embed(config("onnx-int8"))
