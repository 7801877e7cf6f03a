"""CPU encoder backends built locally from a sentence-transformers folder: ONNX Runtime, OpenVINO,
int8 ONNX, and a static (model2vec) distillation.

Backends (``order.encoder_backend``):

* ``torch``: the model in PyTorch (the reference; the default on CUDA): :class:`TorchEncoder`, the
  transformer sentence-transformers would load with the folder's tokenizer and pooling.
* ``onnx``: the transformer exported with ``torch.onnx.export(dynamo=False)`` (eager attention),
  run by ONNX Runtime; tokenizer + mean pooling in numpy. Lossless (cosine to torch ~1.0000).
* ``openvino``: the same ONNX graph compiled by OpenVINO at f32 precision (no bf16 hint).
  Lossless, bitwise reproducible; the CPU default where the CPU has no bf16 instructions.
* ``openvino-bf16``: the same graph with OpenVINO's ``INFERENCE_PRECISION_HINT: bf16`` (matrix
  products in bfloat16 with fp32 accumulation, on CPUs with AVX512-BF16 or AMX). Per-document cosine
  to f32 >= 0.9999, recall@20 vs torch ~0.99+ (bench/embed.py), ~1.9x OpenVINO f32's throughput on
  an AVX512-BF16 CPU. The CPU default (``auto``) where OpenVINO reports BF16 among the CPU's
  optimization capabilities (:func:`cpu_default`); without them OpenVINO would run it at f32, so it
  is refused there with one line.
* ``onnx-int8``: the ONNX graph with per-channel dynamic int8 weights (onnxruntime.quantization).
  Faster, moves a few neighbours (recall@20 ~0.9 vs torch); opt-in. Activations are quantised
  with one scale per batch, so a document's vector depends slightly on its batch-mates (fixed by
  the embed job's units and length-sorted batches: still byte-identical across Spark layouts).
* ``static``: a model2vec ``StaticModel`` distilled here from the same folder the model2vec way:
  every vocabulary token is embedded as ``[CLS] tok [SEP]`` by the model (its fp32 export run by
  OpenVINO; mean pooling over the three positions), PCA to
  256 dimensions, Zipf/SIF weighting (coefficient 1e-4); a document is the mean of its tokens'
  rows. ~100x faster, a different, coarser space (recall@20 ~0.5-0.7); for throughput runs only.
  The distillation is our own code (model2vec's ``distill`` extra needs transformers<5.4); the
  runtime is model2vec's.

Cache. Exports live in ``$MIXWEAVE_CACHE/encoders/<key>/`` (default ``~/.cache/mixweave``), where
the key is ``<kind>-<sha256 of the model folder>[:16]-<options hash>``; a build writes a temporary
sibling folder and renames it into place, so concurrent Spark workers never see half an export (the
loser of a race discards its copy). Nothing is downloaded: only the local folder is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mixweave.errors import InputError
from mixweave.retrieval.bert import bert_hidden_states, load_bert

log = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "onnx", "openvino", "openvino-bf16", "onnx-int8", "static"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "openvino", "openvino-bf16", "onnx-int8", "static")
CPU_DEFAULT = "openvino"
"""The fastest lossless (bitwise fp32) CPU backend; :func:`cpu_default` picks bf16 where the CPU has it."""
REUSABLE = ("torch", "onnx", "openvino")
"""Backends whose vectors are the reference model's to float32 rounding (per-row cosine to torch
1.0000), so the utility (which embeds with one of them, :func:`resolve_lossless_backend`) may reuse
the embed stage's vectors made with any of them. bf16
vectors (cosine >= 0.9999) moved a small utility table by up to 1.5e-3: not reused; int8 and static
are other spaces."""
EXPORT_VERSION = 1
"""Bump when an export's recipe changes: it enters every cache key."""
ONNX_OPSET = 17
STATIC_PCA_DIMS = 256
STATIC_SIF = 1e-4
_OPTIONS: dict[str, dict[str, Any]] = {
    "onnx": {"opset": ONNX_OPSET, "attn": "eager"},
    "onnx-int8": {"opset": ONNX_OPSET, "attn": "eager", "quant": "dynamic-qint8-per-channel"},
    "static": {"pca_dims": STATIC_PCA_DIMS, "sif": STATIC_SIF, "pooling": "mean"},
}
_ARTIFACT = {"onnx": "onnx", "openvino": "onnx", "openvino-bf16": "onnx", "onnx-int8": "onnx-int8", "static": "static"}
"""Which cached export each backend runs (openvino compiles the fp32 ONNX export, at f32 or bf16)."""


