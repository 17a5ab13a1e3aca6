"""torch_utils.ops against naive implementations written here, plus gradient checks (1st and 2nd order)."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import dnnlib
from torch_utils import custom_ops
from torch_utils.ops import bias_act, conv2d_gradfix, conv2d_resample, fma, grid_sample_gradfix, upfirdn2d

ACTS = ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"]
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


# ----------------------------------------------------------------------------
# Naive references (numpy, float64).


def naive_activation(name, z, alpha):
    if name == "linear":
        return z
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "lrelu":
        return np.where(z > 0, z, alpha * z)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "elu":
        return np.where(z > 0, z, np.expm1(z))
    if name == "selu":
        return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(z))
    if name == "softplus":
        return np.log1p(np.exp(z))
    if name == "swish":
        return z / (1.0 + np.exp(-z))
    raise AssertionError(name)


def naive_bias_act(x, b, dim, act, alpha, gain, clamp):
    z = x.numpy().astype(np.float64)
    if b is not None:
        shape = [1] * z.ndim
        shape[dim] = -1
        z = z + b.numpy().astype(np.float64).reshape(shape)
    y = naive_activation(act, z, alpha) * gain
    if clamp is not None and clamp >= 0:
        y = np.clip(y, -clamp, clamp)
    return y


def parse_pad(padding):
    if isinstance(padding, int):
        return [padding] * 4
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    return list(padding)


def parse_factor(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def naive_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Literal definition with explicit loops: zero insertion, pad/crop, FIR per output pixel, decimation."""
    x = np.asarray(x, dtype=np.float64)
    if f is None:
        f = np.ones([1, 1])
    f = np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)  # separable: 1-D taps along each axis (gain**0.5 per axis)
    f = f * gain
    upx, upy = parse_factor(up)
    downx, downy = parse_factor(down)
    px0, px1, py0, py1 = parse_pad(padding)
    n, c, h, w = x.shape
    fh, fw = f.shape

    up_img = np.zeros([n, c, h * upy, w * upx])
    for iy in range(h):
        for ix in range(w):
            up_img[:, :, iy * upy, ix * upx] = x[:, :, iy, ix]

    ph, pw = h * upy + py0 + py1, w * upx + px0 + px1
    padded = np.zeros([n, c, ph, pw])
    for r in range(ph):
        for s in range(pw):
            u, v = r - py0, s - px0
            if 0 <= u < h * upy and 0 <= v < w * upx:
                padded[:, :, r, s] = up_img[:, :, u, v]

    kernel = f if flip_filter else f[::-1, ::-1]  # true convolution = correlation with the mirrored taps
    oh, ow = ph - fh + 1, pw - fw + 1
    filtered = np.zeros([n, c, oh, ow])
    for j in range(oh):
        for i in range(ow):
            acc = np.zeros([n, c])
            for a in range(fh):
                for bb in range(fw):
                    acc += padded[:, :, j + a, i + bb] * kernel[a, bb]
            filtered[:, :, j, i] = acc
    return filtered[:, :, ::downy, ::downx]


def assert_close(actual, expected, atol=1e-5, rtol=1e-4):
    actual = actual.detach().cpu().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    expected = expected.detach().cpu().double().numpy() if isinstance(expected, torch.Tensor) else expected
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------
# bias_act


def test_activation_table_defaults():
    expected = {
        "linear": (0, 1), "relu": (0, math.sqrt(2)), "lrelu": (0.2, math.sqrt(2)), "tanh": (0, 1),
        "sigmoid": (0, 1), "elu": (0, 1), "selu": (0, 1), "softplus": (0, 1), "swish": (0, math.sqrt(2)),
    }
    assert list(bias_act.activation_funcs) == ACTS
    for name, (alpha, gain) in expected.items():
        spec = bias_act.activation_funcs[name]
        assert spec.def_alpha == pytest.approx(alpha) and spec.def_gain == pytest.approx(gain)
        assert isinstance(spec.def_gain, (int, float)) and type(spec.def_gain).__module__ == "builtins"
        assert set(spec.keys()) >= {"func", "def_alpha", "def_gain", "cuda_idx", "ref", "has_2nd_grad"}
    assert sorted(s.cuda_idx for s in bias_act.activation_funcs.values()) == list(range(1, 10))


