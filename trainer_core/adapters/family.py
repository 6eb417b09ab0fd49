"""What the studio knows about a model family, declared once, in the family's adapter module.

Every adapter module under `trainer_core.adapters` that defines `FAMILY = ModelFamily(...)` is a family:
`load_adapter`, the Train tab's model picker, LoRA export and the default configs read the registry, and
nothing else names a family. Adding one is one adapter file (and its test).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer_core.adapters.base import MemoryOptions

if TYPE_CHECKING:
    import torch

    from trainer_core.adapters.base import DenoiserAdapter


@dataclass(frozen=True)
class RolloutDefaults:
    """Rollout settings that suit a family out of the box.

    resolution: image side in pixels; None keeps the model's native size.
    steps: solver steps per image.
    guidance_scale: classifier-free guidance in rollouts (1: none).
    """

    resolution: int | None
    steps: int
    guidance_scale: float


@dataclass(frozen=True)
class KohyaTarget:
    """Where a group of the denoiser's linear layers lives in a kohya-named LoRA file.

    name: the key stem (`lora_unet_joint_blocks_0_x_block_attn_qkv`).
    parts: the denoiser's modules (diffusers paths) whose outputs are stacked, in order, in the one
        weight the stem names; one part when the tool's weight is the module itself.
    """

    name: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class ModelFamily:
    """One family of text-to-image models.

    name: the short name configs and the UI use (sd15, sdxl, sd3, flux, shapes).
    title: what a person reads.
    pipelines: the `_class_name`s of `model_index.json` that are this family.
    load: (pipeline directory, device, resolution or None) -> its adapter, weights frozen.
    adapter: (diffusers pipeline object, resolution or None) -> its adapter (for pipelines built in memory).
    lora_targets: module names (suffixes) LoRA adapts by default.
    rollout: rollout defaults.
    denoiser_component: the denoiser's attribute in its pipeline, which diffusers' LoRA keys start with.
    kohya_target: a denoiser module's path -> where ComfyUI and AUTOMATIC1111 expect its update.
    memory: what `model.gradient_checkpointing`, `offload` and `decode_batch` mean by "auto" / 0.
    """

    name: str
    title: str
    pipelines: tuple[str, ...]
    load: Callable[[Path, torch.device, int | None], DenoiserAdapter]
    adapter: Callable[[Any, int | None], DenoiserAdapter]
    lora_targets: tuple[str, ...]
    rollout: RolloutDefaults
    denoiser_component: str
    kohya_target: Callable[[str], KohyaTarget]
    memory: MemoryOptions


def kohya_unet_target(path: str) -> KohyaTarget:
    """The kohya convention of UNet families: `lora_unet_` and the module's path with `_` for `.`."""
    return KohyaTarget(f"lora_unet_{path.replace('.', '_')}", (path,))


#: the attention projections of both streams of a joint (MMDiT) block, as Flow-GRPO adapts SD3 and FLUX
JOINT_ATTENTION = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)

#: one transformer block's layers as a tool names them: its weight's name -> the diffusers modules
#: (relative to the block) stacked in it, in order
BlockLayout = dict[str, tuple[str, ...]]


def block_kohya_target(family: str, path: str, blocks: dict[str, tuple[str, BlockLayout]]) -> KohyaTarget:
    """The kohya target of `path` in a transformer whose original checkpoint names blocks differently
    from diffusers (SAI's MMDiT, BFL's FLUX): `blocks` maps a diffusers block list (`transformer_blocks`)
    to the original one (`joint_blocks`) and the layout of its blocks."""
    match = re.fullmatch(r"([a-z_]+)\.(\d+)\.(.+)", path)
    if match and match[1] in blocks:
        original, layout = blocks[match[1]]
        index, suffix = match[2], match[3]
        for name, parts in layout.items():
            if suffix in parts:
                stem = f"lora_unet_{original}_{index}_{name.replace('.', '_')}"
                return KohyaTarget(stem, tuple(f"{match[1]}.{index}.{part}" for part in parts))
    allowed = sorted({part for _, layout in blocks.values() for parts in layout.values() for part in parts})
    raise ValueError(
        f"lora: {path!r} has no name that ComfyUI or AUTOMATIC1111 read for {family}; kohya export covers the "
        f"blocks' {', '.join(allowed)}"
    )


@cache
def families() -> dict[str, ModelFamily]:
    """Every family, by name, found in the adapter modules."""
    import trainer_core.adapters as package

    found: dict[str, ModelFamily] = {}
    for module in pkgutil.iter_modules(package.__path__):
        family = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "FAMILY", None)
        if isinstance(family, ModelFamily):
            found[family.name] = family
    return dict(sorted(found.items()))


def family_of_pipeline(class_name: str) -> ModelFamily | None:
    return next((f for f in families().values() if class_name in f.pipelines), None)


def supported_pipelines() -> list[str]:
    return [pipeline for family in families().values() for pipeline in family.pipelines]
