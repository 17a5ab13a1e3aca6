"""Mode collapse on stacked digits: an unconditional baseline vs the self-conditioned GAN (CPU).

  python experiments/selfcond_stacked.py run --out=experiments/stacked --kimg=30

Steps (each skipped when its output exists):
1. stacked digits (dataset_tool.py --source=stacked-digits: 25 000 RGB images at 16 px whose channels are
   three random scikit-learn digits, 1000 modes), and the mode classifier: the project's offline classifier
   trained on the 1-channel digits, applied to each channel (metrics/mode_coverage.py).
2. train both configurations (no labels, tiny preset, no augmentation) with every seed; selfcond with
   --sc-k clusters of --sc-nimgs images, re-clustered about --reclusters times over the run.
3. evaluate every snapshot: modes (of 1000) covered by --num-gen samples and the reverse KL to uniform.
4. report: mean and half-range over seeds (results.md) and curves (curves.png).
"""

import json
import os
import sys

import click

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runner  # noqa: E402

CONFIGS = ("unconditional", "selfcond")
COLUMNS = [("modes", "modes (of 1000)", 0), ("reverse_kl", "reverse KL (log10)", 3)]


def prepare(out, count):
    data = os.path.join(out, "stacked16.zip")
    if not os.path.exists(data):
        runner.sh([sys.executable, "dataset_tool.py", f"--source=stacked-digits:{count}", f"--dest={data}"],
                  os.path.join(out, "dataset_tool.txt"))
    digits = os.path.join(out, "digits16.zip")
    if not os.path.exists(digits):
        runner.sh([sys.executable, "dataset_tool.py", "--source=digits:16", f"--dest={digits}"],
                  os.path.join(out, "digits_tool.txt"))
    classifier = os.path.join(out, "digits16-cnn.pt")
    if not os.path.exists(classifier):
        runner.sh([sys.executable, "-m", "metrics.offline_classifier", f"--data={digits}", f"--out={classifier}"],
                  os.path.join(out, "classifier.txt"))
    return data, classifier


@click.group()
def cli():
    pass


@cli.command()
@click.argument("run_dir")
@click.option("--classifier", required=True, help="1-channel digit classifier (TorchScript + .json)")
@click.option("--num-gen", type=int, default=10000, show_default=True)
def evaluate(run_dir, classifier, num_gen):
    """modes and reverse_kl of every snapshot of RUN_DIR, into RUN_DIR/curves.json."""
    import dnnlib

    options = json.load(open(os.path.join(run_dir, "training_options.json")))
    data = options["training_set_kwargs"]["path"]

    def one(snap):
        G = runner.load_G(snap)
        kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data, use_labels=False,
                                 resolution=G.img_resolution, xflip=False)
        return runner.calc_metrics(G, ["modes"], kwargs, num_gen, classifier=classifier)

    runner.evaluate_run(run_dir, one, tag=f"n{num_gen}")


@cli.command()
@click.option("--out", default="experiments/stacked", show_default=True)
@click.option("--seeds", type=int, default=2, show_default=True)
def report(out, seeds):
    """Table and curves of the evaluated runs."""
    print(runner.write_report(os.path.abspath(out), CONFIGS, seeds, COLUMNS, lambda m: (
        f"`{m['command']}` ({m['minutes']:.0f} min, {m['machine']}): {m['kimg']:g} kimg, selfcond k={m['k']} on "
        f"{m['nimgs']} images re-clustered every {m['recluster_kimg']:g} kimg; {m['num_gen']} samples"), cols=2))


@cli.command()
@click.option("--out", default="experiments/stacked", show_default=True)
@click.option("--kimg", type=int, default=30, show_default=True, help="Training length of every run")
@click.option("--count", type=int, default=25000, show_default=True, help="Stacked-digit images")
@click.option("--k", "k", type=int, default=100, show_default=True, help="selfcond clusters")
@click.option("--nimgs", type=int, default=5000, show_default=True, help="selfcond clustering set")
@click.option("--reclusters", type=int, default=6, show_default=True, help="Re-clusterings over the run")
@click.option("--seeds", type=int, default=2, show_default=True)
@click.option("--points", type=int, default=3, show_default=True)
@click.option("--parallel", type=int, default=2, show_default=True)
@click.option("--num-gen", type=int, default=10000, show_default=True)
@click.pass_context
def run(ctx, out, kimg, count, k, nimgs, reclusters, seeds, points, parallel, num_gen):
    """Prepare, train, evaluate, report."""
    if kimg % (points - 1):
        raise click.BadParameter(f"must be a multiple of --points - 1 = {points - 1}", param_hint="--kimg")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    data, classifier = prepare(out, count)
    recluster_kimg = kimg / (reclusters + 1)
    common = [f"--data={data}", "--cfg=tiny", f"--kimg={kimg}", f"--tick={kimg // (points - 1)}", "--snap=1",
              "--metrics=none", "--workers=0", "--tensorboard=0", "--aug=noaug"]
    extra = {"unconditional": [], "selfcond": ["--plugins=selfcond", f"--sc-k={k}", f"--sc-nimgs={nimgs}",
                                               f"--sc-recluster-kimg={recluster_kimg:g}"]}
    runs = [(name, seed, common + extra[name]) for seed in range(seeds) for name in CONFIGS]
    meta = dict(command="python experiments/selfcond_stacked.py run " + " ".join(sys.argv[2:]), kimg=kimg, k=k,
                nimgs=nimgs, recluster_kimg=recluster_kimg, seeds=seeds, num_gen=num_gen)
    runner.run_experiment(out, runs, kimg, parallel, lambda run_dir: [
        sys.executable, os.path.abspath(__file__), "evaluate", run_dir, f"--classifier={classifier}",
        f"--num-gen={num_gen}"], meta)
    ctx.invoke(report, out=out, seeds=seeds)


if __name__ == "__main__":
    cli()
