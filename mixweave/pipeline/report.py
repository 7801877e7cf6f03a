"""The run report: one self-contained HTML page (PNG charts inlined as data URIs, no scripts).

Sections, each present when its stages ran: per-source statistics and quarantine by reason;
mixture weights next to token shares and epochs against caps, and for a utility-based mixture
(UtiliMax, weakest-link) why each source got its weight (binding constraint, utility with the
interval of its mean, the risk term, a flag on weights that rest on differences within the
intervals: :func:`within_noise`); the source x benchmark utility heatmap with the confidence
interval of each mean (not the per-document spread); ICP quality (adjacent-cosine histogram of the ICP order against a
random order, jump rate, window coherence) and dedup counts; stage timings. Everything is read
from the stage artifacts (manifests, stats.json, mixture.json, metrics), so the report can be
re-made at any time without re-running a stage.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.manifest import read_manifest

def _stage_order() -> tuple[str, ...]:
    """The stage names in the stage table's order (the one place a stage is registered)."""
    from .stages import STAGES

    return tuple(stage.name for stage in STAGES)


STAGE_ORDER = _stage_order()


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def chart_mixture(mixture: dict) -> bytes:
    import tempfile

    from ..mixers.chart import plot_mixture

    with tempfile.TemporaryDirectory() as tmp:
        out = plot_mixture(mixture, Path(tmp) / "mixture.png")
        return out.read_bytes()


def utility_interval_caption(table, level: float = 0.95, n_boot: int | None = None) -> str:
    """What the heatmap's brackets are, in words (the caption under it)."""
    found = table.interval()
    if found is None:
        return ("Each cell: the mean utility. The table carries no standard error or interval of its means, "
                "so none is shown (its std, if any, is the per-document spread, not the uncertainty of the mean).")
    kind = found[2]
    what = (f"the {level:.0%} confidence interval of that mean (percentile bootstrap over the rated documents"
            f"{f', {n_boot} resamples' if n_boot else ''})" if kind == "ci" else
            "the 95 % confidence interval of that mean, mean ± 1.96 × standard error (SE = std / √n)")
    return (f"Each cell: the mean utility over the sampled documents and, in brackets, {what}. The interval is "
            "the uncertainty of the estimate, not the spread of single documents' scores. Colour: the mean "
            "normalised per benchmark (worst source 0, best 1).")


def chart_utility(table) -> bytes:
    """Heatmap of scores normalised per benchmark, annotated with the mean and (when known) the
    confidence interval of the mean: the table's own (bootstrap) interval, else +-1.96 SE."""
    scores = np.asarray(table.scores, float)
    lo, hi = scores.min(0, keepdims=True), scores.max(0, keepdims=True)
    normed = (scores - lo) / np.where(hi > lo, hi - lo, 1.0)
    found = table.interval()
    fig = _figure(max(4.0, 1.4 + 1.3 * len(table.benchmarks)), 1.4 + 0.45 * len(table.sources))
    ax = fig.subplots()
    image = ax.imshow(normed, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(table.benchmarks)), table.benchmarks, rotation=30, ha="right")
    ax.set_yticks(range(len(table.sources)), table.sources)
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            text = f"{scores[i, j]:.3g}"
            if found is not None:
                text += f"\n[{found[0][i, j]:.2g}, {found[1][i, j]:.2g}]"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if normed[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="utility, normalised per benchmark")
    what = {None: "mean (no interval known)", "ci": "mean [95% CI of the mean]",
            "se": "mean [mean ± 1.96 SE]"}[found and found[2]]
    ax.set_title(f"utility per source x benchmark\n{what}", fontsize=9)
    return _png(fig)


