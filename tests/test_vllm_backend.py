"""The ``vllm`` backend on the real engine (vllm-cpu 0.32.0 here, vLLM on a GPU box), in process.

One engine over a random-weight tiny Llama with a chat template (vLLM's CPU attention takes head
size 32), started with ``max_logprobs`` = the vocabulary so every label probability is returned and
can be checked against transformers exactly; then the top-20 case (only what the engine returns is
summed), greedy generation token for token, the over-long-prompt fault, and MEDU tables in both
modes. Run by ``make test-vllm`` in the separate ``.venv-vllm``; skipped where vllm is absent.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
vllm = pytest.importorskip("vllm", reason="vllm is not installed here: make test-vllm builds .venv-vllm "
                                          "(vllm-cpu 0.32.0) and runs these tests in it")
torch = pytest.importorskip("torch")

from mixweave.errors import ConfigError  # noqa: E402
from mixweave.utility import LABELS, estimate_utility  # noqa: E402
from mixweave.utility.prompts import ANSWER_PREFIX  # noqa: E402

pytestmark = pytest.mark.timeout(900)

TEXTS = ["def add(a, b):\n    return a + b\n", "def mean(xs):\n    return sum(xs) / len(xs)\n",
         "Paris is the capital and most populous city of France.",
         "The Nile is a major north-flowing river in northeastern Africa."]
MAX_LEN = 512  # the tiny model's own limit (max_position_embeddings), small so one prompt can overflow it


def docs_rows():
    return [{"doc_id": f"d{i}", "source": "code" if i < 2 else "wiki", "text": t} for i, t in enumerate(TEXTS)]


BENCHES = [{"benchmark": "humaneval", "split": "dev", "id": "h0", "prompt": "def f(x):", "answer": "return x"},
           {"benchmark": "trivia", "split": "dev", "id": "t0", "prompt": "Capital of Peru?", "answer": "Lima"}]
DESCRIPTIONS = {"humaneval": "Python functions", "trivia": "world facts"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mixweave.utility.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("llama"), arch="llama", texts=TEXTS, chat=True,
                           max_position_embeddings=MAX_LEN, seed=3)


@pytest.fixture(scope="module")
def reference(model_dir):
    from mixweave.utility.transformers_backend import TransformersBackend

    torch.set_num_threads(1)
    return TransformersBackend(str(model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def engine(model_dir, reference):
    from mixweave.utility.vllm_backend import VLLMBackend

    vocab = len(reference.tok)
    be = VLLMBackend(str(model_dir), dtype="float32", enforce_eager=True, max_logprobs=vocab,
                     gpu_memory_utilization=0.3)  # on a GPU box the server test needs room beside it
    yield be
    be.close()


def test_engine_settings(engine, reference):
    assert engine.max_len == MAX_LEN  # default: the model's own limit
    assert engine.use_chat and engine.info()["enforce_eager"] is True
    assert engine.n_params == pytest.approx(reference.n_params, rel=0.01)  # config.json estimate (no norms)


def test_bad_max_model_len_is_one_clear_error(model_dir):
    from mixweave.utility.vllm_backend import VLLMBackend

    with pytest.raises(ConfigError, match=f"exceeds the model's limit of {MAX_LEN}") as err:
        VLLMBackend(str(model_dir), max_model_len=8192)
    assert "\n" not in str(err.value)


def test_label_probs_match_transformers_with_the_full_distribution(engine, reference):
    prompts = [f"Rate this document:\n{t}" for t in TEXTS]
    got = engine.label_probs(prompts, LABELS, answer_prefix=ANSWER_PREFIX)
    want = reference.label_probs(prompts, LABELS, answer_prefix=ANSWER_PREFIX)
    for g, w in zip(got, want):
        assert g.error is None and g.tokens_in == w.tokens_in
        assert g.probs == pytest.approx(w.probs, abs=1e-5)
        assert sum(g.probs) > 0


def test_label_probs_with_top_k_sum_only_what_the_engine_returns(engine, reference):
    """With top-20 logprobs, a label token outside the top 20 counts 0: compare with transformers'
    probabilities restricted to its own top 20 (what the backend can know)."""
    from mixweave.utility.backend import label_token_ids

    prompts = [f"Rate this document:\n{t}" for t in TEXTS]
    label_ids = label_token_ids(engine._encode, LABELS, ANSWER_PREFIX)
    engine.max_logprobs = 20  # per request; the engine allows up to the vocabulary
    try:
        got = engine.label_probs(prompts, LABELS, answer_prefix=ANSWER_PREFIX)
    finally:
        engine.max_logprobs = len(reference.tok)
    for prompt, g in zip(prompts, got):
        ids = reference._render(prompt, ANSWER_PREFIX)
        with torch.no_grad():
            p = torch.softmax(reference.model(torch.tensor([ids])).logits[0, -1].double(), -1)
        top = set(p.topk(20).indices.tolist())
        want = [sum(float(p[t]) for t in tids if t in top) for tids in label_ids]
        assert g.probs == pytest.approx(want, abs=1e-5)


def test_greedy_generation_matches_transformers(engine, reference):
    prompts = [f"Describe:\n{t}" for t in TEXTS]
    got = engine.generate(prompts, max_tokens=12, temperature=0.0, seed=0)
    want = reference.generate(prompts, max_tokens=12, temperature=0.0, seed=0)
    assert [g.error for g in got] == [None] * len(prompts)
    # a random model can stop mid-character: vLLM's detokenizer holds back the incomplete UTF-8
    # bytes at the end, transformers writes them as U+FFFD; the tokens themselves are the same
    assert [g.text.rstrip("\ufffd") for g in got] == [w.text.rstrip("\ufffd") for w in want]
    assert [g.tokens_out for g in got] == [w.tokens_out for w in want] == [12] * len(prompts)
    assert [g.tokens_in for g in got] == [w.tokens_in for w in want]


def test_over_long_prompt_fails_that_request_only(engine):
    long = "word " * (MAX_LEN * 2)
    prompts = ["short one", long, "another short one"]
    lp = engine.label_probs(prompts, LABELS, answer_prefix=ANSWER_PREFIX)
    assert [r.error is None for r in lp] == [True, False, True]
    assert "context of 512 tokens" in lp[1].error and lp[1].probs == (0.0,) * len(LABELS)
    gen = engine.generate(prompts, max_tokens=8, temperature=0.0, seed=0)
    assert [r.error is None for r in gen] == [True, False, True] and gen[0].tokens_out > 0
    # a prompt that fits but leaves less room than max_tokens: the answer is capped, not failed
    overhead = len(engine._render("", ""))
    near, n, _ = engine.truncate("Paris is the capital of France. " * MAX_LEN, MAX_LEN - 10 - overhead)
    (capped,) = engine.generate([near], max_tokens=400, temperature=0.0, seed=0)
    assert capped.error is None and MAX_LEN - 20 < capped.tokens_in < MAX_LEN
    assert 0 < capped.tokens_out <= MAX_LEN - capped.tokens_in


def test_medu_tables_in_both_modes_equal_transformers(engine, reference):
    common = {"per_source": None, "max_doc_tokens": 64, "n_boot": 50, "descriptions": DESCRIPTIONS}
    for mode, extra in (("logprob", {}), ("generate", {"temperature": 0.0, "rate_max_tokens": 8})):
        t_v, c_v = estimate_utility("medu", docs_rows(), BENCHES, backend=engine, mode=mode, **common, **extra)
        t_r, c_r = estimate_utility("medu", docs_rows(), BENCHES, backend=reference, mode=mode, **common, **extra)
        assert c_v["n_ratings"] == 8 and c_v["n_failed"] == 0 and c_v["estimator"]["kind"] == "vllm"
        assert c_v["n_unparseable"] == c_r["n_unparseable"]
        rows_v, rows_r = t_v.to_pylist(), t_r.to_pylist()
        assert [(r["source"], r["benchmark"], r["n"]) for r in rows_v] == \
               [(r["source"], r["benchmark"], r["n"]) for r in rows_r]
        if mode == "logprob":
            assert [r["mean"] for r in rows_v] == pytest.approx([r["mean"] for r in rows_r], abs=1e-4)


def test_sampled_generation_beside_chunked_prefill(engine):
    """Sampling (temperature > 0) while other prompts of the batch are still in chunked prefill
    (here 12 x ~450 tokens > the engine's 4096-token step): vllm-cpu 0.32.0 kills its engine when
    such a request carries its own seed, so on CPU the backend leaves the seed to the engine."""
    overhead = len(engine._render("", ""))
    prompts = [engine.truncate(f"Document {i}: " + "Paris is the capital of France. " * MAX_LEN,
                               450 - overhead)[0] for i in range(12)]
    gens = engine.generate(prompts, max_tokens=8, temperature=0.7, seed=0)
    assert [g.error for g in gens] == [None] * 12
    assert sum(g.tokens_in for g in gens) > 4096 and all(g.tokens_out >= 1 for g in gens)
    (after,) = engine.generate(["still alive?"], max_tokens=4, temperature=0.0, seed=0)
    assert after.error is None and after.tokens_out == 4
