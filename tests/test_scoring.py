import random

import pytest

from trainer_core.shapes.grammar import parse_prompt, sample_spec
from trainer_core.shapes.render import PlacedObject, render_scene, render_spec
from trainer_core.shapes.scoring import score_image

BACKGROUND = (228, 229, 231)


def scene(*objects: tuple[str, str, float, float]):
    placed = [PlacedObject(shape, color, x, y, 4.0) for shape, color, x, y in objects]
    return render_scene(placed, 32, BACKGROUND)


PROMPT = "two red circles left of a blue square"
RIGHT = scene(("circle", "red", 7, 8), ("circle", "red", 8, 24), ("square", "blue", 24, 16))


def test_a_correct_scene_scores_one_everywhere():
    assert score_image(RIGHT, parse_prompt(PROMPT)) == pytest.approx(
        {"geneval": 1.0, "partial": 1.0, "count": 1.0, "color": 1.0, "position": 1.0}
    )


def test_wrong_relation_fails_position_only():
    mirrored = scene(("circle", "red", 25, 8), ("circle", "red", 24, 24), ("square", "blue", 8, 16))
    scores = score_image(mirrored, parse_prompt(PROMPT))
    assert scores["geneval"] == 0.0 and scores["position"] == 0.0
    assert scores["count"] == 1.0 and scores["color"] == 1.0
    assert scores["partial"] == pytest.approx(2 / 3)


def test_half_of_the_pairs_in_relation_gives_half_position():
    mixed = scene(("circle", "red", 5, 8), ("circle", "red", 27, 24), ("square", "blue", 16, 16))
    assert score_image(mixed, parse_prompt(PROMPT))["position"] == pytest.approx(0.5)


def test_missing_object_costs_count_and_colour():
    one_circle = scene(("circle", "red", 7, 8), ("square", "blue", 24, 16))
    scores = score_image(one_circle, parse_prompt(PROMPT))
    assert scores["geneval"] == 0.0
    assert scores["count"] == pytest.approx(1 - 1 / 3)
    assert scores["color"] == pytest.approx(2 / 3)
    assert scores["position"] == 1.0


def test_wrong_colour_keeps_count_but_loses_colour():
    image = scene(("circle", "green", 16, 16))
    scores = score_image(image, parse_prompt("a red circle"))
    assert scores == pytest.approx({"geneval": 0.0, "partial": 0.5, "count": 1.0, "color": 0.0, "position": 1.0})
    assert score_image(image, parse_prompt("a circle"))["geneval"] == 1.0


def test_an_extra_object_breaks_exactness():
    image = scene(("circle", "red", 8, 16), ("triangle", "yellow", 24, 16))
    scores = score_image(image, parse_prompt("a red circle"))
    assert scores["geneval"] == 0.0 and scores["count"] == 0.0 and scores["color"] == 1.0


def test_counts_are_exact():
    three = scene(("square", "blue", 6, 6), ("square", "blue", 24, 8), ("square", "blue", 14, 24))
    assert score_image(three, parse_prompt("three blue squares"))["geneval"] == 1.0
    scores = score_image(three, parse_prompt("two blue squares"))
    assert scores["geneval"] == 0.0 and scores["count"] == pytest.approx(0.5)
    assert scores["color"] == pytest.approx(2 / 3)


def test_empty_image_scores_zero():
    empty = render_scene([], 32, BACKGROUND)
    scores = score_image(empty, parse_prompt(PROMPT))
    assert scores["geneval"] == scores["count"] == scores["color"] == scores["position"] == 0.0


def test_partial_is_one_exactly_when_geneval_is_one():
    rng = random.Random(9)
    for _ in range(300):
        spec = sample_spec(rng)
        other = sample_spec(rng)
        image, _ = render_spec(other, rng, 32)
        scores = score_image(image, spec)
        assert all(0.0 <= v <= 1.0 for v in scores.values())
        assert (scores["partial"] == 1.0) == (scores["geneval"] == 1.0)
