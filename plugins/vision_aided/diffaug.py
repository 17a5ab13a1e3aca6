"""DiffAugment (Zhao et al., NeurIPS 2020) for the backbone input: color, translation, cutout.

Differentiable, drawn per sample, on images in [-1, 1]. color: brightness + U(-0.5, 0.5), saturation x U(0, 2)
about the per-pixel channel mean, contrast x U(0.5, 1.5) about the image mean. translation: integer shift of up
to 1/8 of the size, zero padded. cutout: one zeroed square of half the size at a random position.
"""

import torch


def brightness(x, generator=None):
    return x + (torch.rand([x.shape[0], 1, 1, 1], device=x.device, generator=generator) - 0.5)


def saturation(x, generator=None):
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand([x.shape[0], 1, 1, 1], device=x.device, generator=generator) * 2) + mean


def contrast(x, generator=None):
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand([x.shape[0], 1, 1, 1], device=x.device, generator=generator) + 0.5) + mean


def translation(x, ratio=0.125, generator=None):
    n, _c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, [n, 1, 1], device=x.device, generator=generator)
    dx = torch.randint(-sw, sw + 1, [n, 1, 1], device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # Source row of each output row.
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1).to(x.dtype)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(n, x.shape[1], h * w)
    return x.flatten(2).gather(2, index).view_as(x) * inside


def cutout(x, ratio=0.5, generator=None):
    n, _c, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y0 = torch.randint(0, h + (1 - ch % 2), [n, 1, 1], device=x.device, generator=generator) - ch // 2
    x0 = torch.randint(0, w + (1 - cw % 2), [n, 1, 1], device=x.device, generator=generator) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= y0) & (rows < y0 + ch) & (cols >= x0) & (cols < x0 + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


POLICIES = {"color": (brightness, saturation, contrast), "translation": (translation,), "cutout": (cutout,)}


def diff_augment(x, policy="color,translation,cutout", generator=None):
    for name in filter(None, policy.split(",")):
        for fn in POLICIES[name]:
            x = fn(x, generator=generator)
    return x
