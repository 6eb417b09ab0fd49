"""`shapes-stats`: image features of the shapes world that need no trained weights.

Generic statistics of a scene, not of any one taste: what colour the background is, how much of the
image each palette colour covers, where the foreground lies (a 4 x 4 grid of coverage), and what the
detector finds (how many objects, how large, where, how spread, which shapes). A linear preference
model on them can learn tastes about colour, size, place, spread or shape.
"""

from __future__ import annotations

import numpy as np

from trainer_core.preference.features import ImageFeatures
from trainer_core.shapes.detect import detect_objects_batch, estimate_background, segment_colors
from trainer_core.shapes.grammar import SHAPES
from trainer_core.shapes.render import PALETTE

GRID = 4
FEATURE_NAMES: tuple[str, ...] = (
    *(f"background_{c}" for c in "rgb"),
    *(f"cover_{color}" for color in PALETTE),
    *(f"cover_cell_{row}{col}" for row in range(GRID) for col in range(GRID)),
    "objects",
    "area_mean",
    "area_std",
    "x_mean",
    "y_mean",
    "x_std",
    "y_std",
    *(f"share_{shape}" for shape in SHAPES),
)


class ShapesStatistics(ImageFeatures):
    spec = "shapes-stats"

    def __call__(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """Features [N, len(FEATURE_NAMES)] of uint8 images [N, H, W, 3] (the prompts are not used)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected [N, H, W, 3], got shape {tuple(images.shape)}")
        n, height, width, _ = images.shape
        background = estimate_background(images) / 255.0  # [N, 3]
        labels, foreground, _ = segment_colors(images)
        cover = np.stack([(foreground & (labels == ci)).mean(axis=(1, 2)) for ci in range(len(PALETTE))], 1)
        cells = foreground.reshape(n, GRID, height // GRID, GRID, width // GRID).mean(axis=(2, 4)).reshape(n, -1)
        objects = np.zeros((n, 7 + len(SHAPES)))
        for i, found in enumerate(detect_objects_batch(images)):
            if not found:
                objects[i, 3:5] = 0.5  # nothing found: place it in the middle, not in a corner
                continue
            area = np.array([o.area for o in found]) / (height * width)
            x = np.array([o.x for o in found]) / width
            y = np.array([o.y for o in found]) / height
            shares = [sum(o.shape == s for o in found) / len(found) for s in SHAPES]
            objects[i] = [len(found), area.mean(), area.std(), x.mean(), y.mean(), x.std(), y.std(), *shares]
        return np.concatenate([background, cover, cells, objects], axis=1)
