"""GRPO arithmetic as pure functions: advantages, the token-level loss, the KL estimate.

No megatron here, so every formula is unit-tested on small tensors; torch is
imported only by the tensor functions, so the advantage arithmetic also runs
(and is tested) in sgtui's own venv, which has no torch.

- Advantages are group-normalised rewards: (r - mean_g) / (std_g + eps) over
  the rollouts of one prompt; a group whose rewards are all equal teaches
  nothing and gets advantage 0.
- The loss is the on-policy GRPO policy gradient, token-level (every
  completion token weighs the same, as in Dr. GRPO / DAPO):
      L = -sum_t A_i * logp_t / N_tokens + beta * KL
  With one optimizer update per batch the PPO ratio exp(logp - logp_old) is 1,
  so its gradient equals that of -A * ratio; this form is used because its
  value moves as the policy learns (the ratio form always reads -mean(A)),
  which makes "loss decreases on a fixed batch" observable.
- KL to the frozen base uses the k3 estimator
  exp(ref - logp) - (ref - logp) - 1 (non-negative, unbiased).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def group_advantages(rewards: list[float], groups: list[int], eps: float = 1e-6) -> list[float]:
    """(r - group mean) / (group std + eps), population std; 0 for groups without reward spread."""
    by: dict[int, list[float]] = {}
    for r, g in zip(rewards, groups):
        by.setdefault(g, []).append(r)
    stats = {}
    for g, rs in by.items():
        mean = sum(rs) / len(rs)
        std = (sum((r - mean) ** 2 for r in rs) / len(rs)) ** 0.5
        stats[g] = (mean, std)
    out = []
    for r, g in zip(rewards, groups):
        mean, std = stats[g]
        out.append(0.0 if std < eps else (r - mean) / (std + eps))
    return out


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference)."""
    d = ref_logp - logp
    return d.exp() - d - 1.0


@dataclass
class LossParts:
    loss: torch.Tensor  # scalar to backpropagate (already divided by total_tokens)
    pg: float
    kl: float
    tokens: int


def grpo_loss(logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, total_tokens: int,
              ref_logp: torch.Tensor | None = None, kl_coef: float = 0.0) -> LossParts:
    """Loss of one micro-batch, normalised by the token count of the whole step (so micro-batches add up).

    logp, mask, ref_logp: [b, t] (mask 1 on completion tokens); advantages: [b].
    """
    mask = mask.to(logp.dtype)
    denom = float(max(total_tokens, 1))
    pg = -(advantages[:, None].to(logp.dtype) * logp * mask).sum() / denom
    loss = pg
    kl_val = 0.0
    if ref_logp is not None and kl_coef > 0:
        kl = (kl_k3(logp, ref_logp.detach()) * mask).sum() / denom
        loss = loss + kl_coef * kl
        kl_val = float(kl.detach())
    return LossParts(loss=loss, pg=float(pg.detach()), kl=kl_val, tokens=int(mask.sum().item()))
