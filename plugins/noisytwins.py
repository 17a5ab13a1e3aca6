"""NoisyTwins (Rangwani et al., CVPR 2023): class-embedding noise + a Barlow-Twins loss on w.

On long-tailed data the latents of a tail class collapse. NoisyTwins adds noise to the class
embedding during training (stronger for rare classes) and asks twins (same z and c, independent
noise) to map to w's that are noise-invariant and decorrelated (Barlow Twins), giving diverse,
class-consistent tail classes. Defaults are the official CIFAR10-LT settings.
"""

import click
import numpy as np
import torch

from plugins import PluginError, hookimpl
from plugins.nets.noisytwins_net import EmbeddingNoise
from torch_utils import training_stats

__version__ = "1.0"


def class_scales(counts, beta):
    """lambda_k = (C / sum_j 1/E_j) / E_k with E_k = (1 - beta^n_k) / (1 - beta): mean-one harmonic weights."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1)  # An empty class is treated like a single image.
    if beta == 0:
        return np.ones_like(counts)
    effective = (1 - np.power(beta, counts)) / (1 - beta)
    return (len(counts) / np.sum(1 / effective)) / effective


def barlow_twins_parts(w1, w2, eps=1e-5):
    """(invariance, redundancy) = (sum_d (1 - M_dd)^2, sum_{d != e} M_de^2), M the cross-correlation of the
    per-dimension standardised halves."""
    def standardise(w):
        return (w - w.mean(dim=0)) / torch.sqrt(w.var(dim=0, unbiased=False) + eps)

    n = w1.shape[0]
    m = standardise(w1).t() @ standardise(w2) / n
    on_diag = (1 - torch.diagonal(m)).square().sum()
    off_diag = m.square().sum() - torch.diagonal(m).square().sum()
    return on_diag, off_diag


def barlow_twins_loss(w1, w2, gamma, eps=1e-5):
    """sum_d (1 - M_dd)^2 + gamma * sum_{d != e} M_de^2 with M the cross-correlation of standardised halves."""
    invariance, redundancy = barlow_twins_parts(w1, w2, eps)
    return invariance + gamma * redundancy


class NoisyTwins:
    version = __version__
    plugin_name = "noisytwins"

    def __init__(self, nt_sigma=0.75, nt_beta=0.99, nt_lambda=0.01, nt_gamma=0.05, nt_start_kimg=0, nt_d_noise=True):
        self.sigma = float(nt_sigma)
        self.beta = float(nt_beta)
        self.loss_weight = float(nt_lambda)
        self.gamma = float(nt_gamma)
        self.start_kimg = float(nt_start_kimg)
        self.d_noise = bool(nt_d_noise)  # The official code adds the same noise to D's class embedding too.
        if self.sigma < 0 or not 0 <= self.beta < 1 or self.loss_weight < 0 or self.gamma < 0:
            raise PluginError("noisytwins: need --nt-sigma >= 0, 0 <= --nt-beta < 1, --nt-lambda >= 0, --nt-gamma >= 0")
        self.counts = None
        self.generator = None
        self.d_generator = None
        self.ext = None
        self.d_ext = None
        self.ema_ext = None
        self.ctx = None
        self.shared = None

    @staticmethod
    @hookimpl
    def gan_add_options():
        return [
            click.Option(["--nt-sigma"], type=float, default=0.75, show_default=True, help="NoisyTwins: embedding noise std sigma"),
            click.Option(["--nt-beta"], type=float, default=0.99, show_default=True, help="NoisyTwins: effective-number beta (0 = same noise for all classes)"),
            click.Option(["--nt-lambda"], type=float, default=0.01, show_default=True, help="NoisyTwins: Barlow-Twins loss weight (0 = noise only)"),
            click.Option(["--nt-gamma"], type=float, default=0.05, show_default=True, help="NoisyTwins: off-diagonal (redundancy) weight"),
            click.Option(["--nt-start-kimg"], type=float, default=0, show_default=True, help="NoisyTwins: kimg at which the Barlow-Twins loss starts"),
            click.Option(["--nt-d-noise"], type=bool, default=True, show_default=True, metavar="BOOL",
                         help="NoisyTwins: the same embedding noise in D's label mapping during training (official; 0 = ablation)"),
        ]

    def barlow_weight(self, cur_nimg):
        """Weight of the Barlow-Twins term: 0 below --nt-start-kimg, --nt-lambda from then on."""
        return self.loss_weight if cur_nimg / 1000 >= self.start_kimg else 0.0

    # ------------------------------------------------------------------ setup

    @hookimpl
    def gan_configure(self, config):
        if config.get("fake_labels") is None:  # The official runs sample fake classes uniformly.
            config.fake_labels = "uniform"
            print("noisytwins: fake labels default to uniform, as in the official runs (pass --fake-labels=dataset "
                  "for class-frequency labels)")
        if self.loss_weight > 0:
            if config.batch_gpu % 2 != 0 or config.batch_gpu < 4:
                raise PluginError(f"noisytwins: the per-GPU batch ({config.batch_gpu}) must be even and at least 4 "
                                  "(twins fill its two halves); change --batch / --batch-gpu or pass --nt-lambda=0")
            if config.batch_gpu // 2 < 16:
                print(f"Warning: noisytwins: only {config.batch_gpu // 2} twin pairs per GPU; the Barlow-Twins "
                      "correlation estimate is noisy below 16")

    @hookimpl
    def gan_extend_networks(self, G, D):
        if G.c_dim == 0:
            raise PluginError("plugin 'noisytwins' needs class labels: the networks are unconditional "
                              "(use --cond=1 with a labelled dataset, or add selfcond)")
        G.mapping.extensions["noisytwins"] = EmbeddingNoise(c_dim=G.c_dim, sigma=self.sigma)
        if self.d_noise:  # D is never switched to eval during training, so its noise is on in every D pass.
            D.mapping.extensions["noisytwins"] = EmbeddingNoise(c_dim=D.c_dim, sigma=self.sigma)

    def _set_scales(self):
        scales = torch.as_tensor(class_scales(self.counts, self.beta), dtype=torch.float32)
        for ext in (self.ext, self.d_ext, self.ema_ext):
            if ext is not None:
                ext.lambda_k.copy_(scales)

    @hookimpl
    def gan_setup(self, ctx):
        if ctx.class_counts is None:
            raise PluginError(f"plugin 'noisytwins' needs class labels: dataset '{ctx.dataset.name}' has no "
                              "one-hot class labels (use --cond=1 with a labelled dataset, or add selfcond, which makes its own)")
        self.counts = np.asarray(ctx.class_counts, dtype=np.int64)  # Final: selfcond's clusters are announced first.
        state = ctx.restored_state(self) or {}
        if state.get("counts") is not None and list(self.counts) != state["counts"]:
            print("Warning: noisytwins: the resumed run had other class counts; lambda_k follows the current data")
        self.ext = ctx.G.mapping.extensions["noisytwins"]
        self.ema_ext = ctx.G_ema.mapping.extensions["noisytwins"]
        self.d_ext = ctx.D.mapping.extensions["noisytwins"] if self.d_noise else None
        self._set_scales()
        # The noise has its own generators (seeded by run seed and rank) so it never shifts the trainer's RNG;
        # D's is separate so that --nt-d-noise=0 leaves G's noise exactly as it is with D's noise on.
        seed, rank = ctx.random_seed, ctx.rank
        saved = state.get("generators_per_rank")
        own = saved[rank] if saved is not None and len(saved) == ctx.num_gpus else [state.get("generator"),
                                                                                     state.get("d_generator")]
        self.generator = self._make_generator(ctx.device, 1000003 * seed + rank, own[0])
        self.ext.generator = self.generator
        if self.d_ext is not None:
            self.d_generator = self._make_generator(ctx.device, 2000029 * seed + rank + 1, own[1])
            self.d_ext.generator = self.d_generator
        self.ctx = ctx
        self.shared = ctx.shared  # Read when the batch is built: another plugin may publish in its gan_step.

    @staticmethod
    def _make_generator(device, seed, resumed_state):
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        if resumed_state is not None:
            generator.set_state(resumed_state)
        return generator

    @hookimpl
    def gan_class_counts_changed(self, class_counts):
        """Another plugin relabelled the data (e.g. new clusters): lambda_k follows the new counts."""
        self.counts = np.asarray(class_counts, dtype=np.int64)
        self._set_scales()

    # ------------------------------------------------------------------ iteration

    def twins_active(self, cur_nimg):
        # With a plugin that ramps the class in (transitional), twins are identical while the label has no
        # effect (label_weight 0), so the loss waits for it.
        return self.barlow_weight(cur_nimg) > 0 and (self.shared or {}).get("label_weight", 1.0) > 0

    @hookimpl
    def gan_generator_batch(self, phase, z, c, cur_nimg):
        """Twins: rows i and i + B/2 share z and c; only while the Barlow-Twins loss is active."""
        if phase != "Gmain" or not self.twins_active(cur_nimg):
            return None
        half = z.shape[0] // 2
        return torch.cat([z[:half], z[:half]]), torch.cat([c[:half], c[:half]])

    @hookimpl
    def gan_loss_terms(self, ctx):
        if ctx.phase != "Gmain" or not self.twins_active(ctx.cur_nimg):
            return []
        w = ctx.g_capture["w_streams"]["w"]  # The conditional stream, before broadcast, truncation and mixing.
        half = w.shape[0] // 2
        invariance, redundancy = barlow_twins_parts(w[:half], w[half:2 * half])
        # The two parts on their own, so a run shows whether twins become noise-invariant (invariance -> 0).
        training_stats.report("NoisyTwins/invariance", invariance)
        training_stats.report("NoisyTwins/redundancy", redundancy)
        return [("barlow", self.barlow_weight(ctx.cur_nimg), invariance + self.gamma * redundancy)]

    # ------------------------------------------------------------------ state

    @hookimpl
    def gan_state_dict(self):
        if self.ctx is None:  # Not set up (a unit test of the class alone).
            return dict(counts=None if self.counts is None else self.counts.tolist())
        # Each rank draws its noise from its own generators: all of them are saved (a collective call).
        states = self.ctx.per_rank([g.get_state() if g is not None else None for g in (self.generator, self.d_generator)])
        return dict(counts=None if self.counts is None else self.counts.tolist(), generators_per_rank=states,
                    generator=states[0][0], d_generator=states[0][1])


