"""transitional-cGAN: the lambda_t schedule, class independence at lambda_t = 0, heads, R1 on D_uc, resume, errors."""

import glob
import os
import pickle
import types

import numpy as np
import pytest
import torch

import dnnlib
from plugins import PluginError
from plugins.host import find_plugin, make_plugin_kwargs
from plugins.testing import build_host, run_tiny_training
from plugins.transitional import label_weight
from tests.conftest import run_train
from training import checkpoint
from training.loss import LossTerm, StyleGAN2Loss
from training.networks import Discriminator, Generator
from training.plugin_api import RunContext
from training.training_loop import accumulate_gradients, base_loss_weight

TINY = ["--cfg=tiny", "--batch=8", "--kimg=0.032", "--tick=0.016", "--snap=1", "--workers=0", "--metrics=none",
        "--tensorboard=0", "--aug=noaug"]


def setup(host, G, D, class_counts=None):
    """gan_setup as the trainer calls it, on a stand-in trainer (its RunContext is trainer.ctx, read live)."""
    trainer = types.SimpleNamespace(run_dir="", training_set=dnnlib.EasyDict(name="digits"), G=G, D=D, G_ema=G,
                                    device=torch.device("cpu"), rank=0, num_gpus=1,
                                    c=dnnlib.EasyDict(random_seed=0, fake_labels="dataset"), batch_size=4,
                                    c_dim=G.c_dim, class_counts=class_counts, cur_nimg=0, batch_idx=0, pm=host.pm)
    trainer.ctx = RunContext(trainer, host.pm.get_name, None)
    host.pm.hook.gan_setup(ctx=trainer.ctx)
    return trainer


def build(c_dim=5, res=16, start=0.0, end=0.0):
    """G and D extended by the transitional plugin through the host, as the trainer does, then gan_setup."""
    torch.manual_seed(0)
    host = build_host(["transitional"], {"transitional": {"trans_start_kimg": start, "trans_end_kimg": end}})
    c = dnnlib.EasyDict(G_kwargs=dnnlib.EasyDict(mapping_kwargs=dnnlib.EasyDict(num_layers=2), synthesis_kwargs={}),
                        D_kwargs=dnnlib.EasyDict(), batch_gpu=4)
    host.pm.hook.gan_configure(config=c, dataset_kwargs=dnnlib.EasyDict(resolution=res))
    assert c.G_kwargs.mapping_kwargs.c_in_fc0 is False
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=res, img_channels=3, mapping_kwargs=c.G_kwargs.mapping_kwargs,
                  synthesis_kwargs=dict(channel_base=128, channel_max=16))
    D = Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=128, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    host.pm.hook.gan_extend_networks(G=G, D=D, dataset=dnnlib.EasyDict(name="digits"))
    trainer = setup(host, G, D, class_counts=np.ones(c_dim, dtype=np.int64))
    return host, G, D, trainer


def step(host, trainer, kimg):
    """gan_step at kimg, as the trainer calls it; the label_weight published in ctx.shared."""
    trainer.cur_nimg = int(round(kimg * 1000))
    host.pm.hook.gan_step(ctx=trainer.ctx)
    return trainer.ctx.shared["label_weight"]


def test_schedule_ramp_and_step():
    assert [label_weight(k * 1000, 2, 4) for k in (0, 2, 3, 4, 10)] == [0, 0, 0.5, 1, 1]
    assert label_weight(4999, 5, 5) == 0 and label_weight(5000, 5, 5) == 1
    assert label_weight(0, 0, 0) == 1  # The official default: conditional from the first step.


def test_lambda_reaches_buffers_and_published_state():
    host, G, D, trainer = build(start=2, end=4)
    assert step(host, trainer, 3) == 0.5
    assert float(G.mapping.extensions["transitional"].lambda_t) == 0.5
    assert float(D.extensions["transitional"].lambda_t) == 0.5
    assert base_loss_weight(host, phase="Gmain", cur_nimg=3000) == 0.5
    assert base_loss_weight(host, phase="Greg", cur_nimg=3000) == 1.0  # Only the adversarial phases are ramped.


