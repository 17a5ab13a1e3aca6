"""Crash-consistent checkpoints: a training process killed at each write phase resumes to the same weights as an
uninterrupted run, never from a mismatched snapshot/state pair, and sub-kimg ticks never overwrite a checkpoint."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from plugins import hookimpl
from plugins.testing import run_tiny_training
from training import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = """
import sys
sys.path.insert(0, {repo!r})
from plugins import hookimpl
from plugins.testing import run_tiny_training
from training import checkpoint
run_dir, data, resume = sys.argv[1], sys.argv[2], sys.argv[3]
kwargs = dict(zip(("resume_pkl", "resume_state"), checkpoint.resolve_resume(resume))) if resume != "-" else {{}}
run_tiny_training(run_dir, data, iterations=None, total_kimg=0.064, kimg_per_tick=0.016, network_snapshot_ticks=1,
                  **kwargs)
"""


def train(run_dir, data, resume="-", crash_at=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("GAN_CRASH_AT", None)
    if crash_at is not None:
        env.update(GAN_CRASH_AT=crash_at, GAN_CRASH_AT_NIMG="40")
    return subprocess.run([sys.executable, "-c", RUN.format(repo=REPO), run_dir, data, resume], capture_output=True,
                          text=True, cwd=REPO, env=env)


def final_weights(run_dir):
    with open(checkpoint.latest_snapshot(run_dir), "rb") as f:
        data = pickle.load(f)
    return {f"{k}.{n}": t for k in ("G", "D", "G_ema") for n, t in data[k].state_dict().items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_digits):
    run_dir = str(tmp_path_factory.mktemp("crash") / "reference")
    result = train(run_dir, tiny_digits)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_sub_kimg_ticks_get_their_own_checkpoints(reference):
    names = sorted(os.listdir(reference))
    snaps = [n for n in names if n.endswith(".pkl")]
    # Ticks at 8, 24, 40, 56 and 64 images: one pair each, none overwritten.
    assert snaps == ["network-snapshot-000000-000000024.pkl", "network-snapshot-000000-000000040.pkl",
                     "network-snapshot-000000-000000056.pkl", "network-snapshot-000000-000000064.pkl",
                     "network-snapshot-000000.pkl"]
    assert all(checkpoint.state_path_for(os.path.join(reference, s)).rsplit("/", 1)[1] in names for s in snaps)
    # NVIDIA's plain name says whole kimg (0 here); the later ones carry the exact count.
    assert [checkpoint.snapshot_nimg(p) for p in checkpoint.snapshots(reference)] == [0, 24, 40, 56, 64]


@pytest.mark.slow
@pytest.mark.parametrize("phase,resumed_from", [("snapshot-temp", 24), ("snapshot", 24), ("state-temp", 24),
                                                ("state", 40)])
def test_killed_at_each_write_phase_resumes_to_the_same_weights(phase, resumed_from, tmp_path, tiny_digits, reference):
    killed = str(tmp_path / "killed")
    result = train(killed, tiny_digits, crash_at=phase)
    assert result.returncode == 137, result.stderr[-3000:]
    snap, state = checkpoint.resolve_resume(killed, log=lambda *a: None)
    assert checkpoint.snapshot_nimg(snap) == resumed_from and state is not None  # The newest complete pair.
    resumed = str(tmp_path / "resumed")
    result = train(resumed, tiny_digits, resume=killed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(name.endswith(".tmp") for name in os.listdir(killed))  # Removed at the next start.
    expected, got = final_weights(reference), final_weights(resumed)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_mismatched_pair_is_refused(tmp_path, tiny_digits, reference):
    snaps = checkpoint.snapshots(reference)
    newer, older = snaps[-1], snaps[-2]
    with pytest.raises(ValueError, match="belongs to another snapshot"):
        run_tiny_training(str(tmp_path / "r"), tiny_digits, iterations=1, resume_pkl=newer,
                          resume_state=checkpoint.state_path_for(older))


class ListFiles:
    """Records the run directory's checkpoints whenever they changed, seen at the start of an iteration."""

    plugin_name = "listfiles"

    def __init__(self):
        self.seen = []
        self.run_dir = None

    @hookimpl
    def gan_setup(self, ctx):
        self.run_dir = ctx.run_dir

    @hookimpl
    def gan_step(self):
        self.record()

    def record(self):
        listing = sorted(n for n in os.listdir(self.run_dir) if n.endswith(".pkl"))
        if not self.seen or self.seen[-1] != listing:
            self.seen.append(listing)


def test_state_ticks_keep_only_the_newest_checkpoint_between_snapshots(tmp_path, tiny_digits):
    lister = ListFiles()
    trainer = run_tiny_training(str(tmp_path / "run"), tiny_digits, plugins=[lister], iterations=None,
                                total_kimg=0.064, kimg_per_tick=0.016, network_snapshot_ticks=1000, state_ticks=1)
    lister.record()  # After the last tick.
    # Tick 0 is a snapshot tick (as upstream); ticks 1-3 write state checkpoints, each replacing the last one.
    assert lister.seen[0] == [] and lister.seen[1] == ["network-snapshot-000000.pkl"]
    assert lister.seen[2] == ["network-snapshot-000000-000000024.pkl", "network-snapshot-000000.pkl"]
    assert lister.seen[3] == ["network-snapshot-000000-000000040.pkl", "network-snapshot-000000.pkl"]
    assert lister.seen[-1] == ["network-snapshot-000000-000000064.pkl", "network-snapshot-000000.pkl"]
    snap, state = checkpoint.resolve_resume(trainer.run_dir, log=lambda *a: None)
    assert checkpoint.snapshot_nimg(snap) == 64 and state is not None
