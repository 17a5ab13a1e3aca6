"""End-to-end training on CPU: train.py, snapshots, generate.py, exact resume, logging, bad input."""

import glob
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from plugins.testing import run_tiny_training, tiny_config
from tests.conftest import REPO, run_train
from training import checkpoint
from training.training_loop import Trainer

TINY_ARGS = ["--cfg=tiny", "--batch=8", "--tick=0.016", "--kimg=0.032", "--workers=0", "--metrics=none",
             "--tensorboard=0", "--snap=1", "--seed=1"]


def assert_files_follow_umask(directory, expected_mode=0o644):
    """Every file under `directory` has the permissions of a new file under umask 022 (not mkstemp's 0600)."""
    checked = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            mode = os.stat(os.path.join(root, name)).st_mode & 0o777
            assert mode == expected_mode, f"{os.path.join(root, name)}: mode {mode:o}, expected {expected_mode:o}"
            checked += 1
    assert checked > 0


@pytest.mark.slow
def test_two_ticks_then_generate(tmp_path, tiny_digits):
    old_umask = os.umask(0o022)  # Inherited by the train.py and generate.py processes.
    try:
        _two_ticks_then_generate(tmp_path, tiny_digits)
    finally:
        os.umask(old_umask)


def _two_ticks_then_generate(tmp_path, tiny_digits):
    run_train([f"--outdir={tmp_path}", f"--data={tiny_digits}", "--cond=1", *TINY_ARGS], expect_ok=True)
    (run_dir,) = glob.glob(str(tmp_path / "00000-*"))
    assert_files_follow_umask(run_dir)  # Snapshots, training state, grids, JSON, logs.
    for name in ["log.txt", "stats.jsonl", "training_options.json", "reals.png", "fakes_init.png"]:
        assert os.path.isfile(os.path.join(run_dir, name)), name
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "stats.jsonl"))]
    assert len(rows) >= 2  # Tick 0 (after one iteration) and the final tick.
    for row in rows:
        for key in ["Loss/G/loss", "Loss/D/loss", "Loss/scores/real"]:
            assert np.isfinite(row[key]["mean"]), (key, row[key])
    snaps = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
    assert snaps and os.path.isfile(checkpoint.state_path_for(snaps[-1]))
    with open(snaps[-1], "rb") as f:
        data = pickle.load(f)
    assert set(data) >= {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    assert set(data["training_set_kwargs"]) <= set(checkpoint.UPSTREAM_DATASET_KEYS)
    assert not data["G_ema"].training and not any(p.requires_grad for p in data["G_ema"].parameters())

    out = tmp_path / "gen"
    result = subprocess.run([sys.executable, os.path.join(REPO, "generate.py"), f"--network={snaps[-1]}",
                             "--seeds=0-2", "--class=4", f"--outdir={out}"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["seed0000.png", "seed0001.png", "seed0002.png"]
    assert_files_follow_umask(out)
    options = json.load(open(os.path.join(run_dir, "training_options.json")))
    assert options["batch_size"] == 8 and options["training_set_kwargs"]["use_labels"] is True


def _weights(trainer):
    out = {}
    for name in ["G", "D", "G_ema"]:
        module = getattr(trainer, name)
        for key, value in list(module.named_parameters()) + list(module.named_buffers()):
            out[f"{name}.{key}"] = value.detach().clone()
    out["augment_p"] = trainer.augment_pipe.p.detach().clone()
    return out


def test_exact_resume_matches_uninterrupted_run(tmp_path, tiny_digits):
    torch.set_num_threads(1)  # Same thread count in both runs: identical floating-point reductions.
    kw = dict(D_reg_interval=4, ada_interval=4, G_reg_interval=4)
    straight = run_tiny_training(str(tmp_path / "straight"), tiny_digits, iterations=10, **kw)
    first = run_tiny_training(str(tmp_path / "first"), tiny_digits, iterations=5, **kw)
    snap = checkpoint.latest_snapshot(str(tmp_path / "first"))
    pkl, state = checkpoint.resolve_resume(str(tmp_path / "first"))
    assert pkl == snap and state is not None
    resumed = run_tiny_training(str(tmp_path / "second"), tiny_digits, iterations=5, resume_pkl=pkl,
                                resume_state=state, **kw)
    assert resumed.cur_nimg == straight.cur_nimg == 80
    assert resumed.batch_idx == straight.batch_idx == 10
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert first.cur_nimg == 40


def test_weights_only_resume_continues_kimg_from_file_name(tmp_path, tiny_digits):
    first = run_tiny_training(str(tmp_path / "a"), tiny_digits, iterations=1)
    src = checkpoint.latest_snapshot(first.run_dir)
    renamed = str(tmp_path / "network-snapshot-000007.pkl")  # No state beside it: weights only.
    os.replace(src, renamed)
    c = tiny_config(tiny_digits, str(tmp_path / "b"), resume_pkl=renamed, resume_state=None, max_iterations=1)
    os.makedirs(c.run_dir)
    resumed = Trainer(**c)
    with open(renamed, "rb") as f:
        snapshot = pickle.load(f)
    for name in ("G", "D", "G_ema"):  # The weights themselves arrive, not only their names.
        ours = getattr(resumed, name).state_dict()
        for key, value in snapshot[name].state_dict().items():
            assert torch.equal(ours[key], value), (name, key)
    assert resumed.cur_nimg == 7000
    resumed.run()
    assert resumed.cur_nimg == 7000 + 8


def test_ada_p_moves_with_real_logit_sign():
    from training.augment import AdaController, AugmentPipe

    pipe = AugmentPipe(xflip=1)
    pipe.p.zero_()
    ada = AdaController(pipe, target=0.6, ada_kimg=500, interval=4, batch_size=64)
    step = 64 * 4 / (500 * 1000)
    for i in range(1, 6):
        ada.accumulate(torch.ones(64, 1))
        ada.update()
        assert float(pipe.p) == pytest.approx(i * step, rel=1e-5)
    for _ in range(10):
        ada.accumulate(-torch.ones(64, 1))
        ada.update()
    assert float(pipe.p) == 0


def test_snapshot_write_interrupted_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "network-snapshot-000001.pkl")
    checkpoint.save_snapshot(path, {"path": "x"}, {"G": torch.nn.Linear(2, 2)})
    before = open(path, "rb").read()

    def broken_dump(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.pickle, "dump", broken_dump)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_snapshot(path, {"path": "x"}, {"G": torch.nn.Linear(2, 2)})
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["network-snapshot-000001.pkl"]


# ----------------------------------------------------------------------------- bad input


def cli_error(args, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(args)
    assert exc.value.code != 0
    return capsys.readouterr().err


def test_missing_dataset(tmp_path, capsys):
    err = cli_error([f"--outdir={tmp_path}", f"--data={tmp_path}/nope.zip", "--metrics=none"], capsys)
    assert "--data=" in err and "nope.zip" in err and "no such file" in err


def test_unreadable_dataset(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    err = cli_error([f"--outdir={tmp_path}", f"--data={bad}", "--metrics=none"], capsys)
    assert "bad.zip" in err


def test_cond_without_labels(tmp_path, capsys):
    import PIL.Image

    from dataset_tool import convert_dataset

    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(4):
        PIL.Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(src / f"{i}.png")
    dest = str(tmp_path / "nolabels.zip")
    convert_dataset(str(src), dest, log=lambda *a: None)
    err = cli_error([f"--outdir={tmp_path}/out", f"--data={dest}", "--cond=1", "--metrics=none"], capsys)
    assert "nolabels.zip" in err and "no labels" in err and "--cond=0" in err


def test_non_integer_labels(tmp_path, capsys):
    import PIL.Image

    src = tmp_path / "ds"
    src.mkdir()
    for i in range(4):
        PIL.Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(src / f"{i}.png")
    (src / "dataset.json").write_text(json.dumps({"labels": [[f"{i}.png", "cat"] for i in range(4)]}))
    err = cli_error([f"--outdir={tmp_path}/out", f"--data={src}", "--cond=1", "--metrics=none"], capsys)
    assert "labels" in err and "integer" in err


def test_resolution_not_power_of_two(tmp_path, capsys):
    import PIL.Image

    src = tmp_path / "ds"
    src.mkdir()
    for i in range(2):
        PIL.Image.fromarray(np.zeros((12, 12), np.uint8)).save(src / f"{i}.png")
    err = cli_error([f"--outdir={tmp_path}/out", f"--data={src}", "--metrics=none"], capsys)
    assert "power of two" in err


def test_batch_not_divisible(tmp_path, tiny_digits, capsys):
    err = cli_error([f"--outdir={tmp_path}", f"--data={tiny_digits}", "--metrics=none", "--batch=12", "--batch-gpu=8"], capsys)
    assert "--batch=12" in err and "divisible" in err


@pytest.mark.parametrize("content", [b"", b"garbage that is not a pickle", None])
def test_corrupt_or_truncated_resume(tmp_path, tiny_digits, capsys, content):
    bad = tmp_path / "network-snapshot-000001.pkl"
    if content is None:  # Truncated copy of a real snapshot.
        good = pickle.dumps(dict(G=torch.nn.Linear(2, 2), D=None, G_ema=None))
        content = good[: len(good) // 2]
    bad.write_bytes(content)
    err = cli_error([f"--outdir={tmp_path}/out", f"--data={tiny_digits}", "--metrics=none", f"--resume={bad}"], capsys)
    assert "--resume" in err and "network-snapshot-000001.pkl" in err
    assert not os.path.exists(tmp_path / "out")  # Failed before anything was created.


def test_wandb_missing_gives_clear_message(tmp_path, tiny_digits, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # Makes `import wandb` raise ImportError.
    err = cli_error([f"--outdir={tmp_path}", f"--data={tiny_digits}", "--metrics=none", "--wandb"], capsys)
    assert "pip install wandb" in err


@pytest.mark.slow
def test_wandb_offline_run_logs_losses(tmp_path, tiny_digits):
    pytest.importorskip("wandb")
    env_args = [f"--outdir={tmp_path}", f"--data={tiny_digits}", "--cond=1", *TINY_ARGS, "--wandb",
                "--wandb-mode=offline", "--wandb-project=test"]
    result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *env_args], capture_output=True,
                            text=True, cwd=REPO, env=dict(os.environ, WANDB_SILENT="true", WANDB_DISABLE_GIT="true"))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = glob.glob(str(tmp_path / "00000-*"))
    offline = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))
    assert offline, os.listdir(os.path.join(run_dir, "wandb"))
    (wandb_file,) = glob.glob(os.path.join(offline[0], "run-*.wandb"))
    records = open(wandb_file, "rb").read()  # wandb's record log; history keys are stored verbatim.
    for key in [b"Loss/G/loss", b"Loss/D/loss", b"Loss/scores/real"]:
        assert key in records, key


@pytest.mark.slow
def test_metrics_run_at_snapshots(tmp_path, tmp_path_factory, monkeypatch):
    from tests.test_detectors import shared_cache_dir, shared_digits

    monkeypatch.setenv("DNNLIB_CACHE_DIR", shared_cache_dir(tmp_path_factory))  # Classifier trained once per session.
    data = shared_digits(tmp_path_factory)
    trainer = run_tiny_training(str(tmp_path / "run"), data, iterations=1, metrics=["fd_cls", "class_consistency"])
    for metric in ["fd_cls", "class_consistency"]:
        lines = open(os.path.join(trainer.run_dir, f"metric-{metric}.jsonl")).read().splitlines()
        assert len(lines) == 1
        row = json.loads(lines[0])
        assert row["metric"] == metric and np.isfinite(row["results"][metric])
        assert row["snapshot_pkl"].endswith("network-snapshot-000000.pkl")


def test_resume_url_offline_fails_before_training(tmp_path, tiny_digits, capsys, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    err = cli_error([f"--outdir={tmp_path}/out", f"--data={tiny_digits}", "--metrics=none", "--resume=ffhq256"], capsys)
    assert "--resume=ffhq256" in err and "ffhq-res256" in err and "place it at" in err
    assert not os.path.exists(tmp_path / "out")


def test_threads_are_recorded_and_honoured(tmp_path, tiny_digits):
    import json as json_

    result = run_train([f"--outdir={tmp_path}", f"--data={tiny_digits}", "--cond=1", "--cfg=tiny", "--batch=8",
                        "--kimg=0.008", "--workers=0", "--metrics=none", "--tensorboard=0", "--threads=2"],
                       expect_ok=True)
    assert "(1 process, 2 CPU thread(s) each)" in result.stdout
    (run_dir,) = [os.path.join(tmp_path, d) for d in os.listdir(tmp_path)]
    assert json_.load(open(os.path.join(run_dir, "training_options.json")))["num_threads"] == 2


def test_the_cpu_wait_policy_is_honoured_and_recorded(tmp_path, tiny_digits):
    import json as json_
    import subprocess as sp

    args = [f"--outdir={tmp_path}", f"--data={tiny_digits}", "--cond=1", "--cfg=tiny", "--batch=8", "--kimg=0.008",
            "--workers=0", "--metrics=none", "--tensorboard=0"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for extra in (["--omp-wait=passive"], ["--omp-wait=active"]):
        result = sp.run([sys.executable, os.path.join(REPO, "train.py"), *args, *extra], capture_output=True, text=True,
                        cwd=REPO, env=dict(env, OMP_NUM_THREADS="1"))
        assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(os.path.join(tmp_path, d) for d in os.listdir(tmp_path))
    policies = [json_.load(open(os.path.join(r, "training_options.json")))["omp_wait_policy"] for r in runs]
    assert policies == ["PASSIVE", "ACTIVE"]
