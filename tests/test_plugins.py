"""Plugin host and train.py plugin CLI: discovery, options, validation, composition, resume, third-party plugins."""

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import train
from plugins import PluginError, hookimpl
from plugins.host import PluginHost, available_plugins, find_plugin, make_plugin_kwargs
from plugins.testing import build_host, run_tiny_training
from tests.conftest import REPO, generate_without_project, run_train
from training import checkpoint

TINY = ["--cfg=tiny", "--batch=8", "--tick=0.016", "--kimg=0.032", "--workers=0", "--metrics=none",
        "--tensorboard=0", "--snap=1"]


def test_unknown_plugin_lists_available(tmp_path, capsys):
    assert train.main([f"--outdir={tmp_path}", "--data=x", "--plugins=noisytwin"]) == 2
    err = capsys.readouterr().err
    assert "unknown plugin 'noisytwin'" in err and "noisytwins" in err and "utlo" in err


def main_exit_code(args):
    with pytest.raises(SystemExit) as exc:
        train.main(args)
    return exc.value.code


def test_plugin_option_without_plugin(tmp_path, capsys):
    assert main_exit_code([f"--outdir={tmp_path}", "--data=x", "--nt-sigma=0.5"]) == 2
    err = capsys.readouterr().err
    assert "--nt-sigma belongs to plugin 'noisytwins'" in err and "--plugins=noisytwins" in err
    assert not os.path.exists(tmp_path / "00000-x")


def test_hidden_utlo_aliases_need_utlo(tmp_path, capsys):
    assert main_exit_code([f"--outdir={tmp_path}", "--data=x", "--res_uc=8"]) == 2
    assert "--plugins=utlo" in capsys.readouterr().err


def test_misspelt_hook_name_fails_loudly():
    class Typo:
        @hookimpl
        def gan_loss_term(self, ctx):  # Missing the final 's'.
            return []

    with pytest.raises(PluginError, match="'typo' implements a hook that does not exist: gan_loss_term; "
                                          "did you mean gan_loss_terms"):
        PluginHost([("typo", Typo())])


def test_hook_method_without_hookimpl_is_warned_about():
    class Forgot:
        def gan_loss_terms(self, ctx):  # No @hookimpl: pluggy would silently ignore it.
            return []

    with pytest.raises(PluginError, match="plugin 'forgot' .* implements no hook"):
        with pytest.warns(UserWarning, match="'forgot': gan_loss_terms is not marked with @hookimpl"):
            PluginHost([("forgot", Forgot())])


def test_conflicting_plugins_refused_unless_an_option_opts_in():
    """utlo refuses transitional in gan_configure (the run config lists the plugins) unless --trans-with-utlo."""
    from plugins.testing import tiny_config

    for with_utlo in (False, True):
        plugin_kwargs = make_plugin_kwargs([find_plugin("utlo"), find_plugin("transitional")],
                                           {"transitional": {"trans_with_utlo": with_utlo}})
        host = PluginHost.from_config(plugin_kwargs)
        c = tiny_config("unused.zip", "unused", resolution=32, plugin_kwargs=plugin_kwargs)
        if with_utlo:
            host.pm.hook.gan_configure(config=c, dataset_kwargs=c.training_set_kwargs)
            assert list(host.plugins) == ["utlo", "transitional"]
        else:
            with pytest.raises(PluginError, match="'utlo' and 'transitional' cannot be combined as they are: both change"):
                host.pm.hook.gan_configure(config=c, dataset_kwargs=c.training_set_kwargs)


def test_two_firstresult_answers_are_a_conflict():
    class A:
        @hookimpl
        def gan_sample_fake_labels(self, n):
            return None

    class B(A):
        pass

    with pytest.raises(PluginError, match="'a' and 'b' both implement gan_sample_fake_labels"):
        PluginHost([("a", A()), ("b", B())])


def test_loss_term_validation_names_plugin():
    class Bad:
        @hookimpl
        def gan_loss_terms(self, ctx):
            return [("nan", 1.0, torch.tensor([float("nan"), 1.0]))]

    host = build_host([Bad()])
    import dnnlib
    from training.loss import LossTerm

    ctx = dnnlib.EasyDict(phase="Gmain", cur_nimg=0)
    (plugin, answer), = host.each("gan_loss_terms", ctx=ctx)
    with pytest.raises(PluginError, match="plugin 'bad'.*'nan' is not finite"):
        LossTerm.from_plugin(plugin, answer[0], ctx, batch_size=2)
    with pytest.raises(PluginError, match=r"shape \[2\]; expected a scalar or \[3\]"):
        LossTerm.from_plugin(plugin, answer[0], ctx, batch_size=3)


def test_help_lists_plugin_options_and_list_plugins(capsys):
    result = run_train(["--plugins=noisytwins,utlo", "--help"])
    assert result.returncode == 0
    for flag in ["--nt-sigma", "--nt-start-kimg", "--utlo-res-uc", "--utlo-alpha", "--plugins"]:
        assert flag in result.stdout
    assert train.main(["--list-plugins"]) == 0
    out = capsys.readouterr().out
    assert "noisytwins" in out and "utlo" in out and "gan_loss_terms" in out and "built-in" in out


