"""Where models come from: built-in names and local diffusers directories.

Nothing here downloads. A model is either a built-in name (`shapes-base`,
shipped inside the package) or a local directory with `model_index.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer_core.shapes.pipeline import ShapesPipeline

ASSETS = Path(__file__).with_name("assets")
BUILTIN_MODELS: dict[str, Path] = {"shapes-base": ASSETS / "shapes-base"}


class ModelNotFoundError(ValueError):
    """A model name that is neither built in nor a usable local directory."""


def resolve_model(name_or_path: str, models_dir: Path | None = None) -> Path:
    """The pipeline directory for a built-in name, a name in `models_dir` (the studio's own models) or a
    local path."""
    if not name_or_path or not name_or_path.strip():
        raise ModelNotFoundError(f"model: empty; use a built-in model ({', '.join(BUILTIN_MODELS)}) or a local path")
    if name_or_path in BUILTIN_MODELS:
        path = BUILTIN_MODELS[name_or_path]
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"model: built-in {name_or_path!r} has no weights at {path}; run `vgrpo pretrain-shapes --out {path}`"
            )
        return path
    if models_dir is not None and Path(name_or_path).name == name_or_path:
        local = models_dir / name_or_path
        if (local / "model_index.json").is_file():
            return local
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        where = f", a model in {models_dir}" if models_dir is not None else ""
        raise ModelNotFoundError(
            f"model: {name_or_path!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}){where} "
            "nor an existing local directory (nothing is downloaded)"
        )
    if not (path / "model_index.json").is_file():
        raise ModelNotFoundError(f"model: {path} has no model_index.json; expected a diffusers pipeline directory")
    return path


def model_class_name(path: Path) -> str:
    return str(json.loads((path / "model_index.json").read_text())["_class_name"])


def component_on_meta(path: Path, component: str) -> torch.nn.Module:
    """A pipeline component (`unet`, `transformer`) built from its config on the meta device: its module
    names and shapes at full size, no weights read."""
    library, class_name = json.loads((path / "model_index.json").read_text())[component]
    if library != "diffusers":
        raise ModelNotFoundError(f"model: {path}'s {component} is a {library}.{class_name}, not a diffusers model")
    import diffusers

    cls = getattr(diffusers, class_name)
    with torch.device("meta"):
        return cls.from_config(cls.load_config(path / component))


def load_shapes_pipeline(name_or_path: str = "shapes-base", device: str | torch.device = "cpu") -> ShapesPipeline:
    """Load the shapes pipeline offline, in eval mode with frozen weights."""
    path = resolve_model(name_or_path)
    class_name = model_class_name(path)
    if class_name != ShapesPipeline.__name__:
        raise ModelNotFoundError(f"model: {path} holds a {class_name}; this command needs a ShapesPipeline")
    pipe = ShapesPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.text_encoder):
        module.eval().requires_grad_(False)
    return pipe.to(device)
