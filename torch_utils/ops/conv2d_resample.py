"""2-D convolution with optional FIR up/down-sampling (NVIDIA-compatible API).

conv2d_resample(x, w, f, up, down, padding) equals the straightforward composition

    p = padding + the upsample2d padding (if up > 1) + the downsample2d padding (if down > 1)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=p, gain=up**2)
    x = conv2d(x, w, groups=groups)         # a correlation; w is spatially flipped if not flip_weight
    x = upfirdn2d(x, f, down=down)          # only if down > 1

but picks cheaper equivalent orderings where possible (filters and convolutions commute):
strided convolutions for downsampling, a strided transposed convolution for upsampling, and 1x1
kernels applied on the smaller side of the resampling.
"""

import torch

from .. import misc
from . import conv2d_gradfix
from .upfirdn2d import _get_filter_size, _parse_padding, upfirdn2d

# ----------------------------------------------------------------------------


def _get_weight_shape(w):
    with misc.suppress_tracer_warnings():
        shape = [int(s) for s in w.shape]
    misc.assert_shape(w, shape)
    return shape


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """Grouped convolution; a correlation with w when flip_weight, a true convolution otherwise.

    With transpose=True, w has the regular conv2d layout [out, in/groups, kh, kw] and is rearranged for
    conv_transpose2d here.
    """
    if not flip_weight:
        w = w.flip([2, 3])
    if not transpose:
        return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=groups)
    out_channels, in_per_group, kh, kw = _get_weight_shape(w)
    w = w.reshape([groups, out_channels // groups, in_per_group, kh, kw]).transpose(1, 2)
    w = w.reshape([groups * in_per_group, out_channels // groups, kh, kw])
    return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)


def _check_args(x, w, f, up, down, groups):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"conv2d_resample: x must be a 4-D tensor, got {getattr(x, 'shape', x)}")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError(f"conv2d_resample: w must be a 4-D tensor, got {getattr(w, 'shape', w)}")
    if w.dtype != x.dtype:
        raise ValueError(f"conv2d_resample: x and w must have the same dtype, got {x.dtype} and {w.dtype}")
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.dtype != torch.float32):
        raise ValueError("conv2d_resample: f must be None or a 1-D or 2-D float32 tensor (see setup_filter)")
    for name, value in (("up", up), ("down", down), ("groups", groups)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"conv2d_resample: {name} must be an integer >= 1, got {value!r}")
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups != 0:
        raise ValueError(
            f"conv2d_resample: channel mismatch: x has {x.shape[1]} channels, w has shape {list(w.shape)}, "
            f"groups={groups}"
        )


@misc.profiled_function
def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """x: [N, C_in, H, W]; w: [C_out, C_in / groups, kh, kw]; f: FIR filter (setup_filter) or None.

    up/down: integer resampling factors; padding: int, [x, y] or [x0, x1, y0, y1], applied to the
    upsampled image before the convolution; flip_weight=False makes it a true convolution.
    """
    _check_args(x, w, f, up, down, groups)
    _, _, kh, kw = _get_weight_shape(w)
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Extra padding of the up/down filtering (same as upsample2d / downsample2d).
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]
    pointwise = kw == 1 and kh == 1

    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
        x = upfirdn2d(x, None, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    if up == 1:  # down > 1: filter at full resolution, then a strided convolution (or 1x1 after decimation).
        if pointwise:
            x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
            return _conv(x, w, groups=groups, flip_weight=flip_weight)
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if down == 1 and pointwise:  # 1x1 convolution at low resolution, then upsample.
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up**2, flip_filter=flip_filter)

    # up > 1: a transposed convolution with stride `up` does zero insertion plus a full convolution
    # (kw - 1 implicit padding on the left, kw - up on the right of the zero-inserted image). Crops
    # common to both sides go into its padding argument; the rest is left to the FIR filter pass.
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    crop_x = max(min(-px0, -px1), 0)
    crop_y = max(min(-py0, -py1), 0)
    x = _conv(x, w, stride=up, padding=[crop_y, crop_x], groups=groups, transpose=True, flip_weight=not flip_weight)
    x = upfirdn2d(x, f, padding=[px0 + crop_x, px1 + crop_x, py0 + crop_y, py1 + crop_y], gain=up**2,
                  flip_filter=flip_filter)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


# ----------------------------------------------------------------------------
