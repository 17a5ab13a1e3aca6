"""Long-tailed Fashion-MNIST: baseline vs NoisyTwins vs UTLO (and ablations), curves over training, several seeds.

  python experiments/longtail.py run --out=experiments/longtail --budget-min=60

Steps (each is skipped when its output exists, so an interrupted run continues where it stopped):
1. data: Fashion-MNIST at 32 px (Debian dataset-fashion-mnist, offline) with dataset_tool.py, a long-tailed
   subset with lt_dataset.py --imf (default 100), and the project's offline classifier trained on the full,
   balanced set (the metrics' feature space).
2. length: unless --kimg is given, two probe trainings of the slowest configuration (noisytwins,utlo), run side
   by side like the real ones, and one probe evaluation give seconds per kimg and per evaluation; the script
   then picks the longest kimg whose trainings and evaluations fit the wall-clock --budget-min.
3. train every configuration with every seed, --parallel at a time (1 thread each when 2), snapshots at
   --points evenly spaced kimg.
4. evaluate every snapshot (the `evaluate` command, also in the pool): per shot band FD and KD in the
   classifier's feature space, class consistency, intra-class diversity, intra-class FD; and the mechanism
   checks: the spread of each class's w in G_ema, how much G_ema's 8x8 image depends on the class.
5. report (the `report` command): mean and spread over seeds per config and kimg, from the evaluations and
   from each run's stats.jsonl (Barlow invariance term, conditional and unconditional D losses); writes
   results.json, results.md and plots into --out.
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
sys.path.insert(0, REPO)

CONFIGS = {  # name: train.py arguments
    "baseline": [],
    "noisytwins": ["--plugins=noisytwins"],
    "noise-only": ["--plugins=noisytwins", "--nt-lambda=0"],
    "utlo": ["--plugins=utlo", "--utlo-res-uc=8"],
    "utlo-no-uc-loss": ["--plugins=utlo", "--utlo-res-uc=8", "--utlo-add-uc=0"],
    "noisytwins+utlo": ["--plugins=noisytwins,utlo", "--utlo-res-uc=8"],
}
SLOWEST = "noisytwins+utlo"
METRICS = ["cls_shots_all", "class_consistency", "div_cls", "ifd_cls"]  # cls_shots_all: FD and KD per band
BANDS = ("many", "medium", "few")
LOWRES = 8  # The resolution whose class dependence is measured (UTLO's res_uc).
STATS = {  # stats.jsonl key: name in the results
    "Loss/G/loss": "loss_G_c",
    "Loss/D/loss": "loss_D_c",
    "Loss/utlo/G_uc": "loss_G_uc",
    "Loss/utlo/D_uc": "loss_D_uc",
    "NoisyTwins/invariance": "barlow_invariance",
    "NoisyTwins/redundancy": "barlow_redundancy",
}


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def sh(args, logfile):
    log("$ " + " ".join(os.path.relpath(a, REPO) if os.path.isabs(a) and a.startswith(REPO) else a for a in args))
    with open(logfile, "w") as f:
        if subprocess.run(args, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
            raise click.ClickException(f"command failed; see {logfile}")


# ----------------------------------------------------------------------------- data


def prepare_data(out, imf):
    data = os.path.join(out, "fashion32.zip")
    label_file = f"lt_{imf:g}.json"
    if not os.path.exists(data):
        sh([sys.executable, "dataset_tool.py", "--source=fashion-mnist", f"--dest={data}"], os.path.join(out, "dataset_tool.txt"))
    import zipfile
    with zipfile.ZipFile(data) as z:
        has_lt = label_file in z.namelist()
    if not has_lt:
        sh([sys.executable, "lt_dataset.py", f"--source={data}", f"--imf={imf:g}", "--seed=0"], os.path.join(out, "lt_dataset.txt"))
    # Train (or find in the cache) the classifier once here, so that parallel evaluations do not race to make it.
    sh([sys.executable, "-m", "metrics.offline_classifier", f"--data={data}", f"--label-file={label_file}"],
       os.path.join(out, "classifier.txt"))
    return data, label_file


# ----------------------------------------------------------------------------- jobs


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


def train_args(outdir, data, label_file, config, seed, kimg, points, cfg):
    tick = kimg / (points - 1)
    return [sys.executable, "train.py", f"--outdir={outdir}", f"--data={data}", "--cond=1", f"--subset={label_file}",
            f"--cfg={cfg}", f"--kimg={kimg:g}", f"--tick={tick:g}", "--snap=1", "--metrics=none", f"--seed={seed}",
            "--workers=0", "--tensorboard=0", *CONFIGS[config]]


def run_dir_of(outdir):
    dirs = sorted(d for d in glob.glob(os.path.join(outdir, "0*")) if os.path.isdir(d))
    return dirs[-1] if dirs else None


def finished(run_dir, kimg):
    """True when the run wrote its last snapshot (train.py's end of run)."""
    if run_dir is None:
        return False
    snaps = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
    return bool(snaps) and snapshot_kimg(snaps[-1]) >= int(kimg)


def snapshot_kimg(path):
    """The kimg in a snapshot's name (sg2ada names snapshots by whole kimg)."""
    return int(re.findall(r"(\d+)\.pkl$", path)[0])


def eval_args(run_dir, num_gen):
    return [sys.executable, os.path.abspath(__file__), "evaluate", run_dir, f"--num-gen={num_gen}"]


def last_sec_per_kimg(logfile):
    values = [float(m) for m in re.findall(r"sec/kimg\s+([\d.]+)", open(logfile).read())]
    if len(values) < 2:
        raise click.ClickException(f"probe training printed no timing; see {logfile}")
    return float(np.median(values[1:]))  # Tick 0 includes start-up.


def probe(out, data, label_file, parallel, cfg, num_gen):
    """(seconds per kimg of the slowest config with `parallel` trainings side by side, seconds per evaluation,
    seconds of training start-up)."""
    path = os.path.join(out, "probe.json")
    if os.path.exists(path):
        return json.load(open(path))
    pool = Pool(parallel)
    logs = []
    start = time.time()
    for i in range(parallel):
        outdir = os.path.join(out, "probe", str(i))
        logs.append(os.path.join(out, "probe", f"train{i}.txt"))
        os.makedirs(outdir, exist_ok=True)
        pool.submit(train_args(outdir, data, label_file, SLOWEST, i, kimg=1.5, points=4, cfg=cfg), logs[-1])
    pool.run()
    train_s = time.time() - start
    sec_per_kimg = max(last_sec_per_kimg(f) for f in logs)
    # The first evaluation also computes the reference features (cached for all later ones): not timed.
    pool.submit(eval_args(run_dir_of(os.path.join(out, "probe", "0")), num_gen) + ["--last-only"],
                os.path.join(out, "probe", "eval0.txt"))
    pool.run()
    start = time.time()
    pool.submit(eval_args(run_dir_of(os.path.join(out, "probe", "1")), num_gen) + ["--last-only"],
                os.path.join(out, "probe", "eval1.txt"))
    pool.run()
    eval_s = 1.1 * (time.time() - start)  # Alone on the machine; side by side it is a little slower.
    result = dict(sec_per_kimg=sec_per_kimg, eval_s=eval_s, startup_s=max(0.0, train_s - 1.5 * sec_per_kimg),
                  parallel=parallel, cfg=cfg, num_gen=num_gen)
    json.dump(result, open(path, "w"), indent=2)
    return result


def pick_kimg(budget_s, timing, num_runs, parallel, points):
    """Longest kimg whose trainings and evaluations fit the budget; a multiple of points - 1, so that snapshots
    (named by whole kimg) fall on whole kimg."""
    waves = math.ceil(num_runs / parallel)
    per_run = budget_s / waves - timing["startup_s"] - points * timing["eval_s"]
    step = points - 1
    kimg = math.floor(per_run / timing["sec_per_kimg"] / step) * step
    if kimg < step:
        raise click.ClickException(f"--budget-min is too short: one kimg takes {timing['sec_per_kimg']:.0f} s and "
                                   f"{num_runs} runs need {waves} rounds; give more minutes, fewer seeds or configs")
    return int(kimg)


# ----------------------------------------------------------------------------- evaluation


def load_snapshot(path):
    import dnnlib
    import legacy

    with dnnlib.util.open_url(path) as f:
        return legacy.load_network_pkl(f)


def mechanism_checks(G, bands, seed=0, per_class=256):
    """w spread per class and the class dependence of the LOWRES-pixel image, for G (G_ema, eval mode)."""
    import torch

    c_dim = G.c_dim
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn([per_class, G.z_dim], generator=rng)
    spreads = {}
    lows = []
    with torch.no_grad():
        for k in range(c_dim):
            c = torch.nn.functional.one_hot(torch.full([per_class], k), c_dim).float()
            capture = {}
            G.mapping(z, c, capture=capture)
            w = capture["w_streams"]["w"]
            spreads[k] = float(w.std(dim=0).square().mean().sqrt())  # RMS over dims of each dim's std
            capture = {}
            G(z[:64], c[:64], noise_mode="const", capture=capture)
            lows.append(capture["block_outputs"][LOWRES][1])
    lows = torch.stack(lows)  # [class, z, C, H, W]
    between_classes = lows.var(dim=0).mean()
    between_z = lows.var(dim=1).mean()
    result = dict(lowres_class_dependence=float(between_classes / between_z.clamp(min=1e-12)))
    for band in BANDS:
        result[f"w_spread_{band}"] = float(np.mean([spreads[int(k)] for k in bands[band]]))
    result["w_spread_few_over_many"] = result["w_spread_few"] / result["w_spread_many"]
    return result


def evaluate_snapshot(path, data, label_file, num_gen, bands):
    import torch

    import dnnlib
    from metrics import metric_main

    snapshot = load_snapshot(path)
    G = snapshot["G_ema"].eval().requires_grad_(False)
    dataset_kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data, label_file=label_file,
                                     use_labels=True, resolution=G.img_resolution, xflip=False)
    result = dict(kimg=snapshot_kimg(path))
    for metric in METRICS:
        out = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=dataset_kwargs, num_gpus=1, rank=0,
                                      device=torch.device("cpu"), num_gen_override=num_gen, seed=0)
        result.update({k: v for k, v in out.results.items() if not re.search(r"_c\d+$", k)})
    result.update(mechanism_checks(G, bands))
    return result


