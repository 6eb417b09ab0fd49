"""The GRPO training loop shared by every algorithm, and V-GRPO's part of it.

One iteration, for every algorithm:

    theta_old <- theta
    rollout:   B prompts x G images (no grad)
    score:     rewards -> group advantages
    old pass:  the likelihood terms at theta_old / the reference, once (no grad)
    mu times:  the algorithm's loss with grad -> AdamW step on the LoRA

V-GRPO (`VGRPOTrainer`): rollouts with a deterministic ODE solver; the old pass draws one set of
(t, eps) per group, stratified over the shifted grid, and computes s_old (and the penalty's
anchor x_hat when beta > 0), or leaves s_old to the first gradient step's forward pass, which runs
at theta_old on the same pairs; the loss is the clipped objective on one surrogate ratio per image.
The MDP baselines live in `trainer_core.mdp_trainer`.

Trainers hold no files: the caller saves LoRA weights and `state_dict()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer_core.adapters.base import DenoiserAdapter, PromptEmbeddings
from trainer_core.config import TrainConfig
from trainer_core.device_timing import DeviceIntervals
from trainer_core.distributed import World, full_tensor, shard
from trainer_core.prompt_source import PromptSource
from trainer_core.rewards.base import RewardMix
from trainer_core.samplers import SOLVER_NFE
from trainer_core.vgrpo import VGRPOConfig, draw_pairs, elbo_surrogate, soft_clip, vgrpo_loss, within_group_cv


@dataclass
class Generation:
    """One iteration's images, batch-aligned [B = groups * G], consecutive images sharing a prompt."""

    prompts: list[str]  # one per image
    latents: torch.Tensor  # [B, C, H, W]
    images: np.ndarray  # uint8 [B, H, W, 3]
    embeddings: PromptEmbeddings

    def select(self, images: torch.Tensor) -> Generation:
        """The images at these indices (whole groups, in order), with their prompts and embeddings."""
        return Generation(
            [self.prompts[i] for i in images.tolist()],
            self.latents[images.to(self.latents.device)],
            self.images[images.numpy()],
            self.embeddings[images.to(self.embeddings.states.device)],
        )


@dataclass
class SurrogateBatch:
    """What V-GRPO's gradient steps need: the images, advantages and the stored pairs."""

    generation: Generation
    advantages: torch.Tensor  # [B]
    t: torch.Tensor  # [B, N_MC]
    eps: torch.Tensor  # [B, N_MC, C, H, W]
    # [B]; None until the first gradient step fills it in when that step's forward pass serves as the old pass
    surrogate_old: torch.Tensor | None
    x_hat_anchor: torch.Tensor | None  # [B, N_MC, C, H, W] at theta_old or the reference, only when beta > 0


#: a batch's advantages from the old pass until the iteration has scored its images
NO_ADVANTAGES = torch.empty(0)

#: a group whose reward spread is below this counts as tied (every image scored the same)
TIE_SPREAD = 1e-6


