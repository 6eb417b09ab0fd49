"""Verifiable scores of a detected scene against its prompt's spec.

- `geneval`  1 when the image shows exactly what the prompt asks: every group
             with its exact count of objects of its shape and colour, no other
             object, and the relation between every pair of the two groups.
- `count`    1 - (count errors per shape + objects of shapes not asked for)
             / objects asked for, clipped to [0, 1]; colour is ignored.
- `color`    objects of the right shape *and* colour (up to each group's
             count) / max(objects asked for, objects of the asked shapes).
- `position` share of (first group, second group) object pairs in the named
             relation; 0 if either group is missing; 1 for prompts without a
             relation.
- `partial`  the mean of count, color and (for relation prompts) position.

`partial` is 1 exactly when `geneval` is 1.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from trainer_core.shapes.detect import DetectedObject, detect_objects, detect_objects_batch
from trainer_core.shapes.grammar import SceneSpec

SCORE_NAMES: tuple[str, ...] = ("geneval", "partial", "count", "color", "position")


def relation_holds(relation: str, a: DetectedObject, b: DetectedObject) -> bool:
    """Does `a <relation> b` hold between the two centroids (image y grows downward)?"""
    if relation == "left of":
        return a.x < b.x
    if relation == "right of":
        return a.x > b.x
    if relation == "above":
        return a.y < b.y
    if relation == "below":
        return a.y > b.y
    raise ValueError(f"relation: unknown {relation!r}")


def score_objects(objects: list[DetectedObject], spec: SceneSpec) -> dict[str, float]:
    """Every score of SCORE_NAMES for one image's detected objects."""
    members = [[o for o in objects if g.matches(o.shape, o.color)] for g in spec.groups]
    asked = sum(g.count for g in spec.groups)

    expected_per_shape: Counter[str] = Counter()
    for g in spec.groups:
        expected_per_shape[g.shape] += g.count
    found_per_shape = Counter(o.shape for o in objects)
    count_error = sum(abs(found_per_shape[s] - n) for s, n in expected_per_shape.items())
    strangers = sum(n for s, n in found_per_shape.items() if s not in expected_per_shape)
    count = float(np.clip(1 - (count_error + strangers) / asked, 0, 1))

    of_asked_shapes = sum(found_per_shape[s] for s in expected_per_shape)
    well_colored = sum(min(len(m), g.count) for m, g in zip(members, spec.groups, strict=True))
    color = well_colored / max(asked, of_asked_shapes)

    if spec.relation is None:
        position = 1.0
        relation_ok = True
    else:
        first, second = members
        pairs = [relation_holds(spec.relation, a, b) for a in first for b in second]
        position = float(np.mean(pairs)) if pairs else 0.0
        relation_ok = bool(pairs) and all(pairs)

    exact_counts = all(len(m) == g.count for m, g in zip(members, spec.groups, strict=True))
    nothing_else = len(objects) == asked
    geneval = float(exact_counts and nothing_else and relation_ok)
    parts = [count, color] + ([position] if spec.relation is not None else [])
    return {"geneval": geneval, "partial": float(np.mean(parts)), "count": count, "color": color, "position": position}


def score_image(image: np.ndarray, spec: SceneSpec) -> dict[str, float]:
    """Detect objects in a uint8 [H, W, 3] image and score them against `spec`."""
    return score_objects(detect_objects(image), spec)


def score_images(images: np.ndarray, specs: list[SceneSpec]) -> list[dict[str, float]]:
    """`score_image` of every image of a uint8 [N, H, W, 3] batch against its spec, detected as one batch."""
    if len(images) != len(specs):
        raise ValueError(f"specs: expected one per image ({len(images)}), got {len(specs)}")
    return [score_objects(found, spec) for found, spec in zip(detect_objects_batch(images), specs, strict=True)]
