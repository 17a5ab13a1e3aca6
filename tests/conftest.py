"""Shared fixtures and helpers: the tiny CPU trainer and a digits dataset (plugins/testing.py), the repository
root, and train.py in a subprocess. Test modules import the helpers with `from tests.conftest import ...`."""

import os
import subprocess
import sys

pytest_plugins = ["plugins.testing"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(args, expect_ok=False):
    """train.py ARGS in a fresh process (one OpenMP thread, unbuffered); the CompletedProcess."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
