"""NoisyTwins: class scales, Barlow-Twins loss, embedding noise, twins, schedule, bit-exactness when off."""

import copy
import types

import numpy as np
import pytest
import torch

import dnnlib
from plugins import PluginError
from plugins.nets.noisytwins_net import EmbeddingNoise
from plugins.noisytwins import barlow_twins_loss, class_scales
from plugins.testing import build_host
from training.networks import Discriminator, Generator
from training.plugin_api import RunContext


def test_class_scales_match_spec_example():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    expected = [0.784, 0.784, 0.784, 0.784, 0.785, 0.800, 0.868, 1.041, 1.385, 1.984]
    np.testing.assert_allclose(class_scales(counts, 0.99), expected, atol=5e-4)  # The spec rounds to 3 decimals.
    np.testing.assert_array_equal(class_scales(counts, 0.0), np.ones(10))
    # lambda_k = H / E_k with H = C / sum_j 1/E_j, so sum_k lambda_k = C exactly; and against the formula in float64.
    assert class_scales(counts, 0.99).mean() == pytest.approx(1.0, abs=1e-12)
    effective = (1 - 0.99 ** np.asarray(counts, dtype=np.float64)) / (1 - 0.99)
    np.testing.assert_allclose(class_scales(counts, 0.99), 10 / np.sum(1 / effective) / effective, rtol=1e-12)


def _orthogonal_columns(n, d, seed=0):
    q, _ = np.linalg.qr(np.random.RandomState(seed).randn(n, d))
    q -= q.mean(0)  # Zero-mean columns...
    q, _ = np.linalg.qr(q)  # ...re-orthogonalised (stays zero-mean: the span excludes the ones vector).
    return torch.tensor(q * np.sqrt(n), dtype=torch.float64)  # Unit variance: eps=1e-5 is negligible.


def test_barlow_identical_halves_zero_invariance_term_only():
    w = torch.randn(64, 8, dtype=torch.float64)
    w[:, 1] = w[:, 0] * 0.5 + 0.1 * w[:, 1]  # Correlated dims.
    invariance_only = barlow_twins_loss(w, w, gamma=0.0)
    assert float(invariance_only) <= 1e-6
    assert float(barlow_twins_loss(w, w, gamma=1.0)) > 0.1  # Redundancy of the correlated dims remains.


def test_barlow_zero_for_identical_whitened_halves():
    w = _orthogonal_columns(64, 8)
    assert float(barlow_twins_loss(w, w, gamma=1.0)) == pytest.approx(0.0, abs=1e-6)


def test_barlow_rises_monotonically_to_d_as_twins_decorrelate():
    torch.manual_seed(0)
    d = 6
    w1 = torch.randn(512, d, dtype=torch.float64)
    noise = torch.randn(512, d, dtype=torch.float64)
    values = [float(barlow_twins_loss(w1, (1 - t) * w1 + t * noise, gamma=0.0)) for t in np.linspace(0, 1, 11)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert values[0] == pytest.approx(0, abs=1e-6)
    assert values[-1] == pytest.approx(d, rel=0.1)


def test_barlow_matches_numpy_formula():
    rng = np.random.RandomState(3)
    w1, w2 = rng.randn(10, 4), rng.randn(10, 4)
    z1 = (w1 - w1.mean(0)) / np.sqrt(w1.var(0) + 1e-5)
    z2 = (w2 - w2.mean(0)) / np.sqrt(w2.var(0) + 1e-5)
    m = z1.T @ z2 / 10
    expected = sum((1 - m[i, i]) ** 2 for i in range(4)) + 0.3 * sum(m[i, j] ** 2 for i in range(4) for j in range(4) if i != j)
    got = barlow_twins_loss(torch.tensor(w1), torch.tensor(w2), gamma=0.3)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def _tiny_G(c_dim=4):
    return Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=8, img_channels=1,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))


