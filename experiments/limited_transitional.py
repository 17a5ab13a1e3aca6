"""Limited data: a conditional baseline vs transitional-cGAN on a few images per class (CPU).

  python experiments/limited_transitional.py run --out=experiments/limited --kimg=30

Steps (each skipped when its output exists):
1. Fashion-MNIST at 32 px (Debian dataset-fashion-mnist; or --source=digits:16, scikit-learn's digits at 16 px)
   with dataset_tool.py, and a label file that keeps
   --per-class images of each class (seeded), in --out.
2. train both configurations with every seed (tiny preset, ADA unless --aug=noaug), snapshots at --points evenly spaced kimg;
   transitional ramps the class in from 20 % to 40 % of the run (as the spec's short-run setting).
3. evaluate every snapshot against the *full* training set (60 000 images, the project's offline classifier):
   fd_cls (Frechet distance in the classifier's features), ifd_cls (intra-class FD), class_consistency,
   div_cls (intra-class diversity).
4. report: mean and half-range over seeds, a table (results.md) and curves (curves.png).
"""

import json
import os
import sys

import click
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runner  # noqa: E402

CONFIGS = ("conditional", "transitional")
METRICS = ["fd_cls", "ifd_cls", "class_consistency", "div_cls"]
COLUMNS = [("fd_cls", "FD_cls", 1), ("ifd_cls", "iFD_cls", 1), ("class_consistency", "consistency", 3),
           ("div_cls", "diversity", 2), ("div_cls_ratio", "diversity / reals'", 3)]


SOURCES = {"fashion-mnist": "fashion32.zip", "digits:16": "digits16.zip"}  # dataset_tool.py --source: file name


def prepare(out, per_class, seed=0, source="fashion-mnist"):
    data = os.path.join(out, SOURCES[source])
    if not os.path.exists(data):
        runner.sh([sys.executable, "dataset_tool.py", f"--source={source}", f"--dest={data}"],
                  os.path.join(out, "dataset_tool.txt"))
    subset = os.path.join(out, f"per_class_{per_class}.json")
    if not os.path.exists(subset):
        import zipfile

        import dnnlib
        with zipfile.ZipFile(data) as z:
            labels = json.loads(z.read("dataset.json"))["labels"]
        rng = np.random.default_rng(seed)
        kept = []
        for k in sorted({label for _, label in labels}):
            names = sorted(name for name, label in labels if label == k)
            kept += [[name, k] for name in rng.permutation(names)[:per_class].tolist()]
        dnnlib.util.atomic_write_text(subset, json.dumps({"labels": sorted(kept)}))
    return data, subset


@click.group()
def cli():
    pass


@cli.command()
@click.argument("run_dir")
@click.option("--num-gen", type=int, default=2000, show_default=True)
def evaluate(run_dir, num_gen):
    """Metrics of every snapshot of RUN_DIR against the full dataset, into RUN_DIR/curves.json."""
    runner.evaluate_against_full_dataset(run_dir, METRICS, num_gen)


@cli.command()
@click.option("--out", default="experiments/limited", show_default=True)
@click.option("--seeds", type=int, default=2, show_default=True)
def report(out, seeds):
    """Table and curves of the evaluated runs."""
    print(runner.write_report(os.path.abspath(out), CONFIGS, seeds, COLUMNS, lambda m: (
        f"`{m['command']}` ({m['minutes']:.0f} min, {m['machine']}): {m['per_class']} images per class, "
        f"{m['kimg']:g} kimg, transitional ramp {m['t_start']:g} -> {m['t_end']:g} kimg")))


@cli.command()
@click.option("--out", default="experiments/limited", show_default=True)
@click.option("--kimg", type=int, default=30, show_default=True, help="Training length of every run")
@click.option("--per-class", type=int, default=30, show_default=True, help="Training images per class")
@click.option("--seeds", type=int, default=2, show_default=True)
@click.option("--points", type=int, default=3, show_default=True, help="Snapshots (curve points) per run, kimg 0 included")
@click.option("--parallel", type=int, default=2, show_default=True)
@click.option("--num-gen", type=int, default=2000, show_default=True)
@click.option("--source", type=click.Choice(list(SOURCES)), default="fashion-mnist", show_default=True,
              help="dataset_tool.py --source (Fashion-MNIST 32 px or scikit-learn's digits 16 px)")
@click.option("--aug", type=click.Choice(["ada", "noaug"]), default="ada", show_default=True, help="train.py --aug")
@click.pass_context
def run(ctx, out, kimg, per_class, seeds, points, parallel, num_gen, source, aug):
    """Prepare, train, evaluate, report."""
    if kimg % (points - 1):
        raise click.BadParameter(f"must be a multiple of --points - 1 = {points - 1} (snapshots fall on whole kimg)",
                                 param_hint="--kimg")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    data, subset = prepare(out, per_class, source=source)
    t_start, t_end = 0.2 * kimg, 0.4 * kimg
    common = [f"--data={data}", "--cond=1", f"--subset={subset}", "--cfg=tiny", f"--kimg={kimg}",
              f"--tick={kimg // (points - 1)}", "--snap=1", "--metrics=none", "--workers=0", "--tensorboard=0", f"--aug={aug}"]
    extra = {"conditional": [], "transitional": ["--plugins=transitional", f"--trans-start-kimg={t_start:g}",
                                                 f"--trans-end-kimg={t_end:g}"]}
    runs = [(name, seed, common + extra[name]) for seed in range(seeds) for name in CONFIGS]
    meta = dict(command="python experiments/limited_transitional.py run " + " ".join(sys.argv[2:]), kimg=kimg,
                per_class=per_class, seeds=seeds, t_start=t_start, t_end=t_end, num_gen=num_gen, source=source, aug=aug)
    runner.run_experiment(out, runs, kimg, parallel, lambda run_dir: [
        sys.executable, os.path.abspath(__file__), "evaluate", run_dir, f"--num-gen={num_gen}"], meta)
    ctx.invoke(report, out=out, seeds=seeds)


if __name__ == "__main__":
    cli()
