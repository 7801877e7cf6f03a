"""Exported encoder backends (onnx, openvino, onnx-int8, static) against the torch reference on real
texts, their shared contract, backend resolution, and the export cache (key, reuse, atomic build).

Exports go to the default encoder cache (built once per machine, as a user's run would); the cache
mechanics run in a temporary cache.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mixweave.errors import InputError  # noqa: E402
from mixweave.retrieval import encoder_backends as eb  # noqa: E402
from mixweave.retrieval.encoders import embed_texts, encoder_backend, load_encoder, resolve_encoder_path  # noqa: E402

CORPUS = Path(__file__).parent / "data" / "corpus"


def fixture_texts(per_source: int) -> list[str]:
    """The first ``per_source`` non-empty documents of every fixture source (real text, 9 domains)."""
    texts = []
    for source in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        mine = []
        for path in sorted(source.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                text = json.loads(line).get("text", "")
                if text.strip() and len(mine) < per_source:
                    mine.append(text)
        texts.extend(mine)
    return texts


TEXTS = fixture_texts(8)  # 72 documents
MAX_TOKENS = 64
"""The backends' comparisons with torch read :data:`TEXTS` at this many tokens (every document is
longer: all positions are real tokens). The claims do not depend on it; the default's clamp (254) is
checked by test_contract_of_every_backend here and against sentence-transformers in
tests/test_retrieval_encoders.py."""
SHORT = ["A cat is sleeping on the warm windowsill.", "The kitten curled up in a sunny spot by the window.",
         "Quarterly revenue grew by twelve percent compared with last year.", ""]


@pytest.fixture
def reference(backend_embeddings):
    """The torch backend's vectors of :data:`TEXTS` (one thread; tests/conftest.py, once per worker)."""
    return backend_embeddings("torch")


def neighbours(E: np.ndarray, k: int) -> np.ndarray:
    S = E @ E.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def recall_at(E: np.ndarray, ref: np.ndarray, k: int) -> float:
    """Mean share of each document's k exact torch neighbours that ``E`` also finds (brute force)."""
    a, b = neighbours(ref, k), neighbours(E, k)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(E))]))


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_lossless_backends_match_torch(backend, reference, backend_embeddings):
    enc = load_encoder("default", "cpu", backend=backend, threads=1)
    assert encoder_backend(enc) == backend and enc.key.startswith("onnx-")
    E = backend_embeddings(backend)  # enc's vectors of TEXTS at MAX_TOKENS, batches of 16
    assert E.dtype == np.float32 and E.shape == reference.shape
    cos = (E * reference).sum(1)
    assert cos.min() >= 0.999, cos.min()
    assert recall_at(E, reference, 10) >= 0.99


def test_int8_is_close_to_torch(reference):
    enc = load_encoder("default", "cpu", backend="onnx-int8", threads=1)
    E = embed_texts(enc, TEXTS, max_tokens=MAX_TOKENS, batch_size=16)
    cos = (E * reference).sum(1)
    assert cos.min() >= 0.95 and cos.mean() >= 0.985, (cos.min(), cos.mean())
    assert cos.mean() < 0.99999  # really quantised: not the fp32 graph
    assert recall_at(E, reference, 10) >= 0.85


# The static distillation runs the model over the 30,522-token vocabulary once per machine (~35 s of
# CPU on 2 idle cores, cached after): slow the first time only.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_static_keeps_some_neighbours(reference):
    enc = load_encoder("default", "cpu", backend="static")
    E = embed_texts(enc, TEXTS, max_tokens=MAX_TOKENS, batch_size=16)
    assert E.dtype == np.float32 and E.shape == (len(TEXTS), eb.STATIC_PCA_DIMS)
    rng = np.random.default_rng(0)
    chance = recall_at(rng.standard_normal(E.shape).astype(np.float32), reference, 10)
    assert recall_at(E, reference, 10) >= max(0.3, 2 * chance)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["onnx", "openvino", "onnx-int8",
                                     pytest.param("static", marks=pytest.mark.slow)])
