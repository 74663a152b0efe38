"""Squares on a grid, after disent's ``XYObjectData`` and ``XYSquaresData`` (Michlo, 2021-23).

Two cheap procedural datasets (https://github.com/nmichlo/disent), reimplemented from their
published factor definitions, with disent's default factor structure:

- ``xyobject``: one square on a black 64x64 RGB canvas; factors x 25, y 25 (grid spacing 2 px),
  scale 5 (sides 7, 9, 11, 13, 15 px, centred in the 15-px cell) and color 24 (disent's
  ``rainbow_4`` palette: six hues red, yellow, green, cyan, blue, magenta at four brightnesses
  63, 127, 191, 255; index = 6 * brightness step + hue). Brightness is folded into ``color`` on
  purpose, as in disent: no separate shade factor.
- ``xysquares``: three 8x8 squares, red, green and blue (one per channel, 255 on 0), each on an
  8x8 grid of positions spaced 8 px; factors x_R, y_R, x_G, y_G, x_B, y_B, 8 each. With the
  spacing equal to the square size, two positions of a square never overlap, so the pixel
  distance between any two images depends only on how many of the six coordinates differ, not by
  how much: the dataset is adversarial to pixel-wise reconstruction losses (docs/datasets.md).
  ``grid_spacing`` < ``square_size`` makes neighbouring positions overlap, and that ordering back.

Both are deterministic and render a batch in a few vectorized numpy operations.
"""

from __future__ import annotations

import numpy as np

from harness.datasets.base import GridDataset
from harness.errors import InputError

CANVAS = 64

# disent's rainbow order, then four brightness steps 255 * k // 4 (k = 1..4), brightness-major
_HUES = np.array([[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255], [255, 0, 255]])
RAINBOW_4 = np.concatenate([_HUES * k // 4 for k in range(1, 5)]).astype(np.uint8)  # (24, 3)


def _paste(out: np.ndarray, top: np.ndarray, left: np.ndarray, size: int, values, channel=slice(None)) -> None:
    """Write ``values`` (a scalar, or (n, size, size[, C]) patches) into the size x size squares of
    ``out`` (n, 64, 64, C) at per-image corners, in one fancy-indexed assignment: only the patch
    pixels are touched, not whole canvases."""
    span = np.arange(size)
    rows = (top[:, None] + span)[:, :, None]
    cols = (left[:, None] + span)[:, None, :]
    out[np.arange(len(top))[:, None, None], rows, cols, channel] = values


def _inset_squares(sides, cell: int) -> np.ndarray:
    """uint8 (len(sides), cell, cell, 1): 1 inside a square of each side, inset (cell - side) // 2."""
    masks = np.zeros((len(sides), cell, cell, 1), dtype=np.uint8)
    for k, side in enumerate(sides):
        inset = (cell - side) // 2
        masks[k, inset : inset + side, inset : inset + side] = 1
    return masks


class XYObject(GridDataset):
    """One coloured square on a grid: x 25, y 25, scale 5, color 24; 75,000 images, 64x64x3.

    disent ``XYObjectData`` defaults (v0.3+): grid spacing 2, sides 7..15 step 2, palette
    ``rainbow_4``. A square of side s at grid position (x, y) has its top-left corner at
    ``2 * (x, y) + (15 - s) // 2``, so every scale shares the same centre (the largest square
    spans columns 0..14 at x = 0 and 48..62 at x = 24).
    """

    name = "xyobject"
    factor_names = ["x", "y", "scale", "color"]
    factor_sizes = [25, 25, 5, 24]
    observation_shape = (CANVAS, CANVAS, 3)
    source = "procedural (after disent's XYObjectData, Michlo 2021)"
    montage_base = (12, 12, 4, 18)  # the largest square, bright red, in the middle

    _SPACING = 2
    _SIDES = np.arange(7, 16, 2)
    _CELL = 15  # the largest side: every scale is drawn inside the same cell
    _MASKS = _inset_squares(_SIDES, _CELL)

    def render(self, factors: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x, y, scale, color = np.asarray(factors, dtype=np.int64).reshape(-1, 4).T
        out = np.zeros((len(x), CANVAS, CANVAS, 3), dtype=np.uint8)
        cells = self._MASKS[scale] * RAINBOW_4[color][:, None, None, :]  # (n, 15, 15, 3)
        _paste(out, self._SPACING * y, self._SPACING * x, self._CELL, cells)
        return out


class XYSquares(GridDataset):
    """Three squares, R, G, B, on a grid: x_R, y_R, x_G, y_G, x_B, y_B, 8 each; 262,144 images.

    disent ``XYSquaresData`` defaults: 8-px squares, grid spacing = square size (no overlap
    between positions), 64x64x3, square k drawn at 255 in channel k on a 0 background; the grid
    is centred on the canvas. Options: ``square_size`` (default 8) and ``grid_spacing`` (default
    the square size); the number of positions per axis is ``(64 - square_size) // grid_spacing + 1``.
    """

    name = "xysquares"
    factor_names = ["x_R", "y_R", "x_G", "y_G", "x_B", "y_B"]
    factor_sizes = [8, 8, 8, 8, 8, 8]
    observation_shape = (CANVAS, CANVAS, 3)
    source = "procedural (after disent's XYSquaresData, Michlo 2021)"
    montage_base = (1, 1, 6, 3, 3, 6)  # the three squares apart

    def __init__(self, square_size: int = 8, grid_spacing: int | None = None):
        self.square_size = _whole(square_size, "square_size", 1, CANVAS)
        spacing = self.square_size if grid_spacing is None else grid_spacing
        self.grid_spacing = _whole(spacing, "grid_spacing", 1, max(1, CANVAS - self.square_size))
        placements = (CANVAS - self.square_size) // self.grid_spacing + 1
        self.factor_sizes = [placements] * 6
        # centre the grid: the leftover pixels split evenly between the two sides
        self._offset = (CANVAS - (self.square_size + (placements - 1) * self.grid_spacing)) // 2
        if (self.square_size, self.grid_spacing) != (8, 8):
            self.montage_base = tuple(int(round(v * (placements - 1) / 7)) for v in XYSquares.montage_base)

    def render(self, factors: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        corners = self._offset + self.grid_spacing * np.asarray(factors, dtype=np.int64).reshape(-1, 3, 2)
        out = np.zeros((len(corners), CANVAS, CANVAS, 3), dtype=np.uint8)
        for channel in range(3):
            _paste(out, corners[:, channel, 1], corners[:, channel, 0], self.square_size, 255, channel)
        return out


def _whole(value, option: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or an InputError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"xysquares: {option} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)
