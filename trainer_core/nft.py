"""DiffusionNFT's objective (docs/method.md §8): reinforcement on the forward process.

Rollouts come from any solver; only their clean images x0 enter the loss. For a noise level t and noise
eps, x_t = (1 - t) x0 + t eps, the trained velocity v and the sampling (old) policy's v_old define two
implicit policies,

    v+ = beta v + (1 - beta) v_old          v- = (1 + beta) v_old - beta v,

and the loss pulls v+ toward x0 where the image was good and v- toward x0 where it was bad:

    loss = [r ||x0+ - x0||^2 / w+ + (1 - r) ||x0- - x0||^2 / w-] / beta,     x0+- = x_t - t v+-,

with the optimality probability r = clip(A, -c, c) / (2c) + 1/2 and the adaptive weights w+- =
mean |x0+- - x0| (no gradient). Since v- mirrors v+ about v_old, a good image moves v toward the
flow-matching target and a bad one away from it, by how far r is from 1/2.
"""

from __future__ import annotations

import torch

#: floor of the adaptive weights (the reference's)
WEIGHT_FLOOR = 1e-5


def optimality_probability(advantages: torch.Tensor, advantage_clip: float) -> torch.Tensor:
    """r in [0, 1] per image: 1/2 at zero advantage, 1 at +advantage_clip and beyond."""
    return (advantages.clamp(-advantage_clip, advantage_clip) / advantage_clip / 2 + 0.5).clamp(0, 1)


def _adaptive_mse(x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, x0.ndim))
    with torch.no_grad():
        weight = (x0_hat.double() - x0.double()).abs().mean(dim=dims, keepdim=True).clamp_min(WEIGHT_FLOOR)
    return ((x0_hat - x0) ** 2 / weight.to(x0_hat.dtype)).mean(dim=dims)


def nft_loss(
    v: torch.Tensor,
    v_old: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    r: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-sample loss [B] for velocities [B, ...] at x_t, noise levels t [B] and optimality r [B]."""
    t = t.view(-1, *[1] * (x0.ndim - 1))
    v_old = v_old.detach()
    positive = beta * v + (1 - beta) * v_old
    negative = (1 + beta) * v_old - beta * v
    loss_positive = _adaptive_mse(x_t - t * positive, x0)
    loss_negative = _adaptive_mse(x_t - t * negative, x0)
    return (r * loss_positive + (1 - r) * loss_negative) / beta