def test_noise_only_in_training_and_eval_unchanged():
    torch.manual_seed(0)
    G = _tiny_G()
    z, c = torch.randn(2, 8), torch.eye(4)[:2]
    G.eval()
    ref = G(z, c, noise_mode="const")
    G.mapping.extensions["noisytwins"] = EmbeddingNoise(c_dim=4, sigma=5.0)
    G.eval()
    assert torch.equal(G(z, c, noise_mode="const"), ref)  # Eval: sigma=5 changes nothing.
    G.train()
    w_a = G.mapping(z, c, skip_w_avg_update=True)
    w_b = G.mapping(z, c, skip_w_avg_update=True)
    assert not torch.equal(w_a, w_b)  # Two training passes differ.


def test_barlow_gradient_reaches_embedding_and_fc0():
    torch.manual_seed(0)
    G = _tiny_G().train()
    G.mapping.extensions["noisytwins"] = EmbeddingNoise(c_dim=4, sigma=0.5)
    G.requires_grad_(True)
    z = torch.randn(8, 8)
    c = torch.eye(4)[torch.arange(8) % 4]
    z, c = torch.cat([z[:4], z[:4]]), torch.cat([c[:4], c[:4]])
    capture = {}
    G.mapping(z, c, capture=capture)
    w = capture["w_streams"]["w"]
    barlow_twins_loss(w[:4], w[4:], gamma=0.05).backward()
    assert G.mapping.embed.weight.grad.abs().sum() > 0
    assert G.mapping.fc0.weight.grad.abs().sum() > 0


def _plugin(**options):
    host = build_host(["noisytwins"], {"noisytwins": options})
    return host.plugins["noisytwins"]


def test_twins_share_z_and_c_and_schedule():
    host = build_host(["noisytwins"], {"noisytwins": dict(nt_start_kimg=2, nt_lambda=0.01)})
    plugin = host.plugins["noisytwins"]
    z, c = torch.randn(8, 4), torch.eye(8)
    assert plugin.gan_generator_batch(phase="Gmain", z=z, c=c, cur_nimg=1999) is None
    assert plugin.barlow_weight(1999) == 0
    assert plugin.barlow_weight(2000) == 0.01
    tz, tc = plugin.gan_generator_batch(phase="Gmain", z=z, c=c, cur_nimg=2000)
    assert torch.equal(tz[:4], tz[4:]) and torch.equal(tc[:4], tc[4:])
    assert torch.equal(tz[:4], z[:4])
    assert plugin.gan_generator_batch(phase="Dmain", z=z, c=c, cur_nimg=5000) is None
    # Through the hook, as the loop calls it: the twins from the start kimg on, else sg2ada's batch unchanged.
    batch = host.pm.hook.gan_generator_batch
    for phase, cur_nimg in (("Gmain", 1999), ("Dmain", 5000)):
        bz, bc = batch(phase=phase, z=z, c=c, cur_nimg=cur_nimg)
        assert bz is z and bc is c
    hz, hc = batch(phase="Gmain", z=z, c=c, cur_nimg=2000)
    assert torch.equal(hz, tz) and torch.equal(hc, tc)


def _weights(trainer):
    return {k: v.clone() for k, v in list(trainer.G.state_dict().items()) + list(trainer.D.state_dict().items())}


def test_zero_noise_and_zero_weight_is_bit_identical_to_baseline(tiny_trainer):
    torch.set_num_threads(1)
    base = tiny_trainer(iterations=3, fake_labels="uniform")  # noisytwins' default fake labels, for like with like.
    base_w = _weights(base)
    z, c = torch.randn(4, 16), torch.eye(10)[:4]
    base_out = base.G_ema(z, c, noise_mode="const")
    nt = tiny_trainer(plugins=["noisytwins"], options={"noisytwins": {"nt_sigma": 0.0, "nt_lambda": 0.0}}, iterations=3)
    nt_w = _weights(nt)
    for key, value in base_w.items():
        assert torch.equal(value, nt_w[key]), key
    assert torch.equal(base_out, nt.G_ema(z, c, noise_mode="const"))
    assert not nt.G_ema.training  # Noise is off for G_ema.


def test_batch_errors():
    plugin = _plugin()
    import dnnlib
    from plugins import PluginError

    with pytest.raises(PluginError, match="even and at least 4"):
        plugin.gan_configure(config=dnnlib.EasyDict(batch_gpu=3))


