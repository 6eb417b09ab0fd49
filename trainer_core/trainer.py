"""The V-GRPO training loop: one iteration at a time, all of it visible here.

    theta_old <- theta
    rollout:   B prompts x G images with a deterministic ODE solver (no grad)
    score:     rewards -> group advantages
    pairs:     one set of (t, eps) per group, stratified over the shifted grid
    s_old:     surrogate (and x_hat_old when beta > 0) at theta_old (no grad)
    mu times:  s with grad on the same pairs -> ratio -> clipped objective -> AdamW step on LoRA

The trainer holds no files: the caller saves LoRA weights and `state_dict()`.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from trainer_core.adapters.base import DenoiserAdapter, PromptEmbeddings
from trainer_core.config import TrainConfig
from trainer_core.rewards.base import RewardMix
from trainer_core.vgrpo import draw_pairs, elbo_surrogate, vgrpo_loss, within_group_cv


@dataclass
class Rollout:
    """One iteration's samples and everything the gradient steps need, batch-aligned [B = groups * G]."""

    prompts: list[str]
    latents: torch.Tensor  # [B, C, H, W]
    images: np.ndarray  # uint8 [B, H, W, 3]
    embeddings: PromptEmbeddings
    scores: dict[str, np.ndarray]  # reward name -> [B]
    advantages: torch.Tensor  # [B]
    t: torch.Tensor  # [B, N_MC]
    eps: torch.Tensor  # [B, N_MC, C, H, W]
    surrogate_old: torch.Tensor  # [B]
    x_hat_old: torch.Tensor | None  # [B, N_MC, C, H, W], only when beta > 0


