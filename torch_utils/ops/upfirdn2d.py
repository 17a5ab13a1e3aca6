"""Upsample, FIR-filter and downsample 2-D images (NVIDIA-compatible API).

upfirdn2d(x, f, up, down, padding) works on [N, C, H, W] tensors and does, per channel:
  1. upsample by inserting up-1 zeros after every pixel (H -> H * up),
  2. pad with zeros by [x0, x1, y0, y1] (negative values crop),
  3. filter with f: a true convolution (a correlation when flip_filter=True), valid region only,
     the filter scaled by gain ** (f.ndim / 2),
  4. downsample by keeping every down-th pixel (starting with the first).
Output height = (H * up + y0 + y1 - fh) // down + 1 (same for the width).

f is None (identity), a 1-D tensor (separable: applied along both axes) or a 2-D tensor [fh, fw];
setup_filter() builds one. The default implementation is plain PyTorch and differentiable to any order.
With GAN_CUDA_KERNELS=1 and a CUDA tensor, impl='cuda' uses a direct CUDA kernel whose backward pass is
the same op with swapped parameters, so every gradient order still works.
"""

import os

import torch
import torch.nn.functional as F

from .. import custom_ops, misc

# ----------------------------------------------------------------------------
# Argument parsing helpers (names used by NVIDIA's network code).


def _parse_scaling(scaling):
    """int or [sx, sy] -> (sx, sy), both >= 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    if not isinstance(scaling, (list, tuple)) or len(scaling) != 2:
        raise ValueError(f"upfirdn2d: scaling factor must be an int or a pair of ints, got {scaling!r}")
    sx, sy = scaling
    if not (isinstance(sx, int) and isinstance(sy, int)) or sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: scaling factors must be integers >= 1, got {scaling!r}")
    return sx, sy


def _parse_padding(padding):
    """int, [px, py] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        padding = [padding, padding]
    if not isinstance(padding, (list, tuple)) or not all(isinstance(p, int) for p in padding):
        raise ValueError(f"upfirdn2d: padding must be an int or a list of 2 or 4 ints, got {padding!r}")
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"upfirdn2d: padding must have 1, 2 or 4 entries, got {padding!r}")
    return tuple(padding)


def _get_filter_size(f):
    """(fw, fh) of a filter: None -> (1, 1); 1-D [n] -> (n, n); 2-D [fh, fw] -> (fw, fh)."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: filter must be None or a 1-D or 2-D tensor, got {_describe(f)}")
    with misc.suppress_tracer_warnings():
        fw = int(f.shape[-1])
        fh = int(f.shape[0])
    if fw < 1 or fh < 1:
        raise ValueError(f"upfirdn2d: filter must not be empty, got shape {list(f.shape)}")
    return fw, fh


def _describe(obj):
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {list(obj.shape)}"
    return repr(obj)


# ----------------------------------------------------------------------------


def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn a list/array/tensor of filter taps into the float32 filter tensor upfirdn2d expects.

    A 1-D f stays 1-D (separable) when it has >= 8 taps (or separable=True); otherwise it becomes the
    outer product with itself. normalize makes the taps sum to 1; the result is then flipped if
    flip_filter and multiplied by gain ** (ndim / 2) (so the 2-D equivalent is scaled by gain).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2):
        raise ValueError(f"setup_filter: taps must be a scalar, 1-D or 2-D, got shape {list(f.shape)}")
    if f.numel() == 0:
        raise ValueError("setup_filter: the filter has no taps")
    if f.ndim == 0:
        f = f.reshape([1])
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"setup_filter: a {f.ndim}-D filter cannot be made {'separable' if separable else '2-D'}")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ----------------------------------------------------------------------------
# Public ops.


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of 2-D images.

    x: [N, C, H, W]; f: None, 1-D or 2-D float32 filter (see setup_filter); up/down: int or [x, y];
    padding: int, [x, y] or [x0, x1, y0, y1] (negative crops); gain scales the filter by gain**(f.ndim/2).
    impl: 'ref' = plain PyTorch; 'cuda' = the CUDA kernel when enabled (GAN_CUDA_KERNELS=1) and x is on
    a CUDA device, else plain PyTorch.
    """
    if impl not in ("cuda", "ref"):
        raise ValueError(f"upfirdn2d: impl must be 'cuda' or 'ref', got {impl!r}")
    if impl == "cuda" and isinstance(x, torch.Tensor) and x.device.type == "cuda":
        if f is None or not f.requires_grad:
            plugin = _get_plugin()
            if plugin is not None:
                return _upfirdn2d_kernel_path(x, f, up, down, padding, flip_filter, gain, _make_cuda_kernel(plugin))
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def _check_image(x):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be a 4-D tensor [N, C, H, W], got {_describe(x)}")


def _output_size(in_size, up, down, pad0, pad1, taps, axis):
    padded = in_size * up + pad0 + pad1
    if padded < taps:
        raise ValueError(
            f"upfirdn2d: empty output along {axis}: input {in_size} x up {up} + padding ({pad0}, {pad1}) = {padded} "
            f"is smaller than the filter size {taps}"
        )
    return (padded - taps) // down + 1


