"""Pretraining of the built-in shapes model on procedurally rendered scenes.

Plain rectified-flow pretraining: z_t = (1 - t) x0 + t eps, the model regresses
v = eps - x0 with t ~ logit-normal(0, 1), prompts are dropped to "" with a small
probability (so classifier-free guidance is available), and an EMA of the
weights is what gets saved. The learning rate is constant after warm-up, so a
snapshot at step N equals an N-step run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from trainer_core.shapes.grammar import sample_spec
from trainer_core.shapes.pipeline import ShapesModelConfig, ShapesPipeline, build_shapes_pipeline
from trainer_core.shapes.render import render_spec


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the shapes base model.

    steps: optimiser steps (3000).
    batch_size: scenes per step (32).
    learning_rate: AdamW learning rate after warm-up (1e-3).
    warmup_steps: linear warm-up (100).
    ema_decay: decay of the saved exponential moving average of weights (0.995).
    prompt_dropout: probability of training on the empty prompt (0.1).
    grad_clip: max gradient norm (1.0).
    seed: seeds weights, data and noise (0).
    snapshot_every: also save the EMA model every this many steps under `step_N/` (0: never).
    model: architecture (ShapesModelConfig).
    """

    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    prompt_dropout: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    snapshot_every: int = 0
    model: ShapesModelConfig = field(default_factory=ShapesModelConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: must be positive, got {self.learning_rate}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.prompt_dropout < 1:
            raise ValueError(f"prompt_dropout: must be in [0, 1), got {self.prompt_dropout}")
        if self.warmup_steps < 0 or self.snapshot_every < 0:
            raise ValueError("warmup_steps, snapshot_every: must be non-negative")


class RenderedScenes(IterableDataset):
    """An endless, seeded stream of (image in [-1, 1] [3, H, W], prompt) from the training grammar."""

    def __init__(self, seed: int, resolution: int, prompt_dropout: float) -> None:
        self.seed, self.resolution, self.prompt_dropout = seed, resolution, prompt_dropout

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        rng = random.Random(self.seed)
        while True:
            spec = sample_spec(rng)
            image, _ = render_spec(spec, rng, self.resolution)
            prompt = "" if rng.random() < self.prompt_dropout else spec.prompt
            yield torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1, prompt


def flow_matching_loss(
    pipe: ShapesPipeline, images: torch.Tensor, prompts: list[str], generator: torch.Generator
) -> torch.Tensor:
    """Velocity regression loss on one batch, t ~ logit-normal(0, 1)."""
    noise = torch.randn(images.shape, generator=generator)
    t = torch.sigmoid(torch.randn(images.shape[0], generator=generator))
    tb = t.view(-1, 1, 1, 1)
    z = (1 - tb) * images + tb * noise
    states, pooled = pipe.encode_prompt(prompts)
    return (pipe.velocity(z, t, states, pooled) - (noise - images)).pow(2).mean()


def pretrain_shapes(config: PretrainConfig, out: Path, progress: bool = True) -> ShapesPipeline:
    """Train the shapes model from scratch and save the EMA pipeline to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    pipe = build_shapes_pipeline(config.model, seed=config.seed)
    ema = build_shapes_pipeline(config.model, seed=config.seed)
    modules = [pipe.unet, pipe.text_encoder]
    ema_modules = [ema.unet, ema.text_encoder]
    for module, ema_module in zip(modules, ema_modules, strict=True):
        ema_module.load_state_dict(module.state_dict())
        ema_module.requires_grad_(False)
        module.train()
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps))
    )
    data = DataLoader(
        RenderedScenes(config.seed, config.model.resolution, config.prompt_dropout),
        batch_size=config.batch_size,
        num_workers=1,  # rendering overlaps the model's two compute threads
        prefetch_factor=4,
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    started = time.monotonic()
    bar = tqdm(total=config.steps, disable=not progress, desc="pretrain", unit="step")
    loss_avg = math.nan
    for step, (images, prompts) in enumerate(data, start=1):
        loss = flow_matching_loss(pipe, images, list(prompts), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for module, ema_module in zip(modules, ema_modules, strict=True):
                for p, q in zip(module.parameters(), ema_module.parameters(), strict=True):
                    q.lerp_(p, 1 - decay)
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * loss.item()
        bar.update()
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        if config.snapshot_every and step % config.snapshot_every == 0 and step < config.steps:
            ema.save_pretrained(out / f"step_{step}", safe_serialization=True)
        if step >= config.steps:
            break
    bar.close()
    ema.save_pretrained(out, safe_serialization=True)
    minutes = (time.monotonic() - started) / 60
    (out / "PRETRAIN.txt").write_text(
        f"steps={config.steps} batch_size={config.batch_size} seed={config.seed} "
        f"minutes={minutes:.1f} final_loss_ema={loss_avg:.4f}\n"
    )
    return ema
