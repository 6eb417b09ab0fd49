"""The MDP-based baselines: Flow-GRPO and MixGRPO (docs/method.md §8).

They share everything with V-GRPO but the likelihood: rollouts run the SDE of `trainer_core.sde`
(MixGRPO: only inside a sliding window of steps, the ODE elsewhere), every stochastic step
stores its Gaussian log-prob at theta_old, and the loss is a clipped ratio per step:

    rho_ij = exp(log p_theta(z_j+1 | z_j) - log p_old(z_j+1 | z_j))
    loss   = mean_j [ -mean_i min(rho_ij A_i, clip(rho_ij, 1 - eps, 1 + eps) A_i) + beta KL_j(theta || ref) ]

with advantages clamped to +-advantage_clip and the KL to the reference model (LoRA disabled)
in flow_grpo's form, |mean - mean_ref|^2 / (2 s_t^2) (`trainer_core.sde.reference_kl`). The
reference means are computed once per iteration in the old pass (the reference never changes),
gradients of all trained steps are accumulated into one optimiser step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainer_core.adapters.base import DenoiserAdapter, PromptEmbeddings
from trainer_core.config import FlowGRPOConfig, MixGRPOConfig, TrainConfig
from trainer_core.rewards.base import RewardMix
from trainer_core.samplers import sigma_grid
from trainer_core.sde import gaussian_log_prob, reference_kl, sde_sigma, sde_step_mean_std
from trainer_core.trainer import NO_ADVANTAGES, Generation, GroupTrainer
from trainer_core.vgrpo import clipped_objective, k3_kl


def sde_window(
    steps: int, iteration: int, algorithm: str, mix: MixGRPOConfig, iterations: int, elapsed_fraction: float = 0.0
) -> range:
    """Indices of the rollout steps that are stochastic (and trained) at `iteration` (0-based) of a run of
    `iterations`, `elapsed_fraction` of whose time budget is spent.

    Flow-GRPO: all of them. MixGRPO: `window_size` steps starting at `window_start`, moving
    `window_stride` steps later every `window_interval` iterations (0: as often as spreads the moves
    over the run, by iterations or by the time budget, whichever is further on) and holding once its
    start reaches `window_last_start` of the steps.
    """
    if algorithm != "mix-grpo":
        return range(steps)
    size = min(mix.window_size, steps)
    last = max(mix.window_start, min(steps - size, math.floor(mix.window_last_start * steps)))
    if mix.window_interval:
        moved = iteration // mix.window_interval
    else:
        positions = 1 + -(-(last - mix.window_start) // max(1, mix.window_stride))  # ceil: moves + 1
        # a run stopped by its time budget has no known length in iterations: its moves follow the clock
        moved = max(iteration // max(1, -(-iterations // positions)), math.floor(elapsed_fraction * positions))
    start = min(mix.window_start + mix.window_stride * moved, last)
    return range(start, start + size)


@dataclass
class Trajectory:
    """The sampling chain of one iteration, batch-aligned [B]."""

    states: torch.Tensor  # [K + 1, B, C, H, W], states[0] is the noise
    log_probs_old: torch.Tensor  # [K, B], zero on deterministic steps
    window: range  # the stochastic steps
    trained_steps: list[int]  # the steps the loss uses: the window, or a random part of it


@dataclass
class StepBatch:
    generation: Generation
    trajectory: Trajectory
    advantages: torch.Tensor  # [B]
    mean_ref: dict[int, torch.Tensor]  # step -> reference mean [B, C, H, W], only when beta > 0
    steps_taken: int = 0  # optimiser steps on this batch so far
    order: torch.Tensor | None = None  # this pass's shuffled rows, split into the minibatches


class FlowGRPOTrainer(GroupTrainer):
    """Flow-GRPO (`algorithm: flow-grpo`) and MixGRPO (`algorithm: mix-grpo`)."""

    def __init__(self, adapter: DenoiserAdapter, rewards: RewardMix, config: TrainConfig) -> None:
        super().__init__(adapter, rewards, config)
        self.flow: FlowGRPOConfig = config.flow_grpo
        self.sigmas = sigma_grid(config.rollout.steps, adapter.time_shift).tolist()
        self.t_cap = self.sigmas[1] if self.sigmas[1] < 1 else 1 - 1e-3
        guided = config.rollout.guidance_scale != 1.0
        self.null = adapter.encode_prompts([""]) if guided else None  # CFG's empty prompt, encoded once

    @property
    def gradient_steps(self) -> int:
        return self.flow.gradient_steps * self.flow.minibatches

    def shape_advantages(self, advantages: torch.Tensor) -> torch.Tensor:
        return advantages.clamp(-self.flow.advantage_clip, self.flow.advantage_clip)

    def step_mean_std(self, z: torch.Tensor, v: torch.Tensor, step: int) -> tuple[torch.Tensor, float]:
        t, t_next = self.sigmas[step], self.sigmas[step + 1]
        return sde_step_mean_std(z, v, t, t_next, self.flow.noise_level, self.t_cap)

    def _t(self, step: int, n: int) -> torch.Tensor:
        return torch.full((n,), self.sigmas[step], device=self.adapter.device)

    @torch.no_grad()
    def generate(self, prompts: list[str]) -> tuple[Generation, Trajectory]:
        cfg = self.config.rollout
        self.adapter.denoiser.eval()
        embeddings, prompt_per_image, noise = self.expand_prompts(prompts)
        window = sde_window(
            cfg.steps,
            self.iteration,
            self.config.algorithm,
            self.config.mix_grpo,
            self.config.iterations,
            self.elapsed_fraction,
        )
        trained = self._trained_steps(window)
        states = [noise.float()]
        log_probs = torch.zeros(cfg.steps, noise.shape[0], device=noise.device)
        z = noise.float()
        with self.autocast(), self.adapter.lora_merged():
            for step in range(cfg.steps):
                t, t_next = self.sigmas[step], self.sigmas[step + 1]
                v = torch.cat(
                    [self._velocity(z[part], step, embeddings[part]) for part in self.batch_slices(z.shape[0])]
                )
                if step in window:
                    mean, std = self.step_mean_std(z, v, step)
                    # drawn for the whole batch, this rank's rows kept: every rank's stream stays the same
                    whole = torch.randn(self.batch_images, *z.shape[1:], generator=self.generator)
                    z = mean + std * whole[self.batch_rows].to(z.device)
                    log_probs[step] = gaussian_log_prob(z, mean, std)
                else:
                    z = z + (t_next - t) * v  # the ODE's Euler step outside MixGRPO's window
                states.append(z)
        latents = z.to(self.adapter.dtype)
        generation = Generation(prompt_per_image, latents, self.adapter.decode(latents), embeddings)
        return generation, Trajectory(torch.stack(states), log_probs, window, trained)

    def _trained_steps(self, window: range) -> list[int]:
        """The window's steps, or a random `timestep_fraction` of them (at least one)."""
        steps = list(window)
        keep = max(1, round(self.flow.timestep_fraction * len(steps)))
        if keep == len(steps):
            return steps
        order = torch.randperm(len(steps), generator=self.generator)[:keep]
        return sorted(steps[i] for i in order.tolist())

    def _velocity(self, z: torch.Tensor, step: int, embeddings: PromptEmbeddings) -> torch.Tensor:
        """The (guided, when rollouts are) velocity at grid step `step`, in fp32."""
        with self.autocast():
            velocity = self.adapter.guided_velocity(embeddings, self.config.rollout.guidance_scale, self.null)
            return velocity(z.to(self.adapter.dtype), self._t(step, z.shape[0])).float()

    @torch.no_grad()
    def old_pass(self, generation: Generation, trace: Trajectory) -> StepBatch:
        """Reference means on the trained steps (the old log-probs came with the rollout)."""
        mean_ref: dict[int, torch.Tensor] = {}
        if self.flow.beta > 0:
            with self.adapter.lora_disabled():
                for step in trace.trained_steps:
                    z = trace.states[step]
                    v = torch.cat(
                        [
                            self._velocity(z[part], step, generation.embeddings[part])
                            for part in self.batch_slices(z.shape[0])
                        ]
                    )
                    mean_ref[step] = self.step_mean_std(z, v, step)[0]
        return StepBatch(generation, trace, NO_ADVANTAGES, mean_ref)

    def _minibatch(self, batch: StepBatch) -> tuple[torch.Tensor, int]:
        """This optimiser step's rows of this rank's batch, and the size of the whole minibatch across
        ranks: a new random split of the whole batch into `minibatches` at each pass (drawn for the whole
        batch, so every rank's random stream stays the same)."""
        k, local = self.flow.minibatches, batch.trajectory.states.shape[1]
        if k == 1:
            return torch.arange(local), self.batch_images
        if batch.steps_taken % k == 0:
            batch.order = torch.randperm(self.batch_images, generator=self.generator)
        assert batch.order is not None
        part = batch.order.tensor_split(k)[batch.steps_taken % k]
        start = self.batch_rows.start or 0
        mine = part[(part >= start) & (part < start + local)] - start
        return mine.sort().values, len(part)

    def gradient_step(self, batch: StepBatch) -> dict[str, float]:
        """Clipped per-step ratios plus the KL to the reference on one minibatch, accumulated over steps
        and chunks into one optimiser step."""
        cfg = self.flow
        self.adapter.denoiser.train()
        self.optimizer.zero_grad(set_to_none=True)
        trajectory, embeddings = batch.trajectory, batch.generation.embeddings
        rows, n = self._minibatch(batch)  # chunks are weighted by their share of the whole minibatch
        batch.steps_taken += 1
        steps = trajectory.trained_steps
        totals = {"loss": 0.0, "ratio_mean": 0.0, "ratio_abs_dev": 0.0, "clip_fraction": 0.0, "kl": 0.0}
        with self.adapter.lora_merged():  # fused: one call per adapted layer
            for step in steps:
                for chunk in self.batch_slices(len(rows)):
                    part = rows[chunk]
                    z, z_next = trajectory.states[step][part], trajectory.states[step + 1][part]
                    v = self._velocity(z, step, embeddings[part])
                    mean, std = self.step_mean_std(z, v, step)
                    log_ratio = gaussian_log_prob(z_next, mean, std) - trajectory.log_probs_old[step][part]
                    ratio = torch.exp(log_ratio)
                    objective, clip_fraction = clipped_objective(ratio, batch.advantages[part], cfg.clip_epsilon)
                    loss = -objective.mean()
                    if step in batch.mean_ref:
                        sigma = sde_sigma(self.sigmas[step], cfg.noise_level, self.t_cap)
                        kl = reference_kl(mean, batch.mean_ref[step][part], sigma).mean()
                        loss = loss + cfg.beta * kl
                    else:
                        kl = k3_kl(log_ratio)  # to theta_old
                    weight = z.shape[0] / n / len(steps)
                    self.backward(loss * weight)
                    totals["loss"] += float(loss.detach()) * weight
                    totals["ratio_mean"] += float(ratio.detach().mean()) * weight
                    totals["ratio_abs_dev"] += float((ratio.detach() - 1).abs().mean()) * weight
                    totals["clip_fraction"] += clip_fraction * weight
                    totals["kl"] += float(kl.detach()) * weight
        grad_norm = self.optimizer_step()
        self.adapter.denoiser.eval()
        return {**totals, "grad_norm": grad_norm}

    def select_trace(self, trace: Trajectory, images: torch.Tensor) -> Trajectory:
        index = images.to(trace.states.device)
        return Trajectory(trace.states[:, index], trace.log_probs_old[:, index], trace.window, trace.trained_steps)

    def rollout_evaluations(self) -> int:
        return self.guidance_passes * self.config.rollout.steps

    def training_evaluations(self, batch: StepBatch) -> int:
        trained = len(batch.trajectory.trained_steps)
        reference = trained if batch.mean_ref else 0
        per_image = self.guidance_passes * (reference + 3 * self.flow.gradient_steps * trained)
        return per_image * len(batch.generation.prompts)

    def diagnostics(self, batch: StepBatch) -> dict[str, float]:
        trajectory = batch.trajectory
        return {"window_start": float(trajectory.window.start), "trained_steps": float(len(trajectory.trained_steps))}
