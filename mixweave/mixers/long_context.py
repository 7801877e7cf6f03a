"""Sequence-length phases and long-document upsampling (Effective Long-Context Scaling, Xiong et al. 2023).

A run with ``mix.phases`` trains through a sequence of phases, each with its share of the token
budget and its own window length S_p (e.g. most tokens at 2048, the last 20 % at 8192), every
phase packed from the same ICP order. A phase may upsample long documents inside each source.

Long windows. In a phase's pack a window is *long* when at least half of its stream tokens (the
sink excluded; a document's EOS counts as the document's) come from documents of at least
``min_tokens`` tokens; a document's length is its whole tokenized length, not the piece in the
window. :func:`~mixweave.retrieval.pack.window_long_tokens` counts them from the pack's spans (both pack
paths call it, so it lives with the pack's cores).

Upsampling (:func:`upsample_rates`), water-filling in window units. The phase's target T of a
source (windows: target tokens / S_p) is shared between its W_l long and W_s short windows so that
a long window is drawn ``u`` times as often as a short one, subject to the epoch cap c (repeats of
one window):

    r_s = T / (W_s + u W_l),  r_l = u r_s;   if r_l > c:  r_l = c,  r_s = (T - c W_l) / W_s

(no long windows: r_s = T / W_s; no short ones: r_l = T / W_l). Among the splits with
r_s W_s + r_l W_l = T and 0 <= r <= c this is the one whose ratio r_l / r_s is closest to u.
In the phase's pack the two groups are two sources, ``<source>`` and ``<source>.long``, whose
targets r W S_p carry the upsampling (every exporter and the trainer read them unchanged).
Cost: O(spans) for the classification, O(1) per source for the rates.
Trade-off: classification is per window (a long document split over short windows is not
upsampled there); u is a ratio of repeat rates, so the long-text token share after upsampling
depends on how long documents are spread over windows (reported before/after by
:func:`long_share`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixweave.data.manifest import check_name
from mixweave.data.typed import from_dict
from mixweave.errors import ConfigError, InfeasibleError
from mixweave.retrieval.pack import long_window_mask

#: The suffix of a source's long-window group in a phase pack.
LONG_SUFFIX = ".long"
#: Shares must sum to 1 within this.
SHARE_TOL = 1e-9
#: Shortest phase window.
MIN_SEQ_LEN = 16
#: Names a phase may not take beside the export formats (folders under export/, mix/, pack/).
RESERVED_NAMES = ("variants", "phases", "proxies", "mixture", "main", "all")


@dataclass(frozen=True, kw_only=True)
class LongDocs:
    """``mix.phases[i].long_docs``: upsample windows made mostly of long documents."""

    min_tokens: int
    """A document of at least this many tokens (its whole tokenized length) is long."""
    upsample: float
    """A long window is drawn this many times as often as a short one (>= 1), within the epoch cap."""

    def __post_init__(self) -> None:
        if self.min_tokens < 1:
            raise ConfigError(f"long_docs.min_tokens must be at least 1 token, got {self.min_tokens}")
        if not self.upsample >= 1:
            raise ConfigError(f"long_docs.upsample must be >= 1 (1 = no upsampling), got {self.upsample:g}")


@dataclass(frozen=True, kw_only=True)
class LengthPhase:
    """One entry of ``mix.phases``: a training phase at its own window length."""

    name: str
    """Phase name (check_name-safe): mix/variants/<name>.json, pack/phases/<name>/, export/<name>/."""
    share: float
    """Share of the run's budget tokens trained in this phase (> 0; the shares sum to 1)."""
    seq_len: int | None = None
    """Window length of the phase (>= 16); None = order.seq_len."""
    long_docs: LongDocs | None = None
    """Long-document upsampling in this phase, or None."""

    def __post_init__(self) -> None:
        check_name(self.name, "mix.phases name", ConfigError)
        if isinstance(self.long_docs, Mapping):
            object.__setattr__(self, "long_docs", from_dict(LongDocs, self.long_docs, f"mix.phases.{self.name}.long_docs"))
        if not 0 < self.share <= 1:
            raise ConfigError(f"mix.phases.{self.name}.share must be in (0, 1] (its share of the budget), got {self.share:g}")
        if self.seq_len is not None and self.seq_len < MIN_SEQ_LEN:
            raise ConfigError(f"mix.phases.{self.name}.seq_len must be at least {MIN_SEQ_LEN}, got {self.seq_len}")

    def window_len(self, order_seq_len: int) -> int:
        return int(order_seq_len if self.seq_len is None else self.seq_len)

    def has_pack(self, order_seq_len: int) -> bool:
        """Packed into pack/phases/<name>/ (else the phase reads the main pack)."""
        return self.window_len(order_seq_len) != int(order_seq_len) or self.long_docs is not None


