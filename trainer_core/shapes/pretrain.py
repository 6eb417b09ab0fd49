"""Pretraining of the built-in shapes model on procedurally rendered scenes.

Plain rectified-flow pretraining: z_t = (1 - t) x0 + t eps, the model regresses
v = eps - x0 with t ~ logit-normal(0, 1), prompts are dropped to "" with a small
probability (so classifier-free guidance is available), and an EMA of the
weights is what gets saved. The learning rate is constant after warm-up, so a
snapshot at step N equals an N-step run.

Two options shape what the base can learn later (docs/shapes-relations.md):

- `parse_weight` gives the text encoder an objective of its own, as SD's and
  SD3's encoders had theirs (CLIP's contrastive, T5's denoising) before the
  denoiser saw them: a linear head must read the prompt's spec back from the last
  token state. With the flow loss alone this two-layer encoder maps "left of"
  and "right of" to nearly the same states (0.004 apart at the last token, state
  norm 7.9), because the denoiser cannot yet use the difference, and relations
  are then out of reach of any fine-tuning that keeps the encoder.
- `relation_caption_accuracy` below 1 makes relation captions unreliable, as web
  captions are, so that a denoiser able to learn relations keeps only a weak sense
  of direction for RL to sharpen (this UNet learns none, even from clean captions).
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

from trainer_core.samplers import shift_sigmas
from trainer_core.shapes.grammar import (
    COLORS,
    MAX_OBJECTS,
    OPPOSITE_RELATIONS,
    RELATIONS,
    SHAPES,
    SceneSpec,
    parse_prompt,
    sample_spec,
)
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
    train_text_encoder: train the text encoder with the denoiser (True); False keeps it at its random
        initialisation, which keeps relations apart but slows the learning of objects (the right groups in
        6% of images after 3000 steps, against 41%).
    parse_weight: weight of the text encoder's own objective, reading the prompt's spec back from its last
        state (0: none; needs train_text_encoder).
    relation_caption_accuracy: probability that a relation scene's caption names the drawn relation;
        otherwise it names the opposite one (1.0).
    time_shift: shift of the training noise levels, t -> s t / (1 + (s - 1) t) on the logit-normal draw,
        as SD3 shifts them for larger images (1.0: none). Where objects go is decided at high noise, which
        the unshifted draw rarely visits (t > 0.9 in 1.4% of draws; with 3.0, 14%).
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
    train_text_encoder: bool = True
    parse_weight: float = 0.0
    relation_caption_accuracy: float = 1.0
    time_shift: float = 1.0
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
        if self.parse_weight < 0:
            raise ValueError(f"parse_weight: must be non-negative, got {self.parse_weight}")
        if self.parse_weight > 0 and not self.train_text_encoder:
            raise ValueError("parse_weight: trains the text encoder; set train_text_encoder or leave it at 0")
        if not 0.5 <= self.relation_caption_accuracy <= 1:
            raise ValueError(f"relation_caption_accuracy: must be in [0.5, 1], got {self.relation_caption_accuracy}")
        if not self.time_shift > 0:
            raise ValueError(f"time_shift: must be positive, got {self.time_shift}")
        if self.warmup_steps < 0 or self.snapshot_every < 0:
            raise ValueError("warmup_steps, snapshot_every: must be non-negative")


class RenderedScenes(IterableDataset):
    """An endless, seeded stream of (image in [-1, 1] [3, H, W], prompt) from the training grammar."""

    def __init__(
        self, seed: int, resolution: int, prompt_dropout: float, relation_caption_accuracy: float = 1.0
    ) -> None:
        self.seed, self.resolution, self.prompt_dropout = seed, resolution, prompt_dropout
        self.relation_caption_accuracy = relation_caption_accuracy

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        rng = random.Random(self.seed)
        while True:
            spec = sample_spec(rng)
            image, _ = render_spec(spec, rng, self.resolution)
            # drawn only when captions may lie, so that accuracy 1 keeps the stream shapes-base was trained on
            lies = self.relation_caption_accuracy < 1 and spec.relation is not None
            if lies and rng.random() >= self.relation_caption_accuracy:
                spec = SceneSpec(spec.groups, OPPOSITE_RELATIONS[spec.relation])
            prompt = "" if rng.random() < self.prompt_dropout else spec.prompt
            yield torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1, prompt


# what the text encoder's own objective reads back from a prompt: its relation, then per group slot its
# count, shape and colour (class 0: absent)
PARSE_CLASSES: tuple[int, ...] = (1 + len(RELATIONS),) + (1 + MAX_OBJECTS, 1 + len(SHAPES), 1 + len(COLORS)) * 2


def parse_labels(prompts: list[str]) -> torch.Tensor:
    """long [B, len(PARSE_CLASSES)]: the spec of each prompt as class indices; -100 for the empty prompt."""
    rows = []
    for prompt in prompts:
        if not prompt:
            rows.append([-100] * len(PARSE_CLASSES))
            continue
        spec = parse_prompt(prompt)
        row = [0 if spec.relation is None else 1 + RELATIONS.index(spec.relation)]
        for slot in range(2):
            if slot < len(spec.groups):
                g = spec.groups[slot]
                row += [g.count, 1 + SHAPES.index(g.shape), 0 if g.color is None else 1 + COLORS.index(g.color)]
            else:
                row += [0, 0, 0]
        rows.append(row)
    return torch.tensor(rows)


class PromptParseHead(torch.nn.Module):
    """Linear read-out of a prompt's spec from the text encoder's last token state.

    A stand-in for the text encoder's own pretraining (CLIP's contrastive, T5's denoising objective):
    the state the denoiser reads must keep the whole prompt, relations included.
    """

    def __init__(self, text_dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(text_dim, sum(PARSE_CLASSES))

    def loss(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.linear(states[:, -1]).split(PARSE_CLASSES, dim=-1)
        parts = [torch.nn.functional.cross_entropy(lg, labels[:, i]) for i, lg in enumerate(logits)]
        return torch.stack(parts).nan_to_num().mean()


def training_noise_levels(n: int, generator: torch.Generator, time_shift: float = 1.0) -> torch.Tensor:
    """[n] noise levels t in (0, 1): logit-normal(0, 1), then shifted toward 1 by `time_shift`."""
    return shift_sigmas(torch.sigmoid(torch.randn(n, generator=generator)), time_shift)


def flow_matching_loss(
    pipe: ShapesPipeline,
    images: torch.Tensor,
    prompts: list[str],
    generator: torch.Generator,
    parse_head: PromptParseHead | None = None,
    time_shift: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity regression loss on one batch, t ~ logit-normal(0, 1) shifted by `time_shift`, and the
    parse loss (0 without a head)."""
    noise = torch.randn(images.shape, generator=generator)
    t = training_noise_levels(images.shape[0], generator, time_shift)
    tb = t.view(-1, 1, 1, 1)
    z = (1 - tb) * images + tb * noise
    states, pooled = pipe.encode_prompt(prompts)
    flow = (pipe.velocity(z, t, states, pooled) - (noise - images)).pow(2).mean()
    parse = parse_head.loss(states, parse_labels(prompts)) if parse_head is not None else flow.new_zeros(())
    return flow, parse


