"""The CPU speed-ups (float32 networks without conv_clamp, channels-last blocks, Adam's fused kernel, multi-tensor
EMA): defaults chosen by device and recorded, flags honoured, and training with them the same as without, within float rounding. And the presets
that give the methods' published network sizes."""

import numpy as np
import torch

import dnnlib
from plugins.host import PluginHost
from plugins.testing import run_tiny_training
from training.training_config import build_config


def config_for(data, **opts):
    opts = dnnlib.EasyDict(dict(outdir="/tmp", data=data, cond=True, cfg="tiny", metrics="none", workers=0, plugin_kwargs={}),
                           **opts)
    c, _desc = build_config(opts, PluginHost.from_config({}))
    return c


def network_speed_settings(c):
    g, d = c.G_kwargs.synthesis_kwargs, c.D_kwargs
    return dict(g_fp16=g.num_fp16_res, g_clamp=g.conv_clamp, d_fp16=d.num_fp16_res, d_clamp=d.conv_clamp,
                g_cl=g.get("channels_last"), d_cl=d.block_kwargs.get("channels_last"),
                g_fp16_cl=g.get("fp16_channels_last"), d_fp16_cl=d.block_kwargs.get("fp16_channels_last"))


def test_cpu_defaults_are_float32_channels_last_and_recorded(tiny_digits):
    s = network_speed_settings(config_for(tiny_digits, device="cpu"))
    assert s == dict(g_fp16=0, g_clamp=None, d_fp16=0, d_clamp=None, g_cl=True, d_cl=True, g_fp16_cl=None, d_fp16_cl=None)


def test_flags_turn_each_speed_up_off(tiny_digits):
    s = network_speed_settings(config_for(tiny_digits, device="cpu", fp32=False, nhwc=False))
    assert (s["g_fp16"], s["g_clamp"], s["d_fp16"], s["d_clamp"]) == (4, 256, 4, 256)  # The preset's, as NVIDIA's.
    assert s["g_cl"] is False and s["d_cl"] is False


def test_fused_adam_is_the_cpu_default_recorded_and_can_be_turned_off(tiny_digits, monkeypatch):
    def fused(**opts):
        c = config_for(tiny_digits, **opts)
        assert c.G_opt_kwargs.get("fused") == c.D_opt_kwargs.get("fused")
        return c.G_opt_kwargs.get("fused")

    assert fused(device="cpu") is True
    assert fused(device="cpu", fused_adam=False) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fused(device="auto") is None  # NVIDIA's Adam on CUDA unless asked.
    assert fused(device="auto", fused_adam=True) is True


def test_network_size_and_learning_rate_options_are_applied_and_recorded(tiny_digits):
    """--cbase/--cmax (StyleGAN3's names) size G and D alike; --glr/--dlr/--map-lr set what they name."""
    opts = dict(device="cpu", cbase=1024, cmax=48, glr=0.004, dlr=0.003, map_lr=0.1)
    c = config_for(tiny_digits, **opts)
    g = c.G_kwargs.synthesis_kwargs
    assert (g.channel_base, g.channel_max, c.D_kwargs.channel_base, c.D_kwargs.channel_max) == (1024, 48, 1024, 48)
    assert (c.G_opt_kwargs.lr, c.D_opt_kwargs.lr) == (0.004, 0.003)
    assert c.G_kwargs.mapping_kwargs.lr_multiplier == c.D_kwargs.mapping_kwargs.lr_multiplier == 0.1
    plain = config_for(tiny_digits, device="cpu")
    assert "lr_multiplier" not in plain.G_kwargs.mapping_kwargs  # NVIDIA's 0.01 from the network's default.
    from training.networks import Discriminator, Generator

    G = Generator(c_dim=10, img_resolution=16, img_channels=1, **{k: v for k, v in c.G_kwargs.items() if k != "class_name"})
    D = Discriminator(c_dim=10, img_resolution=16, img_channels=1, **{k: v for k, v in c.D_kwargs.items() if k != "class_name"})
    assert max(b.conv1.weight.shape[0] for b in G.synthesis.children() if hasattr(b, "conv1")) == 48
    for fc in (G.mapping.fc0, D.mapping.fc0):
        assert fc.bias_gain == 0.1 and np.isclose(fc.weight_gain, 0.1 / np.sqrt(fc.weight.shape[1]))


