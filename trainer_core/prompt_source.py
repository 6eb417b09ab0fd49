"""Where an iteration's prompts come from: a prompts file (any model), or the shapes world's samplers."""

from __future__ import annotations

import os
import random

import numpy as np

from trainer_core.files import read_text_file


def read_prompt_lines(spec: str) -> list[tuple[int, str]]:
    """(line number, prompt) of each non-blank line of the file `spec` names, or a ValueError naming
    `rollout.prompts` and the file, never its content."""
    if not os.path.isfile(spec):  # never raises, even on a name too long for the filesystem
        allowed = ", ".join(PromptSource.SPECS)
        raise ValueError(f"rollout.prompts: {spec!r} is neither one of {allowed} nor an existing prompts file")
    try:
        lines = [(n, line.strip()) for n, line in enumerate(read_text_file(spec).splitlines(), 1) if line.strip()]
    except ValueError as error:
        raise ValueError(f"rollout.prompts: {error}") from None
    if not lines:
        raise ValueError(f"rollout.prompts: {spec} holds no prompts")
    return lines


class PromptSource:
    """Prompts for rollouts: the shapes grammar's training sampler, or the lines of a file.

    "train" draws each prompt's category uniformly; "train-balanced" deals categories from shuffled
    decks of all of them, so every window of len(CATEGORIES) prompts covers each category once and
    an iteration's gradient is not dominated by whichever categories it happened to draw;
    "train-adaptive" draws categories in proportion to a moving average of how much their groups'
    rewards spread (`observe`), so rollouts go where the policy still errs some of the time instead
    of to categories it always gets right (or always wrong), where every image ties and teaches
    nothing. A share ADAPTIVE_UNIFORM of the draws stays uniform, so no category is dropped.
    "train-counterfactual" draws prompts in pairs: a "train" prompt, then its counterfactual
    (`counterfactual_spec`: the same scene but another count, the opposite relation, the colours
    swapped, ...), so that with shared rollout noise the same layout is judged under both.
    """

    SPECS = ("train", "train-balanced", "train-adaptive", "train-counterfactual")
    #: "train-adaptive": weight of the old average when a category's new groups are observed
    ADAPTIVE_DECAY = 0.9
    #: "train-adaptive": share of the category probabilities spread uniformly
    ADAPTIVE_UNIFORM = 0.2

    def __init__(self, spec: str, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.lines: list[str] | None = None
        self.deck: list[str] = []  # categories still to deal, "train-balanced" only
        #: "train-adaptive": moving average of each category's group reward spread, once seen
        self.category_spread: dict[str, float] = {}
        self.drawn_categories: list[str] = []  # of the last draw, for `observe`
        if spec not in self.SPECS:
            self.lines = [prompt for _, prompt in read_prompt_lines(spec)]

    def draw(self, n: int) -> list[str]:
        if self.lines is not None:
            return [self.rng.choice(self.lines) for _ in range(n)]
        from trainer_core.shapes.grammar import CATEGORIES, counterfactual_spec, sample_spec

        if self.spec == "train":
            return [sample_spec(self.rng).prompt for _ in range(n)]
        if self.spec == "train-counterfactual":
            prompts = []
            while len(prompts) < n:
                spec = sample_spec(self.rng)
                prompts += [spec.prompt, counterfactual_spec(self.rng, spec).prompt]
            return prompts[:n]
        if self.spec == "train-adaptive":
            self.drawn_categories = self.rng.choices(CATEGORIES, self.category_probabilities(), k=n)
            return [sample_spec(self.rng, category).prompt for category in self.drawn_categories]
        prompts = []
        for _ in range(n):
            if not self.deck:
                self.deck = self.rng.sample(CATEGORIES, len(CATEGORIES))
            prompts.append(sample_spec(self.rng, self.deck.pop()).prompt)
        return prompts

    def category_probabilities(self) -> list[float]:
        """Under "train-adaptive", the probability of each of CATEGORIES in the next draw."""
        from trainer_core.shapes.grammar import CATEGORIES

        seen = self.category_spread
        default = float(np.mean(list(seen.values()))) if seen else 1.0  # unseen: as the average seen one
        spreads = np.array([seen.get(c, default) for c in CATEGORIES])
        total = float(spreads.sum())
        share = spreads / total if total > 0 else np.full(len(CATEGORIES), 1 / len(CATEGORIES))
        return [float(p) for p in (1 - self.ADAPTIVE_UNIFORM) * share + self.ADAPTIVE_UNIFORM / len(CATEGORIES)]

    def diagnostics(self) -> dict[str, float]:
        """Under "train-adaptive", the next draw's probability of each category, as `prompt_share_<category>`."""
        if self.spec != "train-adaptive":
            return {}
        from trainer_core.shapes.grammar import CATEGORIES

        return {f"prompt_share_{c}": p for c, p in zip(CATEGORIES, self.category_probabilities(), strict=True)}

    def observe(self, spread: np.ndarray) -> None:
        """The reward spread of each group of the last draw, in draw order ("train-adaptive" learns from it)."""
        if self.spec != "train-adaptive":
            return
        by_category: dict[str, list[float]] = {}
        for category, value in zip(self.drawn_categories, spread, strict=True):
            by_category.setdefault(category, []).append(float(value))
        for category, values in by_category.items():
            old, new = self.category_spread.get(category), float(np.mean(values))
            decay = self.ADAPTIVE_DECAY
            self.category_spread[category] = new if old is None else decay * old + (1 - decay) * new
