"""The Gradio Blocks app: one tab per module, all talking to `studio.api.Studio`."""

from __future__ import annotations

import gradio as gr

from studio.api import Studio
from ui import compare_tab, export_tab, jobs_tab, label_tab, messages, train_tab

CSS = messages.CSS + label_tab.CSS + compare_tab.CSS
HEAD = label_tab.KEYBOARD_SCRIPT


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="V-GRPO Studio") as app:
        gr.Markdown(
            "# V-GRPO Studio\nAlign an image model with what you want: pick a model and rewards, Start, watch it learn."
        )
        with gr.Tabs():
            with gr.Tab("Train", id="train") as train:
                form = train_tab.build(studio)
            with gr.Tab("Jobs", id="jobs") as jobs:
                jobs_opened, jobs_charts = jobs_tab.build(studio, form)
            with gr.Tab("Compare", id="compare") as compare:
                compare_refresh, compare_checkpoints = compare_tab.build(studio)
            with gr.Tab("Export", id="export") as export:
                export_refresh, export_checkpoint = export_tab.build(studio)
            with gr.Tab("Label", id="label") as label:
                label_refresh, label_outputs = label_tab.build(studio)
        # Opening a tab lists the checkpoints written since the page loaded.
        jobs.select(jobs_opened, None, jobs_charts)
        compare.select(compare_refresh, None, compare_checkpoints)
        export.select(export_refresh, None, export_checkpoint)
        label.select(label_refresh, None, label_outputs)
        # preference rewards fitted in the Label tab appear in the mix when Train is opened again
        train.select(form.refresh_preferences, form.preference, form.preference)
        train.select(form.refresh_models, form.model, form.model)
    return app
