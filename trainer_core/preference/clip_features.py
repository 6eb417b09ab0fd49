"""CLIP features from a local directory, for preference models on any image model.

Features of an image x with prompt p, from the normalised embeddings e(x) and e(p) of one CLIP:
[e(x), e(x) * e(p), e(x) . e(p)] (2D + 1 values). A linear Bradley-Terry model on them can weigh what an
image shows (e(x)), how each direction of it agrees with the prompt (the elementwise product), and the
overall agreement that PickScore and CLIPScore read (the cosine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer_core.preference.features import ImageFeatures


def _embedding(output: object) -> torch.Tensor:
    """transformers 5 returns a model output with the projected embedding as `pooler_output`; 4 a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


class ClipFeatures(ImageFeatures):
    def __init__(self, path: str, device: str | None = None, batch_size: int = 32) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        directory = Path(path).expanduser()
        if not (directory / "config.json").is_file():
            raise ValueError(
                f"features: clip:{path}: no CLIP model there (expected a transformers CLIPModel directory with "
                "config.json, its image processor and tokenizer; nothing is downloaded)"
            )
        self.spec = f"clip:{directory.resolve()}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(directory, local_files_only=True).to(self.device).eval()
        self.processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def embed(self, images: np.ndarray, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and prompt embeddings, each [N, D]."""
        image_parts, text_parts = [], []
        for start in range(0, len(images), self.batch_size):
            batch = slice(start, start + self.batch_size)
            pixels = self.processor(images=list(images[batch]), return_tensors="pt")["pixel_values"]
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

    def __call__(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"prompts: expected one per image ({len(images)}), got {len(prompts)}")
        image, text = self.embed(images, prompts)
        agreement = image * text
        return torch.cat([image, agreement, agreement.sum(-1, keepdim=True)], dim=-1).cpu().numpy().astype(np.float64)
