"""SD1.5 / SD2 (epsilon and v prediction) and SDXL through the family contract, and the exactness of the
map that presents a variance-preserving UNet to V-GRPO as a flow."""

import pytest
import torch
from diffusers import DDPMScheduler
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
from tiny_pipelines import tiny_sd15, tiny_sdxl

from studio.compare import family_sampling
from trainer_core.adapters import load_adapter, model_family
from trainer_core.adapters.sdxl import StableDiffusionXLAdapter
from trainer_core.adapters.stable_diffusion import StableDiffusionAdapter
from trainer_core.shapes.evaluation import SamplingConfig


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    return {
        "epsilon": tiny_sd15(root, "epsilon"),
        "v_prediction": tiny_sd15(root, "v_prediction"),
        "xl": tiny_sdxl(root),
    }


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_the_flow_view_predicts_exactly_the_x0_of_diffusers_own_scheduler(pipelines, prediction):
    adapter = load_adapter(pipelines[prediction], "cpu")
    assert isinstance(adapter, StableDiffusionAdapter) and adapter.prediction_type == prediction
    embeddings = adapter.encode_prompts(["a red circle", "a cat"])
    scheduler = DDPMScheduler.from_config(adapter.pipe.scheduler.config)
    torch.manual_seed(0)
    for timestep in (0, 1, 250, 999):
        alpha, sigma = scheduler.alphas_cumprod[timestep].sqrt(), (1 - scheduler.alphas_cumprod[timestep]).sqrt()
        t = (sigma / (alpha + sigma)).repeat(2)  # the flow time with this timestep's signal-to-noise ratio
        z_flow = torch.randn(2, *adapter.latent_shape)
        z_model = z_flow * alpha / (1 - t[0])  # = alpha x + sigma eps for z_flow = (1 - t) x + t eps
        with torch.no_grad():
            x0 = adapter.predict_x0(z_flow, t, embeddings)
            raw = adapter.denoiser(
                z_model, torch.tensor([timestep] * 2), encoder_hidden_states=embeddings.states
            ).sample
        expected = scheduler.step(raw, timestep, z_model).pred_original_sample
        torch.testing.assert_close(x0, expected, atol=2e-5, rtol=1e-4)
    assert adapter.levels.timestep(torch.tensor([0.0, 1.0])).tolist() == [0.0, 999.0]  # clamped to its range


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["epsilon", "v_prediction", "xl"])
def test_stable_diffusion_families_keep_the_contract(pipelines, variant, tmp_path):
    model = pipelines[variant]
    family = model_family(model)
    assert family.name == ("sdxl" if variant == "xl" else "sd15")
    adapter = assert_loads_and_samples(model, image_side=16)
    assert isinstance(adapter, StableDiffusionXLAdapter) == (variant == "xl")
    config = small_config(model, prompts_file(tmp_path))
    assert_one_iteration_trains_only_the_lora(config)
    checkpoint = train_through_cli(config, tmp_path)
    tuned = assert_reloads_identically(model, checkpoint)
    assert assert_exports_load_in_diffusers(model, checkpoint, tuned, tmp_path) == ["diffusers", "kohya"]
    assert_runs_through_the_queue(config, tmp_path)


def test_compare_and_label_draw_a_real_model_with_its_familys_sampler(pipelines):
    sampling = family_sampling(pipelines["xl"])
    assert (sampling.steps, sampling.guidance_scale) == (20, 5.0)
    assert family_sampling("shapes-base") == SamplingConfig()
