"""Trainable heads on the frozen backbone features; each returns a list of logits, one per level.

Levels: a spatial level is a logit map [N, h, w], the global level [N, 1]. Layouts (see docs/plugins.md):

* ``sg2`` (default, the official StyleGAN2 fork's): layers of sg2's own Conv2dLayer / FullyConnectedLayer
  (equalised learning rate; ``down=2`` is sg2's [1,3,3,1]-filtered downsampling), no spectral norm, c ignored.
  'vit' backbones: per map Conv3x3(C -> C_h, down 2 if the map is >= 14 wide) + lrelu -> Conv1x1(-> 1, down 2);
  global FC(d -> C_h) + lrelu -> FC(-> 1); C_h 256 (128 for 14-wide maps, as the DINO head). Without a
  multilevel loss only the global level exists (the fork's MLP head). 'conv' backbones: Conv3x3(C -> 256,
  down 2) + lrelu -> flatten -> FC(-> 256) + lrelu -> FC(-> 1).
* ``pip`` (the vision-aided-loss package's): the same shapes with spectral norm on every conv/linear layer,
  binomial [1,3,3,1] blur before each strided conv, LReLU 0.2, and a class projection on the global level:
  s = out(h) + label_weight * <Emb(c), h> (Emb linear on the one-hot c, used when ``cond``).
"""

import torch
import torch.nn.functional as F

from training.networks import Conv2dLayer, FullyConnectedLayer

HEAD_KINDS = ("sg2", "pip")


def _channels(width):
    return 128 if width >= 14 else 256


# ----------------------------------------------------------------------------- sg2 heads


class Sg2VitHead(torch.nn.Module):
    def __init__(self, map_shapes, vector_dim, multilevel):
        super().__init__()
        self.spatial = torch.nn.ModuleList()
        if multilevel:
            for c, _h, w in map_shapes:
                ch = _channels(w)
                self.spatial.append(torch.nn.Sequential(
                    Conv2dLayer(c, ch, kernel_size=3, down=2 if w >= 14 else 1, activation="lrelu"),
                    Conv2dLayer(ch, 1, kernel_size=1, down=2)))
        ch = _channels(map_shapes[0][2]) if map_shapes and multilevel else 256
        self.hidden = FullyConnectedLayer(vector_dim, ch, activation="lrelu")
        self.out = FullyConnectedLayer(ch, 1)

    def forward(self, maps, vector, c=None, label_weight=1.0):
        levels = [layer(m).squeeze(1) for layer, m in zip(self.spatial, maps)]
        return levels + [self.out(self.hidden(vector))]


class Sg2ConvHead(torch.nn.Module):
    def __init__(self, map_shapes, vector_dim, multilevel):
        super().__init__()
        c, h, w = map_shapes[-1]
        self.conv = Conv2dLayer(c, 256, kernel_size=3, down=2, activation="lrelu")
        with torch.no_grad():
            flat = self.conv(torch.zeros([1, c, h, w])).numel()
        self.hidden = FullyConnectedLayer(flat, 256, activation="lrelu")
        self.out = FullyConnectedLayer(256, 1)

    def forward(self, maps, vector, c=None, label_weight=1.0):
        return [self.out(self.hidden(self.conv(maps[-1]).flatten(1)))]


# ----------------------------------------------------------------------------- pip heads


class Blur(torch.nn.Module):
    """Depthwise binomial [1,3,3,1] low-pass (reflect-padded, size kept) before a strided conv (BlurPool)."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 64).view(1, 1, 4, 4))

    def forward(self, x):
        x = F.pad(x, [1, 2, 1, 2], mode="reflect")
        return F.conv2d(x, self.kernel.expand(x.shape[1], 1, 4, 4), groups=x.shape[1])


def _sn(layer):
    return torch.nn.utils.parametrizations.spectral_norm(layer)


def _lrelu(x):
    return F.leaky_relu(x, 0.2)


class Projection(torch.nn.Module):
    """s = out(h) + label_weight * <Emb(c), h> on the global level."""

    def __init__(self, hidden, c_dim):
        super().__init__()
        self.out = _sn(torch.nn.Linear(hidden, 1))
        self.embed = _sn(torch.nn.Linear(c_dim, hidden, bias=False)) if c_dim > 0 else None

    def forward(self, h, c, label_weight):
        s = self.out(h)
        if self.embed is not None and c is not None:
            s = s + label_weight * (self.embed(c.to(h.dtype)) * h).sum(dim=1, keepdim=True)
        return s


class PipVitHead(torch.nn.Module):
    def __init__(self, map_shapes, vector_dim, multilevel, c_dim):
        super().__init__()
        self.spatial = torch.nn.ModuleList()
        if multilevel:
            for c, _h, w in map_shapes:
                ch = _channels(w)
                first = [Blur(), _sn(torch.nn.Conv2d(c, ch, 3, stride=2, padding=1))] if w >= 14 else \
                    [_sn(torch.nn.Conv2d(c, ch, 3, padding=1))]
                self.spatial.append(torch.nn.Sequential(*first, torch.nn.LeakyReLU(0.2), Blur(),
                                                        _sn(torch.nn.Conv2d(ch, 1, 1, stride=2))))
        ch = _channels(map_shapes[0][2]) if map_shapes and multilevel else 256
        self.hidden = _sn(torch.nn.Linear(vector_dim, ch))
        self.projection = Projection(ch, c_dim)

    def forward(self, maps, vector, c=None, label_weight=1.0):
        levels = [layer(m).squeeze(1) for layer, m in zip(self.spatial, maps)]
        return levels + [self.projection(_lrelu(self.hidden(vector)), c, label_weight)]


class PipConvHead(torch.nn.Module):
    def __init__(self, map_shapes, vector_dim, multilevel, c_dim):
        super().__init__()
        c, h, w = map_shapes[-1]
        self.conv = torch.nn.Sequential(Blur(), _sn(torch.nn.Conv2d(c, 256, 3, stride=2, padding=1)))
        flat = 256 * ((h + 1) // 2) * ((w + 1) // 2)
        self.hidden = _sn(torch.nn.Linear(flat, 256))
        self.projection = Projection(256, c_dim)

    def forward(self, maps, vector, c=None, label_weight=1.0):
        h = _lrelu(self.hidden(_lrelu(self.conv(maps[-1])).flatten(1)))
        return [self.projection(h, c, label_weight)]


def build_head(kind, head_type, map_shapes, vector_dim, multilevel, c_dim):
    """A head for a backbone of ``head_type`` ('vit' / 'conv') with the given feature shapes."""
    if head_type == "conv" and not map_shapes:
        raise ValueError("a conv head needs at least one feature map")
    if kind == "sg2":
        return (Sg2VitHead if head_type == "vit" else Sg2ConvHead)(map_shapes, vector_dim, multilevel)
    return (PipVitHead if head_type == "vit" else PipConvHead)(map_shapes, vector_dim, multilevel, c_dim)
