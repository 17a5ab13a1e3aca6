"""StyleGAN2 loss: non-saturating logistic loss, lazy R1, path-length regularisation, style mixing.

Plugins contribute through the host facade (plugins.host.PluginHost), never by name:
  host.generator_batch(...)   may replace (z, c) of a generator batch (e.g. twins)
  host.base_loss_weight(...)  multiplier of the adversarial base terms (product over plugins)
  host.loss_terms(...)        extra named per-sample terms, summed into the phase loss
  host.real_logits_for(...)   which real logit feeds R1 and the ADA signal
"""

import numpy as np
import torch

import dnnlib
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


class StyleGAN2Loss:
    def __init__(self, device, G, D, augment_pipe=None, host=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.host = host
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma = r1_gamma
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_weight = pl_weight
        self.pl_mean = torch.zeros([], device=device)
        self.cur_nimg = 0  # Set by the loop before every iteration (plugins schedule from it).
        self.on_real_signal = None  # Callback receiving the real logits that drive ADA (AdaController.accumulate).

    # ------------------------------------------------------------------ networks

    def run_G(self, z, c, capture=None):
        """Images, ws and the capture dict (mapping streams, block outputs) of one generator pass."""
        capture = {} if capture is None else capture
        ws = self.G.mapping(z, c, capture=capture)
        if self.style_mixing_prob > 0:
            with torch.autograd.profiler.record_function("style_mixing"):
                cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
                cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff,
                                     torch.full_like(cutoff, ws.shape[1]))
                ws[:, cutoff:] = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)[:, cutoff:]
        img = self.G.synthesis(ws, capture=capture)
        return img, ws, capture

    def augment(self, img):
        return self.augment_pipe(img) if self.augment_pipe is not None else img

    def run_D(self, img, c, capture=None):
        return self.D(self.augment(img), c, capture=capture)

    # ------------------------------------------------------------------ helpers

    def _context(self, phase, **kwargs):
        return dnnlib.EasyDict(phase=phase, loss=self, G=self.G, D=self.D, augment_pipe=self.augment_pipe,
                               device=self.device, cur_nimg=self.cur_nimg, **kwargs)

    def _base_weight(self, phase):
        return 1.0 if self.host is None else self.host.base_loss_weight(phase=phase, cur_nimg=self.cur_nimg)

    def _extra_terms(self, ctx, batch_size):
        """Sum of the plugins' weighted extra terms (a scalar tensor) or 0."""
        if self.host is None:
            return 0
        return self.host.loss_terms(ctx, batch_size=batch_size)

    def _generator_batch(self, phase, z, c):
        if self.host is None:
            return z, c
        return self.host.generator_batch(phase=phase, z=z, c=c, cur_nimg=self.cur_nimg)

    # ------------------------------------------------------------------ phases

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        """Run one phase on one micro-batch and backpropagate (gradients accumulate across micro-batches)."""
        assert phase in PHASES, f"unknown phase {phase!r}; expected one of {PHASES}"
        do_Gmain = phase in ("Gmain", "Gboth")
        do_Dmain = phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0

        if do_Gmain:
            self._g_main(gen_z, gen_c, gain)
        if do_Gpl:
            self._g_pl(gen_z, gen_c, gain)
        loss_Dgen = 0
        if do_Dmain:
            loss_Dgen = self._d_fake(gen_z, gen_c, gain)
        if do_Dmain or do_Dr1:
            self._d_real(real_img, real_c, gen_z, gen_c, loss_Dgen, do_Dmain, do_Dr1, gain)

    def _g_main(self, gen_z, gen_c, gain):
        """Maximise D's logits for generated images."""
        with torch.autograd.profiler.record_function("Gmain_forward"):
            gen_z, gen_c = self._generator_batch("Gmain", gen_z, gen_c)
            gen_img, gen_ws, capture = self.run_G(gen_z, gen_c)
            d_capture = {}
            gen_logits = self.run_D(gen_img, gen_c, capture=d_capture)
            training_stats.report("Loss/scores/fake", gen_logits)
            training_stats.report("Loss/signs/fake", gen_logits.sign())
            loss_base = torch.nn.functional.softplus(-gen_logits)  # -log(sigmoid(gen_logits))
            loss = loss_base.mean() * self._base_weight("Gmain")
            ctx = self._context("Gmain", gen_z=gen_z, gen_c=gen_c, gen_img=gen_img, gen_ws=gen_ws, g_capture=capture,
                                gen_logits=gen_logits, d_capture=d_capture)
            loss = loss + self._extra_terms(ctx, batch_size=gen_z.shape[0])
            training_stats.report("Loss/G/loss", loss_base)
        with torch.autograd.profiler.record_function("Gmain_backward"):
            loss.mul(gain).backward()

    def _g_pl(self, gen_z, gen_c, gain):
        """Path-length regularisation on a shrunk batch."""
        with torch.autograd.profiler.record_function("Gpl_forward"):
            batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws, capture = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            with conv2d_gradfix.no_weight_gradients():
                pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                               create_graph=True, only_inputs=True)[0]
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            training_stats.report("Loss/pl_penalty", pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report("Loss/G/reg", loss_Gpl)
            ctx = self._context("Greg", gen_z=gen_z[:batch_size], gen_c=gen_c[:batch_size], gen_img=gen_img,
                                gen_ws=gen_ws, g_capture=capture)
            # `gen_img[:, 0, 0, 0] * 0` keeps every synthesis parameter in the graph (DDP needs a gradient for all).
            loss = (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean() + self._extra_terms(ctx, batch_size=batch_size)
        with torch.autograd.profiler.record_function("Gpl_backward"):
            loss.mul(gain).backward()

    def _d_fake(self, gen_z, gen_c, gain):
        """Minimise D's logits for generated images. Returns the per-sample loss for reporting."""
        with torch.autograd.profiler.record_function("Dgen_forward"):
            gen_z, gen_c = self._generator_batch("Dmain", gen_z, gen_c)
            with torch.no_grad():
                gen_img, _gen_ws, _capture = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            training_stats.report("Loss/scores/fake", gen_logits)
            training_stats.report("Loss/signs/fake", gen_logits.sign())
            loss_Dgen = torch.nn.functional.softplus(gen_logits)
            self._last_fake = dnnlib.EasyDict(gen_z=gen_z, gen_c=gen_c, gen_img=gen_img.detach(), g_capture=_capture)
        with torch.autograd.profiler.record_function("Dgen_backward"):
            (loss_Dgen.mean() * self._base_weight("Dmain")).mul(gain).backward()
        return loss_Dgen

    def _d_real(self, real_img, real_c, gen_z, gen_c, loss_Dgen, do_Dmain, do_Dr1, gain):
        """Maximise D's logits for real images (Dmain) and/or apply R1 (Dreg)."""
        name = "Dreal_Dr1" if do_Dmain and do_Dr1 else "Dreal" if do_Dmain else "Dr1"
        phase = "Dmain" if do_Dmain else "Dreg"
        with torch.autograd.profiler.record_function(name + "_forward"):
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            d_capture = {}
            real_logits = self.run_D(real_img_tmp, real_c, capture=d_capture)
            ctx = self._context(phase, real_img=real_img, real_img_tmp=real_img_tmp, real_c=real_c,
                                real_logits=real_logits, d_capture=d_capture, gen_z=gen_z, gen_c=gen_c)
            if do_Dmain:
                ctx.update(getattr(self, "_last_fake", None) or {})
            # The logit that drives R1 and ADA: D's own unless a plugin provides another one.
            signal_logits = real_logits if self.host is None else self.host.real_logits_for(ctx, default=real_logits)
            training_stats.report("Loss/scores/real", real_logits)
            training_stats.report("Loss/signs/real", signal_logits.sign())
            if self.on_real_signal is not None:
                self.on_real_signal(signal_logits)

            loss = real_logits.sum() * 0
            if do_Dmain:
                loss_Dreal = torch.nn.functional.softplus(-real_logits)
                training_stats.report("Loss/D/loss", loss_Dgen + loss_Dreal)
                loss = loss + loss_Dreal.mean() * self._base_weight("Dmain")
                loss = loss + self._extra_terms(ctx, batch_size=real_img.shape[0])
            if do_Dr1:
                with torch.autograd.profiler.record_function("r1_grads"), conv2d_gradfix.no_weight_gradients():
                    r1_grads = torch.autograd.grad(outputs=[signal_logits.sum()], inputs=[real_img_tmp],
                                                   create_graph=True, only_inputs=True)[0]
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report("Loss/r1_penalty", r1_penalty)
                training_stats.report("Loss/D/reg", loss_Dr1)
                loss = loss + loss_Dr1.mean()
                if not do_Dmain:
                    loss = loss + self._extra_terms(ctx, batch_size=real_img.shape[0])
        self._last_fake = None
        with torch.autograd.profiler.record_function(name + "_backward"):
            loss.mul(gain).backward()
