"""grid_sample with a usable double backward (NVIDIA-compatible API).

Upstream replaced torch's grid_sample because old torch versions (before 1.10) had no derivative for
the grid_sampler backward, so R1 regularization through geometric augmentation crashed. torch 2.x
differentiates the native op twice (tests/test_ops.py proves it with gradgradcheck), so this module
keeps the name and signature and calls the native op; no torch version lists are involved.
"""

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------

enabled = False  # Kept for compatibility; the native op is used either way.


def grid_sample(input, grid):
    """Bilinear sampling of input [N, C, H, W] at grid [N, Ho, Wo, 2]; zero padding, align_corners=False."""
    if not isinstance(input, torch.Tensor) or input.ndim != 4:
        raise ValueError(f"grid_sample: input must be a 4-D tensor [N, C, H, W], got {getattr(input, 'shape', input)}")
    if not isinstance(grid, torch.Tensor) or grid.ndim != 4 or grid.shape[-1] != 2:
        raise ValueError(f"grid_sample: grid must have shape [N, H, W, 2], got {getattr(grid, 'shape', grid)}")
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------
