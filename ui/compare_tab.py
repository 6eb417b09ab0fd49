"""Compare: 2-4 checkpoints (the base model included) on the same prompts and seeds, side by side."""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from studio.api import BASE, CompareResult, ConfigError, JobError, Studio
from ui.images import enlarged
from ui.messages import error_html

POLL_S = 0.5
DEFAULT_PROMPTS = "a red circle\nthree blue squares\ntwo yellow triangles and a green circle"


def _png(image: np.ndarray, size: int = 160) -> str:
    """The image as an inline PNG, small images enlarged by pixel repetition so nothing blurs them."""
    buffer = io.BytesIO()
    Image.fromarray(enlarged(image, size)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _score_text(scores: dict[str, float]) -> str:
    """The rewards under an image: GenEval's verdict and partial credit on the shapes world."""
    if not scores:
        return ""
    return f"geneval {scores['geneval']:.0f} · partial {scores['partial']:.2f}"


def grid_html(result: CompareResult, prompts: list[str]) -> str:
    """One row per prompt and seed, one column per checkpoint with its name on top, the reward under each
    image."""
    seeds = result.seeds
    head = "".join(f"<th>{html.escape(label)}</th>" for label in result.labels)
    body = []
    for i in range(len(prompts) * len(seeds)):
        prompt, seed = prompts[i // len(seeds)], seeds[i % len(seeds)]
        cells = "".join(
            f"<td><img src='{_png(images[i])}' alt='{html.escape(label)}'><div>{_score_text(scores[i])}</div></td>"
            for label, images, scores in zip(result.labels, result.images, result.scores, strict=True)
        )
        body.append(f"<tr><th class='compare-row'>{html.escape(prompt)}<br><small>seed {seed}</small></th>{cells}</tr>")
    return f"<table class='compare-grid'><tr><th></th>{head}</tr>{''.join(body)}</table>"


CSS = """
.compare-grid { border-collapse: collapse; }
.compare-grid th, .compare-grid td { padding: 4px 8px; text-align: center; vertical-align: top; }
.compare-grid .compare-row { text-align: right; font-weight: normal; max-width: 14em; }
.compare-grid img { image-rendering: pixelated; max-width: 256px; }
.compare-grid td div { font-size: 0.85em; color: #555; }
"""


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
    grid = gr.HTML(elem_id="compare-gallery")
    scores = gr.Dataframe(label="Reward scores per image", interactive=False, visible=False, elem_id="compare-scores")
    accuracy = gr.Dataframe(
        label="Held-out accuracy per checkpoint", interactive=False, visible=False, elem_id="compare-accuracy"
    )

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
                yield f"<span class='compare-progress'>⏳ {html.escape(progress)}</span>", *[gr.update()] * 3
                time.sleep(POLL_S)
            result = studio.compare_result(job_id)
        except (ConfigError, JobError, ValueError) as error:
            yield error_html(error), gr.update(), gr.update(), gr.update()
            return
        rows = [
            {"checkpoint": label, "prompt": lines[i // len(result.seeds)], "seed": result.seeds[i % len(result.seeds)]}
            | {k: round(v, 3) for k, v in image_scores[i].items()}
            for i in range(len(lines) * len(result.seeds))
            for label, image_scores in zip(result.labels, result.scores, strict=True)
        ]
        table = pd.DataFrame(
            [
                {"checkpoint": label, **{k: round(v, 3) for k, v in acc.items()}}
                for label, acc in zip(result.labels, result.accuracy, strict=True)
            ]
        )
        yield (
            "",
            grid_html(result, lines),
            gr.update(value=pd.DataFrame(rows), visible=True),
            gr.update(value=table, visible=with_heldout),
        )

    refresh.click(on_refresh, None, checkpoints)
    prompt_set.change(lambda name: "\n".join(studio.prompt_set(name)) if name else gr.update(), prompt_set, prompts)
    generate.click(on_generate, [checkpoints, prompts, seeds, heldout], [status, grid, scores, accuracy])
    return on_refresh, checkpoints
