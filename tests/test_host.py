"""Plugin host v3: plugins carried in the run config, one call order, every hook exercised, replay of a run."""

import glob
import hashlib
import json
import os
import pickle
import re

import numpy as np
import pytest
import torch

from plugins import PluginError, hookimpl, hookspecs
from plugins.host import HOOK_NAMES, PluginHost, construct_plugin, find_plugin, make_plugin_kwargs
from plugins.testing import run_tiny_training
from tests import recording_plugins
from tests.conftest import run_train
from training import checkpoint

B, A = "tests.recording_plugins:RecordingB", "tests.recording_plugins:RecordingA"
TINY = ["--cfg=tiny", "--batch=8", "--kimg=0.048", "--tick=1", "--snap=1", "--workers=0", "--metrics=none",
        "--tensorboard=0", "--seed=5"]


def calls_of(hook_name):
    return [plugin for plugin, hook in recording_plugins.CALLS if hook == hook_name]


def test_plugin_kwargs_record_class_version_and_options():
    kwargs = make_plugin_kwargs([find_plugin("noisytwins"), find_plugin("utlo")], {"noisytwins": {"nt_sigma": 0.5}})
    assert list(kwargs) == ["noisytwins", "utlo"]
    assert kwargs["noisytwins"] == dict(class_name="plugins.noisytwins.NoisyTwins", version="1.0", source="built-in",
                                        nt_sigma=0.5, nt_beta=0.99, nt_lambda=0.01, nt_gamma=0.05, nt_start_kimg=0,
                                        nt_d_noise=True)
    plugin, _source = construct_plugin("noisytwins", json.loads(json.dumps(kwargs["noisytwins"])))  # JSON round trip.
    assert plugin.sigma == 0.5 and plugin.beta == 0.99


def test_bad_options_fail_in_the_constructor_naming_the_plugin():
    with pytest.raises(PluginError, match="noisytwins: need --nt-sigma >= 0"):
        PluginHost.create(["noisytwins"], {"noisytwins": {"nt_sigma": -1}})
    kwargs = make_plugin_kwargs([find_plugin("utlo")])
    kwargs["utlo"]["utlo_typo"] = 3
    with pytest.raises(PluginError, match="plugin 'utlo': cannot construct it with options.*utlo_typo"):
        PluginHost.from_config(kwargs)


def test_missing_plugin_in_config_is_a_clear_error():
    with pytest.raises(PluginError, match="plugin 'gone': cannot import nowhere_pkg.Plugin.*installed"):
        PluginHost.from_config({"gone": {"class_name": "nowhere_pkg.Plugin", "version": "1"}})


def test_gan_add_options_must_be_static():
    class Instance:
        from plugins import hookimpl

        @hookimpl
        def gan_add_options(self):
            return []

    factory = find_plugin("noisytwins")
    factory.obj = Instance
    with pytest.raises(PluginError, match="gan_add_options must be a @staticmethod"):
        factory.declared_options()


