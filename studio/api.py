"""`Studio`: everything the web UI may do, in one place. The UI imports nothing else from the project.

Configs cross this boundary as plain nested dicts (the YAML shape); errors as `ConfigError` /
`JobError` / `ValueError` whose message names the field.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from storage.data_dir import DataDir
from storage.db import Database
from storage.labels import LabelStore
from storage.models import JobStatus
from studio import inference as inference_runners
from studio.compare import BASE, CompareResult
from studio.export import export_checkpoint
from studio.jobs import JobError, JobService, JobView, validate_config
from studio.labeling import (
    ORDERS,
    SOURCES,
    CandidatePair,
    LabelSession,
    LabelSource,
    PairSampler,
    SessionCounts,
    guide_reward,
)
from studio.paths import confine_config, confined, in_data_dir
from studio.preference import (
    ImportResult,
    export_labels,
    fit_preference_reward,
    import_labels,
    labels_from_folder,
    labels_from_store,
)
from studio.reward_catalog import is_preference
from trainer_core.adapters import model_family
from trainer_core.adapters.family import family_of_pipeline
from trainer_core.algorithms import ALGORITHMS
from trainer_core.config import (
    LR_SCHEDULES,
    ConfigError,
    TrainConfig,
    field_docs,
    from_dict,
    load_preset,
    preset_names,
    to_dict,
)
from trainer_core.files import TextFileError, read_text_file
from trainer_core.lora_export import FORMATS
from trainer_core.model_zoo import BUILTIN_MODELS, ModelNotFoundError, model_class_name, resolve_model
from trainer_core.preference.artifact import PreferenceCard
from trainer_core.preference.features import FEATURE_KINDS
from trainer_core.rewards.base import RewardModelConfig
from trainer_core.rewards.registry import reward_specs
from trainer_core.samplers import SOLVERS

DEFAULT_PRESET = "shapes-quickstart"
MAX_CONFIG_BYTES = 256 * 1024  # a YAML config pasted or uploaded
MAX_LABEL_SESSIONS = 16  # open labelling sessions kept; the oldest is closed beyond this
__all__ = [
    "BASE",
    "CandidatePair",
    "ConfigError",
    "JobError",
    "JobStatus",
    "JobView",
    "LabelSource",
    "SessionCounts",
    "Studio",
]


@dataclass(frozen=True)
class RewardInfo:
    name: str
    description: str
    weights: str  # what its weights are ("" when it needs none)
    path: str  # where they are looked for by default
    problem: str  # what is missing to build it ("" when nothing is)


@dataclass
class JobDetail:
    view: JobView
    grids: list[tuple[int, str]]  # (iteration, PNG path), oldest first
    log_tail: str


class Studio:
    def __init__(
        self, data_dir: DataDir, db_url: str | None = None, inference: str = "inline", confine_paths: bool = True
    ) -> None:
        """`inference`: where Compare and labelling images are made: "worker" (the web app: by workers,
        through the queue, so the web process loads no model) or "inline" (in this process).
        `confine_paths`: files are named only inside the data directory (`studio.paths`), as a web user must;
        the command line, run by the machine's owner, passes False and names any path."""
        if inference not in ("worker", "inline"):
            raise ValueError(f"inference: must be worker or inline, got {inference!r}")
        self.data_dir = data_dir.create()
        self.jobs = JobService(Database.open(db_url or data_dir.default_url()), self.data_dir)
        runner = inference_runners.WorkerInference if inference == "worker" else inference_runners.InlineInference
        self.inference = runner(self.jobs)
        self.labels = LabelStore(self.jobs.db, self.data_dir)
        self.label_sessions: dict[str, LabelSession] = {}
        self.confine_paths = confine_paths

    # --- the Train tab -------------------------------------------------------------------------

    def models(self) -> list[tuple[str, str]]:
        """(what a person reads, the model's name) of the built-in models, then of the diffusers directories
        in the data directory's `models/`, each with its family."""
        found = sorted(self.data_dir.models.iterdir()) if self.data_dir.models.is_dir() else []
        names = [*BUILTIN_MODELS, *(p.name for p in found if (p / "model_index.json").is_file())]
        choices = []
        for name in names:
            pipeline = model_class_name(resolve_model(name, self.data_dir.models))
            family = family_of_pipeline(pipeline)
            choices.append((f"{name} · {family.title if family else f'not supported ({pipeline})'}", name))
        return choices

    def config_for_model(self, config: dict[str, Any], model: str) -> dict[str, Any]:
        """`config` on `model`, with the rollout settings and LoRA targets its family trains with by default."""
        if model not in BUILTIN_MODELS and self.confine_paths:
            confined(model, self.data_dir.models, "model.name", self.data_dir)
        try:
            family = model_family(model, self.data_dir.models)
        except ModelNotFoundError as error:
            raise ConfigError(f"model.name: {str(error).removeprefix('model:').strip()}") from None
        config = copy.deepcopy(config)
        config["model"].update(name=model, resolution=family.rollout.resolution)
        config["rollout"].update(steps=family.rollout.steps, guidance_scale=family.rollout.guidance_scale)
        config["lora"]["target_modules"] = list(family.lora_targets)
        return config

    def rewards(self) -> list[str]:
        """Built-in rewards, then the fitted preference rewards (`pref:NAME`)."""
        return self.jobs.catalog.names()

    def builtin_rewards(self) -> list[str]:
        return [name for name in self.jobs.catalog.names() if not is_preference(name)]

    def reward_table(self) -> list[RewardInfo]:
        """Each of the registry's rewards: what it measures, where its weights come from, whether they are
        there (nothing is loaded)."""
        rows = []
        for name, spec in reward_specs().items():
            problem = spec.missing(RewardModelConfig(), self.data_dir.models)
            path = spec.weights_path(RewardModelConfig(), self.data_dir.models)
            rows.append(RewardInfo(name, spec.description, spec.weights, str(path or ""), problem))
        return rows

    def latest_preference_versions(self, config: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The config with pinned preference rewards (`pref:NAME@vN`) unpinned, so a duplicated job trains
        on the latest version, and a note saying which versions changed ("" when none did)."""
        weights = config.get("rewards", {}).get("weights", {})
        changed, unpinned = [], {}
        for name, weight in weights.items():
            if is_preference(name) and "@v" in name:
                latest = name.split("@v", 1)[0]
                unpinned[latest] = weight
                try:
                    newest = str(self.jobs.catalog.resolve(latest))
                except ConfigError:
                    newest = name
                if newest != name:
                    changed.append(f"{latest} will train on {newest.split('@')[1]} (the job used {name.split('@')[1]})")
            else:
                unpinned[name] = weight
        if not changed and unpinned.keys() == weights.keys():
            return config, ""
        updated = {**config, "rewards": {**config["rewards"], "weights": unpinned}}
        return updated, "; ".join(changed)

    @staticmethod
    def presets() -> list[str]:
        return preset_names()

    @staticmethod
    def algorithms() -> list[str]:
        return list(ALGORITHMS)

    @staticmethod
    def solvers() -> list[str]:
        return list(SOLVERS)

    @staticmethod
    def lr_schedules() -> list[str]:
        return list(LR_SCHEDULES)

    @staticmethod
    def export_formats() -> list[str]:
        return list(FORMATS)

    @staticmethod
    def preset_config(name: str = DEFAULT_PRESET) -> dict[str, Any]:
        return to_dict(load_preset(name))

    @staticmethod
    def field_help() -> dict[str, str]:
        """ "section.field" -> its documentation line, from the config dataclasses' docstrings."""
        docs = dict(field_docs(TrainConfig))
        hints = typing.get_type_hints(TrainConfig)
        for field in dataclasses.fields(TrainConfig):
            if dataclasses.is_dataclass(hints[field.name]):
                docs.update({f"{field.name}.{k}": v for k, v in field_docs(hints[field.name]).items()})
        return docs

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config as the job will run it; raises ConfigError naming the first bad field. Paths must lie
        inside the data directory (`studio.paths`): a web user reaches no other file of the server."""
        return to_dict(validate_config(self._confined(config), self.jobs.catalog, self.data_dir))

    def _confined(self, config: dict[str, Any]) -> TrainConfig:
        """The config's fields, its paths checked to lie in the data directory (unless the owner's)."""
        checked = from_dict(TrainConfig, config)
        if self.confine_paths:
            confine_config(checked, self.data_dir)
        return checked

    def config_from_yaml(self, text: str) -> dict[str, Any]:
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config: larger than {MAX_CONFIG_BYTES // 1024} KiB; a training config is a few lines")
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config: not valid YAML ({error})") from None
        except RecursionError:
            raise ConfigError("config: nested too deeply; a config has sections of fields") from None
        if not isinstance(data, dict):
            raise ConfigError("config: YAML must be a mapping of sections")
        return self.validate(data)

    def config_from_yaml_file(self, path: str) -> dict[str, Any]:
        """An uploaded YAML file's config (named `config` in errors: the upload's temporary name means nothing)."""
        try:
            return self.config_from_yaml(read_text_file(path, limit=MAX_CONFIG_BYTES))
        except TextFileError as error:
            raise ConfigError("config" + str(error).removeprefix(str(path))) from None

    @staticmethod
    def config_to_yaml(config: dict[str, Any]) -> str:
        return yaml.safe_dump(config, sort_keys=False)

    def submit(self, config: dict[str, Any], name: str = "") -> int:
        return self.jobs.submit(self._confined(config), name)  # the job service validates the rest, once

    # --- the Jobs tab --------------------------------------------------------------------------

    def list_jobs(self, limit: int = 100) -> list[JobView]:
        return self.jobs.list_jobs(limit)

    def job_detail(self, job_id: int, log_lines: int = 30) -> JobDetail:
        view = self.jobs.view(job_id)
        log_path = self.data_dir.run_dir(job_id) / "worker.log"
        tail = ""
        if log_path.is_file():
            text = log_path.read_text(errors="replace").replace("\r", "\n")
            tail = "\n".join(line for line in text.splitlines() if line.strip())
            tail = "\n".join(tail.splitlines()[-log_lines:])
        return JobDetail(view, self.jobs.sample_grids(job_id), tail)

    def job_metrics(self, job_id: int) -> dict[str, list[tuple[int, float]]]:
        """name -> [(iteration, value)]: every metric row of the job (read only when curves must be redrawn)."""
        return self.jobs.metrics(job_id)

    def reward_series(self, job_id: int) -> list[str]:
        """The metric names of the job's reward curves: reward_mean and one per reward of its mix, trained
        on or monitored (not the timing `reward_s`, which shares the prefix)."""
        mix = self.jobs.get(job_id).config.get("rewards", {})
        names = [*sorted(mix.get("weights", {})), *mix.get("monitor", [])]
        return ["reward_mean", *(f"reward_{name}" for name in names)]

    def sample_grids(self, job_id: int) -> list[tuple[int, str]]:
        return self.jobs.sample_grids(job_id)

    def control(self, job_id: int, action: str) -> str:
        """cancel | pause | resume | retry; returns the job's status after it."""
        if action not in ("cancel", "pause", "resume", "retry"):
            raise ValueError(f"action: must be cancel, pause, resume or retry, got {action!r}")
        getattr(self.jobs, action)(job_id)
        return self.jobs.get(job_id).status

    def job_config(self, job_id: int) -> dict[str, Any]:
        return self.jobs.get(job_id).config

    # --- the Compare and Export tabs -----------------------------------------------------------

    def checkpoint_choices(self, limit: int = 100) -> list[tuple[str, str]]:
        """(label, value) pairs: the base model first, then every job's checkpoints, newest first."""
        choices = [("base model", BASE)]
        for checkpoint in self.jobs.recent_checkpoints(limit):
            choices.append((f"job {checkpoint.job_id} · iteration {checkpoint.iteration}", str(checkpoint.id)))
        return choices

    @staticmethod
    def prompt_sets() -> list[str]:
        """Named prompt lists for Compare: a few held-out prompts of each category, or of one category."""
        from trainer_core.shapes.grammar import CATEGORIES

        return ["heldout: 2 per category", *(f"heldout: {c}" for c in CATEGORIES)]

    @staticmethod
    def prompt_set(name: str) -> list[str]:
        from trainer_core.shapes.prompt_sets import heldout_subset

        if name not in Studio.prompt_sets():
            raise ValueError(f"prompt set: unknown {name!r}; allowed: {', '.join(Studio.prompt_sets())}")
        if name == "heldout: 2 per category":
            return [spec.prompt for spec in heldout_subset(2)]
        category = name.removeprefix("heldout: ")
        return [spec.prompt for spec in heldout_subset(8) if spec.category == category]

    def start_compare(
        self, checkpoints: list[str], prompts: list[str], seeds: list[int], heldout_per_category: int = 0
    ) -> int:
        """Queue a Compare for a worker (the web process loads no model); returns its job id."""
        chosen: list[int | str] = [c if c == BASE else int(c) for c in checkpoints]
        return self.inference.start_compare(chosen, prompts, seeds, heldout_per_category)

    def inference_progress(self, job_id: int) -> str | None:
        """None when the inference job is done, else its progress; raises when it failed or no worker runs."""
        return self.inference.progress(job_id)

    def compare_result(self, job_id: int) -> CompareResult:
        return self.inference.compare_result(job_id)

    def compare(
        self, checkpoints: list[str], prompts: list[str], seeds: list[int], heldout_per_category: int = 0
    ) -> CompareResult:
        """`start_compare`, waited for."""
        job_id = self.start_compare(checkpoints, prompts, seeds, heldout_per_category)
        while self.inference_progress(job_id) is not None:
            time.sleep(0.3)
        return self.compare_result(job_id)

    def export(self, checkpoint: str, fmt: str, name: str = "") -> Path:
        if checkpoint in ("", BASE):
            raise ValueError("checkpoint: pick a trained checkpoint (the base model has no LoRA to export)")
        return export_checkpoint(self.jobs, int(checkpoint), fmt, name)

    # --- the Label tab -------------------------------------------------------------------------

    @staticmethod
    def label_source_kinds() -> list[str]:
        return list(SOURCES)

    @staticmethod
    def label_orders() -> list[str]:
        return list(ORDERS)

    @staticmethod
    def penalty_anchors() -> list[str]:
        from trainer_core.vgrpo import PENALTY_ANCHORS

        return list(PENALTY_ANCHORS)

    @staticmethod
    def feature_kinds() -> dict[str, str]:
        """Feature extractor name -> what it reads (`clip` takes a directory: clip:DIR)."""
        return {name: kind.description for name, kind in FEATURE_KINDS.items()}

    def label_prompt_sets(self) -> list[str]:
        """Prompt lists to label: random training prompts, and the held-out lists of Compare."""
        return ["train: 64 random prompts", *self.prompt_sets()]

    def label_prompts(self, prompt_set: str = "", typed: str = "", job_id: int | None = None) -> list[str]:
        """The prompts to label: typed (one per line) when given, else a job's, else a named set."""
        if typed.strip():
            return [line.strip() for line in typed.splitlines() if line.strip()]
        if job_id:
            config = self.jobs.get(job_id).config
            prompts = list(config.get("logging", {}).get("sample_prompts", []))
            source = config.get("rollout", {}).get("prompts", "train")
            if not str(source).startswith("train"):
                from trainer_core.shapes.prompt_sets import read_prompts_file

                located = in_data_dir(from_dict(TrainConfig, config), self.data_dir).rollout.prompts
                return [*prompts, *(spec.prompt for spec in read_prompts_file(located))]
            prompt_set = "train: 64 random prompts"
            return [*prompts, *self.label_prompts(prompt_set)]
        if prompt_set == "train: 64 random prompts":
            from trainer_core.shapes.prompt_sets import train_prompts

            return [spec.prompt for spec in train_prompts(64, seed=0)]
        return self.prompt_set(prompt_set)

    def start_labelling(self, source: LabelSource, labeller: str = "local") -> str:
        """Open a labelling session (pairs start generating at once); returns its id."""
        sampler = PairSampler(self.jobs, source, guide_reward(self.jobs.catalog, source), inference=self.inference)
        session = LabelSession(self.labels, sampler, labeller or "local")
        self.label_sessions[session.id] = session
        while len(self.label_sessions) > MAX_LABEL_SESSIONS:
            self.close_labelling(next(iter(self.label_sessions)))
        return session.id

    def _session(self, session_id: str) -> LabelSession:
        session = self.label_sessions.get(session_id)
        if session is None:
            raise ValueError("session: no labelling session open; press Start labelling")
        return session

    def label_pair(self, session_id: str, timeout: float = 120.0) -> CandidatePair:
        return self._session(session_id).next_pair(timeout)

    def label(self, session_id: str, choice: str) -> int:
        """Store a choice ("a" left, "b" right, "tie") for the pair on screen; returns the label's id."""
        return self._session(session_id).choose(choice)

    def skip_pair(self, session_id: str) -> None:
        self._session(session_id).skip()

    def undo_label(self, session_id: str) -> bool:
        return self._session(session_id).undo()

    def label_counts(self, session_id: str | None = None) -> SessionCounts:
        if session_id and session_id in self.label_sessions:
            return self.label_sessions[session_id].counts()
        return SessionCounts(0, self.labels.count())

    def close_labelling(self, session_id: str) -> None:
        session = self.label_sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def fit_preference(self, name: str, features: str, labels_dir: str | None = None) -> PreferenceCard:
        """Fit a preference reward on every stored label (or a labels folder in the data directory's
        labels/folders/) as the next version of NAME; `clip:DIR` features read DIR inside models/."""
        kind, _, argument = features.partition(":")
        if argument and self.confine_paths:
            features = f"{kind}:{confined(argument, self.data_dir.models, 'features', self.data_dir)}"
        labels = labels_from_folder(self._label_folder(labels_dir)) if labels_dir else labels_from_store(self.labels)
        return fit_preference_reward(labels, features, name, self.jobs.catalog.store)

    def _label_folder(self, name: str, field: str = "folder") -> Path:
        if not self.confine_paths:
            return Path(name)
        return confined(name, self.data_dir.label_folders, field, self.data_dir)

    def preference_card(self, reference: str) -> PreferenceCard:
        """The card of `pref:NAME` (latest) or `pref:NAME@vN`."""
        return self.jobs.catalog.card(reference)

    def preference_rewards(self) -> list[str]:
        return self.jobs.catalog.preference_names()

    def import_labels(self, directory: str) -> ImportResult:
        """Store the labels of a folder in the data directory's labels/folders/."""
        return import_labels(self.labels, self._label_folder(directory))

    def export_labels(self, out: str) -> int:
        """Write every label to a new folder in the data directory's labels/folders/."""
        return export_labels(self.labels, self._label_folder(out))
