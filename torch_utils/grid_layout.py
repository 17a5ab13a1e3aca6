"""Image grids a person can look at: small tiles enlarged by a whole factor (pixels stay sharp) and separated by a
thin gray line. Used by the trainer's snapshot grids and by generate.py (which runs without the training package).

  tile_grid(images, (columns, rows))                 # readable defaults
  tile_grid(images, (columns, rows), scale=1, gap=0) # the raw grid, as NVIDIA writes it
"""

import numpy as np

READABLE_TILE_PX = 64  # Enlarge tiles smaller than this (a 16 px digit becomes 64 px).
GAP_VALUE = 128  # Mid gray: visible between both dark and light images.


def readable_scale(tile_px):
    """The whole enlargement factor that makes a tile at least READABLE_TILE_PX wide (1 for larger tiles)."""
    return max(1, -(-READABLE_TILE_PX // max(int(tile_px), 1)))


def tile_grid(images, grid_size, scale=None, gap=None):
    """uint8 [N, H, W, C] -> one uint8 [rows*H', columns*W', C] grid.

    scale: whole enlargement factor (None: readable_scale); gap: pixels between tiles (None: 2, or 1/32 of the
    enlarged tile when that is larger; 0: none).
    """
    images = np.asarray(images, dtype=np.uint8)
    columns, rows = grid_size
    n, h, w, c = images.shape
    if n != columns * rows:
        raise ValueError(f"a {columns}x{rows} grid needs {columns * rows} images, got {n}")
    scale = readable_scale(max(h, w)) if scale is None else int(scale)
    if scale < 1:
        raise ValueError(f"grid scale must be at least 1, got {scale}")
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    gap = max(2, max(h, w) // 32) if gap is None else int(gap)
    if gap < 0:
        raise ValueError(f"grid gap must be at least 0, got {gap}")
    grid = np.full([rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, c], GAP_VALUE, dtype=np.uint8)
    for i in range(n):
        y, x = divmod(i, columns)
        grid[y * (h + gap):y * (h + gap) + h, x * (w + gap):x * (w + gap) + w] = images[i]
    return grid
