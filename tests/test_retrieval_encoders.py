"""Offline MiniLM encoder: local load, normalisation, input order, truncation, the torch backend against
sentence-transformers itself."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import collections  # noqa: E402
import json  # noqa: E402
import os.path  # noqa: E402
import re  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mixweave.errors import InputError  # noqa: E402
from mixweave.retrieval.encoders import embed_texts, load_encoder  # noqa: E402

# Real text of varied length: stdlib docstrings plus a few hand-written sentences.
DOCSTRINGS = [f.__doc__ for f in (json.dumps, json.loads, re.sub, re.compile, os.path.join, textwrap.dedent,
                                   collections.Counter, collections.OrderedDict, sorted, zip)]
SENTENCES = [
    "A cat is sleeping on the warm windowsill.",
    "The kitten curled up in a sunny spot by the window.",
    "Quarterly revenue grew by twelve percent compared with last year.",
    "The company's profits increased in the third quarter.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "",
]
TEXTS = [t for t in DOCSTRINGS if t] + SENTENCES


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("default", device="cpu")


def test_default_encoder_loads_offline_and_is_cached(encoder):
    assert load_encoder("default", device="cpu") is encoder
    assert encoder.max_seq_length == 256


def test_embeddings_are_normalised_float32_in_input_order(encoder):
    E = embed_texts(encoder, TEXTS, batch_size=4)
    assert E.dtype == np.float32 and E.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embed_texts(encoder, [t])[0] for t in TEXTS])
    np.testing.assert_allclose(E, one_by_one, atol=2e-5)
    cat, kitten, revenue, profit = (E[len(TEXTS) - 6 + i] for i in range(4))
    assert cat @ kitten > 0.4 > cat @ revenue
    assert revenue @ profit > cat @ profit
    assert encoder.max_seq_length == 256  # restored after the call
    assert embed_texts(encoder, []).shape == (0, 384)


def test_truncation_to_max_tokens(encoder):
    head = "the quick brown fox jumps over the lazy dog"
    a = embed_texts(encoder, [head + " and then naps all afternoon in the garden"], max_tokens=9)
    b = embed_texts(encoder, [head + " while the stock market crashes spectacularly"], max_tokens=9)
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = embed_texts(encoder, [head + " while the stock market crashes spectacularly"], max_tokens=510)
    assert float(a[0] @ c[0]) < 0.999  # the default (clamped to 254) sees the tail


def test_torch_backend_is_sentence_transformers_without_the_library(encoder, tmp_path):
    """Backend torch runs the model sentence-transformers would (``TorchEncoder``: transformers'
    AutoModel + the folder's tokenizer and mean pooling): the same vectors to float32 rounding at
    every truncation. A layout it does not read (a Dense module after the pooling) loads as a
    ``SentenceTransformer`` and still meets embed_texts' contract."""
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense

    from mixweave.retrieval.encoder_backends import TorchEncoder
    from mixweave.retrieval.encoders import resolve_encoder_path

    assert isinstance(encoder, TorchEncoder) and encoder.backend == "torch" and encoder.key is None
    folder = resolve_encoder_path("default")
    library = SentenceTransformer(str(folder), device="cpu", local_files_only=True).eval()
    for max_tokens in (9, 128, 510):
        library.max_seq_length = min(max_tokens + 2, 256)
        expected = library.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
        np.testing.assert_allclose(embed_texts(encoder, TEXTS, max_tokens=max_tokens, batch_size=4), expected,
                                   atol=1e-6, rtol=0)

    dense = tmp_path / "dense"
    dense.mkdir()
    for item in folder.iterdir():
        (dense / item.name).symlink_to(item)
    (dense / "modules.json").unlink()
    modules = json.loads((folder / "modules.json").read_text())
    modules = [m for m in modules if not m["type"].endswith("Normalize")]
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "9_Dense",
                    "type": f"{Dense.__module__.rsplit('.', 1)[0]}.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    (dense / "9_Dense").mkdir()
    Dense(384, 16).save(str(dense / "9_Dense"))
    with_dense = load_encoder(dense, device="cpu", cache=False)
    assert isinstance(with_dense, SentenceTransformer)
    E = embed_texts(with_dense, TEXTS, max_tokens=128, batch_size=4)
    assert E.shape == (len(TEXTS), 16)
    with_dense.max_seq_length = 130
    np.testing.assert_allclose(E, with_dense.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=True),
                               atol=1e-6, rtol=0)


def test_hub_names_and_missing_paths_are_refused(tmp_path):
    with pytest.raises(InputError, match="not a local folder"):
        load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    with pytest.raises(InputError):
        load_encoder(tmp_path / "nope", device="cpu")
    with pytest.raises(InputError, match="modules.json"):
        load_encoder(tmp_path, device="cpu")


@pytest.mark.gpu
def test_cuda_encoder_matches_cpu(encoder):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    gpu = load_encoder("default", device="cuda")
    assert gpu.overlaps_host  # embed_texts tokenizes the next batch while the GPU runs this one
    np.testing.assert_allclose(embed_texts(gpu, TEXTS, batch_size=4), embed_texts(encoder, TEXTS), atol=1e-3)


def test_prefetched_batches_equal_sequential_ones(encoder):
    """``embed_texts(prefetch=True)`` (a thread tokenizes the next batch; the default for torch on
    CUDA) gives the sequential loop's vectors, bit for bit and in input order."""
    assert not encoder.overlaps_host  # on the CPU the runtime already uses every core
    sequential = embed_texts(encoder, TEXTS, batch_size=3, prefetch=False)
    prefetched = embed_texts(encoder, TEXTS, batch_size=3, prefetch=True)
    assert np.array_equal(prefetched, sequential)
    assert embed_texts(encoder, [], prefetch=True).shape == (0, 384)
    np.testing.assert_allclose(embed_texts(encoder, TEXTS[:1], prefetch=True), sequential[:1], atol=1e-6)
