"""Deterministic ODE solvers for rectified flow, pluggable by name.

The flow runs from t = 1 (noise) to t = 0 (image) along dz/dt = v(z, t), with
z_t = (1 - t) x0 + t eps and x0_hat = z_t - t v. Every solver takes a batched
velocity function and a sigma grid and runs under `torch.no_grad`.

- `euler`  first order, K model evaluations.
- `heun`   second order (trapezoidal predictor-corrector), 2K - 1 evaluations
           (the last step ends at t = 0 with a plain Euler step).
- `dpmpp_2m` DPM-Solver++(2M): second-order multistep in data prediction,
           K evaluations; with alpha_t = 1 - t and sigma_t = t.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z [B, ...], t [B]) -> v [B, ...]
Solver = Callable[[VelocityFn, torch.Tensor, torch.Tensor], torch.Tensor]


def shift_sigmas(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's time shift: s t / (1 + (s - 1) t); shift > 1 spends more steps at high noise."""
    return shift * t / (1 + (shift - 1) * t)


def sigma_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """K + 1 decreasing times from 1 to 0 on the shifted grid, float64 for exact stepping."""
    if steps < 1:
        raise ValueError(f"steps: must be at least 1, got {steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def _at(t: float, z: torch.Tensor) -> torch.Tensor:
    return torch.full((z.shape[0],), t, dtype=z.dtype, device=z.device)


@torch.no_grad()
def euler(velocity: VelocityFn, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    z = noise
    for t, t_next in itertools.pairwise(sigmas.tolist()):
        z = z + (t_next - t) * velocity(z, _at(t, z))
    return z


@torch.no_grad()
def heun(velocity: VelocityFn, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    z = noise
    for t, t_next in itertools.pairwise(sigmas.tolist()):
        v = velocity(z, _at(t, z))
        z_euler = z + (t_next - t) * v
        if t_next == 0:  # the final step is plain Euler, as in Karras et al. (2022): one call fewer
            z = z_euler
        else:
            z = z + (t_next - t) * 0.5 * (v + velocity(z_euler, _at(t_next, z)))
    return z


def _log_snr(t: float) -> float:
    """lambda = log(alpha / sigma) = log((1 - t) / t); -inf at pure noise."""
    return math.log((1 - t) / t) if t < 1 else -math.inf


@torch.no_grad()
def dpmpp_2m(velocity: VelocityFn, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    z = noise
    previous_x0: torch.Tensor | None = None
    previous_h = math.inf
    times = sigmas.tolist()
    for t, t_next in itertools.pairwise(times):
        x0 = z - t * velocity(z, _at(t, z))
        if t_next == 0:
            return x0  # lower order at the end: the data prediction is the answer
        h = _log_snr(t_next) - _log_snr(t)  # inf on the first step from t = 1
        if previous_x0 is None or math.isinf(previous_h):
            d = x0
        else:
            half_inv_r = h / (2 * previous_h)
            d = (1 + half_inv_r) * x0 - half_inv_r * previous_x0
        z = (t_next / t) * z + (1 - t_next) * (1 - math.exp(-h)) * d
        previous_h, previous_x0 = h, x0
    return z


SOLVERS: dict[str, Solver] = {"euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m}
SOLVER_NFE: dict[str, Callable[[int], int]] = {
    "euler": lambda k: k,
    "heun": lambda k: 2 * k - 1,
    "dpmpp_2m": lambda k: k,
}


def get_solver(name: str) -> Solver:
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"solver: must be one of {', '.join(SOLVERS)}, got {name!r}") from None


def solve(
    velocity: VelocityFn, noise: torch.Tensor, steps: int, solver: str = "heun", shift: float = 1.0
) -> torch.Tensor:
    """Integrate from `noise` at t = 1 to an image at t = 0 with the named solver."""
    return get_solver(solver)(velocity, noise, sigma_grid(steps, shift))
