"""The baseline as a plugin: StyleGAN2-ADA's own answers to every firstresult hook, registered ``trylast``.

The host registers it in every run (it is not named in ``--plugins``), so each firstresult hook always has an
answer: another plugin's when one answers, else this one. The loop therefore has no "None -> default" branches.
"""

import numpy as np
import torch

from torch_utils import misc

from .hookspecs import hookimpl

PLUGIN_NAME = "sg2ada"


class Sg2Ada:
    version = "1.0"

    def __init__(self):
        self.ctx = None

    @hookimpl(trylast=True)
    def gan_setup(self, ctx):
        self.ctx = ctx

    @hookimpl(trylast=True)
    def gan_label_dim(self, label_dim):
        return label_dim

    @hookimpl(trylast=True)
    def gan_real_labels(self, labels):
        c_dim = self.ctx.c_dim
        if labels.shape[1] != c_dim:
            from plugins import PluginError

            raise PluginError(f"the networks have c_dim={c_dim} but the data's labels are {labels.shape[1]} wide and "
                              "no plugin provides real labels (gan_real_labels)")
        return labels

    @hookimpl(trylast=True)
    def gan_sample_fake_labels(self, n, rng, dataset, class_counts):
        """G's label prior when it has one (the networks' own classes, e.g. clusters), else --fake-labels."""
        c_dim = self.ctx.c_dim
        prior = misc.label_prior(self.ctx.G)
        if prior is not None:
            onehot = np.zeros([n, c_dim], dtype=np.float32)
            onehot[np.arange(n), rng.choice(c_dim, size=n, p=prior)] = 1
            return onehot
        if dataset.label_dim != c_dim:
            from plugins import PluginError

            raise PluginError(f"the networks have c_dim={c_dim} but the dataset's labels are {dataset.label_dim} wide; "
                              "the plugin that set the width must sample fake labels or set a label prior")
        if self.ctx.config.fake_labels == "uniform" and dataset.label_dim > 0 and dataset.has_onehot_labels:
            present = np.flatnonzero(class_counts > 0)
            onehot = np.zeros([n, c_dim], dtype=np.float32)
            onehot[np.arange(n), present[rng.randint(len(present), size=n)]] = 1
            return onehot
        return np.stack([dataset.get_label(rng.randint(len(dataset))) for _ in range(n)])  # Class frequencies.

    @hookimpl(trylast=True)
    def gan_generator_batch(self, z, c):
        return z, c

    @hookimpl(trylast=True)
    def gan_real_logits(self, ctx):
        return ctx.real_logits

    @hookimpl(trylast=True)
    def gan_grid_labels(self, labels, c_dim, G, random_seed):
        if labels.shape[1] == c_dim:
            return labels
        prior = misc.label_prior(G)  # The networks' own classes: draw the grid's from G's label prior.
        probs = prior if prior is not None else np.full([c_dim], 1 / c_dim)
        ids = np.random.RandomState(random_seed).choice(c_dim, size=labels.shape[0], p=probs)
        return np.eye(c_dim, dtype=np.float32)[ids]

    @hookimpl(trylast=True)
    def gan_snapshot_images(self, G_ema, grid_z, grid_c):
        with torch.no_grad():
            images = [G_ema(z=z, c=c, noise_mode="const").cpu() for z, c in zip(grid_z, grid_c)]
        return {"fakes": torch.cat(images).numpy()}
