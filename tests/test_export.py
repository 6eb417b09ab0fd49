"""LoRA export: kohya names that ComfyUI / A1111 read, the same update as the studio's LoRA, safe names."""

import json
import re

import pytest
import torch
from safetensors import safe_open

from storage.data_dir import DataDir
from storage.db import Database
from studio.cli import main
from studio.export import export_checkpoint, exports_of, sanitize_name
from studio.jobs import JobService
from trainer_core.adapters import load_adapter
from trainer_core.config import load_preset, to_dict
from trainer_core.lora import LoraSpec

KOHYA_KEY = re.compile(r"^lora_unet_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight)$")


@pytest.fixture
def trained_checkpoint(tiny_model, tmp_path):
    data = DataDir(tmp_path / "data").create()
    database = Database.open(data.default_url())
    service = JobService(database, data)
    config = to_dict(load_preset("shapes-smoke"))
    config["model"]["name"] = tiny_model
    job_id = service.submit(config)
    adapter = load_adapter(tiny_model, "cpu")
    adapter.add_lora(LoraSpec(rank=4, alpha=8, target_modules=("to_k", "to_out.0", "conv1")))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in adapter.lora_parameters():
            param.normal_(0, 0.1)  # B too: a LoRA that changes the model
    path = data.run_dir(job_id) / "checkpoints" / "iter_000006.safetensors"
    adapter.save_lora(path, {"reward_mix": "partial=1", "iterations": "6", "base_model": tiny_model})
    service.record_checkpoint(job_id, 6, str(path))
    checkpoint = service.checkpoints(job_id)[0]
    yield service, checkpoint, adapter
    database.dispose()


def test_kohya_export_has_kohya_names_and_the_same_update(trained_checkpoint):
    service, checkpoint, adapter = trained_checkpoint
    path = export_checkpoint(service, checkpoint.id, "kohya", "my lora!")
    assert path.name == "my_lora.safetensors" and path.parent == service.data_dir.exports
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        tensors = {k: handle.get_tensor(k) for k in keys}
        metadata = handle.metadata()
    assert keys and all(KOHYA_KEY.match(k) for k in keys), keys[:3]
    assert metadata["rank"] == "4" and metadata["alpha"] == "8.0" and metadata["iterations"] == "6"
    assert metadata["reward_mix"] == "partial=1" and metadata["ss_network_dim"] == "4"
    # No alpha key (every tool then applies up @ down as it is): that equals what the peft layer adds.
    modules = dict(adapter.denoiser.named_modules())
    checked = convolutions = 0
    for key in keys:
        if not key.endswith(".lora_down.weight"):
            continue
        stem = key.removesuffix(".lora_down.weight")
        up, down = tensors[f"{stem}.lora_up.weight"], tensors[key]
        module_path = next(n for n in modules if f"lora_unet_{n.replace('.', '_')}" == stem)
        expected = modules[module_path].get_delta_weight("default")
        # linear: up [out, r] @ down [r, in]; convolution (LoCon): up [out, r, 1, 1], down [r, in, kh, kw]
        delta = (up.flatten(1) @ down.flatten(1)).view_as(expected)
        assert torch.allclose(delta, expected, atol=1e-6)
        checked += 1
        convolutions += expected.dim() == 4
    assert checked == len(keys) // 2 and convolutions > 0
    assert [e.format for e in exports_of(service, checkpoint.job_id)] == ["kohya"]


def test_diffusers_export_prefixes_the_denoiser_and_carries_the_trained_scale(trained_checkpoint):
    service, checkpoint, adapter = trained_checkpoint
    path = export_checkpoint(service, checkpoint.id, "diffusers")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        config = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert config["unet.r"] == config["unet.lora_alpha"] == 4  # alpha / r is in the weights, not the header
    assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors)
    modules = dict(adapter.denoiser.named_modules())
    for key, down in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("unet.").removesuffix(".lora_A.weight")
            up = tensors[key.replace("lora_A", "lora_B")]
            expected = modules[module].get_delta_weight("default")  # what the trained layer adds
            assert torch.allclose((up.flatten(1) @ down.flatten(1)).view_as(expected), expected, atol=1e-6)


def test_export_names_are_sanitised_and_stay_inside_the_data_directory(trained_checkpoint):
    service, checkpoint, _ = trained_checkpoint
    path = export_checkpoint(service, checkpoint.id, "kohya", "../../etc/passwd")
    assert path.parent == service.data_dir.exports and path.name == "etc_passwd.safetensors"
    assert sanitize_name("  A name/with\\slashes.safetensors ") == "A_name_with_slashes"
    with pytest.raises(ValueError, match="name"):
        sanitize_name("../..")
    with pytest.raises(ValueError, match="format"):
        export_checkpoint(service, checkpoint.id, "ckpt")


def test_the_cli_writes_what_the_export_tab_writes(trained_checkpoint, tmp_path, capsys):
    service, checkpoint, adapter = trained_checkpoint
    from_tab = export_checkpoint(service, checkpoint.id, "kohya", "tab")
    lora = service.data_dir.inside(checkpoint.path)
    out = tmp_path / "cli.safetensors"
    assert main(["export", "--lora", str(lora), "--format", "kohya", "--out", str(out)]) == 0
    assert "shapes family" in capsys.readouterr().out
    with safe_open(str(out), framework="pt") as cli_file, safe_open(str(from_tab), framework="pt") as tab_file:
        assert sorted(cli_file.keys()) == sorted(tab_file.keys())
        assert all(torch.equal(cli_file.get_tensor(k), tab_file.get_tensor(k)) for k in cli_file.keys())  # noqa: SIM118
    assert main(["export", "--lora", str(lora), "--format", "kohya", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--out: must end in .safetensors" in capsys.readouterr().err
    anonymous = tmp_path / "anonymous.safetensors"
    adapter.save_lora(anonymous)  # records no base model
    assert main(["export", "--lora", str(anonymous), "--format", "diffusers", "--out", str(out)]) == 2
    assert "base: " in capsys.readouterr().err
    assert (
        main(["export", "--lora", str(anonymous), "--format", "diffusers", "--base", "nowhere", "--out", str(out)]) == 2
    )
    assert "'nowhere' is not a built-in model" in capsys.readouterr().err
