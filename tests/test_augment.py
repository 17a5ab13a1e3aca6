"""Tests for training/augment.py: AugmentPipe (ADA operations) and AdaController (p update)."""

import ast
import inspect
import pickle

import numpy as np
import pytest
import torch

from training import augment
from training.augment import AdaController, AugmentPipe, augpipe_specs

ALL_OPS = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness', 'contrast', 'lumaflip',
           'hue', 'saturation', 'imgfilter', 'noise', 'cutout']
GEOM_OPS = ['scale', 'rotate', 'aniso', 'xfrac']


def _images(batch=4, channels=3, size=32, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn([batch, channels, size, size], generator=gen, dtype=dtype)


def _pipe(p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe


# ----------------------------------------------------------------------------
# Construction, buffers, presets, pickling.


def test_constructor_matches_upstream_signature():
    params = inspect.signature(AugmentPipe.__bases__[0].__init__).parameters  # The class under the persistence wrapper.
    expected = dict(xflip=0, rotate90=0, xint=0, scale=0, rotate=0, aniso=0, xfrac=0, brightness=0, contrast=0,
                    lumaflip=0, hue=0, saturation=0, imgfilter=0, noise=0, cutout=0, xint_max=0.125, scale_std=0.2,
                    rotate_max=1, aniso_std=0.2, xfrac_std=0.125, brightness_std=0.2, contrast_std=0.5, hue_max=1,
                    saturation_std=1, imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1, noise_std=0.1, cutout_size=0.5)
    assert list(params)[1:] == list(expected)
    for name, default in expected.items():
        assert params[name].default == default, name


def test_buffers_and_attributes():
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])
    buffers = dict(pipe.named_buffers())
    assert sorted(buffers) == ['Hz_fbank', 'Hz_geom', 'p']
    assert pipe.p.shape == () and float(pipe.p) == 1.0
    # sym6: 12 taps, normalized to unit DC gain, orthogonal to its even shifts.
    h = pipe.Hz_geom.double()
    assert h.shape == (12,)
    assert float(h.sum()) == pytest.approx(1.0, abs=1e-6)
    h2 = h * np.sqrt(2)
    for shift in range(1, 6):
        assert float((h2[:12 - 2 * shift] * h2[2 * shift:]).sum()) == pytest.approx(0.0, abs=1e-6)
    # Filter bank: 4 zero-phase octave bands that add up to a unit impulse.
    bank = pipe.Hz_fbank.double()
    assert bank.shape == (4, 43)
    assert torch.allclose(bank, bank.flip(1), atol=1e-7)
    total = bank.sum(dim=0)
    impulse = torch.zeros(43, dtype=torch.float64)
    impulse[21] = 1
    assert torch.allclose(total, impulse, atol=1e-6)
    # Upstream attribute names and types.
    for name in ALL_OPS:
        assert getattr(pipe, name) == 1.0
    assert pipe.imgfilter_bands == [1, 1, 1, 1] and isinstance(pipe.xint_max, float)


def test_presets_are_unions():
    assert augpipe_specs['blit'] == dict(xflip=1, rotate90=1, xint=1)
    assert augpipe_specs['geom'] == dict(scale=1, rotate=1, aniso=1, xfrac=1)
    assert augpipe_specs['color'] == dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    assert augpipe_specs['filter'] == dict(imgfilter=1)
    assert augpipe_specs['noise'] == dict(noise=1)
    assert augpipe_specs['cutout'] == dict(cutout=1)
    parts = dict(b='blit', g='geom', c='color', f='filter', n='noise')
    for name in ['bg', 'bgc', 'bgcf', 'bgcfn']:
        union = {}
        for letter in name:
            union.update(augpipe_specs[parts[letter]])
        assert augpipe_specs[name] == union, name
    assert augpipe_specs['bgcfnc'] == dict(augpipe_specs['bgcfn'], cutout=1)


def test_pickle_round_trip_keeps_buffers_and_behaviour():
    pipe = _pipe(0.37, **augpipe_specs['bgcf'])
    loaded = pickle.loads(pickle.dumps(pipe))
    assert type(loaded).__name__ == 'AugmentPipe'
    assert loaded.init_kwargs == augpipe_specs['bgcf']
    for name, buf in pipe.named_buffers():
        assert torch.equal(dict(loaded.named_buffers())[name], buf), name
    assert float(loaded.p) == pytest.approx(0.37)
    x = _images(batch=2)
    assert torch.equal(loaded(x, debug_percentile=0.3), pipe(x, debug_percentile=0.3))


