"""Frozen features of images (and their prompts) for preference models, by name.

A feature extractor is named as on the command line and in a reward's card: `NAME` or `NAME:ARGUMENT`.

- `shapes-stats`  the shapes world: background colour, colour and spatial mass, objects' sizes, places,
                  shapes; no weights.
- `clip:DIR`      a CLIP model from a local directory (`transformers.CLIPModel` with its processor and
                  tokenizer, as PickScore ships): the image embedding and its product with the prompt's.

Extractors are built only when used; listing them loads nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class ImageFeatures(ABC):
    """images uint8 [N, H, W, 3] + prompts -> float features [N, D]."""

    #: how the extractor is named: `build_features(spec)` builds it again
    spec: str

    @abstractmethod
    def __call__(self, images: np.ndarray, prompts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class FeatureKind:
    description: str
    needs_argument: bool
    build: Callable[[str | None], ImageFeatures]


def _shapes_stats(argument: str | None) -> ImageFeatures:
    from trainer_core.shapes.features import ShapesStatistics

    return ShapesStatistics()


def _clip(argument: str | None) -> ImageFeatures:
    from trainer_core.preference.clip_features import ClipFeatures

    return ClipFeatures(argument or "")


FEATURE_KINDS: dict[str, FeatureKind] = {
    "shapes-stats": FeatureKind(
        "shapes world: background colour, colour and spatial mass, objects' sizes, places and shapes",
        False,
        _shapes_stats,
    ),
    "clip": FeatureKind("a local CLIP directory: image embedding and its product with the prompt's", True, _clip),
}


def build_features(spec: str) -> ImageFeatures:
    """The extractor named `NAME` or `NAME:ARGUMENT`; a bad name says what is allowed."""
    name, _, argument = (spec or "").partition(":")
    kind = FEATURE_KINDS.get(name.strip())
    if kind is None:
        raise ValueError(f"features: unknown {spec!r}; allowed: shapes-stats, clip:DIR (a local CLIP directory)")
    if kind.needs_argument and not argument.strip():
        raise ValueError(f"features: {name} needs a directory, as {name}:DIR")
    if not kind.needs_argument and argument:
        raise ValueError(f"features: {name} takes no argument, got {spec!r}")
    return kind.build(argument.strip() or None)
