"""Procedural renderer: a scene spec to an anti-aliased RGB image.

Shapes are axis-aligned and drawn from signed distance functions, with pixel
coverage clip(0.5 - sdf, 0, 1) as the anti-aliasing alpha. Every size is given
at 32 px and scaled with the resolution, so 64 px scenes look the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from trainer_core.shapes.grammar import COLORS, SceneSpec

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 210, 30),
    "green": (40, 165, 60),
    "blue": (40, 90, 225),
    "purple": (145, 60, 195),
}
assert tuple(PALETTE) == COLORS

# Geometry at 32 px; `scale = resolution / 32`.
MIN_HALF_SIZE, MAX_HALF_SIZE = 3.5, 5.5
GAP = 2.5  # minimum free space between two shapes, and between the two sides of a relation


@dataclass(frozen=True)
class PlacedObject:
    shape: str
    color: str
    x: float  # centre, pixels from the left
    y: float  # centre, pixels from the top
    half_size: float


def _sdf(shape: str, xx: np.ndarray, yy: np.ndarray, obj: PlacedObject) -> np.ndarray:
    dx, dy, r = xx - obj.x, yy - obj.y, obj.half_size
    if shape == "circle":
        return np.hypot(dx, dy) - r
    if shape == "square":
        s = 0.9 * r
        qx, qy = np.abs(dx) - s, np.abs(dy) - s
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    # Isosceles triangle pointing up: apex (0, -r), base corners (+-r, r).
    # Intersection of three half-planes; max of signed distances is exact
    # inside and a close bound outside, which is all anti-aliasing needs.
    n = 5**0.5
    left = (-2 * dx - dy - r) / n
    right = (2 * dx - dy - r) / n
    bottom = dy - r
    return np.maximum(np.maximum(left, right), bottom)


def render_scene(
    objects: list[PlacedObject],
    resolution: int,
    background: tuple[float, float, float],
    rng: np.random.Generator | None = None,
    color_jitter: float = 10.0,
) -> np.ndarray:
    """Draw placed objects over a plain background; returns uint8 [H, W, 3]."""
    centers = np.arange(resolution, dtype=np.float32) + 0.5
    xx, yy = np.meshgrid(centers, centers)
    image = np.broadcast_to(np.asarray(background, np.float32), (resolution, resolution, 3)).copy()
    for obj in objects:
        alpha = np.clip(0.5 - _sdf(obj.shape, xx, yy, obj), 0.0, 1.0)[..., None]
        color = np.asarray(PALETTE[obj.color], np.float32)
        if rng is not None and color_jitter:
            color = np.clip(color + rng.uniform(-color_jitter, color_jitter, 3), 0, 255)
        image = image * (1 - alpha) + color * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def random_background(rng: random.Random) -> tuple[float, float, float]:
    """A light grey with a slight random tint."""
    base = rng.uniform(215, 240)
    return tuple(base + rng.uniform(-8, 8) for _ in range(3))  # type: ignore[return-value]


def layout_scene(spec: SceneSpec, rng: random.Random, resolution: int = 32, max_tries: int = 200) -> list[PlacedObject]:
    """Random sizes and positions consistent with the spec.

    Shapes never overlap (GAP apart), stay inside the frame, and for a relation
    every object of the first group is strictly on the named side of every
    object of the second, with at least GAP between the two sides.
    """
    scale = resolution / 32
    for attempt in range(max_tries):
        shrink = 1.0 - 0.15 * attempt / max_tries  # crowded scenes get smaller shapes
        placed = _try_layout(spec, rng, resolution, scale, shrink)
        if placed is not None:
            return placed
    raise RuntimeError(f"could not lay out {spec.prompt!r} at {resolution} px")


def _try_layout(
    spec: SceneSpec, rng: random.Random, resolution: int, scale: float, shrink: float
) -> list[PlacedObject] | None:
    split = rng.uniform(0.4, 0.6) * resolution
    items: list[tuple[int, str, str]] = []
    for gi, group in enumerate(spec.groups):
        for _ in range(group.count):
            items.append((gi, group.shape, group.color or rng.choice(COLORS)))
    rng.shuffle(items)
    centers = np.arange(resolution, dtype=np.float32) + 0.5
    xx, yy = np.meshgrid(centers, centers)
    occupied = np.full((resolution, resolution), np.inf, np.float32)  # distance to the nearest placed shape
    half_gap = GAP * scale / 2
    placed: list[PlacedObject] = []
    for gi, shape, color in items:
        half = rng.uniform(MIN_HALF_SIZE, MAX_HALF_SIZE) * scale * shrink
        lo_x = lo_y = half + scale  # every shape fits in its [-half, half] box
        hi_x = hi_y = resolution - half - scale
        if spec.relation is not None:
            # Group 0 goes on the relation's side of `split`, group 1 on the other.
            low_side = (gi == 0) == (spec.relation in ("left of", "above"))
            if spec.relation in ("left of", "right of"):
                lo_x, hi_x = (lo_x, min(hi_x, split - half_gap)) if low_side else (max(lo_x, split + half_gap), hi_x)
            else:
                lo_y, hi_y = (lo_y, min(hi_y, split - half_gap)) if low_side else (max(lo_y, split + half_gap), hi_y)
        if lo_x >= hi_x or lo_y >= hi_y:
            return None
        for _ in range(50):
            candidate = PlacedObject(shape, color, rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y), half)
            distance = _sdf(shape, xx, yy, candidate)
            if not np.any((distance < half_gap) & (occupied < half_gap)):
                occupied = np.minimum(occupied, distance)
                placed.append(candidate)
                break
        else:
            return None
    return placed


def render_spec(spec: SceneSpec, rng: random.Random, resolution: int = 32) -> tuple[np.ndarray, list[PlacedObject]]:
    """Lay out and draw one scene; returns (uint8 [H, W, 3], the placed objects)."""
    objects = layout_scene(spec, rng, resolution)
    np_rng = np.random.default_rng(rng.getrandbits(32))
    return render_scene(objects, resolution, random_background(rng), np_rng), objects
