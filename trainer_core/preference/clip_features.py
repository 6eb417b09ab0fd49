"""CLIP features from a local directory, for preference models on any image model.

Features of an image x with prompt p, from the normalised embeddings e(x) and e(p) of one CLIP:
[e(x), e(x) * e(p), e(x) . e(p)] (2D + 1 values). A linear Bradley-Terry model on them can weigh what an
image shows (e(x)), how each direction of it agrees with the prompt (the elementwise product), and the
overall agreement that PickScore and CLIPScore read (the cosine).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from trainer_core.model_zoo import use_safetensors
from trainer_core.preference.features import ImageFeatures


def _embedding(output: object) -> torch.Tensor:
    """transformers 5 returns a model output with the projected embedding as `pooler_output`; 4 a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


def preprocessed(processor: object, images: np.ndarray, cache: dict[object, torch.Tensor] | None) -> torch.Tensor:
    """`processor`'s pixel values [N, 3, S, S] of uint8 images [N, H, W, 3], from `cache` when a model of the
    same mix with the same preprocessing has already computed them for these images."""
    if cache is None:
        return processor(images=list(images), return_tensors="pt")["pixel_values"]  # type: ignore[operator]
    key = (
        hashlib.sha1(images.tobytes()).hexdigest(),
        images.shape,
        json.dumps(processor.to_dict(), sort_keys=True),  # type: ignore[attr-defined]
    )
    if key not in cache:
        cache.clear()  # one batch of images at a time
        cache[key] = processor(images=list(images), return_tensors="pt")["pixel_values"]  # type: ignore[operator]
    return cache[key]


class ClipFeatures(ImageFeatures):
    """A CLIP model from a local directory, in inference mode (also what the CLIP-based rewards score with).

    `pixel_cache`, shared between CLIP models of one reward mix, keeps each batch's preprocessed pixels per
    image processor, so models that preprocess alike (OpenAI's CLIP normalisation at 224 px) do it once.
    """

    def __init__(
        self,
        path: str,
        device: str | None = None,
        batch_size: int = 32,
        dtype: torch.dtype = torch.float32,
        pixel_cache: dict[object, torch.Tensor] | None = None,
    ) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        directory = Path(os.path.expanduser(path))
        if not (directory / "config.json").is_file():
            raise ValueError(
                f"features: clip:{path}: no CLIP model there (expected a transformers CLIPModel directory with "
                "config.json, its image processor and tokenizer; nothing is downloaded)"
            )
        self.spec = f"clip:{directory.resolve()}"
        self._use(
            CLIPModel.from_pretrained(directory, local_files_only=True, dtype=dtype, use_safetensors=use_safetensors()),
            AutoImageProcessor.from_pretrained(directory, local_files_only=True),
            AutoTokenizer.from_pretrained(directory, local_files_only=True),
            device,
            batch_size,
            pixel_cache,
        )

    @classmethod
    def from_parts(
        cls,
        spec: str,
        model: torch.nn.Module,
        processor: object,
        tokenizer: object,
        device: str | None = None,
        batch_size: int = 32,
        pixel_cache: dict[object, torch.Tensor] | None = None,
    ) -> ClipFeatures:
        """A CLIP built in memory (a checkpoint converted from another format), used like a loaded one."""
        features = cls.__new__(cls)
        features.spec = spec
        features._use(model, processor, tokenizer, device, batch_size, pixel_cache)
        return features

    def _use(self, model, processor, tokenizer, device, batch_size, pixel_cache) -> None:  # type: ignore[no-untyped-def]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.model = model.to(self.device).eval()
        self.pixel_cache = pixel_cache
        self.processor, self.tokenizer = processor, tokenizer
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def embed(self, images: np.ndarray, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and prompt embeddings, each [N, D]."""
        image_parts, text_parts = [], []
        all_pixels = self.pixels(images)
        for start in range(0, len(images), self.batch_size):
            batch = slice(start, start + self.batch_size)
            pixels = all_pixels[batch].to(self.model.dtype)
            tokens = self.tokenizer(
                prompts[batch], padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            image_parts.append(_embedding(self.model.get_image_features(pixel_values=pixels.to(self.device))))
            text_parts.append(
                _embedding(
                    self.model.get_text_features(
                        input_ids=tokens["input_ids"].to(self.device),
                        attention_mask=tokens["attention_mask"].to(self.device),
                    )
                )
            )
        image, text = torch.cat(image_parts).float(), torch.cat(text_parts).float()
        return torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """The processor's pixel values [N, 3, S, S] of uint8 images [N, H, W, 3]."""
        return preprocessed(self.processor, images, self.pixel_cache)

    def __call__(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"prompts: expected one per image ({len(images)}), got {len(prompts)}")
        image, text = self.embed(images, prompts)
        agreement = image * text
        return torch.cat([image, agreement, agreement.sum(-1, keepdim=True)], dim=-1).cpu().numpy().astype(np.float64)
