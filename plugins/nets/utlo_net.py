"""UTLO's network extensions (stored in snapshots): two mapping streams and a low-resolution D head.

Generator: one mapping MLP runs twice, on concat(norm(z), norm(E(c))) -> w_c and on
concat(norm(z), 0) -> w_uc. The first `num_uc_ws` ws (every layer up to resolution res_uc, toRGBs
included) take w_uc, the rest w_c, so the image up to res_uc does not depend on the class.
Discriminator: `fromrgb_uc` feeds a res_uc image into D's own blocks res_uc..8 and epilogue, and
`out_uc` scores it without the class (D_uc).
"""

import torch

from torch_utils import persistence
from torch_utils.ops import upfirdn2d


@persistence.persistent_class
class UnconditionalStream(torch.nn.Module):
    """Mapping extension: adds the 'uc' stream and broadcasts [w_uc] * num_uc_ws + [w_c] * rest."""

    rank_averaged_buffers = ("w_avg_uc",)  # A running mean of the batch: the loop averages it over ranks.

    def __init__(self, w_dim, res_uc, num_uc_ws):
        super().__init__()
        self.w_dim = w_dim
        self.res_uc = res_uc
        self.num_uc_ws = num_uc_ws
        self.register_buffer("w_avg_uc", torch.zeros([w_dim]))

    def stream_inputs(self, x, y, e, c, streams):
        if e is None:  # Unconditional network: one stream.
            return streams
        if y is None:  # fc0 takes norm(z) only (transitional + utlo): the uc stream is the plain z path.
            uc = x
        else:
            uc = torch.cat([x, torch.zeros_like(y)] if x is not None else [torch.zeros_like(y)], dim=1)
        streams = dict(streams)
        streams["uc"] = uc
        return streams

    def w_avg_buffer(self, stream):
        return self.w_avg_uc if stream == "uc" else None

    def broadcast(self, streams, num_ws):
        if "uc" not in streams:
            return None
        k = self.num_uc_ws
        w_uc = streams["uc"].unsqueeze(1).repeat([1, k, 1])
        w_c = streams["w"].unsqueeze(1).repeat([1, num_ws - k, 1])
        return torch.cat([w_uc, w_c], dim=1)


@persistence.persistent_class
class LowResHead(torch.nn.Module):
    """D extension: D_uc(x_low) through fromrgb_uc, D's blocks <= res_uc, D's epilogue trunk and out_uc."""

    def __init__(self, img_channels, res_uc, in_channels, epilogue_channels, conv_clamp=None):
        super().__init__()
        # Built only while training (the project is importable then); unpickling needs no import:
        # the layers carry their own module source.
        from training.networks import Conv2dLayer, FullyConnectedLayer

        self.res_uc = res_uc
        self.fromrgb_uc = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation="lrelu", conv_clamp=conv_clamp)
        self.out_uc = FullyConnectedLayer(epilogue_channels, 1)
        self.register_buffer("resample_filter", upfirdn2d.setup_filter([1, 3, 3, 1]))

    def downsample(self, img):
        """Real images -> res_uc by repeated 2x FIR [1,3,3,1] downsampling."""
        while img.shape[2] > self.res_uc:
            img = upfirdn2d.downsample2d(img, self.resample_filter)
        return img

    def forward(self, D, img_low):
        """[N, 1] logits of res_uc images (already augmented), independent of the class."""
        x = self.fromrgb_uc(img_low.to(torch.float32))
        for res in D.block_resolutions:
            if res <= self.res_uc:
                x, _ = getattr(D, f"b{res}")(x, None)
        b4 = D.b4
        x = x.to(torch.float32)
        if b4.mbstd is not None:
            x = b4.mbstd(x)
        x = b4.conv(x)
        x = b4.fc(x.flatten(1))
        return self.out_uc(x)
