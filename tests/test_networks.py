"""Generator/Discriminator: NVIDIA's parameter and buffer names, shapes, forward behaviour, pickling."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from plugins.testing import BLOCK_PROJECT_IMPORTS
from training.networks import Discriminator, Generator, MappingNetwork

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def expected_G_names(res, num_map, c_dim, architecture="skip"):
    """Parameter and buffer names of NVIDIA's Generator, written out from the naming rules."""
    params, buffers = [], []
    log2 = int(np.log2(res))
    for r in [2 ** i for i in range(2, log2 + 1)]:
        b = f"synthesis.b{r}."
        buffers.append(b + "resample_filter")
        if r == 4:
            params.append(b + "const")
        convs = ["conv1"] if r == 4 else ["conv0", "conv1"]
        for conv in convs:
            params += [b + conv + s for s in [".weight", ".noise_strength", ".bias", ".affine.weight", ".affine.bias"]]
            buffers += [b + conv + ".resample_filter", b + conv + ".noise_const"]
        if architecture == "skip" or r == res:
            params += [b + "torgb" + s for s in [".weight", ".bias", ".affine.weight", ".affine.bias"]]
        if architecture == "resnet" and r > 4:
            params.append(b + "skip.weight")
            buffers.append(b + "skip.resample_filter")
    if c_dim > 0:
        params += ["mapping.embed.weight", "mapping.embed.bias"]
    for i in range(num_map):
        params += [f"mapping.fc{i}.weight", f"mapping.fc{i}.bias"]
    buffers.append("mapping.w_avg")
    return sorted(params), sorted(buffers)


def expected_D_names(res, c_dim, architecture="resnet"):
    params, buffers = [], []
    log2 = int(np.log2(res))
    for r in [2 ** i for i in range(log2, 2, -1)]:
        b = f"b{r}."
        buffers.append(b + "resample_filter")
        layers = ["conv0", "conv1"]
        if r == res or architecture == "skip":
            layers = ["fromrgb"] + layers
        for layer in layers:
            params += [b + layer + ".weight", b + layer + ".bias"]
            buffers.append(b + layer + ".resample_filter")
        if architecture == "resnet":
            params.append(b + "skip.weight")
            buffers.append(b + "skip.resample_filter")
    if c_dim > 0:
        params += ["mapping.embed.weight", "mapping.embed.bias"] + [f"mapping.fc{i}.{s}" for i in range(8) for s in ["weight", "bias"]]
    params += ["b4.conv.weight", "b4.conv.bias", "b4.fc.weight", "b4.fc.bias", "b4.out.weight", "b4.out.bias"]
    buffers.append("b4.conv.resample_filter")
    if architecture == "skip":
        params += ["b4.fromrgb.weight", "b4.fromrgb.bias"]
        buffers.append("b4.fromrgb.resample_filter")
    return sorted(params), sorted(buffers)


def names(module):
    return sorted(n for n, _ in module.named_parameters()), sorted(n for n, _ in module.named_buffers())


CIFAR = dict(G=dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=2),
                    synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256)),
             D=dict(architecture="orig", channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256,
                    epilogue_kwargs=dict(mbstd_group_size=32)),
             res=32, channels=3, c_dim=10, num_map=2)
TINY = dict(G=dict(z_dim=64, w_dim=64, mapping_kwargs=dict(num_layers=2),
                   synthesis_kwargs=dict(channel_base=2048, channel_max=64, num_fp16_res=4, conv_clamp=256)),
            D=dict(channel_base=2048, channel_max=64, num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4)),
            res=32, channels=1, c_dim=10, num_map=2)


@pytest.mark.parametrize("preset", [CIFAR, TINY], ids=["cifar", "tiny"])
def test_parameter_and_buffer_names(preset):
    G = Generator(c_dim=preset["c_dim"], img_resolution=preset["res"], img_channels=preset["channels"], **preset["G"])
    D = Discriminator(c_dim=preset["c_dim"], img_resolution=preset["res"], img_channels=preset["channels"], **preset["D"])
    assert names(G) == expected_G_names(preset["res"], preset["num_map"], preset["c_dim"])
    assert names(D) == expected_D_names(preset["res"], preset["c_dim"], preset["D"].get("architecture", "resnet"))


