import random

import numpy as np
import pytest

from trainer_core.preference.artifact import (
    PreferenceCard,
    PreferenceReward,
    load_preference_model,
    save_preference_model,
)
from trainer_core.preference.bradley_terry import (
    BradleyTerryConfig,
    LinearPreferenceModel,
    Penalty,
    cross_validate,
    fit_bradley_terry,
    fit_with_validation,
    group_folds,
    outcomes,
    shared_image_groups,
)
from trainer_core.preference.features import build_features
from trainer_core.preference.selection import all_pairs, closest_to_even, information, uncertain_first
from trainer_core.shapes.grammar import sample_spec
from trainer_core.shapes.render import render_spec
from trainer_core.shapes.tastes import TASTES, SimulatedLabeller

NONE = Penalty("l2", 0.0)


def sigmoid(x: float) -> float:
    return 1 / (1 + np.exp(-x))


def test_two_items_recover_the_closed_form_win_rate():
    """Two items, one-hot features, no penalty: the MLE has P(a beats b) = (wins + ties / 2) / labels."""
    one, two = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    choices = ["a"] * 6 + ["b"] * 2 + ["tie"] * 4  # P = (6 + 2) / 12 = 2/3
    y = outcomes(choices)
    model = fit_bradley_terry(np.repeat(one, 12, 0), np.repeat(two, 12, 0), y, NONE)
    assert model.preference(one, two)[0] == pytest.approx(2 / 3, abs=1e-6)
    # the label's order does not matter: b against a gives the complement
    assert model.preference(two, one)[0] == pytest.approx(1 / 3, abs=1e-6)


def test_ties_pull_scores_together_and_the_penalty_shrinks():
    one, two = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    decided = fit_bradley_terry(np.repeat(one, 10, 0), np.repeat(two, 10, 0), outcomes(["a"] * 8 + ["b"] * 2), NONE)
    with_ties = fit_bradley_terry(
        np.repeat(one, 20, 0), np.repeat(two, 20, 0), outcomes(["a"] * 8 + ["b"] * 2 + ["tie"] * 10), NONE
    )
    penalised = fit_bradley_terry(
        np.repeat(one, 10, 0), np.repeat(two, 10, 0), outcomes(["a"] * 8 + ["b"] * 2), Penalty("l2", 1.0)
    )
    assert decided.preference(one, two)[0] == pytest.approx(0.8, abs=1e-6)
    assert with_ties.preference(one, two)[0] == pytest.approx(13 / 20, abs=1e-6)
    assert 0.5 < penalised.preference(one, two)[0] < 0.8
    with pytest.raises(ValueError, match="choice: must be a, b or tie, got 'left'"):
        outcomes(["a", "left"])


def test_a_linear_taste_is_learned_and_cross_validated():
    rng = np.random.default_rng(0)
    truth = np.array([2.0, -1.0, 0.0, 0.5])
    fa, fb = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    p = np.array([sigmoid(x) for x in (fa - fb) @ truth])
    y = (rng.random(300) < p).astype(float)
    groups = list(range(300))
    model, cv, penalty = fit_with_validation(fa, fb, y, groups, BradleyTerryConfig())
    direction = model.weights / model.scale
    cosine = direction @ truth / np.linalg.norm(direction) / np.linalg.norm(truth)
    assert cosine > 0.97
    # the best possible accuracy here is the mean of max(p, 1-p); CV must come close and not exceed it by chance
    bayes = float(np.mean(np.maximum(p, 1 - p)))
    assert bayes - 0.08 < cv.accuracy < bayes + 0.06
    assert cv.n_scored == 300 and cv.folds == 5 and 0 < cv.standard_error < 0.05
    assert penalty in BradleyTerryConfig().penalties


def test_random_labels_cross_validate_near_chance():
    rng = np.random.default_rng(1)
    fa, fb = rng.normal(size=(200, 6)), rng.normal(size=(200, 6))
    y = (rng.random(200) < 0.5).astype(float)
    cv = cross_validate(fa, fb, y, list(range(200)), BradleyTerryConfig())
    assert abs(cv.accuracy - 0.5) < 3 * 0.5 / np.sqrt(200)


def test_labels_sharing_an_image_stay_in_one_fold():
    groups = shared_image_groups(["x", "y", "p", "q", "z"], ["y", "z", "q", "r", "w"])
    assert groups[0] == groups[1] == groups[4] and groups[2] == groups[3] and groups[0] != groups[2]
    folds = group_folds(["g1"] * 5 + ["g2"] * 5 + [f"s{i}" for i in range(10)], 4, seed=0)
    assert len(set(folds[:5])) == 1 and len(set(folds[5:10])) == 1
    assert sorted(np.bincount(folds).tolist()) == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="at least two different images"):
        cross_validate(np.zeros((3, 2)), np.ones((3, 2)), np.ones(3), [0, 0, 0], BradleyTerryConfig())


