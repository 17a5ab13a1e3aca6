"""Shared pieces of the experiment scripts: a job pool, run directories, snapshot evaluation, aggregation, plots.

The scripts run train.py and their own `evaluate` command as subprocesses, `parallel` at a time with the CPU
cores split between them, and keep every result on disk so that an interrupted experiment continues.
"""

import glob
import json
import math
import os
import re
import subprocess
import sys
import time

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def sh(args, logfile):
    log("$ " + " ".join(args))
    with open(logfile, "w") as f:
        if subprocess.run(args, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
            raise click.ClickException(f"command failed; see {logfile}")


class Pool:
    """Run shell jobs, `size` at a time, each with OMP_NUM_THREADS = cores // size. A job's on_done may return
    more jobs; they go to the front of the queue (evaluate a run as soon as it is trained)."""

    def __init__(self, size):
        self.size = size
        threads = str(max(1, (os.cpu_count() or 2) // size))
        self.env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
        self.queue = []
        self.running = []

    def submit(self, args, logfile, on_done=None, first=False):
        self.queue.insert(0 if first else len(self.queue), (args, logfile, on_done))

    def run(self):
        while self.queue or self.running:
            while self.queue and len(self.running) < self.size:
                args, logfile, on_done = self.queue.pop(0)
                log("$ " + " ".join(args[1:]))
                f = open(logfile, "w")
                proc = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=f, stderr=subprocess.STDOUT)
                self.running.append((proc, f, logfile, on_done))
            time.sleep(2)
            still = []
            for proc, f, logfile, on_done in self.running:
                if proc.poll() is None:
                    still.append((proc, f, logfile, on_done))
                    continue
                f.close()
                if proc.returncode != 0:
                    raise click.ClickException(f"job failed ({proc.returncode}); see {logfile}")
                for job in reversed((on_done() if on_done else None) or []):
                    self.submit(*job, first=True)
            self.running = still


def run_dir_of(outdir):
    """The newest run directory train.py made under outdir, or None."""
    dirs = sorted(d for d in glob.glob(os.path.join(outdir, "0*")) if os.path.isdir(d))
    return dirs[-1] if dirs else None


def snapshot_kimg(path):
    """The kimg in a snapshot's name (sg2ada names snapshots by whole kimg)."""
    return int(re.findall(r"(\d+)\.pkl$", path)[0])


def finished(run_dir, kimg):
    """True when the run wrote its last snapshot."""
    snaps = sorted(glob.glob(os.path.join(run_dir or "", "network-snapshot-*.pkl")))
    return run_dir is not None and bool(snaps) and snapshot_kimg(snaps[-1]) >= int(kimg)


def schedule_runs(pool, out, runs, kimg, evaluate_args):
    """Queue train.py for each (name, seed, args) in runs unless finished, each followed by its evaluation."""
    for name, seed, args in runs:
        outdir = os.path.join(out, "runs", name, f"seed{seed}")
        os.makedirs(outdir, exist_ok=True)
        run_dir = run_dir_of(outdir)
        if finished(run_dir, kimg):
            pool.submit(evaluate_args(run_dir), os.path.join(run_dir, "evaluate.txt"))
            continue
        if run_dir is not None:  # An interrupted training: keep it aside and start again.
            os.rename(run_dir, os.path.join(outdir, "interrupted-" + os.path.basename(run_dir)))

        def evaluate_when_trained(outdir=outdir):
            run_dir = run_dir_of(outdir)
            return [(evaluate_args(run_dir), os.path.join(run_dir, "evaluate.txt"))]

        pool.submit([sys.executable, "train.py", f"--outdir={outdir}", f"--seed={seed}", *args],
                    os.path.join(outdir, "train.txt"), on_done=evaluate_when_trained)


def load_G(path):
    import dnnlib
    import legacy

    with dnnlib.util.open_url(path) as f:
        return legacy.load_network_pkl(f)["G_ema"].eval().requires_grad_(False)


def evaluate_run(run_dir, evaluate_snapshot, tag, last_only=False):
    """evaluate_snapshot(path) -> dict for every snapshot of run_dir (or the last) not yet in run_dir/curves.json
    with the same tag (the evaluation settings)."""
    import dnnlib

    path = os.path.join(run_dir, "curves.json")
    curves = json.load(open(path)) if os.path.exists(path) else {}
    snaps = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
    for snap in snaps[-1:] if last_only else snaps:
        name = os.path.basename(snap)
        if curves.get(name, {}).get("tag") == tag:
            continue
        start = time.time()
        curves[name] = dict(evaluate_snapshot(snap), kimg=snapshot_kimg(snap), tag=tag)
        log(f"{name}: {time.time() - start:.0f} s")
        dnnlib.util.atomic_write_text(path, json.dumps(curves, indent=1))


def evaluate_against_full_dataset(run_dir, metrics, num_gen):
    """calc_metrics of every snapshot of run_dir against its whole (labelled) training set, into curves.json."""
    import dnnlib

    options = json.load(open(os.path.join(run_dir, "training_options.json")))
    data = options["training_set_kwargs"]["path"]

    def one(snap):
        G = load_G(snap)
        full = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data, use_labels=True,
                               resolution=G.img_resolution, xflip=False)
        return calc_metrics(G, metrics, full, num_gen)

    evaluate_run(run_dir, one, tag=f"n{num_gen}")


def calc_metrics(G, metrics, dataset_kwargs, num_gen, classifier=None):
    """{result key: value} of the metrics (without per-class keys) on the CPU, seed 0."""
    import torch

    from metrics import metric_main

    out = {}
    for metric in metrics:
        result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=dataset_kwargs, num_gpus=1, rank=0,
                                         device=torch.device("cpu"), num_gen_override=num_gen, seed=0,
                                         detector=dict(classifier=classifier))
        out.update({k: v for k, v in result.results.items() if not re.search(r"_c\d+$", k)})
    return out


