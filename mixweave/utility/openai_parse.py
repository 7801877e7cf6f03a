"""Reading OpenAI-style response bodies without trusting them.

Every function here either returns well-typed values or raises :class:`Malformed` with a short
reason (``choices[0] is an int, not an object``); nothing else escapes for any JSON a server may
send (wrong types, missing fields, ``1e400``, ``NaN``, deep nesting, huge numbers). The backend turns
:class:`Malformed` into one failed request, never a failed run.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_TOKENS_REPORTED = 10**9
"""A usage count above this is not believed (it would poison the cost report)."""
MAX_LOGPROB = 1e-3
"""Log-probabilities above this (probability > ~1) are malformed; tiny positive float noise is not."""


class Malformed(ValueError):
    """The response body is not what the OpenAI API returns; the message says what is wrong."""


_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
          int: "an integer", float: "a number"}


def _need(value: Any, typ: type | tuple[type, ...], where: str) -> Any:
    """``value`` when it has one of the types (a boolean is not a number), else Malformed."""
    types = typ if isinstance(typ, tuple) else (typ,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        wanted = " or ".join(_NAMES.get(t, t.__name__) for t in types)
        raise Malformed(f"{where} is {_NAMES.get(type(value), type(value).__name__)}, not {wanted}")
    return value


def decode_payload(raw: bytes) -> dict[str, Any]:
    """The JSON object of a 200 body with a non-empty ``choices`` list whose first item is an object."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Malformed(f"body is not JSON ({type(exc).__name__})") from None
    _need(payload, dict, "the body")
    choices = _need(payload.get("choices"), list, "choices")
    if not choices:
        raise Malformed("choices is empty")
    _need(choices[0], dict, "choices[0]")
    return payload


def first_choice(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["choices"][0]


def usage_tokens(payload: dict[str, Any]) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` from ``usage``; None when the server sent no usage."""
    usage = payload.get("usage")
    if usage is None:
        return None
    _need(usage, dict, "usage")
    return _count(usage.get("prompt_tokens"), "usage.prompt_tokens"), \
        _count(usage.get("completion_tokens"), "usage.completion_tokens")


def _count(value: Any, where: str) -> int:
    if value is None:
        return 0
    _need(value, (int, float), where)
    if not math.isfinite(value) or value < 0 or value != int(value) or value > MAX_TOKENS_REPORTED:
        raise Malformed(f"{where} is {value!r:.40}, not a token count")
    return int(value)


def choice_text(choice: dict[str, Any], endpoint: str) -> str:
    """The generated text: ``choices[0].text`` (completions) or ``.message.content`` (chat); null -> ''."""
    if endpoint == "completions":
        text = choice.get("text")
        where = "choices[0].text"
    else:
        message = _need(choice.get("message"), dict, "choices[0].message")
        text = message.get("content")
        where = "choices[0].message.content"
    return _need(text, (str, type(None)), where) or ""


def has_logprobs(choice: dict[str, Any]) -> bool:
    return bool(choice.get("logprobs"))


def top_logprobs(choice: dict[str, Any], endpoint: str) -> list[tuple[str, dict[str, float]]]:
    """``[(sampled token, {candidate token: logprob})]`` per generated position, both API styles."""
    lp = _need(choice.get("logprobs"), dict, "choices[0].logprobs")
    if endpoint == "completions":
        tokens = _need(lp.get("tokens"), list, "logprobs.tokens")
        tops = _need(lp.get("top_logprobs"), list, "logprobs.top_logprobs")
        return [(_need(tok, str, f"logprobs.tokens[{i}]"), _top_mapping(top, f"logprobs.top_logprobs[{i}]"))
                for i, (tok, top) in enumerate(zip(tokens, tops))]
    content = _need(lp.get("content"), list, "logprobs.content")
    out = []
    for i, pos in enumerate(content):
        where = f"logprobs.content[{i}]"
        _need(pos, dict, where)
        tops = _need(pos.get("top_logprobs") or [], list, f"{where}.top_logprobs")
        pairs = {}
        for j, cand in enumerate(tops):
            _need(cand, dict, f"{where}.top_logprobs[{j}]")
            pairs[_need(cand.get("token"), str, f"{where}.top_logprobs[{j}].token")] = \
                _logprob(cand.get("logprob"), f"{where}.top_logprobs[{j}].logprob")
        out.append((_need(pos.get("token"), str, f"{where}.token"), pairs))
    return out


def _top_mapping(top: Any, where: str) -> dict[str, float]:
    if top is None:
        return {}
    _need(top, dict, where)
    return {tok: _logprob(v, f"{where}[{tok!r:.20}]") for tok, v in top.items()}


def _logprob(value: Any, where: str) -> float:
    _need(value, (int, float), where)
    value = float(value)
    if value > MAX_LOGPROB:  # NaN and -inf pass: they count as probability 0 downstream
        raise Malformed(f"{where} is {value:.3g}, above 0 (a probability above 1)")
    return value
