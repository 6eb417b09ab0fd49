"""Train: base model, reward mix, algorithm and hyperparameters, presets, YAML, Start."""

from __future__ import annotations

import copy
import html
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.api import DEFAULT_PRESET, ConfigError, JobError, Studio
from ui.messages import error_html

#: form field -> (label, kind); kind "number" fields are free text so that bad input gets a clear message
FIELDS: dict[str, tuple[str, str]] = {
    "algorithm": ("Algorithm", "choice"),
    "iterations": ("Iterations", "int"),
    "time_budget_minutes": ("Time budget, minutes (0: none)", "number"),
    "rollout.prompts_per_iteration": ("Prompts per iteration", "int"),
    "rollout.candidate_prompts": ("Candidate prompts (0: no selection)", "int"),
    "rollout.group_size": ("Images per prompt (group size)", "int"),
    "rollout.steps": ("Sampler steps", "int"),
    "rollout.solver": ("Sampler", "choice"),
    "vgrpo.n_mc": ("N_MC pairs per image", "int"),
    "vgrpo.gradient_steps": ("Gradient steps per iteration", "int"),
    "vgrpo.clip_epsilon": ("Ratio clip epsilon", "number"),
    "vgrpo.beta": ("Penalty beta", "number"),
    "vgrpo.penalty_to": ("Penalty anchor", "choice"),
    "optimizer.learning_rate": ("Learning rate", "number"),
    "optimizer.lr_schedule": ("Learning-rate schedule", "choice"),
    "lora.rank": ("LoRA rank", "int"),
    "lora.alpha": ("LoRA alpha", "number"),
}


