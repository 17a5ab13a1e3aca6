"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the augmentation pipeline and its p controller.

`AugmentPipe` keeps the constructor, attribute names and buffers (`p`, `Hz_geom`, `Hz_fbank`) of
stylegan2-ada-pytorch, so official snapshots' `augment_pipe` objects and ours can be exchanged. The
embedded source of this file travels inside our pickles and is executed by upstream code: it must stay
Python 3.7 syntax and import nothing beyond torch, numpy and torch_utils.{misc, persistence, ops}.

Every operation is drawn per sample and applied with probability `strength * p`. The order is:
pixel blitting (xflip, rotate90, xint) -> general geometric (scale, rotate, aniso, xfrac) -> color
(brightness, contrast, lumaflip, hue, saturation) -> image-space filtering (imgfilter) -> corruptions
(noise, cutout). Everything is built from differentiable torch ops and torch_utils.ops, so gradients
of any order flow back to the images (R1 differentiates through the pipeline twice).

Choices where this code differs from upstream's numerics (the distribution of augmentations is the same):

* Pixel blitting is executed exactly, as an integer index remap with reflected borders. Upstream folds
  the blits into the geometric resampling, which makes an x-flip or a 90 degree rotation slightly blurry
  (the sym6 wavelet is not symmetric). When general geometric ops are active too, the blit is applied
  first and the remaining transform is resampled, which is the same composition.
* The geometric resampling and the image filter only touch the samples that drew a non-identity
  transform; the others pass through bit-exactly (upstream resamples the whole batch). As a result p=0
  is an exact identity.
* 1-channel images: a gray image is treated as the RGB image (g, g, g); the 4x4 color matrix is applied
  and the three results are averaged (upstream's convention). Brightness, contrast and lumaflip (which
  becomes g -> -g) therefore act; hue and saturation are no-ops on gray and are skipped, without drawing
  random numbers, as upstream does. Color ops on other channel counts raise ValueError.
* Reflect padding is done by index remapping, so it also works when the pad exceeds the image size
  (upstream's image filter needs images larger than 21 pixels).
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix, upfirdn2d

# ----------------------------------------------------------------------------
# Orthogonal wavelet low-pass filters (decomposition, as listed by PyWavelets).
# sym2 builds the image-filter bank, sym6 is the interpolation filter of the geometric ops.

_SYM2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
_SYM6 = [
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
]


def _filter_bank(lowpass, num_bands=4):
    """Rows are zero-phase band-pass filters (octaves, lowest first) that sum to a unit impulse.

    H(z)H(1/z)/2 and H(-z)H(-1/z)/2 split a signal into a low and a high half band (power complementary
    for an orthogonal wavelet). Applying the split recursively to the low band, with the already built
    filters upsampled by two, gives num_bands octave bands.
    """
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1.0  # Start: everything is in band 0.
    for band in range(1, num_bands):
        # Zero-insert (upsample by two) the filters built so far, then split off the next octave.
        taps = bank.shape[1]
        stretched = np.zeros([num_bands, taps * 2 - 1])
        stretched[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in stretched])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start:start + hi2.size] += hi2
    return bank


# ----------------------------------------------------------------------------
# Batched homogeneous matrices. Parameters are [batch] tensors or Python numbers.


def _matrix(rows, ref):
    """[batch, len(rows), len(rows[0])] matrix; Python numbers are broadcast along the batch of ref."""
    entries = []
    for row in rows:
        for value in row:
            if isinstance(value, torch.Tensor):
                entries.append(value.reshape(ref.shape))
            else:
                entries.append(torch.full_like(ref, float(value)))
    return torch.stack(entries, dim=-1).reshape([ref.shape[0], len(rows), len(rows[0])])


def _translate2d(tx, ty):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2d(sx, sy):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2d(theta):
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def _translate3d(t):
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t)


def _scale3d(s):
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s)


