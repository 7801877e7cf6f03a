"""``openai`` backend: any OpenAI-compatible server (``vllm serve``, TGI, a hosted API).

Requests go out from a thread pool of ``concurrency`` workers (stdlib ``urllib``; no client
package). Each request has a ``timeout_s``; timeouts, connection errors, 429, 5xx and malformed
bodies are retried up to ``max_retries`` times with exponential backoff and jitter (``Retry-After``
honoured, capped at ``backoff_max_s``); 4xx other than 408/409/429 fail at once. A request that
still fails returns a result with ``error`` set, so one bad request never sinks a batch; counts by
kind are kept in :attr:`OpenAIBackend.stats`.

Endpoints: ``chat`` (``/chat/completions``, the server applies the chat template) or
``completions`` (``/completions``, raw text, for base models). In ``label_probs`` the answer slot
is either prefilled (``completions``; ``chat`` with ``prefill=True`` uses vLLM's
``continue_final_message``) or found in a short generated answer (``prefill=False``: the first
position after the model itself wrote ``Final Score:``), and the labels are read from that
position's ``top_logprobs`` (at most 20 on most servers; unseen labels count as 0).

The API key is read from the environment variable named by ``api_key_env`` and only ever put in
the ``Authorization`` header: never in logs, errors, ``info()`` or manifests.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mixweave.errors import ConfigError
from mixweave.mixers.utility.backend import Backend, Generation, HFTextTokenizer, LabelProbs
from mixweave.mixers.utility.scoring import LABELS, label_for_token

log = logging.getLogger(__name__)

ENDPOINTS = ("chat", "completions")
NO_LOGPROBS = ("the server returned no logprobs (it does not support them, e.g. transformers serve); "
               "use --mode generate with this server")
_RETRY_STATUS = {408, 409, 429}


class RequestFailed(Exception):
    """One HTTP attempt failed; ``kind`` names the failure, ``retryable`` says whether to retry."""

    def __init__(self, kind: str, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retryable, self.retry_after = kind, retryable, retry_after


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
                 model_id: str | None = None, seed: int = 0) -> None:
        if not base_url or not str(base_url).startswith(("http://", "https://")):
            raise ConfigError("backend 'openai' needs base_url, e.g. http://127.0.0.1:8000/v1 (--base-url)")
        if endpoint not in ENDPOINTS:
            raise ConfigError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ConfigError("openai backend: concurrency >= 1, max_retries >= 0 and timeout_s > 0 are required")
        self.model = model
        self.base_url = str(base_url).rstrip("/")
        self.endpoint = endpoint
        self.api_key_env = api_key_env
        self.__key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.concurrency, self.timeout_s, self.max_retries = int(concurrency), float(timeout_s), int(max_retries)
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.top_logprobs, self.prefill = int(top_logprobs), bool(prefill)
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

    # -- local tokenizer: truncation, and token counts when a server reports no usage --------
    def _tokenizer(self) -> HFTextTokenizer:
        with self._lock:
            if self._tok is None:
                self._tok = HFTextTokenizer.load(self._tokenizer_spec)
            return self._tok

    def truncate(self, text: str, max_tokens: int) -> tuple[str, int, bool]:
        return self._tokenizer().truncate(text, max_tokens)

    def _usage_or_count(self, payload: dict[str, Any], prompt: str, answer: str) -> tuple[int, int]:
        t_in, t_out = _usage(payload)
        if t_in == 0 and t_out == 0:  # no usage block: approximate with the local tokenizer
            self._count("usage_estimated")
            t_in, t_out = self._tokenizer().count([prompt, answer])
        return t_in, t_out

    # -- HTTP -----------------------------------------------------------------------------
    def _post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - user-given URL
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            detail = _short(exc.read() if hasattr(exc, "read") else b"")
            exc.close()
            retryable = status in _RETRY_STATUS or status >= 500
            kind = f"http_{status}" if status in (429, 500, 502, 503, 504) else f"http_{status // 100}xx"
            raise RequestFailed(kind, f"HTTP {status}: {detail}", retryable=retryable,
                                retry_after=retry_after) from None
        except (TimeoutError, socket.timeout):
            raise RequestFailed("timeout", f"no answer within {self.timeout_s:g}s", retryable=True) from None
        except urllib.error.URLError as exc:
            is_timeout = isinstance(exc.reason, (TimeoutError, socket.timeout))
            kind = "timeout" if is_timeout else "connection"
            raise RequestFailed(kind, f"{kind}: {exc.reason}", retryable=True) from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise RequestFailed("connection", f"connection: {exc}", retryable=True) from None
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list) or not payload["choices"]:
                raise ValueError("no choices")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestFailed("malformed", f"malformed response body ({exc}): {_short(raw)}",
                                retryable=True) from None
        return payload

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """POST with bounded retries; ``(payload, None)`` or ``(None, error message)``."""
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            self._count("attempts")
            try:
                payload = self._post_once(path, body)
                self._count("ok")
                return payload, None
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
        message = f"{path} failed after {attempt + 1} attempt(s): {last}"
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
        def one(prompt: str) -> Generation:
            path, body = self._body(prompt, max_tokens, temperature, seed)
            payload, err = self._post(path, body)
            if payload is None:
                return Generation("", 0, 0, err)
            try:
                choice = payload["choices"][0]
                text = choice["text"] if self.endpoint == "completions" else choice["message"]["content"]
                text = text or ""
            except (KeyError, IndexError, TypeError) as exc:
                self._count("fail_malformed")
                return Generation("", 0, 0, f"malformed choice: {exc!r}")
            t_in, t_out = self._usage_or_count(payload, prompt, text)
            return Generation(text, t_in, t_out)

        return self._map(one, list(prompts))

    def label_probs(self, prompts: Sequence[str], labels: Sequence[str] = LABELS, *,
                    answer_prefix: str) -> list[LabelProbs]:
        prefilled = self.endpoint == "completions" or self.prefill

        def one(prompt: str) -> LabelProbs:
            prefix = answer_prefix if prefilled else None
            max_tokens = 1 if prefilled else 16
            path, body = self._body(prompt, max_tokens, 0.0, 0, prefix)
            if self.endpoint == "completions":
                body["logprobs"] = self.top_logprobs
            else:
                body.update(logprobs=True, top_logprobs=self.top_logprobs)
            payload, err = self._post(path, body)
            zeros = tuple(0.0 for _ in labels)
            if payload is None:
                return LabelProbs(zeros, 0, 0, err)
            t_in, t_out = self._usage_or_count(payload, prompt, "")
            if not payload["choices"][0].get("logprobs"):
                self._count("no_logprobs")
                return LabelProbs(zeros, t_in, t_out, NO_LOGPROBS)
            try:
                positions = _top_logprobs(payload["choices"][0], self.endpoint)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                self._count("fail_malformed")
                return LabelProbs(zeros, t_in, t_out, f"malformed logprobs: {exc!r}")
            slot = 0 if prefilled else answer_slot([tok for tok, _ in positions], answer_prefix)
            if slot is None or slot >= len(positions):
                return LabelProbs(zeros, t_in, t_out)  # the model never reached the slot: unparseable
            return LabelProbs(probs_from_top(positions[slot][1], labels), t_in, t_out)

        return self._map(one, list(prompts))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "base_url": self.base_url, "endpoint": self.endpoint,
                "served_model": self.model, "api_key_env": self.api_key_env,
                "concurrency": self.concurrency, "timeout_s": self.timeout_s, "max_retries": self.max_retries,
                "requests": dict(self.stats)}


def _usage(payload: dict[str, Any]) -> tuple[int, int]:
    usage = payload.get("usage") or {}
    try:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        return 0, 0


def _top_logprobs(choice: dict[str, Any], endpoint: str) -> list[tuple[str, dict[str, float]]]:
    """``[(sampled token, {candidate token: logprob})]`` per generated position, both API styles."""
    lp = choice["logprobs"]
    if endpoint == "completions":
        return [(tok, dict(top or {})) for tok, top in zip(lp["tokens"], lp["top_logprobs"])]
    return [(c["token"], {t["token"]: float(t["logprob"]) for t in c.get("top_logprobs") or []})
            for c in lp["content"]]


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


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _short(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")
