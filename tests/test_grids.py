"""Grids a person can see (issue #22): small tiles enlarged and separated by default, the raw grid on request, and
every snapshot grid's name unique per image count."""

import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from torch_utils.grid_layout import readable_scale, tile_grid
from training import checkpoint, report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tile_grid_enlarges_small_tiles_and_separates_them():
    images = np.stack([np.full([16, 16, 1], 10 * i, np.uint8) for i in range(6)])
    grid = tile_grid(images, (3, 2))
    assert readable_scale(16) == 4 and grid.shape == (2 * 64 + 2, 3 * 64 + 2 * 2, 1)
    assert (grid[64:66] == 128).all() and (grid[:, 64:66] == 128).all()  # The gaps.
    assert (grid[66:, 68 * 2:] == 50).all()  # Tile 5 (bottom right), enlarged 4x, pixels kept sharp.
    raw = tile_grid(images, (3, 2), scale=1, gap=0)
    assert raw.shape == (32, 48, 1) and (raw[16:, 32:] == 50).all()
    assert tile_grid(np.zeros([1, 128, 128, 3], np.uint8), (1, 1)).shape == (128, 128, 3)  # Large tiles as they are.
    with pytest.raises(ValueError, match="a 3x2 grid needs 6 images, got 5"):
        tile_grid(images[:5], (3, 2))


def test_snapshot_grids_are_readable_and_never_overwritten(tiny_trainer):
    trainer = tiny_trainer(iterations=3, image_snapshot_ticks=1)
    names = sorted(n for n in os.listdir(trainer.run_dir) if n.startswith("fakes"))
    # Ticks end at 8 (tick 0), 24 and 24 images (the run's end): one grid per tick, each its own name.
    assert names == ["fakes000000-000000024.png", "fakes000000.png", "fakes_init.png"], names
    with PIL.Image.open(os.path.join(trainer.run_dir, "reals.png")) as img:
        columns, rows = trainer.grid_size
        assert img.size == (columns * 64 + (columns - 1) * 2, rows * 64 + (rows - 1) * 2)  # 16 px tiles at 4x.
    assert report.latest_grids(trainer.run_dir) == {"fakes": "fakes000000-000000024.png"}
    raw = tiny_trainer(iterations=1, grid_scale=1, grid_gap=0)
    with PIL.Image.open(os.path.join(raw.run_dir, "reals.png")) as img:
        assert img.size == (raw.grid_size[0] * 16, raw.grid_size[1] * 16)


def test_generate_class_grid_is_readable_or_raw(tiny_trainer, tmp_path):
    trainer = tiny_trainer(iterations=1, network_snapshot_ticks=1)
    snap = checkpoint.latest_snapshot(trainer.run_dir)
    for extra, size in [([], (3 * 64 + 2 * 2, 10 * 64 + 9 * 2)), (["--grid-scale=1", "--grid-gap=0"], (48, 160))]:
        out = tmp_path / ("raw" if extra else "readable")
        result = subprocess.run([sys.executable, os.path.join(REPO, "generate.py"), f"--network={snap}", "--seeds=0-2",
                                 "--class-grid", f"--outdir={out}", *extra], capture_output=True, text=True, cwd=REPO,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert result.returncode == 0, result.stderr[-2000:]
        with PIL.Image.open(out / "class_grid.png") as img:
            assert img.size == size
