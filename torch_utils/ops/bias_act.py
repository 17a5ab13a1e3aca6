"""Fused bias + activation + gain + clamp (NVIDIA-compatible API).

    y = clamp(gain * act(x + b, alpha), -clamp, clamp)

with `b` broadcast along dimension `dim` of `x`. The default implementation is plain PyTorch, so every
gradient order works on any device. With GAN_CUDA_KERNELS=1 and a CUDA tensor, `impl='cuda'` runs the
forward pass (and the plain first-order backward) through a small CUDA kernel built on first use; the
gradient of that backward is expressed with PyTorch ops, so higher orders still work.

Only 'lrelu' uses `alpha` (its negative slope); the other activations ignore it, as upstream does.
"""

import math
import os

import torch
import torch.nn.functional as F

import dnnlib

from .. import custom_ops, misc

# ----------------------------------------------------------------------------
# Activations. `cuda_idx` selects the branch of the CUDA kernel; `ref` says which tensor upstream's
# kernel keeps for the backward pass ('x' = input, 'y' = output, '' = none); `has_2nd_grad` tells
# whether the second derivative is nonzero.

_SQRT2 = math.sqrt(2.0)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

activation_funcs = {
    "linear": dnnlib.EasyDict(func=lambda x, **_: x, def_alpha=0, def_gain=1, cuda_idx=1, ref="", has_2nd_grad=False),
    "relu": dnnlib.EasyDict(func=lambda x, **_: F.relu(x), def_alpha=0, def_gain=_SQRT2, cuda_idx=2, ref="y",
                            has_2nd_grad=False),
    "lrelu": dnnlib.EasyDict(func=lambda x, alpha, **_: F.leaky_relu(x, alpha), def_alpha=0.2, def_gain=_SQRT2,
                             cuda_idx=3, ref="y", has_2nd_grad=False),
    "tanh": dnnlib.EasyDict(func=lambda x, **_: torch.tanh(x), def_alpha=0, def_gain=1, cuda_idx=4, ref="y",
                            has_2nd_grad=True),
    "sigmoid": dnnlib.EasyDict(func=lambda x, **_: torch.sigmoid(x), def_alpha=0, def_gain=1, cuda_idx=5, ref="y",
                               has_2nd_grad=True),
    "elu": dnnlib.EasyDict(func=lambda x, **_: F.elu(x), def_alpha=0, def_gain=1, cuda_idx=6, ref="y",
                           has_2nd_grad=True),
    "selu": dnnlib.EasyDict(func=lambda x, **_: F.selu(x), def_alpha=0, def_gain=1, cuda_idx=7, ref="y",
                            has_2nd_grad=True),
    "softplus": dnnlib.EasyDict(func=lambda x, **_: F.softplus(x), def_alpha=0, def_gain=1, cuda_idx=8, ref="y",
                                has_2nd_grad=True),
    "swish": dnnlib.EasyDict(func=lambda x, **_: torch.sigmoid(x) * x, def_alpha=0, def_gain=_SQRT2, cuda_idx=9,
                             ref="x", has_2nd_grad=True),
}


def _swish_grad(z):
    s = torch.sigmoid(z)
    return s + z * s * (1 - s)


# d act(z) / dz written with differentiable PyTorch ops (used by the kernel path's backward).
_activation_grads = {
    "linear": lambda z, alpha: torch.ones_like(z),
    "relu": lambda z, alpha: (z > 0).to(z.dtype),
    "lrelu": lambda z, alpha: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, alpha)),
    "tanh": lambda z, alpha: 1 - torch.tanh(z) ** 2,
    "sigmoid": lambda z, alpha: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
    "elu": lambda z, alpha: torch.where(z > 0, torch.ones_like(z), torch.exp(torch.clamp(z, max=0))),
    "selu": lambda z, alpha: _SELU_SCALE * torch.where(z > 0, torch.ones_like(z),
                                                       _SELU_ALPHA * torch.exp(torch.clamp(z, max=0))),
    "softplus": lambda z, alpha: torch.sigmoid(z),
    "swish": lambda z, alpha: _swish_grad(z),
}

# ----------------------------------------------------------------------------
# Argument handling shared by every implementation.


def _get_spec(act):
    spec = activation_funcs.get(act, None) if isinstance(act, str) else None
    if spec is None:
        raise ValueError(f"bias_act: unknown activation {act!r}; valid names are: {', '.join(activation_funcs)}")
    return spec


def _resolve_params(act, alpha, gain, clamp):
    spec = _get_spec(act)
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    return dnnlib.EasyDict(act=act, alpha=alpha, gain=gain, clamp=clamp)