def _luma_matrices(dtype, device):
    """(vv^T, [v]_x, diag(1,1,1,0)) as 4x4 constants for the unit luma axis v = (1,1,1,0)/sqrt(3)."""
    v = np.asarray([1, 1, 1, 0]) / np.sqrt(3)
    vvt = np.outer(v, v)
    cross = np.asarray([[0, -v[2], v[1], 0], [v[2], 0, -v[0], 0], [-v[1], v[0], 0, 0], [0, 0, 0, 0]])
    rgb_eye = np.diag([1.0, 1.0, 1.0, 0.0])
    return [misc.constant(m, dtype=dtype, device=device) for m in (vvt, cross, rgb_eye)]


# ----------------------------------------------------------------------------
# Index-based image remapping (exact, differentiable to any order).


def _reflect_index(idx, size):
    """Map integer positions onto [0, size) by mirroring about the edge pixels (torch 'reflect' mode)."""
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= size, period - idx, idx)


def _reflect_pad(images, left, right, top, bottom):
    """Reflect padding of arbitrary width (repeated mirroring when the pad exceeds the image)."""
    height, width = images.shape[2], images.shape[3]
    device = images.device
    if left or right:
        cols = _reflect_index(torch.arange(-left, width + right, device=device), width)
        images = images.index_select(3, cols)
    if top or bottom:
        rows = _reflect_index(torch.arange(-top, height + bottom, device=device), height)
        images = images.index_select(2, rows)
    return images


def _blit(images, flip, quarter_turns, shift_x, shift_y):
    """Per-sample x-flip, counter-clockwise quarter turns and integer shift, with reflected borders.

    All parameters are [batch] tensors of integer values. For output pixel o (coordinates relative to
    the image center) the source pixel is Flip @ Rot @ (o - shift), i.e. the image is shifted, rotated
    and then flipped, matching the composed inverse matrix of upstream's blit stage.
    """
    batch, channels, height, width = images.shape
    device, dtype = images.device, images.dtype
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ox = (torch.arange(width, device=device, dtype=dtype) - cx).reshape([1, 1, width])
    oy = (torch.arange(height, device=device, dtype=dtype) - cy).reshape([1, height, 1])
    # Inverse of the shift: undo the translation first.
    px = ox - shift_x.reshape([-1, 1, 1])
    py = oy - shift_y.reshape([-1, 1, 1])
    # Inverse of the rotation: rotate by the same number of quarter turns as upstream's rotate2d(+k*pi/2).
    k = quarter_turns.reshape([-1, 1, 1])
    cos = (k == 0).to(dtype) - (k == 2).to(dtype)
    sin = (k == 1).to(dtype) - (k == 3).to(dtype)
    rx = cos * px - sin * py
    ry = sin * px + cos * py
    # Inverse of the flip (its own inverse).
    rx = rx * (1 - 2 * flip.reshape([-1, 1, 1]))
    src_x = _reflect_index(torch.floor(rx + cx + 0.5).to(torch.int64), width)
    src_y = _reflect_index(torch.floor(ry + cy + 0.5).to(torch.int64), height)
    index = (src_y * width + src_x).reshape([batch, 1, height * width]).expand([batch, channels, height * width])
    out = torch.gather(images.reshape([batch, channels, height * width]), 2, index)
    return out.reshape([batch, channels, height, width])


def _replace_rows(images, rows, new_rows):
    """images with the samples listed in rows replaced by new_rows (differentiable in both)."""
    if rows.numel() == images.shape[0]:
        return new_rows
    return images.index_copy(0, rows, new_rows)


