"""SHA-256 of the trained weights after N CPU iterations of the tiny test config, per plugin set.

  OMP_NUM_THREADS=1 python bench/weight_hashes.py [--iterations=10] [--out=hashes.json]

A refactoring check, not a benchmark of speed: the same code path must give the same bits before and after
a change that should not alter numerics (e.g. the plugin API rework of issue #20). Each set trains on a 16 px
digits ZIP made here (scikit-learn's load_digits); vision_aided uses a tiny random TorchScript backbone saved
here with a fixed seed; selfcond trains without labels (it makes its own).
"""

import hashlib
import json
import os
import sys
import tempfile

import click
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def weights_digest(trainer):
    h = hashlib.sha256()
    for name in ("G", "D", "G_ema"):
        for key, tensor in sorted(getattr(trainer, name).state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@click.command()
@click.option("--iterations", type=int, default=10, show_default=True)
@click.option("--out", type=str, default=None, help="Also write the digests as JSON here.")
def main(iterations, out):
    from plugins.testing import make_digits_dataset, run_tiny_training, save_tiny_backbone

    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="weight-hashes-")
    data = make_digits_dataset(os.path.join(work, "digits16.zip"), resolution=16)
    script = save_tiny_backbone(os.path.join(work, "tinyconv.pt"))
    va = dict(va_backbones=f"torchscript:{script}", va_warmup_kimg=0)
    sets = [("baseline", [], {}, True), ("noisytwins", ["noisytwins"], {}, True), ("utlo", ["utlo"], {}, True),
            ("transitional", ["transitional"], {}, True), ("selfcond", ["selfcond"], {}, False),
            ("vision_aided", ["vision_aided"], {"vision_aided": va}, True),
            ("noisytwins+utlo", ["noisytwins", "utlo"], {}, True)]
    digests = {}
    for label, names, options, cond in sets:
        trainer = run_tiny_training(os.path.join(work, label), data, plugins=names, options=options,
                                    iterations=iterations, cond=cond)
        digests[label] = weights_digest(trainer)
        print(f"{label:<18s} {digests[label]}", flush=True)
    if out:
        with open(out, "w") as f:
            json.dump(digests, f, indent=2)


if __name__ == "__main__":
    main()
