"""Labelling sessions: which pairs a person sees, generated ahead in the background, and every choice
stored the moment it is made.

A pair is one prompt and two images: two seeds of one model, one seed of two models, or two cells of
one iteration of a job's sample grid. Pairs are shown in random order, or uncertain first: candidates
are generated in groups and the pair whose label would teach a fitted preference reward most is shown
(a toss-up under its prediction, on images that differ where its weights are still unsure:
`trainer_core.preference.selection`; `vgrpo bench preference` measures what it buys).
"""

from __future__ import annotations

import queue
import random
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from storage.labels import LabelStore, NewLabel
from studio.compare import AdapterCache, AdapterLoader, family_sampling
from studio.jobs import JobError, JobService
from studio.reward_catalog import RewardCatalog, is_preference
from trainer_core.image_grid import grid_cells
from trainer_core.preference.artifact import PreferenceReward
from trainer_core.preference.selection import all_pairs, uncertain_first
from trainer_core.shapes.evaluation import generate_images

if TYPE_CHECKING:
    from studio.inference import Inference

BASE = "base"
SOURCES = ("seeds", "checkpoints", "job-samples")
ORDERS = ("random", "uncertain")
#: images per prompt generated as candidates when ordering uncertain first (6 pairs per prompt)
CANDIDATE_SEEDS = 4


@dataclass(frozen=True)
class PairSide:
    image: np.ndarray  # uint8 [H, W, 3]
    seed: int | None
    checkpoint: int | None  # None: the base model
    origin: str  # what a person reads: "base model", "job 3 · iteration 40"


@dataclass(frozen=True)
class CandidatePair:
    prompt: str
    a: PairSide
    b: PairSide
    model: str | None = None
    job_id: int | None = None
    iteration: int | None = None
    predicted: float | None = None  # P(a preferred) under the guiding reward, when ordering uncertain first


