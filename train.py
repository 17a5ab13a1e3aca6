"""Train a StyleGAN2-ADA network, with NVIDIA stylegan2-ada-pytorch's flags plus plugins.

  python train.py --outdir=training-runs --data=datasets/digits32.zip --cond=1 --cfg=tiny --kimg=10
  python train.py --plugins=noisytwins,utlo --help      # lists the plugins' options too
  python train.py --list-plugins
"""

import json
import os
import re
import sys
import tempfile

import click

import dnnlib
from plugins import PluginError
from plugins.host import PluginHost, available_plugins, load_plugin_object, parse_plugin_list
from training.training_config import UserError, build_config

# ----------------------------------------------------------------------------- launching


def next_run_dir(outdir, desc):
    prev_run_dirs = []
    if os.path.isdir(outdir):
        prev_run_dirs = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))]
    prev_run_ids = [re.match(r"^\d+", x) for x in prev_run_dirs]
    prev_run_ids = [int(x.group()) for x in prev_run_ids if x is not None]
    cur_run_id = max(prev_run_ids, default=-1) + 1
    return os.path.join(outdir, f"{cur_run_id:05d}-{desc}")


def launch_training(c, host, desc, outdir, dry_run):
    dnnlib.util.Logger(should_flush=True)
    run_dir = next_run_dir(outdir, desc)
    assert not os.path.exists(run_dir)
    c.run_dir = run_dir

    print()
    print("Training options:")
    print(json.dumps(c, indent=2))
    print()
    print(f"Output directory:   {run_dir}")
    print(f"Training data:      {c.training_set_kwargs.path}")
    print(f"Training duration:  {c.total_kimg} kimg")
    print(f"Number of GPUs:     {c.num_gpus}")
    print(f"Number of images:   {c.training_set_kwargs.max_size}")
    print(f"Image resolution:   {c.training_set_kwargs.resolution}")
    print(f"Conditional model:  {c.training_set_kwargs.use_labels}")
    print(f"Dataset x-flips:    {c.training_set_kwargs.xflip}")
    print(f"Plugins:            {', '.join(host.plugins) or 'none'}")
    print()
    if dry_run:
        print("Dry run; exiting.")
        return None

    print("Creating output directory...")
    os.makedirs(run_dir)
    from training import training_loop

    training_loop.write_training_options(run_dir, c)
    dnnlib.util.Logger(file_name=os.path.join(run_dir, "log.txt"), file_mode="a", should_flush=True)
    with tempfile.TemporaryDirectory():
        loop_kwargs = {k: v for k, v in c.items() if k not in ("plugins",)}
        return training_loop.training_loop(rank=0, host=host, **loop_kwargs)


# ----------------------------------------------------------------------------- command line

