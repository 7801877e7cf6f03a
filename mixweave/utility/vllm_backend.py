"""``vllm`` backend: in-process ``vllm.LLM`` offline batching (one engine per process / GPU set).

The whole list of prompts goes to one ``llm.generate`` call; vLLM schedules it with continuous
batching and paged attention, which is what makes MEDU on a 70B model affordable
(``tensor_parallel_size`` shards it over GPUs). ``label_probs`` asks for one token with the top
``max_logprobs`` (default 20) log-probabilities and reads the label tokens among them; a label
outside the top-k counts as probability 0 (an instruct model puts nearly all mass on the labels
at the answer slot, so the truncation rarely matters; ``label_mass`` in the ratings shows it).

vllm is imported lazily: it is a CUDA-only extra (``pip install mixweave[gpu]``).
"""

from __future__ import annotations

import logging
import math
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
    params_from_config,
    truncate_with_fast_tokenizer,
)
from mixweave.utility.scoring import LABELS

log = logging.getLogger(__name__)


def import_vllm() -> Any:
    """The vllm module, or ConfigError saying how to get it / what to use instead."""
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError("backend 'vllm' needs the vllm package (CUDA only): pip install 'mixweave[gpu]', "
                          "or use --backend transformers / openai") from exc
    return vllm


class VLLMBackend(Backend):
    """``vllm.LLM`` over a local model folder (see module docstring)."""

    kind = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_model_len: int | None = 8192, gpu_memory_utilization: float = 0.9,
                 max_logprobs: int = 20, use_chat: bool | None = None, seed: int = 0,
                 model_id: str | None = None, engine_kwargs: dict[str, Any] | None = None) -> None:
        vllm = import_vllm()
        path = local_model_dir(model)
        t0 = time.perf_counter()
        self.llm = vllm.LLM(model=str(path), tokenizer=str(path), tensor_parallel_size=int(tensor_parallel_size),
                            dtype=dtype, max_model_len=max_model_len, seed=seed,
                            gpu_memory_utilization=gpu_memory_utilization, max_logprobs=max_logprobs,
                            **(engine_kwargs or {}))
        self._vllm = vllm
        self.tok = self.llm.get_tokenizer()
        self.max_logprobs = int(max_logprobs)
        self.use_chat = bool(getattr(self.tok, "chat_template", None)) if use_chat is None else use_chat
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.n_params = params_from_config(path)
        self.model_id = model_id or model_fingerprint(path)
        self._label_ids: dict[tuple, list[list[int]]] = {}
        log.info("vllm backend: %s (tp=%d) ready in %.1fs", self.model_id, self.tensor_parallel_size,
                 time.perf_counter() - t0)

    def _render(self, prompt: str, answer_prefix: str) -> dict[str, list[int]]:
        """Token ids, not text: vLLM would add a second BOS to an already templated string."""
        if self.use_chat:
            text = self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
            ids = self._encode(text + answer_prefix)
        else:
            ids = list(self.tok(f"{prompt}\n\n{answer_prefix}".rstrip(" "), add_special_tokens=True)["input_ids"])
        return {"prompt_token_ids": ids}

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> tuple[str, int, bool]:
        return truncate_with_fast_tokenizer(self.tok, text, max_tokens)

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float,
                 seed: int) -> list[Generation]:
        params = self._vllm.SamplingParams(temperature=float(temperature), max_tokens=int(max_tokens),
                                           seed=int(seed))
        outputs = self.llm.generate([self._render(p, "") for p in prompts], params, use_tqdm=False)
        results = []
        for o in outputs:
            c = o.outputs[0]
            results.append(Generation(c.text, len(o.prompt_token_ids or []), len(c.token_ids)))
        return results

    def label_probs(self, prompts: Sequence[str], labels: Sequence[str] = LABELS, *,
                    answer_prefix: str) -> list[LabelProbs]:
        key = (tuple(labels), answer_prefix)
        if key not in self._label_ids:
            self._label_ids[key] = label_token_ids(self._encode, labels, answer_prefix)
        label_ids = self._label_ids[key]
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.max_logprobs)
        outputs = self.llm.generate([self._render(p, answer_prefix) for p in prompts], params, use_tqdm=False)
        results = []
        for o in outputs:
            c = o.outputs[0]
            top = c.logprobs[0] if c.logprobs else {}
            probs = tuple(sum(_exp(top[t]) for t in tids if t in top) for tids in label_ids)
            results.append(LabelProbs(probs, len(o.prompt_token_ids or []), len(c.token_ids)))
        return results

    def info(self) -> dict[str, Any]:
        return {**super().info(), "tensor_parallel_size": self.tensor_parallel_size,
                "max_logprobs": self.max_logprobs, "use_chat": self.use_chat}

    def close(self) -> None:
        self.llm = None


def _exp(logprob: Any) -> float:
    """vLLM returns ``Logprob`` objects (``.logprob``); tolerate plain floats too."""
    value = getattr(logprob, "logprob", logprob)
    return math.exp(float(value)) if value is not None and math.isfinite(float(value)) else 0.0
