"""The study's benchmark metrics on a tiny random GPT: bits per byte of the gold answer against a
hand computation from per-token NLLs, and multiple-choice accuracy picks the max-likelihood option."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixweave.data.tokenizer import load_tokenizer
from mixweave.trainer.evaluate import (Example, answer_metrics, example_losses, example_nll, parse_options,
                                       score_texts)
from mixweave.trainer.model import GPT, GPTConfig

S = 64


@pytest.fixture(scope="module")
def setup():
    tok = load_tokenizer("default")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, vocab_size=tok.vocab_size, seq_len=S))
    return tok, model


def _ll(model, prompt_ids, answer_ids) -> float:
    """Brute force: log-likelihood of the answer tokens from one forward pass, no batching or padding."""
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[:, :-1]).float(), -1)[0]
    n = len(prompt_ids)
    return float(sum(logp[n - 1 + t, a] for t, a in enumerate(answer_ids)))


def test_bits_per_byte_by_hand(setup):
    tok, model = setup
    records = [{"benchmark": "gsm8k", "prompt": "Q: two plus two?\n", "answer": "It is 4. #### 4"},
               {"benchmark": "gsm8k", "prompt": "Q: what is ten minus one?", "answer": "nine ünïcode"},
               {"benchmark": "code", "prompt": "def f(x):\n", "answer": "    return x + 1\n"}]
    got = answer_metrics(model, records, tok, S, torch.device("cpu"), batch_size=2)
    expected = {}
    for r in records:
        answer = r["answer"] if r["prompt"][-1].isspace() else "\n" + r["answer"]  # joined by a newline
        p, a = tok.encode(r["prompt"]), tok.encode(answer)
        # example_losses gives the mean answer-token NLL; times the tokens = the summed NLL in nats
        mean = example_losses(model, [Example(r["benchmark"], "", np.array(p + a), len(p))], torch.device("cpu"))[0]
        nats = mean * len(a)
        assert nats == pytest.approx(-_ll(model, p, a), rel=1e-4)
        expected.setdefault(r["benchmark"], []).append(nats / (math.log(2) * len(answer.encode("utf-8"))))
    for b, vals in expected.items():
        assert got[b]["bpb"] == pytest.approx(np.mean(vals), rel=1e-4)
        assert got[b]["n"] == len(vals) and got[b]["n_too_long"] == 0
        assert "acc" not in got[b]


def test_batched_answer_only_scoring_equals_one_forward_pass_per_example(setup):
    """example_nll runs the LM head on the answer positions only (GPT.scored_nll), over padded batches
    sorted by length: its sums and counts equal the brute force's full-logits pass on each example alone."""
    _, model = setup
    rng = np.random.default_rng(3)
    examples = []
    for _ in range(11):
        n = int(rng.integers(2, S + 2))
        examples.append(Example("b", "", rng.integers(0, 50257, n), int(rng.integers(1, n))))
    sums, counts = example_nll(model, examples, torch.device("cpu"), batch_size=4)
    for e, got, n in zip(examples, sums, counts):
        ids = e.ids.tolist()
        assert n == len(ids) - e.n_prompt
        assert got == pytest.approx(-_ll(model, ids[:e.n_prompt], ids[e.n_prompt:]), rel=1e-5)
    ids = torch.as_tensor(np.stack([e.ids[:20] for e in examples if len(e.ids) >= 20]))
    targets = ids[:, 1:].clone()
    targets[:, :7] = -100
    with torch.no_grad():
        full = model.loss(ids[:, :-1], targets, reduction="none").view(targets.shape)[:, 7:].reshape(-1)
        assert torch.allclose(model.scored_nll(ids[:, :-1], targets), full, rtol=1e-5, atol=1e-6)


def test_too_long_answer_is_counted_not_truncated(setup):
    tok, model = setup
    long = " ".join(["word"] * (2 * S))
    scored = score_texts([("prompt\n", long), ("x" * 1000 + "\n", "ok")], tok, S)
    assert scored[0] is None and scored[1] is not None
    assert len(scored[1].ids) <= S + 1 and scored[1].n_bytes == 2  # prompt cut from the left, answer whole
    got = answer_metrics(model, [{"benchmark": "b", "prompt": "p\n", "answer": long}], tok, S, torch.device("cpu"))
    assert got["b"]["n"] == 0 and got["b"]["n_too_long"] == 1 and math.isnan(got["b"]["bpb"])


def test_option_accuracy_picks_the_max_likelihood_option(setup):
    tok, model = setup
    prompt = "Which one?\nA. red apple\nB. the blue sky above\nC. 42\nD. zzz qqq"
    options, gold = parse_options(prompt, "B. the blue sky above")
    assert options == ["A. red apple", "B. the blue sky above", "C. 42", "D. zzz qqq"] and gold == 1
    p = tok.encode(prompt)
    ll = [_ll(model, p, tok.encode("\n" + o)) for o in options]
    best = int(np.argmax(ll))
    records = [{"benchmark": "mmlu", "prompt": prompt, "answer": options[best]},  # gold = the model's choice
               {"benchmark": "mmlu", "prompt": prompt, "answer": options[(best + 1) % 4]},  # another one
               {"benchmark": "arc_easy", "prompt": prompt, "answer": options[(best + 2) % 4]}]
    got = answer_metrics(model, records, tok, S, torch.device("cpu"), batch_size=3)
    assert got["mmlu"]["acc"] == pytest.approx(0.5) and got["mmlu"]["n_choice"] == 2
    assert got["arc_easy"]["acc"] == 0.0
    # gold bpb of the first record = its option's NLL over the option's bytes
    assert got["arc_easy"]["n"] == 1


def test_parse_options_rejects_non_choice_records():
    assert parse_options("no options here", "B. x") is None
    assert parse_options("Q\nA. one\nB. two", "E. five") is None
    assert parse_options("Q\nA. one\nB. two", "the answer") is None
