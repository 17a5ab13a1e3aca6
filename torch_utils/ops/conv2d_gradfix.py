"""conv2d / conv_transpose2d that can skip the weight gradient (NVIDIA-compatible API).

R1 and path-length regularization call torch.autograd.grad(..., inputs=[images or ws], create_graph=True).
Autograd then still computes the weight gradient of every convolution, although nobody asked for it.
Inside `no_weight_gradients()` our convolutions return None for it instead.

How: when `enabled` is True (the training loop sets it, as upstream does) or the forward pass itself
runs inside `no_weight_gradients()`, the convolution is a custom autograd Function. Its backward pass
reads `weight_gradients_disabled` *when it runs*, so the usual pattern

    y = D(x)                                   # forward outside the context
    with conv2d_gradfix.no_weight_gradients():
        g, = torch.autograd.grad(y.sum(), x, create_graph=True)
    (g.square().sum()).backward()              # weights still get their 2nd-order gradient

works. The input gradient is computed with plain differentiable PyTorch convolutions that keep the
weight in the graph, so gradients of gradients (w.r.t. input, weight and grad_output) are exact.
Only public torch APIs are used (no version lists). Otherwise the functions are the torch ones.
"""

import contextlib

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------

enabled = False  # Use the custom Function (needed for no_weight_gradients() to act on backward passes).
weight_gradients_disabled = False  # True inside no_weight_gradients().


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Within this context, backward passes of our convolutions skip the weight gradient."""
    global weight_gradients_disabled
    previous = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = previous


def _use_custom_function(input, weight):
    if not (enabled or weight_gradients_disabled):
        return False
    if not torch.is_grad_enabled():
        return False
    return isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same result as torch.nn.functional.conv2d (numeric padding only)."""
    if _use_custom_function(input, weight) and not isinstance(padding, str):
        params = _ConvParams(False, stride, padding, dilation, groups, 0)
        return _Conv2dFunction.apply(input, weight, bias, params)
    return F.conv2d(input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Same result as torch.nn.functional.conv_transpose2d."""
    if _use_custom_function(input, weight):
        params = _ConvParams(True, stride, padding, dilation, groups, output_padding)
        return _Conv2dFunction.apply(input, weight, bias, params)
    return F.conv_transpose2d(input, weight, bias, stride=stride, padding=padding, output_padding=output_padding,
                              groups=groups, dilation=dilation)


# ----------------------------------------------------------------------------


def _pair(value, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"conv2d_gradfix: {name} must be an int or a pair, got {value!r}")
    return value


class _ConvParams:
    """Hyper-parameters of one convolution; `transpose` selects conv_transpose2d."""

    def __init__(self, transpose, stride, padding, dilation, groups, output_padding):
        self.transpose = bool(transpose)
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        self.output_padding = _pair(output_padding, "output_padding")

    def run(self, x, w, b=None):
        if self.transpose:
            return F.conv_transpose2d(x, w, b, stride=self.stride, padding=self.padding,
                                      output_padding=self.output_padding, groups=self.groups, dilation=self.dilation)
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def input_grad(self, dy, w, input_hw):
        """Adjoint of run() w.r.t. its input: differentiable in dy and w."""
        if self.transpose:
            return F.conv2d(dy, w, None, stride=self.stride, padding=self.padding, dilation=self.dilation,
                            groups=self.groups)
        kh, kw = w.shape[2], w.shape[3]
        output_padding = []
        for axis in range(2):
            natural = ((dy.shape[2 + axis] - 1) * self.stride[axis] - 2 * self.padding[axis]
                       + self.dilation[axis] * ((kh, kw)[axis] - 1) + 1)
            output_padding.append(int(input_hw[axis] - natural))
        return F.conv_transpose2d(dy, w, None, stride=self.stride, padding=self.padding,
                                  output_padding=output_padding, groups=self.groups, dilation=self.dilation)

    def weight_grad(self, x, dy, weight_shape):
        """Gradient w.r.t. the weight (differentiable in x and dy)."""
        if self.transpose:
            # conv_transpose2d(x, w) is the adjoint of conv2d(., w): swap the roles of x and dy.
            return torch.nn.grad.conv2d_weight(dy, weight_shape, x, stride=self.stride, padding=self.padding,
                                               dilation=self.dilation, groups=self.groups)
        return torch.nn.grad.conv2d_weight(x, weight_shape, dy, stride=self.stride, padding=self.padding,
                                           dilation=self.dilation, groups=self.groups)


class _Conv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, params):
        ctx.params = params
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, weight)
        return params.run(input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        params = ctx.params
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = params.input_grad(grad_output, weight, input.shape[2:])
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            grad_weight = params.weight_grad(input, grad_output, weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum([0, 2, 3])
        return grad_input, grad_weight, grad_bias, None


# ----------------------------------------------------------------------------
