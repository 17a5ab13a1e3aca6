"""StyleGAN2 loss: non-saturating logistic loss, lazy R1, path-length regularisation, style mixing.

The loss computes; the training loop combines (EDM's shape). `StyleGAN2Loss.passes(...)` runs one phase
on one micro-batch as a sequence of forward passes and yields, for each, a `LossPass`: the named
per-sample base terms and a `LossContext` from which plugins add their own terms. The loop
(`training.training_loop.accumulate_gradients`) weights, reports, sums and backpropagates every term of
a pass in one place, before the next pass runs. The loss holds no plugin host and no state between
phases; the two decisions plugins may take inside a phase arrive as functions:

  rebuild_batch(phase, z, c, cur_nimg) -> (z, c)     e.g. NoisyTwins' twins (Gmain, Dmain)
  select_real_logits(ctx, default) -> logits         e.g. another head's logit for R1 and ADA
"""

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


@dataclasses.dataclass
class LossContext:
    """What a pass hands to plugins (``gan_loss_terms``, ``gan_real_logits``). Fields a pass lacks are None.

    ``phase`` is 'Gmain', 'Greg', 'Dmain' or 'Dreg'; ``side`` says which D pass of the phase this is:
    'fake' (Gmain; Dmain's first pass), 'real' (Dmain's second pass, Dreg) or None (Greg, no D pass).

    * Gmain (side 'fake'): gen_z, gen_c, gen_img, gen_ws, g_capture, gen_logits, d_capture (D's features
      of this fake pass). Gradients flow into G.
    * Greg: gen_z, gen_c, gen_img, gen_ws, g_capture (the path-length batch).
    * Dmain, side 'fake': gen_z, gen_c, gen_img (no gradient to G), g_capture, gen_logits, d_capture (D's
      features of the fakes). Terms returned here are backpropagated with the fake pass.
    * Dmain, side 'real': real_img, real_img_tmp, real_c, real_logits, d_capture (D's features of the reals),
      and the phase's fake batch (gen_z, gen_c, gen_img detached, g_capture) for plugins that run their own
      fake pass. gen_logits is None here: the fake pass's graph is gone.
    * Dreg (side 'real'): real_img, real_img_tmp (R1 differentiates it), real_c, real_logits, d_capture.

    ``loss`` is the StyleGAN2Loss: ``run_G``, ``run_D`` and ``augment`` are the API for extra passes (an
    extra pass through ``augment`` draws new augmentations). ``G`` and ``D`` are the networks of this
    process; under multi-process training they are not wrapped (gradients are averaged by the loop).
    """

    phase: str
    side: Optional[str]
    cur_nimg: int
    device: torch.device
    G: torch.nn.Module
    D: torch.nn.Module
    augment_pipe: Optional[torch.nn.Module]
    loss: "StyleGAN2Loss"
    gen_z: Optional[torch.Tensor] = None
    gen_c: Optional[torch.Tensor] = None
    gen_img: Optional[torch.Tensor] = None
    gen_ws: Optional[torch.Tensor] = None
    g_capture: Optional[Dict[str, Any]] = None
    gen_logits: Optional[torch.Tensor] = None
    d_capture: Optional[Dict[str, Any]] = None
    real_img: Optional[torch.Tensor] = None
    real_img_tmp: Optional[torch.Tensor] = None
    real_c: Optional[torch.Tensor] = None
    real_logits: Optional[torch.Tensor] = None

    # Read-only mapping access (ctx["phase"], "gen_img" in ctx) for plugins written against the EasyDict ctx.
    def __getitem__(self, key):
        return getattr(self, key)

    def __contains__(self, key):
        return getattr(self, key, None) is not None

    def get(self, key, default=None):
        value = getattr(self, key, None)
        return default if value is None else value