BIAS_ACT_CONFIGS = [
    dict(shape=[2, 5, 3, 4], dim=1, bias=True, alpha=None, gain=None, clamp=None),
    dict(shape=[3, 4, 5], dim=2, bias=True, alpha=0.35, gain=0.7, clamp=0.4),
    dict(shape=[6, 3], dim=0, bias=True, alpha=None, gain=2.5, clamp=1.0),
    dict(shape=[2, 3, 4], dim=-1, bias=True, alpha=0.05, gain=1, clamp=-1),
    dict(shape=[4, 7], dim=1, bias=False, alpha=0.5, gain=None, clamp=0.0),
]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("cfg", range(len(BIAS_ACT_CONFIGS)))
def test_bias_act_matches_naive(act, cfg):
    cfg = BIAS_ACT_CONFIGS[cfg]
    x = _randn(*cfg["shape"], seed=cfg["shape"][0]) * 2
    dim = cfg["dim"] % x.ndim
    b = _randn(x.shape[dim], seed=7) if cfg["bias"] else None
    spec = bias_act.activation_funcs[act]
    alpha = spec.def_alpha if cfg["alpha"] is None else cfg["alpha"]
    gain = spec.def_gain if cfg["gain"] is None else cfg["gain"]
    expected = naive_bias_act(x, b, dim, act, alpha, gain, cfg["clamp"])
    y = bias_act.bias_act(x, b, dim=cfg["dim"], act=act, alpha=cfg["alpha"], gain=cfg["gain"], clamp=cfg["clamp"],
                          impl="ref")
    assert y.dtype == torch.float32
    assert_close(y, expected)


def test_bias_act_custom_alpha_changes_lrelu_only_negative_side():
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.5]])
    y = bias_act.bias_act(x, act="lrelu", alpha=0.1, gain=1)
    assert_close(y, np.array([[-0.2, -0.05, 0.0, 1.5]]))
    y = bias_act.bias_act(x, act="lrelu")  # defaults 0.2, sqrt(2)
    assert_close(y, np.array([[-0.4, -0.1, 0.0, 1.5]]) * math.sqrt(2))


def test_bias_act_clamp_bounds_output():
    x = _randn(4, 8, seed=1) * 10
    y = bias_act.bias_act(x, torch.ones(8), act="lrelu", clamp=0.5)
    assert float(y.abs().max()) <= 0.5
    assert torch.equal(bias_act.bias_act(x, clamp=None), x)
    assert torch.equal(bias_act.bias_act(x, clamp=-1), x)


def test_bias_act_wrong_bias_shape_names_both_shapes():
    x = torch.zeros(2, 8, 4, 4)
    with pytest.raises(ValueError) as info:
        bias_act.bias_act(x, torch.zeros(3))
    assert "[8]" in str(info.value) and "[3]" in str(info.value)
    with pytest.raises(ValueError) as info:
        bias_act.bias_act(x, torch.zeros(8, 1))
    assert "[8]" in str(info.value) and "[8, 1]" in str(info.value)
    with pytest.raises(ValueError, match="dim"):
        bias_act.bias_act(x, torch.zeros(8), dim=4)


def test_bias_act_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError) as info:
        bias_act.bias_act(torch.zeros(2, 3), act="gelu")
    message = str(info.value)
    assert "gelu" in message
    for name in ACTS:
        assert name in message
    with pytest.raises(ValueError, match="impl"):
        bias_act.bias_act(torch.zeros(2, 3), impl="triton")


