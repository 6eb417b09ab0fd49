"""Where models come from: built-in names and local diffusers directories.

Nothing here downloads. A model is either a built-in name (`shapes-base`,
shipped inside the package) or a local directory with `model_index.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import torch

from trainer_core.shapes.pipeline import ShapesPipeline

ASSETS = Path(__file__).with_name("assets")
BUILTIN_MODELS: dict[str, Path] = {"shapes-base": ASSETS / "shapes-base"}


class ModelNotFoundError(ValueError):
    """A model name that is neither built in nor a usable local directory."""


#: Pickled weights (.bin, .ckpt, .pt) can run code when read: loaders read safetensors only, unless the
#: machine's owner allows pickles for a job (`model.safetensors_only: false`, from the command line).
_PICKLES_ALLOWED: ContextVar[bool] = ContextVar("pickled_weights_allowed", default=False)
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


@contextlib.contextmanager
def pickled_weights(allowed: bool) -> Iterator[None]:
    """Loads inside the block may read pickled weights when `allowed`."""
    token = _PICKLES_ALLOWED.set(allowed)
    try:
        yield
    finally:
        _PICKLES_ALLOWED.reset(token)


def use_safetensors() -> bool | None:
    """What diffusers' and transformers' `from_pretrained(use_safetensors=...)` are given: True (safetensors
    or an error) unless pickles are allowed, then None (safetensors when present, else the pickle)."""
    return None if _PICKLES_ALLOWED.get() else True


def pickled_only_components(path: Path) -> list[str]:
    """The pipeline's components whose weights exist only as pickles (what `use_safetensors=True` refuses)."""
    index = json.loads((path / "model_index.json").read_text())
    found = []
    for component, entry in index.items():
        folder = path / component
        if component.startswith("_") or not isinstance(entry, list) or not folder.is_dir():
            continue
        files = [f for f in folder.iterdir() if f.is_file()]
        pickles = [f.name for f in files if f.suffix in PICKLE_SUFFIXES]
        if pickles and not any(f.suffix == ".safetensors" for f in files):
            found.append(f"{component} ({', '.join(sorted(pickles))})")
    return found


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
    path = Path(os.path.expanduser(name_or_path))  # never raises, even for an unknown ~user
    if models_dir is not None and not path.is_absolute():  # a relative name is a directory in models_dir
        path = models_dir / name_or_path
    if not os.path.isdir(path):  # never raises, even on a name too long for the filesystem
        where = f", a model in {models_dir}" if models_dir is not None else ""
        shown = repr(name_or_path) if len(name_or_path) <= 120 else repr(name_or_path[:100]) + "..."
        raise ModelNotFoundError(
            f"model: {shown} is not a built-in model ({', '.join(BUILTIN_MODELS)}){where} "
            "nor an existing local directory (nothing is downloaded)"
        )
    if not os.path.isfile(path / "model_index.json"):
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
    pipe = ShapesPipeline.from_pretrained(path, local_files_only=True, use_safetensors=use_safetensors())
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.text_encoder):
        module.eval().requires_grad_(False)
    return pipe.to(device)