@dataclasses.dataclass
class LossTerm:
    """A named per-sample term. The loop adds ``mean(value) * weight`` to the pass's loss and reports ``value``
    as ``Loss/<owner>/<name>``. Base adversarial terms (``adversarial=True``) are further scaled by the
    plugins' gan_base_loss_weight and always enter the loss, even at weight 0."""

    name: str
    weight: float
    value: torch.Tensor
    owner: str = ""  # Set by the loop: the plugin's name, or G / D for the core terms.
    adversarial: bool = False

    @classmethod
    def from_plugin(cls, plugin, term, ctx, batch_size):
        """A plugin's answer to gan_loss_terms, ``LossTerm(name, weight, value)`` or ``(name, weight, value)``,
        checked: a scalar or one value per sample, finite, with a finite weight."""
        from training.plugin_api import PluginError

        if isinstance(term, cls):
            name, weight, value = term.name, term.weight, term.value
        elif isinstance(term, (tuple, list)) and len(term) == 3:
            name, weight, value = term
        else:
            raise PluginError(f"plugin {plugin!r}: gan_loss_terms must return LossTerm(name, weight, value) or "
                                 f"(name, weight, value) tuples, got {term!r}")
        value = torch.as_tensor(value)
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != batch_size):
            raise PluginError(f"plugin {plugin!r}: loss term {name!r} has shape {list(value.shape)}; expected a "
                                 f"scalar or [{batch_size}] (one value per sample)")
        if not torch.isfinite(value.detach()).all():
            raise PluginError(f"plugin {plugin!r}: loss term {name!r} is not finite in phase {ctx.phase} at kimg "
                                 f"{ctx.cur_nimg / 1000:.1f}")
        if not np.isfinite(float(weight)):
            raise PluginError(f"plugin {plugin!r}: loss term {name!r} has weight {weight!r}")
        return cls(name=str(name), weight=float(weight), value=value, owner=plugin)


@dataclasses.dataclass
class LossPass:
    """One forward pass of a phase: its terms, its plugin context, and what the loop needs besides."""

    name: str  # Profiler label: Gmain, Gpl, Dgen, Dreal, Dr1, Dreal_Dr1.
    ctx: LossContext
    terms: List[LossTerm]
    anchor: Optional[torch.Tensor] = None  # A zero that keeps every parameter of the pass in the graph.
    ada_signal: Optional[torch.Tensor] = None  # Real logits whose signs drive ADA.


def keep_batch(phase, z, c, cur_nimg):
    return z, c


def default_real_logits(ctx, default):
    return default


