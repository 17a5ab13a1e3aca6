"""Vision-aided discriminators: backbones from files, heads, losses, frozen backbones, warm-up, weights, resume,
probe, and a few training steps with noisytwins. Backbones are tiny random networks written to local files."""

import glob
import math
import os
import pickle
import time

import numpy as np
import pytest
import torch

import dnnlib
from plugins import PluginError, hookimpl
from plugins.testing import run_tiny_training, save_tiny_backbone
from plugins.vision_aided import VisionAided, backbones, losses, probe
from plugins.vision_aided import weights as weights_mod
from plugins.vision_aided.heads import build_head
from tests.conftest import generate_without_project, run_train
from training import checkpoint


@pytest.fixture(scope="module")
def tiny_script(tmp_path_factory):
    return save_tiny_backbone(str(tmp_path_factory.mktemp("va") / "tinyconv.pt"))


def _library(name):
    try:
        return backbones.import_library(name, "test")
    except PluginError as exc:
        pytest.skip(str(exc))


def _check_features(backbone, n_maps, vector_dim):
    x = torch.rand([2, 1, 16, 16]) * 2 - 1  # Gray, smaller than the input size: P_k repeats and resizes.
    maps, vector = backbone(x)
    assert len(maps) == n_maps and vector.shape == (2, vector_dim)
    assert all(m.ndim == 4 and m.shape[0] == 2 for m in maps)
    return maps, vector


# ----------------------------------------------------------------------------- backbones from files


def test_torchscript_backbone_loads_from_its_file(tiny_script):
    backbone = backbones.build_backbone(f"torchscript:{tiny_script}", tiny_script)
    maps, _ = _check_features(backbone, 1, 16)
    assert maps[0].shape[1:] == (16, 4, 4) and backbone.head_type == "vit" and backbone.input_size == 16


def test_clip_backbone_loads_a_tiny_openai_state_dict(tmp_path):
    open_clip = _library("open_clip")
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(32, CLIPVisionCfg(layers=3, width=64, patch_size=8, image_size=32, head_width=64),
                 CLIPTextCfg(context_length=8, vocab_size=64, width=64, heads=1, layers=1), quick_gelu=True)
    model = model.half().float()  # OpenAI's release is float16; open_clip's loader rounds to it.
    path = str(tmp_path / "tiny-clip.pt")
    torch.save(model.state_dict(), path)
    backbone = backbones.build_backbone("clip", path)
    maps, vector = _check_features(backbone, 2, 32)
    assert maps[0].shape[1:] == (64, 4, 4)  # Tokens without CLS, as a 4x4 map.
    with torch.no_grad():  # The vector is CLIP's own image embedding.
        x = backbone.preprocess(torch.zeros([1, 3, 32, 32]))
        assert torch.allclose(backbone.extractor(x)[1], model.visual(x), atol=1e-5)
    del open_clip


def test_dino_backbone_infers_a_tiny_vit_from_its_weights(tmp_path):
    _library("timm")
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=1, num_classes=0)
    path = str(tmp_path / "tiny-dino.pth")
    torch.save(vit.state_dict(), path)
    backbone = backbones.build_backbone("dino", path)
    maps, _ = _check_features(backbone, 2, 64)
    assert maps[0].shape[1:] == (64, 4, 4) and backbone.input_size == 32


def test_swin_backbone_loads_a_moby_style_checkpoint(tmp_path):
    _library("timm")
    from timm.models.swin_transformer import SwinTransformer

    swin = SwinTransformer(img_size=224, patch_size=4, window_size=7, embed_dim=16, depths=(1, 1, 1, 1),
                           num_heads=(1, 1, 1, 1), num_classes=0)
    state = {f"encoder.{k}": v for k, v in swin.state_dict().items()}
    state.update({f"encoder_k.{k}": v for k, v in swin.state_dict().items()})  # MoBY's momentum twin: dropped.
    path = str(tmp_path / "tiny-moby.pth")
    torch.save({"model": state}, path)
    backbone = backbones.build_backbone("swin", path)
    maps, _ = _check_features(backbone, 1, 128)
    assert maps[0].shape[1:] == (128, 7, 7) and backbone.head_type == "conv"


