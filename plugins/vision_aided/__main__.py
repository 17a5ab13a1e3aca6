"""python -m plugins.vision_aided probe|progressive|export-backbone: choose backbones for the vision-aided
discriminators, or make one offline from a labelled dataset."""

import os

import click


@click.group()
def cli():
    """Backbone selection for --plugins=vision_aided (see plugins/vision_aided/probe.py)."""


@cli.command("export-backbone")
@click.option("--data", required=True, help="Labelled dataset whose offline classifier becomes the backbone")
@click.option("--out", required=True, help="Where to write the TorchScript backbone (.pt)")
@click.option("--label-file", default=None, help="Train on these labelled images instead (e.g. images the GAN does not see)")
@click.option("--seed", type=int, default=0, show_default=True)
def export_backbone(data, out, label_file, seed):
    """Export the project's offline classifier of DATA as a TorchScript backbone (no download) and print the options
    that train with it."""
    from metrics.metric_utils import MetricError

    from .export import export_classifier_backbone

    try:
        path, info = export_classifier_backbone(data, out, label_file=label_file, seed=seed)
    except (MetricError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {path} ({info.get('name')}, test accuracy {info.get('test_accuracy', float('nan')):.4f})")
    click.echo(f"Use: --plugins=vision_aided --va-backbones=torchscript:{os.path.abspath(path)}")


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()]


@cli.command()
@click.option("--network", required=True, help="Snapshot pickle whose G_ema makes the fakes")
@click.option("--data", required=True, help="Training set (directory or ZIP)")
@click.option("--candidates", default="clip,dino,swin,vgg", show_default=True,
              help="Backbones to score, comma-separated (torchscript:PATH too)")
@click.option("--used", default="", help="Backbones already in the ensemble, comma-separated (never suggested)")
@click.option("--va-weights", default=None, help="Weights files, name=PATH[,name=PATH]")
@click.option("--va-aug", type=click.Choice(["ada", "diffaug", "none"]), default="ada", show_default=True,
              help="The augmentation you will train with (diffaug implies the _s loss)")
@click.option("--num", type=int, default=10000, show_default=True, help="Real and fake images each (capped at the dataset)")
@click.option("--va-random-init", is_flag=True, help="Random backbones where no weights are found (tests only)")
@click.option("--device", default="cpu", show_default=True)
def probe(network, data, candidates, used, va_weights, va_aug, num, va_random_init, device):
    """Linear-probe accuracy of real vs fake features per candidate, and the suggested options."""
    from plugins import PluginError

    from .probe import run_probe

    try:
        accuracies, choice = run_probe(network, data, _names(candidates), weights=va_weights, num=num,
                                       used=_names(used), aug=va_aug, random_init=va_random_init, device=device,
                                       log=lambda *a: None)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'backbone':<28s}{'accuracy':>10s}")
    for name, acc in sorted(accuracies.items(), key=lambda kv: -kv[1]):
        click.echo(f"{name:<28s}{acc:>10.4f}")
    if choice is None:
        click.echo("Every candidate is already used.")
        return
    ensemble = _names(used) + [choice[0]]
    click.echo(f"Suggested: --plugins=vision_aided --va-backbones={'+'.join(ensemble)} --va-loss=<losses of the used "
               f"backbones>+{choice[1]}" if used else
               f"Suggested: --plugins=vision_aided --va-backbones={choice[0]} --va-loss={choice[1]}")


@cli.command(context_settings=dict(ignore_unknown_options=True))
@click.option("--outdir", required=True, help="Where the stages' run directories go")
@click.option("--data", required=True, help="Training set")
@click.option("--stages", default="500,4000,1000,1000", show_default=True,
              help="kimg of the baseline, then of each stage (one backbone added per stage)")
@click.option("--candidates", default="clip,dino,swin", show_default=True, help="Backbones, in no particular order")
@click.option("--metric", default="fid50k_full", show_default=True, help="Metric that picks each stage's best snapshot")
@click.option("--va-weights", default=None, help="Weights files, name=PATH[,name=PATH]")
@click.option("--va-aug", type=click.Choice(["ada", "diffaug", "none"]), default="ada", show_default=True)
@click.option("--va-random-init", is_flag=True, help="Random backbones where no weights are found (tests only)")
@click.option("--num", type=int, default=10000, show_default=True, help="Probe images (real and fake each)")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def progressive(outdir, data, stages, candidates, metric, va_weights, va_aug, va_random_init, num, train_args):
    """The official progressive schedule; TRAIN_ARGS (after --) go to every train.py call."""
    from .probe import progressive as drive

    kimgs = [float(s) for s in stages.split(",")]
    if len(kimgs) < 2 or min(kimgs) <= 0:
        raise click.BadParameter("give the baseline's kimg and at least one stage, all positive", param_hint="--stages")
    final = drive(outdir, data, [f"{k:g}" for k in kimgs], _names(candidates), metric, list(train_args),
                  weights=va_weights, aug=va_aug, random_init=va_random_init, num=num, log=click.echo)
    click.echo(f"Final run: {final}")


if __name__ == "__main__":
    cli()