def within_noise(weights: np.ndarray, means: np.ndarray, low: np.ndarray, high: np.ndarray,
                 tol: float = 1e-6) -> list[int | None]:
    """Per source, the index of the source it is compared with when its weight *rests on utility
    differences within the intervals*, else None.

    Rule: group sources into weight levels (weights within ``tol`` are one level, so a solver's
    1e-9 is zero). A source is compared with the sources of the next level below it; a source on
    the lowest level with those of the next level above. Of each pair, call H the source with more
    weight and L the other; the benchmarks that decide the pair are those where H's mean utility
    exceeds L's. The source is flagged when, for some partner, at least one benchmark decides the
    pair and on every deciding benchmark the two intervals of the mean overlap (``low_H <=
    high_L``): the data cannot tell H from L where H looks better, so the weight gap between them
    is not supported by the estimates. Equal weights are never flagged, nor pairs where H is no
    better anywhere (the gap comes from the caps or the risk term). Cost O(k^2 m) for k sources
    and m benchmarks (k is small).
    """
    w = np.asarray(weights, float)
    order = np.argsort(-w, kind="stable")
    level = np.empty(w.size, int)
    current = 0
    for rank, i in enumerate(order):
        if rank and w[order[rank - 1]] - w[i] > tol:
            current += 1
        level[i] = current
    flags: list[int | None] = [None] * w.size
    for i in range(w.size):
        target = level[i] + 1 if level[i] < level.max() else level[i] - 1
        for p in (j for j in range(w.size) if level[j] == target and target >= 0):
            h, l_ = (i, p) if level[i] < level[p] else (p, i)
            deciding = means[h] > means[l_]
            if deciding.any() and bool(np.all(low[h][deciding] <= high[l_][deciding])):
                flags[i] = p
                break
    return flags


BINDING_WORDS = {"epoch_cap": "epoch cap", "budget_share": "budget share", "nonneg": "zero (w ≥ 0)",
                 "none": "none (interior optimum)"}


def why_section(mixture: dict, table) -> str | None:
    """HTML: per source, why it got its weight (a utility-based mixture and its utility table), or
    None when the mixture used no utility. Utilities are shown in the units the solver used (the
    mixture's ``normalize``), each with its interval of the mean mapped the same way."""
    from ..mixers.utility_math import normalize_table_units, risk_diagonal

    params = mixture["method"].get("params") or {}
    if table is None or "benchmarks" not in params or "lam" not in params:
        return None
    names = [s["name"] for s in mixture["sources"]]
    if any(n not in table.sources for n in names) or any(b not in table.benchmarks for b in params["benchmarks"]):
        return None
    benchmarks = list(params["benchmarks"])
    cols = [table.benchmarks.index(b) for b in benchmarks]
    aligned = table.aligned(names)
    from dataclasses import replace

    aligned = replace(aligned, benchmarks=tuple(benchmarks),
                      **{f: None if getattr(aligned, f) is None else getattr(aligned, f)[:, cols]
                         for f in ("scores", "std", "se", "ci_low", "ci_high", "n")})
    normalize = params.get("normalize", "minmax")
    units, scale = normalize_table_units(aligned, normalize)
    lam, risk = float(params["lam"]), params.get("risk", "identity")
    diag = params.get("risk_diagonal")
    if isinstance(diag, dict) and all(n in diag for n in names):
        sigma = np.array([float(diag[n]) for n in names])
    else:  # a mixture.json from before risk_diagonal was recorded
        try:
            sigma = risk_diagonal(aligned, scale, risk)
        except Exception:  # noqa: BLE001 - the report never fails on an old artifact
            sigma = np.full(len(names), np.nan)
    weights = np.array([s["weight"] for s in mixture["sources"]])
    found = units.interval()
    flags = within_noise(weights, units.scores, found[0], found[1]) if found else [None] * len(names)
    rows = []
    for i, s in enumerate(mixture["sources"]):
        cells = [f"{units.scores[i, j]:.2f}" + (f" [{found[0][i, j]:.2f}, {found[1][i, j]:.2f}]" if found else "")
                 for j in range(len(benchmarks))]
        flag = ("-" if not found else f"⚠ within the intervals of {names[flags[i]]}" if flags[i] is not None else "")
        rows.append([s["name"], s["weight"], s["epochs"], "-" if s["max_epochs"] is None else s["max_epochs"],
                     BINDING_WORDS.get(s["binding"], s["binding"]), *cells, float(sigma[i]),
                     float(lam * sigma[i] * s["weight"] ** 2), flag])
    n_flagged = sum(f is not None for f in flags)
    kind = None if not found else found[2]
    interval = {None: "no interval (the table has no standard errors)",
                "ci": "[95 % confidence interval of the mean, the utility stage's bootstrap]",
                "se": "[mean ± 1.96 SE]"}[kind]
    caption = (f"<p>Utility in the units the solver used (normalize={html.escape(str(normalize))}, per benchmark), "
               f"each with {interval}, mapped the same way. Risk: Σ<sub>ii</sub> is source i's diagonal of Σ "
               f"(risk={html.escape(str(risk))}: {RISK_WORDS.get(risk, risk)}), and λ·Σ<sub>ii</sub>·w<sub>i</sub>² "
               f"its term in the objective (λ = {lam:g}). Binding: the constraint that fixes the weight. "
               "⚠ marks a weight that rests on utility differences within the intervals: compared with a source "
               "of the next weight level below (sources on the lowest level: above), the source with more weight "
               "is better only on benchmarks where the two intervals overlap. "
               f"{n_flagged} of {len(names)} sources flagged.</p>" + _risk_share(mixture, lam, sigma, weights))
    headers = ["source", "weight", "epochs", "cap", "binding", *benchmarks, "Σii", "λ·Σii·w²", "within noise?"]
    return "<h3>Why each source got its weight</h3>" + caption + _table(headers, rows)


