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


def grid_cells(grid: np.ndarray, rows: int, cols: int, scale: int = 4, pad: int = 2) -> np.ndarray:
    """The images [rows * cols, h, w, 3] of a grid `save_grid` wrote (row labels or not), row-major.

    The cells are read from the right edge, so a label column of any width is skipped; nearest-neighbour
    upscaling makes every cell's pixels exact.
    """
    height, width = grid.shape[:2]
    cell = (height - pad) // rows - pad
    if cell < scale or rows * (cell + pad) + pad != height or cell % scale:
        raise ValueError(f"grid: a {width}x{height} image is not {rows} rows of cells at scale {scale}, pad {pad}")
    left = width - (cols * (cell + pad) + pad)
    if left < 0:
        raise ValueError(f"grid: a {width}x{height} image is narrower than {cols} columns of {cell}-pixel cells")
    tiles = [
        grid[
            pad + r * (cell + pad) : pad + r * (cell + pad) + cell : scale,
            left + pad + c * (cell + pad) : left + pad + c * (cell + pad) + cell : scale,
        ]
        for r in range(rows)
        for c in range(cols)
    ]
    return np.ascontiguousarray(np.stack(tiles))


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
