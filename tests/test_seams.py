"""Host seams, each exercised by a small real plugin: label width and label prior, periodic jobs with the
data, extra optimisers, frozen modules, fake-side D features in Dmain, the mapping input without c, D's output
from a plugin's heads, and published state between plugins."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dnnlib
from plugins import hookimpl
from plugins.testing import BLOCK_PROJECT_IMPORTS, run_tiny_training
from torch_utils import misc
from training import checkpoint
from training.networks import MappingNetwork, set_label_prior

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- label width, prior, periodic jobs


class BrightnessClasses:
    """Labels an unlabelled dataset by image brightness (3 classes) and re-labels with a frozen D at step 0."""

    plugin_name = "bright"

    def __init__(self):
        self.steps_with_jobs = []
        self.frozen_D_was_copy = None

    @hookimpl
    def gan_label_dim(self, label_dim):
        assert label_dim == 0  # The dataset is used without labels.
        return 3

    @hookimpl
    def gan_extend_networks(self, G):
        set_label_prior(G, [1, 1, 1])  # Created before G_ema is copied and before resume, so both carry it.

    @hookimpl
    def gan_real_labels(self, images):
        brightness = images.mean(dim=[1, 2, 3])
        ids = (brightness > -0.85).long() + (brightness > -0.75).long()
        return torch.nn.functional.one_hot(ids, 3).float()

    @hookimpl
    def gan_step(self, ctx):
        if ctx.batch_idx != 0:
            return
        D_copy = ctx.frozen_D()
        self.frozen_D_was_copy = D_copy is not ctx.D and not D_copy.training and not any(
            p.requires_grad for p in D_copy.parameters())
        counts = ctx.on_rank0_then_broadcast(lambda: np.array([10, 30, 60]))
        ctx.set_class_counts(counts)
        ctx.set_label_prior(counts)
        self.steps_with_jobs.append(ctx.batch_idx)


class CountsListener:
    plugin_name = "listener"

    def __init__(self):
        self.counts = []

    @hookimpl
    def gan_class_counts_changed(self, class_counts):
        self.counts.append(list(class_counts))


def test_plugin_sets_label_width_prior_and_class_counts_on_unlabelled_data(tmp_path, tiny_digits):
    bright, listener = BrightnessClasses(), CountsListener()
    trainer = run_tiny_training(str(tmp_path / "run"), tiny_digits, plugins=[bright, listener], iterations=3, cond=False,
                                network_snapshot_ticks=1, image_snapshot_ticks=1)
    assert trainer.training_set.label_dim == 0 and trainer.c_dim == 3 and trainer.G.c_dim == trainer.D.c_dim == 3
    assert bright.steps_with_jobs == [0] and bright.frozen_D_was_copy
    assert listener.counts == [[10, 30, 60]] and list(trainer.class_counts) == [10, 30, 60]
    np.testing.assert_allclose(misc.label_prior(trainer.G_ema), [0.1, 0.3, 0.6], rtol=1e-6)
    # Fakes follow the prior (the default sampler uses the trainer's RNG, so runs stay exact).
    labels = trainer.sample_fake_labels(3000, real_c=None).numpy()
    np.testing.assert_allclose(labels.mean(axis=0), [0.1, 0.3, 0.6], atol=0.03)
    # The snapshot carries the prior; the metric sampler and generate.py draw from it without the plugin.
    snap = checkpoint.latest_snapshot(trainer.run_dir)
    with open(snap, "rb") as f:
        G = pickle.load(f)["G_ema"]
    np.testing.assert_allclose(misc.label_prior(G), [0.1, 0.3, 0.6], rtol=1e-6)
    from metrics.metric_utils import FakeLabelSampler

    _c, ids = FakeLabelSampler(None, 3, "dataset", rng=np.random.default_rng(0), prior=misc.label_prior(G)).sample(3000)
    np.testing.assert_allclose(np.bincount(ids, minlength=3) / 3000, [0.1, 0.3, 0.6], atol=0.03)
    out = tmp_path / "gen"
    script = BLOCK_PROJECT_IMPORTS + textwrap.dedent(f"""
        sys.argv = ['generate.py', '--network={snap}', '--seeds=0-3', '--outdir={out}']
        import generate
        generate.generate_images()
    """)
    gen = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert "drawn from the network's label prior" in gen.stdout and len(os.listdir(out)) == 4


def test_label_width_without_real_labels_is_a_clear_error(tmp_path, tiny_digits):
    class WidthOnly:
        @hookimpl
        def gan_label_dim(self):
            return 4

    from plugins import PluginError

    with pytest.raises(PluginError, match="c_dim=4 but the data's labels are 0 wide and no plugin provides real labels"):
        run_tiny_training(str(tmp_path / "run"), tiny_digits, plugins=[WidthOnly()], iterations=1, cond=False)


def test_bad_label_prior_is_refused():
    G = dnnlib.EasyDict(c_dim=3)
    with pytest.raises(ValueError, match="needs 3 finite non-negative weights"):
        set_label_prior(G, [1, -1, 1])


# ----------------------------------------------------------------------------- extra optimiser, fake-side ctx


class AuxHead:
    """An extra real/fake head on D's epilogue features, sized from D.feature_dims, trained by its own Adam."""

    plugin_name = "aux"

    def __init__(self):
        self.head = None
        self.sides = set()

    @hookimpl
    def gan_extend_networks(self, D):
        torch.manual_seed(123)
        self.head = torch.nn.Linear(D.feature_dims["fc"][0], 1)

    @hookimpl
    def gan_extra_optimizers(self):
        return [dict(name="head", params=list(self.head.parameters()), step_with="D",
                     opt_kwargs=dict(class_name="torch.optim.Adam", lr=0.01, betas=[0, 0.99]))]

    @hookimpl
    def gan_loss_terms(self, ctx):
        if ctx.phase != "Dmain":
            return []
        self.sides.add(ctx.side)
        if ctx.side == "fake":  # D's features of this pass's fakes: no second D pass needed.
            assert ctx.gen_logits is not None and ctx.d_capture["fc"].requires_grad
            return [("fake", 1.0, torch.nn.functional.softplus(self.head(ctx.d_capture["fc"])).squeeze(1))]
        return [("real", 1.0, torch.nn.functional.softplus(-self.head(ctx.d_capture["fc"])).squeeze(1))]

    @hookimpl
    def gan_step(self):
        assert not any(p.requires_grad for p in self.head.parameters())  # Trainable only during D's phases.


