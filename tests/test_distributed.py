"""Multi-process data-parallel training on the CPU (gloo): N processes train as one with the same total batch."""

import os
import pickle

import pytest

from plugins.testing import run_tiny_training
from torch_utils import distributed
from training import checkpoint

# Randomness that is drawn per process is switched off, so that 2 processes and 1 process see the same batch:
# no augmentation, no style mixing, no noise inputs, no path-length regularisation.
DETERMINISTIC = dict(augment_kwargs=None, augment_p=0, ada_target=None, G_reg_interval=None,
                     loss_kwargs=dict(class_name="training.loss.StyleGAN2Loss", r1_gamma=0.1, style_mixing_prob=0,
                                      pl_weight=0))


def tiny_overrides():
    from plugins.testing import tiny_config

    G_kwargs = tiny_config("x", "y").G_kwargs
    G_kwargs.synthesis_kwargs.use_noise = False
    return dict(DETERMINISTIC, G_kwargs=G_kwargs)


def _train(rank, run_dir, data, iterations, resume):
    kwargs = dict(zip(("resume_pkl", "resume_state"), checkpoint.resolve_resume(resume))) if resume else {}
    run_tiny_training(run_dir, data, iterations=iterations, num_gpus=2, rank=rank, batch=8, batch_gpu=4,
                      network_snapshot_ticks=1, **tiny_overrides(), **kwargs)
    distributed.shutdown()


def weights(run_dir):
    with open(checkpoint.latest_snapshot(run_dir), "rb") as f:
        data = pickle.load(f)
    return {f"{k}.{n}": t for k in ("G", "D", "G_ema") for n, t in data[k].state_dict().items()}


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_with_the_same_batch(tmp_path, tiny_digits):
    one = run_tiny_training(str(tmp_path / "one"), tiny_digits, iterations=4, batch=8, batch_gpu=8,
                            network_snapshot_ticks=1, **tiny_overrides())
    two = str(tmp_path / "two")
    distributed.spawn(2, _train, args=(two, tiny_digits, 4, None))
    a, b = weights(one.run_dir), weights(two)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst  # Same batch, same updates; only the order of float sums differs (1e-6 measured).
    snaps = sorted(n for n in os.listdir(two) if n.endswith(".pkl"))
    assert len(snaps) == len(set(snaps)) and len(snaps) >= 2  # Rank 0 alone wrote each snapshot, once.

    resumed = str(tmp_path / "resumed")
    distributed.spawn(2, _train, args=(resumed, tiny_digits, 2, two))
    state = checkpoint.load_state(checkpoint.resolve_resume(resumed, log=lambda *x: None)[1])
    assert state["batch_idx"] == 6 and len(state["rng"]["per_rank"]) == 2