def test_contract_of_every_backend(backend):
    enc = load_encoder("default", "cpu", backend=backend, threads=1)
    assert load_encoder("default", "cpu", backend=backend, threads=1) is enc  # one per worker
    texts = SHORT + TEXTS[:6]
    E = embed_texts(enc, texts, batch_size=3)
    dim = enc.get_embedding_dimension()
    assert E.dtype == np.float32 and E.shape == (len(texts), dim)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embed_texts(enc, [t])[0] for t in texts])  # input order, padding-independent
    if backend == "onnx-int8":  # activations are quantised with one scale per batch: close, not equal
        assert ((E * one_by_one).sum(1) >= 0.97).all()
    else:
        np.testing.assert_allclose(E, one_by_one, atol=2e-5)
    assert E[0] @ E[1] > E[0] @ E[2]  # cat ~ kitten, not revenue
    assert embed_texts(enc, []).shape == (0, dim)
    head = "the quick brown fox jumps over the lazy dog"
    a = embed_texts(enc, [head + " and then naps all afternoon in the garden"], max_tokens=9)
    b = embed_texts(enc, [head + " while the stock market crashes spectacularly"], max_tokens=9)
    np.testing.assert_allclose(a, b, atol=1e-6)  # only the first 9 content tokens are read
    with pytest.raises(InputError):
        embed_texts(enc, ["ok", None])


def test_backend_resolution():
    assert eb.resolve_backend("auto", "cpu") == eb.cpu_default()
    assert eb.resolve_backend(None, "cuda:0") == "torch"
    assert eb.resolve_backend("static", None) == "static"
    with pytest.raises(InputError, match="choose one of"):
        eb.resolve_backend("tensorrt", "cpu")
    with pytest.raises(InputError, match="runs on CPU"):
        eb.resolve_backend("onnx", "cuda")


def test_export_key_follows_the_model_bytes(tmp_path):
    model = resolve_encoder_path("default")
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    key = eb.export_key(copy, "onnx")
    assert key == eb.export_key(model, "onnx") == eb.export_key(copy, "openvino")  # openvino runs the onnx export
    assert len({key, eb.export_key(copy, "onnx-int8"), eb.export_key(copy, "static")}) == 3
    assert eb.export_key(copy, "torch") is None
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert eb.export_key(copy, "onnx") != key


