"""UTLO: ws layout, class-independent low-res image, low-res D head, loss weights, errors."""

import types

import numpy as np
import pytest
import torch

import dnnlib
from plugins import PluginError
from plugins.testing import build_host
from plugins.utlo import loss_weights
from torch_utils.ops import upfirdn2d
from training.loss import StyleGAN2Loss
from training.networks import Discriminator, Generator
from training.plugin_api import RunContext
from training.training_loop import accumulate_gradients, base_loss_weight


def build(res=32, res_uc=8, c_dim=5, alpha=1.0, add_uc="1"):
    """G and D extended by the utlo plugin (through the host, as the trainer does)."""
    torch.manual_seed(0)
    host = build_host(["utlo"], {"utlo": {"utlo_res_uc": res_uc, "utlo_alpha": alpha, "utlo_add_uc": add_uc}})
    c = dnnlib.EasyDict(G_kwargs=dnnlib.EasyDict(synthesis_kwargs=dnnlib.EasyDict(channel_base=256, channel_max=16)),
                        D_kwargs=dnnlib.EasyDict(), batch_gpu=4)
    host.pm.hook.gan_configure(config=c, dataset_kwargs=dnnlib.EasyDict(resolution=res))
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=res, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=c.G_kwargs.synthesis_kwargs)
    D = Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=256, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    host.pm.hook.gan_extend_networks(G=G, D=D, dataset=None)
    return host, G, D


def test_ws_layout_for_32px_res_uc_8():
    _host, G, _D = build()
    assert G.num_ws == 11 and G.mapping.num_ws == 11
    G.eval()
    z, c = torch.randn(3, 8), torch.eye(5)[:3]
    capture = {}
    ws = G.mapping(z, c, capture=capture)
    w_c, w_uc = capture["w_streams"]["w"], capture["w_streams"]["uc"]
    assert torch.equal(ws[:, :5], w_uc.unsqueeze(1).expand(-1, 5, -1))
    assert torch.equal(ws[:, 5:], w_c.unsqueeze(1).expand(-1, 6, -1))
    assert not torch.equal(w_c, w_uc)


def test_low_res_image_is_class_independent():
    _host, G, _D = build()
    G.eval()
    z = torch.randn(2, 8).repeat(2, 1)
    c = torch.eye(5)[[0, 1, 3, 4]]
    capture = {}
    img = G(z, c, noise_mode="const", capture=capture)
    img_uc = capture["block_outputs"][8][1]
    assert torch.equal(img_uc[:2], img_uc[2:])
    assert not torch.equal(img[:2], img[2:])


def test_truncation_pulls_each_stream_to_its_own_average():
    _host, G, _D = build()
    G.train()
    G.mapping(torch.randn(16, 8), torch.eye(5)[torch.arange(16) % 5])  # Moves both running averages.
    G.eval()
    ws = G.mapping(torch.randn(2, 8), torch.eye(5)[:2], truncation_psi=0)
    ext = G.mapping.extensions["utlo"]
    assert torch.allclose(ws[:, :5], ext.w_avg_uc.expand(2, 5, -1))
    assert torch.allclose(ws[:, 5:], G.mapping.w_avg.expand(2, 6, -1))


def test_res_uc_zero_is_identical_to_baseline():
    _host, G, D = build(res_uc=0)
    torch.manual_seed(0)
    G0 = Generator(z_dim=8, c_dim=5, w_dim=8, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
                   synthesis_kwargs=dict(channel_base=256, channel_max=16))
    assert G.num_ws == G0.num_ws == 8 and len(G.mapping.extensions) == 0 and len(D.extensions) == 0
    G0.load_state_dict(G.state_dict())  # Same names and shapes, else this raises.
    G.eval()
    G0.eval()
    z, c = torch.randn(3, 8), torch.eye(5)[:3]
    assert torch.equal(G(z, c, noise_mode="const"), G0(z, c, noise_mode="const"))
    assert torch.equal(G(z, c, truncation_psi=0.5, noise_mode="const"), G0(z, c, truncation_psi=0.5, noise_mode="const"))


def test_low_res_head_shape_class_independence_and_downsampling():
    _host, _G, D = build()
    head = D.extensions["utlo"]
    x = torch.randn(4, 3, 32, 32)
    low = head.downsample(x)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    expected = upfirdn2d.downsample2d(upfirdn2d.downsample2d(x, f), f)
    assert low.shape == (4, 3, 8, 8) and torch.equal(low, expected)
    logits = head(D, low)
    assert logits.shape == (4, 1)
    assert torch.isfinite(logits).all()


def test_loss_weights():
    assert loss_weights(1.0) == (0.5, 0.5)
    assert loss_weights(3.0) == (0.25, 0.75)
    assert loss_weights(0.0) == (1.0, 0.0)
    assert loss_weights(2.0, add_uc=False) == (1.0, 0.0)


def _loss(G, D):
    return StyleGAN2Loss("cpu", G, D, augment_pipe=None, style_mixing_prob=0, r1_gamma=1.0, pl_weight=0)


def _phase(host, G, D, phase, real, c, z):
    accumulate_gradients(_loss(G, D), host, phase, real, c, z, c, gain=1, cur_nimg=0)


def test_r1_does_not_reach_low_res_head_and_uc_terms_do():
    host, G, D = build()
    G.train()
    D.requires_grad_(True)
    real, c = torch.randn(4, 3, 32, 32), torch.eye(5)[:4]
    _phase(host, G, D, "Dreg", real, c, torch.randn(4, 8))
    head = D.extensions["utlo"]
    assert head.fromrgb_uc.weight.grad is None or float(head.fromrgb_uc.weight.grad.abs().sum()) == 0
    assert float(D.b32.fromrgb.weight.grad.abs().sum()) > 0
    D.zero_grad(set_to_none=True)
    _phase(host, G, D, "Dmain", real, c, torch.randn(4, 8))
    assert float(head.fromrgb_uc.weight.grad.abs().sum()) > 0


