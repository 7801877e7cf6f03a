"""Evaluation loss per source (held-out windows) and per benchmark (dev text, tokenised).

Benchmarks come from a ``benchmarks.jsonl`` of ``{benchmark, split, id, prompt, answer}`` records,
read by :func:`mixweave.data.benchmarks.load_benchmarks` (bad records skipped, counted and warned).
An example is ``prompt + answer`` tokenised as two pieces (so the answer tokens are known exactly);
its loss is the mean next-token NLL over the answer tokens given the prompt (over the whole text
when the answer is empty). Long examples keep the answer and as much prompt as fits (left
truncation). A benchmark's loss is the mean over its examples; ``sem`` is the standard error of
that mean (what the ablation utility reports as std).

Cost: one forward pass per example batch (examples sorted by length to limit padding); the LM head
and its softmax run on the answer tokens only (``GPT.scored_nll``), not on the prompt's.

:func:`answer_metrics` (the study's benchmark metrics) scores the same records two more ways:

* **bits per byte of the gold answer given the prompt**: the answer tokens' summed NLL in nats /
  (ln 2 x the answer's UTF-8 bytes). Dividing by bytes instead of tokens makes it independent of the
  tokenizer. The answer is kept whole (a newline joins it to a prompt that does not end in
  whitespace; the prompt is left-truncated to fit); an answer longer than the window is not scored
  and is counted in ``n_too_long``.
* **accuracy of multiple-choice benchmarks** (prompts with option lines ``A. ...``, gold answer
  ``B. text``: mmlu, arc_*): each option's full answer string ``"X. text"`` is scored like the gold
  answer and the option with the highest *total* log-likelihood is the model's choice (total rather
  than per-token or per-byte: the lm-eval-harness ``acc`` convention; it favours short options, the
  same for every candidate compared). Cost: one more forward pass per option.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from mixweave.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    benchmark: str
    id: str
    ids: np.ndarray  # int64 tokens (prompt + answer)
    n_prompt: int  # tokens before the first scored target


def tokenizer_from_info(info: Mapping[str, Any]):
    """The pack's tokenizer, loaded from local files (the default GPT-2 files when name is gpt2)."""
    from mixweave.data.tokenizer import default_tokenizer_files, load_tokenizer

    path = str(info.get("path", "default"))
    sink = info.get("sink_token")  # the pack's attention-sink token (order.sink_token), if any
    if str(info.get("name")).removesuffix("+sink") == "gpt2" and Path(path) == default_tokenizer_files()[0].parent:
        tok = load_tokenizer("default", None, sink)
    else:
        tok = load_tokenizer(path, None, sink)
    if info.get("sha256") and tok.sha256 != info["sha256"]:
        raise InputError(f"tokenizer at {path} has sha256 {tok.sha256[:12]}, the pack was made with "
                         f"{str(info['sha256'])[:12]}; point the pack's tokenizer.path at the original file")
    return tok


def first_per_benchmark(records: Iterable[Mapping[str, Any]], max_per_benchmark: int | None) -> list[Mapping[str, Any]]:
    """The records in order, at most ``max_per_benchmark`` of each benchmark (all when None)."""
    per: dict[str, int] = {}
    chosen = []
    for rec in records:
        b = rec["benchmark"]
        if max_per_benchmark is not None and per.get(b, 0) >= max_per_benchmark:
            continue
        per[b] = per.get(b, 0) + 1
        chosen.append(rec)
    return chosen


def tokenize_examples(records: Iterable[Mapping[str, Any]], tokenizer, max_len: int,
                      max_per_benchmark: int | None = None) -> list[Example]:
    """Tokenise ``prompt`` and ``answer`` separately; keep at most ``max_len + 1`` tokens."""
    chosen = first_per_benchmark(records, max_per_benchmark)
    prompts = tokenizer.encode_batch([r["prompt"] for r in chosen])
    answers = tokenizer.encode_batch([r["answer"] for r in chosen])
    out = []
    limit = max_len + 1
    for rec, p, a in zip(chosen, prompts, answers):
        if not a:
            ids, n_prompt = p[:limit], 1
        else:
            a = a[: limit - 1]
            p = p[-(limit - len(a)):]
            ids, n_prompt = p + a, max(1, len(p))
        if len(ids) < 2:
            continue
        out.append(Example(rec["benchmark"], str(rec.get("id", "")), np.asarray(ids, np.int64), n_prompt))
    return out