def _networks(c_dim):
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=16, img_channels=1, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16))
    D = Discriminator(c_dim=c_dim, img_resolution=16, img_channels=1, channel_base=128, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    return G, D


def _setup(host, G, D, class_counts, restored_states=None):
    """gan_setup as the trainer calls it (G_ema a copy of the extended G), on a stand-in trainer; the RunContext."""
    trainer = types.SimpleNamespace(run_dir=".", training_set=dnnlib.EasyDict(name="digits"), G=G, D=D,
                                    G_ema=copy.deepcopy(G).eval(), device=torch.device("cpu"), rank=0, num_gpus=1,
                                    c=dnnlib.EasyDict(random_seed=0, fake_labels="uniform"), batch_size=8,
                                    c_dim=G.c_dim, class_counts=class_counts, cur_nimg=0, batch_idx=0, pm=host.pm)
    ctx = RunContext(trainer, host.pm.get_name, restored_states)
    host.pm.hook.gan_setup(ctx=ctx)
    return ctx


def _extended_D(d_noise, sigma=0.75):
    """A conditional D extended by the plugin as the trainer does (counts 50/10/5 -> per-class lambda_k)."""
    torch.manual_seed(0)
    host = build_host(["noisytwins"], {"noisytwins": dict(nt_sigma=sigma, nt_d_noise=d_noise)})
    G, D = _networks(c_dim=3)
    host.pm.hook.gan_extend_networks(G=G, D=D, dataset=None)
    ctx = _setup(host, G, D, class_counts=np.array([50, 10, 5]))
    return host, ctx, D


def test_d_embedding_noise_in_training_calls_only():
    _host, ctx, D = _extended_D(d_noise=True)
    x, c = torch.randn(4, 1, 16, 16), torch.eye(3)[[0, 1, 2, 2]]
    D.train()
    assert not torch.equal(D(x, c), D(x, c))  # Every training-time D call draws new noise (reals and fakes alike).
    D.eval()
    assert torch.equal(D(x, c), D(x, c))  # Outside training: no noise.
    np.testing.assert_allclose(D.mapping.extensions["noisytwins"].lambda_k.numpy(), class_scales([50, 10, 5], 0.99),
                               rtol=1e-6)  # lambda_k reaches D's noise (from ctx.class_counts in gan_setup)...
    np.testing.assert_allclose(ctx.G_ema.mapping.extensions["noisytwins"].lambda_k.numpy(),
                               class_scales([50, 10, 5], 0.99), rtol=1e-6)  # ...and G_ema's.
    ctx.set_class_counts([5, 10, 50])  # e.g. selfcond re-clustered: gan_class_counts_changed.
    for net in (D, ctx.G, ctx.G_ema):
        np.testing.assert_allclose(net.mapping.extensions["noisytwins"].lambda_k.numpy(),
                                   class_scales([5, 10, 50], 0.99), rtol=1e-6)


def test_needs_class_labels():
    host = build_host(["noisytwins"], {})
    G, D = _networks(c_dim=0)
    with pytest.raises(PluginError, match="plugin 'noisytwins' needs class labels: the networks are unconditional"):
        host.pm.hook.gan_extend_networks(G=G, D=D, dataset=None)
    G, D = _networks(c_dim=3)  # Conditional networks, but the data has no one-hot class labels (no counts).
    host.pm.hook.gan_extend_networks(G=G, D=D, dataset=None)
    with pytest.raises(PluginError, match="plugin 'noisytwins' needs class labels: dataset 'digits'"):
        _setup(host, G, D, class_counts=None)


def test_noise_generators_continue_from_the_restored_state(capsys):
    """An exact resume: gan_setup applies the generators' states that gan_state_dict saved (ctx.restored_state)."""
    host, ctx, D = _extended_D(d_noise=True)
    x, c = torch.randn(4, 1, 16, 16), torch.eye(3)[[0, 1, 2, 2]]
    ctx.G.train()
    ctx.G.mapping(torch.randn(4, 8), c)  # Training passes draw noise: both generators move on.
    D.train()
    D(x, c)
    states = {name: state for name, state in host.each("gan_state_dict") if state is not None}
    saved = states["noisytwins"]
    assert saved["counts"] == [50, 10, 5]

    def fresh(restored_states, counts=(50, 10, 5)):
        torch.manual_seed(1)  # Other initial weights: only the noise generators' state matters here.
        host = build_host(["noisytwins"], {"noisytwins": dict(nt_sigma=0.75, nt_d_noise=True)})
        G, D = _networks(c_dim=3)
        host.pm.hook.gan_extend_networks(G=G, D=D, dataset=None)
        ctx = _setup(host, G, D, class_counts=np.array(counts), restored_states=restored_states)
        return host.plugins["noisytwins"], ctx

    plugin, ctx = fresh(restored_states={"noisytwins": saved})
    assert torch.equal(plugin.generator.get_state(), saved["generator"])
    assert torch.equal(plugin.d_generator.get_state(), saved["d_generator"])
    assert ctx.G.mapping.extensions["noisytwins"].generator is plugin.generator
    assert ctx.D.mapping.extensions["noisytwins"].generator is plugin.d_generator
    unresumed, _ = fresh(restored_states=None)  # A fresh run starts from the seed, not from where the first one was.
    assert not torch.equal(unresumed.generator.get_state(), saved["generator"])
    assert not torch.equal(unresumed.d_generator.get_state(), saved["d_generator"])
    capsys.readouterr()
    fresh(restored_states={"noisytwins": saved}, counts=(5, 10, 50))
    assert "the resumed run had other class counts" in capsys.readouterr().out


def test_d_noise_off_is_the_ablation():
    _host, _ctx, D = _extended_D(d_noise=False)
    x, c = torch.randn(4, 1, 16, 16), torch.eye(3)[[0, 1, 2, 2]]
    D.train()
    assert "noisytwins" not in D.mapping.extensions and torch.equal(D(x, c), D(x, c))


def test_fake_labels_default_to_uniform_with_noisytwins(tmp_path, tiny_digits):
    """On a long-tailed subset, noisytwins' default fakes are uniform over classes (chi-square), the baseline's are not."""
    import json
    import shutil

    from scipy.stats import chisquare

    import lt_dataset
    from plugins.testing import run_tiny_training, tiny_config

    data = str(tmp_path / "digits16.zip")
    shutil.copy(tiny_digits, data)
    lt_dataset.make_lt(data, 10, log=lambda *a: None)
    kwargs = tiny_config(data, "")["training_set_kwargs"]
    kwargs.label_file = "lt_10.json"
    counts = {}
    for plugins in ([], ["noisytwins"]):
        trainer = run_tiny_training(str(tmp_path / f"run{len(plugins)}"), data, plugins=plugins, iterations=1,
                                    training_set_kwargs=kwargs)
        ids = trainer.sample_fake_labels(4000, real_c=None).numpy().argmax(axis=1)
        counts[len(plugins)] = np.bincount(ids, minlength=10)
        assert trainer.c.fake_labels == ("uniform" if plugins else "dataset")
    assert chisquare(counts[1]).pvalue > 1e-3  # Uniform.
    assert chisquare(counts[0]).pvalue < 1e-10  # Proportional to the long-tailed counts (183 ... 18).

    from tests.conftest import run_train

    out = tmp_path / "cli"
    run_train([f"--outdir={out}", f"--data={data}", "--cond=1", "--subset=lt_10.json", "--plugins=noisytwins", "--cfg=tiny",
               "--batch=8", "--kimg=0.008", "--workers=0", "--metrics=none", "--tensorboard=0"], expect_ok=True)
    (options_file,) = list(out.glob("*/training_options.json"))
    assert json.loads(options_file.read_text())["fake_labels"] == "uniform"
    result = run_train([f"--outdir={out}", f"--data={data}", "--cond=1", "--plugins=noisytwins", "--fake-labels=dataset",
                        "--cfg=tiny", "--batch=8", "--kimg=0.008", "--workers=0", "--metrics=none", "--tensorboard=0", "-n"])
    assert '"fake_labels": "dataset"' in result.stdout  # An explicit choice is kept.
