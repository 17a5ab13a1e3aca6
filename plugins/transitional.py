"""Transitional-cGAN (Shahbazi et al., ICLR 2022): start unconditional, ramp the class in.

With limited data, conditioning from the start makes GANs collapse. The generator's mapping takes norm(z)
only in fc0 and receives the class through a ramped branch ``lambda_t * P(norm E(c))``; D has an
unconditional head (D_uc) beside the projection head (D_c). Losses:

  L_G = sp(-D_uc(G)) + lambda_t * sp(-D_c(G, c))
  L_D = sp(D_uc(G)) + sp(-D_uc(x)) + lambda_t * [sp(D_c(G, c)) + sp(-D_c(x, c))] + R1(D_uc)

``lambda_t = clip((kimg - start) / (end - start), 0, 1)`` in closed form from cur_nimg (a step at start when
end = start). Options: --trans-start-kimg, --trans-end-kimg (the official --t_start_kimg, --t_end_kimg are
hidden aliases). Official default 0/0 (conditional from the start); the paper's limited-data runs use
2000/4000.
"""

import click
import torch

from plugins import PluginError, hookimpl
from plugins.nets.transitional_net import ConditionRamp, TransitionalHeads
from torch_utils import training_stats

__version__ = "1.0"


def label_weight(cur_nimg, start_kimg, end_kimg):
    """lambda_t at cur_nimg: 0 before start, 1 from end on, linear in between (a step at start if equal)."""
    kimg = cur_nimg / 1000
    if end_kimg <= start_kimg:
        return 1.0 if kimg >= start_kimg else 0.0
    return float(min(max((kimg - start_kimg) / (end_kimg - start_kimg), 0.0), 1.0))


class Transitional:
    version = __version__
    plugin_name = "transitional"

    def __init__(self, trans_start_kimg=0.0, trans_end_kimg=0.0, trans_with_utlo=False):
        self.start_kimg = float(trans_start_kimg)
        self.end_kimg = float(trans_end_kimg)
        self.with_utlo = bool(trans_with_utlo)
        self.full_res_weight = 1.0
        if self.start_kimg < 0 or self.end_kimg < self.start_kimg:
            raise PluginError(f"transitional: need 0 <= --trans-start-kimg <= --trans-end-kimg, got "
                              f"{self.start_kimg:g} and {self.end_kimg:g}")
        self.g_ext = None
        self.d_ext = None
        self.fc0_shape = None
        self.weight = 0.0
        self.shared = None

    @staticmethod
    @hookimpl
    def gan_add_options():
        return [
            click.Option(["--trans-start-kimg", "--t_start_kimg", "trans_start_kimg"], type=float, default=0.0,
                         show_default=True, help="transitional: kimg at which the class starts to enter (lambda_t > 0)"),
            click.Option(["--trans-end-kimg", "--t_end_kimg", "trans_end_kimg"], type=float, default=0.0,
                         show_default=True, help="transitional: kimg from which the model is fully conditional (lambda_t = 1)"),
            click.Option(["--trans-with-utlo"], type=bool, default=False, show_default=True, metavar="BOOL",
                         help="transitional: allow --plugins=...utlo... (the merged variant: UTLO's unconditional "
                              "low-resolution layers and loss, transitional's ramped class above them)"),
        ]

    def lambda_at(self, cur_nimg):
        return label_weight(cur_nimg, self.start_kimg, self.end_kimg)

    # ------------------------------------------------------------------ setup

    @hookimpl
    def gan_configure(self, config):
        config.G_kwargs.mapping_kwargs.c_in_fc0 = False  # fc0 sees norm(z) only; the class enters after it.
        if self.with_utlo and "utlo" not in (config.get("plugin_kwargs") or {}):
            raise PluginError("transitional: --trans-with-utlo is for --plugins=transitional,utlo; add utlo or drop the option")
        nt = (config.get("plugin_kwargs") or {}).get("noisytwins")
        if nt is not None and float(nt.get("nt_start_kimg", 0)) < self.end_kimg:
            print(f"Warning: transitional + noisytwins: the Barlow-Twins loss (--nt-start-kimg="
                  f"{float(nt.get('nt_start_kimg', 0)):g}) starts before conditioning is complete "
                  f"(--trans-end-kimg={self.end_kimg:g}); it stays off while lambda_t = 0")

    @hookimpl
    def gan_extend_networks(self, G, D, dataset):
        if G.c_dim == 0:
            raise PluginError(f"plugin 'transitional' needs class labels: dataset '{dataset.name}' has none "
                              "(use --cond=1 with a labelled dataset, or add selfcond)")
        embed = G.mapping.embed.weight.shape[0]
        self.fc0_shape = tuple(G.mapping.fc0.weight.shape)
        G.mapping.extensions["transitional"] = ConditionRamp(embed_features=embed, out_features=self.fc0_shape[0])
        D.extensions["transitional"] = TransitionalHeads(in_features=D.b4.fc.weight.shape[0], cmap_dim=D.b4.cmap_dim)
        D.b4.out = None  # Replaced by out_uc and out_c (as in the official D): no unused parameters.

    @hookimpl
    def gan_check_resume(self, snapshot):
        src = getattr(getattr(snapshot.get("G"), "mapping", None), "fc0", None)
        if src is not None and self.fc0_shape is not None and tuple(src.weight.shape) != self.fc0_shape:
            raise PluginError(
                f"transitional: cannot resume this snapshot: mapping.fc0.weight is {list(src.weight.shape)} there "
                f"but {list(self.fc0_shape)} here (transitional's fc0 takes norm(z) only; a conditional sg2ada "
                "network feeds it the class embedding too). Resume from an unconditional or a transitional snapshot")

    @hookimpl
    def gan_setup(self, ctx):
        self.g_ext = ctx.G.mapping.extensions["transitional"]
        self.d_ext = ctx.D.extensions["transitional"]
        self.shared = ctx.shared  # full_res_loss_weight (UTLO's a_c) is read when the loss terms are built.

    # ------------------------------------------------------------------ iteration

    @hookimpl
    def gan_step(self, ctx):
        self.weight = self.lambda_at(ctx.cur_nimg)
        for ext in (self.g_ext, self.d_ext):
            ext.lambda_t.fill_(self.weight)  # G_ema receives it with the other buffers.
        ctx.shared["label_weight"] = self.weight
        training_stats.report("Progress/transitional_lambda", self.weight)

    @hookimpl
    def gan_base_loss_weight(self, phase):
        return self.weight if phase in ("Gmain", "Dmain") else None

    @hookimpl
    def gan_loss_terms(self, ctx):
        if ctx.phase not in ("Gmain", "Dmain"):
            return []
        uc = ctx.d_capture["logits"]["uc"].squeeze(1)
        weight = float((self.shared or {}).get("full_res_loss_weight", 1.0))
        if ctx.phase == "Gmain":
            return [("G_uc", weight, torch.nn.functional.softplus(-uc))]
        if ctx.side == "fake":
            return [("D_uc_fake", weight, torch.nn.functional.softplus(uc))]
        return [("D_uc_real", weight, torch.nn.functional.softplus(-uc))]

    @hookimpl
    def gan_real_logits(self, ctx):
        """R1 and the ADA signal use the unconditional logit."""
        return ctx.d_capture["logits"]["uc"]
