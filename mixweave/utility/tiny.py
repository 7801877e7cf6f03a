"""Random-weight causal LMs of real architectures, built offline, for tests and benchmarks.

No instruct weights can be downloaded here, so the MEDU code path is exercised on models that
have the real architecture (Llama / Qwen2 modelling code, a real BPE tokenizer saved as a Hugging
Face folder) and random weights: their answers are noise, but every step (chat template or not,
padding, truncation, decoding, label probabilities, FLOPs) is the real one.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the MEDU prompt templates, the
label words and any extra text, so prompts tokenize to realistic lengths and each label is one
token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mixweave.errors import ConfigError

log = logging.getLogger(__name__)

SHAPES: dict[str, dict[str, Any]] = {
    # head size 32: vLLM's CPU attention rejects 16 (it takes 32, 64, 80, ...); 2 query heads share 1 kv head
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "vocab_size": 0},
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                 "tie_word_embeddings": True},
    "llama-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
}
ARCHS = ("llama", "qwen2")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if not loop.last or m['role'] != 'assistant' %}<|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (plus the MEDU templates
    and labels), with ``<|endoftext|>`` as eos/bos and ``<pad>`` as padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from mixweave.utility.prompts import load_prompts
    from mixweave.utility.scoring import LABELS

    corpus = list(load_prompts().templates.values()) + [f"Final Score: {label}" for label in LABELS] * 20
    corpus += [str(t) for t in texts]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<pad>")


def make_tiny_model(out_dir: str | Path, *, arch: str = "llama", shape: str = "tiny", texts: Iterable[str] = (),
                    vocab_size: int = 2048, chat: bool = False, max_position_embeddings: int = 4096,
                    seed: int = 0) -> Path:
    """Write a random-weight ``arch`` model of ``shape`` plus its tokenizer to ``out_dir``.

    ``tiny`` is ~0.4M parameters (< 2 MB on disk, loads in 0.1 s on a CPU); ``llama-1b`` and
    ``llama-8b`` have those models' layer shapes (for GPU benchmarks; several GB, bf16).
    ``chat=True`` adds a small chat template so the chat code path runs."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    if arch not in ARCHS:
        raise ConfigError(f"arch must be one of {ARCHS}, got {arch!r}")
    if shape not in SHAPES:
        raise ConfigError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(texts, vocab_size)
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = max(len(tok), dims["vocab_size"])
    cls = LlamaConfig if arch == "llama" else Qwen2Config
    config = cls(**dims, max_position_embeddings=max_position_embeddings, eos_token_id=tok.eos_token_id,
                 bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    dtype = torch.float32 if shape == "tiny" else torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    log.info("random-weight %s %s model (%d params) written to %s", arch, shape,
             sum(p.numel() for p in model.parameters()), out)
    return out


def script_answer(model_dir: str | Path, answer: str = "Final Score: Good", *, after: str = "\n",
                  strength: float = 50.0) -> Path:
    """Rewire a ``tiny`` model folder (in place) into a bigram chain that, after a prompt ending in
    ``after``, greedily writes ``answer`` and then eos -- a real architecture answering like an
    instruct model would, so parsing and logprob code see a realistic answer.

    How: every layer's output projections are zeroed (o_proj, down_proj), so the logits depend on
    the last token only; the chain's tokens get orthonormal embeddings and each next token's
    lm_head row is ``strength`` times the previous token's embedding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    encode = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    chain = [encode(after)[-1], *encode(answer), tok.eos_token_id]
    if len(set(chain)) != len(chain):
        raise ConfigError(f"the answer {answer!r} repeats a token in this tokenizer; a bigram chain cannot write it")
    d = model.config.hidden_size
    if len(chain) > d:
        raise ConfigError(f"answer too long for hidden size {d}")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        basis = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0].T
        for i, (cur, nxt) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[cur] = basis[i]
            model.lm_head.weight[nxt] = strength * basis[i]
    model.save_pretrained(path)
    return path
