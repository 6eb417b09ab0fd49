"""Jobs: the queue as a live table; the selected job's sample grids, curves, log and controls."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from studio.api import JobError, JobView, Studio
from ui.messages import error_html

POLL_S = 2.0
#: the weight of the past in the reward curve's moving average
SMOOTHING = 0.8
PLOT_HEIGHT = 300
TRAINING_CURVES = ("loss", "ratio_mean", "clip_fraction", "kl", "surrogate_cv_within_group")
#: an iteration's time split; `score_s_NAME` (each reward's scoring) is added for the rewards a job has
TIME_CURVES = ("rollout_s", "reward_s", "old_pass_s", "train_s")
COLUMNS = ["id", "status", "progress", "eta", "reward now", "algorithm", "created"]


def _row(view: JobView) -> list[Any]:
    return [
        view.id,
        view.status,
        f"{view.iteration}/{view.total_iterations}",
        "" if view.eta_s is None else f"{view.eta_s:.0f} s",
        "" if view.reward_mean is None else round(view.reward_mean, 4),
        view.algorithm,
        view.created_at.strftime("%Y-%m-%d %H:%M:%S"),
    ]


def smoothed(points: list[tuple[int, float]], weight: float = SMOOTHING) -> list[tuple[int, float]]:
    """An exponential moving average through the points, debiased at the start (as TensorBoard draws it),
    so a trend shows through the noise of a few rollouts per iteration."""
    out, average = [], 0.0
    for n, (iteration, value) in enumerate(points, start=1):
        average = weight * average + (1 - weight) * value
        out.append((iteration, average / (1 - weight**n)))
    return out


def _curves(metrics: dict[str, list[tuple[int, float]]], names: list[str], smooth: str = "") -> pd.DataFrame | None:
    """Long format for a LinePlot: one row per (metric, iteration), numeric axes; `smooth` adds that
    metric's moving average as a series of its own. None while there is nothing to draw: a chart that
    first receives an empty table fixes its colours to none, and every line drawn later is invisible."""
    rows = [(int(i), float(v), name) for name in names for i, v in metrics.get(name, [])]
    if smooth in metrics:
        rows += [(int(i), float(v), f"{smooth} (smoothed)") for i, v in smoothed(metrics[smooth])]
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=["iteration", "score", "series"])
    return frame.astype({"iteration": "int64", "score": "float64", "series": "string"})


def build(studio: Studio, train_form: Any) -> tuple[Callable[[], tuple[Any, ...]], list[Any]]:
    """Builds the tab; returns what to run when it is opened (the charts are drawn again then: a chart
    drawn while its tab was hidden shows empty axes)."""
    table = gr.Dataframe(
        headers=COLUMNS, value=[], interactive=False, label="Queue (click a row to show that job)", elem_id="jobs-table"
    )
    with gr.Row():
        job_id = gr.Number(label="Job (0 = newest)", value=0, precision=0, elem_id="jobs-selected", scale=1)
        summary = gr.HTML(elem_id="jobs-summary")
    with gr.Row():
        actions = {
            name: gr.Button(name.capitalize(), elem_id=f"jobs-{name}", size="sm")
            for name in ("cancel", "pause", "resume", "retry")
        }
        duplicate = gr.Button("Duplicate into Train", elem_id="jobs-duplicate", size="sm")
    with gr.Row():
        with gr.Column():
            grid = gr.Image(label="Sample grid", type="filepath", interactive=False, elem_id="jobs-grid", height=420)
            grid_step = gr.Slider(0, 1, step=1, value=0, label="Sample grid", elem_id="jobs-grid-slider")
            follow = gr.Checkbox(True, label="Follow the newest grid")
        with gr.Column():
            log = gr.Textbox(label="Log tail", lines=18, max_lines=18, interactive=False, elem_id="jobs-log")
    # full width, so that every series' name fits in the legend's row under the axes; the title inside
    # the chart (a component label above it would push the legend out of the chart's fixed height)
    plot = {"x": "iteration", "y": "score", "color": "series", "height": PLOT_HEIGHT, "show_label": False}
    rewards_plot = gr.LinePlot(title="Rewards", elem_id="jobs-rewards", **plot)
    training_plot = gr.LinePlot(title="Training", elem_id="jobs-training", **plot)
    time_plot = gr.LinePlot(title="Seconds per iteration", elem_id="jobs-time", **plot)
    timer = gr.Timer(POLL_S)

    def selected(value: float | None, views: list[JobView]) -> int | None:
        if value:
            return int(value)
        return views[0].id if views else None

    def refresh(value: float | None, step: float | None, follow_latest: bool, shown: str) -> tuple[Any, ...]:
        """Everything the tab shows; the grid and the curves only when they changed (a redraw every
        poll would make the charts flicker)."""
        views = studio.list_jobs()
        rows = [_row(v) for v in views]
        chosen = selected(value, views)
        if chosen is None:
            empty = "<i>No jobs yet: start one in Train.</i>"
            return rows, empty, None, gr.update(maximum=1, value=0), None, None, None, "", ""
        try:
            detail = studio.job_detail(chosen)
        except JobError as error:
            return rows, html.escape(str(error)), None, gr.update(), None, None, None, "", ""
        view = detail.view
        error = f"<br><small>{html.escape(view.error.strip().splitlines()[-1])}</small>" if view.error else ""
        progress = f"iteration {view.iteration}/{view.total_iterations}"
        info = f"<b>Job {view.id}</b> · <span id='jobs-status'>{view.status}</span> · {progress}{error}"
        grids = detail.grids
        last = max(len(grids) - 1, 0)
        index = last if follow_latest or step is None else min(int(step), last)
        image = grids[index][1] if grids else None
        signature = f"{chosen}:{view.iteration}:{len(grids)}:{index}"
        if signature == shown:
            unchanged = gr.update()
            return rows, info, unchanged, unchanged, unchanged, unchanged, unchanged, detail.log_tail, shown
        metrics = studio.job_metrics(chosen)
        return (
            rows,
            info,
            image,
            gr.update(
                maximum=max(last, 1),
                value=index,
                label=f"Sample grid: iteration {grids[index][0]}" if grids else "Sample grid",
            ),
            _curves(metrics, studio.reward_series(chosen), smooth="reward_mean"),
            _curves(metrics, list(TRAINING_CURVES)),
            _curves(metrics, [*TIME_CURVES, *sorted(k for k in metrics if k.startswith("score_s_"))]),
            detail.log_tail,
            signature,
        )

    shown = gr.State("")  # what the grid and curves show now: job, iteration, grids, grid index
    outputs = [table, summary, grid, grid_step, rewards_plot, training_plot, time_plot, log, shown]
    timer.tick(refresh, [job_id, grid_step, follow, shown], outputs, show_progress="hidden")
    job_id.change(lambda v, s: refresh(v, s, True, ""), [job_id, grid_step], outputs)

    def show_grid(value: float | None, step: float) -> Any:
        chosen = selected(value, studio.list_jobs(limit=1))
        grids = studio.sample_grids(chosen) if chosen else []
        return grids[int(step)][1] if grids and int(step) < len(grids) else None

    grid_step.release(show_grid, [job_id, grid_step], grid).then(lambda: False, None, follow)

    def pick_row(event: gr.SelectData) -> Any:
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        views = studio.list_jobs()
        return views[row].id if 0 <= row < len(views) else gr.update()

    table.select(pick_row, None, job_id)

    def control(action: str) -> Callable[[float | None], str]:
        def run(value: float | None) -> str:
            chosen = selected(value, studio.list_jobs(limit=1))
            if chosen is None:
                return "<i>No job selected.</i>"
            try:
                status = studio.control(chosen, action)
            except (JobError, ValueError) as error:
                return error_html(error)
            return f"<b>Job {chosen}</b> · {status}"

        return run

    for name, button in actions.items():
        button.click(control(name), job_id, summary)

    def on_duplicate(value: float | None) -> list[Any]:
        chosen = selected(value, studio.list_jobs(limit=1))
        if chosen is None:
            return train_form.apply("no job to duplicate")
        return train_form.apply(studio.job_config(chosen))

    duplicate.click(on_duplicate, job_id, [*train_form.components(), train_form.status])

    def on_open() -> tuple[Any, ...]:
        """Clear the charts and what they show: the next poll draws them again, now visible."""
        return None, None, None, ""

    return on_open, [rewards_plot, training_plot, time_plot, shown]
