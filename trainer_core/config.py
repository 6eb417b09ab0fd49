"""Training configuration: one frozen dataclass per concern, and YAML that maps onto them 1:1.

    algorithm: vgrpo
    iterations: 100
    seed: 0
    model:      {name: shapes-base, ...}        ModelConfig
    rollout:    {prompts_per_iteration: 8, ...} RolloutConfig
    vgrpo:      {n_mc: 4, ...}                  VGRPOConfig (trainer_core.vgrpo; also naive-elbo)
    flow_grpo:  {noise_level: 0.7, ...}         FlowGRPOConfig (flow-grpo and mix-grpo)
    mix_grpo:   {window_size: 4, ...}           MixGRPOConfig (mix-grpo)
    nft:        {beta: 1.0, ...}                DiffusionNFTConfig (diffusion-nft)
    optimizer:  {learning_rate: 3e-4, ...}      OptimizerConfig
    lora:       {rank: 32, ...}                 LoraSpec (trainer_core.lora)
    rewards:    {weights: {geneval: 1.0}, ...}  RewardMixConfig (trainer_core.rewards.base)
    logging:    {sample_every: 5, ...}          LoggingConfig

Every field is documented once, in its dataclass's docstring; errors name the
field as `section.field`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer_core.algorithms import ALGORITHMS
from trainer_core.files import read_text_file
from trainer_core.lora import LoraSpec
from trainer_core.rewards.base import RewardMixConfig
from trainer_core.samplers import SOLVERS
from trainer_core.vgrpo import VGRPOConfig

LR_SCHEDULES = ("constant", "linear", "cosine")


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the field."""