_PACKAGES = {"onnx": ("onnxruntime", "pip install 'mixweave[onnx]'"),
             "onnx-int8": ("onnxruntime", "pip install 'mixweave[onnx]'"),
             "openvino": ("openvino", "pip install openvino"),
             "openvino-bf16": ("openvino", "pip install openvino"),
             "static": ("model2vec", "pip install model2vec")}


def require_runtime(backend: str) -> None:
    """An :class:`InputError` naming the pip line when ``backend``'s runtime is not installed."""
    import importlib.util

    if backend in _PACKAGES and importlib.util.find_spec(_PACKAGES[backend][0]) is None:
        module, pip = _PACKAGES[backend]
        raise InputError(f"encoder backend {backend} needs the package {module}: {pip} (or choose another "
                         "order.encoder_backend)")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin lists BF16 among its optimization capabilities (AVX512-BF16 or AMX)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cpu_default() -> str:
    """``openvino-bf16`` on a CPU with bf16 instructions (the fastest backend at recall@20 >= 0.99
    measured by bench/embed.py), else :data:`CPU_DEFAULT` (fp32)."""
    return "openvino-bf16" if cpu_has_bf16() else CPU_DEFAULT


def resolve_backend(backend: str | None, device: str | None = None) -> str:
    """``auto`` -> ``torch`` on CUDA (explicit or available), else :func:`cpu_default`."""
    backend = backend or "auto"
    if backend != "auto":
        if backend not in BACKENDS:
            raise InputError(f"unknown encoder backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
        if backend != "torch" and device is not None and str(device).startswith("cuda"):
            raise InputError(f"encoder backend {backend!r} runs on CPU; use backend torch (or auto) with device {device}")
        if backend == "openvino-bf16" and not cpu_has_bf16():
            raise InputError("encoder backend openvino-bf16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX), "
                             "which this one lacks; use openvino (or auto)")
        return backend
    return "torch" if on_cuda(device) else cpu_default()


def on_cuda(device: str | None) -> bool:
    """Whether ``auto`` means CUDA: ``device`` names it, or (no device given) a GPU is available."""
    return str(device).startswith("cuda") if device is not None else cuda_available()


def resolve_lossless_backend(backend: str | None, device: str | None = None) -> str:
    """A backend whose vectors are the reference model's to float32 rounding (:data:`REUSABLE`):
    ``auto`` -> ``torch`` on CUDA, else the fp32 CPU export (:data:`CPU_DEFAULT`, never bf16); an
    explicit one must be in :data:`REUSABLE`. For estimators whose numbers must not depend on the
    machine's instructions (the embedding utility)."""
    backend = backend or "auto"
    if backend == "auto":
        return "torch" if on_cuda(device) else CPU_DEFAULT  # no bf16 probe: its answer is not needed
    if backend not in REUSABLE:
        raise InputError(f"encoder backend {backend!r} is not lossless here; choose one of auto, {', '.join(REUSABLE)}")
    return resolve_backend(backend, device)


def encoder_param_count(model_dir: Path) -> int | None:
    """The parameters in the folder's ``model.safetensors`` (from its JSON header: no weights read,
    no torch; integer buffers such as BERT's ``position_ids`` left out), or None without one: the number
    ``sum(p.numel() for p in model.parameters())`` gives for the loaded transformer."""
    path = Path(model_dir) / "model.safetensors"
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < 100_000_000 else None
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    return int(sum(int(np.prod(v["shape"], dtype=np.int64)) for k, v in header.items()  # float tensors only
                   if k != "__metadata__" and isinstance(v, dict) and str(v.get("dtype", "")).startswith(("F", "BF"))))


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch (~3 CPU-seconds, in every CLI run and
    Spark task that resolves ``auto``) where no GPU driver is present: CUDA needs the NVIDIA driver
    (``/proc/driver/nvidia``, ``/dev/nvidia*``), ROCm ``/dev/kfd``, WSL ``/dev/dxg``."""
    if "torch" not in sys.modules and not any(os.path.exists(p) for p in GPU_DRIVER_PATHS):
        return False
    import torch

    return torch.cuda.is_available()


GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def cache_root() -> Path:
    return Path(os.environ.get("MIXWEAVE_CACHE") or Path.home() / ".cache" / "mixweave").expanduser() / "encoders"


@lru_cache(maxsize=16)
def _folder_sha256(path: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_sha256(model_dir: Path) -> str:
    """sha256 over the model folder's files (relative names and bytes), memoised per (path, names,
    sizes, mtimes): in the process, and on disk beside the exports (``cache_root()/sha256/``), so each
    Spark worker or CLI run that loads an export reads the stamp instead of hashing the folder again
    (all-MiniLM-L6-v2: 90 MB, ~0.2 CPU-s; a 1 GB encoder ~2 s a process). Any write to a file
    changes its mtime or size, so a memo never outlives the bytes it describes."""
    root = Path(model_dir).resolve()
    stamp = tuple(sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")))
    memo = cache_root() / "sha256" / hashlib.sha256(json.dumps([str(root), stamp]).encode()).hexdigest()
    try:
        known = memo.read_text().strip()
        if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
            return known
    except OSError:
        pass
    digest = _folder_sha256(str(root), stamp)
    try:  # best effort: a read-only cache only costs the hash again
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{uuid.uuid4().hex}")
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def export_key(model_dir: Path, backend: str) -> str | None:
    """The cache key of the export ``backend`` runs (None for torch)."""
    if backend == "torch":
        return None
    kind = _ARTIFACT[backend]
    options = json.dumps({"v": EXPORT_VERSION, **_OPTIONS[kind]}, sort_keys=True)
    return f"{kind}-{model_sha256(model_dir)[:16]}-{hashlib.sha256(options.encode()).hexdigest()[:8]}"


def cached_build(key: str, build: Callable[[Path], None]) -> Path:
    """``cache_root()/key``, built by ``build(tmp)`` into a temporary folder and renamed into place."""
    final = cache_root() / key
    if (final / "_done.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        build(tmp)
        (tmp / "_done.json").write_text(json.dumps({"key": key, "seconds": round(time.perf_counter() - t0, 3)}))
        try:
            os.rename(tmp, final)
            log.info("built encoder export %s in %.1fs", final, time.perf_counter() - t0)
        except OSError:
            if not (final / "_done.json").is_file():  # a stale, unfinished folder: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# --- the sentence-transformers folder: tokenizer, pooling, limits ---------------------------------

def _st_layout(model_dir: Path) -> dict:
    """Pooling mode, normalisation and max_seq_length of a Transformer+Pooling(+Normalize) folder."""
    modules_file = model_dir / "modules.json"
    pooling, normalize = "mean", True
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        if not kinds or kinds[0] != "Transformer" or any(k not in ("Transformer", "Pooling", "Normalize") for k in kinds):
            raise InputError(f"{model_dir}: modules {kinds} are not Transformer+Pooling(+Normalize); only backend "
                             "torch runs this model")
        normalize = "Normalize" in kinds
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((model_dir / m["path"] / "config.json").read_text())
                modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
                if modes == ["pooling_mode_mean_tokens"]:
                    pooling = "mean"
                elif modes == ["pooling_mode_cls_token"]:
                    pooling = "cls"
                else:
                    raise InputError(f"{model_dir}: pooling {modes} is not supported by the exported backends; "
                                     "use backend torch")
    max_len = None
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = json.loads(st_cfg.read_text()).get("max_seq_length")
    config = json.loads((model_dir / "config.json").read_text())
    if max_len is None:
        max_len = int(config.get("max_position_embeddings", 512))
    return {"pooling": pooling, "normalize": normalize, "max_seq_length": int(max_len),
            "hidden": int(config.get("hidden_size", 0))}


def load_tokenizer(model_dir: Path):
    """The folder's fast tokenizer as a ``tokenizers.Tokenizer`` (tokenizer.json, else via transformers)."""
    from tokenizers import Tokenizer

    if (model_dir / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    from transformers import AutoTokenizer

    return Tokenizer.from_str(AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
                              .backend_tokenizer.to_str())


# --- builds ---------------------------------------------------------------------------------------

def _load_hf_model(model_dir: Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", local_files_only=True).eval()


def build_onnx(model_dir: Path, out: Path) -> None:
    """fp32 ONNX of the transformer (inputs ids/mask[/token types], output last_hidden_state)."""
    import inspect

    import torch

    model = _load_hf_model(model_dir)
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class Hidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)), return_dict=True).last_hidden_state

    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    args = (ids, mask, torch.zeros_like(ids))[: len(names)]
    with torch.no_grad():
        torch.onnx.export(Hidden(model), args, str(out / "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]},
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)


def build_onnx_int8(model_dir: Path, out: Path) -> None:
    """Per-channel dynamic int8 weights of the fp32 export (activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = ensure_export(model_dir, "onnx") / "model.onnx"
    quantize_dynamic(str(fp32), str(out / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8)


def distill_static(model_dir: Path, out: Path, *, batch_size: int = 512) -> None:
    """model2vec-style distillation: each vocabulary token through the model, PCA, Zipf/SIF weights."""
    from model2vec import StaticModel

    layout = _st_layout(model_dir)
    tokenizer = load_tokenizer(model_dir)
    vocab = tokenizer.get_vocab()
    n = len(vocab)
    cls_id, sep_id = vocab.get("[CLS]"), vocab.get("[SEP]")
    prefix = [cls_id] if cls_id is not None else []
    suffix = [sep_id] if sep_id is not None else []
    teacher = GraphEncoder(model_dir, "openvino")  # the lossless fp32 export: ~3x torch's speed here
    vectors = np.empty((n, layout["hidden"]), np.float32)
    width = len(prefix) + 1 + len(suffix)
    for lo in range(0, n, batch_size):
        ids = np.array([[*prefix, i, *suffix] for i in range(lo, min(n, lo + batch_size))], np.int64)
        hidden = teacher.hidden_states(ids, np.ones_like(ids), np.zeros_like(ids))
        vectors[lo:lo + len(ids)] = hidden.sum(1) / width
    vectors = np.nan_to_num(vectors).astype(np.float64)
    centered = vectors - vectors.mean(0)
    eigvals, eigvecs = np.linalg.eigh(centered.T @ centered / (n - 1))
    dims = min(STATIC_PCA_DIMS, vectors.shape[1])
    reduced = centered @ eigvecs[:, ::-1][:, :dims]
    inv_rank = 1.0 / np.arange(2, n + 2)
    proba = inv_rank / inv_rank.sum()
    reduced *= (STATIC_SIF / (STATIC_SIF + proba))[:, None]
    static = StaticModel(vectors=reduced.astype(np.float32), tokenizer=tokenizer, normalize=True,
                         config={"model_type": "model2vec", "architectures": ["StaticModel"], "apply_pca": dims,
                                 "sif_coefficient": STATIC_SIF, "hidden_dim": dims, "pooling": "mean",
                                 "distilled_from": str(model_dir), "distilled_by": "mixweave"},
                         base_model_name=model_dir.name)
    static.save_pretrained(str(out))


_BUILDERS = {"onnx": build_onnx, "onnx-int8": build_onnx_int8, "static": distill_static}


def ensure_export(model_dir: Path, backend: str) -> Path:
    """The cached export folder ``backend`` runs, built on first use."""
    require_runtime(backend)
    kind = _ARTIFACT[backend]
    return cached_build(export_key(model_dir, backend), lambda tmp: _BUILDERS[kind](model_dir, tmp))


# --- runtime encoders -----------------------------------------------------------------------------

PREFIX_CHARS_PER_TOKEN = 8
"""Characters of a text tokenized first per token kept (:func:`encode_truncated`)."""
PREFIX_SAFE_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
"""Pre-tokenizers that always split at whitespace and drop it: for them the tokens of a text cut just
before a whitespace character are a prefix of the whole text's tokens (BERT, MPNet, E5, BGE folders).
Metaspace(split=False) and ByteLevel(use_regex=False) can merge across spaces, so they are not listed."""


def whitespace_prefix(text: str, max_chars: int) -> str:
    """``text`` cut just before the last whitespace at or below ``max_chars``, trailing whitespace
    dropped: its words are the whole text's first words. The text itself when it is not longer than
    ``max_chars`` or has no such whitespace."""
    if len(text) <= max_chars:
        return text
    cut = max(text.rfind(" ", 0, max_chars + 1), text.rfind("\n", 0, max_chars + 1))
    head = text[:cut].rstrip() if cut > 0 else ""
    return head if head else text


def encode_truncated(tokenizer, texts: Sequence[str], max_length: int) -> list:
    """``tokenizer``'s encodings of ``texts`` truncated to ``max_length`` tokens (specials included),
    without tokenizing whole long documents.

    Each text is first cut to ``PREFIX_CHARS_PER_TOKEN * max_length`` characters at a whitespace
    (:func:`whitespace_prefix`). With a pre-tokenizer that splits at whitespace, the cut text's tokens
    are a prefix of the whole text's, so when the cut text still fills ``max_length`` its encoding
    *is* the whole text's; a cut text that comes out shorter is encoded again whole. Exact by
    construction (tests compare every tiny-tier document with the whole-text encoding); cost
    O(min(len(text), 8 x max_length)) instead of O(len(text)): tokenizing a 5 kB mean document was
    ~18 % of an openvino-bf16 embedding's CPU time at 128 tokens. Other pre-tokenizers encode whole texts.
    """
    tokenizer.enable_truncation(max_length)
    texts = list(texts)
    if type(tokenizer.pre_tokenizer).__name__ not in PREFIX_SAFE_PRE_TOKENIZERS:
        return tokenizer.encode_batch_fast(texts)
    heads = [whitespace_prefix(t, PREFIX_CHARS_PER_TOKEN * max_length) for t in texts]
    encodings = tokenizer.encode_batch_fast(heads)
    short = [i for i, (e, head, text) in enumerate(zip(encodings, heads, texts))
             if len(e.ids) < max_length and len(head) < len(text)]
    if short:
        for i, e in zip(short, tokenizer.encode_batch_fast([texts[i] for i in short])):
            encodings[i] = e
    return encodings


class PooledEncoder:
    """A transformer behind the folder's own tokenizer and pooling (sentence-transformers' layout:
    Transformer + Pooling (mean or CLS) + Normalize, read by :func:`_st_layout`).

    Same contract for every runtime: ``max_seq_length`` (total tokens, specials included) and
    ``encode_batch(texts, max_length)`` -> L2-normalised float32 rows. A subclass supplies
    :meth:`pooled` (or :meth:`hidden_states`, pooled here in numpy). Texts are cut before they are
    tokenized (:func:`encode_truncated`), so a long document costs its first tokens only."""

    backend = ""
    key: str | None = None
    overlaps_host = False
    """Whether :func:`~mixweave.retrieval.encoders.embed_texts` tokenizes the next batch on a thread
    while this one runs: true for torch on CUDA, where the device otherwise idles while one core
    tokenizes; CPU runtimes already keep every core busy."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        layout = _st_layout(self.model_dir)
        self.pooling, self.normalize = layout["pooling"], layout["normalize"]
        self.max_seq_length = layout["max_seq_length"]
        self.dim = layout["hidden"]
        self.tokenizer = load_tokenizer(self.model_dir)
        self.tokenizer.no_padding()
        self.special_tokens = self.tokenizer.post_processor.num_special_tokens_to_add(False) \
            if self.tokenizer.post_processor is not None else 0
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def get_embedding_dimension(self) -> int:
        return self.dim

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """The transformer's last hidden states [batch, seq, d] for int64 ids / mask / token types."""
        raise NotImplementedError

    def pooled(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """[batch, d] float32: the CLS row, or the mean of the unmasked rows."""
        hidden = self.hidden_states(ids, mask, types)
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask[:, :, None].astype(np.float32)
        return (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    def prepare(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The host's part of a batch: ``texts`` tokenized (:func:`encode_truncated`) and padded into
        int64 ids / attention mask / token types ``[batch, longest]``."""
        encodings = encode_truncated(self.tokenizer, texts, max_length)
        width = max(1, max(len(e.ids) for e in encodings))
        ids = np.full((len(encodings), width), self.pad_id, np.int64)
        mask = np.zeros((len(encodings), width), np.int64)
        types = np.zeros((len(encodings), width), np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
            types[row, :len(e.ids)] = e.type_ids
        return ids, mask, types

    def embed_prepared(self, feed: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """L2-normalised float32 rows for a :meth:`prepare`'d batch."""
        pooled = np.asarray(self.pooled(*feed), np.float32)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def encode_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        return self.embed_prepared(self.prepare(texts, max_length))


class TorchEncoder(PooledEncoder):
    """Backend ``torch``: the folder's transformer in PyTorch with the folder's tokenizer and pooling,
    on CPU or CUDA; pooled on the device. A plain BERT encoder (the default MiniLM, BGE, E5, GTE) runs
    on :mod:`mixweave.retrieval.bert`, which gives ``transformers.AutoModel``'s hidden states bit for
    bit without importing transformers (~3.5 CPU-seconds a process); any other architecture on
    ``AutoModel`` (the attention sentence-transformers would pick). Neither imports
    sentence-transformers (~6 of its ~9 CPU-seconds of import are its own: scikit-learn, its
    backends), so a Spark worker or CLI run starts seconds sooner; vectors equal sentence-transformers'
    to float32 rounding (tests/test_retrieval_encoders.py). Layouts it does not read (e.g. a Dense
    module) load as a ``SentenceTransformer`` instead (:func:`mixweave.retrieval.encoders.load_encoder`)."""

    backend = "torch"

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        import torch

        super().__init__(model_dir)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.device = torch.device(device)
        self.bert = load_bert(self.model_dir, self.device)
        self.model = None
        if self.bert is None:
            import inspect

            from transformers import AutoModel

            self.model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True).to(self.device).eval()
        self.takes_types = self.bert is not None or "token_type_ids" in inspect.signature(self.model.forward).parameters
        self.overlaps_host = self.device.type == "cuda"

    def _last_hidden(self, feed: dict) -> Any:
        if self.bert is not None:
            return bert_hidden_states(self.bert, feed["input_ids"], feed["attention_mask"], feed.get("token_type_ids"))
        return self.model(**feed, return_dict=True).last_hidden_state

    def pooled(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feed = {"input_ids": torch.from_numpy(ids).to(self.device),
                    "attention_mask": torch.from_numpy(mask).to(self.device)}
            if self.takes_types:
                feed["token_type_ids"] = torch.from_numpy(types).to(self.device)
            hidden = self._last_hidden(feed).float()
            if self.pooling == "cls":
                out = hidden[:, 0]
            else:
                m = feed["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out = (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
            return out.cpu().numpy()


class GraphEncoder(PooledEncoder):
    """A transformer graph (ONNX Runtime or OpenVINO) + the folder's tokenizer + numpy pooling."""

    def __init__(self, model_dir: Path, backend: str, *, threads: int | None = None) -> None:
        super().__init__(model_dir)
        self.backend = backend
        self.key = export_key(self.model_dir, backend)
        path = ensure_export(self.model_dir, backend) / "model.onnx"
        threads = int(threads) if threads else 0
        if backend in ("openvino", "openvino-bf16"):
            import openvino as ov

            core = ov.Core()
            bf16 = backend == "openvino-bf16"
            # no CPU pinning: OpenVINO pins its threads to cores counted from the first, so the one-thread
            # encoders of two Spark workers on one machine shared core 0 (each ran at half speed: the
            # demo's embed stage spent 35 ms a document instead of 17); the OS spreads unpinned threads
            config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
                      "EXECUTION_MODE_HINT": "PERFORMANCE" if bf16 else "ACCURACY", "PERFORMANCE_HINT": "LATENCY",
                      "ENABLE_CPU_PINNING": False}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
            self.input_names = [p.get_any_name() for p in compiled.inputs]
            request = compiled.create_infer_request()
            self._run = lambda feed: next(iter(request.infer(feed).values()))
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in session.get_inputs()]
            self._run = lambda feed: session.run(None, feed)[0]

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return np.asarray(self._run({k: feed[k] for k in self.input_names}), np.float32)


class StaticEncoder:
    """A distilled model2vec ``StaticModel``: a document is the mean of its tokens' rows."""

    backend = "static"

    def __init__(self, model_dir: Path) -> None:
        from model2vec import StaticModel

        self.model_dir = Path(model_dir)
        self.key = export_key(self.model_dir, "static")
        self.max_seq_length = _st_layout(self.model_dir)["max_seq_length"]
        self.special_tokens = 2
        self.model = StaticModel.from_pretrained(str(ensure_export(self.model_dir, "static")), normalize=True)
        self.dim = int(self.model.dim)

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        out = self.model.encode(list(texts), max_length=max(1, max_length - self.special_tokens),
                                batch_size=max(1, len(texts)), use_multiprocessing=False)
        out = np.asarray(out, np.float32).reshape(len(texts), self.dim)
        norms = np.linalg.norm(out, axis=1)
        out[norms > 0] /= norms[norms > 0, None]
        out[norms == 0, 0] = 1.0  # no known token (e.g. empty text): one fixed unit vector, like torch's
        return out


_BENCH = "bench/embed.py, tiny tier, 540 docs (60 x 9 sources), 128 tokens, 2026-12-02"
MEASURED_QUALITY: dict[str, dict[str, Any]] = {
    "openvino-bf16": {"recall_at_20_mean": 0.997, "recall_at_20_worst": 0.995, "first_neighbour_cos_ratio": 1.000,
                      "icp_adjacent_cos_ratio": 1.000,
                      "measured": "bench/embed.py, tiny tier, 540 docs (60 x 9 sources), 128 tokens, 2026-12-02 21:42"},
    "onnx-int8": {"recall_at_20_mean": 0.949, "recall_at_20_worst": 0.936, "first_neighbour_cos_ratio": 0.996,
                  "icp_adjacent_cos_ratio": 1.000, "measured": _BENCH},
    "static": {"recall_at_20_mean": 0.581, "recall_at_20_worst": 0.463, "first_neighbour_cos_ratio": 0.749,
               "icp_adjacent_cos_ratio": 0.824, "measured": _BENCH},
}
"""Agreement with torch of the backends that are not fp32 as bench/embed.py measured it (the README
table), copied into the embed manifest so a run states what it traded for speed."""


def prepare_default_export() -> Path | None:
    """Build the export the default encoder runs on this machine's ``auto`` backend (the fp32 ONNX graph
    OpenVINO reads on a CPU; nothing for torch on CUDA) into :func:`cache_root`, so the first run's
    processes do not each build it (~8 CPU-s). ``make install`` runs it
    (``python -m mixweave.retrieval.encoder_backends``); a later empty cache is refilled on first use."""
    from mixweave.retrieval.encoders import resolve_encoder_path

    backend = resolve_backend("auto")
    return None if backend == "torch" else ensure_export(resolve_encoder_path("default").resolve(), backend)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"default encoder export for this machine: {prepare_default_export() or 'none needed (torch)'}")
