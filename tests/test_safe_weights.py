"""Safe weights: the training state loads without running code; snapshots export to safetensors that generate
the same images and are rebuilt from the project's classes only."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from plugins.testing import run_tiny_training
from training import checkpoint
from training.safe_export import SafeExportError, export_networks, load_networks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # Would create the marker file when unpickled.


def test_a_payload_in_the_training_state_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "training-state-000000.pt")
    torch.save(dict(cur_nimg=0, evil=Payload(str(marker))), path)
    with pytest.raises(ValueError, match=r"refusing the training state .*\(unsupported global io\.open\)"):
        checkpoint.load_state(path)
    assert not marker.exists()


def test_real_training_states_load_with_the_allow_list(tmp_path, tiny_digits):
    trainer = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=["noisytwins"], iterations=1,
                                network_snapshot_ticks=1)
    state = checkpoint.load_state(checkpoint.resolve_resume(trainer.run_dir)[1])
    assert isinstance(state["rng"]["numpy"][1], np.ndarray) and state["plugin_names"] == ["noisytwins"]


def _images(G, n=4):
    z = torch.from_numpy(np.random.RandomState(0).randn(n, G.z_dim)).float()
    c = torch.zeros([n, G.c_dim])
    if G.c_dim:
        c[:, 1] = 1
    return G(z, c, noise_mode="const")


def test_safetensors_round_trip_with_plugin_extensions(tmp_path, tiny_digits):
    trainer = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=["transitional"], iterations=1,
                                network_snapshot_ticks=1, export_safetensors=True)
    snap = checkpoint.latest_snapshot(trainer.run_dir)
    exported = os.path.splitext(snap)[0] + ".safetensors"
    assert os.path.isfile(exported)
    with open(snap, "rb") as f:
        pickled = pickle.load(f)["G_ema"]
    G, dataset_kwargs = load_networks(exported)
    G = G["G_ema"]
    assert "transitional" in "".join(G.mapping.extensions.keys()) or len(G.mapping.extensions) > 0
    assert torch.equal(_images(G), _images(pickled))
    assert dataset_kwargs["path"] == tiny_digits
    blob = open(exported, "rb").read()
    assert b"def forward" not in blob and b"import torch" not in blob  # No source code, unlike the pickle.

    # With D, through the command; generate.py and calc_metrics.py take the file.
    out = str(tmp_path / "both.safetensors")
    result = subprocess.run([sys.executable, "-m", "training.safe_export", snap, f"--out={out}", "--with-D"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(load_networks(out)[0]) == {"G_ema", "D"}
    result = subprocess.run([sys.executable, "generate.py", f"--network={exported}", "--seeds=0", "--class=1",
                             f"--outdir={tmp_path / 'gen'}"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and os.path.isfile(tmp_path / "gen" / "seed0000.png"), result.stderr[-2000:]


def test_a_tampered_header_cannot_name_other_code(tmp_path, tiny_digits):
    from safetensors.torch import load_file, save_file

    trainer = run_tiny_training(str(tmp_path / "a"), tiny_digits, iterations=1, network_snapshot_ticks=1,
                                export_safetensors=True)
    exported = os.path.splitext(checkpoint.latest_snapshot(trainer.run_dir))[0] + ".safetensors"
    from safetensors import safe_open

    with safe_open(exported, framework="pt") as f:
        config = json.loads(f.metadata()["gan_plugins"])
    config["networks"]["G_ema"]["class_name"] = "os.system"
    bad = str(tmp_path / "bad.safetensors")
    save_file(load_file(exported), bad, metadata={"gan_plugins": json.dumps(config)})
    with pytest.raises(SafeExportError, match="refusing class 'os.system'"):
        load_networks(bad)
    with pytest.raises(SafeExportError, match="records no constructor arguments"):
        export_networks({"G_ema": torch.nn.Linear(2, 2)}, str(tmp_path / "x.safetensors"))