def _risk_share(mixture: dict, lam: float, sigma: np.ndarray, weights: np.ndarray) -> str:
    """One line: the whole risk term against the objective, so a negligible risk term is visible."""
    total = float(lam * np.sum(sigma * weights**2))
    objective = mixture["method"].get("objective")
    if not np.isfinite(total):
        return ""
    line = f"Risk term in total: λ·Σ<sub>i</sub> Σ<sub>ii</sub>·w<sub>i</sub>² = {total:.4g}"
    if objective is not None:
        line += f", in an objective of {float(objective):.4g}"
    return f"<p>{line}.</p>"


RISK_WORDS = {"se": "mean over benchmarks of the squared standard error of the utility mean, normalised",
              "diagonal": "mean over benchmarks of the per-document variance, normalised",
              "identity": "1 for every source"}


def learned_line(mixture: dict) -> str | None:
    """One paragraph on a learned mixture (DoReMi / RegMix): its proxy runs, their FLOPs and the
    learned weights before the epoch caps (mixture.json's ``learned`` block)."""
    learned = mixture.get("learned")
    if not learned:
        return None
    runs = len(learned.get("proxies") or []) or (2 if learned.get("method") == "doremi" else 0)
    model = learned.get("model", {})
    pre = ", ".join(f"{html.escape(n)} {w:.3f}" for n, w in sorted((learned.get("weights") or {}).items(),
                                                                    key=lambda kv: -kv[1]))
    return (f"<p>learned by {html.escape(str(learned.get('method')))}: {runs} proxy runs of depth "
            f"{model.get('depth')} ({model.get('params', 0):,} parameters), {float(learned.get('flops', 0)):.3g} FLOPs "
            f"(6 x non-embedding parameters x tokens); weights before the epoch caps: {pre}</p>")


def variants_section(mixture: dict, mix_dir: Path, export_manifest: dict | None) -> str:
    """mixture.json's variants (sequence-length phases, bts experts and stitch): one row per variant
    (kind, seq_len, budget, its weight per source) and where the export stage wrote it ("" without)."""
    from ..data.mixture_manifest import read_mixture_manifest

    entries = mixture.get("variants") or []
    if not entries:
        return ""
    names = [s["name"] for s in mixture["sources"]]
    exports = (export_manifest or {}).get("exports_by_variant") or {}
    rows = []
    for v in entries:
        weights = {s["name"]: s["weight"] for s in read_mixture_manifest(mix_dir / v["mixture"])["sources"]}
        e = exports.get(v["name"])
        where = f"export/{e['folder']}/ ({', '.join(sorted(e['formats']))})" if e else "-"
        rows.append([v["name"], v["kind"], v["seq_len"], v["budget_tokens"],  # a phase's <source>.long counts as its source
                     *[weights.get(n, 0.0) + weights.get(n + ".long", 0.0) for n in names], where])
    trained = [v["name"] for v in entries if v["kind"] == "phase"]
    note = (f"The built-in trainer trains the phases in order ({' → '.join(trained)}), steps shared by token budget. "
            if trained else "")
    return ("<h2>Variants</h2><p>Each variant is its own mixture.json over its own pack (mix/variants/). "
            + html.escape(note) + "</p>"
            + _table(["variant", "kind", "seq_len", "budget tokens", *names, "exports"], rows))


def phases_paragraph(mixture: dict) -> str:
    """One line per sequence-length phase: seq_len, share, budget and, with long_docs, the long-text
    token share before -> after upsampling (:func:`mixweave.mixers.long_context.phase_lines`)."""
    from ..mixers.long_context import phase_lines

    lines = phase_lines(mixture)
    return "<p>" + "<br>".join(html.escape(line) for line in lines) + "</p>" if lines else ""


