"""Backbone selection: the linear probe, and the official progressive schedule as a driver.

Probe (the paper's model selection): global-vector features of n = min(|dataset|, --num) real images (no
augmentation, no flip) and n G_ema images (c drawn in proportion to the dataset's class counts); a logistic
regression (L2, C=0.2, max_iter 5000, scikit-learn) separates real from fake on 3 random 50/50 splits; the score
is the mean validation accuracy. The best backbone not yet used is suggested; its loss gets `_s` (label
smoothing) when the accuracy exceeds 0.9 or the augmentation is diffaug (the official rule).

Progressive driver: a baseline run, then stages that each add the best unused backbone, every stage restarting
from the previous stage's best snapshot (lowest value of --metric) with fresh optimisers (weights-only resume)
and the vision-aided terms on at once (warm-up 0).
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

SMOOTH_ABOVE = 0.9


def linear_probe(real, fake, splits=3, seed=0, C=0.2, max_iter=5000):
    """Mean validation accuracy of an L2 logistic regression separating real [n, d] from fake [n, d] features."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)])
    y = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(splits):
        order = rng.permutation(len(x))
        train, val = order[:len(x) // 2], order[len(x) // 2:]
        model = LogisticRegression(C=C, max_iter=max_iter).fit(x[train], y[train])
        scores.append(float(model.score(x[val], y[val])))
    return float(np.mean(scores))


def suggest(accuracies, head_types, used=(), aug="ada"):
    """(best unused backbone, its loss) from {name: accuracy}; None when every candidate is used."""
    from .losses import default_loss

    unused = {name: acc for name, acc in accuracies.items() if name not in used}
    if not unused:
        return None
    best = max(unused, key=lambda name: unused[name])
    return best, default_loss(head_types[best], smooth=unused[best] > SMOOTH_ABOVE or aug == "diffaug")


@torch.no_grad()
def backbone_vectors(backbone, batches):
    return np.concatenate([backbone(x)[1].cpu().numpy() for x in batches])


def real_and_fake_batches(G, dataset, n, batch, device, seed=0):
    """Lists of image batches in [-1, 1]: n dataset images (no flip) and n G images (c ~ dataset counts)."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(dataset), n, replace=False))
    reals = [torch.as_tensor(np.stack([dataset[int(i)][0] for i in index[s:s + batch]]), device=device)
             .to(torch.float32) / 127.5 - 1 for s in range(0, n, batch)]
    fakes = []
    labels = np.stack([dataset.get_label(int(i)) for i in rng.choice(len(dataset), n)]) if G.c_dim else None
    for s in range(0, n, batch):
        m = min(batch, n - s)
        z = torch.as_tensor(rng.standard_normal([m, G.z_dim]), dtype=torch.float32, device=device)
        c = torch.as_tensor(labels[s:s + m], device=device) if labels is not None else torch.zeros([m, 0], device=device)
        fakes.append(G(z, c, noise_mode="const").clamp(-1, 1))
    return reals, fakes


def run_probe(network, data, candidates, weights=None, num=10000, batch=64, used=(), aug="ada", random_init=False,
              device="cpu", log=print):
    """{name: accuracy} and the suggestion for a snapshot and a dataset."""
    import dnnlib
    import legacy

    from . import weights as weights_mod
    from .backbones import build_backbone

    device = torch.device(device)
    with dnnlib.util.open_url(network) as f:
        G = legacy.load_network_pkl(f)["G_ema"].to(device).eval()
    dataset = dnnlib.util.construct_class_by_name(class_name="training.dataset.ImageFolderDataset", path=data,
                                                  use_labels=bool(G.c_dim), xflip=False)
    n = min(len(dataset), int(num))
    reals, fakes = real_and_fake_batches(G, dataset, n, batch, device)
    explicit = weights_mod.parse_pairs(weights, "--va-weights")
    accuracies, head_types = {}, {}
    for name in candidates:
        try:
            path, _ = weights_mod.resolve(name, explicit=explicit.get(name))
        except Exception:
            if not random_init or name.startswith("torchscript:"):
                raise
            path = None
        backbone = build_backbone(name, path, random_init=random_init).to(device).eval().requires_grad_(False)
        accuracies[name] = linear_probe(backbone_vectors(backbone, reals), backbone_vectors(backbone, fakes))
        head_types[name] = backbone.head_type
        log(f"  {name:<24s} accuracy {accuracies[name]:.4f}")
    return accuracies, suggest(accuracies, head_types, used=used, aug=aug)


def best_snapshot(run_dir, metric):
    """The snapshot with the lowest recorded value of metric (metric-<metric>.jsonl), else the latest."""
    path = os.path.join(run_dir, f"metric-{metric}.jsonl")
    if os.path.isfile(path):
        rows = [json.loads(line) for line in open(path) if line.strip()]
        rows = [r for r in rows if np.isfinite(r["results"].get(metric, np.nan))]
        if rows:
            best = min(rows, key=lambda r: r["results"][metric])
            return os.path.join(run_dir, best["snapshot_pkl"])
    snaps = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
    if not snaps:
        raise FileNotFoundError(f"{run_dir} holds no network-snapshot-*.pkl")
    return snaps[-1]


def _new_run_dir(outdir, before):
    after = set(glob.glob(os.path.join(outdir, "*")))
    created = sorted(after - before)
    if not created:
        raise RuntimeError(f"train.py made no run directory in {outdir}")
    return created[-1]


def progressive(outdir, data, stages, candidates, metric, train_args, weights=None, aug="ada", random_init=False,
                num=10000, python=sys.executable, log=print):
    """Baseline for stages[0] kimg, then one stage per further entry, each adding the best unused backbone."""
    os.makedirs(outdir, exist_ok=True)
    train = [python, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                  "train.py"), f"--outdir={outdir}", f"--data={data}", f"--metrics={metric}", *train_args]
    before = set(glob.glob(os.path.join(outdir, "*")))
    subprocess.run(train + [f"--kimg={stages[0]}"], check=True)
    run_dir = _new_run_dir(outdir, before)
    used, losses = [], []
    for stage, kimg in enumerate(stages[1:], start=1):
        snap = best_snapshot(run_dir, metric)
        log(f"stage {stage}: probing {', '.join(c for c in candidates if c not in used)} on {snap}")
        _acc, choice = run_probe(snap, data, [c for c in candidates if c not in used], weights=weights, num=num,
                                 used=used, aug=aug, random_init=random_init, log=log)
        if choice is None:
            log("every candidate is in use; stopping")
            break
        earlier = list(used)
        used.append(choice[0])
        losses.append(choice[1])
        start = os.path.join(outdir, f"stage{stage}-start.pkl")
        shutil.copy(snap, start)  # Alone, without its training state: fresh optimisers, as the official stages.
        options = ["--plugins=vision_aided", f"--va-backbones={'+'.join(used)}", f"--va-loss={'+'.join(losses)}",
                   "--va-warmup-kimg=0", f"--va-aug={aug}", f"--resume={start}", f"--kimg={kimg}"]
        if earlier:  # The earlier backbones' heads continue from the best snapshot (the official cvD restore).
            options.append(f"--va-heads-from={snap}")
        if weights:
            options.append(f"--va-weights={weights}")
        if random_init:
            options.append("--va-random-init")
        before = set(glob.glob(os.path.join(outdir, "*")))
        log(f"stage {stage}: {' '.join(options)}")
        subprocess.run(train + options, check=True)
        run_dir = _new_run_dir(outdir, before)
    return run_dir