@pytest.mark.slow
def test_every_hook_runs_once_per_run_in_plugins_order(tmp_path, tiny_digits):
    """B before A although A sorts first; every hook of hookspecs.py is implemented and called."""
    recording_plugins.CALLS.clear()
    recording_plugins.RESTORED.clear()
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=[B, A], iterations=2,
                              metrics=["recording_metric"], network_snapshot_ticks=1)
    once = ["gan_configure", "gan_extend_networks", "gan_frozen_modules", "gan_extra_optimizers",
            "gan_register_metrics", "gan_setup"]
    for hook in once + ["gan_add_options"]:
        assert calls_of(hook) == ["rec_b", "rec_a"], hook
    pkl, state = checkpoint.resolve_resume(first.run_dir)
    run_tiny_training(str(tmp_path / "b"), tiny_digits, plugins=[B, A], iterations=1, resume_pkl=pkl, resume_state=state,
                      metrics=["recording_metric"])
    called = {hook for _plugin, hook in recording_plugins.CALLS}
    assert called == set(HOOK_NAMES)  # Each hook is implemented (here) and reached by the loop.
    for hook in HOOK_NAMES:
        sequence = calls_of(hook)
        if hook in recording_plugins.FIRSTRESULT:
            assert set(sequence) == {"rec_a"}, hook
        else:  # Every invocation calls B, then A.
            assert sequence == ["rec_b", "rec_a"] * (len(sequence) // 2) and sequence, (hook, sequence)
    assert calls_of("gan_check_resume") == ["rec_b", "rec_a"]
    # Setup of the fresh run, then of the resumed one: each plugin receives what its gan_state_dict returned.
    assert recording_plugins.RESTORED == [("rec_b", None), ("rec_a", None), ("rec_b", {"saved_by": "rec_b"}),
                                          ("rec_a", {"saved_by": "rec_a"})]


def snapshot_digest(path):
    with open(path, "rb") as f:
        data = pickle.load(f)
    h = hashlib.sha256()
    for key in ("G", "D", "G_ema"):
        for name, tensor in sorted(data[key].state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_config_replays_a_run_bit_for_bit(tmp_path, tiny_digits):
    out = tmp_path / "runs"
    result = run_train([f"--outdir={out}", f"--data={tiny_digits}", "--cond=1", "--plugins=noisytwins",
                        "--nt-sigma=0.5", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = glob.glob(str(out / "00000-*"))
    config = os.path.join(run_dir, "training_options.json")
    result = run_train([f"--outdir={out}", f"--config={config}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (replay_dir,) = glob.glob(str(out / "00001-*replay"))
    replayed = json.load(open(os.path.join(replay_dir, "training_options.json")))
    assert replayed["plugin_kwargs"]["noisytwins"]["nt_sigma"] == 0.5
    original, again = (checkpoint.latest_snapshot(d) for d in (run_dir, replay_dir))
    assert os.path.basename(original) == os.path.basename(again)
    assert snapshot_digest(original) == snapshot_digest(again)


def test_config_refuses_other_options_and_bad_files(tmp_path, tiny_digits):
    bad = tmp_path / "options.json"
    bad.write_text('{"not": "a run"}')
    result = run_train([f"--outdir={tmp_path}/out", f"--config={bad}"])
    assert result.returncode != 0 and "not a training_options.json" in result.stderr
    result = run_train([f"--outdir={tmp_path}/out", f"--config={bad}", "--gamma=3"])
    assert result.returncode != 0 and "drop --gamma" in result.stderr
    result = run_train([f"--outdir={tmp_path}/out", f"--config={tmp_path}/missing.json"])
    assert result.returncode != 0 and "cannot read it" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_failed_setup_leaves_no_run_directory(tmp_path, tiny_digits):
    """noisytwins refuses unlabelled data in the training loop's first step: no half-made run directory remains."""
    result = run_train([f"--outdir={tmp_path}/out", f"--data={tiny_digits}", "--cond=0", "--plugins=noisytwins", *TINY])
    assert result.returncode != 0 and "plugin 'noisytwins' needs class labels" in result.stderr
    assert not os.path.exists(tmp_path / "out")


# ----------------------------------------------------------------------------- error paths of the host's seams


class _Returns:
    """A plugin whose named hook returns a fixed (bad) value."""

    plugin_name = "bad"

    def __init__(self, hook, value):
        setattr(self, hook, hookimpl(recording_plugins.with_signature_of(getattr(hookspecs, hook), lambda *args: value)))


ADAM = dict(class_name="torch.optim.Adam", lr=0.001)
BAD_SEAM_RETURNS = [
    ("gan_label_dim", 0, "plugin 'bad': gan_label_dim must return a positive int"),
    ("gan_extra_optimizers", [{"name": "x"}], "plugin 'bad': gan_extra_optimizers: "),
    ("gan_extra_optimizers", [dict(name="x", params=[torch.nn.Parameter(torch.zeros(1))], opt_kwargs=ADAM, step_with="E")],
     "plugin 'bad': gan_extra_optimizers: optimiser 'x' has step_with='E'; use 'G' or 'D'"),
    ("gan_extra_optimizers", [dict(name="x", params=[], opt_kwargs=ADAM, step_with="D")],
     "optimiser 'x' needs a non-empty list of torch.nn.Parameter"),
    ("gan_extra_optimizers", [dict(name="x", params=[torch.nn.Parameter(torch.zeros(1))], opt_kwargs={}, step_with="D")],
     "opt_kwargs needs a class_name"),
    ("gan_frozen_modules", {"net": object()}, "plugin 'bad': frozen module 'net' is not a torch.nn.Module"),
    ("gan_loss_terms", [("t", float("inf"), torch.zeros(8))], "plugin 'bad': loss term 't' has weight inf"),
    ("gan_loss_terms", [("t", 1.0, torch.zeros(3))], "plugin 'bad': loss term 't' has shape [3]"),
    ("gan_loss_terms", ["t"], "plugin 'bad': gan_loss_terms must return LossTerm(name, weight, value)"),
    ("gan_real_labels", torch.zeros([8, 3]), "plugin 'bad': gan_real_labels returned labels of shape [8, 3], expected [8, 10]"),
    ("gan_sample_fake_labels", np.full([32, 10], np.nan), "plugin 'bad': gan_sample_fake_labels returned non-finite labels"),
    ("gan_generator_batch", (torch.zeros([1, 16]), torch.zeros([1, 10])), "plugin 'bad': gan_generator_batch must return"),
    ("gan_base_loss_weight", float("nan"), "plugin 'bad': gan_base_loss_weight returned nan"),
]


@pytest.mark.parametrize("hook, value, message", BAD_SEAM_RETURNS, ids=[f"{h}-{i}" for i, (h, *_r) in enumerate(BAD_SEAM_RETURNS)])
def test_bad_hook_answers_name_the_plugin_and_the_hook(tiny_trainer, hook, value, message):
    with pytest.raises(PluginError, match=re.escape(message)):
        tiny_trainer(plugins=[_Returns(hook, value)], iterations=1)


def test_plugin_enabled_twice_or_without_hooks_and_the_baseline_named():
    with pytest.raises(PluginError, match="plugin 'a' is enabled twice"):
        PluginHost([("a", object()), ("a", object())])
    with pytest.raises(PluginError, match=r"plugin 'path' \(module \(os.path\)\) implements no hook, so it would do nothing"):
        PluginHost.create(["os.path"])
    with pytest.raises(PluginError, match="'sg2ada' is the baseline, always on; drop it from --plugins"):
        PluginHost([("sg2ada", object())])


V2_PLUGINS = [
    ("gan_train_start", "gan_setup(ctx)"), ("gan_dataset_ready", "gan_setup(ctx)"),
    ("gan_load_state_dict", "ctx.restored_state(self)"), ("gan_tick", "training_stats.report"),
    ("gan_train_end", "gan_snapshot_images"),
]


@pytest.mark.parametrize("hook, replacement", V2_PLUGINS)
def test_a_v2_plugin_is_told_what_replaces_a_removed_hook(hook, replacement):
    plugin = type("V2", (), {hook: hookimpl(lambda self: None)})()
    with pytest.raises(PluginError, match=f"plugin 'v2' uses {hook}, removed in plugin API v3; use .*{re.escape(replacement)}"):
        PluginHost([("v2", plugin)])


def test_v2_conflict_attributes_and_gan_step_arguments_are_explained():
    with pytest.raises(PluginError, match="uses requires_plugins, removed in plugin API v3; use gan_configure"):
        PluginHost([("needs", type("Needs", (), {"requires_plugins": ("utlo",)})())])

    class OldStep:
        @hookimpl
        def gan_step(self, cur_nimg, jobs):
            pass

    with pytest.raises(PluginError, match="In plugin API v3, gan_step receives ctx: use ctx"):
        PluginHost([("old", OldStep())])


def test_firstresult_answers_are_returned_whole(tiny_trainer):
    """v2 cut a list answer of a firstresult hook to its first element; v3 returns what the plugin answered."""
    labels = [[0.0] * 9 + [1.0]] * 32

    class ListLabels:
        @hookimpl
        def gan_sample_fake_labels(self, n):
            return labels[:n]

    trainer = tiny_trainer(plugins=[ListLabels()], iterations=1)
    assert trainer.pm.hook.gan_sample_fake_labels(n=3, rng=None, dataset=None, class_counts=None, real_labels=None) \
        == labels[:3]


def test_module_plugin_with_options_but_no_factory(tmp_path):
    plugin_file = tmp_path / "plain.py"
    plugin_file.write_text("from plugins import hookimpl\n\n@hookimpl\ndef gan_base_loss_weight(phase):\n    return 1.0\n")
    with pytest.raises(PluginError, match="has options \\['x'\\] but no class or create_plugin"):
        PluginHost.from_config({"plain": {"module": str(plugin_file), "x": 1}})


def test_run_context_helpers_refuse_bad_input(tmp_path, tiny_digits):
    trainer = run_tiny_training(str(tmp_path / "run"), tiny_digits, iterations=1)
    with pytest.raises(ValueError, match="set_class_counts needs 10 counts, got shape \\[3\\]"):
        trainer.ctx.set_class_counts([1, 2, 3])
    assert trainer.ctx.all_reduce_mean(torch.ones(2)).tolist() == [1.0, 1.0]


def test_bad_grid_labels_name_the_plugin(tiny_trainer):
    class Grid:
        @hookimpl
        def gan_grid_labels(self):
            return np.zeros([2, 10])

    with pytest.raises(PluginError, match="plugin 'grid': gan_grid_labels returned labels of shape \\[2, 10\\]"):
        tiny_trainer(plugins=[Grid()], iterations=1)


def test_config_with_other_plugins_and_missing_data_are_refused(tmp_path, tiny_digits):
    result = run_train([f"--outdir={tmp_path}/out", "--cond=1"])
    assert result.returncode != 0 and "Missing option '--data'" in result.stderr
    run_train([f"--outdir={tmp_path}/runs", f"--data={tiny_digits}", "--cond=1", *TINY], expect_ok=True)
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "00000-*"))
    result = run_train([f"--outdir={tmp_path}/out", f"--config={run_dir}/training_options.json", "--plugins=utlo"])
    assert result.returncode != 0 and "--plugins=utlo differs from the recorded plugins none" in result.stderr


def test_resume_refuses_a_mapping_of_another_depth(tiny_trainer):
    """v2 exempted every mapping.* tensor from the resume check: a 2-layer mapping resumed into a 4-layer one left
    fc2, fc3 random. Now it is refused with the tensors listed, as for any other architecture change."""
    import dnnlib

    first = tiny_trainer(iterations=1, network_snapshot_ticks=1)
    deeper = dnnlib.EasyDict(first.c.G_kwargs)
    deeper.mapping_kwargs = dnnlib.EasyDict(num_layers=4)
    with pytest.raises(ValueError, match=r"G of the pickle does not fit this configuration .*mapping\.fc2"):
        tiny_trainer(iterations=1, resume=first.run_dir, G_kwargs=deeper)


def test_each_and_answerer_follow_the_call_order():
    class Weight:
        def __init__(self, w):
            self.w = w

        @hookimpl
        def gan_base_loss_weight(self):
            return self.w

    host = PluginHost([("b", Weight(None)), ("a", Weight(0.5))])
    assert host.each("gan_base_loss_weight", phase="Gmain", cur_nimg=0) == [("b", None), ("a", 0.5)]
    assert host.answerer("gan_real_labels") == "sg2ada"
