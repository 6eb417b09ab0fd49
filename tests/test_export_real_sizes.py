"""Kohya exports at real size (architectures built on the meta device from their published configs, nothing
downloaded): every tensor lands on a weight the tools have, with that weight's shape, and the update a tool
adds (up @ down, no alpha key: scale 1 in ComfyUI, AUTOMATIC1111 and diffusers) is the trained one.

For SD3 and FLUX the tools' weights are those of the original checkpoints (Stability's MMDiT, Black Forest
Labs' FLUX), written out below from the architectures themselves, independently of the exporter's tables;
ComfyUI keys a kohya LoRA as `lora_unet_` + a weight's name with `_` for `.` (AUTOMATIC1111 reads
`lora_unet` as `diffusion_model`). FLUX's export also goes through diffusers' own kohya-to-diffusers
conversion, which must give back each trained layer's update."""

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from trainer_core.adapters import families
from trainer_core.lora import LoraSpec, write_lora
from trainer_core.lora_export import export_lora
from trainer_core.real_sizes import REAL_DENOISERS, real_denoiser

RANK, ALPHA = 2, 6.0

#: layers adapted beyond each family's defaults, so that every kind of layer's name is checked
EXTRA_TARGETS = {
    "sd15": ("ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"),
    "sdxl": ("ff.net.0.proj", "ff.net.2"),
    "sd3": (
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.2",
    ),
    "flux": ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "proj_mlp", "norm1.linear", "norm.linear"),
}


def sai_mmdit_weights(depth: int, hidden: int, dual: set[int]) -> dict[str, tuple[int, int]]:
    """Stability's MMDiT: joint blocks of an x block and a context block; the last context block only
    projects q, k, v (and modulates by shift and scale); SD3.5-M's first blocks have a second attention."""
    weights = {}
    for i in range(depth):
        x, c = f"joint_blocks.{i}.x_block", f"joint_blocks.{i}.context_block"
        weights |= {f"{x}.attn.qkv": (3 * hidden, hidden), f"{x}.attn.proj": (hidden, hidden)}
        weights |= {f"{x}.mlp.fc1": (4 * hidden, hidden), f"{x}.mlp.fc2": (hidden, 4 * hidden)}
        weights[f"{x}.adaLN_modulation.1"] = ((9 if i in dual else 6) * hidden, hidden)
        if i in dual:
            weights |= {f"{x}.attn2.qkv": (3 * hidden, hidden), f"{x}.attn2.proj": (hidden, hidden)}
        weights[f"{c}.attn.qkv"] = (3 * hidden, hidden)
        if i < depth - 1:
            weights |= {f"{c}.attn.proj": (hidden, hidden), f"{c}.adaLN_modulation.1": (6 * hidden, hidden)}
            weights |= {f"{c}.mlp.fc1": (4 * hidden, hidden), f"{c}.mlp.fc2": (hidden, 4 * hidden)}
        else:
            weights[f"{c}.adaLN_modulation.1"] = (2 * hidden, hidden)
    return weights


def bfl_flux_weights(double: int, single: int, hidden: int) -> dict[str, tuple[int, int]]:
    """Black Forest Labs' FLUX: double blocks with an image and a text stream; single blocks whose linear1
    computes q, k, v and the MLP's input at once and whose linear2 takes attention and MLP outputs."""
    weights = {}
    for i in range(double):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
            weights |= {f"{block}_attn.qkv": (3 * hidden, hidden), f"{block}_attn.proj": (hidden, hidden)}
            weights |= {f"{block}_mlp.0": (4 * hidden, hidden), f"{block}_mlp.2": (hidden, 4 * hidden)}
            weights[f"{block}_mod.lin"] = (6 * hidden, hidden)
    for i in range(single):
        weights[f"single_blocks.{i}.linear1"] = (7 * hidden, hidden)
        weights[f"single_blocks.{i}.linear2"] = (hidden, 5 * hidden)
        weights[f"single_blocks.{i}.modulation.lin"] = (3 * hidden, hidden)
    return weights


def tool_weights(model: str, denoiser: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """The weights a tool patches, by name, with their shapes."""
    config = REAL_DENOISERS[model][2]
    if model == "sd3.5-medium":
        hidden = config["num_attention_heads"] * config["attention_head_dim"]
        return sai_mmdit_weights(config["num_layers"], hidden, set(config["dual_attention_layers"]))
    if model == "flux-dev":
        hidden = config["num_attention_heads"] * config["attention_head_dim"]
        return bfl_flux_weights(config["num_layers"], config["num_single_layers"], hidden)
    # SD1.5 / SDXL: the tools map kohya names spelled with the diffusers path onto their own layers
    return {n: tuple(m.weight.shape) for n, m in denoiser.named_modules() if isinstance(m, torch.nn.Linear)}


def synthetic_lora(denoiser: torch.nn.Module, targets: tuple[str, ...], folder) -> tuple:
    """A studio LoRA file on every Linear whose name ends in a target, random A and B."""
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for name, module in denoiser.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith(f".{t}") for t in targets):
            tensors[f"{name}.lora_A.weight"] = torch.randn(RANK, module.in_features, generator=generator)
            tensors[f"{name}.lora_B.weight"] = torch.randn(module.out_features, RANK, generator=generator) / 10
    path = folder / "lora.safetensors"
    write_lora(tensors, LoraSpec(rank=RANK, alpha=ALPHA, target_modules=targets), path)
    return path, tensors


