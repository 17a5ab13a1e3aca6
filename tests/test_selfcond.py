"""Self-conditioned GAN: clustering, stable ids, labels, metrics, training on unlabelled data, resume, errors."""

import types

import numpy as np
import pytest
import scipy.stats
import torch

import dnnlib
from metrics import metric_main, mode_coverage
from metrics.metric_utils import MetricError
from plugins import PluginError
from plugins import selfcond_clustering as cl
from plugins.testing import build_host, run_tiny_training
from training import checkpoint
from training.networks import Discriminator, Generator, set_label_prior
from training.plugin_api import RunContext


def gaussians(k=8, per=200, seed=0):
    """k well separated 2D Gaussians (centres on a circle of radius 10, std 0.5) and their class ids."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(k) / k
    centres = 10 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    classes = np.repeat(np.arange(k), per)
    return (centres[classes] + 0.5 * rng.standard_normal([k * per, 2])).astype(np.float32), classes


def test_kmeans_recovers_separated_gaussians():
    x, classes = gaussians()
    centroids, labels = cl.first_clustering(x, 8, seed=0)
    assert centroids.shape == (8, 2)
    assert cl.purity(labels, classes) >= 0.95 and cl.nmi(labels, classes) >= 0.95


def test_matching_keeps_identity_under_permutation_and_small_moves():
    x, _ = gaussians()
    centroids, old = cl.first_clustering(x, 8, seed=0)
    perm = np.random.default_rng(1).permutation(8)
    shuffled = perm[old]  # The same clusters under other ids.
    p = cl.match_to_previous(shuffled, old, 8)
    _, relabelled = cl.apply_permutation(centroids[np.argsort(perm)], shuffled, p)
    assert np.array_equal(relabelled, old)

    moved = x + np.float32(0.05) * np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    new_centroids, new_labels, reseeded = cl.recluster(moved, old, 8, seed=3)
    p = cl.match_to_previous(new_labels, old, 8)
    _, matched = cl.apply_permutation(new_centroids, new_labels, p)
    assert reseeded.size == 0 and np.mean(matched == old) >= 0.99


def test_emptied_cluster_is_reseeded():
    x, _ = gaussians(k=4, per=50)
    labels = np.where(np.arange(len(x)) % 4 == 3, 0, np.arange(len(x)) % 4)  # Cluster 3 has no members.
    init, empty = cl.means_under_labels(x, labels, 4, np.random.default_rng(0))
    assert list(empty) == [3] and np.isfinite(init).all()
    assert any(np.allclose(init[3], row) for row in x)
    centroids, new_labels, reseeded = cl.recluster(x, labels, 4, seed=0)
    assert list(reseeded) == [3] and np.isfinite(centroids).all() and len(np.unique(new_labels)) == 4


def test_nmi_purity_and_mode_coverage_on_hand_made_examples():
    classes = np.array([0, 0, 1, 1, 2, 2])
    assert cl.purity(classes, classes) == 1 and cl.nmi(classes, classes) == pytest.approx(1)
    assert cl.purity((classes + 1) % 3, classes) == 1 and cl.nmi((classes + 1) % 3, classes) == pytest.approx(1)
    skewed = np.array([0, 0, 0, 0, 1, 2])
    assert cl.purity(np.zeros(6, int), skewed) == pytest.approx(4 / 6) and cl.nmi(np.zeros(6, int), skewed) == pytest.approx(0)
    assert mode_coverage.modes_and_reverse_kl(np.arange(10).repeat(3), 10) == (10, pytest.approx(0))
    assert mode_coverage.modes_and_reverse_kl(np.zeros(7, int), 1000) == (1, pytest.approx(3.0))
    modes, rkl = mode_coverage.modes_and_reverse_kl(np.array([0, 0, 1, 3]), 4)
    assert modes == 3 and rkl == pytest.approx(0.5 * np.log10(2) + 2 * 0.25 * np.log10(1))


def _plugin(**options):
    host = build_host(["selfcond"], {"selfcond": dict(sc_k=4, sc_nimgs=64, **options)})
    return host, host.plugins["selfcond"]


def test_fake_labels_reuse_and_hist():
    _, plugin = _plugin(sc_fake_labels="reuse")
    real = torch.nn.functional.one_hot(torch.tensor([2, 0, 3, 1]), 4).float()
    fake = plugin.gan_sample_fake_labels(n=12, rng=np.random.RandomState(0), real_labels=real)
    assert np.array_equal(fake, np.tile(real.numpy(), (3, 1)))

    _, plugin = _plugin(sc_fake_labels="hist")
    plugin.counts = np.array([10, 20, 30, 40])
    fake = plugin.gan_sample_fake_labels(n=20000, rng=np.random.RandomState(0), real_labels=real)
    observed = fake.sum(axis=0)
    assert fake.shape == (20000, 4) and np.all(fake.sum(axis=1) == 1)
    assert scipy.stats.chisquare(observed, 20000 * plugin.counts / plugin.counts.sum()).pvalue > 1e-3


def test_features_do_not_depend_on_batch_mates():
    _, plugin = _plugin()
    torch.manual_seed(0)
    plugin.D_f = Discriminator(c_dim=4, img_resolution=16, img_channels=1, channel_base=128, channel_max=16,
                               epilogue_kwargs=dict(mbstd_group_size=4)).eval()
    x = torch.randn(8, 1, 16, 16)
    alone, together = plugin.features(x[:4]), plugin.features(x)[:4]
    assert alone.shape == (4, 16 * 4 * 4) and torch.allclose(alone, together, atol=1e-6)


def test_option_and_data_errors(tmp_path, tiny_digits):
    with pytest.raises(PluginError, match="at least 2"):
        build_host(["selfcond"], {"selfcond": dict(sc_k=1)})
    host, _ = _plugin()
    with pytest.raises(PluginError, match="drop --cond=1"):
        host.pm.hook.gan_configure(config={}, dataset_kwargs=dict(use_labels=True, max_size=100))
    with pytest.raises(PluginError, match="--sc-k=4 is larger than the clustering set"):
        host.pm.hook.gan_configure(config={}, dataset_kwargs=dict(use_labels=False, max_size=3))
    # Without --max-size the launcher cannot tell: the opened dataset is checked in gan_setup, before clustering.
    host, plugin = _plugin()
    trainer = types.SimpleNamespace(run_dir="", training_set=[None] * 3, G=None, D=None, G_ema=None,
                                    device=torch.device("cpu"), rank=0, num_gpus=1,
                                    c=dnnlib.EasyDict(random_seed=0, fake_labels="dataset"), batch_size=4, c_dim=4,
                                    class_counts=None, cur_nimg=0, batch_idx=0, pm=host.pm)
    with pytest.raises(PluginError, match=r"--sc-k=4 is larger than the clustering set \(3 images"):
        host.pm.hook.gan_setup(ctx=RunContext(trainer, host.pm.get_name, None))
    assert plugin.centroids is None


def test_metrics_needing_dataset_classes_are_refused_for_cluster_labels():
    G = Generator(z_dim=8, c_dim=4, w_dim=8, img_resolution=16, img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16))
    metric_main.check_metric("class_consistency", G=G)  # Dataset classes: accepted.
    set_label_prior(G, [1, 2, 3, 4])
    for metric in ("class_consistency", "ifd_cls", "div_cls"):
        with pytest.raises(MetricError, match="needs G conditioned on dataset classes"):
            metric_main.check_metric(metric, G=G)
    metric_main.check_metric("fd_cls", G=G)  # Label-free metrics still run.


OPTS = {"selfcond": dict(sc_k=4, sc_nimgs=64, sc_recluster_kimg=0.024)}


def test_trains_on_unlabelled_data_and_resumes_bit_for_bit(tmp_path, tiny_digits):
    torch.set_num_threads(1)
    kw = dict(D_reg_interval=4, ada_interval=4, G_reg_interval=4, cond=False)
    straight = run_tiny_training(str(tmp_path / "straight"), tiny_digits, plugins=["selfcond"], options=OPTS,
                                 iterations=8, metrics=["cluster_nmi"], network_snapshot_ticks=2, **kw)
    plugin = straight.host.plugins["selfcond"]
    assert straight.G.c_dim == 4 and plugin.done == 2  # Clustered at kimg 0, 0.024 and 0.048.
    prior = straight.G_ema.mapping.extensions["label_prior"].probs.numpy()
    assert np.allclose(prior, plugin.counts / plugin.counts.sum(), atol=1e-6)
    first = run_tiny_training(str(tmp_path / "first"), tiny_digits, plugins=["selfcond"], options=OPTS, iterations=4, **kw)
    _pkl, state = checkpoint.resolve_resume(first.run_dir)
    saved = checkpoint.load_state(state)["plugins"]["selfcond"]
    assert set(saved) >= {"centroids", "counts", "indices", "labels", "D_f", "done"}
    assert saved["done"] == 1  # Clustered at kimg 0 and 0.024; the resumed run does the one at 0.048.
    resumed = run_tiny_training(str(tmp_path / "second"), tiny_digits, plugins=["selfcond"], options=OPTS,
                                iterations=4, resume=first.run_dir, **kw)
    assert resumed.cur_nimg == straight.cur_nimg
    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert np.array_equal(resumed.host.plugins["selfcond"].centroids, plugin.centroids)
    nmi_lines = open(f"{straight.run_dir}/metric-cluster_nmi.jsonl").read().splitlines()
    results = __import__("json").loads(nmi_lines[-1])["results"]
    assert set(results) == {"cluster_nmi"} and 0 <= results["cluster_nmi"] <= 1  # Its own value: no duplicate lines.


TINY = ["--cfg=tiny", "--batch=8", "--kimg=0.032", "--tick=0.016", "--snap=1", "--workers=0", "--metrics=none",
        "--tensorboard=0", "--aug=noaug"]


@pytest.mark.slow
def test_train_py_selfcond_with_transitional_generates_without_plugins(tmp_path, tiny_digits):
    import glob
    import os

    from tests.conftest import generate_without_project, run_train

    out = tmp_path / "runs"
    base = [f"--outdir={out}", f"--data={tiny_digits}"]
    refused = run_train([*base, "--cond=1", "--plugins=selfcond", "--sc-k=4", "--sc-nimgs=64", *TINY])
    assert refused.returncode != 0 and "selfcond supplies its own labels; drop --cond=1" in refused.stderr
    refused = run_train([*base, "--plugins=transitional", *TINY])
    assert refused.returncode != 0 and "plugin 'transitional' needs class labels" in refused.stderr
    refused = run_train([*base, "--plugins=selfcond", "--sc-k=2000", *TINY])
    assert refused.returncode != 0 and "--sc-k=2000 is larger than the clustering set (1797 images" in refused.stderr
    assert not os.path.isdir(out) or not os.listdir(out)

    result = run_train([*base, "--plugins=selfcond,transitional", "--sc-k=4", "--sc-nimgs=64", "--sc-recluster-kimg=0.016",
                        "--trans-start-kimg=0", "--trans-end-kimg=0.016", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "selfcond: clustered 64 images at kimg 0" in result.stdout
    (run_dir,) = glob.glob(str(out / "00000-*"))
    snap = checkpoint.latest_snapshot(run_dir)
    gen = generate_without_project(snap, str(tmp_path / "gen"), str(tmp_path / "support"))
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "gen")) == ["seed0000.png", "seed0001.png"]

    other = run_train([*base, "--plugins=selfcond", "--sc-k=4", "--sc-nimgs=64", f"--resume={run_dir}", *TINY[:-2]])
    assert other.returncode != 0 and "trained with plugins ['selfcond', 'transitional']" in other.stderr
