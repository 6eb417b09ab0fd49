"""What every model family must do, checked on a tiny random pipeline of it: load offline, sample with
every solver, train a V-GRPO iteration through `vgrpo train --config` that changes the LoRA and nothing
else, reload the saved LoRA to identical outputs, run as a job through the queue, and export a LoRA that
diffusers' own `load_lora_weights` applies at the trained strength."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors import safe_open

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import JobStatus
from studio.cli import main
from studio.export import export_file
from studio.job_process import run_claimed_job
from studio.jobs import JobService
from trainer_core.adapters import DenoiserAdapter, load_adapter, model_family
from trainer_core.config import TrainConfig, from_dict, load_preset, to_dict
from trainer_core.samplers import SOLVERS

PROMPTS = ("a red circle", "two blue squares")


def small_config(model: str, prompts_file: Path, resolution: int | None = None) -> dict:
    """One V-GRPO iteration of 2 prompts x 2 images, 2 steps, on the family's default LoRA targets."""
    family = model_family(model)
    config = to_dict(load_preset("shapes-smoke"))
    config.update(iterations=1)
    config["model"].update(name=model, device="cpu", resolution=resolution)
    config["rollout"].update(prompts_per_iteration=2, group_size=2, steps=2, solver="euler", prompts=str(prompts_file))
    config["vgrpo"].update(n_mc=1, gradient_steps=1, clip_epsilon=0.0)
    config["optimizer"]["learning_rate"] = 0.01
    config["lora"] = {"rank": 2, "alpha": 4.0, "dropout": 0.0, "target_modules": list(family.lora_targets)}
    config["rewards"] = {"weights": {"jpeg_incompressibility": 1.0}}
    config["logging"].update(sample_every=0, checkpoint_every=1)
    return config


def prompts_file(folder: Path) -> Path:
    path = folder / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def assert_loads_and_samples(model: str, image_side: int, resolution: int | None = None) -> DenoiserAdapter:
    adapter = load_adapter(model, "cpu", resolution)
    embeddings = adapter.encode_prompts(list(PROMPTS))
    for solver in SOLVERS:
        latents = adapter.sample(embeddings, adapter.noise([0, 1]), steps=2, solver=solver)
        assert latents.shape == (2, *adapter.latent_shape) and torch.isfinite(latents).all(), solver
        images = adapter.decode(latents)
        assert images.shape == (2, image_side, image_side, 3) and images.dtype.name == "uint8"
    again = adapter.sample(embeddings, adapter.noise([0, 1]), steps=2, solver="euler")
    assert torch.equal(again, adapter.sample(embeddings, adapter.noise([0, 1]), steps=2, solver="euler"))
    return adapter


def train_through_cli(config: dict, folder: Path) -> Path:
    """`vgrpo train --config` for one iteration; checks that it changed the LoRA and left the base model
    alone; returns the LoRA it saved."""
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    model = Path(config["model"]["name"])
    base_before = {p: p.read_bytes() for p in model.rglob("*.safetensors")}
    out = folder / "run"
    assert main(["train", "--config", str(config_path), "--out", str(out), "--data-dir", str(folder / "home")]) == 0
    checkpoint = out / "checkpoints" / "iter_000001.safetensors"
    with safe_open(str(checkpoint), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    assert tensors and all(".lora_A." in k or ".lora_B." in k for k in tensors), "only LoRA tensors are saved"
    assert any(v.abs().max() > 0 for k, v in tensors.items() if ".lora_B." in k), "B starts at 0: training moved it"
    assert {p: p.read_bytes() for p in model.rglob("*.safetensors")} == base_before
    return checkpoint


def assert_one_iteration_trains_only_the_lora(config: dict) -> None:
    from trainer_core.rewards.base import RewardMix
    from trainer_core.rewards.builtin import builtin_rewards
    from trainer_core.trainer import VGRPOTrainer

    train_config = from_dict(TrainConfig, config)
    adapter = load_adapter(train_config.model.name, "cpu", train_config.model.resolution)
    trainer = VGRPOTrainer(adapter, RewardMix(builtin_rewards(), train_config.rewards), train_config)
    base = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" not in k}
    lora = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" in k}
    assert lora, "no LoRA parameters were added"
    metrics = trainer.step()
    assert metrics["grad_norm"] > 0
    after = dict(adapter.denoiser.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base.items())
    assert any(not torch.equal(after[k], v) for k, v in lora.items())


def velocity_probe(adapter: DenoiserAdapter) -> torch.Tensor:
    """The denoiser's velocity on fixed inputs, for comparing two ways of loading one LoRA."""
    embeddings = adapter.encode_prompts(list(PROMPTS))
    with torch.no_grad():
        return adapter.velocity(adapter.noise([5, 6]), torch.tensor([0.3, 0.8]), embeddings)


def assert_reloads_identically(model: str, checkpoint: Path, resolution: int | None = None) -> torch.Tensor:
    """The saved LoRA, loaded twice, gives identical outputs that differ from the base model's; returns them."""
    first, second, base = (load_adapter(model, "cpu", resolution) for _ in range(3))
    first.load_lora(checkpoint)
    second.load_lora(checkpoint)
    tuned = velocity_probe(first)
    assert torch.equal(tuned, velocity_probe(second))
    assert not torch.allclose(tuned, velocity_probe(base), atol=1e-6)
    return tuned


def assert_runs_through_the_queue(config: dict, folder: Path) -> None:
    data = DataDir(folder / "queue").create()
    database = Database.open(data.default_url())
    try:
        service = JobService(database, data)
        job_id = service.submit(config)
        claimed = service.claim()
        assert claimed is not None and claimed[0].id == job_id
        assert run_claimed_job(service, job_id, claimed[1]) == JobStatus.DONE
        assert service.get(job_id).status == JobStatus.DONE
        assert [c.iteration for c in service.checkpoints(job_id)] == [1]
    finally:
        database.dispose()


def assert_loader_reproduces(
    model: str, lora_file: Path, expected: torch.Tensor, resolution: int | None = None, atol: float = 1e-5
) -> None:
    """diffusers' `load_lora_weights` on the base pipeline gives the studio's own tuned denoiser output."""
    adapter = load_adapter(model, "cpu", resolution)
    adapter.pipe.load_lora_weights(str(lora_file))
    torch.testing.assert_close(velocity_probe(adapter), expected, atol=atol, rtol=1e-4)


def assert_exports_load_in_diffusers(
    model: str, checkpoint: Path, tuned: torch.Tensor, folder: Path, resolution: int | None = None
) -> list[str]:
    """The diffusers export, loaded by diffusers, reproduces the trained LoRA; returns the formats checked."""
    checked = []
    for fmt in ("diffusers", "kohya") if model_family(model).denoiser_component == "unet" else ("diffusers",):
        exported = folder / f"export-{fmt}.safetensors"
        export_file(checkpoint, exported, fmt, model)
        assert_loader_reproduces(model, exported, tuned, resolution)
        checked.append(fmt)
    return checked