def bts_section(mixture: dict, mix_dir: Path) -> str:
    """Branch-train-stitch (mix.bts): sources x seed / each expert / stitch weights and target
    tokens, and each expert's domain share asked and after the epoch caps ("" without bts)."""
    from ..data.mixture_manifest import read_mixture_manifest
    from ..mixers.bts import bts_table

    entries = [v for v in mixture.get("variants") or [] if v["kind"] in ("expert", "stitch")]
    if not entries:
        return ""
    headers, rows = bts_table(mixture, {v["name"]: read_mixture_manifest(mix_dir / v["mixture"]) for v in entries})
    shares = "; ".join(f"{v['name']}: {', '.join(v['domain'])} at {v['domain_share']:g} of its budget "
                       f"({v['domain_share_after_caps']:.3g} after the epoch caps)" for v in entries if v["kind"] == "expert")
    return ("<h2>Branch-train-stitch</h2><p>Seed mixture: the run's mixture above; each expert continues from the "
            f"seed on its own mixture, then the stitch set trains the merged model. {html.escape(shares)}. "
            "mixweave exports every set; it does not train the experts.</p>" + _table(headers, rows))


def coherence_section(export_manifest: dict) -> str | None:
    """Similarity batching (Lory): mean pairwise cosine within a global batch for the similarity order,
    the shuffle and one-source batches of shuffled windows, as the hf/mds exports measured it."""
    rows = []
    for fmt, entry in sorted((export_manifest.get("exports") or {}).items()):
        c = entry.get("batch_coherence") if isinstance(entry, dict) else None
        if not c or "similarity" not in c:
            continue
        for mode in ("similarity", "source_shuffle", "shuffle"):
            m = c.get(mode) or {}
            rows.append([fmt, c.get("global_batch"), mode, m.get("window_pairs"), m.get("doc_pairs")])
    if not rows:
        return None
    return ("<h3>Similarity batching: coherence within a global batch</h3>"
            + _table(["export", "global batch", "order", "window pairs cos", "doc pairs cos"],
                     [[("-" if v is None else v) for v in r] for r in rows]))


ADJACENT_PAIRS = 200_000
"""Pairs of each kind that :func:`adjacent_cosines` reads at most per source."""


def adjacent_cosines(out: Path, source: str, seed: int = 0,
                     max_pairs: int = ADJACENT_PAIRS) -> tuple[np.ndarray, np.ndarray] | None:
    """Cosines of consecutive documents in the ICP order and in a seeded random order of the same
    documents (the report's histogram), read with bounded memory: the order files and the embed
    blocks memory-mapped, embedding rows gathered by global index in blocks of 16,384 pairs.

    A source of at most ``max_pairs + 1`` ordered documents gives every pair (the random order a
    permutation), as the whole-array computation did. A larger one gives a seeded uniform sample of
    ``max_pairs`` adjacent positions and ``max_pairs`` pairs of two distinct random positions (the
    adjacent pairs of a random permutation, sampled): O(max_pairs) memory and reads, whatever N;
    a histogram bin's share is then within ~1/sqrt(4 max_pairs) (0.0011) of the whole order's."""
    from ..data.artifacts import Blocks, RowReader, order_files

    order_manifest, embed_manifest = read_manifest(out / "order"), read_manifest(out / "embed")
    if order_manifest is None or source not in order_manifest.get("order", {}) or embed_manifest is None:
        return None
    maps = [np.load(p, mmap_mode="r") for p in order_files(out / "order", source)]
    starts = np.concatenate([[0], np.cumsum([m.shape[0] for m in maps])]).astype(np.int64)
    n = int(starts[-1])
    if n < 3:
        return None
    rows = RowReader(Blocks.from_files([out / "embed" / rel for rel in embed_manifest["embeddings"][source]["files"]]),
                     mapped=False)

    def docs(positions: np.ndarray) -> np.ndarray:  # order[positions], from the memory-mapped files
        which = np.searchsorted(starts, positions, side="right") - 1
        result = np.empty(positions.size, np.int64)
        for f in np.unique(which):
            at = np.flatnonzero(which == f)
            result[at] = maps[f][positions[at] - starts[f]]
        return result

    def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        result = np.empty(a.size, np.float32)
        for lo in range(0, a.size, 16_384):
            hi = min(a.size, lo + 16_384)
            result[lo:hi] = np.einsum("ij,ij->i", rows.rows(a[lo:hi]), rows.rows(b[lo:hi]))
        return result

    rng = np.random.default_rng(seed)
    if n - 1 <= max_pairs:
        order = docs(np.arange(n, dtype=np.int64))
        rand = rng.permutation(order)
        return cosines(order[:-1], order[1:]), cosines(rand[:-1], rand[1:])
    at = np.sort(rng.choice(n - 1, size=max_pairs, replace=False))
    u = rng.integers(0, n, max_pairs)
    v = (u + rng.integers(1, n, max_pairs)) % n  # uniform over the other positions
    return cosines(docs(at), docs(at + 1)), cosines(docs(u), docs(v))