def parse_phases(value: Any) -> tuple[LengthPhase, ...] | None:
    """``mix.phases`` as written (null, [], a list of mappings or LengthPhase) -> phases or None,
    checked as a whole: unique names, shares summing to 1."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"mix.phases must be a list of {{name, share, seq_len, long_docs}}, got {value!r}")
    phases = []
    for i, item in enumerate(value):
        if isinstance(item, LengthPhase):
            phases.append(item)
        elif isinstance(item, Mapping):
            phases.append(from_dict(LengthPhase, item, f"mix.phases[{i}]"))
        else:
            raise ConfigError(f"mix.phases[{i}] must be a mapping {{name, share, seq_len, long_docs}}, got {item!r}")
    names = [p.name for p in phases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"mix.phases: the name {twice[0]} is used twice; give each phase its own name")
    total = math.fsum(p.share for p in phases)
    if abs(total - 1.0) > SHARE_TOL:
        raise ConfigError(f"mix.phases: the shares sum to {total:.12g}, not 1; make them add up to 1")
    return tuple(phases)


def check_phases(phases: Sequence[LengthPhase] | None, *, sources: Sequence[str], order_seq_len: int | None,
                 reserved: Sequence[str] = (), method: str = "", unit: str = "tokens", learned: bool = False) -> None:
    """The checks of mix.phases that need the rest of the run config (``reserved``: the export
    formats and aliases, which a phase name may not take)."""
    if not phases:
        return
    taken = {n.lower() for n in (*reserved, *RESERVED_NAMES)}
    for p in phases:
        if p.name.lower() in taken:
            raise ConfigError(f"mix.phases: the phase name {p.name} clashes with an export format or a reserved "
                              "folder name; rename the phase")
    if order_seq_len is None:
        what = "long_docs upsamples long windows of a pack" if any(p.long_docs for p in phases) else \
            "phases are mixtures over packed windows"
        raise ConfigError(f"mix.phases: {what}; add an order section (e.g. order: {{seq_len: 2048}}) so the pack "
                          "stage runs")
    if any(p.long_docs is not None for p in phases):
        clash = [s for s in sources if s.endswith(LONG_SUFFIX)]
        if clash:
            raise ConfigError(f"source {clash[0]} ends in {LONG_SUFFIX}, the suffix of the long-window groups of "
                              "mix.phases long_docs; rename the source")
    if learned:
        raise ConfigError(f"mix.phases solves each phase with mix.method; {method} trains proxy models and "
                          "cannot be phased: use a closed-form or convex method")
    if unit != "tokens":
        raise ConfigError("mix.phases solves token budgets; use mix.unit: tokens with phases")


# ------------------------------------------------------------------------------ the pure cores
def upsample_rates(target_windows: float, n_short: int, n_long: int, upsample: float,
                   cap: float | None) -> tuple[float, float]:
    """(r_short, r_long): repeats of each short and each long window (module docstring's
    water-filling), so that ``r_short n_short + r_long n_long = target_windows``. InfeasibleError
    when the target needs more than ``cap`` repeats of every window."""
    T, ws, wl, u = float(target_windows), int(n_short), int(n_long), float(upsample)
    c = math.inf if cap is None else float(cap)
    if T < 0 or ws < 0 or wl < 0 or ws + wl == 0:
        raise InfeasibleError(f"no windows to draw {T:g} windows from")
    if T > c * (ws + wl) * (1 + 1e-9):
        raise InfeasibleError(f"{T:g} windows exceed {c:g} epochs of {ws + wl} windows")
    if wl == 0:
        return min(T / ws, c), 0.0
    if ws == 0:
        return 0.0, min(T / wl, c)
    r_short = T / (ws + u * wl)
    r_long = u * r_short
    if r_long > c:
        r_long = c
        r_short = min(max(T - c * wl, 0.0) / ws, c)
    return r_short, r_long


@dataclass(frozen=True)
class LongGroups:
    """A source's windows in a phase pack, by group: counts of windows, stream tokens and
    long-document tokens in the short (rest) and long windows."""

    n_short: int
    n_long: int
    stream_short: int
    stream_long: int
    longdoc_short: int
    longdoc_long: int

    @classmethod
    def of(cls, long_tokens: np.ndarray, stream_tokens: np.ndarray) -> "LongGroups":
        mask = long_window_mask(long_tokens, stream_tokens)
        return cls(int((~mask).sum()), int(mask.sum()), int(stream_tokens[~mask].sum()), int(stream_tokens[mask].sum()),
                   int(long_tokens[~mask].sum()), int(long_tokens[mask].sum()))

    def share(self, r_short: float, r_long: float) -> float | None:
        """Long-document tokens / all stream tokens when each short window is drawn r_short times
        and each long one r_long times (None: nothing drawn)."""
        den = r_short * self.stream_short + r_long * self.stream_long
        return None if den <= 0 else (r_short * self.longdoc_short + r_long * self.longdoc_long) / den


def long_share(groups: Mapping[str, LongGroups], rates: Mapping[str, tuple[float, float]],
               uniform: Mapping[str, float]) -> dict[str, Any]:
    """Long-text token share per source and overall, ``before`` (each source's windows all drawn
    at its uniform rate: the phase mixture without upsampling) and ``after`` (the upsampled rates)."""
    out: dict[str, Any] = {"sources": {}}
    tot = {"before": [0.0, 0.0], "after": [0.0, 0.0]}
    for name, g in groups.items():
        r0 = uniform[name]
        rs, rl = rates[name]
        out["sources"][name] = {"before": g.share(1.0, 1.0), "after": g.share(rs, rl), "n_long_windows": g.n_long,
                                "n_windows": g.n_short + g.n_long, "r_short": rs, "r_long": rl}
        for key, (a, b) in (("before", (r0, r0)), ("after", (rs, rl))):
            tot[key][0] += a * g.longdoc_short + b * g.longdoc_long
            tot[key][1] += a * g.stream_short + b * g.stream_long
    for key, (num, den) in tot.items():
        out[key] = None if den <= 0 else num / den
    return out


def split_rows(window_ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New window ids of each group: output rows ``window_ids`` renumbered 0.. within the short
    (~mask) and long (mask) groups, keeping their (shuffled) order. Returns (new_id, is_long) per row."""
    mask = np.asarray(mask, bool)
    rank_long = np.cumsum(mask) - 1
    rank_short = np.cumsum(~mask) - 1
    ids = np.asarray(window_ids, np.int64)
    is_long = mask[ids]
    return np.where(is_long, rank_long[ids], rank_short[ids]), is_long


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def phase_lines(mixture: Mapping[str, Any]) -> list[str]:
    """The report's lines on sequence-length phases (plain text, one per phase variant of a
    mixture.json dict): seq_len, share, budget and, with long_docs, the long-text token share
    before -> after upsampling, overall and per source. [] without phases."""
    lines = []
    for v in mixture.get("variants") or []:
        if v.get("kind") != "phase":
            continue
        line = (f"phase {v['name']}: seq_len {v['seq_len']}, share {v.get('share', 0):.3g} of the budget, "
                f"{v['budget_tokens']:,.0f} tokens")
        docs = v.get("long_docs")
        if docs:
            drawn = sorted(n for n, s in docs["sources"].items() if s["after"] is not None)
            per = ", ".join(f"{n} {_pct(docs['sources'][n]['before'])} -> {_pct(docs['sources'][n]['after'])}"
                            for n in drawn)
            idle = sorted(set(docs["sources"]) - set(drawn))
            line += (f"; documents of >= {docs['min_tokens']} tokens upsampled x{docs['upsample']:g}: long-text token "
                     f"share {_pct(docs['share_before'])} -> {_pct(docs['share_after'])} ({per})"
                     + (f"; not drawn in this phase: {', '.join(idle)}" if idle else ""))
        lines.append(line)
    return lines