def read_bands(data, label_file):
    import zipfile
    with zipfile.ZipFile(data) as z:
        return json.loads(z.read(label_file))["lt"]["bands"]


@click.group()
def cli():
    pass


@cli.command()
@click.argument("run_dir")
@click.option("--num-gen", type=int, default=2000, show_default=True, help="Fakes per metric (and per band)")
@click.option("--last-only", is_flag=True, help="Only the last snapshot (the probe)")
def evaluate(run_dir, num_gen, last_only):
    """Metrics and mechanism checks of every snapshot of RUN_DIR, into RUN_DIR/curves.json."""
    options = json.load(open(os.path.join(run_dir, "training_options.json")))
    data, label_file = options["training_set_kwargs"]["path"], options["training_set_kwargs"]["label_file"]
    bands = read_bands(data, label_file)
    path = os.path.join(run_dir, "curves.json")
    curves = json.load(open(path)) if os.path.exists(path) else {}
    snaps = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
    for snap in snaps[-1:] if last_only else snaps:
        name = os.path.basename(snap)
        if name in curves and curves[name].get("num_gen") == num_gen:
            continue
        start = time.time()
        curves[name] = dict(evaluate_snapshot(snap, data, label_file, num_gen, bands), num_gen=num_gen)
        log(f"{name}: {time.time() - start:.0f} s")
        import dnnlib
        dnnlib.util.atomic_write_text(path, json.dumps(curves, indent=1))


