"""Compare: 2-4 checkpoints (the base model included) on the same prompts and seeds, side by side."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from studio.api import BASE, ConfigError, JobError, Studio

POLL_S = 0.5
DEFAULT_PROMPTS = "a red circle\nthree blue squares\ntwo yellow triangles and a green circle"


def _crisp(image: np.ndarray, size: int = 160) -> np.ndarray:
    """Small images enlarged by pixel repetition, so the browser does not blur them."""
    factor = max(1, size // image.shape[0])
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def build(studio: Studio) -> tuple[Callable[[], Any], gr.Dropdown]:
    """Builds the tab; returns its checkpoint refresher, run when the tab is opened."""
    with gr.Row():
        checkpoints = gr.Dropdown(
            studio.checkpoint_choices(),
            value=[BASE],
            multiselect=True,
            max_choices=4,
            label="Checkpoints (2 to 4)",
            elem_id="compare-checkpoints",
            scale=4,
        )
        refresh = gr.Button("Refresh checkpoints", scale=1, elem_id="compare-refresh")
    with gr.Row():
        with gr.Column():
            prompt_set = gr.Dropdown(
                ["", *studio.prompt_sets()], value="", label="Prompt set (fills the prompts below)"
            )
            prompts = gr.Textbox(DEFAULT_PROMPTS, lines=4, label="Prompts, one per line", elem_id="compare-prompts")
        with gr.Column():
            seeds = gr.Number(2, precision=0, minimum=1, maximum=8, label="Seeds per prompt")
            heldout = gr.Checkbox(True, label="Held-out accuracy table (5 prompts per category, 1 seed)")
            generate = gr.Button("Generate", variant="primary", elem_id="compare-generate")
    status = gr.HTML(elem_id="compare-status")
    gallery = gr.Gallery(
        label="Side by side: one column per checkpoint", columns=2, height="auto", elem_id="compare-gallery"
    )
    scores = gr.Dataframe(label="Reward scores per image", interactive=False, elem_id="compare-scores")
    accuracy = gr.Dataframe(label="Held-out accuracy per checkpoint", interactive=False, elem_id="compare-accuracy")

    def on_refresh() -> Any:
        choices = studio.checkpoint_choices()
        latest = [value for _, value in choices[1:2]]
        return gr.update(choices=choices, value=[BASE, *latest])

    def on_generate(chosen: list[str], text: str, n_seeds: float, with_heldout: bool) -> Iterator[tuple[Any, ...]]:
        """A worker generates (the web process loads no model); its progress shows until it is done."""
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        try:
            job_id = studio.start_compare(chosen or [], lines, list(range(int(n_seeds or 1))), 5 if with_heldout else 0)
            while (progress := studio.inference_progress(job_id)) is not None:
                yield f"<span class='compare-progress'>⏳ {html.escape(progress)}</span>", gr.update(), None, None
                time.sleep(POLL_S)
            result = studio.compare_result(job_id)
        except (ConfigError, JobError, ValueError) as error:
            yield f"<span class='form-error'>⚠ {html.escape(str(error))}</span>", gr.update(), None, None
            return
        items, rows = [], []
        for i in range(len(lines) * len(result.seeds)):
            prompt, seed = lines[i // len(result.seeds)], result.seeds[i % len(result.seeds)]
            for label, images, image_scores in zip(result.labels, result.images, result.scores, strict=True):
                caption = f"{label} · {prompt} · seed {seed}"
                if image_scores[i]:
                    caption += f" · geneval {image_scores[i]['geneval']:.0f}, partial {image_scores[i]['partial']:.2f}"
                items.append((_crisp(images[i]), caption))
                rows.append(
                    {
                        "checkpoint": label,
                        "prompt": prompt,
                        "seed": seed,
                        **{k: round(v, 3) for k, v in image_scores[i].items()},
                    }
                )
        table = (
            pd.DataFrame(
                [
                    {"checkpoint": label, **{k: round(v, 3) for k, v in acc.items()}}
                    for label, acc in zip(result.labels, result.accuracy, strict=True)
                ]
            )
            if with_heldout
            else None
        )
        # One row per prompt: for each seed, the checkpoints next to each other.
        columns = len(result.labels) * len(result.seeds)
        yield "", gr.update(value=items, columns=columns), pd.DataFrame(rows), table

    refresh.click(on_refresh, None, checkpoints)
    prompt_set.change(lambda name: "\n".join(studio.prompt_set(name)) if name else gr.update(), prompt_set, prompts)
    generate.click(on_generate, [checkpoints, prompts, seeds, heldout], [status, gallery, scores, accuracy])
    return on_refresh, checkpoints