def test_source_parses_as_python37():
    # The module source is embedded in pickles and executed by upstream (Python >= 3.7).
    src = inspect.getsource(augment)
    ast.parse(src, feature_version=(3, 7))


# ----------------------------------------------------------------------------
# Identity and per-op behaviour.


@pytest.mark.parametrize('channels', [1, 3])
def test_p_zero_is_exact_identity(channels):
    pipe = _pipe(0.0, **augpipe_specs['bgcfnc'])
    x = _images(channels=channels)
    y = pipe(x)
    assert y.dtype == x.dtype and torch.equal(y, x)


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('op', ALL_OPS)
def test_each_op_changes_images(op, channels):
    x = _images(batch=8, channels=channels)
    pipe = _pipe(1.0, **{op: 1})
    torch.manual_seed(1)
    outputs = [pipe(x), pipe(x, debug_percentile=0.8)]
    for y in outputs:
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()
    if channels == 1 and op in ('hue', 'saturation'):
        # Documented: hue and saturation leave gray images unchanged.
        assert all(torch.equal(y, x) for y in outputs)
    else:
        assert all(not torch.equal(y, x) for y in outputs)


def test_xflip_debug_equals_flip():
    x = _images()
    pipe = _pipe(1.0, xflip=1)
    assert torch.equal(pipe(x, debug_percentile=0.75), torch.flip(x, dims=[3]))
    assert torch.equal(pipe(x, debug_percentile=0.25), x)


def test_rotate90_debug_equals_rot90():
    x = _images()
    pipe = _pipe(1.0, rotate90=1)
    for quarter in range(4):
        y = pipe(x, debug_percentile=(quarter + 0.5) / 4)
        assert torch.equal(y, torch.rot90(x, k=quarter, dims=[2, 3])), quarter


def test_xint_is_exact_integer_shift_with_reflection():
    x = _images(size=32)
    pipe = _pipe(1.0, xint=1, xint_max=0.125)
    y = pipe(x, debug_percentile=1.0)  # t = +0.125 * 32 = 4 pixels right and down.
    assert torch.equal(y[:, :, 4:, 4:], x[:, :, :-4, :-4])
    assert torch.equal(y[:, :, 4:, :4], x[:, :, :-4, 1:5].flip(3))  # Mirrored about the edge column.


def _pattern(rows, cols, size=32):
    """Smooth analytic test image evaluated at arbitrary (row, col) pixel positions."""
    w = 2 * np.pi / size
    return torch.sin(w * cols + 0.3) * torch.cos(2 * w * rows) + 0.5 * torch.sin(w * (rows - 2 * cols))


def _pattern_image(size=32):
    idx = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(idx, idx, indexing='ij')
    return _pattern(rows, cols, size)[None, None].repeat([2, 3, 1, 1])


def test_geometric_resampling_identity_and_integer_shift():
    x = _pattern_image()
    pipe = _pipe(1.0, xfrac=1)
    eye = torch.eye(3).unsqueeze(0).repeat([x.shape[0], 1, 1])
    # The resampling chain (pad, sym6 up, sample, sym6 down) reconstructs the input for identity transforms.
    assert torch.allclose(pipe._resample(x, eye), x, atol=1e-5)
    # xfrac chosen so that the shift is exactly 2 pixels right and down: a pure, sharp translation.
    d = 0.9
    pipe.xfrac_std = 2 / (32 * float(torch.erfinv(torch.tensor(2 * d - 1))))
    y = pipe(x, debug_percentile=d)
    assert torch.allclose(y[:, :, 2:, 2:], x[:, :, :-2, :-2], atol=1e-4)


def test_geometric_rotation_and_scale_directions():
    x = _pattern_image()
    # rotate_max=0.25 and debug_percentile=1 rotate by pi/4 twice: a quarter turn, done by resampling.
    # (The sym6 filter is not symmetric, so resampled quarter turns carry a ~0.05 px shift, as upstream's.)
    y = _pipe(1.0, rotate=1, rotate_max=0.25)(x, debug_percentile=1.0)
    errors = [float((y - torch.rot90(x, k=k, dims=[2, 3]))[:, :, 4:-4, 4:-4].abs().max()) for k in (1, 3)]
    assert errors[0] < 0.05 and errors[1] > 0.5, errors
    # Isotropic scale by 2 about the image center: output pixel o shows input position c + (o - c) / 2.
    d = 0.9
    pipe = _pipe(1.0, scale=1, scale_std=1 / float(torch.erfinv(torch.tensor(2 * d - 1))))
    y = pipe(x, debug_percentile=d)
    idx = (torch.arange(32, dtype=torch.float32) - 15.5) / 2 + 15.5
    rows, cols = torch.meshgrid(idx, idx, indexing='ij')
    expected = _pattern(rows, cols)
    assert float((y[0, 0] - expected).abs().max()) < 0.02


