"""Model adapters: one interface (`DenoiserAdapter`) over every supported model family."""

from __future__ import annotations

import torch

from trainer_core.adapters.base import DenoiserAdapter, PromptEmbeddings
from trainer_core.model_zoo import ModelNotFoundError, model_class_name, resolve_model

SUPPORTED_PIPELINES = ("ShapesPipeline", "StableDiffusion3Pipeline")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device: {device!r} requested but CUDA is not available")
    return torch.device(device)


def load_adapter(name: str, device: str = "auto", resolution: int | None = None) -> DenoiserAdapter:
    """The adapter for a built-in model or a local diffusers directory, weights frozen."""
    path = resolve_model(name)
    class_name = model_class_name(path)
    target = resolve_device(device)
    if class_name == "ShapesPipeline":
        from trainer_core.adapters.shapes import ShapesAdapter
        from trainer_core.model_zoo import load_shapes_pipeline

        return ShapesAdapter(load_shapes_pipeline(name, target))
    if class_name == "StableDiffusion3Pipeline":
        from trainer_core.adapters.sd3 import SD3Adapter

        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
        adapter = SD3Adapter.from_pretrained(path, dtype=dtype, device=str(target))
        if resolution is not None:
            adapter = SD3Adapter(adapter.pipe, resolution)
        adapter.denoiser.requires_grad_(False)
        return adapter
    raise ModelNotFoundError(
        f"model: {path} holds a {class_name}; supported pipelines: {', '.join(SUPPORTED_PIPELINES)}"
    )


__all__ = ["DenoiserAdapter", "PromptEmbeddings", "load_adapter", "resolve_device"]
