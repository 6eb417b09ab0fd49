"""A training job's peak memory per process, estimated before it runs from the model's files and the config.

    peak = runtime + weights + reward weights + LoRA and AdamW + the iteration's rollouts
           + max(activations of one gradient chunk, one VAE decode)

- weights: parameters counted from the safetensors headers (only headers are read), at the dtype the job
  loads them in (fp32 on a CPU, bf16 on a GPU). With offload on a GPU, the text encoders and the VAE take
  turns on the device, so only the largest counts beside the denoiser; FSDP shares the denoiser's out.
- LoRA and AdamW: rank x (in + out) per adapted layer, 16 bytes each (fp32 weight, gradient, two moments).
- rollouts: each process keeps its share of the iteration's images: their prompt embeddings and latents
  times what the algorithm keeps per image (V-GRPO: the sample, n_mc noises, the anchors of a penalty; the
  MDP baselines: every step's state and, with a KL, every step's reference mean) and the decoded images.
- activations: a gradient chunk of rollout.batch_size model inputs, each keeping ALPHA x its activation
  units (tokens x width summed over the denoiser's layers, weighted by what a layer keeps for backward,
  read from the denoiser's config) at the compute dtype; gradient checkpointing keeps CHECKPOINTED of it.
- decode: decode_batch images through the VAE at full resolution, no gradients.

ALPHA (per denoiser class), CHECKPOINTED and RUNTIME_BYTES["cpu"] are fitted to peaks measured on a CPU
on the shapes model and the tiny SD1.5, SDXL, SD3 and FLUX pipelines (`vgrpo bench memory`,
bench/results/memory: mean error 4%, largest 23%, in-sample); the CUDA runtime and VAE_ACTIVATIONS are
not measured yet. Attention maps are not counted: PyTorch's scaled-dot-product attention does not keep them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from safetensors import safe_open

from trainer_core.adapters import MemoryOptions, memory_options
from trainer_core.config import TrainConfig

GIB = 2**30
#: bytes kept for backward per activation unit of one model input, before the dtype's size, by denoiser class
ALPHA = {"UNet2DConditionModel": 1.95, "SD3Transformer2DModel": 0.5, "FluxTransformer2DModel": 1.8}
#: share of those kept with gradient checkpointing on (block boundaries, and one block recomputed)
CHECKPOINTED = 0.7
#: activation units of a VAE decode per pixel, as multiples of its first level's width (not fitted: no
#: measured case is decode-bound)
VAE_ACTIVATIONS = 6.0
#: the process before the model: the interpreter, torch, diffusers, transformers (CPU), or the CUDA context
RUNTIME_BYTES = {"cpu": 0.54 * GIB, "cuda": 0.6 * GIB}
#: T5 tokens a joint transformer attends to beside the image, by denoiser class (the pipelines' defaults)
T5_TOKENS = {"SD3Transformer2DModel": 256, "FluxTransformer2DModel": 512}
#: bytes kept per activation unit for backward: what one layer of each kind stores, in tensors of its width
RESNET_TENSORS, ATTENTION_LAYER_TENSORS, JOINT_BLOCK_TENSORS, SINGLE_BLOCK_TENSORS = 6, 20, 40, 14
_BYTES = {"cpu": 0.75 * GIB, "cuda": 0.6 * GIB}
#: text tokens a transformer denoiser attends to beside the image (SD3's CLIP 77 + T5 256; FLUX's T5 512)
TEXT_TOKENS = {"SD3Transformer2DModel": 333, "FluxTransformer2DModel": 512}
#: bytes kept per activation unit for backward: what one layer of each kind stores, in tensors of its width
RESNET_TENSORS, ATTENTION_LAYER_TENSORS, JOINT_BLOCK_TENSORS, SINGLE_BLOCK_TENSORS = 6, 20, 40, 14
_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class Component:
    """One pipeline component as its files describe it."""

    params: int
    config: dict[str, Any]
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (weight name, shape) of every tensor


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes per process, by part."""

    runtime: int
    weights: int
    rewards: int
    lora_optimizer: int
    rollouts: int
    activations: int
    decode: int

    @property
    def total(self) -> int:
        resident = self.runtime + self.weights + self.rewards + self.lora_optimizer + self.rollouts
        return resident + max(self.activations, self.decode)

    def parts(self) -> dict[str, int]:
        return {
            "runtime": self.runtime,
            "weights": self.weights,
            "rewards": self.rewards,
            "lora_optimizer": self.lora_optimizer,
            "rollouts": self.rollouts,
            "activations": self.activations,
            "decode": self.decode,
        }

    def largest(self) -> tuple[str, str]:
        """(the part that weighs most, the config field that lowers it)."""
        parts = self.parts()
        if self.decode > self.activations:
            del parts["activations"]
        else:
            del parts["decode"]
        name = max(parts, key=parts.__getitem__)
        return name, LOWERED_BY[name]

    def describe(self) -> str:
        shown = ", ".join(f"{PART_NAMES[name]} {gib(value)}" for name, value in self.parts().items() if value)
        return f"about {gib(self.total)} ({shown})"


