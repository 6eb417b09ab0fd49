"""SD3 / SD3.5 and FLUX.1 (dev, schnell, without T5) through the family contract, and each adapter's
velocity against its own diffusers pipeline."""

import pytest
import torch
from family_contract import (
    assert_exports_load_in_diffusers,
    assert_loads_and_samples,
    assert_one_iteration_trains_only_the_lora,
    assert_reloads_identically,
    assert_runs_through_the_queue,
    prompts_file,
    small_config,
    train_through_cli,
)
from tiny_pipelines import tiny_flux, tiny_sd3

from trainer_core.adapters import load_adapter, model_family
from trainer_core.adapters.flux import FluxAdapter
from trainer_core.adapters.sd3 import SD3Adapter

RESOLUTION = {"sd3": None, "flux-dev": 16, "flux-schnell": 16}


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformers")
    return {
        "sd3": tiny_sd3(root),
        "flux-dev": tiny_flux(root),
        "flux-schnell": tiny_flux(root, guidance_embeds=False),
        "flux-no-t5": tiny_flux(root, t5=False),
    }


def one_euler_step(adapter, prompts):
    """x at t = 0 after one Euler step from noise at t = 1: noise - v(noise, 1)."""
    return adapter.sample(adapter.encode_prompts(prompts), adapter.noise([0, 1]), steps=1, solver="euler")


@pytest.mark.parametrize("name", ["sd3", "flux-dev", "flux-schnell"])
def test_one_step_equals_the_diffusers_pipeline_from_the_same_noise(pipelines, name):
    """One step from t = 1 to 0 is noise - velocity in both, so it checks the adapter's inputs to the
    denoiser (latent packing, positions, timestep scale, guidance input, pooled text) against diffusers."""
    adapter = load_adapter(pipelines[name], "cpu", RESOLUTION[name])
    prompts = ["a red circle", "two blue squares"]
    ours = one_euler_step(adapter, prompts)
    noise = adapter.noise([0, 1])
    side = adapter.latent_shape[-1] * adapter.pipe.vae_scale_factor
    if isinstance(adapter, FluxAdapter):
        batch, channels, height, width = noise.shape
        packed = adapter.pipe._pack_latents(noise, batch, channels, height, width)
        latents = adapter.pipe(
            prompts, height=side, width=side, num_inference_steps=1, latents=packed, output_type="latent"
        ).images
        theirs = adapter.pipe._unpack_latents(latents, side, side, adapter.pipe.vae_scale_factor)
        assert adapter.embedded_guidance == (3.5 if name == "flux-dev" else None)
    else:
        theirs = adapter.pipe(
            prompts, height=side, width=side, num_inference_steps=1, guidance_scale=1.0, latents=noise,
            output_type="latent",
        ).images  # fmt: skip
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_flux_without_t5_loads_and_encodes_zero_t5_states(pipelines):
    adapter = load_adapter(pipelines["flux-no-t5"], "cpu", 16)
    assert adapter.pipe.text_encoder_2 is None
    embeddings = adapter.encode_prompts(["a red circle"])
    assert embeddings.states.abs().max() == 0 and embeddings.pooled.abs().max() > 0
    assert adapter.decode(one_euler_step(adapter, ["a", "b"])).shape == (2, 16, 16, 3)


def test_the_time_shift_follows_the_scheduler(pipelines):
    assert load_adapter(pipelines["sd3"], "cpu").time_shift == 3.0
    assert load_adapter(pipelines["flux-schnell"], "cpu", 16).time_shift == 1.0
    # dev shifts by exp(mu), mu linear in the image's tokens: 0.5 at 256 tokens, 1.15 at 4096
    assert load_adapter(pipelines["flux-dev"], "cpu", 16).time_shift == pytest.approx(
        torch.tensor(0.5 + 0.65 * (16 - 256) / 3840).exp().item()
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd3", "flux-dev", "flux-schnell"])
def test_transformer_families_keep_the_contract(pipelines, name, tmp_path):
    model, resolution = pipelines[name], RESOLUTION[name]
    assert model_family(model).name == name.split("-")[0]
    adapter = assert_loads_and_samples(model, image_side=16, resolution=resolution)
    assert isinstance(adapter, SD3Adapter if name == "sd3" else FluxAdapter)
    config = small_config(model, prompts_file(tmp_path), resolution)
    assert_one_iteration_trains_only_the_lora(config)
    checkpoint = train_through_cli(config, tmp_path)
    tuned = assert_reloads_identically(model, checkpoint, resolution)
    assert assert_exports_load_in_diffusers(model, checkpoint, tuned, tmp_path, resolution) == ["diffusers"]
    assert_runs_through_the_queue(config, tmp_path)