def test_alpha_zero_equals_baseline_conditional_loss():
    host, G, D = build(alpha=0.0)
    G.train()
    real, c, z = torch.randn(4, 3, 32, 32), torch.eye(5)[:4], torch.randn(4, 8)
    grads = []
    for loss_host in (host, build_host([])):  # The same networks, with and without the plugin's loss terms.
        G.zero_grad(set_to_none=True)
        G.requires_grad_(True)
        torch.manual_seed(1)
        _phase(loss_host, G, D, "Gmain", real, c, z)
        grads.append([p.grad.clone() for p in G.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    assert base_loss_weight(build(alpha=1.0)[0], phase="Dmain", cur_nimg=0) == 0.5


@pytest.mark.parametrize("res_uc", [3, 12, 32, 64])
def test_res_uc_must_be_a_network_resolution(res_uc):
    with pytest.raises(PluginError, match="not a resolution of this network"):
        build(res_uc=res_uc)


def test_architecture_errors():
    host = build_host(["utlo"], {})
    c = dnnlib.EasyDict(G_kwargs=dnnlib.EasyDict(synthesis_kwargs=dnnlib.EasyDict(architecture="resnet")), D_kwargs=dnnlib.EasyDict())
    with pytest.raises(PluginError, match="skip"):
        host.pm.hook.gan_configure(config=c, dataset_kwargs=dnnlib.EasyDict(resolution=32))
    c = dnnlib.EasyDict(G_kwargs=dnnlib.EasyDict(synthesis_kwargs=dnnlib.EasyDict()), D_kwargs=dnnlib.EasyDict(architecture="skip"))
    with pytest.raises(PluginError, match="'skip'"):
        host.pm.hook.gan_configure(config=c, dataset_kwargs=dnnlib.EasyDict(resolution=32))


def _setup(host, G, D, class_counts):
    """gan_setup as the trainer calls it, on a stand-in trainer."""
    trainer = types.SimpleNamespace(run_dir="", training_set=dnnlib.EasyDict(name="faces"), G=G, D=D, G_ema=G,
                                    device=torch.device("cpu"), rank=0, num_gpus=1,
                                    c=dnnlib.EasyDict(random_seed=0, fake_labels="dataset"), batch_size=4,
                                    c_dim=G.c_dim, class_counts=class_counts, cur_nimg=0, batch_idx=0, pm=host.pm)
    host.pm.hook.gan_setup(ctx=RunContext(trainer, host.pm.get_name, None))


def test_unconditional_dataset_refused():
    host, G, D = build()
    with pytest.raises(PluginError, match="plugin 'utlo' needs class labels: dataset 'faces'"):
        _setup(host, G, D, class_counts=None)  # No one-hot class labels (and no plugin announced any).
    _setup(host, G, D, class_counts=np.array([3, 1, 4, 1, 5]))  # Class labels: accepted.
    _setup(*build(res_uc=0), class_counts=None)  # --utlo-res-uc=0 switches UTLO off: no labels needed.


def test_unconditional_training_set_refused_by_the_trainer(tiny_trainer):
    with pytest.raises(PluginError, match="plugin 'utlo' needs class labels"):
        tiny_trainer(plugins=["utlo"], cond=False)


@pytest.mark.parametrize("reg_gain, expected_factor", [("official", 1.0), ("sg2ada", 16.0)])
def test_r1_strength_with_and_without_the_lazy_regularisation_gain(reg_gain, expected_factor):
    """Official UTLO: the Dreg phase (gain 16) applies gamma/2 * |grad|^2 once; --utlo-reg-gain=sg2ada: 16 times."""
    host = build_host(["utlo"], {"utlo": {"utlo_reg_gain": reg_gain}})
    c = dnnlib.EasyDict(G_kwargs=dnnlib.EasyDict(synthesis_kwargs=dnnlib.EasyDict(channel_base=256, channel_max=16)),
                        D_kwargs=dnnlib.EasyDict(), batch_gpu=4, loss_kwargs=dnnlib.EasyDict(r1_gamma=2.0, pl_weight=2.0))
    host.pm.hook.gan_configure(config=c, dataset_kwargs=dnnlib.EasyDict(resolution=32))
    official = reg_gain == "official"
    assert (c.loss_kwargs.r1_gamma, c.loss_kwargs.pl_weight) == ((2.0 / 16, 2.0 / 4) if official else (2.0, 2.0))
    _host, G, D = build()
    D.requires_grad_(True)
    real, labels = torch.randn(4, 3, 32, 32), torch.eye(5)[:4]
    loss = StyleGAN2Loss("cpu", G, D, style_mixing_prob=0, r1_gamma=c.loss_kwargs.r1_gamma, pl_weight=0)
    accumulate_gradients(loss, host, "Dreg", real, labels, torch.randn(4, 8), labels, gain=16, cur_nimg=0)
    grads = {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}
    D.zero_grad(set_to_none=True)
    x = real.detach().requires_grad_(True)  # By hand: gamma/2 * |dD/dx|^2, averaged over the batch.
    r1 = torch.autograd.grad(D(x, labels).sum(), [x], create_graph=True)[0].square().sum([1, 2, 3])
    (r1 * (2.0 / 2)).mean().mul(expected_factor).backward()
    expected = {n: p.grad for n, p in D.named_parameters() if p.grad is not None}
    assert len(expected) > 0
    for name, got in grads.items():  # Parameters R1 does not reach get the loop's zero (anchor) gradient.
        want = expected.get(name, torch.zeros_like(got))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
