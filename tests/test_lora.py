import pytest
import torch

from trainer_core.lora import LoraSpec, add_lora, load_lora, read_lora, save_lora
from trainer_core.shapes.pipeline import build_shapes_pipeline


def _velocity(pipe):
    z = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    states, pooled = pipe.encode_prompt(["a red circle", "two blue squares"])
    return pipe.velocity(z, torch.tensor([0.3, 0.8]), states, pooled)


def test_lora_round_trip_reproduces_the_adapted_model(tiny_shapes, tmp_path):
    trained = build_shapes_pipeline(tiny_shapes, seed=1)
    spec = LoraSpec(rank=4, alpha=8)
    add_lora(trained.unet, spec)
    trainable = [n for n, p in trained.unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        base_out = _velocity(trained)
        for name, param in trained.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
        adapted_out = _velocity(trained)
    assert (adapted_out - base_out).abs().max() > 1e-3

    path = tmp_path / "adapter.safetensors"
    save_lora(trained.unet, spec, path, metadata={"base_model": "tiny"})
    loaded_spec, tensors, metadata = read_lora(path)
    assert loaded_spec == spec and metadata["base_model"] == "tiny"
    assert all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in tensors)

    fresh = build_shapes_pipeline(tiny_shapes, seed=1)
    load_lora(fresh.unet, path)
    with torch.no_grad():
        assert torch.allclose(_velocity(fresh), adapted_out, atol=1e-6)


def test_files_that_are_not_loras_are_refused(tiny_shapes, tmp_path):
    pipe = build_shapes_pipeline(tiny_shapes)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match=r"lora: .* is not a safetensors file"):
        load_lora(pipe.unet, junk)
    with pytest.raises(FileNotFoundError, match=r"lora: .* does not exist"):
        load_lora(pipe.unet, tmp_path / "missing.safetensors")


def test_lora_spec_validates_its_fields():
    with pytest.raises(ValueError, match=r"lora.rank"):
        LoraSpec(rank=0)
    with pytest.raises(ValueError, match=r"lora.alpha"):
        LoraSpec(alpha=-1)