def test_vgg_backbone_loads_antialiased_features(tmp_path):
    aa = _library("antialiased_cnns")
    features = aa.vgg16(pretrained=False, filter_size=4).features
    path = str(tmp_path / "vgg16-features.pth")
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    backbone = backbones.build_backbone("vgg", path)
    maps, _ = _check_features(backbone, 1, 512)
    assert maps[0].shape[1:] == (512, 7, 7)


def test_bad_keys_are_listed(tmp_path):
    _library("timm")
    from timm.models.vision_transformer import VisionTransformer

    state = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=1, num_classes=0).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["blocks.1.norm1.bias"]
    path = str(tmp_path / "bad.pth")
    torch.save(state, path)
    with pytest.raises(PluginError, match=r"missing keys: blocks\.1\.norm1\.bias; unexpected keys: extra\.weight"):
        backbones.build_backbone("dino", path)


# ----------------------------------------------------------------------------- losses and heads


def test_each_loss_equals_its_formula_on_fixed_logits():
    spatial = torch.tensor([[[0.5, -1.0], [2.0, 0.0]], [[-0.3, 0.7], [1.5, -2.0]]])
    glob = torch.tensor([[0.8], [-1.2]])
    levels = [spatial, glob]
    sp = torch.nn.functional.softplus

    def bce(s, t):
        return sp(s) - t * s

    for alpha, suffix in ((1.0, ""), (0.8, "_s")):
        assert torch.allclose(losses.vision_loss("sigmoid" + suffix, "D_real", levels), bce(glob, alpha)[:, 0])
        assert torch.allclose(losses.vision_loss("sigmoid" + suffix, "D_fake", levels), bce(glob, 0)[:, 0])
        assert torch.allclose(losses.vision_loss("sigmoid" + suffix, "G", levels), bce(glob, alpha)[:, 0])
        ml = losses.vision_loss("multilevel_sigmoid" + suffix, "D_real", levels)
        assert torch.allclose(ml, bce(spatial, alpha).mean(dim=(1, 2)) + bce(glob, alpha)[:, 0])
        assert torch.allclose(losses.vision_loss("multilevel_sigmoid" + suffix, "D_fake", levels),
                              bce(spatial, 0).mean(dim=(1, 2)) + bce(glob, 0)[:, 0])
    relu = torch.relu
    assert torch.allclose(losses.vision_loss("hinge", "D_real", levels), relu(1 - glob)[:, 0])
    assert torch.allclose(losses.vision_loss("hinge", "D_fake", levels), relu(1 + glob)[:, 0])
    assert torch.allclose(losses.vision_loss("hinge", "G", levels), -glob[:, 0])
    assert torch.allclose(losses.vision_loss("multilevel_hinge", "D_real", levels),
                          relu(1 - spatial).mean(dim=(1, 2)) + relu(1 - glob)[:, 0])
    assert torch.allclose(losses.vision_loss("multilevel_hinge", "G", levels), -spatial.mean(dim=(1, 2)) - glob[:, 0])
    # The official batch-mean hinge equals the mean of these per-sample values.
    assert torch.isclose(losses.vision_loss("hinge", "D_real", levels).mean(), relu(1 - glob).mean())


def test_smoothed_sigmoid_has_its_generator_optimum_at_ln4():
    s = torch.tensor([[math.log(4.0)]], requires_grad=True)
    losses.vision_loss("sigmoid_s", "G", [s]).sum().backward()
    assert abs(float(s.grad)) < 1e-6
    s = torch.tensor([[0.0]], requires_grad=True)
    losses.vision_loss("sigmoid", "G", [s]).sum().backward()
    assert float(s.grad) < 0  # Without smoothing G always pushes the logit up.


@pytest.mark.parametrize("head_type,multilevel", [("vit", True), ("vit", False), ("conv", False)])
def test_heads_give_logit_maps_and_a_global_logit(head_type, multilevel):
    maps = [torch.randn(3, 32, 7, 7), torch.randn(3, 32, 14, 14)]
    vector = torch.randn(3, 24)
    for kind in ("sg2", "pip"):
        head = build_head(kind, head_type, [tuple(m.shape[1:]) for m in maps], 24, multilevel, c_dim=5)
        levels = head(maps, vector, c=torch.eye(5)[:3])
        expected = 3 if head_type == "vit" and multilevel else 1
        assert len(levels) == expected and levels[-1].shape == (3, 1)
        if expected == 3:
            side = 3 if kind == "sg2" else 4  # sg2's filtered down-sampling floors 7 -> 3 (the fork's 3x3 maps).
            assert levels[0].shape == (3, side, side) and levels[1].shape == (3, side, side)  # 14 -> 7 -> side.
        assert losses.vision_loss("multilevel_sigmoid" if multilevel else "sigmoid", "D_real", levels).shape == (3,)


