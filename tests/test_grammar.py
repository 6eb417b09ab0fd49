import random

import pytest

from trainer_core.shapes.detect import DetectedObject
from trainer_core.shapes.grammar import (
    CATEGORIES,
    COLORS,
    RELATIONS,
    SHAPES,
    UNSEEN_COMBOS,
    ObjectGroup,
    PromptError,
    SceneSpec,
    counterfactual_spec,
    parse_prompt,
    sample_spec,
    vocabulary,
)
from trainer_core.shapes.render import layout_scene
from trainer_core.shapes.scoring import score_objects


def test_world_size_meets_the_spec():
    assert len(COLORS) >= 6
    assert {"circle", "square", "triangle"} <= set(SHAPES)
    assert set(RELATIONS) == {"left of", "right of", "above", "below"}


def test_text_round_trip_over_sampled_specs():
    rng = random.Random(0)
    seen_categories = set()
    for _ in range(3000):
        spec = sample_spec(rng)
        assert parse_prompt(spec.prompt) == spec
        assert 1 <= spec.n_objects <= 4
        seen_categories.add(spec.category)
    assert seen_categories == set(CATEGORIES)


def test_known_prompts_parse_to_their_specs():
    spec = parse_prompt("two red circles left of a blue square")
    assert spec == SceneSpec((ObjectGroup(2, "circle", "red"), ObjectGroup(1, "square", "blue")), "left of")
    assert spec.prompt == "two red circles left of a blue square"
    assert parse_prompt("  Three yellow triangles. ") == SceneSpec((ObjectGroup(3, "triangle", "yellow"),))
    assert parse_prompt("an orange square to the right of a green circle").relation == "right of"
    assert parse_prompt("a circle").groups == (ObjectGroup(1, "circle", None),)
    assert ObjectGroup(1, "square", "orange").text == "an orange square"


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        ("", "prompt"),
        ("two pink circles", "color"),
        ("a red hexagon", "shape"),
        ("five red circles", "count"),
        ("two red circle", "shape"),
        ("three red circles and two blue squares", "count"),
        ("a red circle and a red circle", "groups"),
        ("a circle and a square", "color"),
    ],
)
def test_bad_prompts_name_the_field(prompt, field):
    with pytest.raises(PromptError, match=f"^{field}"):
        parse_prompt(prompt)


def test_training_sampler_never_draws_unseen_combos():
    rng = random.Random(1)
    drawn = [sample_spec(rng) for _ in range(5000)]
    assert not any(spec.combos & UNSEEN_COMBOS for spec in drawn)
    rng = random.Random(1)
    assert any(sample_spec(rng, "count", allow_unseen=True).combos & UNSEEN_COMBOS for _ in range(2000))


def test_vocabulary_covers_every_word():
    words = set(vocabulary())
    rng = random.Random(2)
    for _ in range(500):
        assert set(sample_spec(rng).prompt.split()) <= words


def test_counterfactuals_change_what_the_category_tests_and_reject_the_original_image():
    rng = random.Random(4)
    for _ in range(3000):
        spec = sample_spec(rng)
        twin = counterfactual_spec(rng, spec)
        assert twin.category == spec.category and twin != spec
        assert not twin.combos & UNSEEN_COMBOS
        # the objects of a scene drawn for spec, as the detector would report them
        objects = [DetectedObject(o.shape, o.color, o.x, o.y, area=30) for o in layout_scene(spec, rng)]
        assert score_objects(objects, spec)["geneval"] == 1.0
        assert score_objects(objects, twin)["geneval"] == 0.0  # one image cannot serve both
        shapes = [g.shape for g in spec.groups]
        if spec.category == "count":
            assert (twin.groups[0].shape, twin.groups[0].color) == (spec.groups[0].shape, spec.groups[0].color)
        elif spec.category == "position":
            assert twin.groups == spec.groups and {spec.relation, twin.relation} in (
                {"left of", "right of"},
                {"above", "below"},
            )
        elif spec.category in ("colors", "two_objects"):
            assert [g.shape for g in twin.groups] == shapes
        elif spec.category == "single" and spec.groups[0].color is not None:
            assert twin.groups[0].color is not None  # "a circle" would accept a red circle too