def trained_update(tensors: dict[str, torch.Tensor], module: str, probe: torch.Tensor) -> torch.Tensor:
    """(alpha / r) B A probe for one adapted module: what the studio's LoRA adds to its output."""
    a, b = tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"]
    return ALPHA / RANK * b @ (a @ probe)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(REAL_DENOISERS))
def test_kohya_export_lands_on_the_tools_weights_with_the_trained_update(model, tmp_path):
    family = families()[REAL_DENOISERS[model][0]]
    denoiser = real_denoiser(model)
    modules = dict(denoiser.named_modules())
    lora, tensors = synthetic_lora(denoiser, family.lora_targets + EXTRA_TARGETS[family.name], tmp_path)
    exported = tmp_path / "kohya.safetensors"
    export_lora(lora, exported, "kohya", family, out_features=lambda path: modules[path].out_features)
    state = load_file(str(exported))
    assert not [k for k in state if k.endswith(".alpha")]  # the scale is in the weights: every tool reads 1
    weights = {f"lora_unet_{name.replace('.', '_')}": shape for name, shape in tool_weights(model, denoiser).items()}
    stems = {k.rsplit(".", 2)[0] for k in state}
    assert stems <= set(weights), sorted(stems - set(weights))[:3]
    adapted = {k.removesuffix(".lora_A.weight") for k in tensors if k.endswith(".lora_A.weight")}
    covered = set()
    generator = torch.Generator().manual_seed(1)
    for stem in stems:
        up, down = state[f"{stem}.lora_up.weight"], state[f"{stem}.lora_down.weight"]
        out_features, in_features = weights[stem]
        assert up.shape[0] == out_features and down.shape[1] == in_features and up.shape[1] == down.shape[0]
        probe = torch.randn(in_features, generator=generator)
        applied = up @ (down @ probe)  # [out]: what the tool adds to this weight's output
        # the diffusers layers stacked in this weight, in order, each its rows
        parts = next(family.kohya_target(m).parts for m in adapted if family.kohya_target(m).name == stem)
        expected = torch.cat(
            [
                trained_update(tensors, part, probe) if part in adapted else torch.zeros(modules[part].out_features)
                for part in parts
            ]
        )
        torch.testing.assert_close(applied, expected, atol=1e-4, rtol=1e-4)
        covered |= set(parts) & adapted
    assert covered == adapted  # every trained layer is in the file
    if model == "flux-dev":
        assert_diffusers_flux_conversion_gives_back_each_update(exported, tensors, modules)


def assert_diffusers_flux_conversion_gives_back_each_update(exported, tensors, modules) -> None:
    from diffusers import FluxPipeline

    converted = FluxPipeline.lora_state_dict(str(exported))
    converted = converted[0] if isinstance(converted, tuple) else converted
    generator = torch.Generator().manual_seed(2)
    adapted = {k.removesuffix(".lora_A.weight") for k in tensors if k.endswith(".lora_A.weight")}
    read_back = {re.sub(r"^transformer\.|\.lora_A\.weight$", "", k) for k in converted if k.endswith("lora_A.weight")}
    assert adapted <= read_back
    for module in adapted:
        a = converted[f"transformer.{module}.lora_A.weight"]
        b = converted[f"transformer.{module}.lora_B.weight"]
        probe = torch.randn(modules[module].in_features, generator=generator)
        torch.testing.assert_close(b @ (a @ probe), trained_update(tensors, module, probe), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(REAL_DENOISERS))
def test_diffusers_export_names_the_real_modules_with_the_trained_update(model, tmp_path):
    family = families()[REAL_DENOISERS[model][0]]
    denoiser = real_denoiser(model)
    modules = dict(denoiser.named_modules())
    lora, tensors = synthetic_lora(denoiser, family.lora_targets, tmp_path)
    exported = tmp_path / "diffusers.safetensors"
    export_lora(lora, exported, "diffusers", family)
    with safe_open(str(exported), framework="pt") as handle:
        header = json.loads(handle.metadata()["lora_adapter_metadata"])
    prefix = family.denoiser_component
    assert header[f"{prefix}.r"] == header[f"{prefix}.lora_alpha"] == RANK  # what diffusers reads: scale 1
    state = load_file(str(exported))
    assert all(k.startswith(f"{prefix}.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in state)
    generator = torch.Generator().manual_seed(3)
    for key, down in state.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix(f"{prefix}.").removesuffix(".lora_A.weight")
            up = state[key.replace(".lora_A.", ".lora_B.")]
            assert (up.shape[0], down.shape[1]) == tuple(modules[module].weight.shape)
            probe = torch.randn(down.shape[1], generator=generator)
            torch.testing.assert_close(
                up @ (down @ probe), trained_update(tensors, module, probe), atol=1e-4, rtol=1e-4
            )
    assert len(state) == len(tensors)