def test_ema_and_gradient_cleanup_match_the_per_tensor_formulas(tiny_digits, tmp_path):
    """The multi-tensor EMA is NVIDIA's p.lerp(p_ema, beta) bit for bit; non-finite gradients are still replaced."""
    trainer = run_tiny_training(str(tmp_path / "run"), tiny_digits, iterations=2)
    before = [p.detach().clone() for p in trainer.G_ema.parameters()]
    with torch.no_grad():
        for p in trainer.G.parameters():
            p.add_(0.01)
    expected_beta = 0.5 ** (trainer.batch_size / max(min(trainer.c.ema_kimg * 1000, trainer.cur_nimg * trainer.c.ema_rampup), 1e-8))
    trainer.update_ema()
    for b, p, p_ema in zip(before, trainer.G.parameters(), trainer.G_ema.parameters()):
        assert torch.equal(p_ema, p.detach().lerp(b, expected_beta))

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    grads = [torch.tensor([1.0, float("nan"), float("inf")]), torch.tensor([-float("inf"), 2.0])]
    for p, g in zip(opt.param_groups[0]["params"], grads):
        p.grad = g.clone()
    trainer.step_optimizer(opt)
    assert [p.tolist() for p in opt.param_groups[0]["params"]] == [[-1.0, 0.0, -1e5], [1e5, -2.0]]


def test_cuda_keeps_nvidia_defaults(tiny_digits, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    s = network_speed_settings(config_for(tiny_digits, device="auto"))
    assert (s["g_fp16"], s["g_clamp"]) == (4, 256) and s["g_cl"] is None and s["g_fp16_cl"] is None
    s = network_speed_settings(config_for(tiny_digits, device="auto", nhwc=True))
    assert s["g_fp16_cl"] is True and s["d_fp16_cl"] is True and s["g_cl"] is None  # NVIDIA's --nhwc meaning.


def test_data_is_loaded_in_the_training_process_off_cuda(tiny_digits, monkeypatch):
    """Off CUDA no DataLoader worker (it takes a core from the compute threads); on CUDA NVIDIA's workers; --workers wins."""
    from training import training_config

    def workers(**opts):
        c = config_for(tiny_digits, **opts)
        return c.data_loader_kwargs.num_workers

    monkeypatch.setattr(training_config, "available_cpus", lambda: 8)
    assert workers(device="cpu", workers=None) == 0
    assert workers(device="cpu", workers=2) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert workers(device="auto", workers=None) == 3


def test_channels_last_blocks_compute_in_channels_last(tiny_digits):
    from training.networks import Discriminator, Generator

    seen = []
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                  synthesis_kwargs=dict(channel_base=64, channel_max=8, channels_last=True))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=64, channel_max=8,
                      block_kwargs=dict(channels_last=True))
    for block in [*G.synthesis.children(), *(m for m in D.children() if type(m).__name__ == "DiscriminatorBlock")]:
        block.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    img = G(torch.randn(4, 8), None)
    D(img, None)
    assert len(seen) >= 5 and all(seen)


def speedup_kwargs(tiny_digits, on):
    """tiny_config's network and optimiser dicts with the CPU speed-ups on (float32 without clamp, channels-last,
    fused Adam) or off."""
    from plugins.testing import tiny_config

    c = tiny_config(tiny_digits, "unused")
    c.G_kwargs.synthesis_kwargs.update(conv_clamp=None if on else 256, channels_last=on)
    c.D_kwargs.update(conv_clamp=None if on else 256)
    c.D_kwargs.block_kwargs.channels_last = on
    opt_kwargs = {name: dnnlib.EasyDict(c[name], fused=True) if on else c[name] for name in ("G_opt_kwargs", "D_opt_kwargs")}
    return dict(G_kwargs=c.G_kwargs, D_kwargs=c.D_kwargs, **opt_kwargs)