def aggregate(values):
    """mean and half the range over seeds (with two seeds, each lies exactly at mean +- spread)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    return dict(mean=float(np.mean(values)), spread=float((max(values) - min(values)) / 2), n=len(values))


def collect_curves(out, configs, seeds):
    """{config: {key: [(kimg, aggregate)]}} over the seeds' curves.json."""
    results = {}
    for config in configs:
        per_seed = []
        for seed in seeds:
            run_dir = run_dir_of(os.path.join(out, "runs", config, f"seed{seed}"))
            path = os.path.join(run_dir or "", "curves.json")
            if run_dir is not None and os.path.exists(path):
                per_seed.append(sorted(json.load(open(path)).values(), key=lambda r: r["kimg"]))
        if not per_seed:
            continue
        n = min(len(s) for s in per_seed)
        keys = sorted({k for s in per_seed for r in s for k in r if k not in ("kimg", "tag")})
        results[config] = {key: [(float(np.mean([s[i]["kimg"] for s in per_seed])), aggregate([s[i].get(key) for s in per_seed]))
                                 for i in range(n)] for key in keys}
        results[config]["_seeds"] = len(per_seed)
    return results


def fmt(agg, digits=3):
    if agg is None:
        return "-"
    digits = digits if abs(agg["mean"]) < 10 else 1
    return f"{agg['mean']:.{digits}f} ± {agg['spread']:.{digits}f}"


def final_table(results, columns):
    """Markdown table of the last curve point: columns = [(key, label, digits)]."""
    lines = ["| config | " + " | ".join(label for _, label, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for config, curves in results.items():
        cells = [fmt(curves[key][-1][1], digits) if key in curves else "-" for key, _, digits in columns]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(results, path, panels, cols=3):
    """One panel per (key, title): mean over seeds per config, shaded +- spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import dnnlib

    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = {config: f"C{i}" for i, config in enumerate(results)}  # The same colour in every panel.
    for ax, (key, title) in zip(axes.flat, panels):
        for config, curves in results.items():
            series = [(k, a) for k, a in curves.get(key, []) if a is not None]
            if not series:
                continue
            x = np.array([k for k, _ in series])
            m = np.array([a["mean"] for _, a in series])
            s = np.array([a["spread"] for _, a in series])
            ax.plot(x, m, label=config, marker="o", markersize=3, color=colors[config])
            ax.fill_between(x, m - s, m + s, color=colors[config], alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("kimg", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [matplotlib.lines.Line2D([], [], color=colors[c], marker="o", markersize=3) for c in results]
    fig.legend(handles, list(results), loc="lower center", ncol=max(1, len(results)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with dnnlib.util.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_report(out, configs, seeds, columns, header, cols=4):
    """results.md (header + table of the last curve point), results.json and curves.png of an experiment in out;
    returns the text. header(meta) gives the first line from out/run.json."""
    import dnnlib

    results = collect_curves(out, configs, range(seeds))
    meta = json.load(open(os.path.join(out, "run.json")))
    text = f"{header(meta)}; final snapshot, mean ± half-range over {seeds} seeds\n\n{final_table(results, columns)}\n"
    dnnlib.util.atomic_write_text(os.path.join(out, "results.md"), text)
    dnnlib.util.atomic_write_text(os.path.join(out, "results.json"), json.dumps(dict(meta=meta, results=results), indent=1))
    plot_curves(results, os.path.join(out, "curves.png"), [(k, label) for k, label, _ in columns], cols=cols)
    return text


def run_experiment(out, runs, kimg, parallel, evaluate_args, meta):
    """Train and evaluate every run (see schedule_runs), then record meta (+ minutes) in out/run.json."""
    start = time.time()
    pool = Pool(parallel)
    schedule_runs(pool, out, runs, kimg, evaluate_args)
    pool.run()
    meta = dict(meta, minutes=(time.time() - start) / 60, machine=f"{os.cpu_count()} CPU cores, {parallel} runs at a time")
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(meta, f, indent=2)