def test_class_changes_only_the_global_logit_of_pip_heads():
    torch.manual_seed(0)
    maps, vector = [torch.randn(2, 16, 7, 7)], torch.randn(2, 20)
    head = build_head("pip", "vit", [(16, 7, 7)], 20, True, c_dim=4).eval()
    with torch.no_grad():
        a = head(maps, vector, c=torch.eye(4)[[0, 1]])
        b = head(maps, vector, c=torch.eye(4)[[2, 3]])
        off = head(maps, vector, c=torch.eye(4)[[2, 3]], label_weight=0.0)
        none = head(maps, vector, c=None)
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    assert torch.allclose(off[1], none[1])  # transitional's lambda_t = 0 removes the projection.
    sg2 = build_head("sg2", "vit", [(16, 7, 7)], 20, True, c_dim=4)
    with torch.no_grad():  # The fork's heads ignore c.
        assert torch.equal(sg2(maps, vector, c=torch.eye(4)[[0, 1]])[1], sg2(maps, vector, c=torch.eye(4)[[2, 3]])[1])


def test_diffaug_keeps_shape_and_passes_gradients():
    from plugins.vision_aided.diffaug import cutout, diff_augment

    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    holes = (cutout(torch.ones(8, 1, 16, 16)) == 0).flatten(1).sum(1)
    assert ((holes > 0) & (holes <= 64)).all()  # One square of half the side, clipped at the border.


# ----------------------------------------------------------------------------- the plugin in training


def _plugin(tiny_script, **options):
    return VisionAided(va_backbones=f"torchscript:{tiny_script}", **options)


def _backbone_params(plugin):
    return {k: v.detach().clone() for b in plugin.backbones.values() for k, v in b.state_dict().items()}


class RecordingVisionAided(VisionAided):
    """Keeps the heads' and backbones' tensors as they were when training started (after gan_setup restored them)."""

    @hookimpl
    def gan_setup(self, ctx):
        super().gan_setup(ctx)
        self.start_backbone = _backbone_params(self)
        self.start_heads = {name: {k: v.clone() for k, v in head.state_dict().items()} for name, head in self.heads.items()}
        self.start_p = {name: float(pipe.p) for name, pipe in self.pipes.items()}


def test_d_step_trains_heads_only_and_g_gets_gradients_through_the_backbone(tmp_path, tiny_digits, tiny_script):
    plugin = RecordingVisionAided(va_backbones=f"torchscript:{tiny_script}", va_warmup_kimg=0, va_aug="ada")
    plugin.plugin_name = "vision_aided"
    trainer = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=[plugin], iterations=3)
    after_backbone = _backbone_params(plugin)
    assert all(torch.equal(plugin.start_backbone[k], after_backbone[k]) for k in after_backbone)
    assert all(p.grad is None and not p.requires_grad for b in plugin.backbones.values() for p in b.parameters())
    head = next(iter(plugin.heads.values()))
    before_head = next(iter(plugin.start_heads.values()))
    assert any(not torch.equal(before_head[k], v) for k, v in head.state_dict().items())
    d_params = {id(p) for g in trainer.phases[2].opt.param_groups for p in g["params"]}
    assert not any(id(p) in d_params for p in head.parameters())
    assert trainer.phases[2].extras[0].name == "vision_aided/ts_tinyconv"

    # Gmain: the G term's gradient reaches the image through the frozen backbone.
    from training.loss import LossContext

    img = torch.zeros([4, 1, 16, 16], requires_grad=True)
    ctx = LossContext(phase="Gmain", side="fake", cur_nimg=0, device=torch.device("cpu"), G=trainer.G, D=trainer.D,
                      augment_pipe=None, loss=trainer.loss, gen_img=img, gen_c=torch.eye(10)[:4])
    (name, weight, term), = plugin.gan_loss_terms(ctx)
    assert name == "G_ts_tinyconv" and weight == 1.0 and term.shape == (4,)
    term.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_below_warmup_the_term_is_zero_and_no_backbone_runs(tmp_path, tiny_digits, tiny_script):
    plugin = _plugin(tiny_script, va_warmup_kimg=1)
    trainer = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=[plugin], iterations=3)
    backbone = next(iter(plugin.backbones.values()))
    assert backbone.calls == 0
    import json

    stats = [json.loads(line) for line in open(os.path.join(str(tmp_path / "a"), "stats.jsonl"))]
    assert all(row["Loss/vision_aided/G_ts_tinyconv"]["mean"] == 0 for row in stats)
    assert plugin.lam == 0.0
    trainer.cur_nimg, trainer.batch_idx = 999, 1  # The run's own RunContext reads the counters live.
    trainer.pm.hook.gan_step(ctx=trainer.ctx)
    assert plugin.lam == 0.0
    trainer.cur_nimg = 1000
    trainer.pm.hook.gan_step(ctx=trainer.ctx)  # At warm-up: on at once.
    assert plugin.lam == 1.0


