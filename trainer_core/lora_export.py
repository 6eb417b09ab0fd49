"""LoRA export for other tools, at the strength it was trained at.

Every loader agrees on one thing: a LoRA without an `.alpha` key is applied at scale 1 (ComfyUI, AUTOMATIC1111
and diffusers alike). So the trained scale alpha / r is folded into the up (B) weights and no alpha is
written: an alpha key would be read differently by each (A1111 fails on SD3 files that have one, diffusers
loses per-module alphas on SD attention layers and refuses alpha keys beside header metadata).

kohya (what ComfyUI and AUTOMATIC1111 load), per weight of the model as those tools name it:

    STEM.lora_down.weight   = A                  [r, in]
    STEM.lora_up.weight     = (alpha / r) * B    [out, r]

STEM is the family's name for the weight (`ModelFamily.kohya_target`). Where the tool's weight stacks
several diffusers layers (SD3's and FLUX's fused q, k, v), the LoRAs of the layers become one LoRA of
the summed rank: A stacked, B block-diagonal, which adds exactly each layer's own update to its rows
(a layer not adapted contributes zero rows).

diffusers: `<unet|transformer>.<module path>.lora_A.weight` / `.lora_B.weight`, B scaled the same way,
and the `lora_adapter_metadata` header that diffusers' `load_lora_weights` builds its adapter from
(keys prefixed by the component, rank = alpha). ComfyUI reads these names too for SD3 and FLUX, not for
SD1.5 / SDXL attention layers; AUTOMATIC1111 reads them for none. Both are single safetensors files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from trainer_core.adapters.family import ModelFamily
from trainer_core.files import atomic_path
from trainer_core.lora import LoraSpec, read_lora

FORMATS = ("kohya", "diffusers")
#: the output size of a denoiser module by its path, for the rows of a fused weight the LoRA leaves alone
OutFeatures = Callable[[str], int]


def lora_pairs(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(A, B) of each adapted module, by its path in the denoiser."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        for suffix in (".lora_A.weight", ".lora_B.weight"):
            if key.endswith(suffix):
                pairs.setdefault(key.removesuffix(suffix), {})[suffix[6]] = value.float()
                break
        else:
            raise ValueError(f"lora: unexpected tensor {key!r} (expected ...lora_A.weight or ...lora_B.weight)")
    incomplete = [path for path, pair in pairs.items() if len(pair) != 2]
    if incomplete:
        raise ValueError(f"lora: {incomplete[0]!r} lacks its lora_A or lora_B tensor")
    return {path: (pair["A"], pair["B"]) for path, pair in pairs.items()}


def kohya_state_dict(
    tensors: dict[str, torch.Tensor], spec: LoraSpec, family: ModelFamily, out_features: OutFeatures | None = None
) -> dict[str, torch.Tensor]:
    """The LoRA under the names ComfyUI and AUTOMATIC1111 read for `family`, the same update at scale 1."""
    scale = spec.alpha / spec.rank
    pairs = lora_pairs(tensors)
    targets = {}
    for path in pairs:
        target = family.kohya_target(path)
        targets[target.name] = target
    state: dict[str, torch.Tensor] = {}
    for stem, target in targets.items():
        present = [part for part in target.parts if part in pairs]
        down = torch.cat([pairs[part][0] for part in present])  # [sum r, in, ...]
        if len(target.parts) == 1:
            up = pairs[target.parts[0]][1]
        else:
            up = _block_diagonal_up(target.parts, pairs, out_features, stem)
        state[f"{stem}.lora_down.weight"] = down.contiguous()
        state[f"{stem}.lora_up.weight"] = (up * scale).contiguous()
    return state


def _block_diagonal_up(
    parts: tuple[str, ...],
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    out_features: OutFeatures | None,
    stem: str,
) -> torch.Tensor:
    """B of the fused LoRA: each adapted part's B at its rows of the fused weight and its columns of A."""
    sizes = []
    for part in parts:
        if part in pairs:
            sizes.append(pairs[part][1].shape[0])
        elif out_features is None:
            raise ValueError(f"export: {stem} fuses {part!r}, which the LoRA does not adapt; give the base model")
        else:
            sizes.append(out_features(part))
    present = [part for part in parts if part in pairs]
    up = torch.zeros(sum(sizes), sum(pairs[p][0].shape[0] for p in present))
    row = column = 0
    for part, size in zip(parts, sizes, strict=True):
        if part in pairs:
            b = pairs[part][1]
            up[row : row + size, column : column + b.shape[1]] = b
            column += b.shape[1]
        row += size
    return up


def diffusers_state_dict(tensors: dict[str, torch.Tensor], spec: LoraSpec, component: str) -> dict[str, torch.Tensor]:
    scale = spec.alpha / spec.rank
    state = {}
    for path, (down, up) in lora_pairs(tensors).items():
        state[f"{component}.{path}.lora_A.weight"] = down.contiguous()
        state[f"{component}.{path}.lora_B.weight"] = (up * scale).contiguous()
    return state


def export_lora(
    source: Path,
    destination: Path,
    fmt: str,
    family: ModelFamily,
    out_features: OutFeatures | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, str]:
    """Write the studio LoRA at `source` as `fmt` for a model of `family` to `destination`; returns the
    metadata written. `out_features` sizes the rows of fused weights that the LoRA does not adapt."""
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    spec, tensors, stored = read_lora(source)
    header = {
        "base_model": stored.get("base_model", ""),
        "family": family.name,
        "rank": str(spec.rank),
        "alpha": str(spec.alpha),
        "target_modules": json.dumps(list(spec.target_modules)),
        "reward_mix": stored.get("reward_mix", ""),
        "iterations": stored.get("iterations", ""),
        "algorithm": stored.get("algorithm", ""),
        **(metadata or {}),
    }
    if fmt == "kohya":
        state = kohya_state_dict(tensors, spec, family, out_features)
        # alpha / r is in the up weights: to a kohya tool this is a LoRA whose alpha equals its rank
        header.update(ss_network_module="networks.lora", ss_network_dim=str(spec.rank), ss_network_alpha=str(spec.rank))
    else:
        state = diffusers_state_dict(tensors, spec, family.denoiser_component)
        adapter = {"r": spec.rank, "lora_alpha": spec.rank, "target_modules": list(spec.target_modules)}
        header["lora_adapter_metadata"] = json.dumps(
            {f"{family.denoiser_component}.{key}": value for key, value in adapter.items()}
        )
    with atomic_path(destination) as partial:
        save_file(state, str(partial), metadata=header)
    return header