def test_at_lambda_zero_output_ignores_class_and_class_parts_get_zero_gradient():
    host, G, D, trainer = build(start=1, end=2)
    step(host, trainer, 0)
    G.eval()
    z = torch.randn(4, 8)
    c1, c2 = torch.eye(5)[:4], torch.eye(5)[1:5]
    assert torch.equal(G(z, c1, noise_mode="const"), G(z, c2, noise_mode="const"))
    G.train()
    G.requires_grad_(True)
    G(z, c1, noise_mode="const").square().sum().backward()
    ext = G.mapping.extensions["transitional"]
    for param in [G.mapping.embed.weight, ext.P.weight, ext.P.bias]:
        assert param.grad is not None and float(param.grad.abs().sum()) == 0  # Present (every rank) and exactly zero.
    assert float(G.mapping.fc0.weight.grad.abs().sum()) > 0
    step(host, trainer, 1.5)
    G.eval()
    assert not torch.equal(G(z, c1, noise_mode="const"), G(z, c2, noise_mode="const"))


def _phase(host, G, D, phase, kimg, real, c, z):
    loss = StyleGAN2Loss("cpu", G, D, augment_pipe=None, style_mixing_prob=0, r1_gamma=1.0, pl_weight=0)
    accumulate_gradients(loss, host, phase, real, c, z, c, gain=1, cur_nimg=int(kimg * 1000))


def test_conditional_terms_add_nothing_at_lambda_zero():
    host, G, D, trainer = build(start=1, end=2)
    step(host, trainer, 0)
    real, c, z = torch.randn(4, 3, 16, 16), torch.eye(5)[:4], torch.randn(4, 8)
    D.requires_grad_(True)
    _phase(host, G, D, "Dmain", 0, real, c, z)
    heads = D.extensions["transitional"]
    assert float(heads.out_c.weight.grad.abs().sum()) == 0 and float(D.mapping.embed.weight.grad.abs().sum()) == 0
    assert float(heads.out_uc.weight.grad.abs().sum()) > 0
    assert D.b4.out is None and "b4.out.weight" not in dict(D.named_parameters())


def test_r1_reaches_out_uc_only():
    host, G, D, trainer = build(start=0, end=0)
    step(host, trainer, 1)
    D.requires_grad_(True)
    real, c, z = torch.randn(4, 3, 16, 16), torch.eye(5)[:4], torch.randn(4, 8)
    _phase(host, G, D, "Dreg", 1, real, c, z)
    heads = D.extensions["transitional"]
    assert heads.out_c.weight.grad is None or float(heads.out_c.weight.grad.abs().sum()) == 0
    assert float(heads.out_uc.weight.grad.abs().sum()) > 0


def test_d_logits_recorded_and_output_is_conditional():
    host, G, D, trainer = build()
    step(host, trainer, 0)
    capture = {}
    x, c = torch.randn(4, 3, 16, 16), torch.eye(5)[:4]
    out = D(x, c, capture=capture)
    assert torch.equal(out, capture["logits"]["c"]) and capture["logits"]["uc"].shape == (4, 1)
    uc_other = {}
    D(x, torch.eye(5)[1:5], capture=uc_other)
    assert torch.equal(capture["logits"]["uc"], uc_other["logits"]["uc"])


def test_option_errors():
    with pytest.raises(PluginError, match="--trans-start-kimg <= --trans-end-kimg"):
        build_host(["transitional"], {"transitional": {"trans_start_kimg": 4, "trans_end_kimg": 2}})
    with pytest.raises(PluginError, match="0 <= --trans-start-kimg"):
        build_host(["transitional"], {"transitional": {"trans_start_kimg": -1, "trans_end_kimg": 2}})
    with pytest.raises(PluginError, match="needs class labels"):
        build(c_dim=0)