class StyleGAN2Loss:
    def __init__(self, device, G, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10, pl_batch_shrink=2,
                 pl_decay=0.01, pl_weight=2):
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma = r1_gamma
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_weight = pl_weight
        self.pl_mean = torch.zeros([], device=device)

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

    def _ctx(self, phase, side, cur_nimg, **fields):
        return LossContext(phase=phase, side=side, cur_nimg=cur_nimg, device=self.device, G=self.G, D=self.D,
                           augment_pipe=self.augment_pipe, loss=self, **fields)

    # ------------------------------------------------------------------ phases

    def passes(self, phase, real_img, real_c, gen_z, gen_c, cur_nimg, rebuild_batch=keep_batch,
               select_real_logits=default_real_logits):
        """Yield the LossPasses of one phase on one micro-batch; the caller backpropagates each before the next."""
        assert phase in PHASES, f"unknown phase {phase!r}; expected one of {PHASES}"
        do_Gmain = phase in ("Gmain", "Gboth")
        do_Dmain = phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0

        if do_Gmain:
            z, c = rebuild_batch("Gmain", gen_z, gen_c, cur_nimg)
            yield self._g_main(z, c, cur_nimg)
        if do_Gpl:
            yield self._g_pl(gen_z, gen_c, cur_nimg)
        fake = None
        if do_Dmain:
            z, c = rebuild_batch("Dmain", gen_z, gen_c, cur_nimg)
            fake_pass = self._d_fake(z, c, cur_nimg)
            yield fake_pass
            fake = fake_pass.ctx
        if do_Dmain or do_Dr1:
            yield self._d_real(real_img, real_c, fake, do_Dmain, do_Dr1, cur_nimg, select_real_logits)

    def _g_main(self, gen_z, gen_c, cur_nimg):
        """Maximise D's logits for generated images."""
        gen_img, gen_ws, capture = self.run_G(gen_z, gen_c)
        d_capture = {}
        gen_logits = self.run_D(gen_img, gen_c, capture=d_capture)
        training_stats.report("Loss/scores/fake", gen_logits)
        training_stats.report("Loss/signs/fake", gen_logits.sign())
        loss_base = torch.nn.functional.softplus(-gen_logits)  # -log(sigmoid(gen_logits))
        ctx = self._ctx("Gmain", "fake", cur_nimg, gen_z=gen_z, gen_c=gen_c, gen_img=gen_img, gen_ws=gen_ws,
                        g_capture=capture, gen_logits=gen_logits, d_capture=d_capture)
        return LossPass("Gmain", ctx, [LossTerm("loss", 1.0, loss_base, owner="G", adversarial=True)])

    def _g_pl(self, gen_z, gen_c, cur_nimg):
        """Path-length regularisation on a shrunk batch."""
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
        # `gen_img[:, 0, 0, 0] * 0` keeps every synthesis parameter in the graph (all ranks need a gradient for all).
        ctx = self._ctx("Greg", None, cur_nimg, gen_z=gen_z[:batch_size], gen_c=gen_c[:batch_size], gen_img=gen_img,
                        gen_ws=gen_ws, g_capture=capture)
        return LossPass("Gpl", ctx, [LossTerm("reg", 1.0, gen_img[:, 0, 0, 0] * 0 + loss_Gpl, owner="G")])

    def _d_fake(self, gen_z, gen_c, cur_nimg):
        """Minimise D's logits for generated images."""
        with torch.no_grad():
            gen_img, _gen_ws, g_capture = self.run_G(gen_z, gen_c)
        d_capture = {}
        gen_logits = self.run_D(gen_img, gen_c, capture=d_capture)
        training_stats.report("Loss/scores/fake", gen_logits)
        training_stats.report("Loss/signs/fake", gen_logits.sign())
        loss_Dgen = torch.nn.functional.softplus(gen_logits)
        ctx = self._ctx("Dmain", "fake", cur_nimg, gen_z=gen_z, gen_c=gen_c, gen_img=gen_img, g_capture=g_capture,
                        gen_logits=gen_logits, d_capture=d_capture)
        return LossPass("Dgen", ctx, [LossTerm("fake", 1.0, loss_Dgen, owner="D", adversarial=True)])

    def _d_real(self, real_img, real_c, fake, do_Dmain, do_Dr1, cur_nimg, select_real_logits):
        """Maximise D's logits for real images (Dmain) and/or apply R1 (Dreg)."""
        name = "Dreal_Dr1" if do_Dmain and do_Dr1 else "Dreal" if do_Dmain else "Dr1"
        real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
        d_capture = {}
        real_logits = self.run_D(real_img_tmp, real_c, capture=d_capture)
        fake_fields = {}
        if fake is not None:  # The phase's fake batch, for plugins that make their own fake pass.
            fake_fields = dict(gen_z=fake.gen_z, gen_c=fake.gen_c, gen_img=fake.gen_img, g_capture=fake.g_capture)
        ctx = self._ctx("Dmain" if do_Dmain else "Dreg", "real", cur_nimg, real_img=real_img, real_img_tmp=real_img_tmp,
                        real_c=real_c, real_logits=real_logits, d_capture=d_capture, **fake_fields)
        # The logit that drives R1 and ADA: D's own unless a plugin provides another one.
        signal_logits = select_real_logits(ctx, real_logits)
        training_stats.report("Loss/scores/real", real_logits)
        training_stats.report("Loss/signs/real", signal_logits.sign())

        terms = []
        if do_Dmain:
            loss_Dreal = torch.nn.functional.softplus(-real_logits)
            if fake is not None:
                training_stats.report("Loss/D/loss", torch.nn.functional.softplus(fake.gen_logits.detach()) + loss_Dreal)
            terms.append(LossTerm("real", 1.0, loss_Dreal, owner="D", adversarial=True))
        if do_Dr1:
            with torch.autograd.profiler.record_function("r1_grads"), conv2d_gradfix.no_weight_gradients():
                r1_grads = torch.autograd.grad(outputs=[signal_logits.sum()], inputs=[real_img_tmp],
                                               create_graph=True, only_inputs=True)[0]
            r1_penalty = r1_grads.square().sum([1, 2, 3])
            training_stats.report("Loss/r1_penalty", r1_penalty)
            terms.append(LossTerm("reg", 1.0, r1_penalty * (self.r1_gamma / 2), owner="D"))
        return LossPass(name, ctx, terms, anchor=real_logits.sum() * 0, ada_signal=signal_logits)