@misc.profiled_function
def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Plain PyTorch upfirdn2d (zero insertion, pad/crop, depthwise conv2d, strided slicing)."""
    _check_image(x)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = _get_filter_size(f)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    n, c, ih, iw = x.shape
    _output_size(iw, upx, downx, px0, px1, fw, "x")
    _output_size(ih, upy, downy, py0, py1, fh, "y")

    # 1. Zero insertion: each pixel followed by up-1 zeros along each axis.
    if upx > 1 or upy > 1:
        x = x.reshape([n, c, ih, 1, iw, 1])
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape([n, c, ih * upy, iw * upx])

    # 2. Zero padding (positive amounts), then cropping (negative amounts).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    # 3. FIR filter as a depthwise convolution. conv2d correlates, so flip f for a true convolution.
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = f[None, None].expand([c, 1, fh, fw])
        x = F.conv2d(x, weight, groups=c)
    else:
        x = F.conv2d(x, f.reshape([1, 1, 1, fw]).expand([c, 1, 1, fw]), groups=c)
        x = F.conv2d(x, f.reshape([1, 1, fh, 1]).expand([c, 1, fh, 1]), groups=c)

    # 4. Keep every down-th pixel.
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Filter with f, padded so that the output has the input's size (plus `padding`)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    padding = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Upsample by `up` with f as the interpolation filter (output H * up, plus `padding`)."""
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    padding = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=padding, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Downsample by `down` with f as the anti-aliasing filter (output H / down, plus `padding`)."""
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    padding = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)


# ----------------------------------------------------------------------------
# Optional CUDA kernel.
#
# A "kernel" is a callable kernel(x, k, params) with params = (upx, upy, downx, downy, px0, px1, py0, py1)
# and k a 2-D float32 filter used as a *correlation* kernel (already flipped and scaled): it returns
# down(correlate(pad(up(x)), k)). _torch_kernel is the PyTorch statement of that contract.


def _torch_kernel(x, k, params):
    upx, upy, downx, downy, px0, px1, py0, py1 = params
    return _upfirdn2d_ref(x, k, up=[upx, upy], down=[downx, downy], padding=[px0, px1, py0, py1], flip_filter=True)


def _make_cuda_kernel(plugin):
    def kernel(x, k, params):
        return plugin.upfirdn2d(x.contiguous(), k.to(device=x.device, dtype=torch.float32).contiguous(), *params)

    return kernel


def _correlation_filter(f, flip_filter, gain, device):
    """2-D float32 correlation kernel equivalent to (f, flip_filter, gain) in upfirdn2d."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=device)
    _get_filter_size(f)
    f = f.detach().to(device=device, dtype=torch.float32) * (gain ** (f.ndim / 2))
    if f.ndim == 1:
        f = torch.outer(f, f)
    if not flip_filter:
        f = f.flip([0, 1])
    return f.contiguous()


def _upfirdn2d_kernel_path(x, f, up, down, padding, flip_filter, gain, kernel):
    _check_image(x)
    fw, fh = _get_filter_size(f)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    _output_size(x.shape[3], upx, downx, px0, px1, fw, "x")
    _output_size(x.shape[2], upy, downy, py0, py1, fh, "y")
    k = _correlation_filter(f, flip_filter, gain, x.device)
    return _Upfirdn2dKernelFn.apply(x, k, (upx, upy, downx, downy, px0, px1, py0, py1), kernel)


class _Upfirdn2dKernelFn(torch.autograd.Function):
    """upfirdn2d through `kernel`; the backward pass is the transposed upfirdn2d, through the same Function."""

    @staticmethod
    def forward(ctx, x, k, params, kernel):
        ctx.save_for_backward(k)
        ctx.params = params
        ctx.kernel = kernel
        ctx.in_size = (int(x.shape[2]), int(x.shape[3]))
        return kernel(x, k, params)

    @staticmethod
    def backward(ctx, dy):
        (k,) = ctx.saved_tensors
        upx, upy, downx, downy, px0, px1, py0, py1 = ctx.params
        ih, iw = ctx.in_size
        oh, ow = int(dy.shape[2]), int(dy.shape[3])
        fh, fw = int(k.shape[0]), int(k.shape[1])
        # Transpose of each stage, in reverse order: the down-sampling becomes zero insertion, the valid
        # correlation a full one with the mirrored kernel, the pad a crop, the zero insertion a decimation.
        transposed = (
            downx, downy, upx, upy,
            fw - 1 - px0, iw * upx - ow * downx + px0 - upx + 1,
            fh - 1 - py0, ih * upy - oh * downy + py0 - upy + 1,
        )
        dx = None
        if ctx.needs_input_grad[0]:
            dx = _Upfirdn2dKernelFn.apply(dy, k.flip([0, 1]), transposed, ctx.kernel)
        return dx, None, None, None


def _get_plugin():
    """The compiled kernel module, or None (not requested, no CUDA, or the build failed)."""
    if not custom_ops.cuda_kernels_requested() or not torch.cuda.is_available():
        return None
    return custom_ops.try_get_plugin(
        "upfirdn2d_plugin",
        sources=["upfirdn2d.cpp", "upfirdn2d.cu"],
        headers=["upfirdn2d.h"],
        source_dir=os.path.dirname(__file__),
    )


# ----------------------------------------------------------------------------
