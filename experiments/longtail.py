"""Long-tailed Fashion-MNIST: baseline vs NoisyTwins vs UTLO (and ablations), curves over training, several seeds.

  python experiments/longtail.py run --out=experiments/longtail --budget-min=80 --points=3 --num-gen=1500

Steps (each is skipped when its output exists, so an interrupted run continues where it stopped):
1. data: Fashion-MNIST at 32 px (Debian dataset-fashion-mnist, offline) with dataset_tool.py, a long-tailed
   subset with lt_dataset.py --imf (default 100), and the project's offline classifier trained on the full,
   balanced set (the metrics' feature space).
2. length: unless --kimg is given, two probe trainings of the slowest configuration (noisytwins,utlo), run side
   by side like the real ones, and a probe evaluation give seconds per kimg and per evaluation; the script
   then picks the longest kimg whose trainings and evaluations fit the wall-clock --budget-min.
3. train every configuration with every seed, --parallel at a time (1 thread each when 2), snapshots at
   --points evenly spaced kimg (tiny512 preset: w 512, batch 64).
4. evaluate every snapshot (the `evaluate` command, also in the pool): per shot band FD and KD in the
   classifier's feature space, class consistency, intra-class diversity, intra-class FD; and the mechanism
   checks: the spread of each class's w in G_ema, how much G_ema's 8x8 image depends on the class.
5. report (the `report` command): mean and spread over seeds per config and kimg, from the evaluations and
   from each run's stats.jsonl (Barlow invariance term, conditional and unconditional D losses); writes
   results.json, results.md and plots into --out.
"""

import json
import math
import os
import sys
import time
import zipfile

import click
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runner  # noqa: E402