def padded_batches(examples: list[Example], batch_size: int):
    """``(idx, inputs, targets)`` per batch of ``examples`` sorted by length: ``idx`` the examples' indices,
    ``inputs`` ``[b, width]`` token ids (zero padded), ``targets`` the next tokens at the answer positions
    and -100 elsewhere (prompt and padding)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        width = max(len(examples[i].ids) for i in idx) - 1
        inp = torch.zeros((len(idx), width), dtype=torch.long)
        tgt = torch.full((len(idx), width), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            ids = torch.from_numpy(examples[i].ids)
            n = len(ids) - 1
            inp[row, :n] = ids[:-1]
            tgt[row, examples[i].n_prompt - 1:n] = ids[examples[i].n_prompt:]
        yield idx, inp, tgt


@torch.no_grad()
def example_nll(model, examples: list[Example], device: torch.device, batch_size: int = 16,
                autocast: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(summed answer-token NLL in nats, number of answer tokens) of each example."""
    model.eval()
    sums = np.zeros(len(examples))
    counts = np.zeros(len(examples), dtype=np.int64)
    for idx, inp, tgt in padded_batches(examples, batch_size):
        inp, tgt = inp.to(device), tgt.to(device)
        with autocast() if autocast else _null():
            nll = model.scored_nll(inp, tgt)  # the LM head on the answer positions only
        rows = (tgt != -100).nonzero()[:, 0]
        sums[idx] = torch.zeros(len(idx), dtype=torch.float64, device=nll.device).index_add_(
            0, rows, nll.double()).cpu().numpy()
        counts[idx] = torch.bincount(rows, minlength=len(idx)).cpu().numpy()
    model.train()
    return sums, counts


def example_losses(model, examples: list[Example], device: torch.device, batch_size: int = 16,
                   autocast: Any = None) -> np.ndarray:
    """Mean answer-token NLL of each example (same order as ``examples``)."""
    sums, counts = example_nll(model, examples, device, batch_size, autocast)
    return sums / np.maximum(counts, 1)


def benchmark_losses(model, examples: list[Example], device: torch.device, batch_size: int = 16,
                     autocast: Any = None) -> dict[str, dict[str, float]]:
    """{benchmark: {loss, sem, n}}."""
    per = example_losses(model, examples, device, batch_size, autocast)
    out: dict[str, dict[str, float]] = {}
    for b in sorted({e.benchmark for e in examples}):
        x = per[[i for i, e in enumerate(examples) if e.benchmark == b]]
        sem = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
        out[b] = {"loss": float(x.mean()), "sem": sem, "n": int(len(x))}
    return out


_OPTION = re.compile(r"^([A-Z])\. (.+)$")


def parse_options(prompt: str, answer: str) -> tuple[list[str], int] | None:
    """(option answer strings ``"X. text"``, index of the gold one) of a multiple-choice record, or
    None when the prompt has fewer than two option lines or the answer names none of them."""
    options = []
    for line in prompt.splitlines():
        m = _OPTION.match(line.strip())
        if m:
            options.append(f"{m.group(1)}. {m.group(2).strip()}")
    gold = _OPTION.match(answer.strip())
    if len(options) < 2 or gold is None:
        return None
    letters = [o.split(".", 1)[0] for o in options]
    if len(set(letters)) != len(letters) or gold.group(1) not in letters:
        return None
    return options, letters.index(gold.group(1))


@dataclass(frozen=True)
class ScoredText:
    """A prompt and one answer string, tokenised so that the whole answer is scored."""

    ids: np.ndarray  # int64 prompt + answer tokens
    n_prompt: int
    n_bytes: int  # UTF-8 bytes of the scored answer (with its joining newline, when one was added)


def _join(prompt: str, answer: str) -> str:
    return answer if not prompt or prompt[-1].isspace() else "\n" + answer


def score_texts(pairs: list[tuple[str, str]], tokenizer, max_len: int) -> list[ScoredText | None]:
    """Tokenise (prompt, answer) pairs with the answer whole and the prompt left-truncated to
    ``max_len + 1`` tokens in all; None where the answer alone does not fit (or is empty)."""
    answers = [_join(p, a) for p, a in pairs]
    prompt_ids = tokenizer.encode_batch([p for p, _ in pairs])
    answer_ids = tokenizer.encode_batch(answers)
    limit = max_len + 1
    out: list[ScoredText | None] = []
    for (p_text, _), ans, p, a in zip(pairs, answers, prompt_ids, answer_ids):
        if not a or len(a) > limit - 1:
            out.append(None)
            continue
        p = p[-(limit - len(a)):] if p else []
        if not p:  # no prompt: the first answer token has no context and is not scored
            ids, n_prompt = a, 1
            n_bytes = len(tokenizer_text(tokenizer, a[1:], ans).encode("utf-8")) if len(a) > 1 else 0
        else:
            ids, n_prompt, n_bytes = p + a, len(p), len(ans.encode("utf-8"))
        out.append(ScoredText(np.asarray(ids, np.int64), n_prompt, n_bytes) if len(ids) >= 2 and n_bytes else None)
    return out


