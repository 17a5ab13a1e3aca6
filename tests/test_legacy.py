"""legacy.load_network_pkl: numpy-1 / numpy-2 module paths, bad files, force_fp16."""

import io
import pickle

import numpy as np
import pytest
import torch

import legacy
from training.networks import Generator


def _snapshot_bytes():
    G = Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=1,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=32, channel_max=4))
    # Protocol 2 has no length-prefixed frames, so the module path can be rewritten below.
    return pickle.dumps(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None, gain=np.float64(0.5)),
                        protocol=2)


@pytest.mark.parametrize("numpy_module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_numpy_scalar_paths_of_either_numpy_major_version_load(numpy_module):
    data = _snapshot_bytes()
    present = b"numpy._core.multiarray" if b"numpy._core.multiarray" in data else b"numpy.core.multiarray"
    assert present in data  # The numpy scalar is pickled through numpy's private module path...
    data = data.replace(present, numpy_module)  # ...which differs between numpy 1 and numpy 2 pickles.
    snap = legacy.load_network_pkl(io.BytesIO(data))
    assert snap["gain"] == 0.5 and isinstance(snap["G_ema"], torch.nn.Module)


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(legacy.NetworkPickleError, match="empty"):
        legacy.load_network_pkl(io.BytesIO(b""))
    with pytest.raises(legacy.NetworkPickleError, match="not a pickle"):
        legacy.load_network_pkl(io.BytesIO(b"PK\x03\x04zipdata"))
    data = _snapshot_bytes()
    path = tmp_path / "network-snapshot-000004.pkl"
    path.write_bytes(data[: len(data) // 3])
    with open(path, "rb") as f, pytest.raises(legacy.NetworkPickleError, match="network-snapshot-000004.pkl.*truncated"):
        legacy.load_network_pkl(f)
    with pytest.raises(legacy.NetworkPickleError, match="not a network snapshot"):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps({"weights": [1, 2]})))


def test_force_fp16_rebuilds_with_fp16_layers():
    snap = legacy.load_network_pkl(io.BytesIO(_snapshot_bytes()), force_fp16=True)
    G = snap["G_ema"]
    assert G.init_kwargs.synthesis_kwargs["num_fp16_res"] == 4
    assert G.synthesis.b8.use_fp16
