"""Limited data: baseline vs vision-aided D on 1 000 Fashion-MNIST images at 32 px (CPU, offline).

  python experiments/vision_aided_limited.py run --out=experiments/vision_aided --kimg=30

No pretrained backbone can be downloaded here, so the stand-in is an offline "pretrained" network: the
project's classifier recipe (metrics/offline_classifier.py, SmallCNN) trained with seed 1 on 20 000 Fashion-MNIST
images *outside* the GAN's training subset, saved as TorchScript that returns (two feature maps, the feature
vector): ``--va-backbones=torchscript:PATH``.

Steps (each skipped when its output exists):
1. Fashion-MNIST at 32 px with dataset_tool.py; a label file with the GAN's 1 000 images (100 per class,
   seeded) and the backbone's 20 000 others.
2. the backbone (TorchScript) and its test accuracy.
3. train both configurations with every seed (tiny preset, unconditional, ADA on D); vision_aided warms up
   at 20 % of the run (the spec's experiment setting), ADA on the backbone input.
4. evaluate every snapshot against the full training set (60 000 images) with the metrics' own classifier,
   trained with seed 0 on 90 % of all images: another network than the backbone (other seed, other data),
   so the GAN was not optimised in the space it is measured in: fd_cls and kd_cls (the GAN is unconditional).
5. report: mean and half-range over seeds (results.md, curves.png).
"""

import json
import os
import sys

import click
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import runner  # noqa: E402

CONFIGS = ("baseline", "vision_aided")
METRICS = ["fd_cls", "kd_cls"]
COLUMNS = [("fd_cls", "FD_cls", 1), ("kd_cls", "KD_cls", 3)]


def prepare(out, gan_images=1000, backbone_images=20000, seed=0):
    data = os.path.join(out, "fashion32.zip")
    if not os.path.exists(data):
        runner.sh([sys.executable, "dataset_tool.py", "--source=fashion-mnist", f"--dest={data}"],
                  os.path.join(out, "dataset_tool.txt"))
    subset, outside = os.path.join(out, f"gan_{gan_images}.json"), os.path.join(out, "backbone_images.json")
    if not (os.path.exists(subset) and os.path.exists(outside)):
        import zipfile

        import dnnlib

        with zipfile.ZipFile(data) as z:
            labels = json.loads(z.read("dataset.json"))["labels"]
        rng = np.random.default_rng(seed)
        kept = []
        classes = sorted({label for _, label in labels})
        for k in classes:
            names = sorted(name for name, label in labels if label == k)
            kept += [[name, k] for name in rng.permutation(names)[:gan_images // len(classes)].tolist()]
        chosen = {name for name, _ in kept}
        others = [[name, label] for name, label in labels if name not in chosen]
        others = [others[i] for i in sorted(rng.choice(len(others), backbone_images, replace=False))]
        dnnlib.util.atomic_write_text(subset, json.dumps({"labels": sorted(kept)}))
        dnnlib.util.atomic_write_text(outside, json.dumps({"labels": others}))
    return data, subset, outside


def build_backbone(out, data, outside, seed=1):
    """The offline stand-in backbone: SmallCNN trained on images outside the GAN subset, as TorchScript."""
    path = os.path.join(out, "fmnist-cnn-backbone.pt")
    if os.path.exists(path):
        return path
    import torch

    import dnnlib
    from metrics import offline_classifier as oc

    kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data, use_labels=True,
                             label_file=outside, xflip=False)
    dataset = dnnlib.util.construct_class_by_name(**kwargs)
    images, labels, _index, num_classes = oc.load_labelled_images(dataset, kwargs, seed=seed)
    train, test = oc.split_train_test(labels.numpy(), seed=seed)
    model, _steps = oc.train_classifier(images[train], labels[train], num_classes, seed=seed)
    accuracy = oc.accuracy(model, images[test], labels[test])
    scripted = torch.jit.script(ClassifierBackbone(model))
    dnnlib.util.atomic_write(path, lambda f: torch.jit.save(scripted, f))
    dnnlib.util.atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps(dict(
        test_accuracy=accuracy, train_images=int(len(train)), test_images=int(len(test)), seed=seed)))
    runner.log(f"backbone: SmallCNN, test accuracy {accuracy:.4f} on {len(test)} held-out images -> {path}")
    return path