CORE_OPTIONS = [
    # General options.
    click.Option(["--outdir"], help="Where to save the results", required=True, metavar="DIR"),
    click.Option(["--gpus"], help="Number of GPUs to use [default: 1]", type=int, metavar="INT"),
    click.Option(["--snap"], help="Snapshot interval [default: 50 ticks]", type=int, metavar="INT"),
    click.Option(["--metrics"], help='Comma-separated list or "none" [default: fid50k_full]', type=str),
    click.Option(["--seed"], help="Random seed [default: 0]", type=int, metavar="INT"),
    click.Option(["-n", "--dry-run"], help="Print training options and exit", is_flag=True),
    click.Option(["--device"], help="cpu, cuda, cuda:N, mps or auto [default: auto]", type=str, metavar="DEV"),
    # Dataset.
    click.Option(["--data"], help="Training data (directory or zip)", metavar="PATH", required=True),
    click.Option(["--cond"], help="Train conditional model based on dataset labels [default: false]", type=bool, metavar="BOOL"),
    click.Option(["--subset"], help="Train with only N images (seeded), or the images listed in a label-subset JSON "
                                    "(e.g. lt_dataset.py output) [default: all]", type=str, metavar="INT|JSON"),
    click.Option(["--mirror"], help="Enable dataset x-flips [default: false]", type=bool, metavar="BOOL"),
    # Base config.
    click.Option(["--cfg"], help="Base config [default: auto]",
                 type=click.Choice(["auto", "stylegan2", "paper256", "paper512", "paper1024", "cifar", "tiny"])),
    click.Option(["--gamma"], help="Override R1 gamma", type=float),
    click.Option(["--kimg"], help="Override training duration (total kimg of the run, also when resuming)", type=float, metavar="KIMG"),
    click.Option(["--batch"], help="Override batch size", type=int, metavar="INT"),
    click.Option(["--batch-gpu"], help="Samples per GPU per step (gradient accumulation) [default: batch/gpus]", type=int, metavar="INT"),
    click.Option(["--fake-labels"], help="Labels of generated images [default: dataset]", type=click.Choice(["dataset", "uniform"])),
    click.Option(["--tick"], help="Progress print / snapshot tick length in kimg [default: 4]", type=float, metavar="KIMG"),
    # Discriminator augmentation.
    click.Option(["--aug"], help="Augmentation mode [default: ada]", type=click.Choice(["noaug", "ada", "fixed"])),
    click.Option(["--p"], help="Augmentation probability for --aug=fixed", type=float),
    click.Option(["--target"], help="ADA target value for --aug=ada", type=float),
    click.Option(["--augpipe"], help="Augmentation pipeline [default: bgc]",
                 type=click.Choice(["blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn", "bgcfnc"])),
    # Transfer learning.
    click.Option(["--resume"], help="Resume from a run directory, snapshot pickle or URL (or ffhq256, ...)", metavar="PKL"),
    click.Option(["--freezed"], help="Freeze-D [default: 0 layers]", type=int, metavar="INT"),
    # Performance options.
    click.Option(["--fp32"], help="Disable mixed-precision training", type=bool, metavar="BOOL"),
    click.Option(["--nhwc"], help="Use NHWC memory format with FP16", type=bool, metavar="BOOL"),
    click.Option(["--nobench"], help="Disable cuDNN benchmarking", type=bool, metavar="BOOL"),
    click.Option(["--allow-tf32"], help="Allow PyTorch to use TF32 internally", type=bool, metavar="BOOL"),
    click.Option(["--workers"], help="Override number of DataLoader workers [default: min(3, cores - 1)]", type=int, metavar="INT"),
    # Logging.
    click.Option(["--tensorboard"], help="Write TensorBoard events when tensorboard is installed [default: true]", type=bool, metavar="BOOL"),
    click.Option(["--wandb"], help="Log to Weights & Biases", is_flag=True),
    click.Option(["--wandb-project"], help="W&B project name [default: gan-plugins]", type=str),
    click.Option(["--wandb-name"], help="W&B run name [default: the run directory name]", type=str),
    click.Option(["--wandb-mode"], help="W&B mode (online, offline) [default: WANDB_MODE or online]", type=click.Choice(["online", "offline"])),
    # Plugins (parsed before the command is built; listed here for --help).
    click.Option(["--plugins"], help="Comma-separated plugins to enable (built-in names, entry points, modules or .py files)", type=str),
]


def build_command(host):
    option_specs = host.option_specs()
    plugin_dests = {}
    params = list(CORE_OPTIONS)
    for name, options in option_specs.items():
        for opt in options:
            plugin_dests[opt.name] = name
            params.append(opt)

    def callback(**kwargs):
        values_by_plugin = {name: {} for name in host.plugins}
        core = dnnlib.EasyDict()
        for key, value in kwargs.items():
            if key in plugin_dests:
                values_by_plugin[plugin_dests[key]][key] = value
            else:
                core[key] = value
        host.set_options(values_by_plugin)
        run(core, host)

    return click.Command("train.py", params=params, callback=callback,
                         help="Train a GAN using the techniques described in 'Training Generative Adversarial "
                              "Networks with Limited Data', with plugins for class-conditional and long-tailed methods.")


def run(opts, host):
    try:
        c, desc = build_config(opts, host)
    except (UserError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        launch_training(c=c, host=host, desc=desc, outdir=os.path.expanduser(opts.outdir), dry_run=opts.dry_run)
    except (UserError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None


def _prescan(argv, flag):
    """Values of --flag=X / --flag X in argv."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def _check_orphan_options(argv, enabled):
    """Error for an option of a plugin that is installed but not enabled."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    for name in available_plugins():
        if name in enabled:
            continue
        try:
            _n, obj, _src = load_plugin_object(name)
        except Exception:
            continue
        fn = getattr(obj, "gan_add_options", None)
        for opt in (fn() if fn is not None else []):
            for flag in opt.opts + opt.secondary_opts:
                if flag in given:
                    raise PluginError(f"option {flag} belongs to plugin {name!r}, which is not enabled; "
                                      f"add --plugins={name} (or drop {flag})")


def list_plugins():
    for name, source in sorted(available_plugins().items()):
        try:
            host = PluginHost.create([name])
            (_n, version, src, hooks), = host.describe()
            print(f"{name:<14s} {version:<8s} {src}\n    hooks: {', '.join(hooks) or '-'}")
        except Exception as exc:  # A broken third-party plugin must not hide the others.
            print(f"{name:<14s} ?        {source}\n    cannot be loaded: {exc}")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-plugins" in argv:
        list_plugins()
        return 0
    try:
        names = []
        for value in _prescan(argv, "--plugins"):
            names += parse_plugin_list(value)
        host = PluginHost.create(names)
        _check_orphan_options(argv, set(host.plugins))
    except PluginError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 2
    return build_command(host).main(args=argv, prog_name="train.py", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