PART_NAMES = {
    "runtime": "runtime",
    "weights": "weights",
    "rewards": "reward models",
    "lora_optimizer": "LoRA and optimizer state",
    "rollouts": "rollouts",
    "activations": "activations",
    "decode": "VAE decode",
}
#: the field to lower when a part is too large
LOWERED_BY = {
    "runtime": "resources.devices",
    "weights": "resources.fsdp",
    "rewards": "rewards.weights",
    "lora_optimizer": "lora.rank",
    "rollouts": "rollout.group_size",
    "activations": "rollout.batch_size",
    "decode": "model.decode_batch",
}


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB" if value < 10 * GIB else f"{value / GIB:.0f} GiB"


def estimate_peak_memory(
    config: TrainConfig, model_dir: Path, device: str, reward_bytes: int = 0, family: Any = None
) -> MemoryEstimate:
    """Peak bytes per process of `config` on `model_dir` (a diffusers pipeline directory) on a `device` of
    kind "cpu" or "cuda"; `reward_bytes`: the learned rewards' weights; `family`: the model's family
    (`trainer_core.adapters.ModelFamily`), for its default resolution and memory options."""
    components = read_components(model_dir)
    denoiser_name = "transformer" if "transformer" in components else "unet"
    denoiser = components[denoiser_name]
    vae = components.get("vae")
    on_gpu = device == "cuda"
    weight_bytes = 2 if on_gpu else 4  # bf16 on a GPU, fp32 on a CPU (`adapters.base.weight_dtype`)
    compute_bytes = 2 if on_gpu and config.model.mixed_precision != "no" else 4
    options = memory_options(config.model, family) if family is not None else MemoryOptions()
    processes = config.resources.devices

    others = [c.params for name, c in components.items() if name != denoiser_name]
    denoiser_weights = denoiser.params * weight_bytes / (processes if config.resources.fsdp else 1)
    other_weights = (max(others, default=0) if on_gpu and options.offload else sum(others)) * weight_bytes

    lora = lora_parameters(denoiser, config.lora.target_modules, config.lora.rank)

    side = config.model.resolution or (family.rollout.resolution if family is not None else None)
    pixels, latent_numel, tokens = _geometry(denoiser, vae, side)
    images = math.ceil(config.rollout.prompts_rolled_out * config.rollout.group_size / processes)
    kept = _latents_kept_per_image(config)
    text_tokens = _text_tokens(model_dir, denoiser)
    rollouts = images * (4 * (latent_numel * kept + text_tokens * _text_width(denoiser)) + 5 * 3 * pixels)

    units = activation_units(denoiser.config, tokens, text_tokens)
    alpha = ALPHA.get(str(denoiser.config.get("_class_name")), max(ALPHA.values()))
    inputs = min(config.rollout.batch_size, images * _inputs_per_image(config))
    kept_share = CHECKPOINTED if options.gradient_checkpointing else 1.0
    activations = inputs * alpha * units * compute_bytes * kept_share
    decode = 0.0
    if vae is not None:
        width = int(vae.config.get("block_out_channels", [128])[0])
        decode = min(options.decode_batch or images, images) * pixels * width * VAE_ACTIVATIONS * weight_bytes

    return MemoryEstimate(
        runtime=int(RUNTIME_BYTES[device]),
        weights=int(denoiser_weights + other_weights),
        rewards=int(reward_bytes),
        lora_optimizer=int(16 * lora),
        rollouts=int(rollouts),
        activations=int(activations),
        decode=int(decode),
    )


@cache
def _read_components(model_dir: Path, stamp: float) -> dict[str, Component]:
    index = json.loads((model_dir / "model_index.json").read_text())
    components = {}
    for name, entry in index.items():
        folder = model_dir / name
        if name.startswith("_") or not isinstance(entry, list) or not (folder / "config.json").is_file():
            continue
        shapes: list[tuple[str, tuple[int, ...]]] = []
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - a safetensors handle is not a mapping
                    shapes.append((key, tuple(handle.get_slice(key).get_shape())))
        params = sum(math.prod(shape) for _, shape in shapes)
        components[name] = Component(params, json.loads((folder / "config.json").read_text()), tuple(shapes))
    return components


def read_components(model_dir: Path) -> dict[str, Component]:
    """Each weighted component of a pipeline directory: parameter count, config, tensor shapes (cached
    until model_index.json changes)."""
    model_dir = Path(model_dir).resolve()
    return _read_components(model_dir, (model_dir / "model_index.json").stat().st_mtime)