# ----------------------------------------------------------------------------


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    def __init__(self,
        xflip=0, rotate90=0, xint=0, scale=0, rotate=0, aniso=0, xfrac=0, brightness=0, contrast=0, lumaflip=0,
        hue=0, saturation=0, imgfilter=0, noise=0, cutout=0, xint_max=0.125, scale_std=0.2, rotate_max=1,
        aniso_std=0.2, xfrac_std=0.125, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
        imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1, noise_std=0.1, cutout_size=0.5,  # noqa: B006 - upstream signature.
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([]))  # Overall multiplier of all probabilities (set by ADA).

        # Pixel blitting: strengths and ranges.
        self.xflip = float(xflip)
        self.rotate90 = float(rotate90)
        self.xint = float(xint)
        self.xint_max = float(xint_max)  # Largest integer shift, as a fraction of the image size.

        # General geometric transformations.
        self.scale = float(scale)
        self.rotate = float(rotate)
        self.aniso = float(aniso)
        self.xfrac = float(xfrac)
        self.scale_std = float(scale_std)  # log2 std of isotropic scaling.
        self.rotate_max = float(rotate_max)  # Largest rotation, as a fraction of a half turn.
        self.aniso_std = float(aniso_std)  # log2 std of anisotropic scaling.
        self.xfrac_std = float(xfrac_std)  # Std of the fractional shift, as a fraction of the image size.

        # Color transformations.
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.lumaflip = float(lumaflip)
        self.hue = float(hue)
        self.saturation = float(saturation)
        self.brightness_std = float(brightness_std)  # Std of the additive brightness offset.
        self.contrast_std = float(contrast_std)  # log2 std of the contrast gain.
        self.hue_max = float(hue_max)  # Largest hue rotation, as a fraction of a half turn.
        self.saturation_std = float(saturation_std)  # log2 std of the saturation gain.

        # Image-space filtering.
        self.imgfilter = float(imgfilter)
        self.imgfilter_bands = list(imgfilter_bands)  # Relative probability of amplifying each band.
        self.imgfilter_std = float(imgfilter_std)  # log2 std of the band gain.

        # Image-space corruptions.
        self.noise = float(noise)
        self.cutout = float(cutout)
        self.noise_std = float(noise_std)  # Std of the per-sample noise level (half-normal).
        self.cutout_size = float(cutout_size)  # Side of the cut-out square, as a fraction of the image.

        # Interpolation filter for the geometric ops (12-tap, kept 1-D by setup_filter).
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(_SYM6))
        # Octave band-pass filters for imgfilter: [bands, taps].
        self.register_buffer('Hz_fbank', torch.as_tensor(_filter_bank(_SYM2), dtype=torch.float32))

    # ------------------------------------------------------------------------

    def forward(self, images, debug_percentile=None):
        """Augment a [batch, channels, height, width] float batch.

        debug_percentile (a number in [0, 1]) replaces every random draw by that quantile of its
        distribution and applies every enabled op to every sample, regardless of p.
        """
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError('AugmentPipe expects a 4-D [batch, channels, height, width] tensor')
        if not images.is_floating_point():
            raise TypeError('AugmentPipe expects floating-point images, got %s' % images.dtype)
        orig_dtype = images.dtype
        if orig_dtype not in (torch.float32, torch.float64):
            images = images.to(torch.float32)
        dp = None
        if debug_percentile is not None:
            dp = torch.as_tensor(debug_percentile, dtype=images.dtype, device=images.device)

        images = self._apply_blit(images, dp)
        images = self._apply_geometric(images, dp)
        images = self._apply_color(images, dp)
        images = self._apply_imgfilter(images, dp)
        images = self._apply_noise(images, dp)
        images = self._apply_cutout(images, dp)
        return images.to(orig_dtype)

    # ------------------------------------------------------------------------
    # Random draws.

    def _chosen(self, batch, strength, like):
        """[batch] bool: which samples apply an op of the given strength (probability strength * p)."""
        return torch.rand([batch], dtype=like.dtype, device=like.device) < strength * self.p

    def _draw(self, values, strength, neutral, dp_value, dp):
        """values where the op is chosen, `neutral` elsewhere; dp_value for all samples in debug mode."""
        if dp is not None:
            return torch.zeros_like(values) + dp_value
        chosen = self._chosen(values.shape[0], strength, values)
        return torch.where(chosen, values, torch.full_like(values, float(neutral)))

    # ------------------------------------------------------------------------
    # Pixel blitting.

    def _apply_blit(self, images, dp):
        if self.xflip <= 0 and self.rotate90 <= 0 and self.xint <= 0:
            return images
        batch, _channels, height, width = images.shape
        zeros = torch.zeros([batch], dtype=images.dtype, device=images.device)
        flip, turns, shift_x, shift_y = zeros, zeros, zeros, zeros

        if self.xflip > 0:
            flip = torch.floor(torch.rand_like(zeros) * 2)
            flip = self._draw(flip, self.xflip, 0, None if dp is None else torch.floor(dp * 2), dp)

        if self.rotate90 > 0:
            turns = torch.floor(torch.rand_like(zeros) * 4)
            turns = self._draw(turns, self.rotate90, 0, None if dp is None else torch.floor(dp * 4), dp)

        if self.xint > 0:
            t = (torch.rand([batch, 2], dtype=images.dtype, device=images.device) * 2 - 1) * self.xint_max
            if dp is not None:
                t = torch.zeros_like(t) + (dp * 2 - 1) * self.xint_max
            else:
                t = torch.where(self._chosen(batch, self.xint, t).unsqueeze(1), t, torch.zeros_like(t))
            shift_x = torch.round(t[:, 0] * width)
            shift_y = torch.round(t[:, 1] * height)

        return _blit(images, flip, turns, shift_x, shift_y)

    # ------------------------------------------------------------------------
    # General geometric transformations.

    def _geometric_matrix(self, batch, width, height, like, dp):
        """[batch, 3, 3] inverse transform (output pixel -> input pixel, centered coordinates)."""
        eye = torch.eye(3, dtype=like.dtype, device=like.device).unsqueeze(0).repeat([batch, 1, 1])
        g_inv = eye
        ones = torch.ones([batch], dtype=like.dtype, device=like.device)
        zeros = torch.zeros_like(ones)

        if self.scale > 0:
            s = torch.exp2(torch.randn_like(ones) * self.scale_std)
            s = self._draw(s, self.scale, 1, None if dp is None else torch.exp2(torch.erfinv(dp * 2 - 1) * self.scale_std), dp)
            g_inv = g_inv @ _scale2d(1 / s, 1 / s)

        # Rotation happens before and after the anisotropic scaling, each with probability p_rot,
        # so that P(at least one of them) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        dp_theta = None if dp is None else (dp * 2 - 1) * np.pi * self.rotate_max
        if self.rotate > 0:
            theta = (torch.rand_like(ones) * 2 - 1) * np.pi * self.rotate_max
            theta = self._draw_with_prob(theta, p_rot, zeros, dp_theta, dp)
            g_inv = g_inv @ _rotate2d(theta)

        if self.aniso > 0:
            s = torch.exp2(torch.randn_like(ones) * self.aniso_std)
            s = self._draw(s, self.aniso, 1, None if dp is None else torch.exp2(torch.erfinv(dp * 2 - 1) * self.aniso_std), dp)
            g_inv = g_inv @ _scale2d(1 / s, s)

        if self.rotate > 0:
            theta = (torch.rand_like(ones) * 2 - 1) * np.pi * self.rotate_max
            theta = self._draw_with_prob(theta, p_rot, zeros, dp_theta, dp)
            g_inv = g_inv @ _rotate2d(theta)

        if self.xfrac > 0:
            t = torch.randn([batch, 2], dtype=like.dtype, device=like.device) * self.xfrac_std
            if dp is not None:
                t = torch.zeros_like(t) + torch.erfinv(dp * 2 - 1) * self.xfrac_std
            else:
                t = torch.where(self._chosen(batch, self.xfrac, t).unsqueeze(1), t, torch.zeros_like(t))
            g_inv = g_inv @ _translate2d(-t[:, 0] * width, -t[:, 1] * height)

        return g_inv, eye

    def _draw_with_prob(self, values, prob, neutral, dp_value, dp):
        if dp is not None:
            return torch.zeros_like(values) + dp_value
        chosen = torch.rand_like(values) < prob
        return torch.where(chosen, values, neutral)

    def _apply_geometric(self, images, dp):
        if self.scale <= 0 and self.rotate <= 0 and self.aniso <= 0 and self.xfrac <= 0:
            return images
        batch, _channels, height, width = images.shape
        g_inv, eye = self._geometric_matrix(batch, width, height, images, dp)
        moved = (g_inv - eye).abs().reshape([batch, 9]).max(dim=1).values > 0
        rows = torch.nonzero(moved).reshape([-1])
        if rows.numel() == 0:
            return images
        warped = self._resample(images.index_select(0, rows), g_inv.index_select(0, rows))
        return _replace_rows(images, rows, warped)

    def _resample(self, images, g_inv):
        """Warp images by the inverse transforms g_inv: reflect-pad, 2x upsample, sample, 2x downsample."""
        batch, channels, height, width = images.shape
        dtype, device = images.dtype, images.device
        f = self.Hz_geom.to(dtype)
        support = self.Hz_geom.shape[0] // 4  # Half support of the filter, in input pixels.

        # Pad by how far the output corners reach outside the input, plus the filter support.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        corners = misc.constant([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=dtype, device=device)
        reach = (g_inv @ corners.t())[:, :2, :]  # [batch, xy, corner]
        reach = reach.permute(1, 0, 2).reshape([2, -1])
        margin = torch.cat([-reach, reach]).max(dim=1).values  # [left, top, right, bottom] extent
        margin = margin + misc.constant([support * 2 - cx, support * 2 - cy] * 2, dtype=dtype, device=device)
        margin = torch.max(margin, torch.zeros_like(margin))
        margin = torch.min(margin, misc.constant([width - 1, height - 1] * 2, dtype=dtype, device=device))
        left, top, right, bottom = [int(v) for v in margin.ceil().to(torch.int64).tolist()]
        images = _reflect_pad(images, left, right, top, bottom)
        ones = torch.ones([batch], dtype=dtype, device=device)
        g_inv = _translate2d(ones * ((left - right) / 2), ones * ((top - bottom) / 2)) @ g_inv

        # Upsample 2x. Upsampled pixel j sits on input pixel j/2, so centered coordinates map as u = 2x - 1/2.
        images = upfirdn2d.upsample2d(x=images, f=f, up=2)
        to_up = _translate2d(ones * -0.5, ones * -0.5) @ _scale2d(ones * 2, ones * 2)
        from_up = _scale2d(ones * 0.5, ones * 0.5) @ _translate2d(ones * 0.5, ones * 0.5)
        g_inv = to_up @ g_inv @ from_up

        # Sample the output grid, which extends `support` pixels beyond the image on every side.
        out_shape = [batch, channels, (height + support * 2) * 2, (width + support * 2) * 2]
        to_norm = _scale2d(ones * (2 / images.shape[3]), ones * (2 / images.shape[2]))
        from_norm = _scale2d(ones * (out_shape[3] / 2), ones * (out_shape[2] / 2))
        theta = (to_norm @ g_inv @ from_norm)[:, :2, :]
        grid = torch.nn.functional.affine_grid(theta=theta, size=out_shape, align_corners=False)
        images = grid_sample_gradfix.grid_sample(images, grid)

        # Downsample 2x and crop the extra border.
        return upfirdn2d.downsample2d(x=images, f=f, down=2, padding=-support * 2, flip_filter=True)

    # ------------------------------------------------------------------------
    # Color transformations.

    def _apply_color(self, images, dp):
        batch, channels, height, width = images.shape
        gray = channels == 1
        ops = [self.brightness, self.contrast, self.lumaflip]
        if not gray:
            ops += [self.hue, self.saturation]
        if max(ops) <= 0:
            return images
        if channels not in (1, 3):
            raise ValueError('Color augmentation needs RGB (3 channels) or grayscale (1 channel) images')
        dtype, device = images.dtype, images.device
        vvt, cross, rgb_eye = _luma_matrices(dtype, device)
        eye4 = torch.eye(4, dtype=dtype, device=device)
        ones = torch.ones([batch], dtype=dtype, device=device)
        C = eye4.unsqueeze(0).repeat([batch, 1, 1])

        if self.brightness > 0:
            b = torch.randn_like(ones) * self.brightness_std
            b = self._draw(b, self.brightness, 0, None if dp is None else torch.erfinv(dp * 2 - 1) * self.brightness_std, dp)
            C = _translate3d(b) @ C

        if self.contrast > 0:
            c = torch.exp2(torch.randn_like(ones) * self.contrast_std)
            c = self._draw(c, self.contrast, 1, None if dp is None else torch.exp2(torch.erfinv(dp * 2 - 1) * self.contrast_std), dp)
            C = _scale3d(c) @ C

        if self.lumaflip > 0:
            i = torch.floor(torch.rand_like(ones) * 2)
            i = self._draw(i, self.lumaflip, 0, None if dp is None else torch.floor(dp * 2), dp)
            C = (eye4 - 2 * vvt * i.reshape([-1, 1, 1])) @ C  # Householder reflection across the luma plane.

        if self.hue > 0 and not gray:
            theta = (torch.rand_like(ones) * 2 - 1) * np.pi * self.hue_max
            theta = self._draw(theta, self.hue, 0, None if dp is None else (dp * 2 - 1) * np.pi * self.hue_max, dp)
            c, s = torch.cos(theta).reshape([-1, 1, 1]), torch.sin(theta).reshape([-1, 1, 1])
            # Rodrigues' rotation about the luma axis; exactly the identity for theta = 0.
            rot = rgb_eye * c + cross * s + vvt * (1 - c) + (eye4 - rgb_eye)
            C = rot @ C

        if self.saturation > 0 and not gray:
            s = torch.exp2(torch.randn_like(ones) * self.saturation_std)
            s = self._draw(s, self.saturation, 1, None if dp is None else torch.exp2(torch.erfinv(dp * 2 - 1) * self.saturation_std), dp)
            # Scale the chroma (the part orthogonal to the luma axis); exactly the identity for s = 1.
            C = (eye4 + (rgb_eye - vvt) * (s.reshape([-1, 1, 1]) - 1)) @ C

        flat = images.reshape([batch, channels, height * width])
        if gray:
            row = C[:, :3, :].mean(dim=1, keepdim=True)  # Average of the RGB outputs for input (g, g, g, 1).
            flat = flat * row[:, :, :3].sum(dim=2, keepdim=True) + row[:, :, 3:]
        else:
            flat = C[:, :3, :3] @ flat + C[:, :3, 3:]
        return flat.reshape([batch, channels, height, width])

    # ------------------------------------------------------------------------
    # Image-space filtering.

    def _apply_imgfilter(self, images, dp):
        if self.imgfilter <= 0:
            return images
        batch, channels, height, width = images.shape
        dtype, device = images.dtype, images.device
        num_bands, taps = self.Hz_fbank.shape
        if len(self.imgfilter_bands) != num_bands:
            raise ValueError('imgfilter_bands needs %d entries, got %d' % (num_bands, len(self.imgfilter_bands)))
        expected_power = misc.constant(np.asarray([10, 1, 1, 1]) / 13, dtype=dtype, device=device)  # ~1/f spectrum.

        gains = torch.ones([batch, num_bands], dtype=dtype, device=device)
        chosen_any = torch.zeros([batch], dtype=torch.bool, device=device)
        for band, band_strength in enumerate(self.imgfilter_bands):
            t_band = torch.exp2(torch.randn([batch], dtype=dtype, device=device) * self.imgfilter_std)
            if dp is not None:
                if band_strength > 0:
                    t_band = torch.zeros_like(t_band) + torch.exp2(torch.erfinv(dp * 2 - 1) * self.imgfilter_std)
                    chosen_any = torch.ones_like(chosen_any)
                else:
                    t_band = torch.ones_like(t_band)
            else:
                chosen = self._chosen(batch, self.imgfilter * band_strength, t_band)
                t_band = torch.where(chosen, t_band, torch.ones_like(t_band))
                chosen_any = chosen_any | chosen
            # Amplify one band, then renormalize so that the expected image power stays the same.
            t = torch.ones([batch, num_bands], dtype=dtype, device=device)
            t = torch.cat([t[:, :band], t_band.unsqueeze(1), t[:, band + 1:]], dim=1)
            t = t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()
            gains = gains * t

        rows = torch.nonzero(chosen_any).reshape([-1])
        if rows.numel() == 0:
            return images
        n = rows.numel()
        kernels = gains.index_select(0, rows) @ self.Hz_fbank.to(dtype)  # [n, taps], zero-phase.
        kernels = kernels.unsqueeze(1).repeat([1, channels, 1]).reshape([n * channels, 1, 1, taps])
        pad = taps // 2
        x = images.index_select(0, rows).reshape([1, n * channels, height, width])
        x = _reflect_pad(x, pad, pad, pad, pad)
        x = conv2d_gradfix.conv2d(input=x, weight=kernels, groups=n * channels)  # Horizontal pass.
        x = conv2d_gradfix.conv2d(input=x, weight=kernels.transpose(2, 3), groups=n * channels)  # Vertical pass.
        return _replace_rows(images, rows, x.reshape([n, channels, height, width]))

    # ------------------------------------------------------------------------
    # Image-space corruptions.

    def _apply_noise(self, images, dp):
        if self.noise <= 0:
            return images
        batch = images.shape[0]
        sigma = torch.randn([batch], dtype=images.dtype, device=images.device).abs() * self.noise_std
        sigma = self._draw(sigma, self.noise, 0, None if dp is None else torch.erfinv(dp) * self.noise_std, dp)
        return images + torch.randn_like(images) * sigma.reshape([-1, 1, 1, 1])

    def _apply_cutout(self, images, dp):
        if self.cutout <= 0:
            return images
        batch, _channels, height, width = images.shape
        dtype, device = images.dtype, images.device
        size = torch.full([batch], self.cutout_size, dtype=dtype, device=device)
        size = self._draw(size, self.cutout, 0, None if dp is None else self.cutout_size, dp)
        center = torch.rand([batch, 2], dtype=dtype, device=device)
        if dp is not None:
            center = torch.zeros_like(center) + dp
        size = size.reshape([-1, 1, 1, 1])
        xs = ((torch.arange(width, dtype=dtype, device=device) + 0.5) / width).reshape([1, 1, 1, -1])
        ys = ((torch.arange(height, dtype=dtype, device=device) + 0.5) / height).reshape([1, 1, -1, 1])
        outside_x = (xs - center[:, 0].reshape([-1, 1, 1, 1])).abs() >= size / 2
        outside_y = (ys - center[:, 1].reshape([-1, 1, 1, 1])).abs() >= size / 2
        keep = (outside_x | outside_y).to(dtype)
        return images * keep