def chart_icp(out: Path, sources: list[str]) -> bytes | None:
    pairs = {s: adjacent_cosines(out, s) for s in sources}
    icp = [v[0] for v in pairs.values() if v is not None]
    rnd = [v[1] for v in pairs.values() if v is not None]
    if not icp:
        return None
    fig = _figure(8, 3.6)
    ax = fig.subplots()
    bins = np.linspace(-0.2, 1.0, 49)
    ax.hist(np.concatenate(rnd), bins=bins, alpha=0.6, color="#bbbbbb", label="random order", density=True)
    ax.hist(np.concatenate(icp), bins=bins, alpha=0.7, color="#1f77b4", label="ICP order", density=True)
    ax.set_xlabel("cosine between consecutive documents")
    ax.set_ylabel("density")
    ax.set_title("adjacent-document cosine, all sources")
    ax.legend()
    return _png(fig)


def chart_counts(title: str, counts: dict[str, dict[str, int]]) -> bytes | None:
    reasons = sorted({r for per in counts.values() for r in per})
    if not reasons:
        return None
    sources = sorted(counts)
    fig = _figure(8, 1.2 + 0.35 * len(sources))
    ax = fig.subplots()
    left = np.zeros(len(sources))
    for reason in reasons:
        values = np.array([counts[s].get(reason, 0) for s in sources], float)
        ax.barh(range(len(sources)), values, left=left, label=reason)
        left += values
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("records")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)


def chart_timings(timings: dict[str, float]) -> bytes:
    names = list(timings)
    fig = _figure(8, 1.0 + 0.3 * len(names))
    ax = fig.subplots()
    ax.barh(range(len(names)), [timings[n] for n in names], color="#2ca02c")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (last run of each stage)")
    ax.set_title("stage timings")
    return _png(fig)


def _utility_settings(utility_file: Path) -> dict:
    """The utility stage's settings (alpha, n_boot) from the cost.json beside its table, or {}."""
    try:
        cost = json.loads((utility_file.parent / "cost.json").read_text())
        settings = cost.get("settings") or {}
        return settings if isinstance(settings, dict) else {}
    except (OSError, ValueError):
        return {}


