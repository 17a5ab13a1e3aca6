"""Sample grids: which reals go into reals.png, the grid's shape, and writing a batch as one PNG (atomically)."""

import numpy as np
import PIL.Image

from dnnlib.util import atomic_write
from torch_utils.grid_layout import tile_grid


def grid_shape(training_set):
    """(columns, rows) of the sample grid: NVIDIA's screen-filling grid, smaller for small images."""
    res = training_set.image_shape[2]
    gw = int(np.clip(7680 // res, 7, 32))
    gh = int(np.clip(4320 // training_set.image_shape[1], 4, 32))
    if res <= 64:  # Keep small-image grids readable (and cheap on a CPU).
        gw = min(gw, 16)
        gh = min(gh, max(training_set.label_dim, 8) if training_set.has_labels else 8)
    return gw, gh


def setup_snapshot_image_grid(training_set, random_seed=0):
    """Pick reals for the grid: random images, or for labelled data one row per class."""
    rnd = np.random.RandomState(random_seed)
    gw, gh = grid_shape(training_set)
    all_indices = list(range(len(training_set)))
    if not training_set.has_labels:
        rnd.shuffle(all_indices)
        grid_indices = [all_indices[i % len(all_indices)] for i in range(gw * gh)]
    else:
        label_groups = dict()
        for idx in all_indices:
            label = tuple(training_set.get_details(idx).raw_label.flat[::-1])
            label_groups.setdefault(label, []).append(idx)
        label_order = sorted(label_groups.keys())
        for label in label_order:
            rnd.shuffle(label_groups[label])
        grid_indices = []
        for y in range(gh):
            indices = label_groups[label_order[y % len(label_order)]]
            grid_indices += [indices[x % len(indices)] for x in range(gw)]
    images, labels = zip(*[training_set[i] for i in grid_indices])
    return (gw, gh), np.stack(images), np.stack(labels)


def save_image_grid(img, path, drange, grid_size, scale=None, gap=None):
    """Write a [N, C, H, W] float or uint8 batch as one PNG grid, atomically: readable by default (small tiles
    enlarged, a gap between tiles; torch_utils/grid_layout.py); scale=1, gap=0 writes NVIDIA's raw grid."""
    lo, hi = drange
    img = np.asarray(img, dtype=np.float32)
    img = (img - lo) * (255 / (hi - lo))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    _N, C, H, W = img.shape
    assert C in [1, 3]
    img = tile_grid(img.transpose(0, 2, 3, 1), grid_size, scale=scale, gap=gap)
    pil = PIL.Image.fromarray(img[:, :, 0], "L") if C == 1 else PIL.Image.fromarray(img, "RGB")
    atomic_write(path, lambda f: pil.save(f, format="PNG"))
