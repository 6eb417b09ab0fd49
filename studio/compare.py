"""Side-by-side generation from several checkpoints (the base model included) on the same prompts and seeds."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.jobs import JobError, JobService
from trainer_core.adapters import load_adapter, model_family
from trainer_core.adapters.base import DenoiserAdapter
from trainer_core.shapes.evaluation import SamplingConfig, evaluate, generate_images
from trainer_core.shapes.grammar import PromptError, parse_prompt
from trainer_core.shapes.scoring import score_image

BASE = "base"

#: (base model, LoRA path or None) -> an adapter of the base model with that LoRA
AdapterLoader = Callable[[str, str | None], DenoiserAdapter]


class AdapterCache:
    """The last few (base model, LoRA) adapters, kept loaded between requests of one inference process."""

    def __init__(self, models_dir: Path | None, size: int = 4) -> None:
        self.models_dir, self.size = models_dir, size
        self.loaded: OrderedDict[tuple[str, str | None], DenoiserAdapter] = OrderedDict()

    def __call__(self, base_model: str, lora_path: str | None) -> DenoiserAdapter:
        key = (base_model, lora_path)
        if key not in self.loaded:
            self.loaded[key] = load_checkpoint_adapter(base_model, lora_path, self.models_dir)
            while len(self.loaded) > self.size:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(key)
        return self.loaded[key]


def load_checkpoint_adapter(base_model: str, lora_path: str | None, models_dir: Path | None) -> DenoiserAdapter:
    adapter = load_adapter(base_model, models_dir=models_dir)
    if lora_path is not None:
        adapter.load_lora(Path(lora_path))
    return adapter


@dataclass
class CompareResult:
    labels: list[str]  # one per checkpoint, in the order asked
    prompts: list[str]
    seeds: list[int]
    images: list[np.ndarray]  # per checkpoint: uint8 [len(prompts) * len(seeds), H, W, 3], prompt-major
    scores: list[list[dict[str, float]]]  # per checkpoint, per image: shapes reward -> score ({} off-grammar)
    accuracy: list[dict[str, float]]  # per checkpoint: held-out accuracy per category (empty if not asked)


def family_sampling(model: str, models_dir: Path | None = None) -> SamplingConfig:
    """How Compare and Label draw images of `model`: the shapes evaluation sampler for the shapes world, the
    family's own steps and guidance (a few images per call) for the others."""
    family = model_family(model, models_dir)
    if family.name == "shapes":
        return SamplingConfig()
    return SamplingConfig(steps=family.rollout.steps, guidance_scale=family.rollout.guidance_scale, batch_size=4)


def compare_checkpoints(
    service: JobService,
    checkpoints: list[int | str],
    prompts: list[str],
    seeds: list[int],
    heldout_per_category: int = 0,
    sampling: SamplingConfig | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    adapters: AdapterLoader | None = None,
) -> CompareResult:
    """Generate `prompts` x `seeds` with each checkpoint (an id, or "base" for the job's base model).

    All checkpoints must share one base model. With `heldout_per_category`, also evaluate each on that
    many held-out prompts per category (one seed). `on_checkpoint(k)` hears when k checkpoints are done;
    `adapters` loads each checkpoint (a fresh load when None).
    """
    if not 2 <= len(checkpoints) <= 4:
        raise ValueError(f"checkpoints: pick 2 to 4, got {len(checkpoints)}")
    if not prompts or not seeds:
        raise ValueError("prompts, seeds: give at least one of each")
    resolved = [resolve_checkpoint(service, c) for c in checkpoints]
    bases = {base for _, base, _ in resolved if base is not None}
    if len(bases) > 1:
        raise ValueError(f"checkpoints: they come from different base models ({', '.join(sorted(bases))})")
    base_model = bases.pop() if bases else "shapes-base"
    sampling = sampling or family_sampling(base_model, service.data_dir.models)
    specs = None
    if heldout_per_category:
        from trainer_core.shapes.prompt_sets import heldout_subset

        specs = heldout_subset(heldout_per_category)
    result = CompareResult([], prompts, seeds, [], [], [])
    grid_prompts = [p for p in prompts for _ in seeds]
    grid_seeds = [s for _ in prompts for s in seeds]
    load = adapters or (lambda base, lora: load_checkpoint_adapter(base, lora, service.data_dir.models))
    for done, (label, _, lora_path) in enumerate(resolved, start=1):
        adapter = load(base_model, lora_path)
        images = generate_images(adapter, grid_prompts, grid_seeds, sampling)
        result.labels.append(label)
        result.images.append(images)
        result.scores.append([_scores(image, prompt) for image, prompt in zip(images, grid_prompts, strict=True)])
        result.accuracy.append(evaluate(adapter, specs, 1, sampling).accuracy if specs else {})
        if on_checkpoint is not None:
            on_checkpoint(done)
    return result


def resolve_checkpoint(service: JobService, checkpoint: int | str) -> tuple[str, str | None, str | None]:
    """(label, base model or None for the plain base, LoRA path or None)."""
    if checkpoint == BASE:
        return "base model", None, None
    for job_checkpoint in service.checkpoints_by_id([int(checkpoint)]):
        job = service.get(job_checkpoint.job_id)
        label = f"job {job.id} iter {job_checkpoint.iteration}"
        return label, job.config["model"]["name"], str(service.data_dir.inside(job_checkpoint.path))
    raise JobError(f"checkpoint {checkpoint}: no such checkpoint")


def _scores(image: np.ndarray, prompt: str) -> dict[str, float]:
    try:
        spec = parse_prompt(prompt)
    except PromptError:
        return {}
    return score_image(image, spec)
