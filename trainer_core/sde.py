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
    """s_t = a sqrt(t / (1 - t)); at t = 1, where that is infinite, the denominator takes t_cap (flow_grpo
    caps it at the grid's second sigma, and only in the denominator)."""
    return noise_level * math.sqrt(t / (1 - min(t, t_cap)))


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


def reference_kl(mean: torch.Tensor, mean_ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """Flow-GRPO's KL penalty per sample [B]: |mean - mean_ref|^2 / (2 s_t^2), averaged over dimensions.

    That is the KL between the two step Gaussians times |dt|: flow_grpo divides by the SDE's s_t^2, not
    by the step's variance s_t^2 |dt|, so its beta (0.04) means here what it means there. Dividing by
    the step's variance would make the same beta 1 / |dt| times stronger (10x on a 10-step grid)."""
    return ((mean - mean_ref) ** 2 / (2 * sigma**2)).flatten(1).mean(1)