def _get(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = node[part]
    return node


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _parse(value: Any, kind: str) -> Any:
    """Numbers typed as text become numbers; anything else is passed on for the config to refuse by name."""
    if kind in ("int", "number") and isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if kind == "int" and number.is_integer() else number
    return value


NO_PREFERENCE = "(none)"


@dataclass
class TrainForm:
    model: gr.Dropdown
    fields: dict[str, gr.components.Component]
    weights: dict[str, gr.Number]  # one per built-in reward
    preference: gr.Dropdown  # a fitted preference reward (pref:NAME), or NO_PREFERENCE
    preference_weight: gr.Number
    monitor: gr.Dropdown  # rewards scored and drawn but not trained on
    aggregation: gr.Radio
    base: gr.State  # the config the form edits (sections the form does not show come from it)
    status: gr.HTML | None = None  # where errors and "job queued" appear
    apply: Callable[[dict[str, Any] | str], list[Any]] | None = None  # fill the form from a config, or show an error
    refresh_preferences: Callable[[str], Any] | None = None  # list the preference rewards fitted since
    refresh_models: Callable[[str], Any] | None = None  # list the models put in the data directory since

    def components(self) -> list[gr.components.Component]:
        return [
            self.model,
            *self.fields.values(),
            *self.weights.values(),
            self.preference,
            self.preference_weight,
            self.monitor,
            self.aggregation,
            self.base,
        ]

    @staticmethod
    def values(config: dict[str, Any], rewards: list[str]) -> list[Any]:
        """Form values for `config`, in `components()` order (the form shows one preference reward)."""
        weights = config["rewards"]["weights"]
        preference = next((name for name in weights if name not in rewards), None)
        return [
            config["model"]["name"],
            *(_format(_get(config, path)) for path in FIELDS),
            *(weights.get(name, 0.0) for name in rewards),
            preference or NO_PREFERENCE,
            weights.get(preference, 0.0) if preference else 0.0,
            list(config["rewards"].get("monitor", [])),
            config["rewards"]["aggregation"],
            config,
        ]

    def collect(self, rewards: list[str], values: list[Any]) -> dict[str, Any]:
        """The edited config from form values (in `components()` order), not yet validated."""
        model, *rest = values
        field_values = rest[: len(FIELDS)]
        weight_values = rest[len(FIELDS) : len(FIELDS) + len(rewards)]
        preference, preference_weight, monitor, aggregation, base = rest[len(FIELDS) + len(rewards) :]
        config = copy.deepcopy(base)
        _set(config, "model.name", (model or "").strip())
        for (path, (_, kind)), value in zip(FIELDS.items(), field_values, strict=True):
            _set(config, path, _parse(value, kind))
        chosen = {name: float(w or 0) for name, w in zip(rewards, weight_values, strict=True) if w}
        if preference and preference != NO_PREFERENCE and preference_weight:
            chosen[preference] = float(preference_weight)
        config["rewards"] = {
            **{k: v for k, v in base.get("rewards", {}).items() if k == "models"},  # per-reward paths, from YAML
            "weights": chosen or dict.fromkeys(rewards[:1], 0.0),
            "aggregation": aggregation,
            "monitor": [name for name in monitor or [] if name not in chosen],
        }
        return config


def reward_table(studio: Studio) -> str:
    """Each reward: what it measures, where its weights come from and whether they are there."""
    lines = ["| reward | what it measures | weights |", "|---|---|---|"]
    for row in studio.reward_table():
        if row.problem:
            where = f"✗ {row.problem}"
        elif row.weights:
            where = f"✓ `{row.path}`: {row.weights}"
        else:
            where = "none needed"
        lines.append(f"| `{row.name}` | {row.description} | {where} |")
    return "\n".join(lines)


def _format(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float) else value


def _error(message: str) -> str:
    return error_html(message, "train-error")


def build(studio: Studio) -> TrainForm:
    help_text = studio.field_help()
    config = studio.preset_config(DEFAULT_PRESET)
    rewards = studio.builtin_rewards()
    choices = {
        "algorithm": studio.algorithms(),
        "rollout.solver": studio.solvers(),
        "vgrpo.penalty_to": studio.penalty_anchors(),
        "optimizer.lr_schedule": studio.lr_schedules(),
    }
    with gr.Row():
        preset = gr.Dropdown(studio.presets(), value=DEFAULT_PRESET, label="Preset", scale=3)
        load_preset = gr.Button("Load preset", scale=1)
    model = gr.Dropdown(
        studio.models(),
        value=config["model"]["name"],
        label="Base model",
        info="a built-in model, a diffusers directory in the data directory's models/ (by its name), or a local "
        "path; picking one fills in its family's resolution, steps, guidance and LoRA targets",
        allow_custom_value=True,
        elem_id="train-model",
    )
    fields: dict[str, gr.components.Component] = {}
    with gr.Accordion("Algorithm and hyperparameters", open=True), gr.Row(equal_height=False):
        for i, (path, (label, kind)) in enumerate(FIELDS.items()):
            if i % 5 == 0:
                column = gr.Column(min_width=220)
            with column:
                info = help_text.get(path, "")
                elem_id = "train-" + path.replace(".", "-").replace("_", "-")
                if kind == "choice":
                    fields[path] = gr.Dropdown(
                        choices[path], value=_get(config, path), label=label, info=info, elem_id=elem_id
                    )
                else:
                    fields[path] = gr.Textbox(
                        value=str(_format(_get(config, path))), label=label, info=info, elem_id=elem_id
                    )
    with gr.Accordion("Reward mix", open=True):
        gr.Markdown("Weight per reward; 0 leaves it out. " + help_text.get("rewards.weights", ""))
        with gr.Row():
            weights = {
                name: gr.Number(
                    config["rewards"]["weights"].get(name, 0.0), label=name, elem_id=f"weight-{name}", min_width=120
                )
                for name in rewards
            }
        with gr.Row():
            preference = gr.Dropdown(
                [NO_PREFERENCE, *studio.preference_rewards()],
                value=NO_PREFERENCE,
                label="Preference reward",
                info="fitted on your labels in the Label tab; pref:NAME trains on its latest version",
                allow_custom_value=True,  # a duplicated job's pinned pref:NAME@vN
                elem_id="train-preference",
                scale=3,
            )
            preference_weight = gr.Number(0.0, label="its weight", elem_id="weight-preference", min_width=120)
        preference_card = gr.Markdown(elem_id="train-preference-card")
        monitor = gr.Dropdown(
            rewards,
            value=list(config["rewards"].get("monitor", [])),
            multiselect=True,
            label="Monitor (scored and drawn, not trained on)",
            info=help_text.get("rewards.monitor", ""),
            elem_id="train-monitor",
        )
        with gr.Accordion("The rewards", open=False):
            gr.Markdown(reward_table(studio), elem_id="train-reward-table")
        aggregation = gr.Radio(
            ["sum_then_normalize", "normalize_then_sum"],
            value=config["rewards"]["aggregation"],
            label="Aggregation",
            info=help_text.get("rewards.aggregation", ""),
        )
    form = TrainForm(model, fields, weights, preference, preference_weight, monitor, aggregation, gr.State(config))
    with gr.Accordion("Config as YAML", open=False):
        yaml_box = gr.Code(language="yaml", label="config.yaml", interactive=True, elem_id="train-yaml")
        with gr.Row():
            to_yaml = gr.Button("Show form as YAML")
            from_yaml = gr.Button("Apply YAML to form")
            yaml_file = gr.UploadButton("Load YAML file", file_types=[".yaml", ".yml"])
            download_yaml = gr.DownloadButton("Download YAML", visible=False)
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="train-start")
    status = gr.HTML(elem_id="train-status")

    def on_start(*values: Any) -> str:
        try:
            config = studio.validate(form.collect(rewards, list(values)))
            job_id = studio.submit(config)
        except (ConfigError, JobError, ValueError) as error:
            return _error(str(error))
        what = html.escape(f"{config['algorithm']} on {config['model']['name']}")
        return f'<div id="train-ok">✓ Job {job_id} queued: {what}. Follow it in Jobs.</div>'

    def on_to_yaml(*values: Any) -> tuple[Any, Any, str]:
        try:
            config = studio.validate(form.collect(rewards, list(values)))
        except (ConfigError, ValueError) as error:
            return gr.update(), gr.update(visible=False), _error(str(error))
        text = studio.config_to_yaml(config)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, prefix="vgrpo_config_") as handle:
            handle.write(text)
        return text, gr.update(value=handle.name, visible=True), ""

    def apply(config_or_error: dict[str, Any] | str) -> list[Any]:
        if isinstance(config_or_error, str):
            return [gr.update() for _ in form.components()] + [_error(config_or_error)]
        config, note = studio.latest_preference_versions(config_or_error)
        if len([name for name in config["rewards"]["weights"] if name not in rewards]) > 1:
            message = "the form shows one preference reward and this config has several: edit it as YAML"
            return [gr.update() for _ in form.components()] + [_error(message)]
        notice = f'<div id="train-note">{html.escape(note)}</div>' if note else ""
        return [*form.values(config, rewards), notice]

    def on_preference(name: str) -> str:
        if not name or name == NO_PREFERENCE:
            return ""
        try:
            return studio.preference_card(name).summary()
        except (ConfigError, ValueError) as error:
            return f"⚠ {error}"

    def refresh_preferences(current: str) -> Any:
        return gr.update(choices=[NO_PREFERENCE, *studio.preference_rewards()], value=current)

    def on_from_yaml(text: str) -> list[Any]:
        try:
            return apply(studio.config_from_yaml(text or ""))
        except ConfigError as error:
            return apply(str(error))

    def on_yaml_file(file: str) -> list[Any]:
        try:
            return apply(studio.config_from_yaml_file(file))
        except ConfigError as error:
            return apply(str(error))

    def on_preset(name: str) -> list[Any]:
        return apply(studio.preset_config(name))

    def on_model(*values: Any) -> list[Any]:
        """A model picked: its family's resolution, steps, guidance and LoRA targets fill the form."""
        try:
            return apply(studio.config_for_model(form.collect(rewards, list(values)), values[0]))
        except ConfigError as error:
            return apply(str(error))

    preference.change(on_preference, preference, preference_card)
    form.refresh_preferences = refresh_preferences
    form.refresh_models = lambda current: gr.update(choices=studio.models(), value=current)
    start.click(on_start, form.components(), status)
    to_yaml.click(on_to_yaml, form.components(), [yaml_box, download_yaml, status])
    from_yaml.click(on_from_yaml, yaml_box, [*form.components(), status])
    yaml_file.upload(on_yaml_file, yaml_file, [*form.components(), status])
    load_preset.click(on_preset, preset, [*form.components(), status])
    model.input(on_model, form.components(), [*form.components(), status])
    form.status, form.apply = status, apply  # the Jobs tab's "duplicate into Train" fills the form
    return form
