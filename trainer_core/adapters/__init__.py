"""Model adapters: one interface (`DenoiserAdapter`) over every supported model family, each family
declared once in its adapter module (`family.ModelFamily`)."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer_core.adapters.base import DenoiserAdapter, MemoryOptions, PromptEmbeddings
from trainer_core.adapters.family import ModelFamily, families, family_of_pipeline, supported_pipelines
from trainer_core.config import ModelConfig
from trainer_core.model_zoo import ModelNotFoundError, model_class_name, resolve_model


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device: {device!r} requested but CUDA is not available")
    return torch.device(device)


def family_of(path: Path) -> ModelFamily:
    """The family of a pipeline directory, or an error naming the supported ones."""
    class_name = model_class_name(path)
    family = family_of_pipeline(class_name)
    if family is None:
        raise ModelNotFoundError(
            f"model: {path} holds a {class_name}; supported pipelines: {', '.join(supported_pipelines())}"
        )
    return family


def model_family(name: str, models_dir: Path | None = None) -> ModelFamily:
    """The family of a built-in model, a model in `models_dir` or a local diffusers directory."""
    return family_of(resolve_model(name, models_dir))


def load_adapter(
    name: str, device: str = "auto", resolution: int | None = None, models_dir: Path | None = None
) -> DenoiserAdapter:
    """The adapter for a built-in model, a model in `models_dir` or a local diffusers directory, weights
    frozen."""
    path = resolve_model(name, models_dir)
    adapter = family_of(path).load(path, resolve_device(device), resolution)
    adapter.denoiser.requires_grad_(False)
    return adapter


def memory_options(config: ModelConfig, family: ModelFamily) -> MemoryOptions:
    """The config's memory options, "auto" and 0 read as the family's defaults."""
    defaults = family.memory

    def switch(value: str, default: bool) -> bool:
        return default if value == "auto" else value == "on"

    return MemoryOptions(
        gradient_checkpointing=switch(config.gradient_checkpointing, defaults.gradient_checkpointing),
        offload=switch(config.offload, defaults.offload),
        decode_batch=config.decode_batch or defaults.decode_batch,
        prompt_cache=config.prompt_cache,
    )


def load_model(config: ModelConfig, models_dir: Path | None = None) -> DenoiserAdapter:
    """The adapter a training config's `model` section describes, memory options applied."""
    adapter = load_adapter(config.name, config.device, config.resolution, models_dir)
    adapter.configure_memory(memory_options(config, model_family(config.name, models_dir)))
    return adapter


__all__ = [
    "DenoiserAdapter",
    "MemoryOptions",
    "PromptEmbeddings",
    "families",
    "family_of",
    "load_adapter",
    "load_model",
    "memory_options",
    "model_family",
    "resolve_device",
]
