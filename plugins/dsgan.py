"""Diversity-sensitive regularisation (Yang et al., "Diversity-Sensitive Conditional Generative Adversarial
Networks", ICLR 2019): a floor under the distance between images of one class drawn from different latents.

A conditional generator tends to let the class decide the image and to ignore z ("collapse by conditioning").
DSGAN's term (eq. 3 of the paper) rewards G for keeping two images of the same condition apart in proportion to
their latents, up to a cap tau:

    L_z = E_{z1, z2} [ min( ||G(z1, c) - G(z2, c)|| / ||z1 - z2||, tau ) ],     G's loss gets  - lambda * L_z

Distances are mean absolute differences (L1 over the element count), so tau does not depend on the resolution or
z_dim. A pair whose ratio is above tau gets no gradient: the term lifts collapsed pairs and leaves varied ones
alone. The pairs cost no extra pass: in G's main phase rows i and i + B/2 share the class of row i and keep their
own z.
"""

import click
import torch

from plugins import PluginError, hookimpl
from torch_utils import training_stats

__version__ = "1.0"


def latent_image_ratio(img1, img2, z1, z2):
    """Per pair: mean |img1 - img2| over mean |z1 - z2| (DSGAN's ratio before the cap)."""
    image_gap = (img1 - img2).abs().flatten(1).mean(dim=1)
    latent_gap = (z1 - z2).abs().flatten(1).mean(dim=1)
    return image_gap / latent_gap.clamp_min(1e-8)


class DSGAN:
    version = __version__
    plugin_name = "dsgan"

    def __init__(self, ds_lambda=4.0, ds_tau=0.2):
        self.loss_weight = float(ds_lambda)
        self.tau = float(ds_tau)
        if not self.loss_weight >= 0 or not self.tau > 0:
            raise PluginError(f"dsgan: need --ds-lambda >= 0 and --ds-tau > 0 (got {ds_lambda}, {ds_tau})")

    @staticmethod
    @hookimpl
    def gan_add_options():
        return [
            click.Option(["--ds-lambda"], type=float, default=4.0, show_default=True,
                         help="dsgan: weight of the diversity-sensitive term (0 = off)"),
            click.Option(["--ds-tau"], type=float, default=0.2, show_default=True,
                         help="dsgan: cap of the image/latent distance ratio (mean absolute differences)"),
        ]

    @hookimpl
    def gan_configure(self, config):
        if self.loss_weight > 0 and config.batch_gpu % 2 != 0:
            raise PluginError(f"dsgan: the per-GPU batch ({config.batch_gpu}) must be even (pairs fill its two halves); "
                              "change --batch / --batch-gpu or pass --ds-lambda=0")

    @hookimpl
    def gan_extend_networks(self, G, D):
        if G.c_dim == 0:
            raise PluginError("plugin 'dsgan' needs class labels: the networks are unconditional (its pairs share a "
                              "class; use --cond=1 with a labelled dataset, or add selfcond)")

    @hookimpl
    def gan_generator_batch(self, phase, z, c, cur_nimg):
        """Pairs: row i + B/2 takes the class of row i; every row keeps its own z."""
        if phase != "Gmain" or self.loss_weight == 0:
            return None
        half = z.shape[0] // 2
        return z, torch.cat([c[:half], c[:half], c[2 * half:]])

    @hookimpl
    def gan_loss_terms(self, ctx):
        if ctx.phase != "Gmain" or self.loss_weight == 0:
            return []
        half = ctx.gen_img.shape[0] // 2
        ratio = latent_image_ratio(ctx.gen_img[:half], ctx.gen_img[half:2 * half],
                                   ctx.gen_z[:half], ctx.gen_z[half:2 * half])
        training_stats.report("DSGAN/ratio", ratio)  # Before the cap: how far the pairs are from collapse.
        return [("diversity", self.loss_weight, -ratio.clamp(max=self.tau).mean())]
