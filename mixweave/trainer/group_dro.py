"""Group DRO training of a proxy against a frozen reference model (DoReMi's step 2).

Each step draws ``batch_size`` windows through :class:`MixtureLoader` over a plan (DoReMi samples
uniformly over domains), computes the proxy's and the reference's per-token losses, hands the
per-window sums of the clipped excess loss ``max(l_proxy - l_ref, 0)`` with each window's domain to
``reweight`` (the domain-weight rule, e.g. :class:`mixweave.mixers.doremi.DoReMiReweighter`; the
trainer floor does not import the mixers), and descends on the per-token loss weighted by
``alpha[domain] / q[domain]`` normalised over tokens (q: the plan's sampling shares; the official
``doremiv1`` loss when q is uniform). Optimizer and schedule are the trainer's (AdamW, warmup +
cosine: :func:`mixweave.trainer.train.lr_at`). Deterministic on CPU for a given seed.

Cost per step: one proxy forward + backward and one reference forward over the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mixweave.errors import InputError
from mixweave.trainer.config import TrainConfig
from mixweave.trainer.dataset import MixtureLoader, PackDataset
from mixweave.trainer.model import GPT, GPTConfig, next_token_loss
from mixweave.trainer.plan import MixturePlan
from mixweave.trainer.train import _device, _optimizer, lr_at

log = logging.getLogger(__name__)

Reweight = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class GroupDROResult:
    model: GPT
    steps: int
    tokens: int  # training positions seen (windows x (window_tokens - 1))
    losses: list[float] = field(default_factory=list)  # the weighted loss per step
    excess: list[list[float]] = field(default_factory=list)  # per step, per domain (mean clipped excess)


def _token_losses(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return next_token_loss(model(batch[:, :-1]), batch[:, 1:], "none").view(batch.shape[0], -1)


def train_group_dro(plan: MixturePlan, dataset: PackDataset, reference: GPT, cfg: TrainConfig,
                    reweight: Reweight, *, on_step: Callable[[int, np.ndarray], None] | None = None
                    ) -> GroupDROResult:
    """Train a fresh proxy of ``cfg.depth`` for ``cfg.steps`` steps (module docstring). ``reweight``
    gets (excess_sum per window, tokens per window, domain index per window, in ``plan.names``
    order) and returns the new domain weights."""
    if not cfg.steps:
        raise InputError("group DRO needs a number of steps")
    device = _device(cfg.device)
    names = plan.names
    sampling = plan.target_windows.astype(np.float64)
    sampling /= sampling.sum()
    if np.any(sampling <= 0):
        raise InputError("group DRO samples every domain: the plan must draw at least one window of each source")
    # flat dataset index -> position of its source in plan order
    ds_offsets = dataset.offsets_for(plan)
    ds_counts = np.array([dataset.counts[dataset.names.index(n)] for n in names], dtype=np.int64)
    order = np.argsort(ds_offsets, kind="stable")
    starts = ds_offsets[order]

    def domains(idx: np.ndarray) -> np.ndarray:
        pos = order[np.searchsorted(starts, idx, side="right") - 1]
        if np.any(idx >= ds_offsets[pos] + ds_counts[pos]):
            raise InputError("a sampled window lies outside its source's windows")
        return pos

    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig.from_depth(cfg.depth, vocab_size=int(plan.tokenizer["vocab_size"]),
                                     seq_len=plan.seq_len)).to(device)
    reference = reference.to(device).eval()
    opt = _optimizer(model, cfg)
    steps = int(cfg.steps)
    warmup = min(cfg.warmup_steps if cfg.warmup_steps is not None else max(1, steps // 20), steps)
    per_step = cfg.batch_size
    loader = MixtureLoader(dataset, plan, cfg.batch_size, seed=cfg.data_seed,
                           num_positions=None if steps * per_step <= plan.total_windows else steps * per_step)
    ratio = torch.zeros(len(names), dtype=torch.float64)
    result = GroupDROResult(model=model, steps=steps, tokens=0)
    model.train()
    for step in range(1, steps + 1):
        lr = lr_at(step, cfg, steps, warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = loader.sampler.take(cfg.batch_size)
        dom = domains(np.asarray(idx, dtype=np.int64))
        batch = dataset.batch(np.asarray(idx, dtype=np.int64)).to(device)
        tok = _token_losses(model, batch)
        with torch.no_grad():
            ref = _token_losses(reference, batch)
            excess = (tok.detach() - ref).clamp_min(0).sum(dim=1).double().cpu().numpy()
        n_tok = np.full(len(idx), tok.shape[1], dtype=np.float64)
        alpha = np.asarray(reweight(excess, n_tok, dom), dtype=np.float64)
        ratio[:] = torch.from_numpy(alpha / sampling)
        w = ratio[torch.from_numpy(dom)].to(device=device, dtype=tok.dtype)  # one weight per window
        loss = (tok.sum(dim=1) * w).sum() / (w.sum() * tok.shape[1])
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        result.losses.append(float(loss.detach()))
        result.tokens += len(idx) * tok.shape[1]
        if on_step:
            on_step(step, alpha)
        if step % cfg.log_interval == 0 or step == steps:
            log.info("group DRO step %d/%d | loss %.4f | weights %s", step, steps, result.losses[-1],
                     " ".join(f"{n}={a:.3f}" for n, a in zip(names, alpha)))
    model.eval()
    return result
