"""Issue #21: with ADA on, a run resumed from a mid-run checkpoint (the tick-0 pair, a later pair) must end with the
same weights, augmentation probability and ADA state as the uninterrupted run, bit for bit, in one process and in
several. The pairs are written every tick (two iterations), so every one of them falls inside an ADA interval (4):
its accumulators hold signs that the next update still needs."""

import pickle

import pytest
import torch

from plugins.testing import run_tiny_training, save_tiny_backbone
from torch_utils import distributed
from training import checkpoint

ITERATIONS = 6  # Pairs at batch_idx 1 (tick 0), 3, 5 and 6 (the end).
RESUME_AT = (1, 5)  # The tick-0 pair and a later one, both mid-interval (batch_idx % ada_interval != 0).
KW = dict(network_snapshot_ticks=1, image_snapshot_ticks=None, kimg_per_tick=0.016, augment_p=0.2, ada_target=0.6,
          ada_interval=4, ada_kimg=100)


def pairs(run_dir):
    """{batch_idx: (snapshot, state)} of run_dir's checkpoints."""
    found = {}
    for snap in checkpoint.snapshots(run_dir):
        state = checkpoint.load_state(checkpoint.state_path_for(snap))
        found[state["batch_idx"]] = (snap, state)
    return found


def final_weights(run_dir):
    with open(checkpoint.latest_snapshot(run_dir), "rb") as f:
        data = pickle.load(f)
    out = {f"{k}.{n}": t for k in ("G", "D", "G_ema") for n, t in data[k].state_dict().items()}
    out["augment_pipe.p"] = data["augment_pipe"].p
    return out


def check_same_run(straight, resumed, start):
    """The resumed run's checkpoints (ADA state, pl_mean, counters) and final weights are the straight run's."""
    a, b = pairs(straight), pairs(resumed)
    assert sorted(b) == [i for i in sorted(a) if i > start]
    for batch_idx in b:
        sa, sb = a[batch_idx][1], b[batch_idx][1]
        assert sa["ada"] == sb["ada"], (batch_idx, sa["ada"], sb["ada"])
        assert torch.equal(sa["pl_mean"], sb["pl_mean"]), batch_idx
        assert sa.get("pl_mean_per_rank") is None or all(map(torch.equal, sa["pl_mean_per_rank"], sb["pl_mean_per_rank"]))
    wa, wb = final_weights(straight), final_weights(resumed)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ after resuming at batch_idx {start}, e.g. {differ[:4]}: max " \
                       f"{max(float((wa[k].double() - wb[k].double()).abs().max()) for k in differ):.3g}"


def test_one_process_ada_resume_from_tick0_and_later_pair_is_bit_exact(tmp_path, tiny_digits):
    torch.set_num_threads(1)  # Same thread count in every run: identical floating-point reductions.
    straight = str(tmp_path / "straight")
    run_tiny_training(straight, tiny_digits, iterations=ITERATIONS, **KW)
    found = pairs(straight)
    for start in RESUME_AT:
        snap, state = found[start]
        assert state["ada"]["count"] > 0  # Mid-interval: the accumulators must be carried over.
        resumed = str(tmp_path / f"resumed{start}")
        run_tiny_training(resumed, tiny_digits, iterations=ITERATIONS - start, resume=snap, **KW)
        check_same_run(straight, resumed, start)


def _train(rank, run_dir, data, iterations, resume, plugins=()):
    torch.set_num_threads(1)
    run_tiny_training(run_dir, data, iterations=iterations, num_gpus=2, rank=rank, batch=8, batch_gpu=4,
                      resume=resume, plugins=plugins, **KW)
    distributed.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("plugins", [(), ("noisytwins",)], ids=["baseline", "noisytwins"])
def test_two_processes_ada_resume_from_tick0_and_later_pair_is_bit_exact(tmp_path, tiny_digits, plugins):
    """Each process draws its own augmentations and noise (NoisyTwins' too), tracks its own pl_mean and accumulates
    the signs of its share of the batch: all of that must come back per rank."""
    straight = str(tmp_path / "straight")
    distributed.spawn(2, _train, args=(straight, tiny_digits, ITERATIONS, None, plugins))
    found = pairs(straight)
    for start in RESUME_AT:
        snap, _state = found[start]
        resumed = str(tmp_path / f"resumed{start}")
        distributed.spawn(2, _train, args=(resumed, tiny_digits, ITERATIONS - start, snap, plugins))
        check_same_run(straight, resumed, start)


# ----------------------------------------------------------------------------- every built-in plugin


@pytest.mark.parametrize("plugin", ["noisytwins", "utlo", "transitional", "selfcond", "vision_aided", "dsgan"])
def test_every_plugin_resumes_exactly_from_mid_run_checkpoints(tmp_path, tiny_digits, plugin):
    """ADA on, the plugin's own state (noise generators, clusters, heads and their optimisers and ADA, ramps)
    carried across the tick-0 pair and a later one."""
    torch.set_num_threads(1)
    options = {"selfcond": dict(sc_k=10, sc_nimgs=500, sc_recluster_kimg=0.032),
               "transitional": dict(trans_start_kimg=0, trans_end_kimg=0.08)}
    if plugin == "vision_aided":
        script = save_tiny_backbone(str(tmp_path / "tiny.pt"))
        options["vision_aided"] = dict(va_backbones=f"torchscript:{script}", va_warmup_kimg=0)
    options = {plugin: options[plugin]} if plugin in options else {}
    kw = dict(KW, plugins=[plugin], options=options, cond=plugin != "selfcond")
    straight = str(tmp_path / "straight")
    run_tiny_training(straight, tiny_digits, iterations=ITERATIONS, **kw)
    found = pairs(straight)
    for start in RESUME_AT:
        resumed = str(tmp_path / f"resumed{start}")
        run_tiny_training(resumed, tiny_digits, iterations=ITERATIONS - start, resume=found[start][0], **kw)
        check_same_run(straight, resumed, start)
