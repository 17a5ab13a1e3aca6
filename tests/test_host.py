"""Plugin host v2: plugins carried in the run config, one call order, every hook exercised, replay of a run."""

import glob
import hashlib
import json
import os
import pickle
import re

import numpy as np
import pytest
import torch

import dnnlib
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
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=[B, A], iterations=2,
                              metrics=["recording_metric"], network_snapshot_ticks=1)
    once = ["gan_configure", "gan_dataset_ready", "gan_extend_networks", "gan_train_start", "gan_train_end"]
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
    assert calls_of("gan_check_resume") == ["rec_b", "rec_a"] and calls_of("gan_load_state_dict") == ["rec_b", "rec_a"]


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

    def __init__(self, hook, value):
        setattr(self, hook, hookimpl(recording_plugins.with_signature_of(getattr(hookspecs, hook), lambda *args: value)))


BAD_SEAM_RETURNS = [
    ("gan_label_dim", 0, "label_dim", dict(dataset=None, label_dim=3), "gan_label_dim must return a positive int"),
    ("gan_extra_optimizers", [{"name": "x"}], "extra_optimizers", dict(G=None, D=None), "must return dicts with name"),
    ("gan_extra_optimizers", [dict(name="x", params=[torch.nn.Parameter(torch.zeros(1))], opt_kwargs={}, step_with="E")],
     "extra_optimizers", dict(G=None, D=None), "step_with='E'; use 'G' or 'D'"),
    ("gan_extra_optimizers", [dict(name="x", params=[], opt_kwargs={}, step_with="D")], "extra_optimizers",
     dict(G=None, D=None), "needs a non-empty list of parameters"),
    ("gan_frozen_modules", {"net": object()}, "frozen_modules", dict(device="cpu"), "is not a torch.nn.Module"),
    ("gan_loss_terms", [("t", float("inf"), torch.zeros(2))], "loss_terms",
     dict(ctx=dnnlib.EasyDict(phase="Gmain", cur_nimg=0), batch_size=2), "has weight inf"),
]


@pytest.mark.parametrize("hook, value, method, kwargs, message", BAD_SEAM_RETURNS)
def test_bad_seam_returns_name_the_plugin_or_the_hook(hook, value, method, kwargs, message):
    host = PluginHost([("bad", _Returns(hook, value))])
    with pytest.raises(PluginError, match=re.escape(message)):
        getattr(host, method)(**kwargs)


def test_plugin_enabled_twice_and_missing_requirement():
    with pytest.raises(PluginError, match="plugin 'a' is enabled twice"):
        PluginHost([("a", object()), ("a", object())])

    class Needs:
        requires_plugins = ("utlo",)

    with pytest.raises(PluginError, match="plugin 'needs' needs plugin 'utlo'; add it to --plugins"):
        PluginHost([("needs", Needs())])


def test_module_plugin_with_options_but_no_factory(tmp_path):
    plugin_file = tmp_path / "plain.py"
    plugin_file.write_text("from plugins import hookimpl\n\n@hookimpl\ndef gan_base_loss_weight(phase):\n    return 1.0\n")
    with pytest.raises(PluginError, match="has options \\['x'\\] but no class or create_plugin"):
        PluginHost.from_config({"plain": {"module": str(plugin_file), "x": 1}})


def test_iteration_job_helpers_refuse_bad_input(tmp_path, tiny_digits):
    trainer = run_tiny_training(str(tmp_path / "run"), tiny_digits, iterations=1)
    with pytest.raises(ValueError, match="set_class_counts needs 10 counts, got shape \\[3\\]"):
        trainer.jobs.set_class_counts([1, 2, 3])
    with pytest.raises(ValueError, match="grid labels have shape"):
        trainer.host.grid_labels = lambda grid_size, labels: np.zeros([2, 10])
        trainer.grid_labels(np.zeros([4, 10], dtype=np.float32))


def test_config_with_other_plugins_and_missing_data_are_refused(tmp_path, tiny_digits):
    result = run_train([f"--outdir={tmp_path}/out", "--cond=1"])
    assert result.returncode != 0 and "Missing option '--data'" in result.stderr
    run_train([f"--outdir={tmp_path}/runs", f"--data={tiny_digits}", "--cond=1", *TINY], expect_ok=True)
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "00000-*"))
    result = run_train([f"--outdir={tmp_path}/out", f"--config={run_dir}/training_options.json", "--plugins=utlo"])
    assert result.returncode != 0 and "--plugins=utlo differs from the recorded plugins none" in result.stderr