def test_missing_weights_stop_train_py_within_seconds_naming_backbone_file_and_option(tmp_path, tiny_digits):
    start = time.time()
    result = run_train([f"--outdir={tmp_path / 'out'}", f"--data={tiny_digits}", "--cfg=tiny", "--kimg=1",
                        "--plugins=vision_aided", "--va-backbones=clip"])
    elapsed = time.time() - start
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "no weights for backbone 'clip' (ViT-B-32.pt" in message and "--va-weights clip=" in message
    assert "Traceback" not in message and not os.path.exists(tmp_path / "out" / "00000-digits16-tiny-kimg1")
    assert elapsed < 30  # Dominated by interpreter start-up and torch import; the lookup itself is instant.


def test_weights_lookup_order_and_sha256(tmp_path, monkeypatch, tiny_script):
    monkeypatch.setenv(weights_mod.WEIGHTS_DIR_ENV, str(tmp_path))
    with pytest.raises(PluginError, match="no weights for backbone 'dino'"):
        weights_mod.resolve("dino")
    (tmp_path / "dino_vitbase16_pretrain.pth").write_bytes(b"x")
    assert weights_mod.resolve("dino") == (str(tmp_path / "dino_vitbase16_pretrain.pth"), f"${weights_mod.WEIGHTS_DIR_ENV}")
    assert weights_mod.resolve("dino", explicit=tiny_script) == (tiny_script, "--va-weights")
    fake_clip = tmp_path / "ViT-B-32.pt"
    fake_clip.write_bytes(b"not the release")
    actual = weights_mod.dnnlib.util.file_sha256(str(fake_clip))
    with pytest.raises(PluginError) as info:  # CLIP's release digest is built in.
        weights_mod.check_sha256("clip", str(fake_clip))
    assert actual in str(info.value) and weights_mod.SOURCES["clip"].sha256 in str(info.value)
    with pytest.raises(PluginError, match="expected 00ff"):
        weights_mod.check_sha256(f"torchscript:{tiny_script}", tiny_script, "00ff")
    assert weights_mod.check_sha256("clip", str(fake_clip), actual) == actual  # --va-sha256 names this file.


def test_wrong_sha256_is_refused_by_the_plugin(tiny_script):
    plugin = _plugin(tiny_script, va_sha256=f"torchscript:{tiny_script}=" + "0" * 64)
    with pytest.raises(PluginError, match="expected 0000"):
        plugin.gan_configure(config={"metrics": []})


def test_option_errors():
    with pytest.raises(PluginError, match="unknown backbone 'resnet'"):
        VisionAided(va_backbones="resnet")
    with pytest.raises(PluginError, match="2 entries for 1 backbones"):
        VisionAided(va_backbones="clip", va_loss="sigmoid+hinge")
    with pytest.raises(PluginError, match="--va-weights names dino"):
        VisionAided(va_backbones="clip", va_weights="dino=/x")
    with pytest.raises(PluginError, match="needs --va-head=pip"):
        VisionAided(va_cond="on")
    with pytest.raises(PluginError, match="finite"):
        VisionAided(va_weight=float("nan"))