def test_model_hash_is_memoised_on_disk_until_a_file_changes(tmp_path, monkeypatch):
    """A process that finds the on-disk memo of the folder's (names, sizes, mtimes) reads the hash
    instead of hashing the bytes; a rewritten file, or a corrupt memo, means hashing again."""
    monkeypatch.setenv("MIXWEAVE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "weights.bin").write_bytes(b"\0" * 1000)
    first = eb.model_sha256(model)
    memos = list((tmp_path / "cache" / "encoders" / "sha256").iterdir())
    assert len(memos) == 1 and memos[0].read_text() == first

    def no_hashing(*args):
        raise AssertionError("hashed the folder despite its memo")

    monkeypatch.setattr(eb, "_folder_sha256", no_hashing)
    assert eb.model_sha256(model) == first  # a new process: the memo, not the bytes
    monkeypatch.undo()
    monkeypatch.setenv("MIXWEAVE_CACHE", str(tmp_path / "cache"))
    before = (model / "weights.bin").stat().st_mtime_ns
    (model / "weights.bin").write_bytes(b"\1" * 1000)  # same size, new bytes and mtime (set: a clock tick apart)
    os.utime(model / "weights.bin", ns=(before + 10**9, before + 10**9))
    second = eb.model_sha256(model)
    assert second != first and len(list(memos[0].parent.iterdir())) == 2
    newest = max(memos[0].parent.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    newest.write_text("not a hash")
    assert eb.model_sha256(model) == second and newest.read_text() == second


def test_cache_builds_once_atomically_under_a_race(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXWEAVE_CACHE", str(tmp_path / "cache"))
    builds = []
    both_inside = threading.Barrier(2, timeout=60)

    def build(folder: Path) -> None:
        builds.append(folder)
        (folder / "part").write_text("x" * 1000)
        both_inside.wait()  # the two racers are building at the same time
        (folder / "model.onnx").write_text(str(len(builds)))

    results = []
    threads = [threading.Thread(target=lambda: results.append(eb.cached_build("k", build))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = tmp_path / "cache" / "encoders" / "k"
    assert results == [final, final] and len(builds) == 2
    assert sorted(p.name for p in final.iterdir()) == ["_done.json", "model.onnx", "part"]
    assert [p.name for p in final.parent.iterdir()] == ["k"]  # the loser's temporary folder is gone
    before = (final / "_done.json").stat().st_mtime_ns
    time.sleep(0.01)
    assert eb.cached_build("k", build) == final and len(builds) == 2  # reused, not rebuilt
    assert (final / "_done.json").stat().st_mtime_ns == before

    def broken(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        eb.cached_build("j", broken)
    assert not (final.parent / "j").exists() and [p.name for p in final.parent.iterdir()] == ["k"]


def test_unsupported_model_folders_are_refused(tmp_path):
    model = resolve_encoder_path("default")
    folder = tmp_path / "dense"
    folder.mkdir()
    shutil.copy(model / "config.json", folder / "config.json")
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(InputError, match="only backend torch"):
        load_encoder(folder, "cpu", backend="onnx")


@pytest.mark.parametrize("max_length", [6, 34, 130])
def test_encode_truncated_equals_whole_text_encoding(max_length):
    """Tokenizing a whitespace-cut prefix (8 characters per kept token) gives the whole text's truncated
    encoding, bit for bit: every fixture document of every source, plus texts built to break the cut
    (CRLF and double spaces at the cut, no whitespace at all, whitespace-heavy code that needs the
    whole-text fallback, CJK, accents, a text of exactly the cut length)."""
    tokenizer = eb.load_tokenizer(resolve_encoder_path("default").resolve())
    tokenizer.no_padding()
    cut = eb.PREFIX_CHARS_PER_TOKEN * max_length
    made = [
        "word\r\n" * 400, "a  b  " * 500, "x" * 5000, "def f():\n" + " " * 3000 + "return 1\n" * 50,
        "漢字の文章。" * 400, "Ça été très déjà-vu, naïve façade; " * 200, ("ab " * cut)[:cut], "",
        "tail " * (cut // 5) + "Zyzzyva" * 30,
    ]
    texts = fixture_texts(40) + made
    got = eb.encode_truncated(tokenizer, texts, max_length)
    tokenizer.enable_truncation(max_length)
    whole = tokenizer.encode_batch_fast(texts)
    for text, a, b in zip(texts, got, whole):
        assert (a.ids, a.type_ids, a.attention_mask) == (b.ids, b.type_ids, b.attention_mask), text[:60]
    assert sum(len(t) > cut for t in texts) > 20  # the cut really happened on real documents


def test_whitespace_prefix_cuts_before_whitespace():
    assert eb.whitespace_prefix("short", 10) == "short"
    assert eb.whitespace_prefix("one two three", 8) == "one two"
    assert eb.whitespace_prefix("one  \r\ntwo three", 9) == "one"
    assert eb.whitespace_prefix("nowhitespacehere", 5) == "nowhitespacehere"
    assert eb.whitespace_prefix("   leading", 2) == "   leading"


def test_auto_backend_and_cuda_check_agree_with_torch_without_importing_it_on_a_gpu_less_machine():
    import subprocess
    import sys

    import torch

    assert eb.cuda_available() == torch.cuda.is_available()  # torch imported: asked directly
    code = ("import sys; from mixweave.retrieval.encoder_backends import cuda_available, resolve_backend; "
            "print(cuda_available(), resolve_backend('auto'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(torch.cuda.is_available())
    assert out[1] == ("torch" if torch.cuda.is_available() else eb.cpu_default())
    if not any(Path(p).exists() for p in eb.GPU_DRIVER_PATHS):
        assert out[2] == "False"  # no driver, no CUDA: torch was not imported to learn it
