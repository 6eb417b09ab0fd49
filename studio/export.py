"""Exporting a job's checkpoint for ComfyUI / AUTOMATIC1111 (kohya naming) or diffusers."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from storage.models import Checkpoint, Export
from studio.jobs import JobError, JobService
from trainer_core.lora_export import FORMATS, export_lora
from trainer_core.model_zoo import model_class_name, resolve_model

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: the denoiser's attribute name in each pipeline, as diffusers' LoRA keys use it
DENOISER_COMPONENT = {"ShapesPipeline": "unet", "StableDiffusion3Pipeline": "transformer"}


def sanitize_name(name: str) -> str:
    """A file name made of letters, digits, `.`, `_` and `-`, with no leading dot and at most 100 characters."""
    cleaned = _UNSAFE.sub("_", name.strip()).strip("._")[:100]
    if not cleaned:
        raise ValueError(f"name: {name!r} has no usable characters; use letters, digits, '.', '_' or '-'")
    return cleaned.removesuffix(".safetensors")


def export_checkpoint(service: JobService, checkpoint_id: int, fmt: str, name: str = "") -> Path:
    """Write the checkpoint's LoRA as one .safetensors file in the data directory's exports; returns it."""
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with service.db.session() as session:
        checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise JobError(f"checkpoint {checkpoint_id}: no such checkpoint")
    job = service.get(checkpoint.job_id)
    base = job.config["model"]["name"]
    component = DENOISER_COMPONENT.get(model_class_name(resolve_model(base)), "unet")
    stem = sanitize_name(name or f"job{job.id}_iter{checkpoint.iteration}_{fmt}")
    destination = service.data_dir.inside(Path("exports") / f"{stem}.safetensors")
    metadata = export_lora(
        service.data_dir.inside(checkpoint.path), destination, fmt, component, {"base_model": base, "job": str(job.id)}
    )
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