def test_trains_with_noisytwins_snapshot_has_no_backbone_and_resume_restores_heads(tmp_path, tiny_digits, tiny_script):
    options = {"vision_aided": dict(va_backbones=f"torchscript:{tiny_script}", va_warmup_kimg=0)}
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=["noisytwins", "vision_aided"], options=options,
                              iterations=9, network_snapshot_ticks=1)
    import json

    stats = [json.loads(line) for line in open(os.path.join(first.run_dir, "stats.jsonl"))]
    assert any("vision_aided/ts_tinyconv/ada_r" in row for row in stats)  # The head's own ADA ran.
    snap, state_path = checkpoint.resolve_resume(first.run_dir)

    # No backbone tensors: the snapshot holds exactly what a run without the plugin holds.
    plain = run_tiny_training(str(tmp_path / "plain"), tiny_digits, plugins=["noisytwins"], iterations=1,
                              network_snapshot_ticks=1)
    def numel(path):
        with open(path, "rb") as f:
            data = pickle.load(f)
        return sum(t.numel() for key in ("G", "D", "G_ema", "augment_pipe") if data.get(key) is not None
                   for t in list(data[key].parameters()) + list(data[key].buffers()))
    assert numel(snap) == numel(checkpoint.resolve_resume(plain.run_dir)[0])
    state = checkpoint.load_state(state_path)
    saved = state["plugins"]["vision_aided"]["backbones"][f"torchscript:{tiny_script}"]
    assert set(saved) >= {"head", "p", "ada", "loss", "sha256", "weights_file", "random_init"}
    assert not any(k.startswith(("conv1", "conv2", "module")) for k in saved["head"])
    plugin = first.host.plugins["vision_aided"]
    assert saved["p"] == pytest.approx(float(next(iter(plugin.pipes.values())).p))
    p = 0.37  # A value ADA cannot have reached: the resumed p_k must come from the state.
    saved["p"] = saved["ada"]["p"] = p
    checkpoint.save_state(state_path, state)

    # Generates without the plugin (and without training/ and plugins/).
    result = generate_without_project(snap, str(tmp_path / "gen"), str(tmp_path / "work"), args=("--seeds=0-1", "--class=3"))
    assert result.returncode == 0, result.stderr[-2000:]

    name = f"torchscript:{tiny_script}"
    resumed = RecordingVisionAided(va_backbones=name, va_warmup_kimg=0)
    second = run_tiny_training(str(tmp_path / "b"), tiny_digits, plugins=["noisytwins", resumed],
                               iterations=1, resume=first.run_dir)  # Its newest snapshot: snap, with the edited state.
    assert second.c.resume_pkl == snap and second.c.resume_state == state_path
    assert all(torch.equal(saved["head"][k], v) for k, v in resumed.start_heads[name].items())
    assert resumed.start_p[name] == pytest.approx(p)
    step = second.extra_optimizers["vision_aided/ts_tinyconv"].state_dict()["state"][0]["step"]
    assert step == state["extra_optimizers"]["vision_aided/ts_tinyconv"]["state"][0]["step"] + 1


def test_resume_refuses_other_weights(tmp_path, tiny_digits, tiny_script):
    options = {"vision_aided": dict(va_backbones=f"torchscript:{tiny_script}", va_warmup_kimg=0)}
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=["vision_aided"], options=options, iterations=1,
                              network_snapshot_ticks=1)
    _snap, state_path = checkpoint.resolve_resume(first.run_dir)
    state = checkpoint.load_state(state_path)
    state["plugins"]["vision_aided"]["backbones"][f"torchscript:{tiny_script}"]["sha256"] = "ab" * 32
    checkpoint.save_state(state_path, state)
    with pytest.raises(PluginError, match="trained with weights of SHA-256 abab"):
        run_tiny_training(str(tmp_path / "b"), tiny_digits, plugins=["vision_aided"], options=options, iterations=0,
                          resume=first.run_dir)


# ----------------------------------------------------------------------------- probe


def test_probe_picks_the_separable_candidate():
    rng = np.random.default_rng(0)
    real = rng.standard_normal([200, 8])
    separable = (real + 0, rng.standard_normal([200, 8]) + np.r_[3.0, np.zeros(7)])
    mixed = (rng.standard_normal([200, 8]), rng.standard_normal([200, 8]))
    accuracies = {"clip": probe.linear_probe(*mixed), "dino": probe.linear_probe(*separable)}
    assert accuracies["dino"] > 0.9 and accuracies["clip"] < 0.65
    assert probe.suggest(accuracies, {"clip": "vit", "dino": "vit"}) == ("dino", "multilevel_sigmoid_s")
    assert probe.suggest(accuracies, {"clip": "vit", "dino": "vit"}, used=["dino"]) == ("clip", "multilevel_sigmoid")
    assert probe.suggest(accuracies, {"clip": "conv", "dino": "vit"}, used=["dino", "clip"]) is None


