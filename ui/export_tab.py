"""Export: a checkpoint's LoRA as one .safetensors file for ComfyUI / AUTOMATIC1111 (kohya) or diffusers."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import gradio as gr

from studio.api import JobError, Studio
from ui.messages import error_html

WHICH_FORMAT = """\
| Base model | ComfyUI | AUTOMATIC1111 | diffusers `load_lora_weights` |
|---|---|---|---|
| SD1.5 / SD2, SDXL | kohya | kohya | kohya or diffusers |
| SD3 / SD3.5 | kohya or diffusers | kohya | diffusers |
| FLUX.1 | kohya or diffusers | no FLUX support | kohya or diffusers |

Either file applies the update as it was trained at strength 1.0: the LoRA's alpha / rank is folded into its
weights. kohya names are the ones each tool keys its LoRAs by (SD3 and FLUX: the original checkpoints' fused
`qkv` weights).
"""


def build(studio: Studio) -> tuple[Callable[[], Any], gr.Dropdown]:
    """Builds the tab; returns its checkpoint refresher, run when the tab is opened."""
    with gr.Row():
        checkpoint = gr.Dropdown(
            studio.checkpoint_choices()[1:], label="Checkpoint", elem_id="export-checkpoint", scale=4
        )
        refresh = gr.Button("Refresh checkpoints", scale=1, elem_id="export-refresh")
    with gr.Row():
        fmt = gr.Radio(
            studio.export_formats(),
            value="kohya",
            label="Format",
            info="kohya: lora_unet_* lora_down / lora_up (ComfyUI, AUTOMATIC1111); diffusers: peft keys",
        )
        name = gr.Textbox(label="File name (optional)", placeholder="letters, digits, . _ -", elem_id="export-name")
    gr.Markdown(WHICH_FORMAT, elem_id="export-which-format")
    export = gr.Button("Export", variant="primary", elem_id="export-button")
    status = gr.HTML(elem_id="export-status")
    download = gr.DownloadButton("Download", visible=False, elem_id="export-download")

    def on_refresh() -> Any:
        choices = studio.checkpoint_choices()[1:]
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    def on_export(chosen: str | None, fmt_value: str, file_name: str) -> tuple[str, Any]:
        try:
            path = studio.export(chosen or "", fmt_value, file_name or "")
        except (JobError, ValueError) as error:
            return error_html(error), gr.update(visible=False)
        message = f"✓ Wrote {path.name}: load it at strength 1.0"
        return f"<span id='export-ok'>{html.escape(message)}</span>", gr.update(value=str(path), visible=True)

    refresh.click(on_refresh, None, checkpoint)
    export.click(on_export, [checkpoint, fmt, name], [status, download])
    return on_refresh, checkpoint
