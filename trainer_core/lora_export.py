"""LoRA export for other tools: kohya / AUTOMATIC1111 / ComfyUI naming, or diffusers' peft naming.

kohya (what ComfyUI and A1111 load), per adapted module `a.b.0.c`:

    lora_unet_a_b_0_c.lora_down.weight   = A  [r, in]
    lora_unet_a_b_0_c.lora_up.weight     = B  [out, r]
    lora_unet_a_b_0_c.alpha              = alpha (scalar); the update is (alpha / r) * B A

diffusers: `<unet|transformer>.a.b.0.c.lora_A.weight` / `.lora_B.weight`, the adapter config in the
`lora_adapter_metadata` header. Both are single safetensors files with string metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from trainer_core.lora import LoraSpec, read_lora

FORMATS = ("kohya", "diffusers")
_SUFFIXES = {".lora_A.weight": "lora_down.weight", ".lora_B.weight": "lora_up.weight"}


def _module_and_part(key: str) -> tuple[str, str]:
    for suffix, part in _SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    raise ValueError(f"lora: unexpected tensor {key!r} (expected ...lora_A.weight or ...lora_B.weight)")


def kohya_state_dict(
    tensors: dict[str, torch.Tensor], spec: LoraSpec, prefix: str = "lora_unet"
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        module, part = _module_and_part(key)
        name = f"{prefix}_{module.replace('.', '_')}"
        state[f"{name}.{part}"] = value.float().contiguous()
        state[f"{name}.alpha"] = torch.tensor(float(spec.alpha))
    return state


def diffusers_state_dict(tensors: dict[str, torch.Tensor], component: str) -> dict[str, torch.Tensor]:
    return {f"{component}.{key}": value.float().contiguous() for key, value in tensors.items()}


def export_lora(
    source: Path, destination: Path, fmt: str, component: str = "unet", metadata: dict[str, str] | None = None
) -> dict[str, str]:
    """Write the studio LoRA at `source` as `fmt` to `destination`; returns the metadata written.

    `component` is the denoiser's name in its pipeline (`unet` or `transformer`), used by diffusers.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    spec, tensors, stored = read_lora(source)
    header = {
        "base_model": stored.get("base_model", ""),
        "rank": str(spec.rank),
        "alpha": str(spec.alpha),
        "target_modules": json.dumps(list(spec.target_modules)),
        "reward_mix": stored.get("reward_mix", ""),
        "iterations": stored.get("iterations", ""),
        "algorithm": stored.get("algorithm", ""),
        **(metadata or {}),
    }
    if fmt == "kohya":
        state = kohya_state_dict(tensors, spec)
        header.update({"ss_network_module": "networks.lora", "ss_network_dim": str(spec.rank)})
        header["ss_network_alpha"] = str(spec.alpha)
    else:
        state = diffusers_state_dict(tensors, component)
        adapter = {"r": spec.rank, "lora_alpha": spec.alpha, "target_modules": list(spec.target_modules)}
        header["lora_adapter_metadata"] = json.dumps(adapter)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(destination.suffix + ".partial")
    save_file(state, str(partial), metadata=header)
    partial.replace(destination)
    return header
