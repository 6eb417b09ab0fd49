"""Object detector from pixels: colour segmentation, components, shape, centroid.

Each pixel is explained as a mix of the background and one palette colour:
for colour c, alpha_c is the projection of (pixel - background) on
(c - background) and the residual is what that mix fails to explain. The pixel
takes the colour with the smallest residual and counts as foreground when its
alpha exceeds one half, which handles anti-aliased edges without inventing a
third colour. Components of one colour are objects; their shape comes from two
scale-free features of the object's soft (alpha) mask, which keeps sub-pixel
information that a thresholded mask loses on 7-pixel shapes:

- the vertical skewness: about -0.57 for an upward triangle, 0 for circles and
  squares;
- the fill ratio area / (width * height), with width and height the summed
  column and row maxima of alpha: 1 for a square, pi/4 for a circle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from trainer_core.shapes.render import PALETTE

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.asarray([PALETTE[c] for c in _PALETTE_NAMES], np.float32)  # [C, 3]
_EIGHT_CONNECTED = np.ones((3, 3), bool)

TRIANGLE_SKEW_MAX = -0.28
SQUARE_FILL_MIN = 0.89
MIN_AREA_AT_32 = 8.0


@dataclass(frozen=True)
class DetectedObject:
    shape: str
    color: str
    x: float  # centroid, pixels from the left
    y: float  # centroid, pixels from the top
    area: int


def estimate_background(image: np.ndarray) -> np.ndarray:
    """Median colour of the one-pixel border, float32 [3]."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    return np.median(border, axis=0)


def segment_colors(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel palette index [H, W], foreground mask [H, W] and alpha [H, W, C]."""
    pixels = image.astype(np.float32)
    background = estimate_background(image)
    offset = pixels - background  # [H, W, 3]
    directions = _PALETTE_RGB - background  # [C, 3]
    alpha = np.einsum("hwk,ck->hwc", offset, directions) / np.einsum("ck,ck->c", directions, directions)
    alpha = np.clip(alpha, 0.0, 1.0)  # [H, W, C]
    residual = np.linalg.norm(offset[:, :, None, :] - alpha[..., None] * directions, axis=-1)  # [H, W, C]
    labels = residual.argmin(axis=-1)
    foreground = np.take_along_axis(alpha, labels[..., None], axis=-1)[..., 0] > 0.5
    return labels, foreground, alpha


def classify_shape(alpha: np.ndarray) -> str:
    """Shape of one object from its soft mask (alpha in [0, 1], zero elsewhere)."""
    area = alpha.sum()
    rows = np.arange(alpha.shape[0], dtype=np.float64)
    row_mass = alpha.sum(axis=1)
    mean = (rows * row_mass).sum() / area
    variance = ((rows - mean) ** 2 * row_mass).sum() / area
    skew = ((rows - mean) ** 3 * row_mass).sum() / area / max(variance, 1e-6) ** 1.5
    if skew <= TRIANGLE_SKEW_MAX:
        return "triangle"
    fill = area / (alpha.max(axis=0).sum() * alpha.max(axis=1).sum())
    return "square" if fill >= SQUARE_FILL_MIN else "circle"


def detect_objects(image: np.ndarray) -> list[DetectedObject]:
    """All objects in a uint8 [H, W, 3] image, ordered by position (top-left first)."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected [H, W, 3], got shape {tuple(image.shape)}")
    labels, foreground, alpha = segment_colors(image)
    min_area = MIN_AREA_AT_32 * (image.shape[0] / 32) ** 2
    objects: list[DetectedObject] = []
    for ci, color in enumerate(_PALETTE_NAMES):
        components, _ = ndimage.label(foreground & (labels == ci), structure=_EIGHT_CONNECTED)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            mask = components[box] == index
            area = int(mask.sum())
            if area < min_area:
                continue
            rows, cols = np.nonzero(mask)
            objects.append(
                DetectedObject(
                    shape=classify_shape(_soft_mask(components == index, alpha[..., ci])),
                    color=color,
                    x=float(cols.mean() + box[1].start + 0.5),
                    y=float(rows.mean() + box[0].start + 0.5),
                    area=area,
                )
            )
    return sorted(objects, key=lambda o: (o.y, o.x))


def _soft_mask(mask: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha of one object over its mask grown by a pixel (its anti-aliased rim), cropped."""
    grown = ndimage.binary_dilation(mask, structure=_EIGHT_CONNECTED)
    rows, cols = np.nonzero(grown)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return np.where(grown, alpha, 0.0)[box]
