"""Image grids for samples: rows of images, optionally labelled on the left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def make_grid(images: np.ndarray, rows: int, scale: int = 1, pad: int = 2) -> Image.Image:
    """uint8 [N, H, W, 3] (N divisible by rows) to one image, row-major, upscaled by `scale` (nearest)."""
    n, h, w, _ = images.shape
    if rows < 1 or n % rows:
        raise ValueError(f"rows: {n} images do not fill {rows} rows")
    cols = n // rows
    hs, ws = h * scale, w * scale
    grid = Image.new("RGB", (cols * (ws + pad) + pad, rows * (hs + pad) + pad), (255, 255, 255))
    for i, image in enumerate(images):
        tile = Image.fromarray(image).resize((ws, hs), Image.NEAREST)
        grid.paste(tile, (pad + (i % cols) * (ws + pad), pad + (i // cols) * (hs + pad)))
    return grid


def save_grid(
    images: np.ndarray, rows: int, out: Path, scale: int = 4, row_labels: list[str] | None = None
) -> Image.Image:
    """Save a grid (with a text column of row labels when given) as PNG; returns it."""
    grid = make_grid(images, rows, scale)
    if row_labels:
        if len(row_labels) != rows:
            raise ValueError(f"row_labels: need {rows}, got {len(row_labels)}")
        font = ImageFont.load_default()
        label_width = 8 + max(int(ImageDraw.Draw(grid).textlength(t, font=font)) for t in row_labels)
        labelled = Image.new("RGB", (grid.width + label_width, grid.height), (255, 255, 255))
        labelled.paste(grid, (label_width, 0))
        draw = ImageDraw.Draw(labelled)
        row_height = (grid.height - 2) / rows
        for i, text in enumerate(row_labels):
            draw.text((4, 2 + (i + 0.5) * row_height), text, fill=(0, 0, 0), font=font, anchor="lm")
        grid = labelled
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return grid
