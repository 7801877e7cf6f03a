"""Evaluation loss per source (held-out windows) and per benchmark (dev text, tokenised).

Benchmarks come from a ``benchmarks.jsonl`` of ``{benchmark, split, id, prompt, answer}`` records,
read by :func:`mixweave.data.benchmarks.load_benchmarks` (bad records skipped, counted and warned).
An example is ``prompt + answer`` tokenised as two pieces (so the answer tokens are known exactly);
its loss is the mean next-token NLL over the answer tokens given the prompt (over the whole text
when the answer is empty). Long examples keep the answer and as much prompt as fits (left
truncation). A benchmark's loss is the mean over its examples; ``sem`` is the standard error of
that mean (what the ablation utility reports as std).

Cost: one forward pass per example batch; examples are sorted by length to limit padding.
"""

from __future__ import annotations

import logging
import math
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
    if info.get("name") == "gpt2" and Path(path) == default_tokenizer_files()[0].parent:
        tok = load_tokenizer("default")
    else:
        tok = load_tokenizer(path)
    if info.get("sha256") and tok.sha256 != info["sha256"]:
        raise InputError(f"tokenizer at {path} has sha256 {tok.sha256[:12]}, the pack was made with "
                         f"{str(info['sha256'])[:12]}; point the pack's tokenizer.path at the original file")
    return tok


def tokenize_examples(records: Iterable[Mapping[str, Any]], tokenizer, max_len: int,
                      max_per_benchmark: int | None = None) -> list[Example]:
    """Tokenise ``prompt`` and ``answer`` separately; keep at most ``max_len + 1`` tokens."""
    records = list(records)
    per: dict[str, int] = {}
    chosen = []
    for rec in records:
        b = rec["benchmark"]
        if max_per_benchmark is not None and per.get(b, 0) >= max_per_benchmark:
            continue
        per[b] = per.get(b, 0) + 1
        chosen.append(rec)
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


@torch.no_grad()
def example_losses(model, examples: list[Example], device: torch.device, batch_size: int = 16,
                   autocast: Any = None) -> np.ndarray:
    """Mean answer-token NLL of each example (same order as ``examples``)."""
    model.eval()
    losses = np.zeros(len(examples))
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
        inp, tgt = inp.to(device), tgt.to(device)
        with autocast() if autocast else _null():
            nll = model.loss(inp, tgt, reduction="none").view(len(idx), width)
        mask = (tgt != -100).float()
        per = (nll.float() * mask).sum(1) / mask.sum(1).clamp_min(1)
        losses[idx] = per.cpu().numpy()
    model.train()
    return losses


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
