"""V-GRPO: GRPO with an ELBO surrogate for the log-likelihood of a whole image.

Read top to bottom: the (t, eps) pairs and their variance reductions, the
surrogate s_i, the group advantages, the clipped objective. docs/method.md
§3-5 give the formulas; the names below are the method's own words.

Shapes: B images in n_groups groups of G, each with N_MC pairs; latents are
[B, C, H, W].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer_core.samplers import shift_sigmas

PARAMETERISATIONS = ("x", "v", "eps")
PAIR_SHARING = ("none", "group", "batch")
PENALTY_ANCHORS = ("old", "reference")

# (z_t [N, C, H, W], t [N]) -> velocity [N, C, H, W]; conditioning is bound by the caller.
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class VGRPOConfig:
    """The V-GRPO algorithm. Defaults are this project's tuned values on the shapes world.

    n_mc: (t, eps) pairs per image in the surrogate (4; paper 4, 10 for GenEval/OCR stages).
    parameterisation: the regression target of the surrogate, "x" (x0), "v" or "eps" (x; paper x:
        eps collapsed, v converged slower).
    adaptive_weighting: divide each pair's squared error by its detached mean absolute error (True; paper on).
    pair_sharing: draw pairs per image ("none"), per prompt group ("group") or once per minibatch
        ("batch") (group; paper's code: batch).
    stratified: one t per equal-probability stratum of the shifted sigma grid (True; paper on).
    t_min / t_max: range of the surrogate's t before the time shift (0.0 / 1.0).
    clip_epsilon: PPO ratio clip; 0 disables it (0.01; paper 6e-3..1e-2).
    soft_clip_eta: soft advantage clip eta * tanh(A / eta); 0 disables it (0; paper 3..5 when on-policy).
    beta: weight of the ||x_theta - x_anchor||^2 penalty (0; paper 0, 0.3 to keep an earlier skill).
    penalty_to: the anchor of the beta penalty: "old" (theta_old, the behaviour policy; no extra pass) or
        "reference" (the base model, LoRA disabled; one more no-grad pass per pair per iteration)
        (old; paper old).
    gradient_steps: mu, optimiser steps per iteration on the same rollouts (2; paper: several).
    advantage_eps: added to the group std of rewards (1e-4; paper 1e-4).
    reuse_first_step: take s_old (and the theta_old anchor of the penalty) from the first gradient
        step's forward pass, which runs at theta_old on the same pairs, instead of a separate no-grad
        pass before it: the same numbers for N_MC fewer forward passes per image. A LoRA with dropout
        always gets the separate pass (True; paper: a separate pass at rollout time).
    """

    n_mc: int = 4
    parameterisation: str = "x"
    adaptive_weighting: bool = True
    pair_sharing: str = "group"
    stratified: bool = True
    t_min: float = 0.0
    t_max: float = 1.0
    clip_epsilon: float = 0.01
    soft_clip_eta: float = 0.0
    beta: float = 0.0
    penalty_to: str = "old"
    gradient_steps: int = 2
    advantage_eps: float = 1e-4
    reuse_first_step: bool = True

    def __post_init__(self) -> None:
        if self.n_mc < 1:
            raise ValueError(f"vgrpo.n_mc: must be at least 1, got {self.n_mc}")
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(
                f"vgrpo.parameterisation: must be one of {', '.join(PARAMETERISATIONS)}, got {self.parameterisation!r}"
            )
        if self.pair_sharing not in PAIR_SHARING:
            raise ValueError(f"vgrpo.pair_sharing: must be one of {', '.join(PAIR_SHARING)}, got {self.pair_sharing!r}")
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"vgrpo.t_min: must be in [0, 1), got {self.t_min}")
        if not self.t_min < self.t_max <= 1.0:
            raise ValueError(f"vgrpo.t_max: must be above t_min ({self.t_min}) and at most 1, got {self.t_max}")
        for name in ("clip_epsilon", "soft_clip_eta", "beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"vgrpo.{name}: must be non-negative, got {getattr(self, name)}")
        if self.penalty_to not in PENALTY_ANCHORS:
            raise ValueError(f"vgrpo.penalty_to: must be one of {', '.join(PENALTY_ANCHORS)}, got {self.penalty_to!r}")
        if self.gradient_steps < 1:
            raise ValueError(f"vgrpo.gradient_steps: must be at least 1, got {self.gradient_steps}")
        if self.advantage_eps <= 0:
            raise ValueError(f"vgrpo.advantage_eps: must be positive, got {self.advantage_eps}")


# --- 1. The (t, eps) pairs, with group sharing and stratification -------------------------------


def stratified_timesteps(
    n: int, n_mc: int, shift: float, generator: torch.Generator, t_min: float = 0.0, t_max: float = 1.0
) -> torch.Tensor:
    """[n, n_mc] times: the j-th drawn uniformly from the j-th of n_mc equal strata of [t_min, t_max],
    then time-shifted, so the strata are equal chunks of the shifted sampling grid."""
    u = (torch.arange(n_mc, dtype=torch.float64) + torch.rand(n, n_mc, generator=generator, dtype=torch.float64)) / n_mc
    return shift_sigmas(t_min + (t_max - t_min) * u, shift).float()


def uniform_timesteps(
    n: int, n_mc: int, shift: float, generator: torch.Generator, t_min: float = 0.0, t_max: float = 1.0
) -> torch.Tensor:
    """[n, n_mc] independent times, uniform in [t_min, t_max] before the time shift."""
    u = torch.rand(n, n_mc, generator=generator, dtype=torch.float64)
    return shift_sigmas(t_min + (t_max - t_min) * u, shift).float()


def draw_pairs(
    n_groups: int,
    group_size: int,
    latent_shape: tuple[int, ...],
    config: VGRPOConfig,
    shift: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Times [B, N_MC] and noises [B, N_MC, *latent_shape] for B = n_groups * group_size images.

    With group sharing every image of a group gets the same pairs, so the
    pair noise is common to the group and cancels in its advantage-weighted sum.
    """
    draws = {"none": n_groups * group_size, "group": n_groups, "batch": 1}[config.pair_sharing]
    timesteps = stratified_timesteps if config.stratified else uniform_timesteps
    t = timesteps(draws, config.n_mc, shift, generator, config.t_min, config.t_max)  # [draws, N_MC]
    eps = torch.randn(draws, config.n_mc, *latent_shape, generator=generator)  # [draws, N_MC, C, H, W]
    repeat = n_groups * group_size // draws
    return t.repeat_interleave(repeat, dim=0), eps.repeat_interleave(repeat, dim=0)


# --- 2. The surrogate log-likelihood ------------------------------------------------------------


def elbo_surrogate(
    velocity: VelocityFn,
    images: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    parameterisation: str = "x",
    adaptive_weighting: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """s_i = -(1/N_MC) sum_j l_ij, the stand-in for log pi(o_i | c), and x_hat [B, N_MC, C, H, W].

    l_ij = mean_d (pred - target)^2 / stopgrad(mean_d |pred - target|) with adaptive weighting, else
    the plain mean squared error; pred / target are x_hat / o, v_hat / (eps - o) or eps_hat / eps.
    One batched model call over all B * N_MC noised images.
    """
    b, n_mc = t.shape
    o = images.unsqueeze(1)  # [B, 1, C, H, W]
    tb = t.view(b, n_mc, *([1] * (images.dim() - 1)))  # [B, N_MC, 1, 1, 1]
    z = (1 - tb) * o + tb * eps  # [B, N_MC, C, H, W]
    v = velocity(z.flatten(0, 1), t.flatten()).view_as(z)
    x_hat = z - tb * v
    if parameterisation == "x":
        error = x_hat - o
    elif parameterisation == "v":
        error = v - (eps - o)
    elif parameterisation == "eps":
        error = (z + (1 - tb) * v) - eps
    else:
        raise ValueError(f"parameterisation: must be one of {', '.join(PARAMETERISATIONS)}, got {parameterisation!r}")
    squared = error.pow(2).flatten(2).mean(-1)  # [B, N_MC]
    if adaptive_weighting:
        squared = squared / error.detach().abs().flatten(2).mean(-1).clamp_min(1e-8)
    return -squared.mean(-1), x_hat


# --- 3. Advantages and the objective ------------------------------------------------------------


ADVANTAGE_STD_SCOPES = ("group", "batch")


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    eps: float = 1e-4,
    soft_clip_eta: float = 0.0,
    std_scope: str = "group",
) -> torch.Tensor:
    """(r - mean_group r) / (std r + eps) for rewards [B] in consecutive groups; optional eta * tanh(A / eta).

    std_scope "group" divides by each group's std (GRPO); "batch" by the std of the centred rewards of
    the whole batch, so a group whose images barely differ keeps small advantages instead of having
    its tiny differences blown up to unit scale.
    """
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    if std_scope == "group":
        std = grouped.std(1, unbiased=False, keepdim=True)
    elif std_scope == "batch":
        std = centred.pow(2).mean().sqrt()
    else:
        raise ValueError(f"std_scope: must be one of {', '.join(ADVANTAGE_STD_SCOPES)}, got {std_scope!r}")
    return soft_clip((centred / (std + eps)).flatten(), soft_clip_eta)


def soft_clip(advantages: torch.Tensor, eta: float) -> torch.Tensor:
    """eta * tanh(A / eta): bounded by eta, the identity near 0; eta = 0 leaves A unchanged."""
    return eta * torch.tanh(advantages / eta) if eta > 0 else advantages


def clipped_objective(ratio: torch.Tensor, advantages: torch.Tensor, clip_epsilon: float) -> tuple[torch.Tensor, float]:
    """PPO's min(rho A, clip(rho, 1 - eps, 1 + eps) A) per element, and the share of ratios outside the
    clip range; clip_epsilon = 0 leaves rho unclipped. V-GRPO has one ratio per image, the MDP baselines
    one per image and step."""
    unclipped = ratio * advantages
    if clip_epsilon <= 0:
        return unclipped, 0.0
    clipped = ratio.clamp(1 - clip_epsilon, 1 + clip_epsilon) * advantages
    return torch.minimum(unclipped, clipped), float(((ratio.detach() - 1).abs() > clip_epsilon).float().mean())


def k3_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """The k3 estimate of KL(theta_old || theta), mean(rho - 1 - log rho): unbiased, never negative."""
    log_ratio = log_ratio.detach()
    return (log_ratio.exp() - 1 - log_ratio).mean()


@dataclass(frozen=True)
class LossTerms:
    loss: torch.Tensor
    ratio_mean: float
    clip_fraction: float
    kl: float
    ratio_abs_dev: float = 0.0  # mean |rho - 1|: how far the step has moved the ratios


def vgrpo_loss(
    surrogate: torch.Tensor,
    surrogate_old: torch.Tensor,
    advantages: torch.Tensor,
    clip_epsilon: float,
    x_hat: torch.Tensor | None = None,
    x_hat_anchor: torch.Tensor | None = None,
    beta: float = 0.0,
) -> LossTerms:
    """-J with J = mean min(rho A, clip(rho, 1 - eps, 1 + eps) A) - beta mean ||x_hat - x_hat_anchor||^2.

    rho_i = exp(s_i - s_i_old): one ratio per image. clip_epsilon = 0 leaves rho unclipped. `kl` is the
    penalty when x_hat_anchor is given, else the k3 estimate mean(rho - 1 - log rho).
    """
    ratio = torch.exp(surrogate - surrogate_old)
    objective, clip_fraction = clipped_objective(ratio, advantages, clip_epsilon)
    if x_hat is not None and x_hat_anchor is not None:
        penalty = (x_hat - x_hat_anchor).pow(2).mean()  # per element, so beta does not scale with resolution
        loss = -objective.mean() + beta * penalty
        kl = float(penalty.detach())
    else:
        loss = -objective.mean()
        kl = float(k3_kl(surrogate - surrogate_old))  # without the penalty, estimated from the ratios
    ratio = ratio.detach()
    return LossTerms(loss, float(ratio.mean()), clip_fraction, kl, float((ratio - 1).abs().mean()))


def within_group_cv(surrogate: torch.Tensor, group_size: int) -> float:
    """Mean over groups of std / |mean| of the surrogate: how noisy it is among a group's images."""
    grouped = surrogate.detach().view(-1, group_size)
    cv = grouped.std(1, unbiased=False) / grouped.mean(1).abs().clamp_min(1e-8)
    return float(cv.mean())
