import contextlib

import pytest
import torch
from peft.tuners.lora import LoraLayer

from trainer_core.adapters import load_adapter
from trainer_core.lora import LoraSpec, add_lora, load_lora, read_lora, save_lora
from trainer_core.samplers import solve
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


CONV_AND_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


def _adapter_with_random_lora(tiny_model, dropout: float = 0.0):
    adapter = load_adapter(tiny_model, "cpu")
    adapter.add_lora(LoraSpec(rank=4, alpha=8, dropout=dropout, target_modules=CONV_AND_ATTENTION))
    with torch.no_grad():
        for param in adapter.lora_parameters():
            param.normal_(std=0.1)
    return adapter


def _lora_layers(adapter):
    return [m for m in adapter.denoiser.modules() if isinstance(m, LoraLayer)]


def test_sampling_folds_the_lora_into_the_weights_and_restores_them_bit_for_bit(tiny_model):
    adapter = _adapter_with_random_lora(tiny_model)
    layers = _lora_layers(adapter)
    assert any(isinstance(layer.get_base_layer(), torch.nn.Conv2d) for layer in layers)
    base = {n: p.detach().clone() for n, p in adapter.denoiser.named_parameters() if "lora_" not in n}
    embeddings = adapter.encode_prompts(["two red squares", "a blue circle left of a green star"])
    noise = adapter.noise([0, 1])
    with torch.no_grad():
        # the adapter applied apart: the reference
        apart = solve(adapter.guided_velocity(embeddings), noise, 4, "euler", adapter.time_shift)
        with adapter.lora_merged():
            assert all(layer.merged for layer in layers)
        merged = [adapter.sample(embeddings, noise, 4, "euler") for _ in range(3)]
    assert (apart - noise).abs().max() > 0.1  # the comparison is not between two copies of the noise
    for result in merged:
        torch.testing.assert_close(result, apart, atol=2e-5, rtol=1e-5)
    assert not any(layer.merged for layer in layers)
    for name, param in adapter.denoiser.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base[name]), name


def _loss_and_lora_grads(adapter, fused: bool):
    embeddings = adapter.encode_prompts(["two red squares", "a blue circle left of a green star"] * 2)
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4, *adapter.latent_shape, generator=generator, requires_grad=True)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    for param in adapter.lora_parameters():
        param.grad = None
    with adapter.lora_merged() if fused else contextlib.nullcontext():
        velocity = adapter.velocity(z, t, embeddings)
        velocity.pow(2).mean().backward()
    return velocity.detach(), z.grad, [param.grad.clone() for param in adapter.lora_parameters()]


def test_training_passes_fold_the_lora_per_call_with_the_same_output_and_gradients(tiny_model):
    adapter = _adapter_with_random_lora(tiny_model)
    layers = _lora_layers(adapter)
    base = {n: p.detach().clone() for n, p in adapter.denoiser.named_parameters() if "lora_" not in n}
    velocity, input_grad, lora_grads = _loss_and_lora_grads(adapter, fused=False)
    with adapter.lora_merged():  # gradients on: every layer runs the fused call, none is merged in place
        assert all("forward" in vars(layer) for layer in layers) and not any(layer.merged for layer in layers)
    assert not any("forward" in vars(layer) for layer in layers)
    fused_velocity, fused_input_grad, fused_lora_grads = _loss_and_lora_grads(adapter, fused=True)
    torch.testing.assert_close(fused_velocity, velocity, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(fused_input_grad, input_grad, atol=1e-6, rtol=1e-4)
    assert len(fused_lora_grads) == len(lora_grads) == 2 * len(layers)
    for fused_grad, grad in zip(fused_lora_grads, lora_grads, strict=True):
        assert grad.abs().max() > 0
        torch.testing.assert_close(fused_grad, grad, atol=1e-7, rtol=1e-4)
    for name, param in adapter.denoiser.named_parameters():
        if "lora_" not in name:
            assert param.grad is None and torch.equal(param, base[name]), name
    # an optimiser step between calls is seen: the fold is recomputed from the current A and B
    with torch.no_grad():
        for param in adapter.lora_parameters():
            param.mul_(-1.5)
    torch.testing.assert_close(
        _loss_and_lora_grads(adapter, fused=True)[0],
        _loss_and_lora_grads(adapter, fused=False)[0],
        atol=2e-5,
        rtol=1e-5,
    )
    with torch.enable_grad(), adapter.lora_disabled(), adapter.lora_merged():
        embeddings = adapter.encode_prompts(["two red squares"])
        z, t = torch.randn(1, *adapter.latent_shape), torch.tensor([0.5])
        disabled = adapter.velocity(z, t, embeddings)
    with torch.no_grad():
        for param in adapter.lora_parameters():
            param.zero_()
        torch.testing.assert_close(disabled.detach(), adapter.velocity(z, t, embeddings), atol=1e-6, rtol=1e-5)
    # autocast entered inside the context (the MDP trainers do): peft's own path, bit for bit
    with torch.no_grad():
        for param in adapter.lora_parameters():
            param.normal_(std=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        apart = adapter.velocity(z, t, embeddings)
    with adapter.lora_merged(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(adapter.velocity(z, t, embeddings), apart)


def test_the_lora_stays_apart_where_folding_it_would_change_the_numbers(tiny_model):
    adapter = _adapter_with_random_lora(tiny_model)
    with adapter.lora_merged():  # gradients flow: the LoRA weights must stay leaves of the graph
        assert not any(layer.merged for layer in _lora_layers(adapter))
    dropped_with_grad = _adapter_with_random_lora(tiny_model, dropout=0.1)
    with dropped_with_grad.lora_merged():
        assert not any("forward" in vars(layer) for layer in _lora_layers(dropped_with_grad))
    with torch.no_grad(), adapter.lora_disabled(), adapter.lora_merged():
        assert not any(layer.merged for layer in _lora_layers(adapter))
    dropped = _adapter_with_random_lora(tiny_model, dropout=0.1)
    with torch.no_grad(), dropped.lora_merged():
        assert not any(layer.merged for layer in _lora_layers(dropped))
