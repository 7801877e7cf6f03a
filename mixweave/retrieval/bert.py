"""BERT's encoder forward pass in plain PyTorch, for the sentence encoders of the BERT family
(all-MiniLM, BGE, E5, GTE: ``model_type: bert``) without importing ``transformers``.

Why: ``transformers.AutoModel`` costs ~3.5 CPU-seconds a process before the first batch (its own import,
then ``torch._dynamo`` and ``torch.distributed.tensor`` that its masking and activation modules pull
in), paid by every Spark Python worker and CLI run that embeds on the torch backend; this module
costs the weights' read (~0.05 s for MiniLM). Trade-off: it reads one architecture; any other
config, or a checkpoint without the expected tensors, makes :func:`load_bert` return None and the
caller loads ``AutoModel`` as before.

The algorithm (Devlin et al. 2019; post-LayerNorm): embeddings = word[ids] + position[0..L) +
token_type[types], LayerNorm; then per layer, multi-head self-attention (scaled dot product over the
unmasked keys) -> dense -> + input -> LayerNorm -> dense -> GELU (erf) -> dense -> + input ->
LayerNorm. Cost per batch: O(layers x (B L d^2 + B L^2 d)), the same kernels transformers' BertModel
calls (``F.linear``, ``F.scaled_dot_product_attention``, ``F.layer_norm``, ``F.gelu``), so its vectors
equal AutoModel's to float32 rounding (tests/test_bert.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_ACTIVATIONS = ("gelu",)
"""``hidden_act`` values read (erf GELU, transformers' ``gelu``); others fall back to AutoModel."""


@dataclass(frozen=True)
class BertWeights:
    """A BERT encoder's tensors (on its device) and the shape facts the forward pass needs."""

    tensors: dict[str, Any]
    layers: int
    heads: int
    eps: float


def bert_config_supported(config: dict) -> bool:
    """Whether :func:`bert_hidden_states` computes what ``AutoModel`` would for this config.json."""
    return (config.get("model_type") == "bert" and config.get("hidden_act", "gelu") in SUPPORTED_ACTIVATIONS
            and config.get("position_embedding_type", "absolute") == "absolute"
            and not config.get("is_decoder", False) and not config.get("add_cross_attention", False)
            and config.get("hidden_size", 0) % max(1, config.get("num_attention_heads", 1)) == 0)


def _expected_keys(layers: int) -> list[str]:
    keys = [f"embeddings.{n}" for n in ("word_embeddings.weight", "position_embeddings.weight",
                                         "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")]
    for i in range(layers):
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                     "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            keys += [f"encoder.layer.{i}.{part}.weight", f"encoder.layer.{i}.{part}.bias"]
    return keys


def load_bert(model_dir: str | Path, device: Any = "cpu") -> BertWeights | None:
    """The folder's BERT weights as float32 tensors on ``device``, or None when its config is not a
    plain BERT encoder (:func:`bert_config_supported`) or ``model.safetensors`` lacks a tensor
    (a ``bert.``-prefixed checkpoint, as task heads save it, is read too)."""
    import torch
    from safetensors import safe_open

    folder = Path(model_dir)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    weights_file = folder / "model.safetensors"
    if not isinstance(config, dict) or not bert_config_supported(config) or not weights_file.is_file():
        return None
    layers = int(config["num_hidden_layers"])
    wanted = _expected_keys(layers)
    with safe_open(str(weights_file), framework="pt") as f:
        stored = set(f.keys())
        prefix = "" if wanted[0] in stored else "bert." if "bert." + wanted[0] in stored else None
        if prefix is None or any(prefix + k not in stored for k in wanted):
            return None
        tensors = {k: f.get_tensor(prefix + k).to(device=device, dtype=torch.float32) for k in wanted}
    return BertWeights(tensors=tensors, layers=layers, heads=int(config["num_attention_heads"]),
                       eps=float(config.get("layer_norm_eps", 1e-12)))


def bert_hidden_states(weights: BertWeights, ids: Any, mask: Any, types: Any | None = None) -> Any:
    """Last hidden states [batch, seq, hidden] (float32) for int64 ``ids`` / ``mask`` (1 = token) /
    ``types`` tensors [batch, seq]; a row's padded positions attend nowhere and are attended by no one
    that matters (their outputs are pooled away)."""
    import torch
    import torch.nn.functional as F

    t, eps = weights.tensors, weights.eps
    batch, length = ids.shape
    if types is None:
        types = torch.zeros_like(ids)
    positions = torch.arange(length, device=ids.device)
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.token_type_embeddings.weight"][types] \
        + t["embeddings.position_embeddings.weight"][positions]  # transformers' order of the float sums
    hidden = x.shape[-1]
    x = F.layer_norm(x, (hidden,), t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    keep = mask.bool()[:, None, None, :]  # [B, 1, 1, L]: every query sees the row's real tokens
    heads, head_dim = weights.heads, hidden // weights.heads

    def split(y):
        return y.view(batch, length, heads, head_dim).transpose(1, 2)

    for i in range(weights.layers):
        p = f"encoder.layer.{i}."
        q = split(F.linear(x, t[p + "attention.self.query.weight"], t[p + "attention.self.query.bias"]))
        k = split(F.linear(x, t[p + "attention.self.key.weight"], t[p + "attention.self.key.bias"]))
        v = split(F.linear(x, t[p + "attention.self.value.weight"], t[p + "attention.self.value.bias"]))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(batch, length, hidden)
        attended = F.layer_norm(F.linear(context, t[p + "attention.output.dense.weight"],
                                         t[p + "attention.output.dense.bias"]) + x,
                                (hidden,), t[p + "attention.output.LayerNorm.weight"],
                                t[p + "attention.output.LayerNorm.bias"], eps)
        inner = F.gelu(F.linear(attended, t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"]))
        x = F.layer_norm(F.linear(inner, t[p + "output.dense.weight"], t[p + "output.dense.bias"]) + attended,
                         (hidden,), t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    return x