def lora_parameters(denoiser: Component, targets: tuple[str, ...], rank: int) -> int:
    """LoRA parameters of the denoiser's layers named by `targets` (suffixes of module names)."""
    total = 0
    for key, shape in denoiser.shapes:
        module = key.removesuffix(".weight")
        if module == key or len(shape) < 2 or not any(module == t or module.endswith("." + t) for t in targets):
            continue
        fan_in = math.prod(shape[1:])  # a convolution's input with its kernel
        total += rank * (fan_in + shape[0])
    return total


def activation_units(config: dict[str, Any], tokens: int, text_tokens: int = 77) -> float:
    """Tokens x width summed over the denoiser's layers, each weighted by the tensors it keeps for backward."""
    if "block_out_channels" in config:  # a UNet: each level at a quarter of the tokens of the one above
        widths = list(config["block_out_channels"])
        layers = _per_level(config.get("layers_per_block", 2), len(widths))
        depth = _per_level(config.get("transformer_layers_per_block", 1), len(widths))
        attention = [kind.startswith("CrossAttn") for kind in config.get("down_block_types", [])]
        units = 0.0
        for level, width in enumerate(widths):
            level_tokens = tokens / 4**level
            resnets = 2 * layers[level] + 1  # down, then up with the skip's extra one
            per_token = resnets * RESNET_TENSORS
            if level < len(attention) and attention[level]:
                per_token += resnets * depth[level] * ATTENTION_LAYER_TENSORS
            units += level_tokens * width * per_token
        lowest = tokens / 4 ** (len(widths) - 1)
        units += lowest * widths[-1] * (2 * RESNET_TENSORS + depth[-1] * ATTENTION_LAYER_TENSORS)  # the mid block
        return units
    width = int(config.get("num_attention_heads", 1)) * int(config.get("attention_head_dim", 64))
    joint = int(config.get("num_layers", 1)) * JOINT_BLOCK_TENSORS
    single = int(config.get("num_single_layers", 0)) * SINGLE_BLOCK_TENSORS
    return (tokens + text_tokens) * width * (joint + single)


def _text_tokens(model_dir: Path, denoiser: Component) -> int:
    """Prompt tokens per image: the CLIP tokenizer's length, and a joint transformer's T5 tokens."""

    def max_length(folder: str) -> int:
        path = Path(model_dir) / folder / "tokenizer_config.json"
        if not path.is_file():
            return 0
        length = json.loads(path.read_text()).get("model_max_length") or 77
        return int(min(length, 512))

    tokens = max_length("tokenizer") or 77
    t5 = T5_TOKENS.get(str(denoiser.config.get("_class_name")))
    if t5 is not None:
        t5_folder = "tokenizer_3" if (Path(model_dir) / "tokenizer_3").is_dir() else "tokenizer_2"
        t5_length = min(t5, max_length(t5_folder)) if max_length(t5_folder) else 0
        flux = denoiser.config.get("_class_name") == "FluxTransformer2DModel"
        tokens = (t5_length or tokens) if flux else tokens + t5_length
    return tokens


def _per_level(value: Any, levels: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)] * levels


def _geometry(denoiser: Component, vae: Component | None, side: int | None) -> tuple[int, int, int]:
    """(image pixels, latent numel, denoiser tokens) of one image."""
    config = denoiser.config
    channels = int(config.get("in_channels", 4))
    if vae is None:  # pixel space (the shapes model)
        side = side or int(config.get("sample_size", 32))
        return side * side, channels * side * side, side * side
    scale = 2 ** (len(vae.config.get("block_out_channels", [1, 1, 1, 1])) - 1)
    side = side or int(config.get("sample_size", 64)) * scale
    latent_side = side // scale
    if config.get("_class_name") == "FluxTransformer2DModel":  # packed 2x2 patches of in_channels / 4
        return side * side, channels // 4 * latent_side**2, (latent_side // 2) ** 2
    patch = int(config.get("patch_size", 1)) if "block_out_channels" not in config else 1
    return side * side, channels * latent_side**2, (latent_side // patch) ** 2


def _text_width(denoiser: Component) -> int:
    config = denoiser.config
    return int(config.get("joint_attention_dim") or config.get("cross_attention_dim") or 768)


def _latents_kept_per_image(config: TrainConfig) -> float:
    """Latent-sized fp32 tensors the algorithm keeps per image between rollout and the gradient steps."""
    if config.algorithm in ("flow-grpo", "mix-grpo"):
        steps = config.rollout.steps if config.algorithm == "flow-grpo" else config.mix_grpo.window_size
        return config.rollout.steps + 1 + (steps if config.flow_grpo.beta > 0 else 0)
    n_mc = config.vgrpo.n_mc
    return 1 + n_mc * (1 + (1 if config.vgrpo.beta > 0 else 0))


def _inputs_per_image(config: TrainConfig) -> int:
    return config.vgrpo.n_mc if config.algorithm in ("vgrpo", "naive-elbo") else 1
