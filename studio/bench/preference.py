"""`vgrpo bench preference`: does a person's labelling move the model toward their taste?

Simulated people with hidden tastes (`trainer_core.shapes.tastes`: objects to the left, large objects,
a warm background; none measured by a built-in reward) label pairs of `shapes-base` images with 10%
slips, through the studio's own code: the Label tab's pair sampler logic, the stored labels' fit, the
versioned reward, and a V-GRPO job config that names it.

1. Label efficiency. A pool of candidate pairs (two of four seeds of one training prompt, as the Label
   tab draws them) and a fixed test set of pairs on other prompts. Labels are drawn one prompt at a
   time, in random order (a random pair of the prompt's six), uncertain first (the pair whose label
   would teach the current fit most, as the Label tab orders them) or closest to even odds (the bare
   rule, for comparison); the fit is redone every `round_size` labels. At each label count the reward
   is fitted with nested cross-validation: the cross-validated accuracy on the (noisy) labels, whose
   ceiling is 1 - noise, and the accuracy against the noiseless taste on the test pairs, which is what
   the comparison of the orders uses (uncertain pairs are the hard ones, so their own CV accuracy reads
   lower). Repeated with several labeller and sampler seeds.
   The test pairs are pairs of two images of different prompts that the taste does not call a tie: the
   fitted reward scores single images, and two seeds of one prompt are too alike in some tastes (the
   background's colour) to leave enough pairs a person would not call a tie.
2. Training. For each taste, the reward fitted on 200 random labels is stored in a scratch data
   directory and trained on with V-GRPO (`shapes-geneval` with the mix geneval + partial + pref:TASTE,
   normalised then summed) for a fixed number of iterations inside the time budget. Win rate of the
   tuned model over the base on held-out prompts (same prompt and seed, judged by the noiseless taste,
   a tie counting half) and held-out geneval accuracy before and after.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from storage.data_dir import DataDir
from storage.reward_store import RewardStore
from studio.labeling import CANDIDATE_SEEDS
from studio.preference import LabelSet, fit_preference_reward
from trainer_core.adapters import load_adapter
from trainer_core.adapters.base import DenoiserAdapter
from trainer_core.config import TrainConfig, from_dict, load_preset, to_dict
from trainer_core.preference.bradley_terry import (
    BradleyTerryConfig,
    LinearPreferenceModel,
    cross_validate,
    fit_bradley_terry,
    outcomes,
    select_penalty,
)
from trainer_core.preference.features import ImageFeatures, build_features
from trainer_core.preference.selection import all_pairs, closest_to_even, uncertain_first
from trainer_core.shapes.evaluation import SamplingConfig, evaluate, generate_images
from trainer_core.shapes.prompt_sets import load_heldout, train_prompts
from trainer_core.shapes.tastes import TASTES, SimulatedLabeller

ORDERS = ("random", "uncertain", "closest")
PARTS = ("labels", "training")
SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}


@dataclass(frozen=True)
class PreferenceBenchSettings:
    """What `vgrpo bench preference` runs (every value is written into the report).

    tastes: the simulated people (left, large, warm).
    noise: each labeller's share of slips (0.1).
    label_counts: where the accuracy curves are read (25, 50, 100, 200, 400).
    round_size: labels between refits when ordering uncertain first; the curve is also read there (20).
    repeats: labeller and sampler seeds per taste and order (6).
    pool_prompts: training prompts of the candidate pool, CANDIDATE_SEEDS images each (450).
    test_images: images of other prompts (one seed each) the accuracy against the noiseless taste is read
        on (400).
    test_pairs: at most this many pairs of two test images that the taste decides, drawn at random from all
        such pairs (of two prompts: images of one prompt are too alike in some tastes, such as the
        background's colour, to leave enough decided pairs) (5000).
    train_labels: random labels the trained-on reward is fitted with (200).
    preset, iterations, time_budget_minutes, preference_weight: the V-GRPO run per taste
        (shapes-geneval, 80, 20, 0.25).
    eval_seeds: seeds per held-out prompt for the win rate and the geneval accuracy (2).
    """

    tastes: tuple[str, ...] = tuple(TASTES)
    noise: float = 0.1
    label_counts: tuple[int, ...] = (25, 50, 100, 200, 400)
    round_size: int = 20
    repeats: int = 6
    pool_prompts: int = 450
    test_images: int = 400
    test_pairs: int = 5000
    train_labels: int = 200
    preset: str = "shapes-geneval"
    iterations: int = 80
    time_budget_minutes: float = 20.0
    preference_weight: float = 0.25
    eval_seeds: int = 2
    features: str = "shapes-stats"

    def __post_init__(self) -> None:
        for taste in self.tastes:
            if taste not in TASTES:
                raise ValueError(f"--tastes: unknown {taste!r}; allowed: {', '.join(TASTES)}")
        if max(self.label_counts) > self.pool_prompts:
            raise ValueError("label_counts: at most one label per pool prompt; raise pool_prompts")
        if self.round_size < 1:
            raise ValueError(f"round_size: must be at least 1, got {self.round_size}")

    @property
    def refits(self) -> list[int]:
        """Label counts at which an active order refits (and the curve is read)."""
        every_round = range(self.round_size, max(self.label_counts) + 1, self.round_size)
        return sorted({*every_round, *self.label_counts})


@dataclass
class Pool:
    prompts: list[str]
    images: np.ndarray  # [P * CANDIDATE_SEEDS, H, W, 3], prompt-major
    features: np.ndarray  # [P * CANDIDATE_SEEDS, D]

    def index(self, prompt: int, seed: int) -> int:
        return prompt * CANDIDATE_SEEDS + seed


def build_pool(
    adapter: DenoiserAdapter, prompts: list[str], seeds: int, sampling: SamplingConfig, features: ImageFeatures
) -> Pool:
    flat = [p for p in prompts for _ in range(seeds)]
    images = generate_images(adapter, flat, [s for _ in prompts for s in range(seeds)], sampling)
    return Pool(prompts, images, features(images, flat))


def label_curve(
    pool: Pool,
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    taste: str,
    order: str,
    seed: int,
    settings: PreferenceBenchSettings,
    config: BradleyTerryConfig,
) -> list[dict[str, float]]:
    """Test accuracy at each refit (and CV accuracy at each label count) for one labeller seed and order.

    `test` holds the features of both images of each test pair and whether the taste prefers the first.
    """
    rng = random.Random(seed)
    labeller = SimulatedLabeller(taste, settings.noise, seed)
    test_a, test_b, first_preferred = test
    prompts = list(range(len(pool.prompts)))
    rng.shuffle(prompts)
    pairs = all_pairs(CANDIDATE_SEEDS)
    chosen: list[tuple[int, int]] = []
    choices: list[str] = []
    model: LinearPreferenceModel | None = None
    reads = settings.refits if order != "random" else sorted(settings.label_counts)
    rows = []
    for n in reads:
        for prompt in prompts[len(chosen) : n]:
            candidates = [(pool.index(prompt, i), pool.index(prompt, j)) for i, j in pairs]
            pick = (
                rng.choice(candidates)
                if model is None or order == "random"
                else _active_pick(model, pool, candidates, order)
            )
            chosen.append(pick)
            choices.append(labeller.choose(pool.images[pick[0]], pool.images[pick[1]]))
        fa = pool.features[[a for a, _ in chosen]]
        fb = pool.features[[b for _, b in chosen]]
        y = outcomes(choices)
        groups = [a // CANDIDATE_SEEDS for a, _ in chosen]  # one prompt's images share a group
        penalty = select_penalty(fa, fb, y, np.asarray(groups), config)
        model = fit_bradley_terry(fa, fb, y, penalty)
        row: dict[str, float] = {
            "labels": n,
            "test_accuracy": float(np.mean((model.preference(test_a, test_b) > 0.5) == first_preferred)),
        }
        if n in settings.label_counts and order != "closest":  # the bare rule is compared on test accuracy only
            cv = cross_validate(fa, fb, y, groups, config)
            row.update(cv_accuracy=cv.accuracy, cv_standard_error=cv.standard_error, penalty=str(penalty))
        rows.append(row)
    return rows


def _active_pick(
    model: LinearPreferenceModel, pool: Pool, candidates: list[tuple[int, int]], order: str
) -> tuple[int, int]:
    features_a = pool.features[[a for a, _ in candidates]]
    features_b = pool.features[[b for _, b in candidates]]
    if order == "uncertain":
        return candidates[int(uncertain_first(model, features_a, features_b, 1)[0])]
    return candidates[int(closest_to_even(model.preference(features_a, features_b), 1)[0])]


def decided_test_pairs(images: np.ndarray, taste: str, limit: int, seed: int = 404) -> tuple[np.ndarray, ...]:
    """Up to `limit` pairs (first, second indices into `images`) that the noiseless taste does not call a
    tie, drawn at random from all pairs, and whether it prefers the first of each."""
    first, second = np.triu_indices(len(images), 1)
    truth = outcomes(SimulatedLabeller(taste).truth(images[first], images[second]))
    decided = np.flatnonzero(truth != 0.5)
    keep = np.sort(np.random.default_rng(seed).choice(decided, min(limit, len(decided)), replace=False))
    return first[keep], second[keep], truth[keep] == 1.0


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def label_efficiency(
    adapter: DenoiserAdapter,
    settings: PreferenceBenchSettings,
    sampling: SamplingConfig,
    log: Callable[[str], None],
) -> dict[str, object]:
    features = build_features(settings.features)
    started = time.monotonic()
    pool_prompts = [s.prompt for s in train_prompts(settings.pool_prompts, seed=101)]
    pool = build_pool(adapter, pool_prompts, CANDIDATE_SEEDS, sampling, features)
    test_prompts = [s.prompt for s in train_prompts(settings.test_images, seed=202)]
    test_pool = build_pool(adapter, test_prompts, 1, sampling, features)
    log(f"pool of {len(pool.images)} and test of {len(test_pool.images)} images in {time.monotonic() - started:.0f} s")
    config = BradleyTerryConfig()
    result: dict[str, object] = {}
    for taste in settings.tastes:
        first, second, first_preferred = decided_test_pairs(test_pool.images, taste, settings.test_pairs)
        test = (test_pool.features[first], test_pool.features[second], first_preferred)
        curves = {
            order: [label_curve(pool, test, taste, order, seed, settings, config) for seed in range(settings.repeats)]
            for order in ORDERS
        }
        summary = {}
        for order, runs in curves.items():
            table = []
            for n in settings.label_counts:
                at_n = [next(r for r in run if r["labels"] == n) for run in runs]
                test_mean, test_sd = _mean_sd([r["test_accuracy"] for r in at_n])
                cell = {"labels": n, "test_accuracy": test_mean, "test_sd": test_sd}
                if "cv_accuracy" in at_n[0]:
                    cell["cv_accuracy"], cell["cv_sd"] = _mean_sd([r["cv_accuracy"] for r in at_n])
                table.append(cell)
            summary[order] = table
        random_200 = next(r["test_accuracy"] for r in summary["random"] if r["labels"] == 200)
        entry: dict[str, object] = {
            "orders": summary,
            "runs": curves,
            "random_200_test_accuracy": random_200,
            "decided_test_pairs": len(first),
        }
        for order in ("uncertain", "closest"):
            mean = {
                n: float(np.mean([run[i]["test_accuracy"] for run in curves[order]]))
                for i, n in enumerate(settings.refits)
            }
            entry[f"{order}_mean_test_accuracy"] = mean
            entry[f"{order}_labels_to_reach_random_200"] = min(
                (n for n, acc in mean.items() if acc >= random_200), default=None
            )
        result[taste] = entry
        log(
            f"{taste}: random 200 -> test {random_200:.3f}; uncertain first reaches it with "
            f"{entry['uncertain_labels_to_reach_random_200']} labels, closest to even odds with "
            f"{entry['closest_labels_to_reach_random_200']}"
        )
    return result


def train_on_taste(
    taste: str, settings: PreferenceBenchSettings, work: Path, sampling: SamplingConfig, log: Callable[[str], None]
) -> dict[str, object]:
    """Fit on 200 random labels through the studio's fit, train V-GRPO on pref:TASTE, judge by the taste."""
    from studio.training import run_training

    data_dir = DataDir(work / "home").create()
    adapter = load_adapter("shapes-base")
    labeller = SimulatedLabeller(taste, settings.noise, seed=7)
    rng = random.Random(7)
    prompts = [s.prompt for s in train_prompts(settings.train_labels, seed=303)]
    seeds = [rng.sample(range(1000), 2) for _ in prompts]
    images_a = generate_images(adapter, prompts, [s[0] for s in seeds], sampling)
    images_b = generate_images(adapter, prompts, [s[1] for s in seeds], sampling)
    choices = [labeller.choose(a, b) for a, b in zip(images_a, images_b, strict=True)]
    now = datetime.now(UTC)
    labels = LabelSet(
        prompts, list(images_a), list(images_b), choices, [f"simulated-{taste}"] * len(prompts), [now] * len(prompts)
    )
    card = fit_preference_reward(labels, settings.features, taste, RewardStore(data_dir))
    log(f"{taste}: fitted {card.summary()}")

    config = load_preset(settings.preset)
    data = to_dict(config)
    data.update(iterations=settings.iterations, time_budget_minutes=settings.time_budget_minutes)
    data["rewards"] = {
        "weights": {"geneval": 1.0, "partial": 0.5, f"pref:{taste}": settings.preference_weight},
        "aggregation": "normalize_then_sum",
        "advantage_std": "group",
    }
    data["logging"] = {**data["logging"], "sample_every": 0, "checkpoint_every": settings.iterations}
    config = from_dict(TrainConfig, data)
    started = time.monotonic()
    result = run_training(config, work / f"run-{taste}", data_dir=data_dir)
    train_s = time.monotonic() - started
    log(f"{taste}: {result.iterations_done} iterations in {train_s / 60:.1f} min")

    specs = load_heldout()
    held_prompts = [s.prompt for s in specs for _ in range(settings.eval_seeds)]
    held_seeds = [seed for _ in specs for seed in range(settings.eval_seeds)]
    base_adapter = load_adapter("shapes-base")
    base_images = generate_images(base_adapter, held_prompts, held_seeds, sampling)
    base_eval = evaluate(base_adapter, specs, settings.eval_seeds, sampling)
    tuned = load_adapter("shapes-base")
    tuned.load_lora(result.final_checkpoint)
    tuned_images = generate_images(tuned, held_prompts, held_seeds, sampling)
    tuned_eval = evaluate(tuned, specs, settings.eval_seeds, sampling)
    verdicts = SimulatedLabeller(taste, noise=0.0).truth(tuned_images, base_images)
    wins = np.array([SCORE[v] for v in verdicts])
    utility = TASTES[taste].utility
    return {
        "card": dataclasses.asdict(card),
        "config": to_dict(config),
        "iterations": result.iterations_done,
        "train_minutes": train_s / 60,
        "win_rate": float(wins.mean()),
        "win_rate_standard_error": float(wins.std(ddof=1) / np.sqrt(len(wins))),
        "ties": int(np.sum(wins == 0.5)),
        "pairs_judged": len(wins),
        "taste_utility_base": float(utility(base_images).mean()),
        "taste_utility_tuned": float(utility(tuned_images).mean()),
        "geneval_base": base_eval.accuracy["overall"],
        "geneval_tuned": tuned_eval.accuracy["overall"],
        "geneval_base_standard_error": base_eval.overall_standard_error,
        "geneval_tuned_standard_error": tuned_eval.overall_standard_error,
    }


def preference_benchmark(
    settings: PreferenceBenchSettings,
    work: Path,
    parts: tuple[str, ...] = PARTS,
    previous: dict[str, object] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Run `parts` ("labels", "training") for `settings.tastes`; results of other parts and tastes are
    kept from `previous`. Each entry records the settings it ran with."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"--parts: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(PARTS)}")
    torch.manual_seed(0)
    sampling = SamplingConfig()  # the sampler the Label tab shows pairs with
    report: dict[str, object] = previous or {}
    report.setdefault("label_efficiency", {})
    report.setdefault("training", {})
    report["sampling"] = dataclasses.asdict(sampling)
    if "labels" in parts:
        started = time.monotonic()
        efficiency = label_efficiency(load_adapter("shapes-base"), settings, sampling, log)
        for entry in efficiency.values():
            entry["settings"] = dataclasses.asdict(settings)  # type: ignore[index]
        report["label_efficiency"].update(efficiency)  # type: ignore[union-attr]
        log(f"label efficiency done in {(time.monotonic() - started) / 60:.1f} min")
    if "training" in parts:
        for taste in settings.tastes:
            entry = train_on_taste(taste, settings, work, sampling, log)
            entry["settings"] = dataclasses.asdict(settings)
            report["training"][taste] = entry  # type: ignore[index]
            log(
                f"{taste}: win rate {entry['win_rate']:.3f}, geneval {entry['geneval_base']:.3f} -> "
                f"{entry['geneval_tuned']:.3f}"
            )
    return report


def summary_rows(report: dict[str, object]) -> list[dict[str, object]]:
    rows = []
    efficiency = report["label_efficiency"]
    training = report.get("training", {})
    for taste in sorted(set(efficiency) | set(training)):  # type: ignore[arg-type]
        row: dict[str, object] = {"taste": taste}
        result = efficiency.get(taste)  # type: ignore[union-attr]
        if result is None:
            rows.append(row)
            continue
        orders = result["orders"]
        for order, short in (("random", "rand"), ("uncertain", "unc"), ("closest", "even")):
            for entry in orders.get(order, []):
                if entry["labels"] in (50, 100, 200):
                    if "cv_accuracy" in entry:
                        row[f"{short} CV@{entry['labels']}"] = f"{entry['cv_accuracy']:.3f}±{entry['cv_sd']:.3f}"
                    row[f"{short} test@{entry['labels']}"] = f"{entry['test_accuracy']:.3f}±{entry['test_sd']:.3f}"
        row["unc labels to rand@200"] = result["uncertain_labels_to_reach_random_200"]
        row["even labels to rand@200"] = result.get("closest_labels_to_reach_random_200", "")
        if taste in training:
            t = training[taste]
            row["win rate"] = f"{t['win_rate']:.3f}±{t['win_rate_standard_error']:.3f}"
            row["geneval base→tuned"] = f"{t['geneval_base']:.3f}→{t['geneval_tuned']:.3f}"
            row["train min"] = f"{t['train_minutes']:.1f}"
        rows.append(row)
    return rows


def write_outputs(report: dict[str, object], out: Path) -> None:
    from studio.bench import markdown_table, write_report

    write_report(report, out / "preference.json")
    rows = summary_rows(report)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for row in rows:
        for column in columns:
            row.setdefault(column, "")
    (out / "preference.md").write_text(markdown_table(rows, columns) + "\n")


def load_report(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())