def test_speedups_train_the_same_networks_within_rounding(tiny_digits, tmp_path):
    """8 steps of the tiny config with and without the CPU speed-ups: G_ema's weights agree to 1e-4 of their scale."""

    def weights(on):
        trainer = run_tiny_training(str(tmp_path / f"run-{on}"), tiny_digits, iterations=8, **speedup_kwargs(tiny_digits, on))
        return torch.cat([p.detach().flatten() for p in trainer.G_ema.parameters()]).numpy()

    plain, fast = weights(False), weights(True)
    assert plain.shape == fast.shape
    scale = np.abs(plain).max()
    assert np.abs(plain - fast).max() <= 1e-4 * scale, np.abs(plain - fast).max() / scale


def test_speedup_run_resumes_exactly(tiny_digits, tmp_path):
    """Exact resume holds with the speed-ups on (channels-last is rebuilt from the recorded config)."""
    from training import checkpoint

    torch.set_num_threads(1)  # Same thread count in both runs: identical floating-point reductions.
    kw = dict(D_reg_interval=4, ada_interval=4, G_reg_interval=4, **speedup_kwargs(tiny_digits, True))

    def run(run_dir, iterations, **extra):
        return run_tiny_training(str(run_dir), tiny_digits, iterations=iterations, **kw, **extra)

    straight = run(tmp_path / "straight", 8)
    run(tmp_path / "first", 4)
    pkl, state = checkpoint.resolve_resume(str(tmp_path / "first"))
    resumed = run(tmp_path / "second", 4, resume_pkl=pkl, resume_state=state)
    assert resumed.cur_nimg == straight.cur_nimg
    for (name, a), b in zip(straight.G_ema.named_parameters(), resumed.G_ema.parameters()):
        assert torch.equal(a, b), name


def test_method_presets_give_the_published_network_sizes(tiny_digits):
    """--cfg=noisytwins-cifar (NoisyTwins' CIFAR10-LT networks) and the vision-aided fork's paper256 presets."""
    nt = config_for(tiny_digits, device="cpu", cfg="noisytwins-cifar", batch=64)
    assert nt.G_kwargs.mapping_kwargs.num_layers == 8
    assert nt.G_kwargs.synthesis_kwargs.channel_base == nt.D_kwargs.channel_base == 16384
    assert nt.D_kwargs.architecture == "orig" and nt.loss_kwargs.pl_weight == 0 and nt.ema_kimg == 500
    va = config_for(tiny_digits, device="cpu", cfg="va-paper256")
    assert (va.batch_size, va.G_opt_kwargs.lr, va.D_kwargs.epilogue_kwargs.mbstd_group_size, va.ema_kimg) == (16, 0.002, 4, 10)
    assert va.G_kwargs.mapping_kwargs.num_layers == 8 and va.G_kwargs.synthesis_kwargs.channel_base == 16384
    assert config_for(tiny_digits, device="cpu", cfg="va-paper256-2fmap").G_kwargs.synthesis_kwargs.channel_base == 32768


def test_evaluation_off_cuda_uses_the_batched_modulated_convolution(monkeypatch):
    """NVIDIA's fused (grouped, per-sample) modulated convolution for inference only on CUDA: on a CPU the batched
    form is faster, and the images agree within float rounding."""
    import training.networks as networks

    calls = []
    original = networks.modulated_conv2d

    def recording(*args, fused_modconv=True, **kwargs):
        calls.append(fused_modconv)
        return original(*args, fused_modconv=fused_modconv, **kwargs)

    monkeypatch.setattr(networks, "modulated_conv2d", recording)
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                           synthesis_kwargs=dict(channel_base=64, channel_max=8)).eval()
    z = torch.randn(3, 8)
    with torch.no_grad():
        default = G(z, None, noise_mode="const")
        assert calls and not any(calls)
        fused = G(z, None, noise_mode="const", fused_modconv=True)
    torch.testing.assert_close(default, fused, rtol=1e-4, atol=1e-5)