@pytest.mark.slow
def test_probe_command_runs_on_a_snapshot(tmp_path, tiny_digits, tiny_script):
    trainer = run_tiny_training(str(tmp_path / "a"), tiny_digits, iterations=1, network_snapshot_ticks=1)
    snap, _ = checkpoint.resolve_resume(trainer.run_dir)
    from click.testing import CliRunner

    from plugins.vision_aided.__main__ import cli

    result = CliRunner().invoke(cli, ["probe", f"--network={snap}", f"--data={tiny_digits}", "--num=64",
                                      f"--candidates=torchscript:{tiny_script}"])
    assert result.exit_code == 0, result.output
    assert "Suggested: --plugins=vision_aided --va-backbones=torchscript:" in result.output


def test_transitional_lambda_scales_the_head_projection_and_selfcond_clusters_are_its_classes(tmp_path, tiny_digits,
                                                                                              tiny_script):
    name = f"torchscript:{tiny_script}"
    plugin = RecordingVisionAided(va_backbones=name, va_warmup_kimg=0, va_head="pip")
    run_tiny_training(str(tmp_path / "t"), tiny_digits, plugins=["transitional", plugin], iterations=2,
                      options={"transitional": dict(trans_start_kimg=1000, trans_end_kimg=2000)})  # lambda_t = 0.
    before, after = plugin.start_heads[name], dict(plugin.heads[name].named_parameters())
    embed = [k for k in after if k.startswith("projection.embed.")]
    assert embed and all(torch.equal(before[k], after[k]) for k in embed)  # No class signal while lambda_t = 0.
    assert any(not torch.equal(before[k], v) for k, v in after.items() if k not in embed)

    plugin = RecordingVisionAided(va_backbones=name, va_warmup_kimg=0, va_head="pip")
    trainer = run_tiny_training(str(tmp_path / "s"), tiny_digits, plugins=["selfcond", plugin], iterations=1, cond=False,
                                options={"selfcond": dict(sc_k=4, sc_nimgs=200)})
    assert trainer.D.c_dim == 4 and plugin.heads[name].projection.embed.in_features == 4  # c = the cluster.


@pytest.mark.slow
def test_progressive_stages_add_the_probed_backbones_and_keep_the_earlier_heads(tmp_path, tiny_digits, tiny_script):
    """Baseline, then two stages, each restarting from the best snapshot with the probe's next backbone. A stage that
    adds a backbone starts the earlier backbones' heads from the best snapshot, as the official
    stages restore cvD from the pickle; the new backbone's head is fresh."""
    second = save_tiny_backbone(str(tmp_path / "second.pt"))
    first_name, second_name = f"torchscript:{tiny_script}", f"torchscript:{second}"
    out = str(tmp_path / "prog")
    final = probe.progressive(out, tiny_digits, ["0.02", "0.02", "0.02"], [first_name, second_name], "none",
                              ["--cfg=tiny", "--workers=0", "--cond=1", "--tensorboard=0"], num=64, log=lambda *a: None)
    import json

    options = json.load(open(os.path.join(final, "training_options.json")))
    used = options["plugin_kwargs"]["vision_aided"]["va_backbones"].split("+")
    heads_from = options["plugin_kwargs"]["vision_aided"]["va_heads_from"]
    assert len(used) == 2 and heads_from.endswith(".pkl")
    assert options["plugin_kwargs"]["vision_aided"]["va_warmup_kimg"] == 0
    assert options["resume_pkl"] == os.path.join(out, "stage2-start.pkl")  # The previous best snapshot, alone.
    assert options["ada_kimg"] == 500  # The fork's ADA speed on a vision-aided stage (upstream's resume: 100).
    assert checkpoint.latest_snapshot(final) is not None
    before = checkpoint.load_state(checkpoint.state_path_for(heads_from))["plugins"]["vision_aided"]["backbones"]
    assert set(before) == {used[0]}
    log = open(os.path.join(final, "log.txt")).read()
    assert f"head of backbone {used[0]!r} restored" in log and f"new backbone(s) {used[1]}: their heads start fresh" in log
    # The restored head goes on from the earlier stage's weights: at the stage's first snapshot (after one step, an
    # Adam step of at most about lr = 0.005 per weight) it is still within 0.02 of them everywhere.
    first_state = sorted(glob.glob(os.path.join(final, "training-state-*.pt")))[0]
    at_start = checkpoint.load_state(first_state)["plugins"]["vision_aided"]["backbones"]
    for key, value in before[used[0]]["head"].items():
        if value.is_floating_point():
            assert (at_start[used[0]]["head"][key] - value).abs().max() <= 0.02, key


