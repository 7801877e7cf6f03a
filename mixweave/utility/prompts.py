"""Versioned MEDU prompt templates (``prompts/<version>/*.txt``) and safe rendering.

Templates are plain text with ``{name}`` placeholders, filled in one pass (a value that itself
contains ``{x}`` is never expanded again). A template's identity for the rating cache is
``<version>-<sha256 of the text>[:10]``, so editing a file without bumping the version still
invalidates old ratings.

Safety (prompt injection): a document is truncated to a token limit by the caller and then
*framed*: the delimiter tags ``<document>``/``</document>`` (and the other section tags) inside it
are defused, and so is the answer slot ``Final Score:``, so a document can neither close its
frame nor pre-write an answer. The instructions that fix the answer format come *after* the
document, and in ``logprob`` mode the answer slot is written by us, not by the model.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from mixweave.errors import ConfigError

PROMPT_DIR = Path(__file__).with_name("prompts")
DEFAULT_VERSION = "v1"
TEMPLATE_NAMES = ("describe", "merge", "rate_generate", "rate_logprob")
ANSWER_PREFIX = "Final Score:"

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_TAGS = re.compile(r"</?\s*(document|examples|benchmark_description|description_[ab])\s*>", re.IGNORECASE)
_SLOT = re.compile(r"(final)[\s_*]*(score)", re.IGNORECASE)


@dataclass(frozen=True)
class PromptSet:
    """The four templates of one version, with their cache identities."""

    version: str
    templates: dict[str, str]

    def ident(self, name: str) -> str:
        """``<version>-<sha10>`` of one template: part of every cache key that used it."""
        return f"{self.version}-{hashlib.sha256(self.templates[name].encode()).hexdigest()[:10]}"

    def render(self, name: str, **values: str) -> str:
        return render(self.templates[name], **values)


def available_versions() -> list[str]:
    return sorted(p.name for p in PROMPT_DIR.iterdir() if p.is_dir())


@functools.lru_cache(maxsize=8)
def load_prompts(version: str = DEFAULT_VERSION) -> PromptSet:
    """The templates of ``version`` (a folder under ``prompts/``)."""
    folder = PROMPT_DIR / version
    if not folder.is_dir():
        raise ConfigError(f"prompt version {version!r} does not exist; use one of {available_versions()}")
    templates = {}
    for name in TEMPLATE_NAMES:
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise ConfigError(f"prompt version {version!r} lacks {name}.txt; add it under {folder}")
        templates[name] = path.read_text(encoding="utf-8").strip("\n")
    return PromptSet(version, templates)


def render(template: str, **values: str) -> str:
    """Fill ``{name}`` placeholders in one pass; a missing value raises ConfigError."""

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"prompt template needs a value for {{{key}}}")
        return str(values[key])

    return _PLACEHOLDER.sub(sub, template)


def defuse(text: str) -> str:
    """Neutralise frame tags and the answer slot inside untrusted text (documents, examples).

    ``<document>`` becomes ``(document)``, ``</document>`` becomes ``(/document)`` (likewise for
    our other section tags) and ``Final Score`` becomes ``Final-Score``: the text stays
    readable but no longer matches our delimiters or the answer parser (which needs the words
    separated by spaces only).
    """
    text = _TAGS.sub(lambda m: "(" + m.group(0).strip("<>").strip() + ")", text)
    return _SLOT.sub(lambda m: f"{m.group(1)}-{m.group(2)}", text)


def format_examples(examples: list[dict], max_chars: int) -> str:
    """Benchmark examples as numbered prompt/answer blocks, each cut to ``max_chars``."""
    blocks = []
    for i, ex in enumerate(examples, 1):
        prompt = defuse(str(ex.get("prompt", "")))[:max_chars]
        answer = defuse(str(ex.get("answer", "")))[:max_chars]
        blocks.append(f"Example {i}\nPrompt:\n{prompt}\nAnswer:\n{answer}")
    return "\n\n".join(blocks)
