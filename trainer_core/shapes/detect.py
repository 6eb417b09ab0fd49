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
_WITHIN_IMAGE = np.stack([np.zeros((3, 3), bool), _EIGHT_CONNECTED, np.zeros((3, 3), bool)])  # [N, H, W] labels

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


def estimate_background(images: np.ndarray) -> np.ndarray:
    """Median colour of each image's one-pixel border: float32 [N, 3] for images [N, H, W, 3]."""
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    return np.median(border.astype(np.float32), axis=1)


def segment_colors(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel palette index [N, H, W], foreground mask [N, H, W] and alpha [N, H, W, C] of images
    [N, H, W, 3], each against its own background."""
    pixels = images.astype(np.float32)
    background = estimate_background(images)  # [N, 3]
    offset = pixels - background[:, None, None, :]  # [N, H, W, 3]
    directions = _PALETTE_RGB - background[:, None, :]  # [N, C, 3]
    projection = np.einsum("nhwk,nck->nhwc", offset, directions)  # offset . direction
    length2 = np.einsum("nck,nck->nc", directions, directions)[:, None, None, :]
    alpha = np.clip(projection / length2, 0.0, 1.0)  # [N, H, W, C]
    # |offset - alpha direction|^2, expanded: no [N, H, W, C, 3] temporary
    residual = (offset * offset).sum(-1, keepdims=True) - 2 * alpha * projection + alpha * alpha * length2
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
    return detect_objects_batch(image[None])[0]


def detect_objects_batch(images: np.ndarray) -> list[list[DetectedObject]]:
    """`detect_objects` of every image of a uint8 [N, H, W, 3] batch: the colour arithmetic runs on the
    whole batch at once, and each colour's components are labelled in one call for all images (never
    joining across them); what remains per object is its shape and centroid."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected [N, H, W, 3], got shape {tuple(images.shape)}")
    labels, foreground, alpha = segment_colors(images)
    height, width = images.shape[1:3]
    min_area = MIN_AREA_AT_32 * (height / 32) ** 2
    objects: list[list[DetectedObject]] = [[] for _ in images]
    for ci, color in enumerate(_PALETTE_NAMES):
        components, _ = ndimage.label(foreground & (labels == ci), structure=_WITHIN_IMAGE)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            n, rows_box, cols_box = box[0].start, box[1], box[2]
            mask = components[n, rows_box, cols_box] == index
            area = int(mask.sum())
            if area < min_area:
                continue
            rows, cols = np.nonzero(mask)
            # the object's box and its one-pixel rim, enough for the dilation of its mask
            rim = (
                slice(max(rows_box.start - 1, 0), min(rows_box.stop + 1, height)),
                slice(max(cols_box.start - 1, 0), min(cols_box.stop + 1, width)),
            )
            soft = _soft_mask(components[n][rim] == index, alpha[n][rim][..., ci])
            objects[n].append(
                DetectedObject(
                    shape=classify_shape(soft),
                    color=color,
                    x=float(cols.mean() + cols_box.start + 0.5),
                    y=float(rows.mean() + rows_box.start + 0.5),
                    area=area,
                )
            )
    return [sorted(found, key=lambda o: (o.y, o.x)) for found in objects]


def _soft_mask(mask: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha of one object over its mask grown by a pixel (its anti-aliased rim), cropped."""
    grown = ndimage.binary_dilation(mask, structure=_EIGHT_CONNECTED)
    rows, cols = np.nonzero(grown)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return np.where(grown, alpha, 0.0)[box]