def test_cifar_shapes_follow_channel_rule():
    G = Generator(c_dim=10, img_resolution=32, img_channels=3, **CIFAR["G"])
    D = Discriminator(c_dim=10, img_resolution=32, img_channels=3, **CIFAR["D"])
    ch = lambda r: min(32768 // r, 512)  # noqa: E731
    shapes = dict(G.named_parameters())
    assert shapes["synthesis.b4.const"].shape == (ch(4), 4, 4)
    assert shapes["synthesis.b8.conv0.weight"].shape == (ch(8), ch(4), 3, 3)
    assert shapes["synthesis.b32.torgb.weight"].shape == (3, ch(32), 1, 1)
    assert shapes["mapping.fc0.weight"].shape == (512, 1024)  # z (512) + embed (512)
    assert shapes["mapping.embed.weight"].shape == (512, 10)
    assert G.num_ws == 2 * 5 - 2
    d = dict(D.named_parameters())
    assert d["b32.fromrgb.weight"].shape == (ch(32), 3, 1, 1)
    assert d["b4.conv.weight"].shape == (ch(4), ch(4) + 1, 3, 3)
    assert d["b4.fc.weight"].shape == (ch(4), ch(4) * 16)
    assert d["b4.out.weight"].shape == (ch(4), ch(4))  # cmap_dim defaults to ch(4)


@pytest.mark.parametrize("g_arch", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("d_arch", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("c_dim", [0, 5])
def test_forward_shapes_every_architecture(g_arch, d_arch, c_dim):
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16, architecture=g_arch))
    D = Discriminator(c_dim=c_dim, img_resolution=16, img_channels=3, architecture=d_arch, channel_base=256, channel_max=16)
    assert names(G) == expected_G_names(16, 2, c_dim, g_arch)
    assert names(D) == expected_D_names(16, c_dim, d_arch)
    z = torch.randn(4, 16)
    c = torch.nn.functional.one_hot(torch.arange(4) % max(c_dim, 1), max(c_dim, 1)).float()[:, :c_dim]
    img = G(z, c)
    assert img.shape == (4, 3, 16, 16)
    assert torch.isfinite(img).all()
    logits = D(img, c)
    assert logits.shape == (4, 1)


def test_eval_const_noise_is_deterministic_and_truncation_pulls_to_average():
    torch.manual_seed(1)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8)).eval()
    z = torch.randn(2, 8)
    a = G(z, None, noise_mode="const")
    b = G(z, None, noise_mode="const")
    assert torch.equal(a, b)
    ws = G.mapping(z, None, truncation_psi=0)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))


def test_w_avg_tracks_mapping_output_in_training():
    torch.manual_seed(2)
    M = MappingNetwork(z_dim=4, c_dim=0, w_dim=4, num_ws=3, num_layers=2, w_avg_beta=0.5).train()
    z = torch.randn(6, 4)
    w = M(z, None)[:, 0]
    assert torch.allclose(M.w_avg, w.mean(0) * 0.5)


def test_minibatch_std_needs_divisible_batch():
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=1, channel_base=64, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=4))
    with pytest.raises(ValueError, match="divisible by the group size"):
        D(torch.randn(6, 1, 8, 8), None)


def test_bad_resolution_and_input_shape_errors():
    with pytest.raises(ValueError, match="power of two"):
        Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=24, img_channels=1)
    G = Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=1, synthesis_kwargs=dict(channel_base=64, channel_max=8))
    with pytest.raises(AssertionError, match="expected 4"):
        G(torch.randn(2, 5), None)


def test_pickle_runs_in_fresh_process_without_project_on_path(tmp_path):
    """A snapshot's networks unpickle from their embedded source; only torch_utils/dnnlib are needed."""
    torch.manual_seed(3)
    G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8)).eval()
    z = torch.randn(2, 8)
    c = torch.eye(3)[:2]
    expected = G(z, c, noise_mode="const")
    pkl = tmp_path / "G.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(dict(G_ema=G, z=z, c=c), f)
    np.save(tmp_path / "expected.npy", expected.detach().numpy())

    # Only the support packages are importable: a copy of dnnlib and torch_utils, nothing of training/.
    support = tmp_path / "support"
    support.mkdir()
    for pkg in ["dnnlib", "torch_utils"]:
        subprocess.run(["cp", "-r", os.path.join(REPO, pkg), str(support / pkg)], check=True)
    script = BLOCK_PROJECT_IMPORTS + textwrap.dedent(f"""
        import pickle, sys, numpy as np, torch
        try:
            import training
            raise SystemExit('training should not be importable')
        except ImportError:
            pass
        with open({str(pkl)!r}, 'rb') as f:
            data = pickle.load(f)
        out = data['G_ema'](data['z'], data['c'], noise_mode='const').detach().numpy()
        assert np.array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
        print('OK', type(data['G_ema']).__module__)
    """)
    # The same thread count as here: bit-equal results need the same floating-point reduction order.
    env = dict(os.environ, PYTHONPATH=str(support), OMP_NUM_THREADS=str(torch.get_num_threads()))
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "OK _imported_module_" in result.stdout


@pytest.mark.parametrize("path", ["training/networks.py", "training/augment.py", "plugins/nets/noisytwins_net.py",
                                  "plugins/nets/utlo_net.py"])
def test_pickled_sources_parse_on_python37_and_import_only_upstream_modules(path):
    """Snapshot sources are executed by whoever loads the pickle, possibly upstream's code on an old Python."""
    import ast

    src = open(os.path.join(REPO, path)).read()
    tree = ast.parse(src, feature_version=(3, 7))
    top_level = set()
    for node in tree.body:  # Module-level imports only; lazy imports inside __init__ run at training time.
        if isinstance(node, ast.Import):
            top_level |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add(node.module.split(".")[0])
    assert top_level <= {"numpy", "torch", "scipy", "dnnlib", "torch_utils", "copy", "math", "warnings"}, top_level