def build_report(out: str | Path, *, utility_path: str | Path | None = None, title: str = "mixweave run") -> str:
    """The HTML text of the report for the run folder ``out``."""
    out = Path(out)
    manifests = {name: read_manifest(out / name) for name in STAGE_ORDER if (out / name / "_manifest.json").is_file()}
    parts = [f"<h1>{html.escape(title)}</h1><p>run folder: <code>{html.escape(str(out.resolve()))}</code></p>"]

    stats_file = out / "count" / "stats.json"
    if stats_file.is_file():
        stats = json.loads(stats_file.read_text())
        rows = [[n, s["n_docs"], s["n_tokens"], round(s["n_bytes"] / 1e6, 2), s["n_quarantined"]]
                for n, s in sorted(stats["sources"].items())]
        parts.append("<h2>Sources</h2>" + _table(["source", "docs", "tokens", "MB", "quarantined"], rows))
        tok = stats.get("tokenizer", {})
        parts.append(f"<p>tokenizer: {html.escape(str(tok.get('name')))}, vocab {tok.get('vocab_size')}, "
                     f"sha256 <code>{html.escape(str(tok.get('sha256', ''))[:16])}…</code></p>")
    if "ingest" in manifests:
        drops = manifests["ingest"].get("drops", {})
        png = chart_counts("quarantined records by reason", drops)
        counts = manifests["ingest"]["counts"]
        parts.append(f"<h2>Quarantine</h2><p>input {counts.get('n_input', 0):,} = kept {counts.get('n_docs', 0):,} + "
                     f"quarantined {counts.get('n_quarantined', 0):,}</p>" + (_img(png, "quarantine") if png else "<p>nothing quarantined</p>"))

    utility_file = Path(utility_path) if utility_path else out / "utility" / "utility.parquet"
    table = None
    if utility_file.is_file():
        from ..data.utility_table import read_utility_table

        table = read_utility_table(utility_file)

    mixture_file = out / "mix" / "mixture.json"
    if mixture_file.is_file():
        from ..data.mixture_manifest import read_mixture_manifest

        mixture = read_mixture_manifest(mixture_file)
        method = mixture["method"]
        rows = [[s["name"], s["n_tokens"], s["weight"], s["target_tokens"], s["epochs"],
                 "-" if s["max_epochs"] is None else s["max_epochs"], s["binding"]] for s in mixture["sources"]]
        parts.append(f"<h2>Mixture: {html.escape(method['name'])}</h2><p>budget {mixture['budget_tokens']:,.0f} tokens, "
                     f"solver {html.escape(str(method['solver']))} ({html.escape(str(method['status']))}), "
                     f"seq_len {mixture['seq_len']}</p>" + _img(chart_mixture(mixture), "mixture weights and epochs")
                     + _table(["source", "tokens", "weight", "target tokens", "epochs", "cap", "binding"], rows))
        from .skills_report import skills_section, units_line

        parts.append(units_line(mixture))
        why = why_section(mixture, table)
        if why:
            parts.append(why)
        skills = skills_section(mixture)
        if skills:
            parts.append(skills)
        learned = learned_line(mixture)
        if learned:
            parts.append(learned)
        parts.append(variants_section(mixture, mixture_file.parent, manifests.get("export")))
        parts.append(phases_paragraph(mixture))
        parts.append(bts_section(mixture, mixture_file.parent))

    if table is not None:
        settings = _utility_settings(utility_file)
        caption = utility_interval_caption(table, 1.0 - float(settings.get("alpha") or 0.05), settings.get("n_boot"))
        parts.append("<h2>Utility</h2>" + _img(chart_utility(table), "utility heatmap")
                     + f'<p class="caption">{html.escape(caption)}</p>')

    if "order" in manifests:
        sources = sorted(manifests["order"].get("order", {}))
        png = chart_icp(out, sources)
        rows = []
        for s in sources:
            metrics_file = out / "pack" / "metrics" / f"{s}.json"
            m = json.loads(metrics_file.read_text()) if metrics_file.is_file() else manifests["order"]["order"][s]
            rows.append([s, m.get("n_docs"), m.get("mean_adjacent_cosine"), m.get("random_order_mean_adjacent_cosine"),
                         m.get("ratio_to_ceiling"), m.get("jump_rate"), m.get("window_pairwise_cosine_mean"),
                         m.get("n_windows")])
        parts.append("<h2>In-Context Pretraining order</h2>" + (_img(png, "adjacent cosine histogram") if png else "")
                     + _table(["source", "docs", "adjacent cos", "random order", "ratio to NN ceiling", "jump rate",
                               "in-window cos", "windows"], [[("-" if v is None else v) for v in r] for r in rows]))
    if "dedup" in manifests:
        d = manifests["dedup"]
        rows = [[s, e["n_docs"], e["removed"], e["pairs"]] for s, e in sorted(d.get("dedup", {}).items())]
        parts.append(f"<h2>Semantic dedup (cosine ≥ {d.get('threshold')})</h2>"
                     + _table(["source", "docs", "removed", "pairs"], rows))

    if "export" in manifests:
        coherence = coherence_section(manifests["export"])
        if coherence:
            parts.append(coherence)
    from .study import study_section  # the study stage's table and charts, when a study ran
    parts.append(study_section(out) or "")
    timings = {name: float(m.get("timings", {}).get("total_s", 0.0)) for name, m in manifests.items()}
    if timings:
        parts.append("<h2>Stage timings</h2>" + _img(chart_timings(timings), "stage timings"))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(out: str | Path, target: str | Path, **kwargs) -> Path:
    """Write the report atomically (temp file + rename)."""
    from ..data.manifest import write_text_atomic

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, build_report(out, **kwargs))
    return target