CONFIGS = {  # name: train.py arguments
    "baseline": [],
    "noisytwins": ["--plugins=noisytwins"],
    # For --cfg=tiny (w_dim 64): lambda_NT scaled by 512 / w_dim, as docs/plugins.md says, to keep the term's size.
    "noisytwins-w64": ["--plugins=noisytwins", "--nt-lambda=0.08"],
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
TABLE = [("fd_cls_many", "FD many", 1), ("fd_cls_medium", "FD medium", 1), ("fd_cls_few", "FD few", 1),
         ("kd_cls_few", "KD few", 2), ("class_consistency_many", "cons. many", 3), ("class_consistency_few", "cons. few", 3),
         ("div_cls_ratio_many", "div ratio many", 2), ("div_cls_ratio_few", "div ratio few", 2), ("ifd_cls", "iFD", 1), ("w_spread_few_over_many", "w spread few/many", 3),
         ("lowres_class_dependence", "8px class dep.", 3)]
STATS_TABLE = [("loss_D_c", "D_c loss"), ("loss_D_uc", "D_uc loss"), ("loss_G_c", "G_c loss"), ("loss_G_uc", "G_uc loss"),
               ("barlow_invariance", "Barlow invariance"), ("barlow_redundancy", "Barlow redundancy")]
PLOTS = [("fd_cls_few", "FD_cls few"), ("fd_cls_medium", "FD_cls medium"), ("fd_cls_many", "FD_cls many"),
         ("kd_cls_few", "KD_cls few"), ("class_consistency_few", "consistency few"), ("class_consistency_many", "consistency many"),
         ("div_cls_ratio_few", "diversity few / reals'"), ("div_cls_ratio_many", "diversity many / reals'"),
         ("ifd_cls", "intra-class FD"), ("w_spread_few_over_many", "w spread few / many")]
MECHANISM_PLOTS = [("lowres_class_dependence", "8x8 image: var over classes / var over z"),
                   ("barlow_invariance", "Barlow invariance term (per tick)"),
                   ("loss_D_c", "D loss, conditional (full res)"), ("loss_D_uc", "D loss, unconditional (8x8)")]


# ----------------------------------------------------------------------------- data and length


SOURCES = {"fashion-mnist": "fashion32.zip", "digits:16": "digits16.zip"}  # dataset_tool.py --source: file name


def prepare_data(out, imf, source="fashion-mnist"):
    data = os.path.join(out, SOURCES[source])
    label_file = f"lt_{imf:g}.json"
    if not os.path.exists(data):
        runner.sh([sys.executable, "dataset_tool.py", f"--source={source}", f"--dest={data}"],
                  os.path.join(out, "dataset_tool.txt"))
    with zipfile.ZipFile(data) as z:
        has_lt = label_file in z.namelist()
    if not has_lt:
        runner.sh([sys.executable, "lt_dataset.py", f"--source={data}", f"--imf={imf:g}", "--seed=0"],
                  os.path.join(out, "lt_dataset.txt"))
    # Train (or find in the cache) the classifier once here, so that parallel evaluations do not race to make it.
    runner.sh([sys.executable, "-m", "metrics.offline_classifier", f"--data={data}", f"--label-file={label_file}"],
              os.path.join(out, "classifier.txt"))
    return data, label_file


def train_args(data, label_file, config, kimg, points, cfg, aug="ada"):
    return [f"--data={data}", "--cond=1", f"--subset={label_file}", f"--cfg={cfg}", f"--kimg={kimg:g}", f"--aug={aug}",
            f"--tick={kimg / (points - 1):g}", "--snap=1", "--metrics=none", "--workers=0", "--tensorboard=0",
            *CONFIGS[config]]


def eval_args(run_dir, num_gen):
    return [sys.executable, os.path.abspath(__file__), "evaluate", run_dir, f"--num-gen={num_gen}"]


def median_sec_per_kimg(logfile):
    import re

    values = [float(m) for m in re.findall(r"sec/kimg\s+([\d.]+)", open(logfile).read())]
    if len(values) < 2:
        raise click.ClickException(f"probe training printed no timing; see {logfile}")
    return float(np.median(values[1:]))  # Tick 0 includes start-up.


def probe(out, data, label_file, parallel, cfg, num_gen):
    """{sec_per_kimg of the slowest config with `parallel` trainings side by side, eval_s per evaluation,
    startup_s of a training}; cached in out/probe.json."""
    path = os.path.join(out, "probe.json")
    if os.path.exists(path):
        return json.load(open(path))
    pool = runner.Pool(parallel)
    logs = []
    start = time.time()
    for i in range(parallel):
        outdir = os.path.join(out, "probe", str(i))
        logs.append(os.path.join(out, "probe", f"train{i}.txt"))
        os.makedirs(outdir, exist_ok=True)
        pool.submit([sys.executable, "train.py", f"--outdir={outdir}", f"--seed={i}",
                     *train_args(data, label_file, SLOWEST, kimg=1.5, points=4, cfg=cfg)], logs[-1])
    pool.run()
    train_s = time.time() - start
    sec_per_kimg = max(median_sec_per_kimg(f) for f in logs)
    # The first evaluation also computes the reference features (cached for all later ones): not timed.
    pool.submit(eval_args(runner.run_dir_of(os.path.join(out, "probe", "0")), num_gen) + ["--last-only"],
                os.path.join(out, "probe", "eval0.txt"))
    pool.run()
    start = time.time()
    pool.submit(eval_args(runner.run_dir_of(os.path.join(out, "probe", "1")), num_gen) + ["--last-only"],
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


def mechanism_checks(G, bands, seed=0, per_class=256):
    """w spread per class and the class dependence of the LOWRES-pixel image, for G (G_ema, eval mode)."""
    import torch

    c_dim = G.c_dim
    z = torch.randn([per_class, G.z_dim], generator=torch.Generator().manual_seed(seed))
    spreads = {}
    lows = []
    with torch.no_grad():
        for k in range(c_dim):
            c = torch.nn.functional.one_hot(torch.full([per_class], k), c_dim).float()
            capture = {}
            G.mapping(z, c, capture=capture)
            spreads[k] = float(capture["w_streams"]["w"].std(dim=0).square().mean().sqrt())  # RMS of per-dim std
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


def read_bands(data, label_file):
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
    import dnnlib

    options = json.load(open(os.path.join(run_dir, "training_options.json")))
    data, label_file = options["training_set_kwargs"]["path"], options["training_set_kwargs"]["label_file"]
    bands = read_bands(data, label_file)

    def one(snap):
        G = runner.load_G(snap)
        kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data, label_file=label_file,
                                 use_labels=True, resolution=G.img_resolution, xflip=False)
        return dict(runner.calc_metrics(G, METRICS, kwargs, num_gen), **mechanism_checks(G, bands), num_gen=num_gen)

    runner.evaluate_run(run_dir, one, tag=f"n{num_gen}", last_only=last_only)


# ----------------------------------------------------------------------------- report


def stats_series(out, config, seeds):
    """{name: [(kimg, aggregate over seeds)]} of the tick means of STATS in each seed's stats.jsonl."""
    per_seed = []
    for seed in seeds:
        run_dir = runner.run_dir_of(os.path.join(out, "runs", config, f"seed{seed}"))
        if run_dir is None or not os.path.exists(os.path.join(run_dir, "stats.jsonl")):
            continue
        rows = [json.loads(line) for line in open(os.path.join(run_dir, "stats.jsonl"))]
        per_seed.append([dict(kimg=row["Progress/kimg"]["mean"],
                              **{name: row[key]["mean"] for key, name in STATS.items() if row.get(key, {}).get("num", 0) > 0})
                         for row in rows])
    if not per_seed:
        return {}
    n = min(len(s) for s in per_seed)
    series = {}
    for name in STATS.values():
        points = [(float(np.mean([s[i]["kimg"] for s in per_seed])), runner.aggregate([s[i].get(name) for s in per_seed]))
                  for i in range(n)]
        if any(a is not None for _, a in points):
            series[name] = points
    return series


def stats_table(results):
    """Markdown table of the last tick's means (the loop's per-tick statistics)."""
    lines = ["| config | " + " | ".join(label for _, label in STATS_TABLE) + " |", "|---" * (len(STATS_TABLE) + 1) + "|"]
    for config, curves in results.items():
        cells = []
        for key, _ in STATS_TABLE:
            last = [a for _, a in curves.get(key, []) if a is not None][-1:]
            cells.append(runner.fmt(dict(mean=float(np.mean([a["mean"] for a in last])),
                                         spread=float(np.mean([a["spread"] for a in last])))) if last else "-")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@cli.command()
@click.option("--out", default="experiments/longtail", show_default=True, help="The run command's --out")
@click.option("--seeds", type=int, default=2, show_default=True)
def report(out, seeds):
    """Aggregate the evaluated runs into results.json, results.md, curves.png and mechanisms.png."""
    import dnnlib

    out = os.path.abspath(out)
    results = runner.collect_curves(out, list(CONFIGS), range(seeds))
    if not results:
        raise click.ClickException(f"{out}: no evaluated runs (run the 'run' command first)")
    for config, curves in results.items():
        curves.update(stats_series(out, config, range(seeds)))
    meta = json.load(open(os.path.join(out, "run.json"))) if os.path.exists(os.path.join(out, "run.json")) else {}
    dnnlib.util.atomic_write_text(os.path.join(out, "results.json"), json.dumps(dict(meta=meta, results=results), indent=1))
    runner.plot_curves(results, os.path.join(out, "curves.png"), PLOTS)
    runner.plot_curves(results, os.path.join(out, "mechanisms.png"), MECHANISM_PLOTS, cols=2)
    text = (f"Final snapshot (kimg {meta.get('kimg', '?')}), mean ± half-range over {seeds} seeds:\n\n"
            f"{runner.final_table(results, TABLE)}\n\nTraining statistics, mean over the last tick:\n\n{stats_table(results)}\n")
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
@click.option("--source", type=click.Choice(list(SOURCES)), default="fashion-mnist", show_default=True,
              help="dataset_tool.py --source of the balanced dataset (Fashion-MNIST 32 px or scikit-learn's digits 16 px)")
@click.option("--aug", type=click.Choice(["ada", "noaug"]), default="ada", show_default=True, help="train.py --aug")
@click.pass_context
def run(ctx, out, budget_min, kimg, seeds, configs, points, parallel, num_gen, imf, cfg, source, aug):
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
    data, label_file = prepare_data(out, imf, source)
    timing = None
    if kimg is None:
        timing = probe(out, data, label_file, parallel, cfg, num_gen)
        kimg = pick_kimg(budget_min * 60 - (time.time() - start), timing, len(configs) * seeds, parallel, points)
        runner.log(f"probe: {timing['sec_per_kimg']:.1f} s/kimg with {parallel} trainings side by side, "
                   f"{timing['eval_s']:.0f} s per evaluation; {kimg:g} kimg per run fits {budget_min:g} min")
    meta = dict(command="python experiments/longtail.py run " + " ".join(sys.argv[2:]), kimg=kimg, seeds=seeds,
                configs=configs, points=points, parallel=parallel, num_gen=num_gen, imf=imf, cfg=cfg, source=source, aug=aug,
                timing=timing,
                machine=f"{os.cpu_count()} CPU cores", started=time.strftime("%Y-%m-%d %H:%M"))
    json.dump(meta, open(os.path.join(out, "run.json"), "w"), indent=2)
    pool = runner.Pool(parallel)
    runs = [(config, seed, train_args(data, label_file, config, kimg, points, cfg, aug)) for seed in range(seeds)
            for config in configs]
    runner.schedule_runs(pool, out, runs, kimg, lambda run_dir: eval_args(run_dir, num_gen))
    pool.run()
    meta["minutes"] = (time.time() - start) / 60
    json.dump(meta, open(os.path.join(out, "run.json"), "w"), indent=2)
    ctx.invoke(report, out=out, seeds=seeds)
    runner.log(f"done in {meta['minutes']:.0f} min")


if __name__ == "__main__":
    cli()