# ----------------------------------------------------------------------------- report


def read_stats(run_dir, points):
    """Tick-averaged loss statistics, binned to the snapshot kimg they precede."""
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "stats.jsonl"))]
    out = []
    for row in rows:
        entry = dict(kimg=row["Progress/kimg"]["mean"])
        for key, name in STATS.items():
            if key in row and row[key].get("num", 0) > 0:
                entry[name] = row[key]["mean"]
        out.append(entry)
    return out


def aggregate(values):
    """mean and half the range over seeds (with two seeds, each lies exactly mean +- spread)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    return dict(mean=float(np.mean(values)), spread=float((max(values) - min(values)) / 2), n=len(values))


def collect(out, configs, seeds):
    """{config: {'curves': {key: [(kimg, agg)]}, 'stats': {key: [(kimg, agg)]}}}."""
    results = {}
    for config in configs:
        per_seed = []
        stats_per_seed = []
        for seed in seeds:
            run_dir = run_dir_of(os.path.join(out, "runs", config, f"seed{seed}"))
            path = os.path.join(run_dir or "", "curves.json")
            if run_dir is None or not os.path.exists(path):
                continue
            per_seed.append(sorted(json.load(open(path)).values(), key=lambda r: r["kimg"]))
            stats_per_seed.append(read_stats(run_dir, None))
        if not per_seed:
            continue
        curves = {}
        n_points = min(len(s) for s in per_seed)
        keys = sorted({k for s in per_seed for r in s for k in r if k not in ("kimg", "num_gen")})
        for key in keys:
            curves[key] = [(float(np.mean([s[i]["kimg"] for s in per_seed])), aggregate([s[i].get(key) for s in per_seed]))
                           for i in range(n_points)]
        stats = {}
        n_ticks = min(len(s) for s in stats_per_seed)
        for name in STATS.values():
            series = [(float(np.mean([s[i]["kimg"] for s in stats_per_seed])), aggregate([s[i].get(name) for s in stats_per_seed]))
                      for i in range(n_ticks)]
            if any(a is not None for _, a in series):
                stats[name] = series
        results[config] = dict(curves=curves, stats=stats, seeds=len(per_seed))
    return results


TABLE_KEYS = [("fd_cls_many", "FD many"), ("fd_cls_medium", "FD medium"), ("fd_cls_few", "FD few"),
              ("kd_cls_few", "KD few"), ("class_consistency_many", "cons. many"), ("class_consistency_few", "cons. few"),
              ("div_cls_few", "div few"), ("ifd_cls", "iFD"), ("w_spread_few_over_many", "w spread few/many"),
              ("lowres_class_dependence", "8px class dep.")]


def fmt(agg, key):
    if agg is None:
        return "-"
    digits = 4 if key.startswith("kd_") else 3 if abs(agg["mean"]) < 10 else 1
    return f"{agg['mean']:.{digits}f} ± {agg['spread']:.{digits}f}"


def table(results):
    lines = ["| config | " + " | ".join(label for _, label in TABLE_KEYS) + " |", "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for config, r in results.items():
        cells = [fmt(r["curves"][key][-1][1] if key in r["curves"] else None, key) for key, _ in TABLE_KEYS]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def final_stats_table(results):
    names = [("loss_D_c", "D_c loss"), ("loss_D_uc", "D_uc loss"), ("loss_G_c", "G_c loss"), ("loss_G_uc", "G_uc loss"),
             ("barlow_invariance", "Barlow invariance"), ("barlow_redundancy", "Barlow redundancy")]
    lines = ["| config | " + " | ".join(label for _, label in names) + " |", "|---" * (len(names) + 1) + "|"]
    for config, r in results.items():
        cells = []
        for key, _ in names:
            series = [a for _, a in r["stats"].get(key, []) if a is not None]
            cells.append(fmt(_mean_of_last(series), key) if series else "-")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_of_last(series, n=3):
    """The last n ticks pooled (tick means are noisy)."""
    last = series[-n:]
    return dict(mean=float(np.mean([a["mean"] for a in last])), spread=float(np.mean([a["spread"] for a in last])))


PLOTS = [("fd_cls_few", "FD_cls few"), ("fd_cls_medium", "FD_cls medium"), ("fd_cls_many", "FD_cls many"),
         ("kd_cls_few", "KD_cls few"), ("class_consistency_few", "consistency few"), ("class_consistency_many", "consistency many"),
         ("div_cls_few", "diversity few"), ("ifd_cls", "intra-class FD"), ("w_spread_few_over_many", "w spread few / many")]
MECHANISM_PLOTS = [("lowres_class_dependence", "8x8 image: var over classes / var over z", "curves"),
                   ("barlow_invariance", "Barlow invariance term (G_ema-free, per tick)", "stats"),
                   ("loss_D_c", "D loss, conditional (full res)", "stats"),
                   ("loss_D_uc", "D loss, unconditional (8x8)", "stats")]


def plot(results, path, panels, source_of=lambda panel: "curves"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        key, title = panel[0], panel[1]
        source = panel[2] if len(panel) > 2 else "curves"
        for config, r in results.items():
            series = [(k, a) for k, a in r[source].get(key, []) if a is not None]
            if not series:
                continue
            x = np.array([k for k, _ in series])
            m = np.array([a["mean"] for _, a in series])
            s = np.array([a["spread"] for _, a in series])
            line, = ax.plot(x, m, label=config, marker="o" if source == "curves" else None, markersize=3)
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("kimg", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    import dnnlib
    with dnnlib.util.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


@cli.command()
@click.option("--out", default="experiments/longtail", show_default=True, help="The run command's --out")
@click.option("--seeds", type=int, default=2, show_default=True)
def report(out, seeds):
    """Aggregate the evaluated runs into results.json, results.md, curves.png and mechanisms.png."""
    import dnnlib

    out = os.path.abspath(out)
    results = collect(out, list(CONFIGS), list(range(seeds)))
    if not results:
        raise click.ClickException(f"{out}: no evaluated runs (run the 'run' command first)")
    meta = json.load(open(os.path.join(out, "run.json"))) if os.path.exists(os.path.join(out, "run.json")) else {}
    dnnlib.util.atomic_write_text(os.path.join(out, "results.json"), json.dumps(dict(meta=meta, results=results), indent=1))
    plot(results, os.path.join(out, "curves.png"), PLOTS)
    plot(results, os.path.join(out, "mechanisms.png"), MECHANISM_PLOTS)
    text = (f"Final snapshot (kimg {meta.get('kimg', '?')}), mean ± half-range over {seeds} seeds:\n\n{table(results)}\n\n"
            f"Training statistics, last 3 ticks pooled:\n\n{final_stats_table(results)}\n")
    dnnlib.util.atomic_write_text(os.path.join(out, "results.md"), text)
    print(text)


# ----------------------------------------------------------------------------- run


@cli.command()
@click.option("--out", default="experiments/longtail", show_default=True, help="Work and result directory")
@click.option("--budget-min", type=float, default=60, show_default=True, help="Wall-clock budget for training and evaluation")
@click.option("--kimg", type=float, default=None, help="Training length of every run (default: what fits the budget)")
@click.option("--seeds", type=int, default=2, show_default=True, help="Seeds 0..N-1 for every configuration")
@click.option("--configs", default=",".join(CONFIGS), show_default=True, help="Comma-separated subset of the configurations")
@click.option("--points", type=int, default=4, show_default=True, help="Snapshots (curve points) per run, kimg 0 included")
@click.option("--parallel", type=int, default=2, show_default=True, help="Jobs at a time (cores are split between them)")
@click.option("--num-gen", type=int, default=2000, show_default=True, help="Fakes per metric (and per band)")
@click.option("--imf", type=float, default=100, show_default=True, help="Imbalance factor for lt_dataset.py")
@click.option("--cfg", default="tiny512", show_default=True, help="train.py --cfg")
@click.pass_context
def run(ctx, out, budget_min, kimg, seeds, configs, points, parallel, num_gen, imf, cfg):
    """Prepare the data, pick the length, train, evaluate and report."""
    configs = [c.strip() for c in configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {list(CONFIGS)}", param_hint="--configs")
    if points < 2:
        raise click.BadParameter("need at least 2", param_hint="--points")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    data, label_file = prepare_data(out, imf)
    if kimg is None:
        timing = probe(out, data, label_file, parallel, cfg, num_gen)
        spent = time.time() - start
        kimg = pick_kimg(budget_min * 60 - spent, timing, len(configs) * seeds, parallel, points)
        log(f"probe: {timing['sec_per_kimg']:.1f} s/kimg with {parallel} trainings side by side, {timing['eval_s']:.0f} s "
            f"per evaluation; {kimg:g} kimg per run fits {budget_min:g} min")
    else:
        timing = None
    meta = dict(command="python experiments/longtail.py run " + " ".join(sys.argv[2:]), kimg=kimg, seeds=seeds,
                configs=configs, points=points, parallel=parallel, num_gen=num_gen, imf=imf, cfg=cfg, timing=timing,
                machine=f"{os.cpu_count()} CPU cores", started=time.strftime("%Y-%m-%d %H:%M"))
    json.dump(meta, open(os.path.join(out, "run.json"), "w"), indent=2)

    pool = Pool(parallel)
    for seed in range(seeds):
        for config in configs:
            outdir = os.path.join(out, "runs", config, f"seed{seed}")
            os.makedirs(outdir, exist_ok=True)
            run_dir = run_dir_of(outdir)
            if finished(run_dir, kimg):
                pool.submit(eval_args(run_dir, num_gen), os.path.join(run_dir, "evaluate.txt"))
                continue
            if run_dir is not None:  # An interrupted training: keep it aside and start again.
                os.rename(run_dir, os.path.join(outdir, "interrupted-" + os.path.basename(run_dir)))

            def evaluate_when_trained(outdir=outdir):
                run_dir = run_dir_of(outdir)
                return [(eval_args(run_dir, num_gen), os.path.join(run_dir, "evaluate.txt"))]

            pool.submit(train_args(outdir, data, label_file, config, seed, kimg, points, cfg), os.path.join(outdir, "train.txt"),
                        on_done=evaluate_when_trained)
    pool.run()
    meta["minutes"] = (time.time() - start) / 60
    json.dump(meta, open(os.path.join(out, "run.json"), "w"), indent=2)
    ctx.invoke(report, out=out, seeds=seeds)
    log(f"done in {meta['minutes']:.0f} min")


if __name__ == "__main__":
    cli()
