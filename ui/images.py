"""Images as the page shows them."""

from __future__ import annotations

import numpy as np


def enlarged(image: np.ndarray, side: int) -> np.ndarray:
    """The image upscaled by a whole factor to about `side` pixels, each pixel a crisp block (a browser
    would blur a small image it enlarges itself)."""
    factor = max(1, side // max(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)
