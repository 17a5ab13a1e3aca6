"""UTLO (Khorram et al., CVPR 2024): unconditional training at lower resolutions for long-tailed data.

G's layers up to resolution res_uc are driven by an unconditional w (w_uc) and get an extra
low-resolution unconditional adversarial loss, so tail classes reuse the coarse structure learned from
all classes; the class acts only above res_uc.

Options (UTLO's own names are hidden aliases): --utlo-res-uc (--res_uc), --utlo-add-uc (--add_uc),
--utlo-alpha (--alpha). Loss weights: a_c = 1/(1+alpha) on the conditional terms, a_uc = alpha/(1+alpha)
on the low-resolution unconditional terms (add_uc=False: a_c = 1, no low-resolution terms).
"""

import click
import torch

from plugins import PluginError, hookimpl
from plugins.nets.utlo_net import LowResHead, UnconditionalStream

__version__ = "1.0"


REG_GAINS = ("official", "sg2ada")


def loss_weights(alpha, add_uc=True):
    """(a_c, a_uc)."""
    if not add_uc:
        return 1.0, 0.0
    return 1.0 / (1.0 + alpha), alpha / (1.0 + alpha)


def _bool(value):
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


class Utlo:
    version = __version__
    plugin_name = "utlo"

    def __init__(self, utlo_res_uc=8, utlo_add_uc=True, utlo_alpha=1.0, utlo_reg_gain="official"):
        self.res_uc = int(utlo_res_uc)
        self.add_uc = _bool(utlo_add_uc)
        self.alpha = float(utlo_alpha)
        self.reg_gain = str(utlo_reg_gain)
        if self.alpha < 0:
            raise PluginError("utlo: --utlo-alpha must be non-negative")
        if self.reg_gain not in REG_GAINS:
            raise PluginError(f"utlo: --utlo-reg-gain={utlo_reg_gain!r}; use one of {', '.join(REG_GAINS)}")

    @staticmethod
    @hookimpl
    def gan_add_options():
        return [
            click.Option(["--utlo-res-uc", "--res_uc", "utlo_res_uc"], type=int, default=8, show_default=True,
                         help="UTLO: highest unconditional resolution res_uc (0 = off)"),
            click.Option(["--utlo-add-uc", "--add_uc", "utlo_add_uc"], type=str, default="1", show_default=True,
                         help="UTLO: add the low-resolution unconditional loss (0 = split-w ablation)"),
            click.Option(["--utlo-alpha", "--alpha", "utlo_alpha"], type=float, default=1.0, show_default=True,
                         help="UTLO: weight ratio alpha (a_c = 1/(1+alpha), a_uc = alpha/(1+alpha))"),
            click.Option(["--utlo-reg-gain"], type=click.Choice(REG_GAINS), default="official", show_default=True,
                         help="UTLO: 'official' runs R1 and PL without sg2ada's lazy-regularisation gain (as the "
                              "official code does: 1/16 and 1/4 of sg2ada's strength); 'sg2ada' keeps the gain"),
        ]

    @property
    def active(self):
        return self.res_uc != 0

    # ------------------------------------------------------------------ setup

    @hookimpl
    def gan_configure(self, config, dataset_kwargs):
        trans = (config.get("plugin_kwargs") or {}).get("transitional")
        if trans is not None and not _bool(trans.get("trans_with_utlo", False)):
            # The merged variant is transitional's opt-in (methods-conditional spec section 4).
            raise PluginError("plugins 'utlo' and 'transitional' cannot be combined as they are: both change how the "
                              "class embedding enters the mapping network and which D logit drives R1 and ADA; pass "
                              "--trans-with-utlo=1 for the merged variant, or drop one of them")
        if not self.active:
            return
        resolution = int(dataset_kwargs.resolution)
        res_uc = self.res_uc
        valid = [2 ** i for i in range(2, 20) if 2 ** i <= resolution // 2]
        if res_uc not in valid:
            raise PluginError(f"utlo: --utlo-res-uc={res_uc} is not a resolution of this network below its output "
                              f"({resolution} px); choose one of {valid}")
        if config.G_kwargs.synthesis_kwargs.get("architecture", "skip") != "skip":
            raise PluginError("utlo needs the 'skip' generator architecture (img_uc is the skip image at res_uc)")
        if config.D_kwargs.get("architecture", "resnet") == "skip":
            raise PluginError("utlo needs a 'resnet' or 'orig' discriminator, not 'skip'")
        config.G_kwargs.synthesis_kwargs.separate_torgb_ws = True  # Every toRGB gets its own w slot.
        if self.reg_gain == "official":
            # The loop multiplies lazy regularisation by its interval (sg2ada); the official UTLO loop does not.
            # Dividing gamma and the PL weight by the intervals reproduces it exactly; the config records the result.
            d_interval, g_interval = config.get("D_reg_interval", 16), config.get("G_reg_interval", 4)
            loss = config.setdefault("loss_kwargs", {})
            if d_interval:
                loss["r1_gamma"] = loss.get("r1_gamma", 10) / d_interval
            if g_interval:
                loss["pl_weight"] = loss.get("pl_weight", 2) / g_interval

    @hookimpl
    def gan_setup(self, ctx):
        if self.active and ctx.class_counts is None:  # Final: selfcond's clusters are announced first.
            raise PluginError(f"plugin 'utlo' needs class labels: dataset '{ctx.dataset.name}' has no one-hot class "
                              "labels (use --cond=1 with a labelled dataset, or add selfcond, which makes its own)")

    @hookimpl
    def gan_extend_networks(self, G, D):
        if not self.active:
            return
        if not G.synthesis.separate_torgb_ws:
            raise PluginError("utlo: the generator was built without separate toRGB ws (gan_configure did not run)")
        start, count = G.synthesis.block_ws_offsets()[self.res_uc]
        G.mapping.extensions["utlo"] = UnconditionalStream(w_dim=G.w_dim, res_uc=self.res_uc, num_uc_ws=start + count)
        in_channels = D.b4.in_channels if self.res_uc == 4 else getattr(D, f"b{self.res_uc}").conv0.weight.shape[1]
        epilogue_channels = D.b4.fc.weight.shape[0]
        D.extensions["utlo"] = LowResHead(img_channels=D.img_channels, res_uc=self.res_uc, in_channels=in_channels,
                                          epilogue_channels=epilogue_channels, conv_clamp=D.b4.conv.conv_clamp)

    @hookimpl
    def gan_check_resume(self, snapshot):
        exts = getattr(getattr(snapshot.get("G"), "mapping", None), "extensions", None) or {}
        ext = exts["utlo"] if "utlo" in exts else None
        if ext is not None and self.active and ext.res_uc != self.res_uc:
            raise PluginError(f"utlo: the snapshot was trained with --utlo-res-uc={ext.res_uc}, this run asks for "
                              f"{self.res_uc}; use the same value to resume")

    # ------------------------------------------------------------------ losses

    @hookimpl
    def gan_step(self, ctx):
        if self.active:  # Full-resolution terms of other plugins (transitional's D_uc) take UTLO's a_c too.
            ctx.shared["full_res_loss_weight"] = loss_weights(self.alpha, self.add_uc)[0]

    @hookimpl
    def gan_base_loss_weight(self, phase):
        if not self.active or phase not in ("Gmain", "Dmain"):
            return None
        return loss_weights(self.alpha, self.add_uc)[0]

    def _uc_logits(self, ctx, img_low):
        head = ctx.D.extensions["utlo"]
        return head(ctx.D, ctx.loss.augment(img_low))

    @hookimpl(tryfirst=True)  # Its logits are recorded before the other plugins' terms are asked for.
    def gan_loss_terms(self, ctx):
        # Terms G_uc and D_uc (reported as Loss/utlo/G_uc and Loss/utlo/D_uc, beside sg2ada's Loss/G/loss and
        # Loss/D/loss, which are the conditional terms). Gmain; Dmain's real pass (it runs its own fake and real low-resolution passes, after D's real pass).
        if not self.active or not self.add_uc or ctx.phase not in ("Gmain", "Dmain") or (ctx.phase == "Dmain" and ctx.side != "real"):
            return []
        a_uc = loss_weights(self.alpha, self.add_uc)[1]
        fake_low = ctx.g_capture["block_outputs"][self.res_uc][1]
        logits = ctx.d_capture.setdefault("logits", {})  # Other plugins may add terms on UTLO's head too.
        if ctx.phase == "Gmain":
            logits["utlo_uc_fake"] = self._uc_logits(ctx, fake_low)
            return [("G_uc", a_uc, torch.nn.functional.softplus(-logits["utlo_uc_fake"]).squeeze(1))]
        head = ctx.D.extensions["utlo"]
        logits["utlo_uc_fake"] = self._uc_logits(ctx, fake_low.detach())
        logits["utlo_uc_real"] = self._uc_logits(ctx, head.downsample(ctx.real_img.detach()))
        fake_term = torch.nn.functional.softplus(logits["utlo_uc_fake"])
        real_term = torch.nn.functional.softplus(-logits["utlo_uc_real"])
        return [("D_uc", a_uc, (fake_term + real_term).squeeze(1))]

    # ------------------------------------------------------------------ output

    @hookimpl
    def gan_snapshot_images(self, G_ema, grid_z, grid_c):
        """fakes_uc grid: the class-independent res_uc image, upsampled to the output size."""
        if not self.active:
            return {}
        images = []
        with torch.no_grad():
            for z, c in zip(grid_z, grid_c):
                capture = {}
                G_ema(z=z, c=c, noise_mode="const", capture=capture)
                low = capture["block_outputs"][self.res_uc][1]
                scale = G_ema.img_resolution // low.shape[2]
                images.append(low.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3).cpu())
        return {"fakes_uc": torch.cat(images).numpy()}

