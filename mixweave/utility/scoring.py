"""The five MEDU levels, the answer parser (generate mode) and the expected score (logprob mode)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

LABELS: tuple[str, ...] = ("Great", "Good", "Okay", "Poor", "Useless")
SCORES: dict[str, int] = {"Great": 5, "Good": 4, "Okay": 3, "Poor": 2, "Useless": 1}

# "Final Score: Great", "**Final Score:** good", "FINAL SCORE - Poor", "final_score = okay",
# "Final Score: [Useless]". The label must be a whole word; the LAST such line wins, so a model that
# first restates the required format ("... end with Final Score: <level>") is still read right.
_FINAL = re.compile(
    r"final[\s_*]*score[\s*_]*(?:[:=\-\u2013\u2014]|is)?[\s*_\"'`\[(<]*"
    r"(great|good|okay|poor|useless)(?![a-z])",
    re.IGNORECASE,
)


def parse_final_score(text: str | None) -> tuple[int, str] | None:
    """``(score 1..5, label)`` from the last ``Final Score: <label>`` in ``text``; None if absent.

    Cost: one regex scan, O(len(text)). Trade-off: strict about the label words (no numbers, no
    synonyms), lenient about markdown and punctuation around them.
    """
    if not text:
        return None
    matches = list(_FINAL.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    label = last.group(1).capitalize()
    return SCORES[label], label


def expected_score(probs: Sequence[float], labels: Sequence[str] = LABELS) -> tuple[float, float] | None:
    """Expected level ``sum_i p_i s_i / sum_i p_i`` over the label probabilities at the answer slot.

    Returns ``(expected score, probability mass on the labels)``, or None when no label has any
    mass (e.g. none of them is among an API's top-k logprobs). One forward pass per document
    instead of decoding hundreds of tokens; the trade-off is that the score reflects the model's
    first answer token with no reasoning before it.
    """
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} probabilities for {len(labels)} labels")
    clean = [p if (p > 0 and math.isfinite(p)) else 0.0 for p in probs]
    mass = float(sum(clean))
    if mass <= 0.0:
        return None
    return sum(p * SCORES[label] for p, label in zip(clean, labels)) / mass, mass


def label_for_token(token: str, labels: Sequence[str] = LABELS) -> str | None:
    """The label a decoded first token stands for (``" Great"``, ``"great"``, ``"Us"`` -> Useless),
    or None when it is empty or a prefix of several labels (``"G"``: Great or Good)."""
    t = token.strip().strip("*_\"'`[(").lower()
    if not t:
        return None
    hits = [label for label in labels if label.lower().startswith(t)]
    return hits[0] if len(hits) == 1 else None
