"""Simulated people for the shapes world: hidden tastes the built-in rewards do not measure, and a
labeller that chooses by one of them, with noise.

A taste is a utility of an image; the labeller prefers the image of higher utility, calls a tie when
the two differ by less than the taste's `tie_below`, and answers the other way with probability
`noise` (a person's slips). None of the tastes is about what the prompt asks for, so a model can follow
both the prompt and the taste.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer_core.shapes.detect import detect_objects_batch, estimate_background


def _leftness(images: np.ndarray) -> np.ndarray:
    """1 - the objects' mean centroid x as a share of the width (no object: 0.5)."""
    width = images.shape[2]
    return np.array(
        [1 - np.mean([o.x for o in found]) / width if found else 0.5 for found in detect_objects_batch(images)]
    )


def _largeness(images: np.ndarray) -> np.ndarray:
    """The objects' mean area as a share of the image (no object: 0)."""
    pixels = images.shape[1] * images.shape[2]
    return np.array(
        [np.mean([o.area for o in found]) / pixels if found else 0.0 for found in detect_objects_batch(images)]
    )


def _warmth(images: np.ndarray) -> np.ndarray:
    """The background's red minus its blue, as a share of 255."""
    background = estimate_background(images)
    return (background[:, 0] - background[:, 2]) / 255.0


@dataclass(frozen=True)
class Taste:
    name: str
    description: str
    utility: Callable[[np.ndarray], np.ndarray]  # uint8 images [N, H, W, 3] -> [N]
    tie_below: float  # utilities closer than this look the same


TASTES: dict[str, Taste] = {
    taste.name: taste
    for taste in (
        # the tie thresholds are about what a person notices on a 32-pixel image: a pixel of shift, four
        # pixels of area, six levels of red against blue
        Taste("left", "objects placed towards the left", _leftness, 1 / 32),
        Taste("large", "large objects", _largeness, 4 / 1024),
        Taste("warm", "a warm (reddish rather than bluish) background", _warmth, 6 / 255),
    )
}


def get_taste(name: str) -> Taste:
    if name not in TASTES:
        raise ValueError(f"taste: unknown {name!r}; allowed: {', '.join(TASTES)}")
    return TASTES[name]


class SimulatedLabeller:
    """Chooses between two images as a person with `taste` would, answering the other way with
    probability `noise`."""

    def __init__(self, taste: str | Taste, noise: float = 0.1, seed: int = 0) -> None:
        if not 0 <= noise < 0.5:
            raise ValueError(f"noise: must be in [0, 0.5), got {noise}")
        self.taste = taste if isinstance(taste, Taste) else get_taste(taste)
        self.noise = noise
        self.rng = random.Random(seed)

    def truth(self, images_a: np.ndarray, images_b: np.ndarray) -> list[str]:
        """The noiseless choices ("a", "b" or "tie") for pairs of image batches [N, H, W, 3]."""
        difference = self.taste.utility(images_a) - self.taste.utility(images_b)
        return ["tie" if abs(d) < self.taste.tie_below else ("a" if d > 0 else "b") for d in difference]

    def choose(self, image_a: np.ndarray, image_b: np.ndarray) -> str:
        """One label for images [H, W, 3], with the labeller's noise."""
        (choice,) = self.truth(image_a[None], image_b[None])
        if choice != "tie" and self.rng.random() < self.noise:
            return "b" if choice == "a" else "a"
        return choice
