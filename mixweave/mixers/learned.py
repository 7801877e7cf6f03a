"""The learned mixing methods' drivers: proxy models trained on the pack's windows -> weights.

* :func:`doremi_weights` -- a reference model on the natural (token-share) or uniform mixture, then
  a same-size proxy trained with group DRO (:mod:`mixweave.trainer.group_dro`) under the DoReMi
  update (:mod:`mixweave.mixers.doremi`); the weights are the proxy's domain weights averaged over
  its steps.
* :func:`regmix_weights` -- ``n_proxies`` tiny models, each trained with the built-in trainer on
  one mixture sampled around the token shares (:mod:`mixweave.mixers.regmix`), a regressor from
  weights to the measured target loss, the average of the top-k predicted mixtures.

Both return the *pre-cap* weights and a record (runs, losses, steps, tokens, FLOPs); the mixing API
(``method: doremi|regmix`` with ``learned_weights``) then makes them feasible under the epoch caps
with :func:`feasible_under_caps`, the capped water-filling the other methods use. FLOPs are counted
as 6 x non-embedding parameters x training tokens per run, plus 2 x N x tokens for DoReMi's
reference forwards during the proxy run (evaluation forwards are not counted).

Runs are seeded: the same pack, params and seed give the same weights on CPU. Proxy folders
(metrics.jsonl, eval.json; checkpoints are removed once a run is scored) go under ``out_dir``
(the mix stage's ``proxies/``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mixweave.errors import ConfigError, InputError
from mixweave.mixers.capping import water_fill

log = logging.getLogger(__name__)

LEARNED_METHODS = ("doremi", "regmix")


@dataclass
class LearnedResult:
    weights: dict[str, float]  # pre-cap learned weights, source order
    record: dict[str, Any] = field(default_factory=dict)  # what mixture.json's learned block holds


def feasible_under_caps(weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """The learned weights made feasible under per-source weight caps (``E * n / B``, inf = none):
    capped water-filling in proportion to the learned weights, so uncapped sources keep their
    ratios. Sources the method gave zero weight stay at zero unless the others' caps cannot absorb
    the budget; then they are filled in proportion to their caps. Requires ``sum(caps) >= 1``."""
    w = np.asarray(weights, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.float64)
    pos = w > 0
    out = np.zeros_like(w)
    room = float(np.sum(caps[pos]))
    if room >= 1.0:
        out[pos] = water_fill(w[pos], caps[pos])
        return out
    out[pos] = caps[pos]
    rest = ~pos
    out[rest] = water_fill(np.maximum(caps[rest], 1e-300), caps[rest], total=1.0 - room)
    return out


def _drop_checkpoints(run_dir: Path) -> None:
    """A proxy's weights are not needed once it is scored: keep eval.json and metrics.jsonl, not
    megabytes of model and optimizer state per proxy in the mix artifact (the trainer's manifest,
    which lists the checkpoints, goes with them; mixture.json's learned block is the record)."""
    import shutil

    from mixweave.data.manifest import MANIFEST_NAME

    shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
    (Path(run_dir) / MANIFEST_NAME).unlink(missing_ok=True)


def check_learned(weights: np.ndarray, method: str) -> np.ndarray:
    """One ConfigError line when the proxies produced unusable weights (a diverged run gives NaN)."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ConfigError(f"{method}: the proxy runs gave no usable weights ({', '.join(f'{x:.3g}' for x in w)}): "
                          "a proxy's loss diverged; lower mix.params.lr or raise batch_size")
    return w / w.sum()


def _non_embedding(model) -> int:
    return int(model.num_params() - model.wte.weight.numel())


def _proxy_data(pack_dir: str | Path, names: Sequence[str]):
    from mixweave.data.manifest import manifest_sha256
    from mixweave.data.windows import windows_info
    from mixweave.trainer.dataset import PackDataset

    info = windows_info(pack_dir)
    missing = [n for n in names if n not in info.sources]
    if missing:
        raise InputError(f"the pack at {pack_dir} has no windows for {', '.join(missing)}; re-run the pack stage")
    return info, PackDataset(pack_dir, list(names)), manifest_sha256(pack_dir)


def mixture_plan(info, names: Sequence[str], weights: np.ndarray, total_windows: int, *, seed: int,
                 available: Mapping[str, int] | None = None, pack_sha256: str = ""):
    """A :class:`~mixweave.trainer.plan.MixturePlan` drawing ``total_windows`` windows in the shares
    ``weights`` (largest remainder), uncapped (a proxy may repeat a small source)."""
    from mixweave.trainer.plan import MixturePlan, SourcePlan, hamilton

    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    targets = hamilton(w * total_windows, total_windows)
    S = info.seq_len
    sources = []
    for name, weight, t in zip(names, w, targets):
        n = int(info.sources[name]["n_windows"]) if available is None else int(available[name])
        if t > 0 and n < 1:
            raise InputError(f"source {name} has no windows a proxy could train on")
        sources.append(SourcePlan(name=name, n_windows=n, requested_tokens=float(t * S), target_windows=int(t),
                                  weight=float(weight), max_epochs=None))
    return MixturePlan(seq_len=S, plus_one=info.plus_one, tokenizer=dict(info.tokenizer), seed=seed,
                       budget_tokens=float(total_windows * S), sources=tuple(sources), pack_sha256=pack_sha256)


def _train_config(params: Any, *, benchmarks: str | None = None, holdout_windows: int = 0):
    from mixweave.trainer.config import TrainConfig

    return TrainConfig(depth=params.depth, steps=params.steps, batch_size=params.batch_size, lr=params.lr,
                       seed=params.seed, data_seed=params.seed, holdout_windows=holdout_windows,
                       log_interval=max(1, params.steps // 4), device=params.device, compile=False,
                       benchmarks=benchmarks, resume=False)


def _weights_dict(names: Sequence[str], w: np.ndarray) -> dict[str, float]:
    return {n: float(x) for n, x in zip(names, w)}


def doremi_weights(pack_dir: str | Path, names: Sequence[str], n_tokens: Sequence[float], params: Any,
                   out_dir: str | Path) -> LearnedResult:
    """DoReMi's domain weights for ``names`` (module docstring); ``params``: a
    :class:`~mixweave.mixers.params.DoReMiParams`."""
    import dataclasses

    from mixweave.mixers.doremi import DoReMiReweighter
    from mixweave.trainer.group_dro import train_group_dro
    from mixweave.trainer.train import train_plan

    names = list(names)
    k = len(names)
    if k < 2:
        raise ConfigError("doremi needs at least two sources to weigh")
    out = Path(out_dir)
    info, dataset, pack_sha = _proxy_data(pack_dir, names)
    n = np.asarray(n_tokens, dtype=np.float64)
    ref_w = n / n.sum() if params.reference == "natural" else np.full(k, 1.0 / k)
    ref_steps = params.reference_steps or params.steps
    total = params.batch_size * ref_steps
    ref_plan = mixture_plan(info, names, ref_w, total, seed=params.seed, pack_sha256=pack_sha)
    ref_cfg = dataclasses.replace(_train_config(params), steps=ref_steps, log_interval=max(1, ref_steps // 4))
    log.info("doremi: reference model (depth %d, %s mixture, %d steps)", params.depth, params.reference, ref_steps)
    ref = train_plan(ref_plan, pack_dir, out / "reference", ref_cfg, dataset=dataset)
    _drop_checkpoints(out / "reference")
    reference = ref.model
    for p in reference.parameters():
        p.requires_grad_(False)
    sampling = np.full(k, 1.0 / k)
    proxy_plan = mixture_plan(info, names, sampling, params.batch_size * params.steps, seed=params.seed + 1,
                              pack_sha256=pack_sha)
    reweighter = DoReMiReweighter(sampling, eta=params.eta, smoothing=params.smoothing)
    trajectory = out / "proxy" / "domain_weights.jsonl"
    trajectory.parent.mkdir(parents=True, exist_ok=True)
    with open(trajectory, "w", encoding="utf-8") as fh:
        def on_step(step: int, alpha: np.ndarray) -> None:
            fh.write(json.dumps({"step": step, "weights": _weights_dict(names, alpha),
                                 "excess": _weights_dict(names, reweighter.excess)}) + "\n")

        log.info("doremi: group-DRO proxy (depth %d, %d steps, eta %g, smoothing %g)", params.depth, params.steps,
                 params.eta, params.smoothing)
        proxy = train_group_dro(proxy_plan, dataset, reference, _train_config(params), reweighter, on_step=on_step)
    weights = check_learned(reweighter.average, "doremi")
    n_params = _non_embedding(proxy.model)
    ref_flops = 6.0 * n_params * ref.tokens_seen
    proxy_flops = 6.0 * n_params * proxy.tokens + 2.0 * n_params * proxy.tokens
    record = {
        "method": "doremi",
        "weights": _weights_dict(names, weights),
        "model": {"depth": params.depth, "params": int(proxy.model.num_params()), "non_embedding_params": n_params,
                  "seq_len": info.seq_len},
        "reference": {"mixture": _weights_dict(names, ref_w), "kind": params.reference, "steps": ref.step,
                      "tokens": int(ref.tokens_seen), "final_loss": ref.losses[-1] if ref.losses else None,
                      "flops": ref_flops, "folder": "reference"},
        "proxy": {"sampling": _weights_dict(names, sampling), "steps": proxy.steps, "tokens": int(proxy.tokens),
                  "final_loss": proxy.losses[-1], "final_weights": _weights_dict(names, reweighter.alpha),
                  "flops": proxy_flops, "weights_per_step": "proxy/domain_weights.jsonl"},
        "flops": ref_flops + proxy_flops,
    }
    return LearnedResult(weights=record["weights"], record=record)


def _target_loss(ev: Mapping[str, Any], target: str, names: Sequence[str]) -> float:
    sources = ev.get("sources", {})
    benches = ev.get("benchmarks", {})
    if target == "heldout":
        values = [sources[n] for n in names if n in sources]
        if not values:
            raise ConfigError("regmix: target heldout needs held-out windows; every source is too small "
                              "(fewer than 10 windows) or holdout_windows is 0")
        return float(np.mean(values))
    if target == "benchmarks":
        if not benches:
            raise ConfigError("regmix: target benchmarks needs benchmarks (the run's benchmarks.jsonl) with examples")
        return float(np.mean([b["loss"] for b in benches.values()]))
    kind, _, name = target.partition(":")
    table = sources if kind == "heldout" else benches
    if name not in table:
        raise ConfigError(f"regmix: target {target!r} was not measured; measured: "
                          f"{', '.join(['heldout:' + s for s in sources] + ['benchmark:' + b for b in benches])}")
    value = table[name]
    return float(value["loss"] if isinstance(value, Mapping) else value)


def regmix_weights(pack_dir: str | Path, names: Sequence[str], n_tokens: Sequence[float], params: Any,
                   out_dir: str | Path, *, benchmarks: str | Path | None = None) -> LearnedResult:
    """RegMix's weights for ``names`` (module docstring); ``params``: a
    :class:`~mixweave.mixers.params.RegMixParams`; ``benchmarks``: the run's benchmarks.jsonl (the
    default target when given)."""
    from mixweave.mixers.regmix import fit_regressor, predict_and_average, sample_mixtures
    from mixweave.trainer.train import train_plan

    names = list(names)
    if len(names) < 2:
        raise ConfigError("regmix needs at least two sources to weigh")
    target = params.target
    if target == "auto":
        target = "benchmarks" if benchmarks else "heldout"
    if (target == "benchmarks" or target.startswith("benchmark:")) and not benchmarks:
        raise ConfigError(f"regmix: target {target} needs benchmarks: set the run's benchmarks (a benchmarks.jsonl)")
    out = Path(out_dir)
    info, dataset, pack_sha = _proxy_data(pack_dir, names)
    holdout = {n: min(params.holdout_windows, int(info.sources[n]["n_windows"]) // 10) for n in names}
    available = {n: int(info.sources[n]["n_windows"]) - holdout[n] for n in names}
    prior = np.asarray(n_tokens, dtype=np.float64)
    prior = prior / prior.sum()
    mixtures = sample_mixtures(prior, params.n_proxies, seed=params.seed, temperature=params.prior_temperature,
                               max_usage=params.max_usage)
    use_bench = str(benchmarks) if benchmarks and (target == "benchmarks" or target.startswith("benchmark:")) else None
    cfg = _train_config(params, benchmarks=use_bench, holdout_windows=params.holdout_windows)
    runs, losses, flops = [], [], 0.0
    n_params = None
    for i, w in enumerate(mixtures):
        plan = mixture_plan(info, names, w, params.batch_size * params.steps, seed=params.seed + i,
                            available=available, pack_sha256=pack_sha)
        folder = f"proxy-{i:03d}"
        log.info("regmix: proxy %d/%d on %s", i + 1, len(mixtures),
                 " ".join(f"{n}={x:.3f}" for n, x in zip(names, w)))
        result = train_plan(plan, pack_dir, out / folder, cfg, holdout=holdout, dataset=dataset)
        _drop_checkpoints(out / folder)
        if n_params is None:
            n_params = _non_embedding(result.model)
        loss = _target_loss(result.eval, target, names)
        run_flops = 6.0 * n_params * result.tokens_seen
        flops += run_flops
        losses.append(loss)
        runs.append({"folder": folder, "mixture": _weights_dict(names, w), "target_loss": loss, "steps": result.step,
                     "tokens": int(result.tokens_seen), "flops": run_flops,
                     "final_train_loss": result.losses[-1] if result.losses else None})
    model = fit_regressor(mixtures, np.asarray(losses), params.regressor, seed=params.seed)
    fitted = model.predict(mixtures)
    weights, search = predict_and_average(model, prior, n_simulate=params.n_simulate, top_k=params.top_k,
                                          seed=params.seed + 1, temperature=params.prior_temperature,
                                          max_usage=params.max_usage)
    weights = check_learned(weights, "regmix")
    y = np.asarray(losses)
    ss = float(np.sum((y - y.mean()) ** 2))
    record = {
        "method": "regmix",
        "weights": _weights_dict(names, weights),
        "target": target,
        "regressor": params.regressor,
        "model": {"depth": params.depth, "params": int(result.model.num_params()), "non_embedding_params": n_params,
                  "seq_len": info.seq_len},
        "prior": _weights_dict(names, prior),
        "proxies": runs,
        "fit": {"r2_train": 1.0 - float(np.sum((y - fitted) ** 2)) / ss if ss > 0 else None, **search},
        "holdout_windows": holdout,
        "flops": flops,
    }
    return LearnedResult(weights=record["weights"], record=record)


def learned_weights(method: str, pack_dir: str | Path, names: Sequence[str], n_tokens: Sequence[float], params: Any,
                    out_dir: str | Path, *, benchmarks: str | Path | None = None) -> LearnedResult:
    """Dispatch on ``method`` (doremi | regmix); ``params``: its typed params (a mapping is converted)."""
    from mixweave.data.typed import from_dict, to_plain
    from mixweave.mixers.params import METHOD_PARAMS, method_key

    key = method_key(method)
    if key not in LEARNED_METHODS:
        raise ConfigError(f"{method!r} is not a learned mixing method; use one of {', '.join(LEARNED_METHODS)}")
    if params is None or isinstance(params, Mapping):
        params = from_dict(METHOD_PARAMS[key], dict(params or {}), "mix.params")
    if key == "doremi":
        result = doremi_weights(pack_dir, names, n_tokens, params, out_dir)
    else:
        result = regmix_weights(pack_dir, names, n_tokens, params, out_dir, benchmarks=benchmarks)
    result.record["params"] = to_plain(params)  # every setting, defaults included
    return result