@pytest.mark.parametrize("act", ["linear", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
def test_bias_act_gradcheck_and_gradgradcheck(act):
    x = (_randn(2, 3, 4, seed=3, dtype=torch.float64) * 1.5).requires_grad_()
    b = _randn(3, seed=4, dtype=torch.float64).requires_grad_()
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, alpha=0.3, gain=1.7)
    assert gradcheck(fn, (x, b), fast_mode=True)
    assert gradgradcheck(fn, (x, b), fast_mode=True)


@pytest.mark.parametrize("act", ACTS)
def test_bias_act_kernel_gradient_formula_matches_autograd(act):
    # Mode 1 of the kernel contract (used by the CUDA path's backward) against autograd of the reference.
    x = (_randn(3, 4, 5, seed=11, dtype=torch.float64) * 2).requires_grad_()
    b = _randn(4, seed=12, dtype=torch.float64)
    dy = _randn(3, 4, 5, seed=13, dtype=torch.float64)
    params = bias_act._resolve_params(act, 0.3, 1.3, 0.9)
    params.dim = 1
    y = bias_act._bias_act_ref(x, b, act=act, alpha=0.3, gain=1.3, clamp=0.9)
    (expected,) = torch.autograd.grad(y, x, dy)
    assert_close(bias_act._bias_act_torch_kernel(x.detach(), b, dy, params), expected, atol=1e-10)


@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish"])
def test_bias_act_kernel_function_with_torch_kernel(act):
    # The autograd Function wrapping the CUDA kernel, driven by the PyTorch statement of the kernel.
    calls = []

    def kernel(x, b, dy, params):
        calls.append("fwd" if dy is None else "grad")
        return bias_act._bias_act_torch_kernel(x, b, dy, params)

    params = bias_act._resolve_params(act, 0.25, 1.5, None)
    params.dim = 1
    x = _randn(2, 3, 4, seed=5, dtype=torch.float64).requires_grad_()
    b = _randn(3, seed=6, dtype=torch.float64).requires_grad_()
    fn = lambda x, b: bias_act._BiasActKernelFn.apply(x, b, kernel, params)
    y = fn(x, b)
    y_ref = bias_act._bias_act_ref(x, b, act=act, alpha=0.25, gain=1.5)
    assert_close(y, y_ref, atol=1e-12)
    dy = torch.randn_like(y)
    gx, gb = torch.autograd.grad(y, [x, b], dy)
    gx_ref, gb_ref = torch.autograd.grad(y_ref, [x, b], dy)
    assert_close(gx, gx_ref, atol=1e-12)
    assert_close(gb, gb_ref, atol=1e-12)
    assert calls == ["fwd", "grad"]  # first-order backward goes through the kernel
    assert gradcheck(fn, (x, b), fast_mode=True)
    assert gradgradcheck(fn, (x, b), fast_mode=True)


def test_bias_act_cuda_impl_on_cpu_never_builds(monkeypatch):
    monkeypatch.setenv("GAN_CUDA_KERNELS", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a plugin build was attempted")

    monkeypatch.setattr(custom_ops, "get_plugin", refuse)
    monkeypatch.setattr(custom_ops, "try_get_plugin", refuse)
    x = _randn(2, 3, 4, 4, seed=8)
    b = _randn(3, seed=9)
    assert torch.equal(bias_act.bias_act(x, b, act="lrelu", impl="cuda"), bias_act.bias_act(x, b, act="lrelu",
                                                                                            impl="ref"))
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert torch.equal(upfirdn2d.upsample2d(x, f, impl="cuda"), upfirdn2d.upsample2d(x, f, impl="ref"))
    if not torch.cuda.is_available():
        assert bias_act._get_plugin() is None
        assert upfirdn2d._get_plugin() is None


# ----------------------------------------------------------------------------
# setup_filter


def test_setup_filter_1331_is_outer_product_over_64():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    expected = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    assert_close(f, expected, atol=1e-7)


def test_setup_filter_options():
    assert upfirdn2d.setup_filter(None).tolist() == [[1.0]]
    assert upfirdn2d.setup_filter(2.0).tolist() == [[1.0]]
    long = upfirdn2d.setup_filter(list(range(1, 9)))
    assert long.ndim == 1 and float(long.sum()) == pytest.approx(1.0)  # >= 8 taps stay separable
    forced = upfirdn2d.setup_filter([1, 2, 1], separable=True)
    assert_close(forced, np.array([0.25, 0.5, 0.25]))
    not_sep = upfirdn2d.setup_filter(list(range(1, 9)), separable=False)
    assert not_sep.shape == (8, 8)
    raw = upfirdn2d.setup_filter([1, 2], normalize=False, gain=4)
    assert_close(raw, np.outer([1, 2], [1, 2]) * 4.0)
    raw1d = upfirdn2d.setup_filter([1, 2], normalize=False, gain=4, separable=True)
    assert_close(raw1d, np.array([2.0, 4.0]))  # gain ** (ndim / 2)
    flipped = upfirdn2d.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    assert flipped.tolist() == [[4.0, 3.0], [2.0, 1.0]]
    with pytest.raises(ValueError):
        upfirdn2d.setup_filter(np.zeros([2, 2, 2]))


def test_filter_size_and_parsers():
    assert upfirdn2d._get_filter_size(None) == (1, 1)
    assert upfirdn2d._get_filter_size(torch.zeros(5)) == (5, 5)
    assert upfirdn2d._get_filter_size(torch.zeros(3, 4)) == (4, 3)
    assert upfirdn2d._parse_scaling(2) == (2, 2)
    assert upfirdn2d._parse_scaling([1, 3]) == (1, 3)
    assert upfirdn2d._parse_padding(1) == (1, 1, 1, 1)
    assert upfirdn2d._parse_padding([1, 2]) == (1, 1, 2, 2)
    assert upfirdn2d._parse_padding([1, -2, 3, 0]) == (1, -2, 3, 0)
    for bad in ([1, 2, 3], "x"):
        with pytest.raises(ValueError):
            upfirdn2d._parse_padding(bad)
    for bad in (0, [1], 1.5):
        with pytest.raises(ValueError):
            upfirdn2d._parse_scaling(bad)


# ----------------------------------------------------------------------------
# upfirdn2d


def _filter(kind):
    if kind == "none":
        return None
    if kind == "fir":
        return upfirdn2d.setup_filter([1, 3, 3, 1])
    if kind == "2d":  # non-separable, non-symmetric: catches flips and transposes
        return _randn(3, 4, seed=21)
    if kind == "1d":  # separable, non-symmetric
        return upfirdn2d.setup_filter([1.0, 4.0, 2.0, -1.0, 0.5], separable=True)
    raise AssertionError(kind)


UPFIRDN_CASES = [
    # up, down, padding, filter, flip_filter, gain
    (1, 1, 0, "2d", False, 1),
    (1, 1, [2, 1, 1, 2], "2d", True, 1),
    (2, 1, [2, 1, 2, 1], "fir", False, 4),
    (2, 1, [1, 3, 0, 2], "2d", False, 1),
    (2, 2, [1, 1, 2, 2], "1d", True, 2.5),
    (4, 1, [2, 1, 3, 2], "2d", True, 16),
    (4, 2, [-1, 2, 3, -2], "1d", False, 1),
    (4, 4, 2, "fir", False, 1),
    (1, 2, [1, 1, 1, 1], "fir", False, 1),
    (1, 2, [-1, 2, 0, -1], "2d", False, 0.5),
    (1, 4, [2, 2, 1, 1], "1d", False, 1),
    (2, 4, [-2, 3, 1, -1], "2d", True, 1),
    (1, 1, [-1, -2, 0, -1], "none", False, 3),
    (2, 1, 0, "none", False, 1),
    ([2, 1], [1, 2], [1, 2, 0, 1], "2d", False, 1),
    ([1, 4], [2, 1], [2, 1, -1, 3], "1d", True, 1.5),
]


@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_upfirdn2d_matches_naive_loops(case):
    up, down, padding, kind, flip, gain = UPFIRDN_CASES[case]
    x = _randn(2, 3, 6, 5, seed=case)
    f = _filter(kind)
    expected = naive_upfirdn2d(x, None if f is None else f.numpy(), up, down, padding, flip, gain)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="ref")
    assert_close(y, expected, atol=1e-4)
    upx, upy = parse_factor(up)
    downx, downy = parse_factor(down)
    px0, px1, py0, py1 = parse_pad(padding)
    fw, fh = upfirdn2d._get_filter_size(f)
    assert y.shape[2] == (6 * upy + py0 + py1 - fh) // downy + 1
    assert y.shape[3] == (5 * upx + px0 + px1 - fw) // downx + 1


def test_upfirdn2d_flip_filter_matters_and_half_precision():
    x = _randn(1, 2, 5, 5, seed=2)
    f = _filter("2d")
    a = upfirdn2d.upfirdn2d(x, f, padding=1)
    b = upfirdn2d.upfirdn2d(x, f, padding=1, flip_filter=True)
    assert not torch.allclose(a, b)
    assert_close(upfirdn2d.upfirdn2d(x, f.flip([0, 1]), padding=1, flip_filter=True), a, atol=1e-6)
    y16 = upfirdn2d.upfirdn2d(x.to(torch.bfloat16), f, up=2, padding=2)
    assert y16.dtype == torch.bfloat16
    assert_close(y16.float(), upfirdn2d.upfirdn2d(x, f, up=2, padding=2), atol=0.1, rtol=0.05)


def test_upfirdn2d_bad_inputs():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match="4-D"):
        upfirdn2d.upfirdn2d(torch.zeros(3, 4, 4), f)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 4, 4), f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="empty output"):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 4, 4), f, padding=-1)
    with pytest.raises(ValueError, match="filter"):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 4, 4), torch.zeros(2, 2, 2))
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 4, 4), f, up=0)


