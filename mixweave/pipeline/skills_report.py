"""Report sections for skill-aware validation sets and byte budgets, from mixture.json alone.

Skills (Compute-Optimal Scaling of Skills, Roberts et al. 2025): the validation set's skill
composition (share of the benchmarks per skill, as the mixers count them) next to the target of
``mix.params.target_skills``, a warning when the two are far apart (total variation above
:data:`~mixweave.data.benchmarks.FAR_FROM_TARGET`), and the per-skill utility of each source and of
the mixture (mean of the raw utilities of the skill's benchmarks; the mixture's = sum_i w_i x the
source's). Bytes (Byte Latent Transformer): the unit solved and the budget in both units.
"""

from __future__ import annotations

import html
from typing import Any

from ..data.benchmarks import FAR_FROM_TARGET, skill_composition, total_variation


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def skill_utility(mixture: dict) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(skills, {source or 'mixture': {skill: mean raw utility of its benchmarks}})."""
    skills = (mixture["method"].get("params") or {}).get("benchmark_skills") or {}
    by_skill: dict[str, list[str]] = {}
    for bench, skill in skills.items():
        by_skill.setdefault(skill or "untagged", []).append(bench)
    names = sorted(by_skill)
    rows: dict[str, dict[str, float]] = {}
    for s in mixture["sources"]:
        u = s.get("utility") or {}
        rows[s["name"]] = {k: sum(u.get(b, 0.0) for b in by_skill[k]) / len(by_skill[k]) for k in names}
    rows["mixture"] = {k: sum(s["weight"] * rows[s["name"]][k] for s in mixture["sources"]) for k in names}
    return names, rows


def skills_section(mixture: dict) -> str | None:
    """HTML: composition vs target, the far-from-target warning, per-skill utility; None when the
    mixture used no utility (no benchmark_skills recorded)."""
    params = mixture["method"].get("params") or {}
    skills = params.get("benchmark_skills")
    if not skills:
        return None
    composition = skill_composition(skills)
    target = params.get("target_skills")
    rows = [[k, ", ".join(sorted(b for b, s in skills.items() if (s or "untagged") == k)), composition.get(k, 0.0),
             "-" if target is None else float(target.get(k, 0.0))]
            for k in sorted(set(composition) | set(target or {}))]
    text = ("<h2>Skills</h2><p>The validation set's skill composition (share of its benchmarks per skill) "
            + ("next to the target composition the mixer weighted the benchmarks by (mix.params.target_skills)."
               if target else "; no target composition set (every benchmark counts once).") + "</p>"
            + _table(["skill", "benchmarks", "validation share", "target share"], rows))
    if target:
        tv = total_variation(composition, target)
        if tv > FAR_FROM_TARGET:
            text += (f'<p class="warning">⚠ The validation set\'s skill composition is far from the target: total '
                     f"variation {tv:.2f} &gt; {FAR_FROM_TARGET} (Roberts et al. 2025: the composition shifts the "
                     "compute-optimal model size); the mixer reweighted the benchmarks, but consider adding "
                     "benchmarks of the under-represented skills.</p>")
        else:
            text += f"<p>Total variation between the validation and target compositions: {tv:.2f} (at most {FAR_FROM_TARGET}).</p>"
    names, utility = skill_utility(mixture)
    weights = {s["name"]: s["weight"] for s in mixture["sources"]}
    urows = [[n, weights.get(n, 1.0) if n != "mixture" else 1.0] + [utility[n][k] for k in names] for n in utility]
    text += ("<p>Per-skill utility: the mean of the raw utilities of the skill's benchmarks; the mixture row is "
             "the weighted sum over sources.</p>" + _table(["source", "weight"] + names, urows))
    return text


def units_line(mixture: dict) -> str:
    """One line: the unit the mixture was solved in and the budget in both units when known."""
    if mixture.get("budget_bytes") is None:
        return f"<p>solved in tokens; budget {mixture['budget_tokens']:,.0f} tokens (no bytes per token recorded)</p>"
    return (f"<p>solved in {html.escape(mixture['unit'])} (Byte Latent Transformer budgets: mix.unit); budget "
            f"{mixture['budget_tokens']:,.0f} tokens = {mixture['budget_bytes']:,.0f} bytes through each source's "
            "bytes per token</p>")