def test_extra_optimizer_trains_its_head_with_D_and_resumes(tmp_path, tiny_digits):
    aux = AuxHead()
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=[aux], iterations=3)
    torch.manual_seed(123)
    initial = torch.nn.Linear(first.D.feature_dims["fc"][0], 1).weight
    assert not torch.equal(aux.head.weight, initial)  # Stepped by its own optimiser.
    assert aux.sides == {"fake", "real"}
    d_params = {id(p) for group in first.phases[2].opt.param_groups for p in group["params"]}
    assert not any(id(p) in d_params for p in aux.head.parameters())  # Not in D's optimiser.
    assert first.phases[2].name == "Dmain" and first.phases[2].extras[0].name == "aux/head"
    ratio = 16 / 17  # D's lazy-regularisation ratio reaches the extra optimiser too.
    assert first.extra_optimizers["aux/head"].param_groups[0]["lr"] == pytest.approx(0.01 * ratio)
    state = checkpoint.load_state(checkpoint.state_path_for(checkpoint.latest_snapshot(first.run_dir)))
    saved = state["extra_optimizers"]["aux/head"]
    assert saved["state"]  # Adam moments were saved.
    pkl, st = checkpoint.resolve_resume(first.run_dir)
    again = AuxHead()
    second = run_tiny_training(str(tmp_path / "b"), tiny_digits, plugins=[again], iterations=1, resume_pkl=pkl,
                               resume_state=st)
    assert second.extra_optimizers["aux/head"].state_dict()["state"][0]["step"] > saved["state"][0]["step"]


def test_extra_optimizer_new_on_resume_starts_fresh_with_a_notice(tmp_path, tiny_digits, capsys):
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, iterations=1)
    pkl, st = checkpoint.resolve_resume(first.run_dir)
    capsys.readouterr()
    state = checkpoint.load_state(st)
    state["plugin_names"] = ["aux"]  # As if the run had used the plugin but saved no optimiser for it.
    checkpoint.save_state(st, state)
    run_tiny_training(str(tmp_path / "b"), tiny_digits, plugins=[AuxHead()], iterations=1, resume_pkl=pkl, resume_state=st)
    assert "optimiser 'aux/head' is new in this run; it starts fresh" in capsys.readouterr().out


# ----------------------------------------------------------------------------- frozen modules


class FrozenFeatures:
    """A fixed random conv 'backbone' whose features of the fakes G must match (gradients flow through it)."""

    plugin_name = "frozen"

    def __init__(self):
        torch.manual_seed(7)
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
        self.initial = {k: v.clone() for k, v in self.backbone.state_dict().items()}
        self.grad_reached_G = False

    @hookimpl
    def gan_frozen_modules(self):
        return {"frozen/backbone": self.backbone}

    @hookimpl
    def gan_loss_terms(self, ctx):
        if ctx.phase != "Gmain":
            return []
        assert not self.backbone.training
        return [("feat", 0.1, self.backbone(ctx.gen_img).square().mean(dim=[1, 2, 3]))]

    @hookimpl
    def gan_step(self):
        self.grad_reached_G = self.grad_reached_G or self.backbone[0].weight.grad is not None