def test_export_backbone_command_trains_a_run_without_downloads(tmp_path, tiny_digits, monkeypatch):
    """The documented offline path: export the project's classifier of the data as a TorchScript backbone, then train
    vision_aided on it; a warm-up beyond the run's length is announced."""
    from click.testing import CliRunner

    from plugins.vision_aided.__main__ import cli

    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    out = str(tmp_path / "backbones" / "digits-cnn.pt")
    result = CliRunner().invoke(cli, ["export-backbone", f"--data={tiny_digits}", f"--out={out}"])
    assert result.exit_code == 0, result.output
    assert f"Use: --plugins=vision_aided --va-backbones=torchscript:{os.path.abspath(out)}" in result.output
    backbone = backbones.build_backbone(f"torchscript:{out}", out)
    maps, vector = backbone(torch.rand([2, 1, 16, 16]) * 2 - 1)
    assert len(maps) == 2 and vector.ndim == 2
    options = {"vision_aided": dict(va_backbones=f"torchscript:{out}", va_warmup_kimg=0)}
    trainer = run_tiny_training(str(tmp_path / "run"), tiny_digits, plugins=["vision_aided"], options=options,
                                iterations=2)
    name = "Loss/vision_aided/G_ts_digits-cnn"
    assert name in trainer.stats_collector.as_dict()


def test_warmup_beyond_the_run_is_announced(capsys):
    from plugins.testing import tiny_config

    plugin = VisionAided(va_backbones="clip", va_random_init=True)
    c = tiny_config("data.zip", "run", total_kimg=15)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plugin.gan_configure(config=c)
    assert "--va-warmup-kimg=500 is not below this run's --kimg=15" in capsys.readouterr().out


def test_auto_loss_for_vit_backbones_is_the_official_readmes_multilevel_sigmoid_s(tmp_path, tiny_digits, tiny_script):
    """Both official READMEs train CLIP with --cv-loss multilevel_sigmoid_s (label smoothing); conv backbones keep
    the progressive driver's rule (sigmoid, _s with DiffAugment), and so does the probe's suggestion."""
    options = {"vision_aided": dict(va_backbones=f"torchscript:{tiny_script}", va_warmup_kimg=0)}
    trainer = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=["vision_aided"], options=options, iterations=1)
    plugin = trainer.host.plugins["vision_aided"]
    assert plugin.backbones[f"torchscript:{tiny_script}"].head_type == "vit"
    assert plugin.losses == {f"torchscript:{tiny_script}": "multilevel_sigmoid_s"}
    assert losses.training_default_loss("conv", "ada") == "sigmoid"
    assert losses.training_default_loss("conv", "diffaug") == "sigmoid_s"


def test_heads_from_a_missing_state_names_the_option_and_what_to_pass(tmp_path):
    plugin = VisionAided(va_backbones="clip", va_heads_from=str(tmp_path / "network-snapshot-000010.pkl"))
    with pytest.raises(PluginError, match=r"--va-heads-from=.*no training state at .*training-state-000010\.pt; pass a "
                                          r"training-state-\*\.pt file or a snapshot with its state beside it"):
        plugin._heads_state()


def test_metrics_in_a_backbones_feature_space_are_flagged_as_biased():
    plugin = VisionAided(va_backbones="clip", va_random_init=True)
    with pytest.warns(UserWarning, match="'fid_clip50k_full' uses the image embedding of CLIP ViT-B/32.*biased"):
        plugin.gan_configure(config=dnnlib.EasyDict(metrics=["fid_clip50k_full", "fid50k_full"]))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugin.gan_configure(config=dnnlib.EasyDict(metrics=["fid50k_full"]))
    assert not [w for w in caught if "biased" in str(w.message)]
