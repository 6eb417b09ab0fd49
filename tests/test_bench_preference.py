"""`vgrpo bench preference`'s label-efficiency curve on rendered scenes (no model), and its report."""

import random

import numpy as np
import pytest

from studio.bench.preference import (
    ORDERS,
    Pool,
    PreferenceBenchSettings,
    decided_test_pairs,
    label_curve,
    summary_rows,
    write_outputs,
)
from studio.labeling import CANDIDATE_SEEDS
from trainer_core.preference.bradley_terry import BradleyTerryConfig
from trainer_core.preference.features import build_features
from trainer_core.shapes.grammar import sample_spec
from trainer_core.shapes.render import render_spec
from trainer_core.shapes.tastes import SimulatedLabeller


def rendered_pool(prompts: int, seeds: int, seed: int) -> Pool:
    rng = random.Random(seed)
    specs = [sample_spec(rng) for _ in range(prompts)]
    images = np.stack([render_spec(spec, rng)[0] for spec in specs for _ in range(seeds)])
    flat = [spec.prompt for spec in specs for _ in range(seeds)]
    return Pool([s.prompt for s in specs], images, build_features("shapes-stats")(images, flat))


@pytest.mark.slow
def test_every_order_learns_a_taste_and_the_report_is_written(tmp_path):
    settings = PreferenceBenchSettings(
        tastes=("large",), label_counts=(25, 75), round_size=25, pool_prompts=80, repeats=1
    )
    pool = rendered_pool(80, CANDIDATE_SEEDS, seed=0)
    test_pool = rendered_pool(60, 1, seed=1)
    first, second, first_preferred = decided_test_pairs(test_pool.images, "large", limit=500)
    assert len(first) == 500 and (first < second).all()
    truth = SimulatedLabeller("large").truth(test_pool.images[first], test_pool.images[second])
    assert "tie" not in truth and (np.array(truth) == "a").tolist() == first_preferred.tolist()
    test = (test_pool.features[first], test_pool.features[second], first_preferred)
    curves = {order: label_curve(pool, test, "large", order, 0, settings, BradleyTerryConfig()) for order in ORDERS}
    assert [row["labels"] for row in curves["random"]] == [25, 75]
    assert [row["labels"] for row in curves["uncertain"]] == [25, 50, 75]  # read at every refit
    for order in ("uncertain", "closest"):
        # the first round is random in every order
        assert curves[order][0]["test_accuracy"] == curves["random"][0]["test_accuracy"]
        assert curves[order][1]["labels"] == 50
    for order, rows in curves.items():
        assert rows[-1]["test_accuracy"] >= 0.8
        assert ("cv_accuracy" in rows[-1]) == (order != "closest")
    assert 0.5 <= curves["uncertain"][-1]["cv_accuracy"] <= 1

    row = {"labels": 75, "cv_accuracy": 0.9, "cv_sd": 0.0, "test_accuracy": 0.95, "test_sd": 0.0}
    report = {
        "label_efficiency": {
            "large": {
                "orders": {"random": [row], "uncertain": [row]},
                "uncertain_labels_to_reach_random_200": 50,
            }
        },
        "training": {
            "large": {
                "win_rate": 0.8,
                "win_rate_standard_error": 0.01,
                "geneval_base": 0.4,
                "geneval_tuned": 0.42,
                "train_minutes": 7.0,
            }
        },
    }
    write_outputs(report, tmp_path)
    table = (tmp_path / "preference.md").read_text()
    assert "| large |" in table and "0.800±0.010" in table and "0.400→0.420" in table
    assert summary_rows(report)[0]["unc labels to rand@200"] == 50
