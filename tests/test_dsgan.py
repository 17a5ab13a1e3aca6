"""DSGAN's diversity-sensitive term: the ratio, the pairs, the cap (no gradient above tau), option checks, training
alone and beside the other methods, and the refusal beside noisytwins (both rebuild G's batch)."""

import types

import pytest
import torch

import dnnlib
from plugins import PluginError
from plugins.dsgan import DSGAN, latent_image_ratio


def test_ratio_is_mean_absolute_image_gap_over_latent_gap():
    img1, img2 = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    z1, z2 = torch.randn(3, 8), torch.randn(3, 8)
    expected = torch.stack([(img1[i] - img2[i]).abs().mean() / (z1[i] - z2[i]).abs().mean() for i in range(3)])
    torch.testing.assert_close(latent_image_ratio(img1, img2, z1, z2), expected)
    # Means, not sums: the same images at twice the resolution, and the same latents repeated, give the same ratio.
    up = lambda x: x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # noqa: E731
    torch.testing.assert_close(latent_image_ratio(up(img1), up(img2), z1.repeat(1, 2), z2.repeat(1, 2)), expected)


def test_pairs_share_the_class_and_keep_their_latents():
    plugin = DSGAN()
    z, c = torch.randn(8, 4), torch.eye(10)[torch.arange(8)]
    new_z, new_c = plugin.gan_generator_batch(phase="Gmain", z=z, c=c, cur_nimg=0)
    assert torch.equal(new_z, z)
    assert torch.equal(new_c[:4], c[:4]) and torch.equal(new_c[4:], c[:4])
    assert plugin.gan_generator_batch(phase="Dmain", z=z, c=c, cur_nimg=0) is None  # D sees the usual fakes.
    assert DSGAN(ds_lambda=0).gan_generator_batch(phase="Gmain", z=z, c=c, cur_nimg=0) is None


def test_term_is_minus_the_capped_ratio_and_lifts_only_pairs_below_the_cap():
    plugin = DSGAN(ds_lambda=3, ds_tau=0.5)
    z = torch.cat([torch.zeros(2, 4), torch.ones(2, 4)])  # Latent gap 1 for both pairs.
    near, far = torch.full((1, 1, 2, 2), 0.1), torch.full((1, 1, 2, 2), 2.0)
    gen_img = torch.cat([torch.zeros(2, 1, 2, 2), torch.cat([near, far])]).requires_grad_()  # Ratios 0.1 and 2.0.
    ctx = types.SimpleNamespace(phase="Gmain", gen_img=gen_img, gen_z=z)
    ((name, weight, value),) = plugin.gan_loss_terms(ctx=ctx)
    assert name == "diversity" and weight == 3
    torch.testing.assert_close(value, torch.tensor(-(0.1 + 0.5) / 2))
    value.backward()
    assert gen_img.grad[[0, 2]].abs().sum() > 0  # The near pair is pushed apart...
    assert gen_img.grad[[1, 3]].abs().sum() == 0  # ...the pair beyond tau is left alone.
    assert plugin.gan_loss_terms(ctx=types.SimpleNamespace(phase="Dmain", gen_img=gen_img, gen_z=z)) == []


def test_bad_options_and_odd_batches_are_refused():
    with pytest.raises(PluginError, match="--ds-lambda >= 0 and --ds-tau > 0"):
        DSGAN(ds_lambda=-1)
    with pytest.raises(PluginError, match="--ds-lambda >= 0 and --ds-tau > 0"):
        DSGAN(ds_tau=0)
    with pytest.raises(PluginError, match=r"per-GPU batch \(5\) must be even"):
        DSGAN().gan_configure(config=dnnlib.EasyDict(batch_gpu=5))


def test_trains_and_reports_its_term_and_ratio(tiny_trainer):
    trainer = tiny_trainer(plugins=["dsgan"])
    stats = trainer.stats_collector.as_dict()
    assert "Loss/dsgan/diversity" in stats and stats["DSGAN/ratio"]["mean"] > 0


def test_unconditional_networks_are_refused(tiny_trainer):
    with pytest.raises(PluginError, match="'dsgan' needs class labels"):
        tiny_trainer(plugins=["dsgan"], cond=False)


@pytest.mark.parametrize("other", ["utlo", "transitional"])
def test_composes_with_methods_that_leave_the_batch_alone(tiny_trainer, other):
    trainer = tiny_trainer(plugins=["dsgan", other])
    assert trainer.batch_idx == 2 and "Loss/dsgan/diversity" in trainer.stats_collector.as_dict()


def test_beside_noisytwins_is_refused_naming_both(tiny_trainer):
    with pytest.raises(PluginError, match="'noisytwins' and 'dsgan' both implement gan_generator_batch"):
        tiny_trainer(plugins=["noisytwins", "dsgan"])
