"""What trades time for memory at real size changes nothing else: gradient checkpointing gives the same
gradients, the prompt cache the same embeddings (each prompt encoded once), chunked decoding the same
images; "auto" means the family's defaults."""

import dataclasses

import pytest
import torch
from tiny_pipelines import tiny_sd3

from trainer_core.adapters import MemoryOptions, families, load_adapter, load_model, memory_options
from trainer_core.config import ConfigError, ModelConfig
from trainer_core.lora import LoraSpec


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return tiny_sd3(tmp_path_factory.mktemp("memory"))


def lora_gradients(adapter) -> dict[str, torch.Tensor]:
    adapter.add_lora(LoraSpec(rank=2, alpha=2, target_modules=("to_q", "to_k", "to_v")))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in adapter.lora_parameters():
            param.normal_(0, 0.1)
    embeddings = adapter.encode_prompts(["a red circle", "a cat"])
    adapter.denoiser.train()
    with adapter.lora_merged():
        velocity = adapter.velocity(adapter.noise([0, 1]), torch.tensor([0.3, 0.7]), embeddings)
    velocity.square().mean().backward()
    return {n: p.grad.clone() for n, p in adapter.denoiser.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(sd3):
    plain = load_adapter(sd3, "cpu")
    checkpointed = load_adapter(sd3, "cpu")
    checkpointed.configure_memory(MemoryOptions(gradient_checkpointing=True))
    assert checkpointed.denoiser.gradient_checkpointing
    expected, got = lora_gradients(plain), lora_gradients(checkpointed)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5)


def test_the_prompt_cache_encodes_each_prompt_once_and_forgets_the_oldest(sd3):
    adapter = load_adapter(sd3, "cpu")
    expected = adapter.encode_prompts(["a cat", "a dog", "a cat"])
    adapter.configure_memory(MemoryOptions(prompt_cache=2))
    encoded: list[list[str]] = []
    original = adapter._encode_prompts
    adapter._encode_prompts = lambda prompts: encoded.append(prompts) or original(prompts)
    got = adapter.encode_prompts(["a cat", "a dog", "a cat"])
    torch.testing.assert_close(got.states, expected.states)
    torch.testing.assert_close(got.pooled, expected.pooled)
    adapter.encode_prompts(["a dog", "a cat"])
    assert encoded == [["a cat", "a dog"]]
    adapter.encode_prompts(["a fox"])  # the cache holds two: "a dog", used least recently, goes
    adapter.encode_prompts(["a cat", "a dog"])
    assert encoded == [["a cat", "a dog"], ["a fox"], ["a dog"]]


def test_chunked_decoding_gives_the_same_images(sd3):
    adapter = load_adapter(sd3, "cpu")
    latents = torch.randn(5, *adapter.latent_shape)
    whole = adapter.decode(latents)
    adapter.configure_memory(MemoryOptions(decode_batch=2))
    assert (adapter.decode(latents) == whole).all()


def test_auto_means_the_familys_defaults(sd3):
    sd3_family, shapes = families()["sd3"], families()["shapes"]
    auto = memory_options(ModelConfig(name=sd3), sd3_family)
    assert auto == dataclasses.replace(sd3_family.memory, prompt_cache=256)
    assert auto.gradient_checkpointing and auto.offload and auto.decode_batch == 4
    chosen = memory_options(
        ModelConfig(name=sd3, gradient_checkpointing="off", offload="off", decode_batch=3), sd3_family
    )
    assert (chosen.gradient_checkpointing, chosen.offload, chosen.decode_batch) == (False, False, 3)
    assert not memory_options(ModelConfig(), shapes).gradient_checkpointing
    adapter = load_model(ModelConfig(name=sd3, device="cpu"))
    assert adapter.memory == auto and adapter.denoiser.gradient_checkpointing
    with pytest.raises(ConfigError, match=r"model\.offload: must be auto, on or off, got 'yes'"):
        ModelConfig(offload="yes")
    with pytest.raises(ConfigError, match=r"model\.decode_batch: must be a whole number >= 0, got -1"):
        ModelConfig(decode_batch=-1)
