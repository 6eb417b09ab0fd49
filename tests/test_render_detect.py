import random

import numpy as np
import pytest
from scipy import ndimage

from trainer_core.shapes.detect import component_features, detect_objects, detect_objects_batch, segment_colors
from trainer_core.shapes.grammar import parse_prompt, sample_spec
from trainer_core.shapes.render import PlacedObject, render_scene, render_spec
from trainer_core.shapes.scoring import relation_holds, score_image, score_images


def _agreement(n: int, resolution: int, seed: int) -> float:
    rng = random.Random(seed)
    hits = 0
    for _ in range(n):
        spec = sample_spec(rng, allow_unseen=True)
        image, placed = render_spec(spec, rng, resolution)
        detected = detect_objects(image)
        same_objects = sorted((o.shape, o.color) for o in detected) == sorted((o.shape, o.color) for o in placed)
        hits += same_objects and score_image(image, spec)["geneval"] == 1.0
    return hits / n


@pytest.mark.slow
def test_detector_agrees_with_ground_truth_on_2000_fresh_scenes():
    assert _agreement(2000, 32, seed=12345) >= 0.98


@pytest.mark.slow
def test_detector_agrees_at_64_pixels():
    assert _agreement(400, 64, seed=7) >= 0.98


def test_render_is_deterministic_in_the_seed_and_anti_aliased():
    spec = parse_prompt("two red circles left of a blue square")
    a, _ = render_spec(spec, random.Random(3), 32)
    b, _ = render_spec(spec, random.Random(3), 32)
    c, _ = render_spec(spec, random.Random(4), 32)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Anti-aliasing: many more distinct colours than background + 3 shapes.
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 10


def test_layout_respects_relations_and_does_not_overlap():
    rng = random.Random(5)
    for _ in range(300):
        spec = sample_spec(rng, "position")
        _, placed = render_spec(spec, rng, 32)
        first = [o for o in placed if spec.groups[0].matches(o.shape, o.color)]
        second = [o for o in placed if spec.groups[1].matches(o.shape, o.color)]
        assert len(first) == spec.groups[0].count and len(second) == spec.groups[1].count
        assert all(relation_holds(spec.relation, a, b) for a in first for b in second)
        for i, a in enumerate(placed):
            for b in placed[i + 1 :]:
                assert np.hypot(a.x - b.x, a.y - b.y) > a.half_size + b.half_size * 0.9


def test_detector_reads_shape_colour_and_centroid_of_a_hand_placed_scene():
    objects = [
        PlacedObject("triangle", "green", x=8.0, y=9.0, half_size=4.5),
        PlacedObject("square", "purple", x=24.0, y=8.0, half_size=4.0),
        PlacedObject("circle", "orange", x=16.0, y=24.0, half_size=5.0),
    ]
    detected = detect_objects(render_scene(objects, 32, (230, 230, 230)))
    assert [(o.shape, o.color) for o in detected] == [("square", "purple"), ("triangle", "green"), ("circle", "orange")]
    circle = detected[2]
    assert abs(circle.x - 16.0) < 0.3 and abs(circle.y - 24.0) < 0.3
    # The triangle's centroid sits below its box centre (apex up).
    assert detected[1].y > 9.0


def test_blank_image_has_no_objects():
    assert detect_objects(np.full((32, 32, 3), 228, np.uint8)) == []


def test_batch_detection_equals_one_image_at_a_time():
    rng = random.Random(21)
    noise = np.random.default_rng(0)
    specs, images = [], []
    for _ in range(48):
        spec = sample_spec(rng, allow_unseen=True)
        image, _ = render_spec(spec, rng, 32)
        # model samples are noisy: jitter pixels so that edge pixels sit near the thresholds
        images.append(np.clip(image + noise.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
        specs.append(spec)
    # a red square cut by the bottom edge of one image and another by the top edge of the next: stacked,
    # they touch, and must stay two objects of two images
    bottom = render_scene([PlacedObject("square", "red", x=16.0, y=30.0, half_size=4.0)], 32, (235, 235, 235))
    top = render_scene([PlacedObject("square", "red", x=16.0, y=2.0, half_size=4.0)], 32, (40, 40, 60))
    images += [bottom, top]
    specs += [parse_prompt("a red square")] * 2
    batch = np.stack(images)

    found = detect_objects_batch(batch)
    assert found == [detect_objects(image) for image in images]
    assert sum(len(f) for f in found) > 60 and len(found[-2]) == 1 and len(found[-1]) == 1
    assert score_images(batch, specs) == [score_image(image, spec) for image, spec in zip(images, specs, strict=True)]
    with pytest.raises(ValueError, match="specs"):
        score_images(batch, specs[:-1])


def _features_one_at_a_time(components: np.ndarray, index: int, alpha: np.ndarray) -> tuple[float, ...]:
    """The features of one component, computed directly from its own masks."""
    n = int(np.flatnonzero((components == index).any(axis=(1, 2)))[0])
    mask = components[n] == index
    rows, cols = np.nonzero(mask)
    grown = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))
    soft = np.where(grown, alpha[n], 0.0).astype(np.float64)
    area = soft.sum()
    row_index = np.arange(soft.shape[0])[:, None]
    mean = (soft * row_index).sum() / area
    variance = (soft * (row_index - mean) ** 2).sum() / area
    skew = (soft * (row_index - mean) ** 3).sum() / area / max(variance, 1e-6) ** 1.5
    fill = area / (soft.max(axis=0).sum() * soft.max(axis=1).sum())
    return n, mask.sum(), cols.mean() + 0.5, rows.mean() + 0.5, skew, fill


def test_component_features_equal_each_components_own_computation():
    rng = random.Random(8)
    noise = np.random.default_rng(8)
    images = []
    for _ in range(24):
        image, _ = render_spec(sample_spec(rng, "count"), rng, 32)
        images.append(np.clip(image + noise.normal(0, 12, image.shape), 0, 255).astype(np.uint8))
    labels, foreground, alpha = segment_colors(np.stack(images))
    within_image = np.zeros((3, 3, 3), bool)
    within_image[1] = True  # 8-connected in an image, never across images
    compared = 0
    for ci in range(alpha.shape[-1]):
        components, count = ndimage.label(foreground & (labels == ci), structure=within_image)
        features = component_features(components, count, alpha[..., ci])
        for index in range(1, count + 1):
            expected = _features_one_at_a_time(components, index, alpha[..., ci])
            got = [features[name][index - 1] for name in ("image", "area", "x", "y", "skew", "fill")]
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
            compared += 1
    assert compared > 100