@dataclass(frozen=True)
class ModelConfig:
    """The base model.

    name: a built-in model, a diffusers directory in the data directory's models/ (relative), or any local
        diffusers directory (absolute; the command line's own) (shapes-base).
    device: "auto" (CUDA when present), "cpu" or "cuda" (auto).
    mixed_precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "no" or "bf16" (auto).
    resolution: image side for latent models; None keeps the model's native size (None).
    gradient_checkpointing: "on" recomputes the denoiser's activations in backward instead of keeping them,
        "off", or "auto": the family's default (on for SDXL, SD3 and FLUX) (auto).
    offload: "on" keeps text encoders and VAE in CPU memory, on the GPU only while they run, "off", or
        "auto": the family's default (on for SDXL, SD3 and FLUX; nothing moves on a CPU) (auto).
    decode_batch: latents the VAE decodes at once; 0 for the family's default (0).
    prompt_cache: prompts whose embeddings are kept, so that each is encoded once; 0 keeps none (256).
    safetensors_only: load weights only from safetensors files; pickled ones (.bin, .ckpt) can run code when
        read, so only the machine's owner may turn this off, from the command line (true).
    """

    name: str = "shapes-base"
    device: str = "auto"
    mixed_precision: str = "auto"
    resolution: int | None = None
    gradient_checkpointing: str = "auto"
    offload: str = "auto"
    decode_batch: int = 0
    prompt_cache: int = 256
    safetensors_only: bool = True

    def __post_init__(self) -> None:
        if not self.name or not str(self.name).strip():
            raise ConfigError("model.name: must name a built-in model or a local directory, got an empty value")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"model.device: must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ConfigError(f"model.mixed_precision: must be auto, no or bf16, got {self.mixed_precision!r}")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(f"model.resolution: must be at least 8, got {self.resolution}")
        for name in ("gradient_checkpointing", "offload"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ConfigError(f"model.{name}: must be auto, on or off, got {getattr(self, name)!r}")
        for name in ("decode_batch", "prompt_cache"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"model.{name}: must be a whole number >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RolloutConfig:
    """How images are generated each iteration.

    prompts_per_iteration: prompt groups per iteration, B (8; paper 48 on SD3.5-M).
    group_size: images per prompt, G (8; paper 24).
    steps: ODE solver steps, K (10; paper 40 on SD3.5-M, 16 on FLUX).
    solver: euler | heun | dpmpp_2m (dpmpp_2m; paper DPM-Solver++).
    guidance_scale: classifier-free guidance in rollouts; 1 is none (1.0; paper none on SD3.5-M).
    prompts: "train" (the shapes grammar's sampler, categories drawn uniformly), "train-balanced" (the
        same, categories dealt in shuffled decks so each iteration covers them evenly), "train-adaptive"
        (categories drawn in proportion to a moving average of their groups' reward spread, 20% of the
        probability kept uniform: rollouts go to what the policy does not yet always get right or
        always get wrong), "train-counterfactual" (pairs of a prompt and the same scene with another
        count, the opposite relation or the colours swapped; with `shared_noise`, one layout is judged
        under both) or a prompts file, one prompt per line: relative to the data directory's prompts/, or
        absolute (the command line's own) (train).
    batch_size: images per model call, to bound memory (64).
    candidate_prompts: prompt groups rolled out per iteration before selection; when larger than
        prompts_per_iteration, only the prompts_per_iteration groups whose rewards spread the most
        train, so compute goes to prompts that still teach something (DAPO's dynamic sampling drops
        groups whose rewards all tie); 0 rolls out exactly prompts_per_iteration (0; paper none).
    drop_tied_groups: leave groups whose rewards all tie out of the old pass and the gradient steps:
        their advantages are (almost) zero, so they add nothing to the objective but their cost (and their
        share of the penalty); the loss averages over the groups that remain, and an iteration whose
        groups all tie trains on all of them (False; paper none).
    shared_noise: every prompt group of an iteration starts from the same G initial noises (image j of
        each group from noise j). In a small model the noise decides much of the layout (how many
        objects, where); with common noises, a layout that is right for one prompt and wrong for
        another is pushed up in one group and down in the other, so prompt-independent habits cancel
        across groups and what remains is how the prompt should change the image. For the MDP baselines
        only the initial noise is shared, not their SDE steps' noise (False; paper none).
    same_noise_in_group: the G images of a group start from one noise and differ only by their SDE
        steps' noise (MixGRPO's and DanceGRPO's `init_same_noise`); MDP baselines only, since an ODE
        rollout would draw G copies of one image (False; MixGRPO's reference True).
    """

    prompts_per_iteration: int = 8
    group_size: int = 8
    steps: int = 10
    solver: str = "dpmpp_2m"
    guidance_scale: float = 1.0
    prompts: str = "train"
    batch_size: int = 64
    candidate_prompts: int = 0
    drop_tied_groups: bool = False
    shared_noise: bool = False
    same_noise_in_group: bool = False

    def __post_init__(self) -> None:
        for name in ("prompts_per_iteration", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rollout.{name}: must be at least 1, got {getattr(self, name)}")
        if self.candidate_prompts != 0 and self.candidate_prompts < self.prompts_per_iteration:
            raise ConfigError(
                "rollout.candidate_prompts: must be 0 (no selection) or at least prompts_per_iteration "
                f"({self.prompts_per_iteration}), got {self.candidate_prompts}"
            )
        if self.group_size < 2:
            raise ConfigError(
                f"rollout.group_size: must be at least 2 (advantages compare images), got {self.group_size}"
            )
        if self.solver not in SOLVERS:
            raise ConfigError(f"rollout.solver: must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.guidance_scale < 1:
            raise ConfigError(f"rollout.guidance_scale: must be >= 1, got {self.guidance_scale}")

    @property
    def prompts_rolled_out(self) -> int:
        """Prompt groups generated per iteration (candidates included)."""
        return max(self.candidate_prompts, self.prompts_per_iteration)


@dataclass(frozen=True)
class FlowGRPOConfig:
    """The MDP baselines' likelihood and objective (algorithm flow-grpo and mix-grpo).

    noise_level: a in the SDE's s_t = a sqrt(t / (1 - t)) (0.7; paper 0.7).
    clip_epsilon: PPO clip of the per-step ratio (1e-4; paper 1e-4).
    advantage_clip: advantages are clamped to +-advantage_clip (5.0; paper 5).
    beta: weight of the KL to the reference model (LoRA disabled), in flow_grpo's units (the squared
        distance of the step means over 2 s_t^2); 0 skips the reference pass (0.04; flow_grpo's SD3
        configs 0.04, MixGRPO's reference 0).
    timestep_fraction: share of the stochastic steps trained each iteration, drawn at random
        (1.0; Flow-GRPO all, DanceGRPO 0.6).
    gradient_steps: passes (inner epochs) over the same rollouts per iteration (1; paper 1).
    minibatches: each pass splits the iteration's images into this many random minibatches, one
        optimiser step each, so the ratios of later steps move off 1 and the clip acts (1; flow_grpo's
        SD3 configs 2, MixGRPO's 4).
    """

    noise_level: float = 0.7
    clip_epsilon: float = 1e-4
    advantage_clip: float = 5.0
    beta: float = 0.04
    timestep_fraction: float = 1.0
    gradient_steps: int = 1
    minibatches: int = 1

    def __post_init__(self) -> None:
        if self.noise_level < 0:
            raise ConfigError(f"flow_grpo.noise_level: must be non-negative, got {self.noise_level}")
        if self.clip_epsilon <= 0:
            raise ConfigError(f"flow_grpo.clip_epsilon: must be positive, got {self.clip_epsilon}")
        if self.advantage_clip <= 0:
            raise ConfigError(f"flow_grpo.advantage_clip: must be positive, got {self.advantage_clip}")
        if self.beta < 0:
            raise ConfigError(f"flow_grpo.beta: must be non-negative, got {self.beta}")
        if not 0 < self.timestep_fraction <= 1:
            raise ConfigError(f"flow_grpo.timestep_fraction: must be in (0, 1], got {self.timestep_fraction}")
        if self.gradient_steps < 1:
            raise ConfigError(f"flow_grpo.gradient_steps: must be at least 1, got {self.gradient_steps}")
        if self.minibatches < 1:
            raise ConfigError(f"flow_grpo.minibatches: must be at least 1, got {self.minibatches}")


@dataclass(frozen=True)
class DiffusionNFTConfig:
    """DiffusionNFT (algorithm diffusion-nft): flow matching on the rollouts' clean images, pulled toward an
    implicit positive policy and away from an implicit negative one (docs/method.md §8).

    beta: strength of the implicit policies v+ = beta v + (1 - beta) v_old, v- = (1 + beta) v_old - beta v
        (1.0; reference configs 1.0).
    advantage_clip: advantages are clamped to +-advantage_clip and mapped to an optimality probability
        r = A / (2 advantage_clip) + 1/2 (5.0; reference 5).
    timesteps: noise levels drawn per image and pass, stratified in (0, 1) and time-shifted as the
        sampling grid (4; the reference trains at its sampling grid's times).
    gradient_steps: optimiser steps per iteration on the same rollouts (1).
    old_decay_rate: after each iteration the sampling (old) policy moves toward the trained one,
        old <- d old + (1 - d) theta with d = min(old_decay_rate x optimiser steps so far, old_decay_max):
        at first it follows the policy, later it lags (0.001; reference 0.001).
    old_decay_max: the most d reaches (0.5; reference 0.5).
    kl_beta: weight of the squared velocity distance to the reference model (LoRA disabled); 0 skips the
        reference pass (0.0001; reference 0.0001).
    """

    beta: float = 1.0
    advantage_clip: float = 5.0
    timesteps: int = 4
    gradient_steps: int = 1
    old_decay_rate: float = 0.001
    old_decay_max: float = 0.5
    kl_beta: float = 0.0001

    def __post_init__(self) -> None:
        if not 0 < self.beta <= 1:
            raise ConfigError(f"nft.beta: must be in (0, 1], got {self.beta}")
        if self.advantage_clip <= 0:
            raise ConfigError(f"nft.advantage_clip: must be positive, got {self.advantage_clip}")
        for name in ("timesteps", "gradient_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"nft.{name}: must be at least 1, got {getattr(self, name)}")
        if self.old_decay_rate < 0 or not 0 <= self.old_decay_max < 1:
            raise ConfigError(
                f"nft.old_decay_rate, nft.old_decay_max: need a rate >= 0 and a max in [0, 1), got "
                f"{self.old_decay_rate} and {self.old_decay_max}"
            )
        if self.kl_beta < 0:
            raise ConfigError(f"nft.kl_beta: must be non-negative, got {self.kl_beta}")


@dataclass(frozen=True)
class MixGRPOConfig:
    """MixGRPO's sliding window of stochastic steps (algorithm mix-grpo); the ODE runs elsewhere.

    window_size: SDE steps per rollout, all of them trained (4; paper 4 of 25).
    window_start: first step of the window at iteration 0 (0; paper 0).
    window_stride: steps the window moves later each time it moves (1; paper 1).
    window_interval: iterations between moves; 0 spreads the moves evenly over the run's `iterations`,
        or over its time budget when the clock is further on (a budgeted benchmark run sets no length)
        (0; paper 25 iterations in a 300-iteration run: the spread gives 24 there).
    window_last_start: the window's start never passes this share of the rollout steps, so the
        low-noise end is never trained: the reference's window moves 12 times in its run and starts
        at step 12 of 25 at most (0.5; paper about 0.5). 1.0 lets it reach the last steps.
    """

    window_size: int = 4
    window_start: int = 0
    window_stride: int = 1
    window_interval: int = 0
    window_last_start: float = 0.5

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ConfigError(f"mix_grpo.window_size: must be at least 1, got {self.window_size}")
        for name in ("window_start", "window_stride"):
            if getattr(self, name) < 0:
                raise ConfigError(f"mix_grpo.{name}: must be non-negative, got {getattr(self, name)}")
        if self.window_interval < 0:
            raise ConfigError(
                f"mix_grpo.window_interval: must be 0 (spread over the run) or positive, got {self.window_interval}"
            )
        if not 0 <= self.window_last_start <= 1:
            raise ConfigError(f"mix_grpo.window_last_start: must be in [0, 1], got {self.window_last_start}")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW on the LoRA parameters.

    learning_rate: step size (3e-4; paper 3e-4).
    weight_decay: decoupled weight decay (0.0).
    beta1 / beta2: Adam moments (0.9 / 0.999).
    grad_clip: max global grad norm; 0 disables it (1.0).
    lr_schedule: the learning rate over the run's iterations: "constant", or "linear" / "cosine" decay
        from learning_rate to final_lr_fraction * learning_rate at the last iteration, or by the end of
        `time_budget_minutes` if that comes first; a resume that raises `iterations` stretches what is
        left of it (constant; paper constant).
    final_lr_fraction: where a decaying schedule ends, as a fraction of learning_rate (0.1).
    """

    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    lr_schedule: str = "constant"
    final_lr_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.learning_rate, int | float) or not self.learning_rate > 0:
            raise ConfigError(f"optimizer.learning_rate: must be a positive number, got {self.learning_rate!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay: must be non-negative, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optimizer.{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ConfigError(f"optimizer.grad_clip: must be non-negative, got {self.grad_clip}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"optimizer.lr_schedule: must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if not 0 <= self.final_lr_fraction <= 1:
            raise ConfigError(f"optimizer.final_lr_fraction: must be in [0, 1], got {self.final_lr_fraction}")

    def lr_factor(self, iteration: int, iterations: int, elapsed_fraction: float = 0.0) -> float:
        """The learning rate of iteration `iteration` (0-based) of `iterations`, as a fraction of learning_rate;
        `elapsed_fraction` (of a time budget) moves the schedule on when time runs out before iterations."""
        progress = min(1.0, max(iteration / max(1, iterations - 1), elapsed_fraction))
        if self.lr_schedule == "linear":
            decay = 1.0 - progress
        elif self.lr_schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            return 1.0
        return self.final_lr_fraction + (1.0 - self.final_lr_fraction) * decay


@dataclass(frozen=True)
class LoggingConfig:
    """What a run writes besides metrics.

    sample_every: iterations between sample grids, plus one at the last iteration; 0 disables them (5).
    checkpoint_every: iterations between LoRA checkpoints; a final one is always written (10).
    sample_prompts: prompts of the sample grid (four shapes prompts).
    sample_seeds: seeds of the sample grid, one column each (4).
    """

    sample_every: int = 5
    checkpoint_every: int = 10
    sample_prompts: tuple[str, ...] = (
        "a red circle",
        "three blue squares",
        "two yellow triangles and a green circle",
        "a purple square left of an orange triangle",
    )
    sample_seeds: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_prompts", tuple(self.sample_prompts))
        for name, least in (("sample_every", 0), ("checkpoint_every", 1), ("sample_seeds", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"logging.{name}: must be at least {least}, got {getattr(self, name)}")
        if not self.sample_prompts:
            raise ConfigError("logging.sample_prompts: name at least one prompt")


#: the most processes one job may run (a node of 8 GPUs, times 8 nodes)
MAX_DEVICES = 64

#: Upper bounds of every size a config controls, far above any real run (the papers' largest: 48 prompts x
#: 24 images, 40 steps, 1024 px, N_MC 10, rank 64), so that a typo or a hostile config is refused by field
#: instead of allocating terabytes. Whether a bounded job fits a device is decided at submit, from its
#: estimated peak memory (`trainer_core.memory_estimate`).
SIZE_LIMITS: dict[str, int] = {
    "iterations": 1_000_000,
    "seed": 2**31 - 1,
    "model.resolution": 4096,
    "model.decode_batch": 4096,
    "model.prompt_cache": 1_000_000,
    "rollout.prompts_per_iteration": 1024,
    "rollout.group_size": 1024,
    "rollout.candidate_prompts": 4096,
    "rollout.steps": 1000,
    "rollout.batch_size": 4096,
    "vgrpo.n_mc": 1024,
    "vgrpo.gradient_steps": 64,
    "flow_grpo.gradient_steps": 64,
    "flow_grpo.minibatches": 64,
    "nft.timesteps": 64,
    "nft.gradient_steps": 64,
    "mix_grpo.window_size": 1000,
    "mix_grpo.window_start": 1000,
    "mix_grpo.window_stride": 1000,
    "mix_grpo.window_interval": 1_000_000,
    "lora.rank": 1024,
    "logging.sample_every": 1_000_000,
    "logging.checkpoint_every": 1_000_000,
    "logging.sample_seeds": 64,
}
#: images generated per iteration (prompt groups rolled out x group size)
MAX_IMAGES_PER_ITERATION = 16384
#: the longest string any field takes (a prompt, a path, a name)
MAX_STRING = 4096
#: prompts of the sample grid, and rewards named in one mix
MAX_SAMPLE_PROMPTS = 64
MAX_REWARDS = 32


@dataclass(frozen=True)
class ResourcesConfig:
    """What a job takes of a worker.

    devices: processes of the job, one device each (a GPU, or a CPU slot on a CPU-only worker). Above 1
        the job trains data-parallel: each process rolls out, scores and trains on its share of the
        prompt groups (a group never spans processes) and the gradients are summed across them, so N
        processes compute what one does with the same config, up to float rounding (1).
    fsdp: also shard the denoiser's weights across those processes (FSDP2, block by block), for a model
        that does not fit one device with room for training; every process then takes part in every
        forward pass, so the prompt groups must divide evenly and no candidate selection may run (false).
    """

    devices: int = 1
    fsdp: bool = False

    def __post_init__(self) -> None:
        if self.fsdp and self.devices < 2:
            raise ConfigError("resources.fsdp: shards the model across the job's processes; needs devices >= 2")
        if not isinstance(self.devices, int) or not 1 <= self.devices <= MAX_DEVICES:
            raise ConfigError(
                f"resources.devices: must be a whole number from 1 to {MAX_DEVICES}, got {self.devices!r}"
            )


def _default_rewards() -> RewardMixConfig:
    return RewardMixConfig(weights={"geneval": 1.0})


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run.

    algorithm: the RL method: vgrpo, or a baseline flow-grpo, mix-grpo, diffusion-nft, naive-elbo (vgrpo).
    iterations: RL iterations (100).
    time_budget_minutes: wall-clock limit of the training loop; the run ends, as finished, after the
        last iteration that is expected to end within it, and a decaying learning rate follows
        whichever of iterations and time is further along, so the decay completes on a slow machine
        too. With a budget the schedule depends on the clock, so runs are no longer bit-reproducible;
        0 is no limit (0; paper none).
    seed: seeds prompts, noise, pairs and LoRA dropout (0).
    """

    algorithm: str = "vgrpo"
    iterations: int = 100
    time_budget_minutes: float = 0.0
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    vgrpo: VGRPOConfig = field(default_factory=VGRPOConfig)
    flow_grpo: FlowGRPOConfig = field(default_factory=FlowGRPOConfig)
    mix_grpo: MixGRPOConfig = field(default_factory=MixGRPOConfig)
    nft: DiffusionNFTConfig = field(default_factory=DiffusionNFTConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lora: LoraSpec = field(default_factory=LoraSpec)
    rewards: RewardMixConfig = field(default_factory=_default_rewards)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm: must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.iterations < 1:
            raise ConfigError(f"iterations: must be at least 1, got {self.iterations}")
        if not isinstance(self.time_budget_minutes, int | float) or not self.time_budget_minutes >= 0:
            raise ConfigError(
                f"time_budget_minutes: must be a non-negative number (0: no limit), got {self.time_budget_minutes!r}"
            )
        if self.resources.fsdp and (
            self.rollout.prompts_per_iteration % self.resources.devices
            or self.rollout.candidate_prompts
            or self.rollout.drop_tied_groups
        ):
            raise ConfigError(
                f"resources.fsdp: needs rollout.prompts_per_iteration ({self.rollout.prompts_per_iteration}) to be a "
                f"multiple of resources.devices ({self.resources.devices}), and no candidate_prompts or "
                "drop_tied_groups (every process must run the same forward passes)"
            )
        self._check_sizes()
        if self.rollout.prompts_rolled_out < self.resources.devices:
            raise ConfigError(
                f"resources.devices: at most the prompt groups rolled out per iteration "
                f"({self.rollout.prompts_rolled_out}), so that every process has one; got {self.resources.devices}"
            )
        if self.rollout.same_noise_in_group and self.algorithm not in ("flow-grpo", "mix-grpo"):
            raise ConfigError(
                "rollout.same_noise_in_group: only for flow-grpo and mix-grpo, whose SDE steps make a group's "
                f"images differ; {self.algorithm} samples the ODE, so every image of a group would be the same"
            )
        if self.algorithm == "mix-grpo" and self.mix_grpo.window_size > self.rollout.steps:
            raise ConfigError(
                f"mix_grpo.window_size: must be at most rollout.steps ({self.rollout.steps}), "
                f"got {self.mix_grpo.window_size}"
            )

    def _check_sizes(self) -> None:
        """Every size within SIZE_LIMITS, every string within MAX_STRING."""
        for path, limit in SIZE_LIMITS.items():
            value = self
            for part in path.split("."):
                value = getattr(value, part)
            if value is not None and value > limit:
                raise ConfigError(f"{path}: must be at most {limit:,}, got {value:,}")
            if value is not None and value < 0:
                raise ConfigError(f"{path}: must be non-negative, got {value:,}")
        images = self.rollout.prompts_rolled_out * self.rollout.group_size
        if images > MAX_IMAGES_PER_ITERATION:
            raise ConfigError(
                f"rollout.group_size: {self.rollout.prompts_rolled_out} prompt groups x {self.rollout.group_size} "
                f"images is {images:,} images per iteration; at most {MAX_IMAGES_PER_ITERATION:,} are allowed "
                "(lower rollout.group_size or rollout.prompts_per_iteration)"
            )
        if self.model.resolution is not None and self.model.resolution % 8:
            raise ConfigError(f"model.resolution: must be a multiple of 8, got {self.model.resolution}")
        if len(self.logging.sample_prompts) > MAX_SAMPLE_PROMPTS:
            raise ConfigError(
                f"logging.sample_prompts: at most {MAX_SAMPLE_PROMPTS} prompts, got {len(self.logging.sample_prompts)}"
            )
        if len(self.rewards.weights) + len(self.rewards.monitor) > MAX_REWARDS:
            raise ConfigError(f"rewards.weights: at most {MAX_REWARDS} rewards in one mix (monitored ones included)")
        for path, text in _strings(self):
            if len(text) > MAX_STRING:
                raise ConfigError(f"{path}: at most {MAX_STRING} characters, got {len(text):,}")


def _strings(config: Any, path: str = "") -> typing.Iterator[tuple[str, str]]:
    """(field path, text) of every string in a config, keys of mappings included."""
    if dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            yield from _strings(getattr(config, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(config, dict):
        for key, value in config.items():
            yield f"{path}.{key}"[:200], str(key)
            yield from _strings(value, f"{path}.{key}"[:200])
    elif isinstance(config, tuple | list):
        for i, value in enumerate(config):
            yield from _strings(value, f"{path}[{i}]")
    elif isinstance(config, str):
        yield path, config


# --- YAML <-> dataclasses -----------------------------------------------------------------------


def to_dict(config: Any) -> Any:
    """Plain dicts, lists and scalars, ready for YAML."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from nested dicts; unknown keys and wrong types name their field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(key)[:60] for key in data if key not in fields)
    if unknown:
        allowed = ", ".join(sorted(fields))
        if unknown[0].isidentifier():
            raise ConfigError(f"{path}{unknown[0]}: unknown field; allowed: {allowed}")
        raise ConfigError(f"{path.rstrip('.') or 'config'}: unknown field {unknown[0]!r}; allowed: {allowed}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
    ]
    if required:
        raise ConfigError(f"{path}{required[0]}: required, and missing")
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{path}{name}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as error:  # the dataclasses' own checks already name `section.field`
        raise ConfigError(str(error)) from None


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(hint, value, path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{path}: must be a number, got {_shown(value)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{path}: must be a number, got {_shown(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{path}: must be a finite number, got {_shown(value)}")
        return number
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{path}: must be an integer, got {_shown(value)}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {_shown(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {_shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: must be a list, got {_shown(value)}")
        return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a mapping, got {_shown(value)}")
        return {str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    return value


def _shown(value: Any, limit: int = 80) -> str:
    """A value as an error quotes it, cut short: a message must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: {path} does not exist")
    try:
        data = yaml.safe_load(read_text_file(path)) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config: {path} is not valid YAML ({error})") from None
    except RecursionError:
        raise ConfigError(f"config: {path} is nested too deeply; a config has sections of fields") from None
    except ValueError as error:  # not text
        raise ConfigError(f"config: {error}") from None
    return from_dict(TrainConfig, data)


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its line of the dataclass docstring (for UIs and `--help`)."""
    docs: dict[str, str] = {}
    current = None
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        head = stripped.split(":", 1)[0]
        names = [n.strip() for n in head.split("/")]
        if ":" in stripped and all(n.isidentifier() for n in names):
            for name in names:
                docs[name] = stripped.split(":", 1)[1].strip()
            current = names
        elif current and stripped:
            for name in current:
                docs[name] += " " + stripped
        else:
            current = None
    return docs


PRESETS_DIR = Path(__file__).with_name("presets")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> TrainConfig:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset: unknown {name!r}; available: {', '.join(preset_names())}")
    return load_config(path)
