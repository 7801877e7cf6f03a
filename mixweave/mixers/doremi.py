"""DoReMi (Xie et al., NeurIPS 2023): domain weights from a group-DRO proxy, as pure numpy.

Algorithm. A *reference* model is trained on reference weights (token shares, or uniform); a
same-size *proxy* is then trained with group DRO: every step, for each domain i, the clipped excess
loss ``lambda_i = mean over the domain's tokens in the batch of max(l_proxy - l_ref, 0)`` (a domain
absent from the batch keeps its previous lambda, as the official trainer does), then the
exponentiated-gradient step ``log a' = log a + eta * lambda``, a softmax, and smoothing
``a = (1 - c) a' + c / k``. The proxy's loss weighs each token by ``a[domain] / q[domain]`` (q: the
sampling weights, uniform), normalised over tokens. The mixture is the *average* of ``a`` over the
updates. Official defaults (sangmichaelxie/doremi, ``doremiv1``): eta 1.0, c 1e-3, uniform q.

Cost: O(k + tokens) per step here; the models cost a reference run plus a proxy run with one extra
reference forward per step (FLOPs ~ 6 N T_ref + 8 N T_proxy). Trade-off: weights chase the domains
whose loss the proxy can still reduce relative to the reference (a minimax over domains), not any
downstream benchmark; they depend on proxy size and tokenizer (doremi issues #11, #15) and can turn
near one-hot with a small batch or a large eta (#5).
"""

from __future__ import annotations

import numpy as np

#: exponentiated-gradient step size (run_pile_doremi120M.sh: reweight_eta)
DEFAULT_ETA = 1.0
#: smoothing towards uniform, c (run_pile_doremi120M.sh: reweight_eps)
DEFAULT_SMOOTHING = 1e-3


def domain_excess(excess_sum: np.ndarray, n_tokens: np.ndarray, domain: np.ndarray, k: int,
                  previous: np.ndarray | None = None) -> np.ndarray:
    """Per-domain clipped excess loss lambda (length ``k``) from per-row sums.

    ``excess_sum[r]``: the sum over row r's tokens of ``max(l_proxy - l_ref, 0)`` (a row is one token
    or one window); ``n_tokens[r]`` its token count; ``domain[r]`` its domain index. Domains without
    a token in the rows keep ``previous`` (zeros when None).
    """
    excess_sum = np.asarray(excess_sum, dtype=np.float64)
    n_tokens = np.asarray(n_tokens, dtype=np.float64)
    domain = np.asarray(domain, dtype=np.int64)
    sums = np.bincount(domain, weights=excess_sum, minlength=k)[:k]
    counts = np.bincount(domain, weights=n_tokens, minlength=k)[:k]
    out = np.zeros(k) if previous is None else np.array(previous, dtype=np.float64)
    seen = counts > 0
    out[seen] = sums[seen] / counts[seen]
    return out


def update_domain_weights(alpha: np.ndarray, excess: np.ndarray, eta: float = DEFAULT_ETA,
                          smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """One exponentiated-gradient step: ``softmax(log alpha + eta * excess)``, then
    ``(1 - smoothing) * that + smoothing / k``."""
    alpha = np.asarray(alpha, dtype=np.float64)
    logits = np.log(alpha) + eta * np.asarray(excess, dtype=np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return (1.0 - smoothing) * p + smoothing / alpha.size


def average_weights(history: np.ndarray) -> np.ndarray:
    """The mean of the domain weights over the updates (rows of ``history``), renormalised."""
    history = np.asarray(history, dtype=np.float64)
    mean = history.mean(axis=0)
    return mean / mean.sum()


class DoReMiReweighter:
    """The stateful rule the group-DRO loop calls once per step: keeps the current weights, the last
    lambda per domain (for domains absent from a batch) and the running average of the weights."""

    def __init__(self, initial: np.ndarray, eta: float = DEFAULT_ETA, smoothing: float = DEFAULT_SMOOTHING):
        self.alpha = np.asarray(initial, dtype=np.float64) / float(np.sum(initial))
        self.k = self.alpha.size
        self.eta = float(eta)
        self.smoothing = float(smoothing)
        self.excess = np.zeros(self.k)
        self.history: list[np.ndarray] = []

    def __call__(self, excess_sum: np.ndarray, n_tokens: np.ndarray, domain: np.ndarray) -> np.ndarray:
        self.excess = domain_excess(excess_sum, n_tokens, domain, self.k, self.excess)
        self.alpha = update_domain_weights(self.alpha, self.excess, self.eta, self.smoothing)
        self.history.append(self.alpha.copy())
        return self.alpha

    @property
    def average(self) -> np.ndarray:
        return average_weights(np.stack(self.history)) if self.history else self.alpha.copy()
