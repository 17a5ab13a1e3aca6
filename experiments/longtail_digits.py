"""Long-tailed digits: baseline vs NoisyTwins vs UTLO vs both, equal kimg, on the CPU.

  python experiments/longtail_digits.py --out=experiments/longtail_digits --kimg=20

Steps: build a digits dataset (scikit-learn, no download), make a long-tailed subset with
lt_dataset.py (--imf), train each configuration with train.py for the same kimg and seed, then
evaluate every final snapshot with calc_metrics.py using the project's offline classifier:
  fd_cls_shots_all  Frechet distance in the classifier's feature space, per shot band (many/medium/few)
  class_consistency classifier accuracy on fakes w.r.t. their conditioning class (+ per band)
  div_cls           intra-class diversity: mean pairwise feature distance within a class (+ per band)
Writes <out>/results.json and <out>/results.md and prints the table.
"""

import json
import os
import subprocess
import sys
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "baseline": [],
    "noisytwins": ["--plugins=noisytwins"],
    "utlo": ["--plugins=utlo"],
    "noisytwins+utlo": ["--plugins=noisytwins,utlo"],
}
METRICS = "fd_cls_shots_all,class_consistency,div_cls"


def sh(args, env=None, log=None):
    print("$ " + " ".join(args), flush=True)
    with open(log, "w") if log else open(os.devnull, "w") as f:
        result = subprocess.run(args, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}); see {log}")


def prepare_data(out, res, imf, seed):
    data = os.path.join(out, f"digits{res}.zip")
    if not os.path.exists(data):
        sh([sys.executable, "dataset_tool.py", f"--source=digits:{res}", f"--dest={data}"])
        sh([sys.executable, "lt_dataset.py", f"--source={data}", f"--imf={imf:g}", f"--seed={seed}"])
    return data


def train_all(out, data, imf, kimg, res_uc, seed, parallel):
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, 2 // parallel)), PYTHONUNBUFFERED="1")
    running = []
    run_dirs = {}
    for name, extra in CONFIGS.items():
        outdir = os.path.join(out, "runs", name)
        if os.path.isdir(outdir) and any(d[:5].isdigit() for d in os.listdir(outdir)):
            run_dirs[name] = os.path.join(outdir, sorted(os.listdir(outdir))[-1])
            continue
        args = [sys.executable, "train.py", f"--outdir={outdir}", f"--data={data}", "--cond=1", f"--subset=lt_{imf:g}.json",
                "--cfg=tiny", f"--kimg={kimg:g}", "--metrics=none", f"--seed={seed}", "--workers=0", "--tensorboard=0",
                *extra]
        if "utlo" in name:
            args.append(f"--utlo-res-uc={res_uc}")
        os.makedirs(outdir, exist_ok=True)
        print("$ " + " ".join(args[1:]), flush=True)
        log = open(os.path.join(outdir, "stdout.txt"), "w")
        running.append((name, outdir, subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)))
        while len(running) >= parallel:
            running = _reap(running, run_dirs)
    while running:
        running = _reap(running, run_dirs)
    return run_dirs


def _reap(running, run_dirs):
    time.sleep(5)
    still = []
    for name, outdir, proc in running:
        if proc.poll() is None:
            still.append((name, outdir, proc))
        elif proc.returncode != 0:
            raise SystemExit(f"training {name} failed; see {outdir}/stdout.txt")
        else:
            run_dirs[name] = os.path.join(outdir, sorted(d for d in os.listdir(outdir) if d[:5].isdigit())[-1])
    return still


def evaluate(run_dir, num_gen):
    snaps = sorted(f for f in os.listdir(run_dir) if f.startswith("network-snapshot-"))
    results = {}
    for metric in METRICS.split(","):
        path = os.path.join(run_dir, f"metric-{metric}.jsonl")
        if not os.path.exists(path):
            args = [sys.executable, "calc_metrics.py", f"--network={os.path.join(run_dir, snaps[-1])}",
                    f"--metrics={metric}", "--seed=0"]
            if num_gen:
                args.append(f"--num-gen={num_gen}")
            sh(args, log=os.path.join(run_dir, f"calc_{metric}.txt"))
        with open(path) as f:
            results.update(json.loads(f.readlines()[-1])["results"])
    return results


def table(results):
    bands = ["many", "medium", "few"]
    rows = ["| config | " + " | ".join(f"FD_cls {b}" for b in bands) + " | " +
            " | ".join(f"consistency {b}" for b in bands) + " | " + " | ".join(f"diversity {b}" for b in bands) + " |",
            "|---" * (1 + 3 * len(bands)) + "|"]
    for name, r in results.items():
        def get(key, r=r):
            return f"{r[key]:.3f}" if key in r else "-"
        cells = [get(f"fd_cls_{b}") for b in bands] + [get(f"class_consistency_{b}") for b in bands] + \
                [get(f"div_cls_{b}") for b in bands]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


@click.command()
@click.option("--out", default="experiments/longtail_digits", show_default=True, help="Work and result directory")
@click.option("--kimg", type=float, default=20, show_default=True, help="Training length of every configuration")
@click.option("--res", type=int, default=16, show_default=True, help="Image size (16 or 32)")
@click.option("--imf", type=float, default=10, show_default=True, help="Imbalance factor")
@click.option("--res-uc", type=int, default=8, show_default=True, help="UTLO's res_uc")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--parallel", type=int, default=2, show_default=True, help="Trainings at a time (1 thread each when 2)")
@click.option("--num-gen", type=int, default=None, help="Fakes per metric (default: each metric's own, 10k)")
def main(out, kimg, res, imf, res_uc, seed, parallel, num_gen):
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    data = prepare_data(out, res, imf, seed)
    run_dirs = train_all(out, data, imf, kimg, res_uc, seed, parallel)
    results = {name: evaluate(run_dirs[name], num_gen) for name in CONFIGS}
    text = table(results)
    summary = dict(command=" ".join(sys.argv), kimg=kimg, res=res, imf=imf, res_uc=res_uc, seed=seed,
                   seconds=time.time() - start, results=results)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"`{summary['command']}` ({summary['seconds'] / 60:.0f} min)\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
