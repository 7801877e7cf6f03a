"""Benchmark scoring: the LM head on the answer tokens only (``GPT.scored_nll``, what
``trainer.evaluate.example_nll`` runs) against full logits on every position (what it ran before),
side by side in one run, on the fixture corpus's benchmark records (gold answers + every
multiple-choice option, as the study's ``answer_metrics`` scores them).

    .venv/bin/python bench/benchmark_eval.py [--depths 1,4] [--seq-len 256] [--repeats 3]

Both paths are timed on the same model, examples and batches; their summed NLLs must agree
(max relative difference printed). CPU, fp32, torch's default threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mixweave.data.tokenizer import load_tokenizer
from mixweave.trainer.evaluate import Example, example_nll, padded_batches, parse_options, score_texts
from mixweave.trainer.model import GPT, GPTConfig

RECORDS = Path(__file__).resolve().parent.parent / "tests" / "data" / "corpus" / "benchmarks.jsonl"


@torch.no_grad()
def full_logits_nll(model, examples, batch_size: int = 16) -> np.ndarray:
    """The previous path: logits and cross-entropy on every position of the same padded batches, masked after."""
    sums = np.zeros(len(examples))
    for idx, inp, tgt in padded_batches(examples, batch_size):
        nll = model.loss(inp, tgt, reduction="none").view(tgt.shape)
        sums[idx] = (nll.float() * (tgt != -100).float()).sum(1).double().numpy()
    return sums


def examples_for(tokenizer, seq_len: int) -> list[Example]:
    records = [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]
    pairs = [(r["prompt"], r["answer"]) for r in records]
    for r in records:
        parsed = parse_options(r["prompt"], r["answer"])
        pairs += [(r["prompt"], opt) for opt in parsed[0]] if parsed else []
    return [Example("", "", s.ids, s.n_prompt) for s in score_texts(pairs, tokenizer, seq_len) if s is not None]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,4")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = load_tokenizer("default")
    examples = examples_for(tokenizer, args.seq_len)
    answer = sum(len(e.ids) - e.n_prompt for e in examples)
    total = sum(len(e.ids) - 1 for e in examples)
    print(f"{len(examples)} scored texts (gold answers + options), {answer} answer tokens of {total} positions "
          f"({answer / total:.0%}); GPT-2 vocabulary, seq_len {args.seq_len}, best of {args.repeats}")
    print(f"{'depth':>5} {'full logits s':>14} {'answer only s':>14} {'speed-up':>9} {'max rel diff':>13}")
    for depth in (int(d) for d in args.depths.split(",")):
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_depth(depth, vocab_size=tokenizer.vocab_size, seq_len=args.seq_len)).eval()
        old = full_logits_nll(model, examples)
        new, _ = example_nll(model, examples, torch.device("cpu"))
        diff = float(np.max(np.abs(new - old) / np.maximum(np.abs(old), 1e-9)))
        t_old = best_of(lambda: full_logits_nll(model, examples), args.repeats)
        t_new = best_of(lambda: example_nll(model, examples, torch.device("cpu")), args.repeats)
        print(f"{depth:>5} {t_old:>14.3f} {t_new:>14.3f} {t_old / t_new:>8.1f}x {diff:>13.1e}")


if __name__ == "__main__":
    main()