@dataclass(frozen=True)
class LabelSource:
    """What to label and in which order.

    kind: "seeds" (two seeds of `checkpoint_a`), "checkpoints" (one seed of `checkpoint_a` against
        `checkpoint_b`) or "job-samples" (two seeds of one prompt of one sample grid of `job_id`).
    checkpoint_a, checkpoint_b: "base" or a checkpoint id.
    prompts: the prompts pairs are drawn from (kinds seeds and checkpoints).
    job_id, iteration: the job (and grid iteration, None: every grid) of kind job-samples.
    order: "random" or "uncertain" (needs `guide`, a fitted preference reward such as pref:NAME).
    seed: where the pair sampler starts.
    """

    kind: str = "seeds"
    checkpoint_a: str = BASE
    checkpoint_b: str = BASE
    prompts: tuple[str, ...] = ()
    job_id: int | None = None
    iteration: int | None = None
    order: str = "random"
    guide: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(p.strip() for p in self.prompts if p.strip()))
        if self.kind not in SOURCES:
            raise ValueError(f"source: must be one of {', '.join(SOURCES)}, got {self.kind!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order: must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.kind in ("seeds", "checkpoints") and not self.prompts:
            raise ValueError("prompts: give at least one prompt to label")
        if self.kind == "checkpoints" and self.checkpoint_a == self.checkpoint_b:
            raise ValueError("checkpoint_b: pick a different checkpoint from checkpoint_a to compare two models")
        if self.kind == "job-samples" and self.job_id is None:
            raise ValueError("job: pick the job whose sample grids to label")
        if self.order == "uncertain" and not (self.guide and is_preference(self.guide)):
            raise ValueError("guide: uncertain-first needs a fitted preference reward (pref:NAME) to predict with")


def generate_with(
    service: JobService,
    checkpoint: str,
    base_model: str,
    prompts: list[str],
    seeds: list[int],
    adapters: AdapterLoader | None = None,
) -> np.ndarray:
    """Images of `checkpoint` ("base" or a checkpoint id), image i from prompts[i] and seeds[i]: what an
    inference worker runs for a labelling session."""
    _, _, lora_path = _Models(service).describe(checkpoint)
    adapter = (adapters or AdapterCache(service.data_dir.models, size=1))(base_model, lora_path)
    with torch.no_grad():
        sampling = family_sampling(base_model, service.data_dir.models)
        return generate_images(adapter, prompts, seeds, sampling)


class _Models:
    """The checkpoints of a session, described here, their images made by `inference` (a worker for the
    web app, this process for the command line)."""

    def __init__(self, service: JobService, inference: Inference | None = None) -> None:
        self.service = service
        self.inference = inference

    def describe(self, checkpoint: str) -> tuple[str, str | None, str | None]:
        """(what a person reads, base model name, LoRA path) of "base" or a checkpoint id."""
        if checkpoint == BASE:
            return "base model", None, None
        try:
            found = self.service.checkpoints_by_id([int(checkpoint)])
        except ValueError:
            found = []
        if not found:
            raise JobError(f"checkpoint: no checkpoint {checkpoint!r}")
        job = self.service.get(found[0].job_id)
        origin = f"job {job.id} · iteration {found[0].iteration}"
        return origin, job.config["model"]["name"], str(self.service.data_dir.inside(found[0].path))

    def generate(self, checkpoint: str, base_model: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
        if self.inference is None:
            from studio.inference import InlineInference

            self.inference = InlineInference(self.service)
        return self.inference.generate(checkpoint, base_model, prompts, seeds)


class PairSampler:
    """An endless stream of candidate pairs for one `LabelSource`."""

    def __init__(
        self,
        service: JobService,
        source: LabelSource,
        guide: PreferenceReward | None = None,
        prompts_per_batch: int = 4,
        inference: Inference | None = None,
    ) -> None:
        self.service, self.source, self.guide = service, source, guide
        self.rng = random.Random(source.seed)
        self.models = _Models(service, inference)
        self.prompts_per_batch = prompts_per_batch
        self.next_seed = 1000 * source.seed
        origins = [self.models.describe(c) for c in {source.checkpoint_a, source.checkpoint_b}]
        bases = {base for _, base, _ in origins if base is not None}
        if source.kind != "job-samples" and len(bases) > 1:
            raise ValueError(f"checkpoints: they come from different base models ({', '.join(sorted(bases))})")
        self.base_model = bases.pop() if bases else "shapes-base"
        if source.kind == "job-samples":
            self.grids = self._job_grids()

    def __iter__(self) -> Iterator[CandidatePair]:
        while True:
            yield from self.batch()

    def batch(self) -> list[CandidatePair]:
        """The pairs of one round of generation: one per prompt, chosen at random or uncertain first."""
        groups = self._job_groups() if self.source.kind == "job-samples" else self._generated_groups()
        return [self._choose(candidates) for candidates in groups]

    def _choose(self, candidates: list[CandidatePair]) -> CandidatePair:
        if self.source.order == "random" or self.guide is None:
            return self.rng.choice(candidates)
        images = np.stack([image for pair in candidates for image in (pair.a.image, pair.b.image)])
        prompts = [pair.prompt for pair in candidates for _ in range(2)]
        features = self.guide.features(images, prompts)
        features_a, features_b = features[0::2], features[1::2]
        best = int(uncertain_first(self.guide.model, features_a, features_b, 1)[0])
        predicted = float(self.guide.model.preference(features_a[best : best + 1], features_b[best : best + 1])[0])
        chosen = candidates[best]
        return CandidatePair(
            chosen.prompt, chosen.a, chosen.b, chosen.model, chosen.job_id, chosen.iteration, predicted
        )

    def _generated_groups(self) -> list[list[CandidatePair]]:
        source = self.source
        prompts = [self.rng.choice(source.prompts) for _ in range(self.prompts_per_batch)]
        per_prompt = CANDIDATE_SEEDS if source.order == "uncertain" else 2
        seeds = list(range(self.next_seed, self.next_seed + per_prompt))
        self.next_seed += per_prompt
        flat_prompts = [p for p in prompts for _ in seeds]
        flat_seeds = seeds * len(prompts)
        first = self.models.generate(source.checkpoint_a, self.base_model, flat_prompts, flat_seeds)
        origin_a, _, _ = self.models.describe(source.checkpoint_a)
        checkpoint_a = None if source.checkpoint_a == BASE else int(source.checkpoint_a)
        groups = []
        if source.kind == "seeds":
            for p, prompt in enumerate(prompts):
                sides = [PairSide(first[p * len(seeds) + i], s, checkpoint_a, origin_a) for i, s in enumerate(seeds)]
                groups.append(
                    [CandidatePair(prompt, sides[i], sides[j], self.base_model) for i, j in all_pairs(len(seeds))]
                )
            return groups
        second = self.models.generate(source.checkpoint_b, self.base_model, flat_prompts, flat_seeds)
        origin_b, _, _ = self.models.describe(source.checkpoint_b)
        checkpoint_b = None if source.checkpoint_b == BASE else int(source.checkpoint_b)
        for p, prompt in enumerate(prompts):
            candidates = []
            for i, s in enumerate(seeds):
                a = PairSide(first[p * len(seeds) + i], s, checkpoint_a, origin_a)
                b = PairSide(second[p * len(seeds) + i], s, checkpoint_b, origin_b)
                # which model is on the left is random, so a side bias cannot favour one
                candidates.append(
                    CandidatePair(prompt, *((a, b) if self.rng.random() < 0.5 else (b, a)), self.base_model)
                )
            groups.append(candidates)
        return groups

    def _job_grids(self) -> list[tuple[int, list[str], list[int], np.ndarray]]:
        """(iteration, prompts, seeds, cells [prompts * seeds, H, W, 3]) of the job's sample grids."""
        job = self.service.get(self.source.job_id or 0)
        grids = []
        for iteration, prompts, seeds, path in self.service.sample_rows(job.id):
            if self.source.iteration is not None and iteration != self.source.iteration:
                continue
            if len(seeds) < 2:
                continue
            with Image.open(path) as grid:
                cells = grid_cells(np.asarray(grid.convert("RGB")), rows=len(prompts), cols=len(seeds))
            grids.append((iteration, prompts, seeds, cells))
        if not grids:
            which = f"iteration {self.source.iteration}" if self.source.iteration is not None else "any iteration"
            raise JobError(f"job {job.id}: no sample grid with two or more seeds per prompt at {which} yet")
        self.job_model = job.config["model"]["name"]
        self.job_checkpoints = {c.iteration: c.id for c in self.service.checkpoints(job.id)}
        return grids

    def _job_groups(self) -> list[list[CandidatePair]]:
        iteration, prompts, seeds, cells = self.rng.choice(self.grids)
        checkpoint = self.job_checkpoints.get(iteration)
        origin = f"job {self.source.job_id} · iteration {iteration}"
        groups = []
        for row in self.rng.sample(range(len(prompts)), min(self.prompts_per_batch, len(prompts))):
            sides = [PairSide(cells[row * len(seeds) + i], s, checkpoint, origin) for i, s in enumerate(seeds)]
            groups.append(
                [
                    CandidatePair(prompts[row], sides[i], sides[j], self.job_model, self.source.job_id, iteration)
                    for i, j in all_pairs(len(seeds))
                ]
            )
        return groups


@dataclass
class SessionCounts:
    session: int
    total: int


@dataclass
class LabelSession:
    """One person's labelling: the pair on screen, pairs generated ahead, and what was stored."""

    store: LabelStore
    sampler: PairSampler
    labeller: str = "local"
    ahead: int = 4  # pairs generated ahead of the one on screen
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.pending: queue.Queue[CandidatePair | BaseException] = queue.Queue(maxsize=self.ahead)
        self.returned: deque[CandidatePair] = deque()  # pairs brought back by undo, shown first
        self.history: list[tuple[int, CandidatePair]] = []  # (label id, pair) of this session, for undo
        self.current: CandidatePair | None = None
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.worker = threading.Thread(target=self._generate, name=f"label-{self.id[:8]}", daemon=True)
        self.worker.start()

    def _generate(self) -> None:
        try:
            for pair in self.sampler:
                while not self.stopped.is_set():
                    try:
                        self.pending.put(pair, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stopped.is_set():
                    return
        except BaseException as error:  # shown to the person at the next pair
            self.pending.put(error)

    def close(self, wait_s: float = 60.0) -> None:
        """Stop generating ahead (the pair being generated is finished first)."""
        self.stopped.set()
        if self.worker is not threading.current_thread():
            self.worker.join(wait_s)

    def next_pair(self, timeout: float = 120.0) -> CandidatePair:
        """The pair to show now (the same one until it is labelled or skipped)."""
        with self.lock:
            if self.current is None:
                self.current = self.returned.popleft() if self.returned else self._take(timeout)
            return self.current

    def _take(self, timeout: float) -> CandidatePair:
        item = self.pending.get(timeout=timeout)
        if isinstance(item, BaseException):
            self.pending.put(item)  # every later call reports it too
            raise item
        return item

    def choose(self, choice: str) -> int:
        """Store the current pair's label ("a" = left, "b" = right, "tie") now; returns its id."""
        pair = self.next_pair()
        with self.lock:
            label_id = self.store.add(
                NewLabel(
                    prompt=pair.prompt,
                    image_a=self.store.store_image(pair.a.image),
                    image_b=self.store.store_image(pair.b.image),
                    choice=choice,
                    labeller=self.labeller,
                    seed_a=pair.a.seed,
                    seed_b=pair.b.seed,
                    checkpoint_a=pair.a.checkpoint,
                    checkpoint_b=pair.b.checkpoint,
                    model=pair.model,
                    job_id=pair.job_id,
                    iteration=pair.iteration,
                    session_id=self.id,
                )
            )
            self.history.append((label_id, pair))
            self.current = None
            return label_id

    def skip(self) -> None:
        with self.lock:
            self.current = None

    def undo(self) -> bool:
        """Delete this session's last label and show its pair again; False when there is nothing to undo."""
        with self.lock:
            if not self.history:
                return False
            label_id, pair = self.history.pop()
            self.store.delete(label_id)
            if self.current is not None:
                self.returned.appendleft(self.current)
            self.current = pair
            return True

    def counts(self) -> SessionCounts:
        return SessionCounts(self.store.count(self.id), self.store.count())


def guide_reward(catalog: RewardCatalog, source: LabelSource) -> PreferenceReward | None:
    """The fitted preference reward that orders pairs uncertain first (None in random order)."""
    if source.order != "uncertain" or not source.guide:
        return None
    guide = catalog.build([source.guide])[source.guide]
    assert isinstance(guide, PreferenceReward)  # LabelSource admits only pref: names as a guide
    return guide