class PromptSource:
    """Prompts for rollouts: the shapes grammar's training sampler, or the lines of a file."""

    def __init__(self, spec: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lines: list[str] | None = None
        if spec != "train":
            from pathlib import Path

            path = Path(spec)
            if not path.is_file():
                raise ValueError(f"rollout.prompts: {spec!r} is neither 'train' nor an existing prompts file")
            self.lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not self.lines:
                raise ValueError(f"rollout.prompts: {spec} holds no prompts")

    def draw(self, n: int) -> list[str]:
        if self.lines is not None:
            return [self.rng.choice(self.lines) for _ in range(n)]
        from trainer_core.shapes.grammar import sample_spec

        return [sample_spec(self.rng).prompt for _ in range(n)]


class VGRPOTrainer:
    """Trains a LoRA on `adapter` to maximise `rewards` with V-GRPO."""

    def __init__(self, adapter: DenoiserAdapter, rewards: RewardMix, config: TrainConfig) -> None:
        self.adapter, self.rewards, self.config = adapter, rewards, config
        torch.manual_seed(config.seed)
        if adapter.lora_spec is None:
            adapter.add_lora(config.lora)
        self.parameters = adapter.lora_parameters()
        opt = config.optimizer
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=opt.learning_rate, betas=(opt.beta1, opt.beta2), weight_decay=opt.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.prompts = PromptSource(config.rollout.prompts, config.seed)
        self.iteration = 0
        self.autocast_bf16 = adapter.device.type == "cuda" and config.model.mixed_precision in ("auto", "bf16")

    # --- one iteration -----------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """Run one iteration; returns its metrics."""
        cfg = self.config
        times: dict[str, float] = {}
        started = time.perf_counter()
        with _timed(times, "rollout_s"):
            prompts = self.prompts.draw(cfg.rollout.prompts_per_iteration)
            latents, images, embeddings, prompt_per_image = self.rollout(prompts)
        with _timed(times, "reward_s"):
            scores = self.rewards.score(images, prompt_per_image)
            advantages = self.rewards.advantages(
                scores, cfg.rollout.group_size, cfg.vgrpo.advantage_eps, cfg.vgrpo.soft_clip_eta
            ).to(self.adapter.device)
        with _timed(times, "surrogate_old_s"):
            t, eps = draw_pairs(
                len(prompts),
                cfg.rollout.group_size,
                self.adapter.latent_shape,
                cfg.vgrpo,
                self.adapter.time_shift,
                self.generator,
            )
            t, eps = t.to(self.adapter.device), eps.to(self.adapter.device, self.adapter.dtype)
            surrogate_old, x_hat_old = self.surrogate(latents, embeddings, t, eps)
        rollout = Rollout(
            prompt_per_image,
            latents,
            images,
            embeddings,
            scores,
            advantages,
            t,
            eps,
            surrogate_old,
            x_hat_old,
        )
        with _timed(times, "train_s"):
            stats = [self.gradient_step(rollout) for _ in range(cfg.vgrpo.gradient_steps)]
        self.iteration += 1

        combined = self.rewards.combined(scores)
        n_images = len(prompt_per_image)
        metrics = {
            "iteration": self.iteration,
            "reward_mean": float(combined.mean()),
            "reward_std": float(combined.std()),
            **{f"reward_{name}": float(values.mean()) for name, values in scores.items()},
            "loss": float(np.mean([s["loss"] for s in stats])),
            "ratio_mean": float(np.mean([s["ratio_mean"] for s in stats])),
            "clip_fraction": float(np.mean([s["clip_fraction"] for s in stats])),
            "kl": float(np.mean([s["kl"] for s in stats])),
            "grad_norm": float(np.mean([s["grad_norm"] for s in stats])),
            "surrogate_cv_within_group": within_group_cv(surrogate_old.float().cpu(), cfg.rollout.group_size),
            "advantage_abs_mean": float(advantages.abs().mean()),
            "iteration_s": time.perf_counter() - started,
            **times,
        }
        metrics["images_per_s"] = n_images / metrics["iteration_s"]
        return metrics

    @torch.no_grad()
    def rollout(self, prompts: list[str]) -> tuple[torch.Tensor, np.ndarray, PromptEmbeddings, list[str]]:
        """G images per prompt with the configured ODE solver: (latents, uint8 images, embeddings, prompts)."""
        cfg = self.config.rollout
        self.adapter.denoiser.eval()
        embeddings = self.adapter.encode_prompts(prompts).repeat_interleave(cfg.group_size)
        prompt_per_image = [p for p in prompts for _ in range(cfg.group_size)]
        noise = torch.randn(len(prompt_per_image), *self.adapter.latent_shape, generator=self.generator)
        noise = noise.to(self.adapter.device, self.adapter.dtype)
        null = self.adapter.encode_prompts([""]) if cfg.guidance_scale != 1.0 else None  # once, not per chunk
        chunks = []
        for start in range(0, len(prompt_per_image), cfg.batch_size):
            part = slice(start, start + cfg.batch_size)
            with self._autocast():
                chunks.append(
                    self.adapter.sample(embeddings[part], noise[part], cfg.steps, cfg.solver, cfg.guidance_scale, null)
                )
        latents = torch.cat(chunks).to(self.adapter.dtype)
        return latents, self.adapter.decode(latents), embeddings, prompt_per_image

    def _chunks(self, n: int) -> list[slice]:
        """Slices of the batch with at most rollout.batch_size model inputs (images x N_MC) each."""
        per_chunk = max(1, self.config.rollout.batch_size // self.config.vgrpo.n_mc)
        return [slice(start, start + per_chunk) for start in range(0, n, per_chunk)]

    def _surrogate_chunk(
        self, latents: torch.Tensor, embeddings: PromptEmbeddings, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config.vgrpo
        expanded = embeddings.repeat_interleave(cfg.n_mc)  # one embedding per (image, pair)

        def velocity(z: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return self.adapter.velocity(z, tt, expanded).float()

        with self._autocast():
            return elbo_surrogate(
                velocity, latents.float(), t, eps.float(), cfg.parameterisation, cfg.adaptive_weighting
            )

    @torch.no_grad()
    def surrogate(
        self, latents: torch.Tensor, embeddings: PromptEmbeddings, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """s [B] at the current weights (theta_old), and x_hat when the beta penalty needs it."""
        keep_x_hat = self.config.vgrpo.beta > 0
        surrogates, x_hats = [], []
        for part in self._chunks(latents.shape[0]):
            s, x_hat = self._surrogate_chunk(latents[part], embeddings[part], t[part], eps[part])
            surrogates.append(s)
            if keep_x_hat:
                x_hats.append(x_hat)
        return torch.cat(surrogates), (torch.cat(x_hats) if keep_x_hat else None)

    def gradient_step(self, rollout: Rollout) -> dict[str, float]:
        """One AdamW step on the clipped objective, accumulated over chunks of the batch."""
        cfg = self.config
        self.adapter.denoiser.train()
        self.optimizer.zero_grad(set_to_none=True)
        n = rollout.latents.shape[0]
        totals = {"loss": 0.0, "ratio_mean": 0.0, "clip_fraction": 0.0, "kl": 0.0}
        for part in self._chunks(n):
            s, x_hat = self._surrogate_chunk(
                rollout.latents[part], rollout.embeddings[part], rollout.t[part], rollout.eps[part]
            )
            terms = vgrpo_loss(
                s,
                rollout.surrogate_old[part],
                rollout.advantages[part],
                cfg.vgrpo.clip_epsilon,
                x_hat if rollout.x_hat_old is not None else None,
                None if rollout.x_hat_old is None else rollout.x_hat_old[part],
                cfg.vgrpo.beta,
            )
            weight = s.shape[0] / n
            (terms.loss * weight).backward()
            totals["loss"] += float(terms.loss.detach()) * weight
            totals["ratio_mean"] += terms.ratio_mean * weight
            totals["clip_fraction"] += terms.clip_fraction * weight
            totals["kl"] += terms.kl * weight
        max_norm = cfg.optimizer.grad_clip if cfg.optimizer.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, max_norm))
        self.optimizer.step()
        self.adapter.denoiser.eval()
        return {**totals, "grad_norm": grad_norm}

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.autocast_bf16:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    # --- resume ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        """Optimizer, iteration and random states (the LoRA weights are saved separately)."""
        return {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "prompt_rng": self.prompts.rng.getstate(),  # a tuple of ints: loads with weights_only
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.iteration = int(state["iteration"])  # type: ignore[arg-type]
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
        self.prompts.rng.setstate(state["prompt_rng"])  # type: ignore[arg-type]
        torch.set_rng_state(state["torch_rng"])  # type: ignore[arg-type]


@contextlib.contextmanager
def _timed(times: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - started