# ----------------------------------------------------------------------------
# Presets of train.py --augpipe.

augpipe_specs = dict(
    blit=dict(xflip=1, rotate90=1, xint=1),
    geom=dict(scale=1, rotate=1, aniso=1, xfrac=1),
    color=dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    filter=dict(imgfilter=1),
    noise=dict(noise=1),
    cutout=dict(cutout=1),
    bg=dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
    bgc=dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1,
             hue=1, saturation=1),
    bgcf=dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1,
              hue=1, saturation=1, imgfilter=1),
    bgcfn=dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1,
               hue=1, saturation=1, imgfilter=1, noise=1),
    bgcfnc=dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1,
                hue=1, saturation=1, imgfilter=1, noise=1, cutout=1),
)

# ----------------------------------------------------------------------------


def _identity(tensor):
    return tensor


class AdaController:
    """Adjusts `augment_pipe.p` from the sign of the discriminator's real logits (ADA's r_t heuristic).

    Call `accumulate(real_logits)` after every D forward on reals and `update()` every `interval`
    iterations. Each update moves p by batch_size * interval / (ada_kimg * 1000) towards making the
    mean sign r equal to `target`, i.e. p can go from 0 to 1 in ada_kimg thousand images. p stays >= 0
    and is deliberately not capped at 1.

    batch_size is the total number of real images per iteration over all processes. With several
    processes, pass reduce_fn: it receives a float32 tensor [sign_sum, count] and must return the sum
    over processes (e.g. torch.distributed.all_reduce on a copy); every process must call update() at
    the same iterations. The default leaves the local numbers as they are (single process).
    """

    def __init__(self, augment_pipe, target=0.6, ada_kimg=500, interval=4, batch_size=None, reduce_fn=None, rank=0):
        if batch_size is None:
            raise TypeError('AdaController needs batch_size (real images per iteration, all processes)')
        if ada_kimg <= 0 or interval <= 0 or batch_size <= 0:
            raise ValueError('ada_kimg, interval and batch_size must be positive')
        self.augment_pipe = augment_pipe
        self.target = float(target)
        self.ada_kimg = float(ada_kimg)
        self.interval = int(interval)
        self.batch_size = int(batch_size)
        self.reduce_fn = _identity if reduce_fn is None else reduce_fn
        self.rank = int(rank)  # With several processes, rank 0 carries the accumulators of a resumed state.
        self.last_r = None  # Mean sign observed at the latest update.
        self._sign_sum = None  # Running sum of sign(real_logits), a tensor on the logits' device (no sync).
        self._count = 0  # Number of logits accumulated since the latest update.

    @property
    def step(self):
        """Change of p per update."""
        return self.batch_size * self.interval / (self.ada_kimg * 1000)

    def accumulate(self, real_logits):
        signs = torch.sign(real_logits.detach()).to(torch.float32).sum()
        self._sign_sum = signs if self._sign_sum is None else self._sign_sum + signs.to(self._sign_sum.device)
        self._count += int(real_logits.numel())

    def update(self):
        """Adjust p from the signs accumulated since the last update; return r (None if no logits were seen)."""
        p = self.augment_pipe.p
        sign_sum = self._sign_sum if self._sign_sum is not None else torch.zeros([], device=p.device)
        # Multi-process hook: reduce_fn sums [sign_sum, count] over processes (identity in one process).
        totals = self.reduce_fn(torch.stack([sign_sum.to(torch.float32), torch.full_like(sign_sum, self._count, dtype=torch.float32)]))
        sign_sum_all, count_all = [float(v) for v in totals.tolist()]
        self._sign_sum = None
        self._count = 0
        if count_all <= 0:
            self.last_r = None
            return None
        r = sign_sum_all / count_all
        self.last_r = r
        if np.isfinite(r):
            direction = float(np.sign(r - self.target))
            with torch.no_grad():
                p.copy_((p + direction * self.step).clamp(min=0))
        return r

    def state_dict(self):
        """Accumulators since the latest update, summed over the processes (each holds only its share until the next
        update: a collective call with several), plus p and the last r (plain Python numbers)."""
        sign_sum = torch.zeros([], device=self.augment_pipe.p.device) if self._sign_sum is None else self._sign_sum
        totals = self.reduce_fn(torch.stack([sign_sum.to(torch.float32),
                                             torch.full_like(sign_sum, self._count, dtype=torch.float32)]))
        sign_sum_all, count_all = [float(v) for v in totals.tolist()]  # Sums of +-1: exact in float32.
        return dict(sign_sum=sign_sum_all, count=int(round(count_all)), last_r=self.last_r, p=float(self.augment_pipe.p))

    def load_state_dict(self, state):
        primary = self.rank == 0  # The saved sums are the totals of all processes: one process carries them on.
        self._sign_sum = torch.as_tensor(float(state['sign_sum']) if primary else 0.0, dtype=torch.float32,
                                         device=self.augment_pipe.p.device)
        self._count = int(state['count']) if primary else 0
        self.last_r = state.get('last_r', None)
        if state.get('p', None) is not None:
            with torch.no_grad():
                self.augment_pipe.p.copy_(torch.as_tensor(float(state['p'])))