def pretrain_shapes(config: PretrainConfig, out: Path, progress: bool = True) -> ShapesPipeline:
    """Train the shapes model from scratch and save the EMA pipeline to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    pipe = build_shapes_pipeline(config.model, seed=config.seed)
    ema = build_shapes_pipeline(config.model, seed=config.seed)
    modules = [pipe.unet, pipe.text_encoder] if config.train_text_encoder else [pipe.unet]
    ema_modules = [ema.unet, ema.text_encoder] if config.train_text_encoder else [ema.unet]
    for module, ema_module in zip(modules, ema_modules, strict=True):
        ema_module.load_state_dict(module.state_dict())
        ema_module.requires_grad_(False)
        module.train()
    if not config.train_text_encoder:
        pipe.text_encoder.requires_grad_(False).eval()
        ema.text_encoder.load_state_dict(pipe.text_encoder.state_dict())
    parse_head = PromptParseHead(config.model.text_dim) if config.parse_weight > 0 else None
    params = [p for m in modules for p in m.parameters()]
    head_params = list(parse_head.parameters()) if parse_head is not None else []
    optimizer = torch.optim.AdamW(params + head_params, lr=config.learning_rate, weight_decay=0.0, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps))
    )
    data = DataLoader(
        RenderedScenes(config.seed, config.model.resolution, config.prompt_dropout, config.relation_caption_accuracy),
        batch_size=config.batch_size,
        num_workers=1,  # rendering overlaps the model's two compute threads
        prefetch_factor=4,
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    started = time.monotonic()
    bar = tqdm(total=config.steps, disable=not progress, desc="pretrain", unit="step")
    loss_avg = math.nan
    for step, (images, prompts) in enumerate(data, start=1):
        loss, parse = flow_matching_loss(pipe, images, list(prompts), generator, parse_head, config.time_shift)
        optimizer.zero_grad(set_to_none=True)
        (loss + config.parse_weight * parse).backward()
        if parse_head is None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        else:  # clipped apart, so that the parse loss's gradients never shrink the UNet's step
            torch.nn.utils.clip_grad_norm_(pipe.unet.parameters(), config.grad_clip)
            torch.nn.utils.clip_grad_norm_([*pipe.text_encoder.parameters(), *head_params], config.grad_clip)
        optimizer.step()
        scheduler.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for module, ema_module in zip(modules, ema_modules, strict=True):
                for p, q in zip(module.parameters(), ema_module.parameters(), strict=True):
                    q.lerp_(p, 1 - decay)
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * loss.item()
        bar.update()
        bar.set_postfix(loss=f"{loss_avg:.4f}", parse=f"{parse.item():.3f}")
        if config.snapshot_every and step % config.snapshot_every == 0 and step < config.steps:
            ema.save_pretrained(out / f"step_{step}", safe_serialization=True)
        if step >= config.steps:
            break
    bar.close()
    ema.save_pretrained(out, safe_serialization=True)
    minutes = (time.monotonic() - started) / 60
    (out / "PRETRAIN.txt").write_text(
        f"steps={config.steps} batch_size={config.batch_size} seed={config.seed} "
        f"train_text_encoder={config.train_text_encoder} parse_weight={config.parse_weight} "
        f"relation_caption_accuracy={config.relation_caption_accuracy} time_shift={config.time_shift} "
        f"pooled_modulation={config.model.pooled_modulation} coordinate_channels={config.model.coordinate_channels} "
        f"minutes={minutes:.1f} final_loss_ema={loss_avg:.4f}\n"
    )
    return ema
