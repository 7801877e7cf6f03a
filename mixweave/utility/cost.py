"""Compute accounting: the estimator's FLOPs against a training ablation's (the paper's 200x).

Inference costs about ``2 N T`` FLOPs for a model of ``N`` parameters reading or writing ``T``
tokens; training costs about ``6 N D`` for ``D`` training tokens (Kaplan et al. 2020 /
Hoffmann et al. 2022 rules of thumb; attention FLOPs ignored). The paper's footnote compares one
ablation run of 6e19 FLOPs with 2.1M tokens of Llama-70B inference (~3e17): 200x. We report both
sides and both ratios: against one ablation run and against one run per source.
"""

from __future__ import annotations

from typing import Any

DEFAULT_ABLATION_PARAMS = 1.0e9
CHINCHILLA_TOKENS_PER_PARAM = 20.0


def inference_flops(n_params: float | None, tokens: float) -> float | None:
    """``2 x N x tokens`` (None when the parameter count is unknown)."""
    return None if not n_params else 2.0 * float(n_params) * float(tokens)


def training_flops(n_params: float, tokens: float) -> float:
    """``6 x N x D``."""
    return 6.0 * float(n_params) * float(tokens)


def ablation_comparison(estimator_flops: float | None, *, n_sources: int,
                        ablation_params: float = DEFAULT_ABLATION_PARAMS,
                        ablation_tokens: float | None = None) -> dict[str, Any]:
    """FLOPs of training ablations over the same sources next to the estimator's.

    One ablation run trains an ``ablation_params`` model on ``ablation_tokens`` tokens (default
    Chinchilla-optimal, 20 per parameter); measuring every source takes ``n_sources`` runs."""
    tokens = float(ablation_tokens) if ablation_tokens else CHINCHILLA_TOKENS_PER_PARAM * float(ablation_params)
    per_run = training_flops(ablation_params, tokens)
    total = per_run * max(1, n_sources)

    def ratio(x: float) -> float | None:
        return None if not estimator_flops else x / estimator_flops

    return {"params": float(ablation_params), "tokens_per_run": tokens, "runs": int(max(1, n_sources)),
            "flops_per_run": per_run, "flops_total": total,
            "one_run_over_estimator": ratio(per_run), "all_runs_over_estimator": ratio(total),
            "formula": "6 x params x tokens per run; runs = one per source"}