@pytest.mark.parametrize("kind", ["fir", "2d", "1d"])
def test_filter2d_upsample2d_downsample2d(kind):
    f = _filter(kind)
    fw, fh = upfirdn2d._get_filter_size(f)
    fn = f.numpy()
    x = _randn(2, 3, 8, 6, seed=31)

    y = upfirdn2d.filter2d(x, f, gain=2)
    assert y.shape == x.shape
    pad = [fw // 2, (fw - 1) // 2, fh // 2, (fh - 1) // 2]
    assert_close(y, naive_upfirdn2d(x, fn, padding=pad, gain=2), atol=1e-4)

    y = upfirdn2d.upsample2d(x, f, padding=[1, 0, 0, 1])
    assert y.shape == (2, 3, 8 * 2 + 1, 6 * 2 + 1)
    pad = [1 + (fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, 1 + (fh - 2) // 2]
    assert_close(y, naive_upfirdn2d(x, fn, up=2, padding=pad, gain=4), atol=1e-4)

    y = upfirdn2d.downsample2d(x, f, flip_filter=True)
    assert y.shape == (2, 3, 4, 3)
    pad = [(fw - 1) // 2, (fw - 2) // 2, (fh - 1) // 2, (fh - 2) // 2]
    assert_close(y, naive_upfirdn2d(x, fn, down=2, padding=pad, flip_filter=True), atol=1e-4)

    y = upfirdn2d.upsample2d(x, f, up=4)
    assert y.shape == (2, 3, 32, 24)


def test_resampling_preserves_constant_images():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 3.0)
    up = upfirdn2d.upsample2d(x, f)
    assert_close(up[:, :, 2:-2, 2:-2], np.full([1, 2, 12, 12], 3.0), atol=1e-5)
    down = upfirdn2d.downsample2d(x, f)
    assert_close(down[:, :, 1:-1, 1:-1], np.full([1, 2, 2, 2], 3.0), atol=1e-5)


@pytest.mark.parametrize("case", [(2, 2, [1, 2, 0, 1], "2d", False), (1, 2, [1, 1, 2, 1], "1d", True),
                                  (2, 1, [2, 1, -1, 2], "fir", False)])
def test_upfirdn2d_gradcheck_and_gradgradcheck(case):
    up, down, padding, kind, flip = case
    f = _filter(kind)
    x = _randn(1, 2, 4, 3, seed=41, dtype=torch.float64).requires_grad_()
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=1.5)
    assert gradcheck(fn, (x,), fast_mode=True)
    assert gradgradcheck(fn, (x,), fast_mode=True)




@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_upfirdn2d_kernel_function_with_torch_kernel(case):
    # The autograd Function wrapping the CUDA kernel (backward = transposed upfirdn2d through the same
    # Function), driven by the PyTorch statement of the kernel contract.
    up, down, padding, kind, flip, gain = UPFIRDN_CASES[case]
    f = _filter(kind)
    x = _randn(2, 2, 6, 5, seed=case + 50, dtype=torch.float64).requires_grad_()
    fn = lambda x: upfirdn2d._upfirdn2d_kernel_path(x, f, up, down, padding, flip, gain, upfirdn2d._torch_kernel)
    y = fn(x)
    y_ref = upfirdn2d._upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    assert_close(y, y_ref, atol=1e-12)
    dy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, dy)
    (gx_ref,) = torch.autograd.grad(y_ref, x, dy)
    assert_close(gx, gx_ref, atol=1e-12)
    if case in (2, 4, 9):
        small = x.detach()[:1, :1].clone().requires_grad_()
        assert gradcheck(fn, (small,), fast_mode=True)
        assert gradgradcheck(fn, (small,), fast_mode=True)


# ----------------------------------------------------------------------------
# conv2d_resample


def naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """Spec composition: pad/up with upfirdn2d loops, F.conv2d, then filter + decimate with loops."""
    px0, px1, py0, py1 = parse_pad(padding)
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    fn = None if f is None else f.numpy()
    h = naive_upfirdn2d(x, fn if up > 1 else None, up=up, padding=[px0, px1, py0, py1], flip_filter=flip_filter,
                        gain=up**2)
    wd = w.double() if flip_weight else w.double().flip([2, 3])
    h = F.conv2d(torch.from_numpy(h), wd, groups=groups).numpy()
    if down > 1:
        h = naive_upfirdn2d(h, fn, down=down, flip_filter=flip_filter)
    return h


RESAMPLE_CASES = []
for _i, (_up, _down) in enumerate([(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (1, 4)]):
    for _k in (1, 3):
        for _groups in (1, 2):
            _j = len(RESAMPLE_CASES)
            _pad = [0, 1, [1, 0, 2, 1], [-1, 1, 0, 2]][_j % 4]
            RESAMPLE_CASES.append((_up, _down, _k, _groups, _pad, _j % 3 != 0, _j % 5 == 0, ["fir", "1d"][_j % 2]))


@pytest.mark.parametrize("case", range(len(RESAMPLE_CASES)))
def test_conv2d_resample_matches_composition(case):
    up, down, k, groups, padding, flip_weight, flip_filter, kind = RESAMPLE_CASES[case]
    x = _randn(2, 4, 8, 7, seed=case)
    w = _randn(6, 4 // groups, k, k, seed=case + 100)
    f = _filter(kind)
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                        flip_weight=flip_weight, flip_filter=flip_filter)
    expected = naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
    assert_close(y, expected, atol=2e-4)
    # Flipping the weight must matter for asymmetric kernels.
    if k == 3:
        other = naive_conv2d_resample(x, w, f, up, down, padding, groups, not flip_weight, flip_filter)
        assert np.abs(other - expected).max() > 1e-3


def test_conv2d_resample_networks_usage():
    # The way the official networks call it: 3x3 up conv with flip_weight=False, 1x1 down skip, grouped modconv.
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = _randn(2, 6, 8, 8, seed=60)
    w = _randn(3, 6, 3, 3, seed=61)
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False)
    assert y.shape == (2, 3, 16, 16)
    assert_close(y, naive_conv2d_resample(x, w, f, 2, 1, 1, 1, False, False), atol=2e-4)
    wg = _randn(6, 6, 3, 3, seed=62)
    y = conv2d_resample.conv2d_resample(x.reshape(1, 12, 8, 8), wg, f=f, up=2, padding=1, groups=2, flip_weight=False)
    assert y.shape == (1, 6, 16, 16)
    assert_close(y, naive_conv2d_resample(x.reshape(1, 12, 8, 8), wg, f, 2, 1, 1, 2, False, False), atol=2e-4)
    ws = _randn(5, 6, 1, 1, seed=63)
    y = conv2d_resample.conv2d_resample(x, ws, f=f, down=2)
    assert y.shape == (2, 5, 4, 4)
    assert_close(y, naive_conv2d_resample(x, ws, f, 1, 2, 0, 1, True, False), atol=2e-4)


def test_conv2d_resample_bad_inputs():
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="channel"):
        conv2d_resample.conv2d_resample(x, torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="dtype"):
        conv2d_resample.conv2d_resample(x, torch.zeros(2, 4, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="up"):
        conv2d_resample.conv2d_resample(x, torch.zeros(2, 4, 3, 3), up=0)


@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
@pytest.mark.parametrize("gradfix", [False, True])
def test_conv2d_resample_gradcheck_and_gradgradcheck(up, down, gradfix, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", gradfix)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    x = _randn(1, 2, 4, 4, seed=70, dtype=torch.float64).requires_grad_()
    w = _randn(2, 2, 3, 3, seed=71, dtype=torch.float64).requires_grad_()
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f.float(), up=up, down=down, padding=1,
                                                      flip_weight=(up == 1))
    assert gradcheck(fn, (x, w), fast_mode=True)
    assert gradgradcheck(fn, (x, w), fast_mode=True)


# ----------------------------------------------------------------------------
# fma


def test_fma_values_and_broadcast_gradients():
    a = _randn(2, 1, 3, seed=80, dtype=torch.float64).requires_grad_()
    b = _randn(1, 4, 1, seed=81, dtype=torch.float64).requires_grad_()
    c = _randn(3, seed=82, dtype=torch.float64).requires_grad_()
    y = fma.fma(a, b, c)
    assert y.shape == (2, 4, 3)
    assert_close(y, (a.detach().numpy() * b.detach().numpy() + c.detach().numpy()), atol=1e-12)
    gy = _randn(2, 4, 3, seed=83, dtype=torch.float64)
    ga, gb, gc = torch.autograd.grad(y, [a, b, c], gy)
    assert ga.shape == a.shape and gb.shape == b.shape and gc.shape == c.shape
    assert_close(gc, gy.sum([0, 1]), atol=1e-12)
    assert_close(ga, (gy * b.detach()).sum(1, keepdim=True), atol=1e-12)
    assert gradcheck(fma.fma, (a, b, c), fast_mode=True)
    assert gradgradcheck(fma.fma, (a, b, c), fast_mode=True)
    assert fma.fma(2.0, torch.ones(2), 1.0).tolist() == [3.0, 3.0]


# ----------------------------------------------------------------------------
# conv2d_gradfix


CONV_CASES = [
    dict(stride=1, padding=1, dilation=1, groups=1, output_padding=0),
    dict(stride=2, padding=1, dilation=1, groups=2, output_padding=1),
    dict(stride=2, padding=0, dilation=2, groups=1, output_padding=1),
    dict(stride=[2, 1], padding=[0, 2], dilation=1, groups=1, output_padding=[1, 0]),
]


def _conv_operands(transpose, cfg, dtype, seed):
    x = _randn(2, 4, 7, 6, seed=seed, dtype=dtype).requires_grad_()
    if transpose:
        w = _randn(4, 6 // cfg["groups"], 3, 3, seed=seed + 1, dtype=dtype).requires_grad_()
    else:
        w = _randn(6, 4 // cfg["groups"], 3, 3, seed=seed + 1, dtype=dtype).requires_grad_()
    b = _randn(6, seed=seed + 2, dtype=dtype).requires_grad_()
    return x, w, b


def _conv_fns(transpose, cfg):
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    if transpose:
        ours = lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, output_padding=cfg["output_padding"], **kw)
        ref = lambda x, w, b: F.conv_transpose2d(x, w, b, output_padding=cfg["output_padding"], **kw)
    else:
        ours = lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, **kw)
        ref = lambda x, w, b: F.conv2d(x, w, b, **kw)
    return ours, ref


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("cfg", range(len(CONV_CASES)))
def test_conv2d_gradfix_matches_torch(transpose, cfg, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    cfg = CONV_CASES[cfg]
    x, w, b = _conv_operands(transpose, cfg, torch.float32, seed=90 + cfg["groups"])
    ours, ref = _conv_fns(transpose, cfg)
    y, y_ref = ours(x, w, b), ref(x, w, b)
    assert y.grad_fn is not None and "Conv2dFunction" in type(y.grad_fn).__name__
    assert_close(y, y_ref, atol=1e-5)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, w, b], gy)
    grads_ref = torch.autograd.grad(y_ref, [x, w, b], gy)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref, atol=1e-4)


