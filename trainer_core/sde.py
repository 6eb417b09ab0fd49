"""The stochastic sampler MDP-based baselines need (Flow-GRPO, MixGRPO): docs/method.md §8.

The probability-flow ODE dz = v dt is turned into an SDE with the same marginals,

    dz = [v + s_t^2 / (2t) * (z + (1 - t) v)] dt + s_t dw,    s_t = a * sqrt(t / (1 - t)),

and stepped with Euler-Maruyama from t to t_next < t (dt = t_next - t < 0). Every step is
Gaussian, so log pi(z_next | z) is exact and cheap; that is the likelihood those methods
optimise, one ratio per step. With a = 0 a step is exactly the ODE's Euler step.
"""

from __future__ import annotations

import math

import torch

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def sde_sigma(t: float, noise_level: float, t_cap: float) -> float:
    """s_t = a sqrt(t / (1 - t)), with t capped below 1 where s_t would be infinite."""
    t = min(t, t_cap)
    return noise_level * math.sqrt(t / (1 - t))


def sde_step_mean_std(
    z: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float, noise_level: float, t_cap: float
) -> tuple[torch.Tensor, float]:
    """Mean [B, ...] and scalar std of z_next given z under one Euler-Maruyama step."""
    if not t_next < t:
        raise ValueError(f"an SDE step runs backwards in time: need t_next < t, got {t_next} >= {t}")
    dt = t_next - t
    sigma = sde_sigma(t, noise_level, t_cap)
    drift = velocity + sigma**2 / (2 * t) * (z + (1 - t) * velocity)
    return z + drift * dt, sigma * math.sqrt(-dt)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(x; mean, std^2 I) per sample [B], averaged over dimensions (so it does not scale with
    resolution; the clip range of the ratio is calibrated for this)."""
    return (-((x - mean) ** 2) / (2 * std**2) - math.log(std) - _HALF_LOG_2PI).flatten(1).mean(1)


def mean_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: float) -> torch.Tensor:
    """KL between two Gaussians with one std, per sample [B], averaged over dimensions."""
    return ((mean - mean_ref) ** 2 / (2 * std**2)).flatten(1).mean(1)
