"""Output without noise (issue #22): a short run prints each warning once and none from the project's own numerics,
and the console and the files name the same run directory."""

import collections
import glob
import os
import re

from tests.conftest import run_train


def test_a_short_run_warns_once_per_cause(tmp_path, tiny_digits, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))  # No detector file: fid50k_full is skipped.
    monkeypatch.setenv("GAN_DETECTOR_DIR", str(tmp_path / "no-detectors"))
    result = run_train([f"--outdir={tmp_path}/runs", f"--data={tiny_digits}", "--cond=1", "--cfg=tiny", "--batch=8",
                        "--kimg=0.048", "--tick=0.016", "--snap=1", "--workers=0", "--tensorboard=0",
                        "--metrics=fid50k_full"], expect_ok=True)
    output = result.stdout + result.stderr
    lines = [line.strip() for line in output.splitlines() if re.search(r"warn", line, re.IGNORECASE)]
    counts = collections.Counter(lines)
    assert all(n == 1 for n in counts.values()), [line for line, n in counts.items() if n > 1]
    assert sum("metric fid50k_full skipped for the rest of this run" in line for line in lines) == 1
    for noise in ("LinAlgWarning", "RuntimeWarning", "DeprecationWarning", "FutureWarning"):
        assert noise not in output, noise
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "00000-*"))
    assert f"Output directory:   {run_dir}" in result.stdout  # The console names the directory the files are in.
    assert os.path.isfile(os.path.join(run_dir, "log.txt"))