def ClassifierBackbone(model):  # noqa: N802 - the plugin's class (python -m plugins.vision_aided export-backbone).
    from plugins.vision_aided.export import ClassifierBackbone as Backbone

    return Backbone(model)


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
@click.option("--out", default="experiments/vision_aided", show_default=True)
@click.option("--num-gen", type=int, default=2000, show_default=True)
def crosscheck(out, num_gen):
    """FD of every final snapshot in a second, differently shaped detector (SmallCNN of width 16, seed 2, all
    60 000 images), written to OUT/crosscheck.md."""
    import glob

    import torch

    import dnnlib
    from metrics import offline_classifier as oc

    out = os.path.abspath(out)
    data = os.path.join(out, "fashion32.zip")
    path = os.path.join(out, "other-detector-w16.pt")
    kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data, use_labels=True, xflip=False)
    if not os.path.exists(path):
        dataset = dnnlib.util.construct_class_by_name(**kwargs)
        images, labels, _index, num_classes = oc.load_labelled_images(dataset, kwargs, seed=2)
        train, test = oc.split_train_test(labels.numpy(), seed=2)
        model, _ = oc.train_classifier(images[train], labels[train], num_classes, seed=2, width=16)
        runner.log(f"second detector: width 16, test accuracy {oc.accuracy(model, images[test], labels[test]):.4f}")
        scripted = torch.jit.script(model)
        dnnlib.util.atomic_write(path, lambda f: torch.jit.save(scripted, f))
    rows = []
    for config in CONFIGS:
        for run_dir in sorted(glob.glob(os.path.join(out, "runs", config, "seed*", "0*"))):
            snap = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))[-1]
            G = runner.load_G(snap)
            full = dnnlib.EasyDict(kwargs, resolution=G.img_resolution)
            fd = runner.calc_metrics(G, ["fd_cls"], full, num_gen, classifier=path)["fd_cls"]
            rows.append((config, os.path.basename(os.path.dirname(run_dir)), fd))
            runner.log(f"{config} {rows[-1][1]}: FD (width-16 detector) {fd:.1f}")
    lines = ["| config | seed | FD, second detector |", "|---|---|---|"] + [f"| {c} | {s} | {v:.1f} |" for c, s, v in rows]
    dnnlib.util.atomic_write_text(os.path.join(out, "crosscheck.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


@cli.command()
@click.option("--out", default="experiments/vision_aided", show_default=True)
@click.option("--seeds", type=int, default=2, show_default=True)
def report(out, seeds):
    """Table and curves of the evaluated runs."""
    print(runner.write_report(os.path.abspath(out), CONFIGS, seeds, COLUMNS, lambda m: (
        f"`{m['command']}` ({m['minutes']:.0f} min, {m['machine']}): {m['gan_images']} training images, "
        f"{m['kimg']:g} kimg, vision_aided warm-up at {m['warmup']:g} kimg; backbone test accuracy "
        f"{m['backbone_accuracy']:.3f}")))


@cli.command()
@click.option("--out", default="experiments/vision_aided", show_default=True)
@click.option("--kimg", type=int, default=30, show_default=True, help="Training length of every run")
@click.option("--seeds", type=int, default=2, show_default=True)
@click.option("--points", type=int, default=3, show_default=True, help="Snapshots (curve points) per run, kimg 0 included")
@click.option("--parallel", type=int, default=2, show_default=True)
@click.option("--num-gen", type=int, default=2000, show_default=True)
@click.pass_context
def run(ctx, out, kimg, seeds, points, parallel, num_gen):
    """Prepare, train, evaluate, report."""
    if kimg % (points - 1):
        raise click.BadParameter(f"must be a multiple of --points - 1 = {points - 1} (snapshots fall on whole kimg)",
                                 param_hint="--kimg")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    data, subset, outside = prepare(out)
    backbone = build_backbone(out, data, outside)
    warmup = 0.2 * kimg
    common = [f"--data={data}", "--cond=0", f"--subset={subset}", "--cfg=tiny", f"--kimg={kimg}",
              f"--tick={kimg // (points - 1)}", "--snap=1", "--metrics=none", "--workers=0", "--tensorboard=0"]
    extra = {"baseline": [], "vision_aided": ["--plugins=vision_aided", f"--va-backbones=torchscript:{backbone}",
                                              f"--va-warmup-kimg={warmup:g}"]}
    runs = [(name, seed, common + extra[name]) for seed in range(seeds) for name in CONFIGS]
    accuracy = json.load(open(os.path.splitext(backbone)[0] + ".json"))["test_accuracy"]
    meta = dict(command="python experiments/vision_aided_limited.py run " + " ".join(sys.argv[2:]), kimg=kimg,
                gan_images=1000, seeds=seeds, warmup=warmup, num_gen=num_gen, backbone_accuracy=accuracy)
    runner.run_experiment(out, runs, kimg, parallel, lambda run_dir: [
        sys.executable, os.path.abspath(__file__), "evaluate", run_dir, f"--num-gen={num_gen}"], meta)
    ctx.invoke(report, out=out, seeds=seeds)


if __name__ == "__main__":
    cli()
