"""NoisyTwins' mapping extension: class-embedding noise during training (stored in snapshots)."""

import torch

from torch_utils import persistence


@persistence.persistent_class
class EmbeddingNoise(torch.nn.Module):
    """Adds sigma * lambda_k * N(0, I) to the class embedding E(c) before normalisation, in training only.

    lambda_k (buffer, one per class) makes the noise stronger for rare classes. In eval mode (G_ema,
    metrics, generate.py) the embedding passes through unchanged.
    """

    def __init__(self, c_dim, sigma):
        super().__init__()
        self.c_dim = c_dim
        self.sigma = float(sigma)
        self.register_buffer("lambda_k", torch.ones([c_dim]))
        self.generator = None  # torch.Generator set by the plugin; not stored in pickles.

    def __getstate__(self):
        state = dict(self.__dict__)
        state["generator"] = None
        return state

    def transform_embed(self, e, c):
        if not self.training or self.sigma == 0:
            return e
        scale = self.lambda_k[c.argmax(dim=1)].to(e.dtype) * self.sigma
        if self.generator is not None and self.generator.device == e.device:
            eps = torch.randn(e.shape, generator=self.generator, device=e.device, dtype=e.dtype)
        else:
            eps = torch.randn_like(e)
        return e + scale.unsqueeze(1) * eps
