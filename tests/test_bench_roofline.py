"""bench/train_speed.py's roofline pieces do what they say (their figures are printed by the bench, never asserted)."""

import importlib.util
import os

from tests.conftest import REPO


def load_train_speed():
    spec = importlib.util.spec_from_file_location("train_speed", os.path.join(REPO, "bench", "train_speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv_floor_replays_every_convolution_of_the_step(tiny_digits):
    """Every forward and backward convolution of a step is recorded (G's and D's, R1's double backward included)
    and replayed alone; the replay runs the same ops, so the count matches a plain dispatch count."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    ts = load_train_speed()
    trainer = ts.build_trainer(tiny_digits, "", "tiny", "cpu", 4, dict(aug="noaug"))
    trainer.batch_idx = 0  # Dreg and Greg run on this step too (their interval divides 0).
    floor = ts.conv_floor(trainer, iterations=1, repeats=1)

    aten = torch.ops.aten
    counted = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (aten.convolution.default, aten.convolution_backward.default):
                counted.append(func)
            return func(*args, **(kwargs or {}))

    trainer.batch_idx = 0
    with Count():
        trainer.train_step()
    assert floor["calls_per_iter"] == len(counted) > 20
    assert aten.convolution_backward.default in counted
    assert 1 <= floor["distinct"] <= floor["calls_per_iter"] and floor["seconds_per_iter"] > 0
