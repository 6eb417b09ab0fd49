"""DiffusionNFT (`algorithm: diffusion-nft`), the forward-process baseline (docs/method.md §8).

The loop is GroupTrainer's. Rollouts come from the deterministic solver at the sampling policy's
weights (`old`, a lagging average of the trained LoRA); the old pass draws noise levels and noises per
image and evaluates v_old there (and the reference's velocity for the KL term); each gradient step is
`trainer_core.nft.nft_loss` on the same points, times advantage_clip as in the reference. After the
iteration's steps the old weights move toward the trained ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from trainer_core.adapters.base import DenoiserAdapter, PromptEmbeddings
from trainer_core.config import TrainConfig
from trainer_core.nft import nft_loss, optimality_probability
from trainer_core.rewards.base import RewardMix
from trainer_core.trainer import NO_ADVANTAGES, Generation, GroupTrainer
from trainer_core.vgrpo import stratified_timesteps


@dataclass
class NFTBatch:
    generation: Generation
    advantages: torch.Tensor  # [B]
    t: torch.Tensor  # [B, T]
    eps: torch.Tensor  # [B, T, C, H, W]
    v_old: torch.Tensor  # [B, T, C, H, W]
    v_ref: torch.Tensor | None  # [B, T, C, H, W] when kl_beta > 0
    steps_taken: int = 0


class DiffusionNFTTrainer(GroupTrainer):
    def __init__(self, adapter: DenoiserAdapter, rewards: RewardMix, config: TrainConfig) -> None:
        super().__init__(adapter, rewards, config)
        self.nft = config.nft
        self.old_weights = [p.detach().clone() for p in self.parameters]  # the sampling policy's LoRA
        self.optimiser_steps = 0

    @property
    def gradient_steps(self) -> int:
        return self.nft.gradient_steps

    @contextlib.contextmanager
    def sampling_policy(self) -> Iterator[None]:
        """The LoRA at the old weights for the duration (the trained ones are put back after)."""
        trained = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for param, old in zip(self.parameters, self.old_weights, strict=True):
                param.copy_(old)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, weights in zip(self.parameters, trained, strict=True):
                    param.copy_(weights)

    def generate(self, prompts: list[str]) -> tuple[Generation, None]:
        with self.sampling_policy():
            return self.ode_rollouts(prompts), None

    def shape_advantages(self, advantages: torch.Tensor) -> torch.Tensor:
        return advantages.clamp(-self.nft.advantage_clip, self.nft.advantage_clip)

    def _velocities(
        self, x0: torch.Tensor, embeddings: PromptEmbeddings, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """v at x_t = (1 - t) x0 + t eps for [B] images x [T] levels, and x_t, x0 and t, all flattened to
        [B T, ...]."""
        k = t.shape[1]
        x0 = x0.float().repeat_interleave(k, dim=0)
        t, eps = t.reshape(-1), eps.reshape(-1, *eps.shape[2:]).float()
        level = t.view(-1, *[1] * (x0.ndim - 1))
        x_t = (1 - level) * x0 + level * eps
        with self.autocast(), self.adapter.lora_merged():
            v = self.adapter.velocity(x_t.to(self.adapter.dtype), t, embeddings.repeat_interleave(k)).float()
        return v, x_t, x0, t

    @torch.no_grad()
    def _velocities_no_grad(
        self, x0: torch.Tensor, embeddings: PromptEmbeddings, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """v [B, T, ...] at the current weights, in chunks."""
        parts = []
        for part in self.batch_slices(x0.shape[0], t.shape[1]):
            v, *_ = self._velocities(x0[part], embeddings[part], t[part], eps[part])
            parts.append(v.view(-1, t.shape[1], *v.shape[1:]))
        return torch.cat(parts)

    def old_pass(self, generation: Generation, trace: None) -> NFTBatch:
        k, shape = self.nft.timesteps, self.adapter.latent_shape
        # drawn for the whole batch, this rank's rows kept: every rank's stream stays the same
        t = stratified_timesteps(self.batch_images, k, self.adapter.time_shift, self.generator)
        eps = torch.randn(self.batch_images, k, *shape, generator=self.generator)
        t = t[self.batch_rows].clamp(1e-4, 1 - 1e-4).to(self.adapter.device)
        eps = eps[self.batch_rows].to(self.adapter.device)
        x0, embeddings = generation.latents, generation.embeddings
        with self.sampling_policy():
            v_old = self._velocities_no_grad(x0, embeddings, t, eps)
        v_ref = None
        if self.nft.kl_beta > 0:
            with self.adapter.lora_disabled():
                v_ref = self._velocities_no_grad(x0, embeddings, t, eps)
        return NFTBatch(generation, NO_ADVANTAGES, t, eps, v_old, v_ref)

    def gradient_step(self, batch: NFTBatch) -> dict[str, float]:
        cfg = self.nft
        self.adapter.denoiser.train()
        self.optimizer.zero_grad(set_to_none=True)
        generation, k = batch.generation, cfg.timesteps
        n = self.batch_images  # chunks weighted by their share of the whole batch
        r_all = optimality_probability(batch.advantages, cfg.advantage_clip)
        totals = {"loss": 0.0, "kl": 0.0, "old_deviation": 0.0}
        for part in self.batch_slices(generation.latents.shape[0], k):
            v, x_t, x0, t = self._velocities(
                generation.latents[part], generation.embeddings[part], batch.t[part], batch.eps[part]
            )
            v_old = batch.v_old[part].reshape(v.shape)
            r = r_all[part].repeat_interleave(k)
            loss = nft_loss(v, v_old, x0, x_t, t, r, cfg.beta).mean() * cfg.advantage_clip
            kl = torch.zeros(())
            if batch.v_ref is not None:
                kl = ((v - batch.v_ref[part].reshape(v.shape)) ** 2).flatten(1).mean(1).mean()
                loss = loss + cfg.kl_beta * kl
            weight = generation.latents[part].shape[0] / n
            self.backward(loss * weight)
            totals["loss"] += float(loss.detach()) * weight
            totals["kl"] += float(kl.detach()) * weight
            totals["old_deviation"] += float(((v.detach() - v_old) ** 2).mean()) * weight
        grad_norm = self.optimizer_step()
        self.optimiser_steps += 1
        batch.steps_taken += 1
        if batch.steps_taken == self.gradient_steps:
            self._move_old_weights()
        self.adapter.denoiser.eval()
        return {**totals, "grad_norm": grad_norm}

    def _move_old_weights(self) -> None:
        decay = min(self.nft.old_decay_rate * self.optimiser_steps, self.nft.old_decay_max)
        with torch.no_grad():
            for old, param in zip(self.old_weights, self.parameters, strict=True):
                old.mul_(decay).add_(param.detach(), alpha=1 - decay)

    def select_trace(self, trace: None, images: torch.Tensor) -> None:
        return None

    def rollout_evaluations(self) -> int:
        return self.ode_rollout_evaluations()

    def training_evaluations(self, batch: NFTBatch) -> int:
        cfg = self.nft
        reference = cfg.timesteps if batch.v_ref is not None else 0
        return (cfg.timesteps + reference + 3 * cfg.gradient_steps * cfg.timesteps) * len(batch.generation.prompts)

    def state_dict(self) -> dict[str, object]:
        return {**super().state_dict(), "old_weights": self.old_weights, "optimiser_steps": self.optimiser_steps}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for old, saved in zip(self.old_weights, state["old_weights"], strict=True):  # type: ignore[call-overload]
                old.copy_(saved)
        self.optimiser_steps = int(state["optimiser_steps"])  # type: ignore[call-overload]