def test_resume_continues_bit_for_bit_through_the_ramp(tmp_path, tiny_digits):
    torch.set_num_threads(1)
    opts = {"transitional": {"trans_start_kimg": 0.016, "trans_end_kimg": 0.064}}
    kw = dict(D_reg_interval=4, ada_interval=4, G_reg_interval=4)
    straight = run_tiny_training(str(tmp_path / "straight"), tiny_digits, plugins=["transitional"], options=opts,
                                 iterations=10, **kw)
    first = run_tiny_training(str(tmp_path / "first"), tiny_digits, plugins=["transitional"], options=opts,
                              iterations=5, **kw)
    # Stopped inside the ramp: the last gan_step (cur_nimg 32) set lambda_t = (0.032 - 0.016) / 0.048.
    assert first.cur_nimg == 40 and float(first.G_ema.mapping.extensions["transitional"].lambda_t) == pytest.approx(1 / 3)
    resumed = run_tiny_training(str(tmp_path / "second"), tiny_digits, plugins=["transitional"], options=opts,
                                iterations=5, resume=first.run_dir, **kw)
    assert resumed.c.resume_state is not None  # An exact resume (training state), not weights only.
    assert resumed.cur_nimg == straight.cur_nimg == 80
    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert float(resumed.G_ema.mapping.extensions["transitional"].lambda_t) == 1.0


def _trainer_resuming(tmp_path, tiny_digits, snap, name):
    from plugins.host import PluginHost
    from plugins.testing import tiny_config
    from training.training_loop import Trainer

    c = tiny_config(tiny_digits, str(tmp_path / name), resume_pkl=snap, resume_state=None)
    c.plugin_kwargs = make_plugin_kwargs([find_plugin("transitional")], None)
    PluginHost.from_config(c.plugin_kwargs).pm.hook.gan_configure(config=c, dataset_kwargs=c.training_set_kwargs)
    os.makedirs(c.run_dir)
    return Trainer(**c)


def test_sg2ada_conditional_snapshot_refused_unconditional_resumes(tmp_path, tiny_digits):
    cond = run_tiny_training(str(tmp_path / "cond"), tiny_digits, iterations=1)  # A plain sg2ada conditional network.
    with pytest.raises(PluginError, match=r"mapping\.fc0\.weight is \[16, 32\] there but \[16, 16\] here"):
        _trainer_resuming(tmp_path, tiny_digits, checkpoint.latest_snapshot(cond.run_dir), "refused")

    uncond = run_tiny_training(str(tmp_path / "uncond"), tiny_digits, iterations=1, cond=False)
    snap = checkpoint.latest_snapshot(uncond.run_dir)
    trainer = _trainer_resuming(tmp_path, tiny_digits, snap, "resumed")
    with open(snap, "rb") as f:
        source = pickle.load(f)
    assert torch.equal(trainer.G.mapping.fc0.weight, source["G"].mapping.fc0.weight)  # Shared parts arrive...
    assert torch.equal(trainer.D.b4.fc.weight, source["D"].b4.fc.weight)
    assert "mapping.extensions.transitional.P.weight" in trainer.G.state_dict()  # ...new ones start fresh.
    assert "b4.out.weight" in source["D"].state_dict() and "b4.out.weight" not in trainer.D.state_dict()


