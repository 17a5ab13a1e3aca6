"""Transitional-cGAN's network extensions (stored in snapshots): the ramped class branch of G's mapping and
D's two heads.

Generator: fc0 takes norm(z) only (MappingNetwork(c_in_fc0=False)); after fc0's activation the class enters
as ``h = fc0(norm z) + lambda_t * P(norm E(c))``, P a fully connected layer (lrelu, lr-multiplier 0.01).
Discriminator: on the epilogue features, ``out_uc`` (-> 1) is D_uc(x) and ``out_c`` (-> cmap, projected
onto D's mapped label) is D_c(x, c); D's output is D_c, and both logits are recorded in
``capture['logits']``. lambda_t is a buffer in both, written by the plugin every iteration and copied to
G_ema with the other buffers, so snapshots generate with the value they were saved at.
"""

import numpy as np
import torch

from torch_utils import persistence


def _normalize(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


@persistence.persistent_class
class ConditionRamp(torch.nn.Module):
    """Mapping extension: adds lambda_t * P(norm(e)) to the output of fc0 of the conditional stream."""

    def __init__(self, embed_features, out_features, lr_multiplier=0.01):
        super().__init__()
        from training.networks import FullyConnectedLayer  # Built while training; pickles carry the source.

        self.P = FullyConnectedLayer(embed_features, out_features, activation="lrelu", lr_multiplier=lr_multiplier)
        self.register_buffer("lambda_t", torch.zeros([]))

    def after_layer(self, idx, h, stream, e, c):
        if idx != 0 or stream != "w" or e is None:
            return h
        # Never skipped at lambda_t = 0: P and E then get an exact zero gradient, on every rank.
        return h + self.lambda_t.to(h.dtype) * self.P(_normalize(e))


@persistence.persistent_class
class TransitionalHeads(torch.nn.Module):
    """D extension: out_uc and out_c on the epilogue features; D's output is the conditional logit."""

    def __init__(self, in_features, cmap_dim):
        super().__init__()
        from training.networks import FullyConnectedLayer

        self.cmap_dim = cmap_dim
        self.out_uc = FullyConnectedLayer(in_features, 1)
        self.out_c = FullyConnectedLayer(in_features, cmap_dim)
        self.register_buffer("lambda_t", torch.zeros([]))

    def epilogue_head(self, x, cmap, capture):
        uc = self.out_uc(x)
        cond = (self.out_c(x) * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        if capture is not None:
            capture.setdefault("logits", {}).update(uc=uc, c=cond)
        return cond
