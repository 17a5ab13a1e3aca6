"""Shared fixtures and helpers: the tiny CPU trainer and a digits dataset (plugins/testing.py), the repository
root, and train.py in a subprocess. Test modules import the helpers with `from tests.conftest import ...`."""

import os
import shutil
import subprocess
import sys
import textwrap

pytest_plugins = ["plugins.testing"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(args, expect_ok=False):
    """train.py ARGS in a fresh process (one OpenMP thread, unbuffered); the CompletedProcess."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def generate_without_project(snapshot, outdir, work_dir, args=("--seeds=0-1",)):
    """generate.py on `snapshot` in a fresh process where neither plugins/ nor training/ can be imported (only
    dnnlib, torch_utils, legacy.py and generate.py are copied to `work_dir`); the CompletedProcess."""
    from plugins.testing import BLOCK_PROJECT_IMPORTS

    os.makedirs(work_dir, exist_ok=True)
    for pkg in ["dnnlib", "torch_utils"]:
        shutil.copytree(os.path.join(REPO, pkg), os.path.join(work_dir, pkg))
    for name in ["legacy.py", "generate.py"]:
        shutil.copy(os.path.join(REPO, name), os.path.join(work_dir, name))
    script = BLOCK_PROJECT_IMPORTS + textwrap.dedent(f"""
        for name in ('plugins', 'training'):
            try:
                __import__(name)
                raise SystemExit(name + ' should not be importable')
            except ImportError:
                pass
        sys.argv = ['generate.py', '--network={snapshot}', '--outdir={outdir}'] + {list(args)!r}
        import generate
        generate.generate_images()
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=work_dir, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=work_dir))
