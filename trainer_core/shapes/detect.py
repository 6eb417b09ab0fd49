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
    # offset . direction as one batched matrix product: [N, H*W, 3] @ [N, 3, C]
    projection = np.matmul(offset.reshape(len(images), -1, 3), directions.transpose(0, 2, 1)).reshape(
        *offset.shape[:3], -1
    )
    length2 = np.einsum("nck,nck->nc", directions, directions)[:, None, None, :]
    alpha = projection / length2
    np.clip(alpha, 0.0, 1.0, out=alpha)  # [N, H, W, C]
    # |offset - alpha direction|^2 = |offset|^2 + alpha (alpha |direction|^2 - 2 offset . direction);
    # |offset|^2 is the same for every colour, so the argmin needs only the rest (in place: no temporaries)
    residual = alpha * length2
    residual -= projection
    residual -= projection
    residual *= alpha
    labels = residual.argmin(axis=-1)
    foreground = np.take_along_axis(alpha, labels[..., None], axis=-1)[..., 0] > 0.5
    return labels, foreground, alpha


def shape_from_features(skew: float, fill: float) -> str:
    """The shape of an object with this vertical skewness and fill ratio (see the module docstring)."""
    if skew <= TRIANGLE_SKEW_MAX:
        return "triangle"
    return "square" if fill >= SQUARE_FILL_MIN else "circle"


def detect_objects(image: np.ndarray) -> list[DetectedObject]:
    """All objects in a uint8 [H, W, 3] image, ordered by position (top-left first)."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected [H, W, 3], got shape {tuple(image.shape)}")
    return detect_objects_batch(image[None])[0]


def detect_objects_batch(images: np.ndarray) -> list[list[DetectedObject]]:
    """`detect_objects` of every image of a uint8 [N, H, W, 3] batch.

    Everything runs on the whole batch at once: the colour arithmetic, the labelling of each colour's
    components (never joining across images), and every component's features, as sums over the
    component's pixels (`np.bincount`) rather than a Python loop over objects.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected [N, H, W, 3], got shape {tuple(images.shape)}")
    labels, foreground, alpha = segment_colors(images)
    height = images.shape[1]
    min_area = MIN_AREA_AT_32 * (height / 32) ** 2
    objects: list[list[DetectedObject]] = [[] for _ in images]
    for ci, color in enumerate(_PALETTE_NAMES):
        components, count = ndimage.label(foreground & (labels == ci), structure=_WITHIN_IMAGE)
        if count == 0:
            continue
        features = component_features(components, count, alpha[..., ci])
        for index in np.flatnonzero(features["area"] >= min_area):
            objects[features["image"][index]].append(
                DetectedObject(
                    shape=shape_from_features(features["skew"][index], features["fill"][index]),
                    color=color,
                    x=float(features["x"][index]),
                    y=float(features["y"][index]),
                    area=int(features["area"][index]),
                )
            )
    return [sorted(found, key=lambda o: (o.y, o.x)) for found in objects]


def component_features(components: np.ndarray, count: int, alpha: np.ndarray) -> dict[str, np.ndarray]:
    """Features of components 1..count of a label array [N, H, W], given one colour's alpha [N, H, W].

    Returns arrays over the components (index i: component i + 1): `image` (the batch index), `area`
    (pixels), centroid `x`, `y` (pixel centres at +0.5), and from the soft mask (alpha over the
    component grown by one pixel, its anti-aliased rim) the vertical `skew` and the `fill` ratio.
    """
    _, height, width = components.shape
    flat = components.ravel()
    pixel = np.flatnonzero(flat)
    label = flat[pixel]
    image, within = np.divmod(pixel, height * width)
    rows, cols = np.divmod(within, width)
    area = np.bincount(label, minlength=count + 1)
    image_of = np.zeros(count + 1, np.int64)
    image_of[label] = image
    # the centroid from the box's corner, as a mean of small integers: exact whatever the summation order
    top = np.full(count + 1, height)
    left = np.full(count + 1, width)
    np.minimum.at(top, label, rows)
    np.minimum.at(left, label, cols)
    x = np.bincount(label, weights=cols - left[label], minlength=count + 1) / np.maximum(area, 1) + left + 0.5
    y = np.bincount(label, weights=rows - top[label], minlength=count + 1) / np.maximum(area, 1) + top + 0.5

    member, member_pixel = _grown_memberships(components)
    weight = alpha.ravel()[member_pixel].astype(np.float64)
    member_rows, member_cols = np.divmod(member_pixel % (height * width), width)
    soft_area = np.bincount(member, weights=weight, minlength=count + 1)
    soft_area[0] = 1.0  # the background is no component; keeps the divisions finite
    mean = np.bincount(member, weights=weight * member_rows, minlength=count + 1) / soft_area
    offset = member_rows - mean[member]
    variance = np.bincount(member, weights=weight * offset**2, minlength=count + 1) / soft_area
    third = np.bincount(member, weights=weight * offset**3, minlength=count + 1) / soft_area
    skew = third / np.maximum(variance, 1e-6) ** 1.5
    column_max = np.zeros((count + 1) * width)
    row_max = np.zeros((count + 1) * height)
    np.maximum.at(column_max, member * width + member_cols, weight)
    np.maximum.at(row_max, member * height + member_rows, weight)
    extent = column_max.reshape(count + 1, width).sum(1) * row_max.reshape(count + 1, height).sum(1)
    fill = soft_area / np.maximum(extent, 1e-12)
    return {
        name: values[1:]
        for name, values in {"image": image_of, "area": area, "x": x, "y": y, "skew": skew, "fill": fill}.items()
    }


def _grown_memberships(components: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(component, flat pixel index) for every pixel within one pixel (8-neighbourhood, same image) of a
    component: each component's mask grown by a pixel. A pixel near two components belongs to both,
    and is listed once per component."""
    _, height, width = components.shape
    near = ndimage.maximum_filter(components != 0, size=(1, 3, 3), mode="constant")
    pixel = np.flatnonzero(near)
    image, within = np.divmod(pixel, height * width)
    rows, cols = np.divmod(within, width)
    # the labels around each such pixel, read from a copy with a zero border round every image
    padded = np.pad(components, ((0, 0), (1, 1), (1, 1))).ravel()
    centre = image * (height + 2) * (width + 2) + (rows + 1) * (width + 2) + cols + 1
    neighbours = [padded[centre + dy * (width + 2) + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    members, pixels = [], []
    for j, neighbour in enumerate(neighbours):
        first_seen = neighbour != 0
        for earlier in neighbours[:j]:
            first_seen &= neighbour != earlier
        members.append(neighbour[first_seen])
        pixels.append(pixel[first_seen])
    return np.concatenate(members), np.concatenate(pixels)
