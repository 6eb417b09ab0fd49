"""Label: pick what to compare, then choose the better image of each pair, by button or key; every
choice is stored at once. Fit a preference reward on the labels, and use it in Train's reward mix."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from studio.api import BASE, ConfigError, JobError, LabelSource, Studio
from ui.images import enlarged
from ui.messages import error_html

SHOWN_PX = 384  # the side of each image on screen, upscaled without smoothing
#: how each kind of pair source and order reads on the page (the kinds themselves are the studio's)
SOURCE_NAMES = {
    "seeds": "Two seeds of one model",
    "checkpoints": "One seed of two models",
    "job-samples": "A job's sample grids",
}
ORDER_NAMES = {"random": "Random", "uncertain": "Uncertain first (needs a fitted reward)"}
#: button elem_id -> its key; the script below clicks the button when the key is pressed
SHORTCUTS = {
    "label-left-better": "1",
    "label-right-better": "2",
    "label-tie": "3",
    "label-skip": " ",
    "label-undo": "Backspace",
}
CSS = """
#label-prompt { font-size: 1.5em; font-weight: 600; text-align: center; }
#label-left img, #label-right img { image-rendering: pixelated; }
#label-counter { text-align: center; }
"""
# Keys act only while no text field has the focus, so typing a prompt never labels anything.
KEYBOARD_SCRIPT = (
    "<script>\n"
    "document.addEventListener('keydown', (event) => {\n"
    "  const target = event.target;\n"
    "  if (event.ctrlKey || event.metaKey || event.altKey) return;\n"
    "  if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;\n"
    "  const tab = document.getElementById('label-pair');\n"
    "  if (!tab || tab.offsetParent === null) return;\n"
    f"  const keys = {{{', '.join(f'{key!r}: {elem!r}' for elem, key in SHORTCUTS.items())}}};\n"
    "  const id = keys[event.key];\n"
    "  if (!id) return;\n"
    "  const button = document.getElementById(id);\n"
    "  if (!button || button.disabled) return;\n"
    "  event.preventDefault();\n"
    "  button.click();\n"
    "});\n"
    "</script>"
)


def _error(message: str) -> str:
    return error_html(message, "label-error")


def build(studio: Studio) -> tuple[Any, list[gr.components.Component]]:
    # every kind the studio offers, named here (a new kind without a name shows as itself)
    source_labels = {SOURCE_NAMES.get(kind, kind): kind for kind in studio.label_source_kinds()}
    order_labels = {ORDER_NAMES.get(kind, kind): kind for kind in studio.label_orders()}
    """The tab; returns (refresh, outputs) for when the tab is opened (new checkpoints and rewards)."""
    session = gr.State(None, delete_callback=lambda session_id: session_id and studio.close_labelling(session_id))
    with gr.Accordion("What to label", open=True):
        with gr.Row():
            source = gr.Radio(
                list(source_labels), value="Two seeds of one model", label="Pairs", elem_id="label-source"
            )
            order = gr.Radio(list(order_labels), value="Random", label="Order", elem_id="label-order")
        with gr.Row():
            checkpoint_a = gr.Dropdown(studio.checkpoint_choices(), value=BASE, label="Model", elem_id="label-model-a")
            checkpoint_b = gr.Dropdown(
                studio.checkpoint_choices(),
                value=BASE,
                label="Against (one seed of two models)",
                elem_id="label-model-b",
            )
            guide = gr.Dropdown(
                studio.preference_rewards(), label="Reward that predicts (uncertain first)", elem_id="label-guide"
            )
        with gr.Row():
            prompt_set = gr.Dropdown(
                studio.label_prompt_sets(), value=studio.label_prompt_sets()[0], label="Prompt set", scale=2
            )
            job = gr.Number(
                None, label="Job id (0: none): its prompts, or its sample grids", precision=0, elem_id="label-job"
            )
        typed = gr.Textbox(
            label="Or type prompts, one per line (used instead of the set)", lines=2, elem_id="label-prompts"
        )
        start = gr.Button("Start labelling", variant="primary", elem_id="label-start")
    status = gr.HTML(elem_id="label-status")
    with gr.Column(elem_id="label-pair"):
        prompt = gr.Markdown("Press **Start labelling** to see the first pair.", elem_id="label-prompt")
        with gr.Row():
            left = gr.Image(label="Left (1)", format="png", interactive=False, elem_id="label-left", height=SHOWN_PX)
            right = gr.Image(label="Right (2)", format="png", interactive=False, elem_id="label-right", height=SHOWN_PX)
        with gr.Row():
            left_better = gr.Button("◀ Left better  [1]", elem_id="label-left-better", variant="primary")
            tie = gr.Button("Tie  [3]", elem_id="label-tie")
            right_better = gr.Button("Right better ▶  [2]", elem_id="label-right-better", variant="primary")
        with gr.Row():
            skip = gr.Button("Skip  [space]", elem_id="label-skip", size="sm")
            undo = gr.Button("Undo  [backspace]", elem_id="label-undo", size="sm")
        counter = gr.Markdown(f"Labels: {studio.label_counts().total} in all", elem_id="label-counter")
        gr.Markdown(
            "Keys: **1** left better · **2** right better · **3** tie · **space** skip · **backspace** undo. "
            "Every choice is saved the moment you make it."
        )
    with gr.Accordion("Fit a preference reward on every label", open=False):
        with gr.Row():
            reward_name = gr.Textbox(
                label="Name (pref:NAME in a reward mix)", value="my-taste", elem_id="label-fit-name"
            )
            features = gr.Dropdown(
                ["shapes-stats", "clip:"],
                value="shapes-stats",
                label="Image features",
                info="shapes-stats for the shapes world; clip:DIR for a local CLIP model directory",
                allow_custom_value=True,
                elem_id="label-fit-features",
            )
        fit = gr.Button("Fit reward", elem_id="label-fit")
        card = gr.HTML(elem_id="label-fit-card")
    with gr.Accordion("Import / export labels (a folder with labels.jsonl and its images)", open=False):
        with gr.Row():
            import_dir = gr.Textbox(
                label="Import from folder",
                info="a folder in labels/folders/ of the data directory",
                elem_id="label-import-dir",
            )
            import_button = gr.Button("Import")
        with gr.Row():
            export_dir = gr.Textbox(
                label="Export to a new folder",
                info="created in labels/folders/ of the data directory",
                elem_id="label-export-dir",
            )
            export_button = gr.Button("Export")
        transfer = gr.HTML(elem_id="label-transfer")

    def show(session_id: str | None, message: str = "") -> list[Any]:
        """The pair on screen and the counter, or a message when there is none."""
        if not session_id:
            return [gr.update(), None, None, f"Labels: {studio.label_counts().total} in all", message]
        counts = studio.label_counts(session_id)
        counter = f"This session: **{counts.session}** · all labels: **{counts.total}**"
        try:
            pair = studio.label_pair(session_id)
        except Exception as error:  # a failed generation is shown, the labels so far are kept
            return [gr.update(), None, None, counter, _error(f"could not make the next pair: {error}")]
        left_image = gr.update(value=enlarged(pair.a.image, SHOWN_PX), label=f"Left (1) · {pair.a.origin}")
        right_image = gr.update(value=enlarged(pair.b.image, SHOWN_PX), label=f"Right (2) · {pair.b.origin}")
        return [html.escape(pair.prompt), left_image, right_image, counter, message]

    def on_start(
        session_id: str | None,
        source_label: str,
        order_label: str,
        model_a: str,
        model_b: str,
        guide_name: str | None,
        set_name: str,
        job_id: float | None,
        typed_prompts: str,
        request: gr.Request,
    ) -> list[Any]:
        kind = source_labels[source_label]
        try:
            job_number = int(job_id) if job_id else None
            prompts = () if kind == "job-samples" else tuple(studio.label_prompts(set_name, typed_prompts, job_number))
            label_source = LabelSource(
                kind,
                str(model_a or BASE),
                str(model_b or BASE),
                prompts,
                job_number,
                None,
                order_labels[order_label],
                guide_name or None,
            )
            new_session = studio.start_labelling(label_source, getattr(request, "username", None) or "local")
        except (ConfigError, JobError, ValueError) as error:
            return [session_id, *show(session_id, _error(str(error)))]
        if session_id:
            studio.close_labelling(session_id)
        return [new_session, *show(new_session)]

    def act(action: str) -> Any:
        def handler(session_id: str | None) -> list[Any]:
            if not session_id:
                return show(None, _error("press Start labelling first"))
            if action == "undo":
                message = "" if studio.undo_label(session_id) else "nothing to undo in this session"
            elif action == "skip":
                studio.skip_pair(session_id)
                message = ""
            else:
                studio.label(session_id, action)
                message = ""
            return show(session_id, message)

        return handler

    def on_fit(name: str, feature_spec: str) -> tuple[str, Any]:
        try:
            fitted = studio.fit_preference(name.strip(), feature_spec.strip())
        except (ConfigError, ValueError) as error:
            return _error(str(error)), gr.update()
        text = (
            f'<div id="label-fit-ok">✓ {html.escape(fitted.summary())}; fitted in {fitted.fit_seconds:.1f} s. '
            f"Pick <b>pref:{html.escape(fitted.name)}</b> as the preference reward in Train.</div>"
        )
        return text, gr.update(choices=studio.preference_rewards(), value=f"pref:{fitted.name}")

    def on_import(folder: str) -> str:
        try:
            result = studio.import_labels(folder.strip())
        except ValueError as error:
            return _error(str(error))
        return f"✓ imported {result.added} labels ({result.already_stored} were already stored)"

    def on_export(folder: str) -> str:
        try:
            return f"✓ exported {studio.export_labels(folder.strip())} labels to {html.escape(folder.strip())}"
        except ValueError as error:
            return _error(str(error))

    pair_outputs = [prompt, left, right, counter, status]
    start.click(
        on_start,
        [session, source, order, checkpoint_a, checkpoint_b, guide, prompt_set, job, typed],
        [session, *pair_outputs],
    )
    for button, action in ((left_better, "a"), (right_better, "b"), (tie, "tie"), (skip, "skip"), (undo, "undo")):
        button.click(act(action), session, pair_outputs)
    fit.click(on_fit, [reward_name, features], [card, guide])
    import_button.click(on_import, import_dir, transfer)
    export_button.click(on_export, export_dir, transfer)

    def refresh() -> list[Any]:
        choices = studio.checkpoint_choices()
        return [gr.update(choices=choices), gr.update(choices=choices), gr.update(choices=studio.preference_rewards())]

    return refresh, [checkpoint_a, checkpoint_b, guide]
