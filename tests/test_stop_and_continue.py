"""A run is its directory (issue #22): Ctrl-C stops after the current step with a checkpoint and prints the command
that continues; `train.py --resume=RUN_DIR` alone continues in the same directory with the recorded options, and the
result is bit-identical to the uninterrupted run."""

import glob
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_train
from tests.test_host import snapshot_digest as weights_digest

ARGS = ["--cond=1", "--cfg=tiny", "--batch=8", "--kimg=0.2", "--tick=0.05", "--snap=1", "--workers=0",
        "--metrics=none", "--tensorboard=0", "--seed=3"]


def final_snapshot(run_dir):
    from training import checkpoint

    return checkpoint.latest_snapshot(run_dir)


def interrupted_run(outdir, data):
    """Start a run, send SIGINT after its second tick line, return (returncode, output, run_dir)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), f"--outdir={outdir}", f"--data={data}",
                             *ARGS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("tick 1 "):
            proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    (run_dir,) = glob.glob(os.path.join(outdir, "00000-*"))
    return proc.returncode, "".join(lines), run_dir


@pytest.mark.slow
def test_ctrl_c_then_resume_by_run_directory_is_bit_exact(tmp_path, tiny_digits):
    run_train([f"--outdir={tmp_path}/a", f"--data={tiny_digits}", *ARGS], expect_ok=True)
    (reference,) = glob.glob(str(tmp_path / "a" / "00000-*"))

    code, output, run_dir = interrupted_run(str(tmp_path / "b"), tiny_digits)
    assert code == 0, output[-3000:]
    assert "SIGINT: stopping after this step with a checkpoint" in output
    assert f"Continue with:\n  python train.py --resume={run_dir}" in output
    stopped_at = json.loads(open(os.path.join(run_dir, "stats.jsonl")).readlines()[-1])["Progress/kimg"]["mean"]
    assert stopped_at < 0.2

    result = run_train([f"--resume={run_dir}"])  # The directory alone: its recorded options.
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert os.listdir(tmp_path / "b") == [os.path.basename(run_dir)]  # One run, one directory.
    kimgs = [json.loads(line)["Progress/kimg"]["mean"] for line in open(os.path.join(run_dir, "stats.jsonl"))]
    assert kimgs == sorted(kimgs) and kimgs[-1] == pytest.approx(0.2, abs=0.01) and stopped_at in kimgs
    log = open(os.path.join(run_dir, "log.txt")).read()
    assert log.count("Training for 0.2 kimg") == 2  # One log, both sessions.
    assert os.path.basename(final_snapshot(run_dir)) == os.path.basename(final_snapshot(reference))
    assert weights_digest(final_snapshot(run_dir)) == weights_digest(final_snapshot(reference))


def test_continuing_refuses_options_that_change_the_run(tmp_path, tiny_digits):
    run_train([f"--outdir={tmp_path}", f"--data={tiny_digits}", "--cond=1", "--cfg=tiny", "--batch=8", "--kimg=0.016",
               "--tick=1", "--snap=1", "--workers=0", "--metrics=none", "--tensorboard=0"], expect_ok=True)
    (run_dir,) = glob.glob(str(tmp_path / "00000-*"))
    result = run_train([f"--resume={run_dir}", "--gamma=3"])
    assert result.returncode != 0 and "--gamma would make it another run" in result.stderr
    result = run_train([f"--resume={run_dir}"])  # Already at its --kimg.
    assert result.returncode != 0 and "pass a larger --kimg to continue it" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_train([f"--resume={run_dir}", "--kimg=0.032"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(run_dir)]
    assert json.load(open(os.path.join(run_dir, "training_options.json")))["total_kimg"] == 0.032