def tokenizer_text(tokenizer, ids: list[int], fallback: str) -> str:
    """Decoded text of ``ids`` when the tokenizer can decode, else ``fallback``."""
    backend = getattr(tokenizer, "_backend", None)
    try:
        return backend.decode(list(ids))
    except Exception:  # noqa: BLE001 - decoding is optional
        return fallback


def answer_metrics(model, records: Iterable[Mapping[str, Any]], tokenizer, max_len: int, device: torch.device,
                   batch_size: int = 16, autocast: Any = None,
                   max_per_benchmark: int | None = None) -> dict[str, dict[str, float]]:
    """{benchmark: {bpb, bpb_sem, n, n_too_long, acc?, n_choice?}} (module docstring: bits per byte of
    the gold answer given the prompt; accuracy by the options' total log-likelihood)."""
    chosen = first_per_benchmark(records, max_per_benchmark)
    gold = score_texts([(r["prompt"], r["answer"]) for r in chosen], tokenizer, max_len)
    choice_pairs, choice_owner = [], []
    for i, rec in enumerate(chosen):
        parsed = parse_options(rec["prompt"], rec["answer"])
        if parsed is not None:
            options, g = parsed
            for j, opt in enumerate(options):
                choice_pairs.append((rec["prompt"], opt))
                choice_owner.append((i, j, g))
    choices = score_texts(choice_pairs, tokenizer, max_len) if choice_pairs else []
    scored = [s for s in gold if s is not None] + [s for s in choices if s is not None]
    examples = [Example("", "", s.ids, s.n_prompt) for s in scored]
    sums, _ = example_nll(model, examples, device, batch_size, autocast) if examples else (np.zeros(0), None)
    nll_gold, k = {}, 0
    for i, s in enumerate(gold):
        if s is not None:
            nll_gold[i] = (float(sums[k]), s.n_bytes)
            k += 1
    option_ll: dict[int, dict[int, float]] = {}
    option_gold: dict[int, int] = {}
    option_bad: set[int] = set()
    for (i, j, g), s in zip(choice_owner, choices):
        option_gold[i] = g
        if s is None:
            option_bad.add(i)
            continue
        option_ll.setdefault(i, {})[j] = -float(sums[k])
        k += 1
    out: dict[str, dict[str, float]] = {}
    for b in sorted({r["benchmark"] for r in chosen}):
        idx = [i for i, r in enumerate(chosen) if r["benchmark"] == b]
        bpb = np.array([nll_gold[i][0] / (math.log(2) * nll_gold[i][1]) for i in idx if i in nll_gold])
        entry: dict[str, float] = {
            "bpb": float(bpb.mean()) if bpb.size else math.nan,
            "bpb_sem": float(bpb.std(ddof=1) / math.sqrt(bpb.size)) if bpb.size > 1 else 0.0,
            "n": int(bpb.size), "n_too_long": int(len(idx) - bpb.size)}
        mc = [i for i in idx if i in option_gold and i not in option_bad]
        if mc:
            right = [max(option_ll[i], key=lambda j: (option_ll[i][j], -j)) == option_gold[i] for i in mc]
            entry["acc"] = float(np.mean(right))
            entry["n_choice"] = len(mc)
        out[b] = entry
    return out


@torch.no_grad()
def window_loss(model, windows: np.ndarray, device: torch.device, batch_size: int = 16, autocast: Any = None) -> float:
    """Mean next-token loss over ``windows`` ([n, width]; inputs ``[:-1]``, labels ``[1:]``)."""
    model.eval()
    total, count = 0.0, 0
    for lo in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[lo:lo + batch_size].astype(np.int64)).to(device)
        with autocast() if autocast else _null():
            loss = model.loss(batch[:, :-1], batch[:, 1:], reduction="sum")
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train()
    return total / max(count, 1)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