def test_closest_to_even_orders_by_distance_from_even_odds():
    preferences = np.array([0.9, 0.52, 0.1, 0.45, 0.5, 0.7])
    assert closest_to_even(preferences, 3).tolist() == [4, 1, 3]
    assert all_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_uncertain_first_prefers_a_toss_up_where_the_weights_are_still_unsure():
    # feature 0 is pinned down by the labels so far, feature 1 not at all
    model = LinearPreferenceModel(np.array([1.0, 0.0]), np.zeros(2), np.ones(2), np.diag([0.01, 1.0]))
    a = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0], [3.0, 0.0]])
    b = np.array([[0.01, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    # pairs 0 and 1 are toss-ups only because their images hardly differ; pair 4 is decided already
    assert uncertain_first(model, a, b, 5).tolist()[:2] == [2, 3]
    assert information(model, a, b)[2] == pytest.approx(0.25 * 4)
    assert information(model, a, b)[1] == 0.0
    # closest to even odds would have shown the pair of identical images first
    assert closest_to_even(model.preference(a, b), 1).tolist() == [1]


def test_the_fit_knows_which_directions_its_labels_have_pinned_down():
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    fa[:, 2] = fb[:, 2] = 0.0  # no label ever compares along feature 2
    y = (fa[:, 0] - fb[:, 0] > 0).astype(np.float64)
    model = fit_bradley_terry(fa, fb, y, Penalty("l2", 0.01))
    variances = np.diag(model.covariance)
    assert variances[2] == pytest.approx(1.0)  # the prior, untouched
    assert variances[1] < 0.1 and variances[0] < variances[2]


def rendered(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = random.Random(seed)
    specs = [sample_spec(rng) for _ in range(n)]
    return np.stack([render_spec(s, rng)[0] for s in specs]), [s.prompt for s in specs]


@pytest.mark.parametrize("taste", sorted(TASTES))
def test_every_taste_is_learned_from_shapes_statistics(taste):
    """Each simulated taste (10% noise) is learned from 150 labels of rendered scenes by the weight-free
    shapes features, judged by the noiseless taste on pairs the fit never saw."""
    images_a, prompts = rendered(250, seed=1)
    images_b, _ = rendered(250, seed=2)
    labeller = SimulatedLabeller(taste, noise=0.1, seed=3)
    choices = [labeller.choose(a, b) for a, b in zip(images_a[:150], images_b[:150], strict=True)]
    features = build_features("shapes-stats")
    fa, fb = features(images_a, prompts), features(images_b, prompts)
    model, cv, _ = fit_with_validation(fa[:150], fb[:150], outcomes(choices), list(range(150)), BradleyTerryConfig())
    truth = np.array(labeller.truth(images_a[150:], images_b[150:]))
    decided = truth != "tie"
    predicted = np.where(model.preference(fa[150:], fb[150:]) > 0.5, "a", "b")
    assert np.mean(predicted[decided] == truth[decided]) >= 0.85
    assert cv.accuracy >= 0.75  # ceiling 0.9 with 10% noise


def test_tastes_disagree_with_one_another():
    images_a, _ = rendered(120, seed=4)
    images_b, _ = rendered(120, seed=5)
    truths = {name: np.array(SimulatedLabeller(name).truth(images_a, images_b)) for name in TASTES}
    names = sorted(truths)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            both = (truths[first] != "tie") & (truths[second] != "tie")
            agreement = np.mean(truths[first][both] == truths[second][both])
            assert 0.25 < agreement < 0.75, (first, second, agreement)


def test_the_labeller_slips_at_its_noise_rate():
    images_a, _ = rendered(200, seed=6)
    images_b, _ = rendered(200, seed=7)
    labeller = SimulatedLabeller("large", noise=0.2, seed=0)
    truth = labeller.truth(images_a, images_b)
    given = [labeller.choose(a, b) for a, b in zip(images_a, images_b, strict=True)]
    decided = [(t, g) for t, g in zip(truth, given, strict=True) if t != "tie"]
    flipped = np.mean([t != g for t, g in decided])
    assert 0.12 < flipped < 0.28
    with pytest.raises(ValueError, match="noise: must be in"):
        SimulatedLabeller("large", noise=0.6)
    with pytest.raises(ValueError, match="taste: unknown 'blue'; allowed: left, large, warm"):
        SimulatedLabeller("blue")


def test_a_saved_model_scores_as_a_reward(tmp_path):
    images_a, prompts = rendered(80, seed=8)
    images_b, _ = rendered(80, seed=9)
    choices = SimulatedLabeller("warm", noise=0.0).truth(images_a, images_b)
    features = build_features("shapes-stats")
    model, cv, penalty = fit_with_validation(
        features(images_a, prompts),
        features(images_b, prompts),
        outcomes(choices),
        list(range(80)),
        BradleyTerryConfig(),
    )
    card = PreferenceCard(
        "warm",
        1,
        "shapes-stats",
        80,
        {"a": 40, "b": 40, "tie": 0},
        cv.accuracy,
        cv.standard_error,
        cv.folds,
        str(penalty),
        "2026-01-01",
        "2026-01-02",
        ["sim"],
        0.1,
        "2026-01-02",
    )
    save_preference_model(tmp_path / "v0001", model, card)
    loaded, loaded_card = load_preference_model(tmp_path / "v0001")
    assert loaded_card == card and loaded_card.reference == "pref:warm@v1"
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.covariance, model.covariance)
    reward = PreferenceReward.load(tmp_path / "v0001")
    assert reward.name == "pref:warm@v1"
    scores = reward.score(images_a, prompts)
    np.testing.assert_allclose(scores, model.score(features(images_a, prompts)))
    warmth = TASTES["warm"].utility(images_a)
    assert np.corrcoef(scores, warmth)[0, 1] > 0.8


def test_feature_names_are_checked():
    with pytest.raises(ValueError, match="features: unknown 'sift'; allowed: shapes-stats, clip:DIR"):
        build_features("sift")
    with pytest.raises(ValueError, match="features: clip needs a directory"):
        build_features("clip")
    with pytest.raises(ValueError, match="no CLIP model there"):
        build_features("clip:/nonexistent")
