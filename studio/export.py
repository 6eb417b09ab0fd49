"""Exporting a job's checkpoint for ComfyUI / AUTOMATIC1111 (kohya naming) or diffusers."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from sqlalchemy import select

from storage.models import Checkpoint, Export
from studio.jobs import JobError, JobService
from trainer_core.adapters import family_of
from trainer_core.lora import read_lora
from trainer_core.lora_export import FORMATS, export_lora
from trainer_core.model_zoo import component_on_meta, resolve_model

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_name(name: str) -> str:
    """A file name made of letters, digits, `.`, `_` and `-`, with no leading dot and at most 100 characters."""
    cleaned = _UNSAFE.sub("_", name.strip()).strip("._")[:100]
    if not cleaned:
        raise ValueError(f"name: {name!r} has no usable characters; use letters, digits, '.', '_' or '-'")
    return cleaned.removesuffix(".safetensors")


def export_file(
    lora: Path,
    destination: Path,
    fmt: str,
    base: str | None = None,
    metadata: dict[str, str] | None = None,
    models_dir: Path | None = None,
) -> dict[str, str]:
    """Write the studio LoRA file `lora` as `fmt` for its base model (`base`, else the one it records;
    names also looked up in `models_dir`); returns the metadata written. What `vgrpo export` and the
    Export tab both run."""
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    base = base or read_lora(lora)[2].get("base_model")
    if not base:
        raise ValueError(f"base: {lora} does not record its base model; name it (a built-in model or a directory)")
    path = resolve_model(base, models_dir)
    family = family_of(path)
    modules: dict[str, torch.nn.Module] = {}

    def out_features(module: str) -> int:
        if not modules:
            modules.update(component_on_meta(path, family.denoiser_component).named_modules())
        return int(modules[module].out_features)

    return export_lora(lora, destination, fmt, family, out_features, {"base_model": base, **(metadata or {})})


def export_checkpoint(service: JobService, checkpoint_id: int, fmt: str, name: str = "") -> Path:
    """Write the checkpoint's LoRA as one .safetensors file in the data directory's exports; returns it."""
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with service.db.session() as session:
        checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise JobError(f"checkpoint {checkpoint_id}: no such checkpoint")
    job = service.get(checkpoint.job_id)
    stem = sanitize_name(name or f"job{job.id}_iter{checkpoint.iteration}_{fmt}")
    destination = service.data_dir.inside(Path("exports") / f"{stem}.safetensors")
    source = service.data_dir.inside(checkpoint.path)
    base = job.config["model"]["name"]
    metadata = export_file(source, destination, fmt, base, {"job": str(job.id)}, service.data_dir.models)
    with service.db.session() as session:
        session.add(
            Export(checkpoint_id=checkpoint.id, format=fmt, path=service.data_dir.relative(destination), extra=metadata)
        )
    return destination


def exports_of(service: JobService, job_id: int) -> list[Export]:
    with service.db.session() as session:
        return list(
            session.scalars(
                select(Export)
                .join(Checkpoint, Export.checkpoint_id == Checkpoint.id)
                .where(Checkpoint.job_id == job_id)
            )
        )
