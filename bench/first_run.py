"""Run the README's first command verbatim, as a newcomer would, and print its wall time and class consistency.

    python bench/first_run.py                    # in a copy of this tree, in a fresh virtual environment
    python bench/first_run.py --in-place         # in this tree itself (CI does this on its clean clone)
    python bench/first_run.py --min-consistency=0.8 --then-tests   # what .ci/run does

The command is the first line of the README's first ```bash block that is not a comment; the test
command is the next such line. The virtual environment is created with `python -m venv` (no extras, no
packages of this machine), and the command runs in it with bash, exactly as written. The wall time
counts the venv creation and everything the command does (install, dataset, training, metric).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# train.py's summary: "Final <metric>: class_consistency = 0.97, ..., div_cls_ratio = 0.91, ..." (any metric that has them).
CONSISTENCY_RE = re.compile(r"^Final \w+: .*?\bclass_consistency = ([0-9.]+)", flags=re.M)
DIVERSITY_RE = re.compile(r"^Final \w+: .*?\bdiv_cls_ratio = ([0-9.]+)", flags=re.M)


def readme_commands(readme_path):
    """(first command, test command): the first two non-comment lines of the README's first ```bash block."""
    with open(readme_path, "r", encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    if m is None:
        raise SystemExit(f"{readme_path}: no ```bash block; the README must begin with the first-run command")
    lines = [line.strip() for line in m.group(1).splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    if len(commands) < 2:
        raise SystemExit(f"{readme_path}: the first ```bash block needs two commands (first run, tests); found {commands}")
    return commands[0], commands[1]


def copy_tree(src, dest):
    """Copy the files git knows about (tracked, and untracked but not ignored): a clean checkout of this tree."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=src,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if not os.path.isfile(os.path.join(src, rel)):
            continue  # Deleted but still in the index.
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(os.path.join(src, rel), os.path.join(dest, rel))


def run_in_venv(command, cwd, venv):
    """Run `command` with bash in `venv` (activated as `source bin/activate` would); stream and return output."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(VIRTUAL_ENV=venv, PATH=os.path.join(venv, "bin") + os.pathsep + env.get("PATH", ""), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    output = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        output.append(line)
    return proc.wait(), "".join(output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-place", action="store_true", help="run in this tree instead of a copy of it")
    parser.add_argument("--min-consistency", type=float, help="exit 1 when the printed class consistency is lower")
    parser.add_argument("--min-diversity", type=float,
                        help="exit 1 when the printed diversity ratio (fakes' / reals' intra-class diversity) is lower")
    parser.add_argument("--then-tests", action="store_true", help="then run the README's test command in the same venv")
    parser.add_argument("--then-gpu-smoke", action="store_true",
                        help="then run bench/gpu_check.py --smoke in the same venv (its CPU stand-in for the GPU check)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and venv (their path is printed)")
    args = parser.parse_args()

    first, tests = readme_commands(os.path.join(REPO, "README.md"))
    scratch = tempfile.mkdtemp(prefix="first-run-")
    try:
        workdir = REPO if args.in_place else os.path.join(scratch, "repo")
        if not args.in_place:
            copy_tree(REPO, workdir)
        venv = os.path.join(scratch, "venv")
        print(f"README first command: {first}\nin {workdir}, venv {venv}\n", flush=True)
        start = time.time()
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        rc, output = run_in_venv(first, workdir, venv)
        wall = time.time() - start
        found = {name: (float(m[-1]) if m else None)
                 for name, m in (("class consistency", CONSISTENCY_RE.findall(output)),
                                 ("diversity ratio", DIVERSITY_RE.findall(output)))}
        print(f"\nfirst command: exit code {rc}, wall time {wall:.0f} s ({wall / 60:.1f} min, venv and install included), "
              + ", ".join(f"{name} {'not printed' if v is None else v}" for name, v in found.items()), flush=True)
        if rc != 0:
            return rc
        for name, minimum in (("class consistency", args.min_consistency), ("diversity ratio", args.min_diversity)):
            if minimum is None:
                continue
            if found[name] is None:
                print(f"error: the run did not print its final {name}", flush=True)
                return 1
            if found[name] < minimum:
                print(f"error: {name} {found[name]:.3f} is below {minimum}", flush=True)
                return 1
        if args.then_tests:
            print(f"\nREADME test command: {tests}\n", flush=True)
            rc, _output = run_in_venv(tests, workdir, venv)
            if rc != 0:
                return rc
        if args.then_gpu_smoke:
            smoke = f"python bench/gpu_check.py --smoke --out={os.path.join(scratch, 'gpu-check.json')}"
            print(f"\nGPU check, CPU smoke run: {smoke}\n", flush=True)
            rc, _output = run_in_venv(smoke, workdir, venv)
            return rc
        return 0
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