def test_utlo_on_unconditional_dataset(tmp_path, tiny_digits, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main([f"--outdir={tmp_path}", f"--data={tiny_digits}", "--plugins=utlo", *TINY])
    assert exc.value.code != 0
    assert "plugin 'utlo' needs class labels" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # Refused before the run directory was created.


def test_utlo_bad_res_uc_fails_before_training(tmp_path, tiny_digits):
    result = run_train([f"--outdir={tmp_path}", f"--data={tiny_digits}", "--cond=1", "--plugins=utlo", "--utlo-res-uc=16", *TINY])
    assert result.returncode != 0
    assert "--utlo-res-uc=16" in result.stderr and "[4, 8]" in result.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_noisytwins_utlo_train_resume_and_generate_without_plugins(tmp_path, tiny_digits):
    out = tmp_path / "runs"
    result = run_train([f"--outdir={out}", f"--data={tiny_digits}", "--cond=1", "--plugins=noisytwins,utlo",
                      "--nt-sigma=0.5", "--utlo-res-uc=4", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = glob.glob(str(out / "00000-*"))
    options = json.load(open(os.path.join(run_dir, "training_options.json")))
    assert list(options["plugin_kwargs"]) == ["noisytwins", "utlo"]
    assert options["plugin_kwargs"]["noisytwins"]["nt_sigma"] == 0.5
    assert options["plugin_kwargs"]["noisytwins"]["class_name"] == "plugins.noisytwins.NoisyTwins"
    assert options["plugin_kwargs"]["utlo"]["version"] == "1.0"
    stats = [json.loads(line) for line in open(os.path.join(run_dir, "stats.jsonl"))]
    assert any("Loss/noisytwins/barlow" in row for row in stats) and any("Loss/utlo/G_uc" in row for row in stats) \
        and any("Loss/utlo/D_uc" in row for row in stats) and any("NoisyTwins/invariance" in row for row in stats)
    assert glob.glob(os.path.join(run_dir, "fakes_uc*.png"))
    snap = checkpoint.latest_snapshot(run_dir)

    # The snapshot generates in a fresh process where neither plugins/ nor training/ can be imported.
    gen = generate_without_project(snap, str(tmp_path / "gen"), str(tmp_path / "support"), ["--seeds=0-1", "--class=2"])
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "gen")) == ["seed0000.png", "seed0001.png"]

    # Resuming with other plugins is refused; with the same ones it continues the run.
    result = run_train([f"--outdir={out}", f"--data={tiny_digits}", "--cond=1", "--plugins=utlo", "--utlo-res-uc=4",
                      f"--resume={run_dir}", *TINY[:-2]])
    assert result.returncode != 0 and "trained with plugins ['noisytwins', 'utlo']" in result.stderr


def test_resume_restores_plugin_state(tmp_path, tiny_digits):
    torch.set_num_threads(1)
    opts = {"noisytwins": {"nt_sigma": 0.5}, "utlo": {"utlo_res_uc": 4}}
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, plugins=["noisytwins", "utlo"], options=opts, iterations=2)
    state = checkpoint.load_state(checkpoint.state_path_for(checkpoint.latest_snapshot(first.run_dir)))
    saved_gen = state["plugins"]["noisytwins"]["generator"]
    assert state["plugin_names"] == ["noisytwins", "utlo"]
    pkl, st = checkpoint.resolve_resume(first.run_dir)
    from plugins.testing import tiny_config
    from training.training_loop import Trainer

    host = build_host(["noisytwins", "utlo"], opts)
    c = tiny_config(tiny_digits, str(tmp_path / "b"), resume_pkl=pkl, resume_state=st, max_iterations=1)
    os.makedirs(c.run_dir)
    host.pm.hook.gan_configure(config=c, dataset_kwargs=c.training_set_kwargs)
    trainer = Trainer(host=host, **c)
    assert torch.equal(host.plugins["noisytwins"].generator.get_state(), saved_gen)
    assert "utlo" in trainer.D.extensions and trainer.cur_nimg == first.cur_nimg


@pytest.mark.slow
def test_third_party_plugin_installed_with_pip(tmp_path, tiny_digits):
    target = tmp_path / "site"
    example = os.path.join(REPO, "examples", "gan-plugin-example")
    build_dir = tmp_path / "src"
    shutil.copytree(example, build_dir)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(build_dir)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = dict(os.environ, PYTHONPATH=f"{target}{os.pathsep}{REPO}", OMP_NUM_THREADS="1")
    listing = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--list-plugins"], capture_output=True,
                             text=True, env=env, cwd=REPO)
    assert "wl2" in listing.stdout and "entry point" in listing.stdout
    out = tmp_path / "runs"
    result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), f"--outdir={out}", f"--data={tiny_digits}",
                             "--plugins=wl2", "--wl2-weight=0.1", *TINY], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = glob.glob(str(out / "00000-*"))
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "stats.jsonl"))]
    assert any("Loss/wl2/w_dist" in row for row in rows)
    # The example's own test passes with the trainer's fixture.
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=str(build_dir),
                         capture_output=True, text=True, env=env)
    assert own.returncode == 0, own.stdout[-2000:]


def test_builtins_are_discoverable_and_file_plugins_load(tmp_path):
    assert {"noisytwins", "utlo"} <= set(available_plugins())
    plugin_file = tmp_path / "myplug.py"
    plugin_file.write_text(textwrap.dedent("""
        from plugins import hookimpl

        @hookimpl
        def gan_base_loss_weight(phase):
            return 0.5
    """))
    host = PluginHost.create([str(plugin_file)])
    assert list(host.plugins) == ["myplug"]
    assert host.each("gan_base_loss_weight", phase="Gmain", cur_nimg=0) == [("myplug", 0.5)]


def test_hook_tracing(monkeypatch, capsys):
    monkeypatch.setenv("GAN_PLUGINS_TRACE", "1")
    host = PluginHost.create(["utlo"])
    host.pm.hook.gan_base_loss_weight(phase="Gmain", cur_nimg=0)
    assert "gan_base_loss_weight -> utlo" in capsys.readouterr().err