class GroupTrainer(ABC):
    """Shared machinery: LoRA, optimiser, prompts, rewards, the iteration, metrics and resume state."""

    #: added to the group std of rewards when normalising advantages
    advantage_eps: float = 1e-4

    def __init__(self, adapter: DenoiserAdapter, rewards: RewardMix, config: TrainConfig) -> None:
        self.adapter, self.rewards, self.config = adapter, rewards, config
        torch.manual_seed(config.seed)
        if adapter.lora_spec is None:
            adapter.add_lora(config.lora)
        #: the processes this training runs on; this rank's rows of the batch and the batch's image count
        self.world = World.current()
        self.batch_rows, self.batch_images = slice(None), 0
        if config.resources.fsdp and self.world.size > 1 and not adapter.sharded:
            shard(adapter.denoiser, self.world)  # before the optimiser: it holds the sharded parameters
            adapter.sharded = True
        self.parameters = adapter.lora_parameters()
        opt = config.optimizer
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=opt.learning_rate, betas=(opt.beta1, opt.beta2), weight_decay=opt.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.prompts = PromptSource(config.rollout.prompts, config.seed)
        self.iteration = 0
        self.elapsed_fraction = 0.0  # of the run's time budget, as the current step was told
        self.backward_intervals = DeviceIntervals(adapter.device)  # device time in backward passes
        #: wait for the device before reading clocks (benchmarks on CUDA); costs overlap, so off in training
        self.synchronize = False
        self.autocast_bf16 = adapter.device.type == "cuda" and config.model.mixed_precision in ("auto", "bf16")

    # --- what each algorithm supplies ---------------------------------------------------------

    @property
    @abstractmethod
    def gradient_steps(self) -> int:
        """mu: optimiser steps per iteration on the same rollouts."""

    @abstractmethod
    def generate(self, prompts: list[str]) -> tuple[Generation, Any]:
        """G images per prompt (no grad), and whatever of the sampling the loss needs later."""

    @abstractmethod
    def shape_advantages(self, advantages: torch.Tensor) -> torch.Tensor:
        """The algorithm's treatment of group-normalised advantages (soft clip, clamp)."""

    @abstractmethod
    def old_pass(self, generation: Generation, trace: Any) -> Any:
        """Everything the gradient steps need that is computed once, at theta_old (no grad); a batch
        whose `advantages` the iteration fills in once the images are scored."""

    @abstractmethod
    def gradient_step(self, batch: Any) -> dict[str, float]:
        """One optimiser step; returns loss, ratio_mean, clip_fraction, kl and grad_norm."""

    @abstractmethod
    def select_trace(self, trace: Any, images: torch.Tensor) -> Any:
        """The part of `generate`'s trace that belongs to these images (rollout.candidate_prompts)."""

    @abstractmethod
    def rollout_evaluations(self) -> int:
        """NFE of generating one image."""

    @abstractmethod
    def training_evaluations(self, batch: Any) -> int:
        """NFE after the rollout over the batch's images, a backward pass counting as two forwards."""

    def diagnostics(self, batch: Any) -> dict[str, float]:
        """Algorithm-specific metrics of the iteration."""
        return {}

    # --- one iteration -----------------------------------------------------------------------

    def step(self, elapsed_fraction: float = 0.0) -> dict[str, float]:
        """Run one iteration; returns its metrics. `elapsed_fraction`: how much of the run's time budget
        is spent, which the learning-rate schedule follows when it is ahead of the iterations."""
        cfg = self.config
        self.elapsed_fraction = elapsed_fraction
        times: dict[str, float] = {}
        self.backward_intervals.take()
        started = time.perf_counter()
        group_size = cfg.rollout.group_size
        prompts = self.prompts.draw(cfg.rollout.prompts_rolled_out)  # the whole batch's, on every rank
        rolled_out = len(prompts) * group_size
        with _timed(times, "rollout_s", self.cuda_sync):
            generation, trace = self.generate(prompts)  # this rank's groups
        batch = None
        if not self.selects_images:
            # the old pass needs no rewards: queued on a GPU first, it runs while the host scores the images
            with _timed(times, "old_pass_s", self.cuda_sync):
                batch = self.old_pass(generation, trace)
        with _timed(times, "reward_s", self.cuda_sync):
            scores = self.world.gather(self.rewards.score(generation.images, generation.prompts))
            spread = self.rewards.group_spread(scores, group_size)
            self.prompts.observe(spread)
            rolled_out_scores = scores
            images = self.training_images(spread)
            if images is not None:
                local = self._select_rows(images)
                generation, trace = generation.select(local), self.select_trace(trace, local)
                scores = {name: values[images.numpy()] for name, values in scores.items()}
            advantages = self.rewards.advantages(scores, group_size, self.advantage_eps)
            advantages = self.shape_advantages(advantages).to(self.adapter.device)
            local_advantages = advantages[self.batch_rows]
        if batch is None:
            with _timed(times, "old_pass_s", self.cuda_sync):
                batch = self.old_pass(generation, trace)
        batch.advantages = local_advantages
        with _timed(times, "train_s", self.cuda_sync):
            learning_rate = self.set_learning_rate(elapsed_fraction)
            stats = [self._summed_over_ranks(self.gradient_step(batch)) for _ in range(self.gradient_steps)]
        self.iteration += 1

        # rewards over everything rolled out: the policy's quality, whatever the selection kept
        combined = self.rewards.combined(rolled_out_scores)
        metrics = {
            "iteration": self.iteration,
            "reward_mean": float(combined.mean()),
            "reward_std": float(combined.std()),
            **{f"reward_{name}": float(values.mean()) for name, values in rolled_out_scores.items()},
            **{f"score_s_{name}": seconds for name, seconds in self.rewards.seconds.items()},
            "tied_groups": float((spread < TIE_SPREAD).mean()),
            "trained_groups": self.batch_images // group_size,
            **{key: float(np.mean([s[key] for s in stats])) for key in stats[0]},
            **self.diagnostics(batch),
            **self.prompts.diagnostics(),
            "nfe": self.rollout_evaluations() * rolled_out
            + self.world.sum_floats({"nfe": self.training_evaluations(batch)})["nfe"],
            "advantage_abs_mean": float(advantages.abs().mean()),
            "learning_rate": learning_rate,
            "iteration_s": time.perf_counter() - started,
            "backward_s": self.backward_intervals.take(),
            **times,
        }
        metrics["images_per_s"] = rolled_out / metrics["iteration_s"]
        return metrics

    def _select_rows(self, images: torch.Tensor) -> torch.Tensor:
        """This rank's part of the trained images (global indices, whole groups in order), as indices into
        its own rows; the batch becomes the trained images."""
        rows = self.batch_rows
        start, stop = (rows.start or 0), (rows.stop if rows.stop is not None else self.batch_images)
        mine = (images >= start) & (images < stop)
        first = int((images < start).sum())
        self.batch_rows = slice(first, first + int(mine.sum()))
        self.batch_images = len(images)
        return images[mine] - start

    def _summed_over_ranks(self, stats: dict[str, float]) -> dict[str, float]:
        """A gradient step's loss terms (each rank's weighted by its share) summed to the whole batch's; the
        gradient norm is already the summed gradient's."""
        summed = self.world.sum_floats({k: v for k, v in stats.items() if k != "grad_norm"})
        return {**summed, "grad_norm": stats["grad_norm"]}

    @property
    def selects_images(self) -> bool:
        """Whether the rewards choose which rolled-out groups train (so the old pass must wait for them)."""
        rollout = self.config.rollout
        return rollout.prompts_rolled_out > rollout.prompts_per_iteration or rollout.drop_tied_groups

    def training_images(self, spread: np.ndarray) -> torch.Tensor | None:
        """Indices of the images that train, whole groups in rollout order, or None for all of them.

        With candidates, the prompts_per_iteration groups with the largest reward spread (ties go to
        the earlier group, so the choice is deterministic); with drop_tied_groups, of those only the
        groups whose rewards do not all tie, unless every one ties.
        """
        rollout = self.config.rollout
        groups = np.sort(np.argsort(-spread, kind="stable")[: rollout.prompts_per_iteration])
        untied = groups[spread[groups] >= TIE_SPREAD]
        if rollout.drop_tied_groups and len(untied):
            groups = untied
        if len(groups) == len(spread):
            return None
        return (torch.as_tensor(groups)[:, None] * rollout.group_size + torch.arange(rollout.group_size)).flatten()

    def set_learning_rate(self, elapsed_fraction: float = 0.0) -> float:
        """Put this iteration's scheduled learning rate into the optimiser; returns it."""
        opt = self.config.optimizer
        learning_rate = opt.learning_rate * opt.lr_factor(self.iteration, self.config.iterations, elapsed_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        return learning_rate

    def expand_prompts(self, prompts: list[str]) -> tuple[PromptEmbeddings, list[str], torch.Tensor]:
        """Embeddings and prompts repeated G times, and the rollouts' initial noise, of this rank's groups
        of the batch `prompts` (the noise is drawn for the whole batch, so every rank's stream stays the
        same). A new batch: this rank's rows of it are set here."""
        group_size = self.config.rollout.group_size
        self.batch_rows = self.world.rows(len(prompts), group_size)
        self.batch_images = len(prompts) * group_size
        rollout, shape = self.config.rollout, self.adapter.latent_shape
        if rollout.shared_noise:  # image j of every group from noise j; with same_noise_in_group, one for all
            distinct = 1 if rollout.same_noise_in_group else group_size
            group_noise = torch.randn(distinct, *shape, generator=self.generator)
            noise = group_noise.repeat(len(prompts) * group_size // len(group_noise), *[1] * len(shape))
        elif rollout.same_noise_in_group:
            noise = torch.randn(len(prompts), *shape, generator=self.generator).repeat_interleave(group_size, dim=0)
        else:
            noise = torch.randn(len(prompts) * group_size, *self.adapter.latent_shape, generator=self.generator)
        rows = self.batch_rows
        mine = prompts[(rows.start or 0) // group_size : (rows.stop or len(prompts) * group_size) // group_size]
        embeddings = self.adapter.encode_prompts(mine).repeat_interleave(group_size)
        prompt_per_image = [p for p in mine for _ in range(group_size)]
        return embeddings, prompt_per_image, noise[rows].to(self.adapter.device, self.adapter.dtype)

    @torch.no_grad()
    def ode_rollouts(self, prompts: list[str]) -> Generation:
        """G images per prompt from the rollout solver at the current weights (this rank's groups)."""
        cfg = self.config.rollout
        self.adapter.denoiser.eval()
        embeddings, prompt_per_image, noise = self.expand_prompts(prompts)
        null = self.adapter.encode_prompts([""]) if cfg.guidance_scale != 1.0 else None  # once, not per chunk
        chunks = []
        for part in self.batch_slices(len(prompt_per_image)):
            with self.autocast():
                chunks.append(
                    self.adapter.sample(embeddings[part], noise[part], cfg.steps, cfg.solver, cfg.guidance_scale, null)
                )
        latents = torch.cat(chunks).to(self.adapter.dtype)
        return Generation(prompt_per_image, latents, self.adapter.decode(latents), embeddings)

    def ode_rollout_evaluations(self) -> int:
        """NFE of one image of `ode_rollouts`."""
        rollout = self.config.rollout
        return self.guidance_passes * SOLVER_NFE[rollout.solver](rollout.steps)

    def batch_slices(self, n: int, inputs_per_item: int = 1) -> list[slice]:
        """Slices of n items with at most rollout.batch_size model inputs each."""
        per_chunk = max(1, self.config.rollout.batch_size // inputs_per_item)
        return [slice(start, start + per_chunk) for start in range(0, n, per_chunk)]

    @property
    def guidance_passes(self) -> int:
        """Model calls per denoiser evaluation: 2 under classifier-free guidance (conditional + empty prompt)."""
        return 2 if self.config.rollout.guidance_scale != 1.0 else 1

    @property
    def cuda_sync(self) -> bool:
        return self.synchronize and self.adapter.device.type == "cuda"

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), its device time reported as `backward_s`. FSDP averages sharded weights' gradients
        over the ranks: scaled by the rank count, the average is the sum the batch weighting needs."""
        with self.backward_intervals.interval():
            (loss * self.world.size if self.adapter.sharded else loss).backward()

    def optimizer_step(self) -> float:
        """Sum the accumulated gradient over the ranks, clip it, step AdamW; returns the gradient norm
        before clipping."""
        max_norm = self.config.optimizer.grad_clip if self.config.optimizer.grad_clip > 0 else math.inf
        if not self.adapter.sharded:  # FSDP has summed them already, into each rank's shard
            self.world.sum_gradients(self.parameters)
        grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(self.parameters, max_norm)))
        self.optimizer.step()
        return grad_norm

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
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
            "optimizer": self._optimizer_state(),
            "generator": self.generator.get_state(),
            "prompt_rng": self.prompts.rng.getstate(),  # a tuple of ints: loads with weights_only
            "prompt_deck": list(self.prompts.deck),
            "prompt_category_spread": dict(self.prompts.category_spread),
            "torch_rng": torch.get_rng_state(),
        }

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimiser's state; a sharded one gathered whole by every rank (by parameter name), so that a
        checkpoint does not depend on how many processes wrote it."""
        if not self.adapter.sharded:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.adapter.denoiser, self.optimizer, options=options)

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        if not self.adapter.sharded:
            self.optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(self.adapter.denoiser, self.optimizer, optim_state_dict=state, options=options)

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.iteration = int(state["iteration"])  # type: ignore[arg-type]
        self._load_optimizer_state(state["optimizer"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
        self.prompts.rng.setstate(state["prompt_rng"])  # type: ignore[arg-type]
        self.prompts.deck = list(state.get("prompt_deck", []))  # type: ignore[call-overload]
        self.prompts.category_spread = dict(state.get("prompt_category_spread", {}))  # type: ignore[call-overload]
        torch.set_rng_state(state["torch_rng"])  # type: ignore[arg-type]


class VGRPOTrainer(GroupTrainer):
    """V-GRPO: deterministic ODE rollouts, one ELBO-surrogate ratio per image (docs/method.md §3-6).

    With `algorithm: naive-elbo` the same loop runs the FPO-like ablation: independent uniform
    pairs, v-MSE, no normaliser (see `algorithm_vgrpo_config`).
    """

    def __init__(self, adapter: DenoiserAdapter, rewards: RewardMix, config: TrainConfig) -> None:
        super().__init__(adapter, rewards, config)
        self.vgrpo = algorithm_vgrpo_config(config)
        self.advantage_eps = self.vgrpo.advantage_eps

    @property
    def gradient_steps(self) -> int:
        return self.vgrpo.gradient_steps

    def generate(self, prompts: list[str]) -> tuple[Generation, None]:
        return self.ode_rollouts(prompts), None

    def shape_advantages(self, advantages: torch.Tensor) -> torch.Tensor:
        return soft_clip(advantages, self.vgrpo.soft_clip_eta)

    def old_pass(self, generation: Generation, trace: None) -> SurrogateBatch:
        t, eps = draw_pairs(
            self.batch_images // self.config.rollout.group_size,  # the whole batch's pairs, this rank's rows
            self.config.rollout.group_size,
            self.adapter.latent_shape,
            self.vgrpo,
            self.adapter.time_shift,
            self.generator,
        )
        t, eps = t[self.batch_rows].to(self.adapter.device), eps[self.batch_rows]
        eps = eps.to(self.adapter.device, self.adapter.dtype)
        surrogate_old, x_hat_anchor = None, None
        if not self.reuses_first_step:
            surrogate_old, x_hat_anchor = self.surrogate(generation.latents, generation.embeddings, t, eps)
        if self.vgrpo.beta > 0 and self.vgrpo.penalty_to == "reference":
            with self.adapter.lora_disabled():
                _, x_hat_anchor = self.surrogate(generation.latents, generation.embeddings, t, eps)
        return SurrogateBatch(generation, NO_ADVANTAGES, t, eps, surrogate_old, x_hat_anchor)

    @property
    def reuses_first_step(self) -> bool:
        """Whether s_old comes from the first gradient step (its forward must then be deterministic)."""
        return self.vgrpo.reuse_first_step and self.config.lora.dropout == 0

    def select_trace(self, trace: None, images: torch.Tensor) -> None:
        return None  # deterministic rollouts leave nothing beyond the final latents

    def rollout_evaluations(self) -> int:
        return self.ode_rollout_evaluations()

    def training_evaluations(self, batch: SurrogateBatch) -> int:
        cfg = self.vgrpo
        old = 0 if self.reuses_first_step else cfg.n_mc
        reference = cfg.n_mc if cfg.beta > 0 and cfg.penalty_to == "reference" else 0
        return (old + reference + 3 * cfg.gradient_steps * cfg.n_mc) * len(batch.generation.prompts)

    def diagnostics(self, batch: SurrogateBatch) -> dict[str, float]:
        assert batch.surrogate_old is not None, "diagnostics run after the gradient steps"
        surrogate_old = torch.as_tensor(self.world.gather({"s": batch.surrogate_old.float().cpu().numpy()})["s"])
        return {
            "surrogate_cv_within_group": within_group_cv(surrogate_old, self.config.rollout.group_size),
            # a steady fall would mean the LoRA is unlearning how to denoise its own samples
            "surrogate_mean": float(surrogate_old.mean()),
        }

    def _surrogate_chunk(
        self, latents: torch.Tensor, embeddings: PromptEmbeddings, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vgrpo
        expanded = embeddings.repeat_interleave(cfg.n_mc)  # one embedding per (image, pair)

        def velocity(z: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return self.adapter.velocity(z, tt, expanded).float()

        with self.autocast(), self.adapter.lora_merged():
            return elbo_surrogate(
                velocity, latents.float(), t, eps.float(), cfg.parameterisation, cfg.adaptive_weighting
            )

    @torch.no_grad()
    def surrogate(
        self, latents: torch.Tensor, embeddings: PromptEmbeddings, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """s [B] at the current weights (theta_old), and x_hat when the beta penalty needs it."""
        keep_x_hat = self.vgrpo.beta > 0
        surrogates, x_hats = [], []
        for part in self.batch_slices(latents.shape[0], self.vgrpo.n_mc):
            s, x_hat = self._surrogate_chunk(latents[part], embeddings[part], t[part], eps[part])
            surrogates.append(s)
            if keep_x_hat:
                x_hats.append(x_hat)
        return torch.cat(surrogates), (torch.cat(x_hats) if keep_x_hat else None)

    def gradient_step(self, batch: SurrogateBatch) -> dict[str, float]:
        """One AdamW step on the clipped objective, accumulated over chunks of the batch.

        When s_old is still missing this is the first step, at theta_old: its surrogates, detached,
        are s_old (and its x_hat the penalty's anchor when that is theta_old).
        """
        cfg = self.vgrpo
        self.adapter.denoiser.train()
        self.optimizer.zero_grad(set_to_none=True)
        generation = batch.generation
        n = self.batch_images  # each rank's chunks weighted by their share of the whole batch
        fill_old = batch.surrogate_old is None
        anchor_old = fill_old and cfg.beta > 0 and cfg.penalty_to == "old"
        olds: list[torch.Tensor] = []
        anchors: list[torch.Tensor] = []
        totals = {"loss": 0.0, "ratio_mean": 0.0, "ratio_abs_dev": 0.0, "clip_fraction": 0.0, "kl": 0.0}
        for part in self.batch_slices(generation.latents.shape[0], cfg.n_mc):
            s, x_hat = self._surrogate_chunk(
                generation.latents[part], generation.embeddings[part], batch.t[part], batch.eps[part]
            )
            if fill_old:
                olds.append(s.detach())
            if anchor_old:
                anchors.append(x_hat.detach())
            anchor = anchors[-1] if anchor_old else None if batch.x_hat_anchor is None else batch.x_hat_anchor[part]
            terms = vgrpo_loss(
                s,
                olds[-1] if fill_old else batch.surrogate_old[part],  # type: ignore[index]
                batch.advantages[part],
                cfg.clip_epsilon,
                x_hat if anchor is not None else None,
                anchor,
                cfg.beta,
            )
            weight = s.shape[0] / n
            self.backward(terms.loss * weight)
            totals["loss"] += float(terms.loss.detach()) * weight
            totals["ratio_mean"] += terms.ratio_mean * weight
            totals["ratio_abs_dev"] += terms.ratio_abs_dev * weight
            totals["clip_fraction"] += terms.clip_fraction * weight
            totals["kl"] += terms.kl * weight
        if fill_old:
            batch.surrogate_old = torch.cat(olds) if olds else torch.empty(0, device=self.adapter.device)
        if anchor_old:
            batch.x_hat_anchor = torch.cat(anchors) if anchors else None
        grad_norm = self.optimizer_step()
        self.adapter.denoiser.eval()
        return {**totals, "grad_norm": grad_norm}


def algorithm_vgrpo_config(config: TrainConfig) -> VGRPOConfig:
    """The V-GRPO settings the run uses: `config.vgrpo`, or for `naive-elbo` the same with every
    variance reduction off and the plain v-MSE (the FPO-like ablation, docs/method.md §8)."""
    if config.algorithm == "naive-elbo":
        return dataclasses.replace(
            config.vgrpo, pair_sharing="none", stratified=False, parameterisation="v", adaptive_weighting=False
        )
    return config.vgrpo


@contextlib.contextmanager
def _timed(times: dict[str, float], key: str, cuda_sync: bool = False) -> Iterator[None]:
    started = time.perf_counter()
    yield
    if cuda_sync:
        torch.cuda.synchronize()
    times[key] = times.get(key, 0.0) + time.perf_counter() - started