@pytest.mark.slow
def test_train_py_with_noisytwins_waits_for_the_label(tmp_path, tiny_digits):
    out = tmp_path / "runs"
    result = run_train([f"--outdir={out}", f"--data={tiny_digits}", "--cond=1", "--plugins=transitional,noisytwins",
                        "--trans-start-kimg=0.016", "--trans-end-kimg=0.024", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starts before conditioning is complete" in result.stdout
    (run_dir,) = glob.glob(str(out / "00000-*"))
    import json

    rows = [json.loads(line) for line in open(os.path.join(run_dir, "stats.jsonl"))]
    assert any("Loss/transitional/G_uc" in r for r in rows) and any("Progress/transitional_lambda" in r for r in rows)
    barlow_ticks = [r["Progress/kimg"]["mean"] for r in rows if "Loss/noisytwins/barlow" in r]
    assert barlow_ticks and min(barlow_ticks) > 0.016  # No twins while lambda_t = 0 (the first tick).


def _combined_config(transitional):
    """A 32 px run config for --plugins=transitional,utlo as train.py records it (plugin_kwargs with every option)."""
    options = {"transitional": transitional, "utlo": {"utlo_res_uc": 8}}
    return options, dnnlib.EasyDict(
        G_kwargs=dnnlib.EasyDict(mapping_kwargs=dnnlib.EasyDict(num_layers=2),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=256, channel_max=16)),
        D_kwargs=dnnlib.EasyDict(), batch_gpu=4,
        plugin_kwargs=make_plugin_kwargs([find_plugin("transitional"), find_plugin("utlo")], options))


def test_utlo_combination_refused_without_opt_in_and_merged_with_it():
    options, c = _combined_config({})
    host = build_host(["transitional", "utlo"], options)
    with pytest.raises(PluginError, match="'utlo' and 'transitional' cannot be combined.*--trans-with-utlo=1"):
        host.pm.hook.gan_configure(config=c, dataset_kwargs=dnnlib.EasyDict(resolution=32))
    torch.manual_seed(0)
    options, c = _combined_config({"trans_start_kimg": 1, "trans_end_kimg": 2, "trans_with_utlo": True})
    host = build_host(["transitional", "utlo"], options)
    host.pm.hook.gan_configure(config=c, dataset_kwargs=dnnlib.EasyDict(resolution=32))
    G = Generator(z_dim=8, c_dim=5, w_dim=8, img_resolution=32, img_channels=3, mapping_kwargs=c.G_kwargs.mapping_kwargs,
                  synthesis_kwargs=c.G_kwargs.synthesis_kwargs)
    D = Discriminator(c_dim=5, img_resolution=32, img_channels=3, channel_base=256, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    host.pm.hook.gan_extend_networks(G=G, D=D, dataset=dnnlib.EasyDict(name="digits"))
    trainer = setup(host, G, D, class_counts=np.ones(5, dtype=np.int64))  # utlo's gan_setup needs class counts.
    assert step(host, trainer, 1.5) == 0.5
    assert trainer.ctx.shared["full_res_loss_weight"] == 0.5  # UTLO's a_c, published for transitional's D_uc terms.
    assert base_loss_weight(host, phase="Gmain", cur_nimg=1500) == pytest.approx(0.5 * 0.5)  # lambda_t * a_c
    G.eval()
    z, c1, c2 = torch.randn(4, 8), torch.eye(5)[:4], torch.eye(5)[1:5]
    caps = [{}, {}]
    for cap, c_ in zip(caps, (c1, c2)):
        G(z, c_, noise_mode="const", capture=cap)
    assert torch.equal(caps[0]["block_outputs"][8][1], caps[1]["block_outputs"][8][1])  # UTLO: class-free 8x8.
    assert not torch.equal(caps[0]["block_outputs"][32][1], caps[1]["block_outputs"][32][1])
    assert torch.equal(caps[0]["w_streams"]["uc"], caps[1]["w_streams"]["uc"])
    # Loss: transitional's full-resolution D_uc terms take UTLO's a_c; R1 uses the full-resolution D_uc.
    G.train()
    D.requires_grad_(True)
    real = torch.randn(4, 3, 32, 32)
    loss = StyleGAN2Loss("cpu", G, D, augment_pipe=None, style_mixing_prob=0, r1_gamma=1.0, pl_weight=0)
    passes = list(loss.passes(
        "Gmain", real, c1, z, c1, 1500,
        rebuild_batch=lambda phase, z, c, cur_nimg: host.pm.hook.gan_generator_batch(phase=phase, z=z, c=c,
                                                                                     cur_nimg=cur_nimg),
        select_real_logits=lambda ctx, default: host.pm.hook.gan_real_logits(ctx=ctx)))
    terms = {(t.owner, t.name): t.weight for plugin, answer in host.each("gan_loss_terms", ctx=passes[0].ctx)
             for t in [LossTerm.from_plugin(plugin, term, passes[0].ctx, 4) for term in answer or []]}
    assert terms == {("transitional", "G_uc"): 0.5, ("utlo", "G_uc"): 0.5}  # a_c on full-res D_uc, a_uc on low-res.
    _phase(host, G, D, "Dreg", 1.5, real, c1, z)
    heads = D.extensions["transitional"]
    assert heads.out_c.weight.grad is None or float(heads.out_c.weight.grad.abs().sum()) == 0
    assert float(heads.out_uc.weight.grad.abs().sum()) > 0