@pytest.mark.parametrize("transpose", [False, True])
def test_conv2d_gradfix_gradcheck_and_gradgradcheck(transpose, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    cfg = CONV_CASES[1]
    x = _randn(1, 4, 4, 3, seed=95, dtype=torch.float64).requires_grad_()
    w_shape = [4, 3, 3, 3] if transpose else [6, 2, 3, 3]
    w = _randn(*w_shape, seed=96, dtype=torch.float64).requires_grad_()
    b = _randn(6, seed=97, dtype=torch.float64).requires_grad_()
    ours, _ = _conv_fns(transpose, cfg)
    assert gradcheck(ours, (x, w, b), fast_mode=True)
    assert gradgradcheck(ours, (x, w, b), fast_mode=True)


def test_conv2d_gradfix_disabled_is_plain_torch(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", False)
    x = _randn(1, 2, 5, 5, seed=98).requires_grad_()
    w = _randn(3, 2, 3, 3, seed=99).requires_grad_()
    y = conv2d_gradfix.conv2d(x, w, padding=1)
    assert "Conv2dFunction" not in type(y.grad_fn).__name__
    assert torch.equal(y, F.conv2d(x, w, padding=1))


@pytest.mark.parametrize("transpose", [False, True])
def test_no_weight_gradients_skips_weight_grad(transpose, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    weight_grad_calls = []
    original = conv2d_gradfix._ConvParams.weight_grad

    def counting(self, *args):
        weight_grad_calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(conv2d_gradfix._ConvParams, "weight_grad", counting)
    cfg = CONV_CASES[1]
    x, w, b = _conv_operands(transpose, cfg, torch.float32, seed=100)
    ours, ref = _conv_fns(transpose, cfg)

    y = ours(x, w, b)  # forward outside the context (as in the training loop)
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled
        y.square().sum().backward()
    assert not conv2d_gradfix.weight_gradients_disabled
    assert w.grad is None and weight_grad_calls == []
    y_ref = ref(x, w, b)
    (gx_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    assert_close(x.grad, gx_ref, atol=1e-4)
    assert b.grad is not None

    # Outside the context the weight gradient is back.
    x.grad = None
    ours(x, w, b).square().sum().backward()
    (gw_ref,) = torch.autograd.grad(ref(x, w, b).square().sum(), w)
    assert_close(w.grad, gw_ref, atol=1e-4)
    assert weight_grad_calls == [1]


@pytest.mark.parametrize("transpose", [False, True])
def test_no_weight_gradients_keeps_second_order_weight_gradient(transpose, monkeypatch):
    # R1 pattern: input gradient under no_weight_gradients(), then the penalty's gradient w.r.t. the weight.
    monkeypatch.setattr(conv2d_gradfix, "enabled", True)
    cfg = CONV_CASES[1]
    x, w, b = _conv_operands(transpose, cfg, torch.float64, seed=110)
    ours, ref = _conv_fns(transpose, cfg)

    def penalty(fn):
        y = torch.tanh(fn(x, w, b))
        with conv2d_gradfix.no_weight_gradients():
            (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return gx.square().sum()

    (gw,) = torch.autograd.grad(penalty(ours), w)
    (gw_ref,) = torch.autograd.grad(penalty(ref), w)
    assert float(gw_ref.abs().max()) > 0
    assert_close(gw, gw_ref, atol=1e-10)


def test_no_weight_gradients_context_flags(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, "enabled", False)
    x = _randn(1, 2, 5, 5, seed=120).requires_grad_()
    w = _randn(3, 2, 3, 3, seed=121).requires_grad_()
    with conv2d_gradfix.no_weight_gradients(disable=False):
        assert not conv2d_gradfix.weight_gradients_disabled
    with conv2d_gradfix.no_weight_gradients():
        with conv2d_gradfix.no_weight_gradients():
            pass
        assert conv2d_gradfix.weight_gradients_disabled
        y = conv2d_gradfix.conv2d(x, w, padding=1)  # forward inside the context also uses the custom op
        y.sum().backward()
    assert not conv2d_gradfix.weight_gradients_disabled
    assert w.grad is None
    (gx_ref,) = torch.autograd.grad(F.conv2d(x, w, padding=1).sum(), x)
    assert_close(x.grad, gx_ref, atol=1e-5)
    with pytest.raises(RuntimeError):
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError("boom")
    assert not conv2d_gradfix.weight_gradients_disabled


# ----------------------------------------------------------------------------
# grid_sample_gradfix


def test_grid_sample_matches_torch_and_double_backward():
    x = _randn(2, 3, 5, 4, seed=130, dtype=torch.float64).requires_grad_()
    grid = (torch.rand(2, 3, 6, 2, generator=_gen(131), dtype=torch.float64) * 2.2 - 1.1).requires_grad_()
    y = grid_sample_gradfix.grid_sample(x, grid)
    assert torch.equal(y, F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    assert gradcheck(grid_sample_gradfix.grid_sample, (x, grid), fast_mode=True)
    assert gradgradcheck(grid_sample_gradfix.grid_sample, (x, grid), fast_mode=True)

    # d(grad_input)/d(grad_output) applied to v equals grid_sample(v, grid).
    g = torch.randn_like(y).requires_grad_()
    (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
    v = torch.randn_like(x)
    (dg,) = torch.autograd.grad((gx * v).sum(), g)
    assert_close(dg, F.grid_sample(v, grid.detach(), align_corners=False), atol=1e-10)
    with pytest.raises(ValueError):
        grid_sample_gradfix.grid_sample(x, grid[..., :1])


# ----------------------------------------------------------------------------
# CUDA kernels (opt-in with GAN_CUDA_KERNELS=1); compared against the reference implementation.

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="session")
def plugin_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("plugin_cache")  # one build per test session, never in ~/.cache


@pytest.fixture
def cuda_kernels(monkeypatch, plugin_cache_dir):
    monkeypatch.setenv("GAN_CUDA_KERNELS", "1")
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(plugin_cache_dir))
    monkeypatch.setattr(dnnlib.util, "_dnnlib_cache_dir", None)
    return plugin_cache_dir


@pytest.mark.cuda
@needs_cuda
def test_cuda_default_is_reference_without_opt_in(monkeypatch):
    monkeypatch.delenv("GAN_CUDA_KERNELS", raising=False)
    x = _randn(2, 3, 4, 4, seed=139).cuda().requires_grad_()
    y = bias_act.bias_act(x, act="lrelu")
    assert "BiasActKernelFn" not in type(y.grad_fn).__name__
    y = upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1], device=x.device))
    assert "Upfirdn2dKernelFn" not in type(y.grad_fn).__name__


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_bias_act_matches_reference(cuda_kernels, dtype):
    plugin = custom_ops.get_plugin("bias_act_plugin", sources=["bias_act.cpp", "bias_act.cu"],
                                   headers=["bias_act.h"], source_dir=os.path.dirname(bias_act.__file__))
    assert bias_act._get_plugin() is plugin
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for act in ACTS:
        for clamp in (None, 0.5):
            x = (_randn(3, 5, 4, 6, seed=140) * 2).cuda().to(dtype).requires_grad_()
            b = _randn(5, seed=141).cuda().to(dtype).requires_grad_()
            y = bias_act.bias_act(x, b, act=act, alpha=0.3, clamp=clamp, impl="cuda")
            y_ref = bias_act.bias_act(x.float(), b.float(), act=act, alpha=0.3, clamp=clamp, impl="ref")
            assert "BiasActKernelFn" in type(y.grad_fn).__name__
            assert_close(y.float(), y_ref, atol=tol, rtol=tol)
            dy = torch.randn_like(y)
            gx, gb = torch.autograd.grad(y, [x, b], dy)
            gx_ref, gb_ref = torch.autograd.grad(y_ref, [x, b], dy.float())
            assert_close(gx.float(), gx_ref, atol=tol, rtol=tol)
            assert_close(gb.float(), gb_ref, atol=tol * 20, rtol=tol)


@pytest.mark.cuda
@needs_cuda
def test_cuda_bias_act_double_backward(cuda_kernels):
    x = _randn(2, 3, 4, seed=142, dtype=torch.float64).cuda().requires_grad_()
    b = _randn(3, seed=143, dtype=torch.float64).cuda().requires_grad_()
    for act in ("lrelu", "tanh", "swish"):
        fn = lambda x, b, act=act: bias_act.bias_act(x, b, act=act, impl="cuda")
        assert gradcheck(fn, (x, b), fast_mode=True)
        assert gradgradcheck(fn, (x, b), fast_mode=True)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_cuda_upfirdn2d_matches_reference(cuda_kernels, case):
    up, down, padding, kind, flip, gain = UPFIRDN_CASES[case]
    f = _filter(kind)
    f = None if f is None else f.cuda()
    x = _randn(2, 3, 6, 5, seed=case).cuda().requires_grad_()
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="cuda")
    y_ref = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="ref")
    assert "Upfirdn2dKernelFn" in type(y.grad_fn).__name__
    assert_close(y, y_ref, atol=1e-4)
    dy = torch.randn_like(y)
    assert_close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(y_ref, x, dy)[0], atol=1e-4)


@pytest.mark.cuda
@needs_cuda
def test_cuda_upfirdn2d_double_backward_and_resample(cuda_kernels):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=torch.device("cuda"))
    x = _randn(1, 2, 4, 4, seed=150, dtype=torch.float64).cuda().requires_grad_()
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=2, down=2, padding=[2, 1, 1, 2], impl="cuda")
    assert gradcheck(fn, (x,), fast_mode=True)
    assert gradgradcheck(fn, (x,), fast_mode=True)
    xs = _randn(2, 4, 8, 8, seed=151).cuda()
    w = _randn(6, 4, 3, 3, seed=152).cuda()
    y = conv2d_resample.conv2d_resample(xs, w, f=f, up=2, padding=1, flip_weight=False)
    expected = naive_conv2d_resample(xs.cpu(), w.cpu(), f.cpu(), 2, 1, 1, 1, False, False)
    assert_close(y, expected, atol=2e-4)
