"""``transformers`` backend: a local Hugging Face causal LM folder, on CPU or GPU.

Batches are sorted by length and left-padded (explicit position ids, so a padded prompt scores
exactly like an unpadded one). ``generate`` decodes with ``model.generate``; ``label_probs`` is one
forward pass that keeps only the last position's logits. Fine for tests, small models and a
single GPU; vLLM is several times faster for large batches (paged attention, continuous batching).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any

from mixweave.errors import ConfigError
from mixweave.utility.backend import (
    Backend,
    Generation,
    LabelProbs,
    label_token_ids,
    local_model_dir,
    model_fingerprint,
    truncate_with_fast_tokenizer,
)
from mixweave.utility.scoring import LABELS

log = logging.getLogger(__name__)


class TransformersBackend(Backend):
    """A local HF model through ``transformers`` (see module docstring)."""

    kind = "transformers"

    def __init__(self, model: str, *, device: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 use_chat: bool | None = None, max_model_len: int | None = None,
                 model_id: str | None = None, num_threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        path = local_model_dir(model)
        t0 = time.perf_counter()
        if num_threads:
            # process-wide; 1 thread is much faster for small models on a busy CPU (no spin-waits)
            torch.set_num_threads(int(num_threads))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ConfigError(f"dtype {dtype!r} is not a torch dtype; use auto, float32, bfloat16 or float16")
        self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype)
        self.model.to(self.device).eval()
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.pad_id = int(self.tok.pad_token_id if self.tok.pad_token_id is not None else 0)
        self.eos_ids = _eos_ids(self.model, self.tok)
        self.use_chat = bool(getattr(self.tok, "chat_template", None)) if use_chat is None else use_chat
        if self.use_chat and not getattr(self.tok, "chat_template", None):
            raise ConfigError(f"{path} has no chat template; set use_chat to false")
        self.batch_size = batch_size
        self.max_len = max_model_len or getattr(self.model.config, "max_position_embeddings", None)
        self.n_params = int(sum(p.numel() for p in self.model.parameters()))
        self.model_id = model_id or model_fingerprint(path)
        self._keep_arg = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._label_ids: dict[tuple, list[list[int]]] = {}
        log.info("transformers backend: %s (%.3g params) on %s, loaded in %.1fs", self.model_id,
                 self.n_params, self.device, time.perf_counter() - t0)

    # -- prompt rendering -------------------------------------------------------------------
    def _render(self, prompt: str, answer_prefix: str) -> list[int]:
        if self.use_chat:
            text = self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
            return self._encode(text + answer_prefix)
        ids = self.tok(f"{prompt}\n\n{answer_prefix}".rstrip(" "), add_special_tokens=True)["input_ids"]
        return list(ids)

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> tuple[str, int, bool]:
        return truncate_with_fast_tokenizer(self.tok, text, max_tokens)

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _pad_left(self, rows: list[list[int]]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def _too_long(self, n: int, extra: int) -> str | None:
        if self.max_len and n + extra > self.max_len:
            return (f"prompt of {n} tokens (+{extra}) exceeds the model's {self.max_len}; "
                    "lower max_doc_tokens")
        return None

    # -- the two operations -----------------------------------------------------------------
    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float,
                 seed: int) -> list[Generation]:
        import torch

        encoded = [self._render(p, "") for p in prompts]
        out: list[Generation | None] = [None] * len(encoded)
        for b, idx in enumerate(self._batches([len(e) for e in encoded])):
            ok = []
            for i in idx:
                err = self._too_long(len(encoded[i]), max_tokens)
                if err:
                    out[i] = Generation("", len(encoded[i]), 0, err)
                else:
                    ok.append(i)
            if not ok:
                continue
            ids, mask, _ = self._pad_left([encoded[i] for i in ok])
            kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.pad_id,
                                      "eos_token_id": self.eos_ids or None}
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            torch.manual_seed(seed + b)
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            new = gen[:, ids.shape[1]:].tolist()
            for row, i in zip(new, ok):
                n = _length_to_eos(row, set(self.eos_ids))
                text = self.tok.decode(row[:n], skip_special_tokens=True)
                out[i] = Generation(text, len(encoded[i]), n)
        return [g for g in out if g is not None]

    def label_probs(self, prompts: Sequence[str], labels: Sequence[str] = LABELS, *,
                    answer_prefix: str) -> list[LabelProbs]:
        import torch

        key = (tuple(labels), answer_prefix)
        if key not in self._label_ids:
            self._label_ids[key] = label_token_ids(self._encode, labels, answer_prefix)
        label_ids = self._label_ids[key]
        encoded = [self._render(p, answer_prefix) for p in prompts]
        out: list[LabelProbs | None] = [None] * len(encoded)
        for idx in self._batches([len(e) for e in encoded]):
            ok = []
            for i in idx:
                err = self._too_long(len(encoded[i]), 1)
                if err:
                    out[i] = LabelProbs(tuple(0.0 for _ in labels), len(encoded[i]), 0, err)
                else:
                    ok.append(i)
            if not ok:
                continue
            ids, mask, pos = self._pad_left([encoded[i] for i in ok])
            extra = {"logits_to_keep": 1} if self._keep_arg else {}
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **extra).logits
            probs = torch.softmax(logits[:, -1, :].float(), dim=-1).cpu()
            for r, i in enumerate(ok):
                p = tuple(float(probs[r, tids].sum()) for tids in label_ids)
                out[i] = LabelProbs(p, len(encoded[i]), 0)
        return [p for p in out if p is not None]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "device": str(self.device), "use_chat": self.use_chat}

    def close(self) -> None:
        self.model = None


def _eos_ids(model: Any, tok: Any) -> list[int]:
    ids: list[int] = []
    for src in (getattr(model.generation_config, "eos_token_id", None), tok.eos_token_id):
        for v in (src if isinstance(src, (list, tuple)) else [src]):
            if v is not None and int(v) not in ids:
                ids.append(int(v))
    return ids


def _length_to_eos(row: list[int], eos: set[int]) -> int:
    """Generated tokens up to and including the first eos (padding after it is not counted)."""
    for j, t in enumerate(row):
        if t in eos:
            return j + 1
    return len(row)