def _check_inputs(x, b, dim):
    """Validate x and b; returns dim as a non-negative index."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act: x must be a torch.Tensor, got {type(x).__name__}")
    if b is None:
        return dim % x.ndim if x.ndim > 0 else dim
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"bias_act: b must be a torch.Tensor or None, got {type(b).__name__}")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"bias_act: dim={dim} is out of range for x with shape {list(x.shape)}")
    dim = dim % x.ndim
    expected = [x.shape[dim]]
    if b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(
            f"bias_act: wrong bias shape: expected {expected} (x.shape[{dim}] for x of shape {list(x.shape)}), "
            f"got {list(b.shape)}"
        )
    return dim


# act(g * x) = g * act(x) for every g > 0.
_POSITIVELY_HOMOGENEOUS = ("linear", "relu", "lrelu")


def _broadcast_bias(b, x, dim):
    return b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])


# ----------------------------------------------------------------------------
# Public entry point.


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="cuda"):
    """clamp(gain * act(x + b, alpha), -clamp, clamp); b is 1-D, broadcast along `dim`.

    alpha/gain default to the activation's def_alpha/def_gain; clamp None or negative = no clamping.
    impl: 'ref' = plain PyTorch; 'cuda' = the CUDA kernel when it is enabled (GAN_CUDA_KERNELS=1)
    and x is on a CUDA device, else the same plain PyTorch code.
    """
    params = _resolve_params(act, alpha, gain, clamp)
    dim = _check_inputs(x, b, dim)
    if impl not in ("cuda", "ref"):
        raise ValueError(f"bias_act: impl must be 'cuda' or 'ref', got {impl!r}")
    if impl == "cuda" and x.device.type == "cuda" and x.ndim > 0:
        plugin = _get_plugin()
        if plugin is not None:
            params.dim = dim
            if b is not None:
                b = b.to(x.dtype)
            return _BiasActKernelFn.apply(x, b, _make_cuda_kernel(plugin), params)
    return _bias_act_ref(x, b, dim=dim, act=act, alpha=params.alpha, gain=params.gain, clamp=params.clamp)


@misc.profiled_function
def _bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Plain PyTorch version of bias_act(); differentiable to any order."""
    params = _resolve_params(act, alpha, gain, clamp)
    dim = _check_inputs(x, b, dim)
    gain = params.gain
    if b is not None and gain > 0 and gain != 1 and act in _POSITIVELY_HOMOGENEOUS:
        # gain * act(x + b) = act(gain * x + gain * b) for gain > 0: one pass over x fewer, equal up to float
        # rounding (x0.98 s/kimg for the tiny preset's 16 px CPU step, which is mostly small elementwise ops).
        x = torch.add(_broadcast_bias(b, x, dim) * gain, x, alpha=gain)
        gain = 1
    elif b is not None:
        x = x + _broadcast_bias(b, x, dim)
    x = activation_funcs[act].func(x, alpha=params.alpha)
    if gain != 1:
        x = x * gain
    if params.clamp >= 0:
        x = x.clamp(-params.clamp, params.clamp)
    return x


# ----------------------------------------------------------------------------
# Optional CUDA kernel.
#
# A "kernel" is a callable kernel(x, b, dy, params): with dy None it returns the forward output; with
# dy given it returns dL/d(x + b) (first-order gradient, not differentiable). The PyTorch version below
# defines the contract and is what the CUDA kernel is tested against.


def _bias_act_torch_kernel(x, b, dy, params):
    z = x if b is None else x + _broadcast_bias(b, x, params.dim)
    if dy is None:
        y = activation_funcs[params.act].func(z, alpha=params.alpha)
        if params.gain != 1:
            y = y * params.gain
        if params.clamp >= 0:
            y = y.clamp(-params.clamp, params.clamp)
        return y
    gz = dy * _activation_grads[params.act](z, params.alpha)
    if params.gain != 1:
        gz = gz * params.gain
    if params.clamp >= 0:
        v = activation_funcs[params.act].func(z, alpha=params.alpha) * params.gain
        inside = (v >= -params.clamp) & (v <= params.clamp)
        gz = torch.where(inside, gz, torch.zeros_like(gz))
    return gz


def _make_cuda_kernel(plugin):
    def kernel(x, b, dy, params):
        empty = x.new_empty([0])
        return plugin.bias_act(
            x.contiguous(),
            empty if b is None else b.contiguous(),
            empty if dy is None else dy.to(x.dtype).contiguous(),
            activation_funcs[params.act].cuda_idx,
            0 if dy is None else 1,
            params.alpha,
            params.gain,
            params.clamp,
            params.dim,
        )

    return kernel


class _BiasActKernelFn(torch.autograd.Function):
    """Forward and plain backward through `kernel`; a differentiable PyTorch backward when a graph is built."""

    @staticmethod
    def forward(ctx, x, b, kernel, params):
        ctx.kernel = kernel
        ctx.params = params
        ctx.save_for_backward(x, b)
        return kernel(x, b, None, params)

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        params = ctx.params
        if torch.is_grad_enabled():
            gz = _bias_act_torch_kernel(x, b, dy, params)  # create_graph=True: keep it differentiable
        else:
            gz = ctx.kernel(x, b, dy, params)
        dx = gz if ctx.needs_input_grad[0] else None
        db = None
        if b is not None and ctx.needs_input_grad[1]:
            db = gz.sum([i for i in range(gz.ndim) if i != params.dim]).to(b.dtype)
        return dx, db, None, None


def _get_plugin():
    """The compiled kernel module, or None (not requested, no CUDA, or the build failed)."""
    if not custom_ops.cuda_kernels_requested() or not torch.cuda.is_available():
        return None
    return custom_ops.try_get_plugin(
        "bias_act_plugin",
        sources=["bias_act.cpp", "bias_act.cu"],
        headers=["bias_act.h"],
        source_dir=os.path.dirname(__file__),
    )


# ----------------------------------------------------------------------------
