"""`clip:DIR` features from a tiny random CLIP saved in the layout of a real one (model, image processor,
tokenizer), so a real CLIP or PickScore directory loads through the same path."""

from datetime import datetime

import numpy as np
import pytest
import torch
from tiny_pipelines import tiny_clip_model

from storage.data_dir import DataDir
from storage.reward_store import RewardStore
from studio.preference import LabelSet, fit_preference_reward
from trainer_core.preference.artifact import PreferenceReward
from trainer_core.preference.features import build_features


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return tiny_clip_model(tmp_path_factory.mktemp("clip") / "tiny-clip")


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)


def test_clip_features_are_the_embeddings_and_their_agreement(tiny_clip):
    from transformers import CLIPModel

    features = build_features(f"clip:{tiny_clip}")
    prompts = ["a red circle", "two blue squares", "a green triangle left of a red square"]
    batch = images(3, 0)
    values = features(batch, prompts)
    assert values.shape == (3, 2 * 8 + 1)

    # the reference: CLIP's own normalised projections, their elementwise product and their cosine
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    pixels = features.processor(images=list(batch), return_tensors="pt")["pixel_values"]
    tokens = features.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    image = getattr(image, "pooler_output", image)
    text = getattr(text, "pooler_output", text)
    image, text = (torch.nn.functional.normalize(x, dim=-1).numpy() for x in (image, text))
    np.testing.assert_allclose(values[:, :8], image, atol=1e-5)
    np.testing.assert_allclose(values[:, 8:16], image * text, atol=1e-5)
    np.testing.assert_allclose(values[:, 16], (image * text).sum(-1), atol=1e-5)
    # the prompt matters: the same image with another prompt has other agreement features
    other = features(batch[:1], ["two green triangles"])
    assert np.allclose(other[0, :8], values[0, :8]) and not np.allclose(other[0, 8:], values[0, 8:])


@pytest.mark.slow
def test_a_reward_fitted_on_clip_features_loads_back_from_its_card(tiny_clip, tmp_path):
    a, b = images(40, 2), images(40, 3)
    # a taste the features can see: brighter images win
    choices = ["a" if x.mean() > y.mean() else "b" for x, y in zip(a, b, strict=True)]
    labels = LabelSet(
        ["a red circle"] * 40,
        list(a),
        list(b),
        choices,
        ["me"] * 40,
        [datetime(2026, 1, 1 + i % 28) for i in range(40)],
    )
    store = RewardStore(DataDir(tmp_path).create())
    card = fit_preference_reward(labels, f"clip:{tiny_clip}", "bright", store)
    assert card.features.startswith("clip:") and card.n_labels == 40
    assert (card.labels_first[:10], card.labels_last[:10]) == ("2026-01-01", "2026-01-28")
    reward = PreferenceReward.load(store.directory("bright", 1))
    scores = reward.score(a, ["a red circle"] * 40)
    assert scores.shape == (40,) and np.isfinite(scores).all()
