"""A compact GPT sized by one ``depth`` dial.

Pre-norm decoder: RMSNorm -> causal self-attention (rotary position embeddings on q and k,
``scaled_dot_product_attention``, which picks flash/memory-efficient kernels on CUDA) -> residual;
RMSNorm -> MLP (4x, GELU) -> residual; final RMSNorm; logits through the tied token embedding.
No biases, no dropout (deterministic on CPU). The embedding is padded to a multiple of 64 rows for
fast matmuls; padded ids are never targets.

``depth`` sets everything: ``n_layer = depth``, ``d_model = 64 * depth``, ``n_head = depth``
(head dim 64). depth 12 with the GPT-2 vocabulary is GPT-2 small (124M parameters).

FLOPs per token (for MFU and FLOPs budgets): ``6 * params + 12 * n_layer * d_model * seq_len``
(forward + backward; the attention term counts the score and value matmuls, PaLM appendix B).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mixweave.errors import ConfigError


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    seq_len: int
    n_layer: int
    n_head: int
    d_model: int
    mlp_ratio: int = 4
    rope_theta: float = 10000.0

    @classmethod
    def from_depth(cls, depth: int, *, vocab_size: int, seq_len: int) -> GPTConfig:
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"depth must be an integer >= 1, got {depth!r}")
        return cls(vocab_size=int(vocab_size), seq_len=int(seq_len), n_layer=depth, n_head=depth, d_model=64 * depth)

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab_size // 64) * 64

    def to_dict(self) -> dict:
        return asdict(self)


def rope_cache(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the head dimension; x: [B, H, T, D]."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.out(F.gelu(self.fc(self.norm2(x))))


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` ``[B, T, V]`` (upcast to fp32) against ``targets`` ``[B, T]``; targets
    of -100 are ignored. ``reduction`` as in ``F.cross_entropy`` (``none``: ``[B * T]``)."""
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction,
                           ignore_index=-100)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model)
        cos, sin = rope_cache(cfg.seq_len + 1, cfg.d_model // cfg.n_head, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for block in self.blocks:  # scaled residual projections (GPT-2)
            for proj in (block.attn.proj, block.out):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The final normed hidden states ``[B, T, d_model]`` for token ids ``[B, T]`` (T <= seq_len + 1)."""
        t = idx.shape[1]
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, padded_vocab]`` for token ids ``[B, T]`` (T <= seq_len + 1); with ``targets``
        ``[B, T]``, their mean next-token cross-entropy (fp32) instead. Inside ``forward`` the loss is
        compiled with the model (the trainer compiles ``forward``), so the head's ``[B, T, V]`` fp32
        upcast, log-softmax and their backward fuse rather than each crossing memory in eager kernels."""
        logits = F.linear(self.hidden(idx), self.wte.weight)
        return logits if targets is None else next_token_loss(logits, targets)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return next_token_loss(self(idx), targets, reduction)

    def scored_nll(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-token NLL ``[n]`` (float32) at the ``n`` positions whose target is not -100, in row-major
        order. The tied LM head (``d_model x padded_vocab`` per position, most of a small model's FLOPs and
        a ``[B, T, vocab]`` logits tensor) runs on those positions only: scoring a short answer after a
        long prompt costs the answer's positions, not the window's. Equals ``loss(idx, targets,
        reduction="none")`` at those positions up to float rounding."""
        keep = targets != -100
        logits = F.linear(self.hidden(idx)[keep], self.wte.weight)
        return F.cross_entropy(logits.float(), targets[keep], reduction="none")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        s = self.cfg.seq_len if seq_len is None else seq_len
        return 6.0 * self.num_params() + 12.0 * self.cfg.n_layer * self.cfg.d_model * s