def test_frozen_module_is_used_but_never_trained_or_saved(tmp_path, tiny_digits):
    plugin = FrozenFeatures()
    trainer = run_tiny_training(str(tmp_path / "run"), tiny_digits, plugins=[plugin], iterations=3)
    backbone = trainer.frozen_modules["frozen/backbone"]
    assert backbone is plugin.backbone and not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters()) and not plugin.grad_reached_G
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, plugin.initial[key]), key  # BatchNorm statistics included: eval mode throughout.
    in_optimisers = {id(p) for phase in trainer.phases for g in phase.opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimisers for p in backbone.parameters())
    snap = checkpoint.latest_snapshot(trainer.run_dir)
    with open(snap, "rb") as f:
        data = pickle.load(f)
    for net in ("G", "D", "G_ema"):
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in data[net].modules())
    state = checkpoint.load_state(checkpoint.state_path_for(snap))
    assert "frozen" not in state["plugins"] and not state["extra_optimizers"]
    stats = open(os.path.join(trainer.run_dir, "stats.jsonl")).read()
    assert "Loss/frozen/feat" in stats


# ----------------------------------------------------------------------------- mapping input without c


class InjectAfterFc0(torch.nn.Module):
    """c enters after layer 0 (transitional-cGAN's shape): h = fc0(norm z) + P(norm e)."""

    def __init__(self, embed_features, w_dim):
        super().__init__()
        self.proj = torch.nn.Linear(embed_features, w_dim)

    def after_layer(self, idx, h, stream, e, c):
        if idx != 0:
            return h
        return h + self.proj(e / e.square().mean(dim=1, keepdim=True).add(1e-8).sqrt())


def test_mapping_without_c_at_fc0():
    torch.manual_seed(0)
    nvidia = MappingNetwork(z_dim=8, c_dim=3, w_dim=16, num_ws=4, num_layers=2)
    torch.manual_seed(0)
    explicit = MappingNetwork(z_dim=8, c_dim=3, w_dim=16, num_ws=4, num_layers=2, c_in_fc0=True)
    z, c = torch.randn(4, 8), torch.eye(3)[[0, 1, 2, 0]]
    assert [n for n, _ in nvidia.named_parameters()] == [n for n, _ in explicit.named_parameters()]
    assert nvidia.fc0.weight.shape == (16, 8 + 16)
    assert torch.equal(nvidia(z, c), explicit(z, c))  # The option's default is NVIDIA's network, numerically.

    mapping = MappingNetwork(z_dim=8, c_dim=3, w_dim=16, num_ws=4, num_layers=2, c_in_fc0=False)
    assert mapping.fc0.weight.shape == (16, 8) and mapping.embed.weight.shape == (16, 3)
    mapping.eval()
    z2 = z[:1].repeat(2, 1)
    c2 = torch.eye(3)[[0, 1]]
    out = mapping(z2, c2)
    assert torch.equal(out[0], out[1])  # Without an extension, c does not reach w.
    mapping.extensions["inject"] = InjectAfterFc0(16, 16)
    out = mapping(z2, c2)
    assert not torch.equal(out[0], out[1])  # c enters after fc0.
    loss = out.sum()
    loss.backward()
    assert mapping.embed.weight.grad is not None and mapping.embed.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- D's output head, published state


class TwoHeads(torch.nn.Module):
    """A D extension whose epilogue_head supplies D's output (one head) and records another."""

    def __init__(self, features):
        super().__init__()
        self.a = torch.nn.Linear(features, 1)
        self.b = torch.nn.Linear(features, 1)

    def epilogue_head(self, x, cmap, capture):
        if capture is not None:
            capture["logits"] = dict(b=self.b(x))
        return self.a(x)


def test_d_extension_head_replaces_epilogue_output():
    from training.networks import Discriminator

    torch.manual_seed(0)
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=128, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    x = torch.randn(4, 1, 16, 16)
    capture = {}
    plain = D(x, None, capture=capture)
    assert torch.equal(plain, D.b4.out(capture["fc"]))  # NVIDIA's output without a head.
    D.extensions["heads"] = TwoHeads(D.feature_dims["fc"][0])
    capture = {}
    out = D(x, None, capture=capture)
    assert torch.equal(out, D.extensions["heads"].a(capture["fc"]))
    assert torch.equal(capture["logits"]["b"], D.extensions["heads"].b(capture["fc"]))


class Publisher:
    plugin_name = "publisher"

    @hookimpl
    def gan_step(self, ctx):
        ctx.shared["label_weight"] = 0.0 if ctx.cur_nimg < 16 else 1.0


class Reader:
    plugin_name = "reader"

    def __init__(self):
        self.seen = []

    @hookimpl
    def gan_setup(self, ctx):
        self.shared = ctx.shared

    @hookimpl
    def gan_loss_terms(self, ctx):
        if ctx.phase == "Gmain":
            self.seen.append((ctx.cur_nimg, self.shared.get("label_weight")))
        return []


def test_published_state_reaches_a_plugin_listed_before_the_publisher(tmp_path, tiny_digits):
    reader = Reader()
    run_tiny_training(str(tmp_path), tiny_digits, plugins=[reader, Publisher()], iterations=3)
    assert reader.seen == [(0, 0.0), (8, 0.0), (16, 1.0)]  # Written this iteration, although the reader's hook ran first.
