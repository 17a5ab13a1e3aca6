"""Mode coverage of a generator: how many classes (modes) its samples hit, and the reverse KL to uniform.

A classifier labels N generated images; modes = classes predicted at least once (of M), reverse KL =
sum_{p_i > 0} p_i * log10(p_i * M) against the uniform distribution over the M classes (base 10, as in
PacGAN and the self-conditioned GAN paper). A 1-channel classifier applied to C-channel images labels each
channel separately and combines the answers (stacked MNIST: 10 digits in 3 channels = 1000 modes).
The generator's labels come from its label prior (e.g. selfcond's clusters), else uniformly.
"""

import copy
import os

import numpy as np
import torch

from torch_utils import misc

from . import metric_utils, offline_classifier
from .metric_utils import MetricError


def modes_and_reverse_kl(predicted, num_modes):
    """(modes hit, reverse KL in log10) of predicted mode ids [N] against uniform over num_modes."""
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=num_modes).astype(np.float64)
    if counts.sum() == 0:
        raise MetricError("mode coverage needs at least one generated image")
    p = counts / counts.sum()
    hit = p > 0
    return int(hit.sum()), float(np.sum(p[hit] * np.log10(p[hit] * num_modes)))


def classifier_layout(path, img_channels):
    """(classes K, per-channel?) of a classifier, from its .json info (written by offline_classifier)."""
    info_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(info_path):
        raise MetricError(f"classifier {path!r} has no {os.path.basename(info_path)} beside it (num_classes, channels); "
                          "use one written by python -m metrics.offline_classifier")
    info = offline_classifier.read_info(path)
    return int(info["num_classes"]), int(info.get("channels", img_channels)) == 1 and img_channels > 1


def predicted_modes(opts, classifier_path, num_gen, batch=64):
    """(mode ids [num_gen], number of modes M) of G's samples."""
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    classes, per_channel = classifier_layout(classifier_path, G.img_channels)
    num_modes = classes ** G.img_channels if per_channel else classes
    classifier = metric_utils.get_feature_detector(classifier_path, device=opts.device, opts=opts)
    prior = misc.label_prior(G)
    rng = np.random.default_rng(opts.seed if opts.seed is not None else 0)
    sampler = metric_utils.FakeLabelSampler(None, G.c_dim, "dataset" if prior is not None else "uniform", rng=rng, prior=prior)
    gen = torch.Generator(device=opts.device).manual_seed(int(opts.seed or 0))
    ids = []
    for start in range(0, num_gen, batch):
        n = min(batch, num_gen - start)
        z = torch.randn([n, G.z_dim], device=opts.device, generator=gen)
        c, _ = sampler.sample(n)
        with torch.no_grad():
            img = G(z=z, c=torch.from_numpy(c).to(opts.device), **opts.G_kwargs)
            img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
            if per_channel:  # Each channel's class is one digit of the mode id.
                mode = torch.zeros([n], dtype=torch.int64, device=opts.device)
                for ch in range(G.img_channels):
                    mode = mode * classes + classifier(img[:, ch:ch + 1]).argmax(dim=1)
            else:
                mode = classifier(img).argmax(dim=1)
        ids.append(mode.cpu())
    return torch.cat(ids).numpy(), num_modes


def compute_mode_coverage(opts, num_gen, classifier_path):
    if opts.rank != 0:
        return dict(modes=float("nan"), reverse_kl=float("nan"))
    ids, num_modes = predicted_modes(opts, classifier_path, num_gen)
    modes, rkl = modes_and_reverse_kl(ids, num_modes)
    opts.report["num_modes"] = num_modes
    return dict(modes=modes, reverse_kl=rkl)
