"""Train a StyleGAN2-ADA network, with NVIDIA stylegan2-ada-pytorch's flags plus plugins.

  python train.py --outdir=training-runs --data=datasets/digits32.zip --cond=1 --cfg=tiny --kimg=10
  python train.py --plugins=noisytwins,utlo --help      # lists the plugins' options too
  python train.py --list-plugins
  python train.py --outdir=training-runs --config=training-runs/00000-.../training_options.json   # replay a run
  python train.py --resume=training-runs/00000-...      # continue a stopped run, in its directory, as recorded
"""

import json
import math
import os
import re
import shutil
import sys


def set_omp_wait_policy(argv):
    """OpenMP threads that spin while they wait turn a shared CPU into a 4-25x slowdown; sleeping (passive) waits
    bound it by the share of the CPU the run loses, but cost 1.5-2x on an idle CPU (bench/contention.sh; figures in
    the README). So --omp-wait=auto (the default) sleeps when the machine is already busy at launch (other
    processes use at least half a core) and keeps OpenMP's spin-then-sleep otherwise; --omp-wait=passive|active or
    $OMP_WAIT_POLICY decide instead. Set before torch loads OpenMP (the imports below); no result depends on it."""
    choice = next((a.split("=", 1)[1] for a in argv if a.startswith("--omp-wait=")), None)
    if choice is None and "--omp-wait" in argv and argv.index("--omp-wait") + 1 < len(argv):
        choice = argv[argv.index("--omp-wait") + 1]
    if choice in ("passive", "active"):
        os.environ["OMP_WAIT_POLICY"] = choice.upper()
    elif "OMP_WAIT_POLICY" not in os.environ and other_cpu_load() >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def other_cpu_load(seconds=0.25):
    """Cores' worth of CPU that other processes use right now (sampled from /proc/stat; the load average would
    also count work that just ended). 0 where /proc/stat does not exist."""
    import time

    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # Total and idle (+ iowait) jiffies.

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    cores = os.cpu_count() or 1
    return cores * (1 - (idle1 - idle0) / max(total1 - total0, 1))


if __name__ == "__main__":
    set_omp_wait_policy(sys.argv[1:])

# The imports below load torch (and its OpenMP) and come after the setting above.
import click  # noqa: E402

import dnnlib  # noqa: E402
from plugins import PluginError  # noqa: E402
from plugins.host import PluginHost, available_plugins, find_plugin, make_plugin_kwargs, parse_plugin_list  # noqa: E402
from torch_utils import distributed  # noqa: E402
from training import checkpoint, run_lock, training_loop, trusted_classes  # noqa: E402
from training.training_config import CFG_SPECS, UserError, build_config  # noqa: E402
from training.training_loop import SetupError  # noqa: E402

# ----------------------------------------------------------------------------- launching


def next_run_dir(outdir, desc):
    prev_run_dirs = []
    if os.path.isdir(outdir):
        prev_run_dirs = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))]
    prev_run_ids = [re.match(r"^\d+", x) for x in prev_run_dirs]
    prev_run_ids = [int(x.group()) for x in prev_run_ids if x is not None]
    cur_run_id = max(prev_run_ids, default=-1) + 1
    return os.path.join(outdir, f"{cur_run_id:05d}-{desc}")


