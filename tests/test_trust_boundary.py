"""Issue #21's trust boundary: no input file other than a network pickle runs code. Each payload would create a
marker file if it ran; the tests assert the refusal's message and that the marker does not exist."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_train

TINY = ["--cfg=tiny", "--batch=8", "--kimg=0.016", "--tick=1", "--snap=1", "--workers=0", "--metrics=none",
        "--tensorboard=0", "--aug=noaug"]


@pytest.fixture(scope="module")
def run_config(tmp_path_factory, tiny_digits):
    out = tmp_path_factory.mktemp("trust") / "runs"
    run_train([f"--outdir={out}", f"--data={tiny_digits}", "--cond=1", *TINY], expect_ok=True)
    (run_dir,) = glob.glob(str(out / "00000-*"))
    with open(os.path.join(run_dir, "training_options.json")) as f:
        return json.load(f), run_dir


def replay(tmp_path, config, *extra):
    path = tmp_path / "options.json"
    path.write_text(json.dumps(config))
    return run_train([f"--outdir={tmp_path}/out", f"--config={path}", *extra])


def test_a_config_plugin_naming_any_class_is_refused(tmp_path, run_config):
    config, _run_dir = run_config
    marker = tmp_path / "ran"
    config = dict(config, plugin_kwargs={"evil": {"class_name": "subprocess.Popen", "args": f"touch {marker}",
                                                  "shell": True}})
    result = replay(tmp_path, config)
    assert result.returncode != 0 and "plugin 'evil' names class 'subprocess.Popen', which is not an installed " \
        "plugin" in result.stderr
    assert not marker.exists() and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_config_core_class_outside_the_allow_list_is_refused(tmp_path, run_config):
    config, _run_dir = run_config
    config = json.loads(json.dumps(config))
    config["loss_kwargs"]["class_name"] = "torch.hub.load"
    result = replay(tmp_path, config)
    assert result.returncode != 0 and "loss_kwargs.class_name = 'torch.hub.load' is not allowed there" in result.stderr
    config["loss_kwargs"]["class_name"] = "training.loss.StyleGAN2Loss"
    config["G_kwargs"]["mapping_kwargs"]["class_name"] = "os.system"
    result = replay(tmp_path, config)
    assert result.returncode != 0 and "G_kwargs.mapping_kwargs.class_name = 'os.system' is not allowed" in result.stderr


def test_a_config_file_plugin_runs_only_when_given_on_the_command_line(tmp_path, run_config):
    config, _run_dir = run_config
    marker = tmp_path / "imported"
    plugin = tmp_path / "fileplug.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').close()\nfrom plugins import hookimpl\n\n"
                      "@hookimpl\ndef gan_base_loss_weight(phase):\n    return 1.0\n")
    config = dict(config, plugin_kwargs={"fileplug": {"module": str(plugin), "version": "unknown", "source": "file"}})
    result = replay(tmp_path, config)
    assert result.returncode != 0 and "plugin 'fileplug' is a module or file" in result.stderr
    assert "give --plugins=fileplug on the command line" in result.stderr and not marker.exists()
    result = replay(tmp_path, config, f"--plugins={plugin}")  # The user's own decision: it runs.
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.exists()


def test_safetensors_header_cannot_name_a_dataset_class(tmp_path, run_config):
    """calc_metrics.py without --data builds the dataset from the header: torch.hub.load would run a hubconf.py."""
    import torch

    from training import checkpoint
    from training.safe_export import export_networks

    _config, run_dir = run_config
    with open(checkpoint.latest_snapshot(run_dir), "rb") as f:
        import pickle

        G = pickle.load(f)["G_ema"]
    marker = tmp_path / "hub-ran"
    (tmp_path / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    path = str(tmp_path / "evil.safetensors")
    export_networks({"G_ema": G}, path, dict(class_name="torch.hub.load", repo_or_dir=str(tmp_path), model="x",
                                             source="local"))
    result = subprocess.run([sys.executable, os.path.join(REPO, "calc_metrics.py"), f"--network={path}",
                             "--metrics=fid50k_full"], capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode != 0
    assert "training_set_kwargs.class_name = 'torch.hub.load' is not allowed there" in result.stderr, result.stderr
    assert not marker.exists() and "Traceback" not in result.stderr
    del torch


# ----------------------------------------------------------------------------- state integrity


@pytest.fixture
def two_checkpoints(tiny_trainer):
    """A run with two snapshot/state pairs (ticks 0 and 1)."""
    from training import checkpoint

    trainer = tiny_trainer(iterations=3, network_snapshot_ticks=1)
    snaps = checkpoint.snapshots(trainer.run_dir)
    assert len(snaps) >= 2
    return trainer.run_dir, snaps


def test_a_flipped_byte_in_a_state_is_refused_naming_the_good_pair(two_checkpoints):
    from training import checkpoint

    run_dir, snaps = two_checkpoints
    state = checkpoint.state_path_for(snaps[-1])
    data = bytearray(open(state, "rb").read())
    data[-100] ^= 0x01  # One bit of the payload (an Adam moment or an RNG state).
    open(state, "wb").write(bytes(data))
    with pytest.raises(checkpoint.StateError, match="is damaged .*do not match the SHA-256 it carries"):
        checkpoint.load_state(state)
    with pytest.raises(checkpoint.StateError, match=f"resume from the newest good pair, --resume={snaps[-2]}"):
        checkpoint.resolve_resume(run_dir)
    with pytest.raises(checkpoint.StateError, match="--resume-weights-only=1"):
        checkpoint.resolve_resume(snaps[-1])
    assert checkpoint.resolve_resume(snaps[-1], weights_only=True) == (snaps[-1], None)


def test_a_state_of_another_snapshot_or_without_binding_is_refused(two_checkpoints):
    import shutil

    import torch

    from training import checkpoint

    run_dir, snaps = two_checkpoints
    older, newer = checkpoint.state_path_for(snaps[0]), checkpoint.state_path_for(snaps[-1])
    shutil.copy(older, newer)  # The tick-0 state beside the later snapshot.
    with pytest.raises(checkpoint.StateError, match="belongs to another snapshot"):
        checkpoint.resolve_resume(snaps[-1])
    state = checkpoint.load_state(older)
    del state["snapshot_sha256"]
    checkpoint.save_state(newer, state)
    with pytest.raises(checkpoint.StateError, match="does not record which snapshot it belongs to"):
        checkpoint.resolve_resume(run_dir)
    del torch


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("optimizers"), "optimizers is missing or not a dict"),
    (lambda s: s.update(cur_nimg=-5), "cur_nimg is -5, not a non-negative int"),
    (lambda s: s["rng"].update(torch=s["rng"]["torch"][:10]), "rng\\['torch'\\] is not a torch RNG state"),
    (lambda s: s.pop("pl_mean"), "pl_mean is missing"),
])
def test_loadable_but_damaged_states_are_refused(two_checkpoints, damage, message):
    from training import checkpoint

    _run_dir, snaps = two_checkpoints
    path = checkpoint.state_path_for(snaps[-1])
    state = checkpoint.load_state(path)
    damage(state)
    checkpoint.save_state(path, state)  # A valid digest: the damage is in the structure.
    with pytest.raises(checkpoint.StateError, match=message):
        checkpoint.load_state(path)


def test_no_silent_weights_only_resume(two_checkpoints, tiny_digits, tmp_path):
    """A run directory or snapshot without an intact state is refused on the command line unless asked for."""
    import os

    from training import checkpoint

    run_dir, snaps = two_checkpoints
    for snap in snaps:
        os.remove(checkpoint.state_path_for(snap))
    args = [f"--outdir={tmp_path}/out", f"--data={tiny_digits}", "--cond=1", "--cfg=tiny", "--kimg=0.1",
            "--workers=0", "--metrics=none", "--tensorboard=0"]
    result = run_train([*args, f"--resume={run_dir}"])
    assert result.returncode != 0 and "no snapshot with its training state" in result.stderr
    assert "--resume-weights-only=1" in result.stderr and "Traceback" not in result.stderr
    result = run_train([*args, f"--resume={snaps[-1]}"])
    assert result.returncode != 0 and "its training state is missing" in result.stderr
    assert checkpoint.resolve_resume(run_dir, weights_only=True) == (snaps[-1], None)


# ----------------------------------------------------------------------------- one run, one writer


def test_a_live_run_is_not_resumed_or_cleaned_and_a_stale_lock_is_taken_over(two_checkpoints, tiny_digits, tmp_path):
    import json as json_
    import socket

    from training import run_lock

    run_dir, _snaps = two_checkpoints
    inflight = os.path.join(run_dir, ".network-snapshot-000001.pkl.0123456789ab.tmp")  # A live run's write.
    open(inflight, "wb").close()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(os.path.join(run_dir, run_lock.LOCK_NAME), "w") as f:
            json_.dump(dict(pid=sleeper.pid, host=socket.gethostname(), started="2026-12-07T10:00:00"), f)
        args = [f"--outdir={tmp_path}/out", f"--data={tiny_digits}", "--cond=1", "--cfg=tiny", "--kimg=0.1",
                "--workers=0", "--metrics=none", "--tensorboard=0", f"--resume={run_dir}"]
        result = run_train(args)
        assert result.returncode != 0 and f"is being written by process {sleeper.pid}" in result.stderr
        assert "stop that run before you resume it" in result.stderr and "Traceback" not in result.stderr
        assert os.path.exists(inflight)  # Not removed as "left by an interrupted write".
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run_lock.holder(run_dir) is None  # Its process is gone: the lock is stale.
    run_lock.acquire(run_dir, log=lambda *a: None)
    assert json_.load(open(os.path.join(run_dir, run_lock.LOCK_NAME)))["pid"] == os.getpid()
    run_lock.release(run_dir)
    assert not os.path.exists(os.path.join(run_dir, run_lock.LOCK_NAME))


def test_a_finished_run_leaves_no_lock(two_checkpoints, tiny_digits, tmp_path):
    run_train([f"--outdir={tmp_path}/out", f"--data={tiny_digits}", "--cond=1", *TINY], expect_ok=True)
    (run_dir,) = glob.glob(str(tmp_path / "out" / "00000-*"))
    assert ".run.lock" not in os.listdir(run_dir)


def test_a_bug_keeps_its_traceback_while_bad_input_gets_a_message(tmp_path, tiny_digits):
    """Setup no longer turns every ValueError into a one-line user error: a plain ValueError from code (here a plugin's
    bug) shows its traceback; a PluginError (bad input) gets the message."""
    plugin = tmp_path / "buggy.py"
    plugin.write_text("from plugins import PluginError, hookimpl\nimport os\n\n@hookimpl\ndef gan_setup(ctx):\n"
                      "    if os.environ.get('AS_INPUT'):\n        raise PluginError('buggy: refused, change X')\n"
                      "    raise ValueError('an internal bug')\n")
    args = [f"--outdir={tmp_path}/out", f"--data={tiny_digits}", "--cond=1", *TINY, f"--plugins={plugin}"]
    result = run_train(args)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ValueError: an internal bug" in result.stderr
    env_result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], capture_output=True,
                                text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", AS_INPUT="1"))
    assert env_result.returncode != 0 and "Error: buggy: refused, change X" in env_result.stderr
    assert "Traceback" not in env_result.stderr
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")