def test_unselected_samples_pass_through_exactly():
    pipe = _pipe(0.1, **augpipe_specs['bgcf'])
    x = _images(batch=32)
    torch.manual_seed(3)
    y = pipe(x)
    same = [torch.equal(y[i], x[i]) for i in range(32)]
    assert any(same) and not all(same)


def test_color_ops():
    x = _images(channels=3)
    gray3 = _images(channels=1).repeat([1, 3, 1, 1])
    b = float(torch.erfinv(torch.tensor(0.6)) * 0.2)
    assert torch.allclose(_pipe(brightness=1)(x, debug_percentile=0.8), x + b, atol=1e-6)
    c = float(torch.exp2(torch.erfinv(torch.tensor(0.6)) * 0.5))
    assert torch.allclose(_pipe(contrast=1)(x, debug_percentile=0.8), x * c, atol=1e-5)
    # Luma flip negates the luma component and keeps the chroma.
    y = _pipe(lumaflip=1)(x, debug_percentile=0.9)
    assert torch.allclose(y.mean(dim=1), -x.mean(dim=1), atol=1e-5)
    assert torch.allclose(y - y.mean(dim=1, keepdim=True), x - x.mean(dim=1, keepdim=True), atol=1e-5)
    # Hue rotation and saturation keep gray pixels and the per-pixel luma.
    for op in ('hue', 'saturation'):
        assert torch.allclose(_pipe(**{op: 1})(gray3, debug_percentile=0.9), gray3, atol=1e-5), op
        assert torch.allclose(_pipe(**{op: 1})(x, debug_percentile=0.9).mean(dim=1), x.mean(dim=1), atol=1e-5), op
    # One channel: treated as (g, g, g): lumaflip negates, brightness adds.
    g = _images(channels=1)
    assert torch.allclose(_pipe(lumaflip=1)(g, debug_percentile=0.9), -g, atol=1e-5)
    assert torch.allclose(_pipe(brightness=1)(g, debug_percentile=0.8), g + b, atol=1e-6)
    with pytest.raises(ValueError):
        _pipe(brightness=1)(_images(channels=2))


def test_cutout_and_noise_debug():
    x = torch.ones([2, 3, 16, 16])
    y = _pipe(cutout=1)(x, debug_percentile=0.5)  # Centered 8x8 hole.
    assert float(y.sum()) == 2 * 3 * (256 - 64)
    assert float(y[:, :, 4:12, 4:12].abs().sum()) == 0
    z = _pipe(noise=1)(torch.zeros([2, 3, 64, 64]), debug_percentile=0.5)
    expected_std = float(torch.erfinv(torch.tensor(0.5)) * 0.1)
    assert float(z.std()) == pytest.approx(expected_std, rel=0.05)


def test_small_images_and_float64():
    pipe = _pipe(1.0, **augpipe_specs['bgcfnc'])
    for size in (4, 8):
        x = _images(batch=3, size=size)
        y = pipe(x, debug_percentile=0.7)
        assert y.shape == x.shape and torch.isfinite(y).all()
    x64 = _images(batch=2, size=16, dtype=torch.float64)
    y64 = pipe(x64)
    assert y64.dtype == torch.float64 and torch.isfinite(y64).all()


# ----------------------------------------------------------------------------
# Differentiability (R1 takes the gradient of a gradient through the pipeline).