def check_outdir(outdir):
    """--outdir must be (or become) a writable directory; said before anything is created."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise UserError(f"--outdir={outdir} is a file, not a directory; pass a directory")
    existing = outdir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--outdir={outdir}: cannot create a run directory in {existing} (no write permission)")


def allocate_run_dir(outdir, desc):
    """Create the next run directory; two runs started at the same instant get two ids (makedirs is atomic)."""
    for _attempt in range(100):
        run_dir = next_run_dir(outdir, desc)
        try:
            os.makedirs(run_dir)
            return run_dir
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"--outdir={outdir}: cannot create {run_dir}: {exc.strerror or exc}") from None
    raise UserError(f"--outdir={outdir}: could not allocate a run directory (100 ids taken while trying)")


def training_worker(rank, c, log_file="log.txt", host=None):
    """One training process (rank 0 writes the run directory's files and log). `host`: the launcher's plugins,
    when the launcher is this process (plugins are constructed once per process)."""
    logger = None
    if rank == 0 and log_file is not None:  # A spawned worker: log.txt again, from this process.
        logger = dnnlib.util.Logger(file_name=os.path.join(c.run_dir, log_file), file_mode="a", should_flush=True)
    try:
        result = training_loop.training_loop(rank=rank, host=host, **c)
        distributed.shutdown()
        return result
    except BaseException:
        distributed.shutdown(wait=False)  # Other ranks may be gone: no barrier.
        raise
    finally:
        if logger is not None:
            logger.close()


def launch_training(c, desc, outdir, dry_run, host=None, continue_dir=None):
    """One path for one process and --gpus=N: the run directory first (its log.txt records everything from here
    on), then set-up and training in this process or the workers; a run that fails before its first snapshot
    leaves no directory behind. ``continue_dir``: an existing run directory that this run continues (its files
    are appended to)."""
    if continue_dir is None:
        check_outdir(outdir)
    if dry_run:
        print_options(c, continue_dir or next_run_dir(outdir, desc))
        print("Dry run; exiting.")
        return None
    created_outdir = continue_dir is None and not os.path.isdir(outdir)
    c.run_dir = run_dir = continue_dir or allocate_run_dir(outdir, desc)
    outdir = os.path.dirname(run_dir)
    run_lock.acquire(run_dir)  # One run, one writer (training/run_lock.py).
    logger = dnnlib.util.Logger(file_name=os.path.join(run_dir, "log.txt"), file_mode="a", should_flush=True)
    try:
        print_options(c, run_dir)
        training_loop.write_training_options(run_dir, c)
        if c.num_gpus > 1:  # Each worker sets up and trains in its own process.
            print(f"Launching {c.num_gpus} processes...")
            return distributed.spawn(c.num_gpus, training_worker, args=(c,))
        return training_worker(0, c, log_file=None, host=host)
    except BaseException:
        logger.close()  # The error message goes to the console only.
        remove_unfinished_run(run_dir, outdir, created_outdir)
        raise
    finally:
        logger.close()
        run_lock.release(run_dir)


def print_options(c, run_dir):
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
    print(f"Plugins:            {', '.join(c.plugin_kwargs) or 'none'}")
    print()


def remove_unfinished_run(run_dir, outdir, created_outdir):
    """Nothing worth keeping before the first snapshot: leave no half-made run directory behind."""
    if checkpoint.latest_snapshot(run_dir) is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        if created_outdir and os.path.isdir(outdir) and not os.listdir(outdir):
            os.rmdir(outdir)


def load_run_config(path):
    """The config tree of a training_options.json (nested dicts become EasyDicts)."""
    def easy(value):
        if isinstance(value, dict):
            return dnnlib.EasyDict({k: easy(v) for k, v in value.items()})
        if isinstance(value, list):
            return [easy(v) for v in value]
        return value

    try:
        with open(os.path.expanduser(path), "r", encoding="utf-8") as f:
            c = easy(json.load(f))
    except (OSError, ValueError) as exc:
        raise UserError(f"--config={path}: cannot read it as JSON: {exc}") from None
    if not isinstance(c, dict):
        raise UserError(f"--config={path}: not a training_options.json written by train.py (not a JSON object)")
    missing = [k for k in ("training_set_kwargs", "G_kwargs", "D_kwargs", "loss_kwargs", "batch_size") if k not in c]
    if missing:
        raise UserError(f"--config={path}: not a training_options.json written by train.py (no {', '.join(missing)})")
    if "plugin_kwargs" not in c:
        c.plugin_kwargs = dnnlib.EasyDict()
        if c.get("plugins"):
            raise UserError(f"--config={path}: written by an older train.py that kept plugin options outside the "
                            "config; start the run again with its command line instead")
    c.pop("run_dir", None)
    return c


# ----------------------------------------------------------------------------- command line

CORE_OPTIONS = [
    # General options.
    click.Option(["--outdir"], help="Where to save the results (not needed to continue a run: --resume=RUN_DIR)", metavar="DIR"),
    click.Option(["--gpus"], help="Number of GPUs to use [default: 1]", type=int, metavar="INT"),
    click.Option(["--snap"], help="Snapshot interval [default: 50 ticks]", type=int, metavar="INT"),
    click.Option(["--verify-data"], help="Decode every image before training and list the damaged ones [default: false]", type=bool, metavar="BOOL"),
    click.Option(["--skip-bad-images"], help="Replace damaged images by the next good one (with a warning) instead of stopping [default: false]", type=bool, metavar="BOOL"),
    click.Option(["--resume-partial"], help="With --resume: copy only the tensors that fit this configuration (transfer to another resolution; weights only) [default: false]", type=bool, metavar="BOOL"),
    click.Option(["--resume-weights-only"], help="With --resume: take the snapshot's weights alone (optimisers, counters and RNG start fresh) instead of an exact resume [default: false]", type=bool, metavar="BOOL"),
    click.Option(["--state-ticks"], help="Also write a resumable checkpoint every N ticks between snapshots; only the newest is kept [default: off]", type=click.IntRange(min=1), metavar="INT"),
    click.Option(["--state-minutes"], help="Also write a resumable checkpoint when this many minutes passed since the last one (at a tick's end; only the newest is kept) [default: 5 for the CPU presets tiny and tiny512, else off]", type=click.FloatRange(min=0, min_open=True), metavar="MIN"),
    click.Option(["--grid-scale"], help="Enlarge the sample grids' tiles by this whole factor; 1 = raw size [default: auto, tiles >= 64 px]", type=click.IntRange(min=1), metavar="INT"),
    click.Option(["--grid-gap"], help="Pixels between the sample grids' tiles; 0 = none [default: auto]", type=click.IntRange(min=0), metavar="INT"),
    click.Option(["--export-safetensors"], help="Also write G_ema of each snapshot as .safetensors (weights without code) [default: false]", type=bool, metavar="BOOL"),
    click.Option(["--metrics"], help='Comma-separated list or "none" [default: fid50k_full]', type=str),
    click.Option(["--seed"], help="Random seed [default: 0]", type=click.IntRange(0, 2 ** 32 - 1), metavar="INT"),
    click.Option(["-n", "--dry-run"], help="Print training options and exit", is_flag=True),
    click.Option(["--device"], help="cpu, cuda, cuda:N, mps or auto [default: auto]", type=str, metavar="DEV"),
    # Dataset.
    click.Option(["--data"], help="Training data (directory or zip)", metavar="PATH"),
    click.Option(["--cond"], help="Train conditional model based on dataset labels [default: false]", type=bool, metavar="BOOL"),
    click.Option(["--subset"], help="Train with only N images (seeded), or the images listed in a label-subset JSON "
                                    "(e.g. lt_dataset.py output) [default: all]", type=str, metavar="INT|JSON"),
    click.Option(["--mirror"], help="Enable dataset x-flips [default: false]", type=bool, metavar="BOOL"),
    # Base config.
    click.Option(["--cfg"], help="Base config [default: auto]",
                 type=click.Choice(list(CFG_SPECS))),
    click.Option(["--gamma"], help="Override R1 gamma", type=float),
    click.Option(["--kimg"], help="Override training duration (total kimg of the run, also when resuming)", type=float, metavar="KIMG"),
    click.Option(["--batch"], help="Override batch size", type=int, metavar="INT"),
    click.Option(["--batch-gpu"], help="Samples per GPU per step (gradient accumulation) [default: batch/gpus]", type=int, metavar="INT"),
    click.Option(["--cbase"], help="Override the capacity: channels at resolution r are min(cbase / r, cmax) [default: the preset's]", type=click.IntRange(min=1), metavar="INT"),
    click.Option(["--cmax"], help="Override the most channels of any layer [default: the preset's]", type=click.IntRange(min=1), metavar="INT"),
    click.Option(["--glr"], help="Override G's learning rate [default: the preset's]", type=click.FloatRange(min=0, min_open=True), metavar="FLOAT"),
    click.Option(["--dlr"], help="Override D's learning rate [default: the preset's]", type=click.FloatRange(min=0, min_open=True), metavar="FLOAT"),
    click.Option(["--map-lr"], help="Learning-rate multiplier of the mapping networks (G's, and D's label embedding) [default: 0.01, NVIDIA's]", type=click.FloatRange(min=0, min_open=True), metavar="FLOAT"),
    click.Option(["--fake-labels"], help="Labels of generated images [default: dataset]", type=click.Choice(["dataset", "uniform"])),
    click.Option(["--tick"], help="Progress print / snapshot tick length in kimg [default: the preset's, 1 for tiny and tiny512, 4 for the others]", type=float, metavar="KIMG"),
    # Discriminator augmentation.
    click.Option(["--aug"], help="Augmentation mode [default: ada]", type=click.Choice(["noaug", "ada", "fixed"])),
    click.Option(["--p"], help="Augmentation probability for --aug=fixed", type=float),
    click.Option(["--target"], help="ADA target value for --aug=ada", type=float),
    click.Option(["--augpipe"], help="Augmentation pipeline [default: bgc]",
                 type=click.Choice(["blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn", "bgcfnc"])),
    # Transfer learning.
    click.Option(["--resume"], help="Resume from a run directory (alone: continue that run in its directory, as recorded), snapshot pickle or URL (or ffhq256, ...)", metavar="PKL"),
    click.Option(["--freezed"], help="Freeze-D [default: 0 layers]", type=click.IntRange(min=0), metavar="INT"),
    # Performance options.
    click.Option(["--fp32"], help="Disable mixed-precision training (float16 layers and their conv_clamp) [default: true off CUDA, false on CUDA]", type=bool, metavar="BOOL"),
    click.Option(["--fused-adam"], help="Use Adam's fused kernel (the same update, fewer ops) [default: true on the CPU, false on CUDA and MPS]", type=bool, metavar="BOOL"),
    click.Option(["--nhwc"], help="Use NHWC memory format: with FP16 on CUDA (NVIDIA's meaning); in every block on the CPU [default: false on CUDA and MPS, true on the CPU]", type=bool, metavar="BOOL"),
    click.Option(["--nobench"], help="Disable cuDNN benchmarking", type=bool, metavar="BOOL"),
    click.Option(["--allow-tf32"], help="Allow PyTorch to use TF32 internally", type=bool, metavar="BOOL"),
    click.Option(["--omp-wait"], help="How idle CPU threads wait: passive (sleep; robust when the CPU is shared), active (spin; faster on a dedicated CPU) or auto (passive when the machine is busy at launch) [default: auto, or $OMP_WAIT_POLICY]", type=click.Choice(["auto", "passive", "active"])),
    click.Option(["--threads"], help="CPU threads of each training process [default: the cores it may use / processes on this machine]", type=click.IntRange(min=1), metavar="INT"),
    click.Option(["--workers"], help="Override number of DataLoader workers [default: min(3, cores - 1) on CUDA, 0 (the training process) elsewhere]", type=int, metavar="INT"),
    # Logging.
    click.Option(["--tensorboard"], help="Write TensorBoard events when tensorboard is installed [default: true]", type=bool, metavar="BOOL"),
    click.Option(["--wandb"], help="Log to Weights & Biases", is_flag=True),
    click.Option(["--wandb-project"], help="W&B project name [default: gan-plugins]", type=str),
    click.Option(["--wandb-name"], help="W&B run name [default: the run directory name]", type=str),
    click.Option(["--wandb-mode"], help="W&B mode (online, offline) [default: WANDB_MODE or online]", type=click.Choice(["online", "offline"])),
    # Plugins (parsed before the command is built; listed here for --help).
    click.Option(["--plugins"], help="Comma-separated plugins to enable (built-in names, entry points, modules or .py files)", type=str),
    click.Option(["--config"], help="Replay a run: its training_options.json (plugins and their options included)", metavar="JSON"),
    click.Option(["--list-plugins"], help="List the installed plugins, their versions and hooks, and exit", is_flag=True),
]


def plugin_option_table(names):
    """{plugin name: PluginFactory} of the enabled plugins, plus the options of every other available plugin.

    Every available plugin's options are part of the one command line, so argv is parsed once; giving an
    option of a plugin that is not enabled is then an error that names the plugin.
    """
    enabled = {}
    for name in names:
        factory = find_plugin(name)
        enabled[factory.name] = factory
    others = {}
    for name in available_plugins():
        if name in enabled:
            continue
        try:
            others[name] = find_plugin(name)
        except Exception:  # A broken third-party plugin must not stop runs that do not use it.
            continue
    return enabled, others


def check_finite_floats(params, values):
    """Every float option, core or plugin, must be a finite number (nan/inf would train silently to nothing)."""
    for param in params:
        value = values.get(param.name)
        if isinstance(param.type, click.types.FloatParamType) and value is not None and not math.isfinite(value):
            raise click.BadParameter(f"{value!r} is not a finite number", param_hint=param.opts[0])


def build_command(enabled, others):
    params = list(CORE_OPTIONS)
    owner = {}  # click destination -> plugin name
    for name, factory in {**enabled, **others}.items():
        for opt in factory.declared_options():
            if opt.name in owner or any(opt.name == p.name for p in CORE_OPTIONS):
                if name in enabled:
                    raise PluginError(f"plugin {name!r}: option {opt.opts[0]} clashes with another option")
                continue
            owner[opt.name] = name
            opt.hidden = opt.hidden or name not in enabled  # --help after --plugins lists the enabled ones.
            params.append(opt)

    @click.pass_context
    def callback(ctx, **kwargs):
        check_finite_floats(params, kwargs)
        values_by_plugin = {name: {} for name in enabled}
        core = dnnlib.EasyDict()
        for key, value in kwargs.items():
            plugin = owner.get(key)
            if plugin is None:
                core[key] = value
            elif plugin in enabled:
                values_by_plugin[plugin][key] = value
            elif ctx.get_parameter_source(key) == click.core.ParameterSource.COMMANDLINE:
                flag = next(p for p in params if p.name == key).opts[0]
                raise click.UsageError(f"option {flag} belongs to plugin {plugin!r}, which is not enabled; "
                                       f"add --plugins={plugin} (or drop {flag})")
        run(core, enabled, values_by_plugin)

    return click.Command("train.py", params=params, callback=callback,
                         help="Train a GAN using the techniques described in 'Training Generative Adversarial "
                              "Networks with Limited Data', with plugins for class-conditional and long-tailed methods.")


def config_from_options(opts, enabled, values_by_plugin):
    """(config, run description, plugin host) of a new run, or of a replayed one (--config)."""
    if opts.config is not None:
        return replay_config(opts, enabled)
    if opts.data is None:
        raise UserError("Missing option '--data' (or replay a run with --config=RUN_DIR/training_options.json, or "
                        "continue one with --resume=RUN_DIR)")
    if opts.outdir is None:
        raise UserError("Missing option '--outdir' (where the run directory is made)")
    opts.plugin_kwargs = make_plugin_kwargs(enabled.values(), values_by_plugin)
    host = PluginHost.from_config(opts.plugin_kwargs)  # Constructs and validates the plugins with their options.
    c, desc = build_config(opts, host)  # desc names the plugins.
    return c, desc, host


# Options a continued run (--resume=RUN_DIR without --data) may change: its length, checkpoints, evaluation and
# logging. Anything else would make it another run than the one recorded.
CONTINUE_OPTIONS = ("resume", "outdir", "kimg", "snap", "state_ticks", "state_minutes", "metrics", "workers",
                    "tensorboard", "wandb", "wandb_project", "wandb_name", "wandb_mode", "dry_run", "plugins",
                    "resume_weights_only", "device")


def continues_a_run(opts):
    """--resume=RUN_DIR without --data or --config: continue that run with its recorded options."""
    resume = os.path.expanduser(opts.resume or "")
    return opts.data is None and opts.config is None and os.path.isfile(os.path.join(resume, "training_options.json"))


def continue_config(opts, enabled):
    """(config, description, host, directory to continue in or None) of --resume=RUN_DIR alone."""
    run_dir = os.path.normpath(os.path.expanduser(opts.resume))
    ctx = click.get_current_context()
    given = [name for name in ctx.params if name not in CONTINUE_OPTIONS and
             ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UserError(f"--resume={opts.resume} continues the run with its recorded options; {flag} would make it "
                        "another run. Drop it, or start a new run from the snapshot: --resume=SNAPSHOT --data=... "
                        f"--outdir=... {flag}=...")
    path = os.path.join(run_dir, "training_options.json")
    c = load_run_config(path)
    if opts.plugins is not None and list(enabled) != list(c.plugin_kwargs):
        raise UserError(f"--plugins differs from the run's recorded plugins {list(c.plugin_kwargs) or 'none'}; drop it")
    try:
        trusted_classes.check_run_config(c, path, command_line_plugins=set(enabled))
    except trusted_classes.UntrustedInput as exc:
        raise UserError(str(exc)) from None
    if opts.kimg is not None:
        if not opts.kimg > 0:
            raise UserError("--kimg must be positive")
        c.total_kimg = opts.kimg
    if opts.snap is not None:
        c.network_snapshot_ticks = c.image_snapshot_ticks = opts.snap
    for key in ("state_ticks", "state_minutes"):
        if opts.get(key) is not None:
            c[key] = opts[key]
    if opts.metrics is not None:
        from training.training_config import validate_metrics

        c.metrics = validate_metrics(opts)
    if opts.workers is not None:
        c.data_loader_kwargs.num_workers = opts.workers
    if opts.tensorboard is not None:
        c.loggers.tensorboard = opts.tensorboard
    if opts.device is not None:
        c.device = opts.device
    try:
        run_lock.check_not_live(run_dir, "continue it")
        c.resume_pkl, c.resume_state = checkpoint.resolve_resume(run_dir, weights_only=bool(opts.resume_weights_only))
    except (FileNotFoundError, checkpoint.StateError, run_lock.RunLockedError) as exc:
        raise UserError(str(exc)) from None
    host = PluginHost.from_config(c.plugin_kwargs)
    desc = os.path.basename(run_dir).split("-", 1)[-1]
    return c, desc, host, (None if opts.outdir is not None else run_dir)


def run(opts, enabled, values_by_plugin):
    if distributed.env_world_size() > 1:
        return run_under_torchrun(opts, enabled, values_by_plugin)
    try:
        continue_dir = None
        if continues_a_run(opts):
            c, desc, host, continue_dir = continue_config(opts, enabled)
        else:
            c, desc, host = config_from_options(opts, enabled, values_by_plugin)
        outdir = os.path.expanduser(opts.outdir) if opts.outdir is not None else None
        launch_training(c=c, desc=desc, outdir=outdir, dry_run=opts.dry_run, host=host, continue_dir=continue_dir)
    except (UserError, PluginError, SetupError, training_loop.NonFiniteLossError, training_loop.CheckpointWriteError,
            run_lock.RunLockedError) as exc:  # Bad input, a refusal, NaN, a failed write, a live run.
        raise click.ClickException(str(exc)) from None


def run_under_torchrun(opts, enabled, values_by_plugin):
    """Every torchrun process runs train.py: rank 0 builds the config and the run directory, the others receive
    them; then each trains its share."""
    import torch

    wants_cuda = (opts.device or "auto") != "cpu" and torch.cuda.is_available()
    rank, _world = distributed.init("cuda" if wants_cuda else "cpu")
    message = None
    c = host = None
    if rank == 0:
        try:
            continue_dir = None
            if continues_a_run(opts):
                c, desc, host, continue_dir = continue_config(opts, enabled)
            else:
                c, desc, host = config_from_options(opts, enabled, values_by_plugin)
            if continue_dir is None:
                outdir = os.path.expanduser(opts.outdir)
                check_outdir(outdir)
            c.run_dir = continue_dir or allocate_run_dir(outdir, desc)
            run_lock.acquire(c.run_dir)
            training_loop.write_training_options(c.run_dir, c)
            print(f"Output directory:   {c.run_dir} ({c.num_gpus} processes, torchrun)")
        except (UserError, PluginError, SetupError, run_lock.RunLockedError) as exc:
            message = str(exc)
    c, message = distributed.broadcast_object((c, message))
    if message is not None:
        distributed.shutdown()
        raise click.ClickException(message) if rank == 0 else SystemExit(1)
    try:
        training_worker(rank, dnnlib.EasyDict(c), log_file="log.txt", host=host)
    except (SetupError, training_loop.NonFiniteLossError, training_loop.CheckpointWriteError) as exc:
        if rank == 0:
            remove_unfinished_run(c["run_dir"], os.path.dirname(c["run_dir"]), created_outdir=False)
        raise click.ClickException(str(exc)) from None
    finally:
        if rank == 0:
            run_lock.release(c["run_dir"])


def replay_config(opts, enabled=()):
    """The config of --config, refusing options that would make the run differ from the recorded one, and
    classes or plugins the file may not name (training/trusted_classes.py)."""
    ctx = click.get_current_context()
    given = [name for name in ctx.params if name not in ("outdir", "config", "dry_run", "plugins")
             and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise UserError(f"--config replays the recorded run; drop --{given[0].replace('_', '-')} "
                        "(edit a copy of training_options.json to change it)")
    c = load_run_config(opts.config)
    if opts.plugins is not None and list(enabled) != list(c.plugin_kwargs):  # Names, also of file plugins.
        raise UserError(f"--plugins={opts.plugins} differs from the recorded plugins {list(c.plugin_kwargs) or 'none'}; "
                        "drop --plugins with --config")
    try:
        trusted_classes.check_run_config(c, f"--config={opts.config}", command_line_plugins=set(enabled))
    except trusted_classes.UntrustedInput as exc:
        raise UserError(str(exc)) from None
    host = PluginHost.from_config(c.plugin_kwargs)  # Fail now, before the run directory exists, if one is missing.
    desc = os.path.basename(os.path.dirname(os.path.abspath(opts.config))).split("-", 1)[-1] + "-replay"
    return c, desc, host


def list_plugins():
    for name, source in sorted(available_plugins().items()):
        try:
            host = PluginHost.create([name])
            (_n, version, src, hooks), = host.describe()
            print(f"{name:<14s} {version:<8s} {src}\n    hooks: {', '.join(hooks) or '-'}")
        except Exception as exc:  # A broken third-party plugin must not hide the others.
            print(f"{name:<14s} ?        {source}\n    cannot be loaded: {exc}")


def enabled_plugin_names(argv):
    """--plugins values, read before the command exists because they decide which options it has."""
    names = []
    for i, arg in enumerate(argv):
        if arg.startswith("--plugins="):
            names += parse_plugin_list(arg.split("=", 1)[1])
        elif arg == "--plugins" and i + 1 < len(argv):
            names += parse_plugin_list(argv[i + 1])
    return names


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-plugins" in argv:
        list_plugins()
        return 0
    try:
        enabled, others = plugin_option_table(enabled_plugin_names(argv))
        command = build_command(enabled, others)
    except PluginError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 2
    return command.main(args=argv, prog_name="train.py", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