@pytest.mark.parametrize('spec', ['bgcfnc', 'geom'])
def test_double_backward_through_pipeline(spec):
    pipe = _pipe(0.6, **augpipe_specs[spec])  # Some samples augmented, some passed through.
    x = _images(batch=6, channels=3, size=16).requires_grad_(True)
    torch.manual_seed(0)
    y = pipe(x)
    weights = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * weights).square().sum(), x, create_graph=True)
    assert grad.requires_grad and torch.isfinite(grad).all() and grad.abs().sum() > 0
    grad.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradcheck_and_gradgradcheck_geometric():
    # Exact Jacobians (first and second order) of the resampling path, on a tiny image.
    pipe = _pipe(1.0, **augpipe_specs['geom'])
    x = torch.randn([1, 1, 4, 4], dtype=torch.float64, requires_grad=True)
    fn = lambda inp: pipe(inp, debug_percentile=0.3)
    assert torch.autograd.gradcheck(fn, (x,), atol=1e-6)
    assert torch.autograd.gradgradcheck(fn, (x,), atol=1e-6)


def test_gradcheck_and_gradgradcheck_deterministic_ops():
    # All ops that are deterministic under debug_percentile (random projections: fast_mode).
    pipe = _pipe(1.0, **augpipe_specs['bgcf'], cutout=1)
    x = torch.randn([2, 3, 6, 6], dtype=torch.float64, requires_grad=True)
    fn = lambda inp: pipe(inp, debug_percentile=0.3)
    assert torch.autograd.gradcheck(fn, (x,), atol=1e-6, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), atol=1e-6, fast_mode=True)


# ----------------------------------------------------------------------------
# AdaController.


def test_ada_controller_steps():
    pipe = _pipe(0.0)
    ada = AdaController(pipe, target=0.6, ada_kimg=100, interval=4, batch_size=32)
    step = 32 * 4 / (100 * 1000)
    assert ada.step == pytest.approx(step)
    expected = 0.0
    for _ in range(5):
        for _ in range(4):
            ada.accumulate(torch.full([32, 1], 2.5))
        assert ada.update() == 1.0
        expected += step
        assert float(pipe.p) == pytest.approx(expected, rel=1e-5)
    # Negative signs (r = -1 < target) lower p, never below 0.
    for _ in range(8):
        ada.accumulate(-torch.ones([32, 1]))
        assert ada.update() == -1.0
        expected = max(expected - step, 0.0)
        assert float(pipe.p) == pytest.approx(expected, abs=1e-7)
    assert float(pipe.p) == 0.0
    # r equal to the target leaves p unchanged; an update without logits returns None and does nothing.
    ada.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0]))  # r = 0.6
    assert ada.update() == pytest.approx(0.6) and float(pipe.p) == 0.0
    assert ada.update() is None and float(pipe.p) == 0.0


def test_ada_controller_exceeds_one():
    pipe = _pipe(0.98)
    ada = AdaController(pipe, target=0.6, ada_kimg=1, interval=4, batch_size=8)  # step 0.032
    for _ in range(3):
        ada.accumulate(torch.ones([8]))
        ada.update()
    assert float(pipe.p) == pytest.approx(0.98 + 3 * 0.032, rel=1e-6) and float(pipe.p) > 1.0


def test_ada_controller_state_round_trip_and_reduce_fn():
    pipe = _pipe(0.25)
    calls = []

    def reduce_fn(t):
        calls.append(t.clone())
        return t * 2  # Pretend a second process saw identical numbers.

    ada = AdaController(pipe, batch_size=16, reduce_fn=reduce_fn)
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0]))
    state = ada.state_dict()  # The totals of all processes (each holds only its share until the next update).
    assert state['sign_sum'] == 2.0 and state['count'] == 6 and state['p'] == 0.25

    pipe2 = _pipe(0.0)
    ada2 = AdaController(pipe2, batch_size=16, reduce_fn=reduce_fn, rank=0)  # Rank 0 carries the totals on...
    ada2.load_state_dict(state)
    assert float(pipe2.p) == 0.25
    other = AdaController(_pipe(0.0), batch_size=16, reduce_fn=reduce_fn, rank=1)  # ...the others start at zero.
    other.load_state_dict(state)
    assert other.state_dict()['count'] == 0
    ada2.accumulate(torch.tensor([1.0]))
    r = ada2.update()
    assert r == pytest.approx(6 / 14)  # (2 + 1) / (6 + 1), doubled on both sides.
    assert torch.equal(calls[-1], torch.tensor([3.0, 7.0]))
    assert float(pipe2.p) == pytest.approx(0.25 - 16 * 4 / 500000)
    assert ada2.state_dict()['count'] == 0 and ada2.last_r == pytest.approx(6 / 14)
    with pytest.raises(TypeError):
        AdaController(pipe)
