"""Turn train.py's options into the EasyDict config tree of the training loop (NVIDIA's presets and rules)."""

import os

import dnnlib
from training import checkpoint


class UserError(Exception):
    """A problem with the command line or the inputs; the message names the option or file."""


# cfg: ref_gpus, kimg, mb, mbstd, fmaps, lrate, gamma, ema, ramp, map (+ tiny's network size).
CFG_SPECS = {
    "auto": dict(ref_gpus=-1, kimg=25000, mb=-1, mbstd=-1, fmaps=-1, lrate=-1, gamma=-1, ema=-1, ramp=0.05, map=2),
    "stylegan2": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10, ramp=None, map=8),
    "paper256": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20, ramp=None, map=8),
    "paper512": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025, gamma=0.5, ema=20, ramp=None, map=8),
    "paper1024": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10, ramp=None, map=8),
    "cifar": dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2),
    # The methods' published settings. NoisyTwins' CIFAR10-LT runs: cifar with an 8-layer mapping network and
    # channel_base 16384. Vision-aided GAN's StyleGAN2 fork: its paper256 (batch 16 on 2 GPUs, lr 0.002, mbstd 4,
    # ema 10) and paper256_2fmap (the same with channel_base 32768), which its README trains the few-shot sets with.
    "noisytwins-cifar": dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=0.5, lrate=0.0025, gamma=0.01, ema=500,
                             ramp=0.05, map=8),
    "va-paper256": dict(ref_gpus=2, kimg=25000, mb=16, mbstd=4, fmaps=0.5, lrate=0.002, gamma=1, ema=10, ramp=None, map=8),
    "va-paper256-2fmap": dict(ref_gpus=2, kimg=25000, mb=16, mbstd=4, fmaps=1, lrate=0.002, gamma=1, ema=10, ramp=None,
                              map=8),
    # Small networks for 16-32 px data that train on a laptop CPU in minutes. Batch 16, twice sg2ada's learning
    # rate and, as in NVIDIA's cifar preset, no path-length regularisation or style mixing. Measured on 16 px
    # digits without ADA (class consistency, 2000 fakes): 0.90 at 9 kimg and 0.98 at 12, where batch 32 with
    # lrate 0.0025 gave 0.52 at 12 and 0.68 at 15, lrate 0.005 0.79 and 0.91.
    "tiny": dict(ref_gpus=1, kimg=200, mb=16, mbstd=4, fmaps=-1, lrate=0.005, gamma=0.05, ema=2, ramp=0.05, map=2,
                 z_dim=64, w_dim=64, channel_base=2048, channel_max=64, tick=1),
    # tiny's convolutions with the official NoisyTwins/UTLO latent size (z and w 512) and batch 64, so that the
    # Barlow-Twins term has 32 twin pairs and its published weight (lambda_NT) means what it does in the papers;
    # the learning rate and R1 gamma of NVIDIA's batch-64 cifar preset. For the long-tail experiments.
    "tiny512": dict(ref_gpus=1, kimg=200, mb=64, mbstd=4, fmaps=-1, lrate=0.0025, gamma=0.01, ema=2, ramp=0.05, map=2,
                    z_dim=512, w_dim=512, channel_base=2048, channel_max=64, tick=1),
}

RESUME_SPECS = {
    "ffhq256": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl",
    "ffhq512": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/ffhq-res512-mirror-stylegan2-noaug.pkl",
    "ffhq1024": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/ffhq-res1024-mirror-stylegan2-noaug.pkl",
    "celebahq256": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl",
    "lsundog256": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/lsundog-res256-paper256-kimg100000-noaug.pkl",
}


def available_cpus():
    """CPU cores this process may run on (the affinity mask, which containers and schedulers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows.
        return os.cpu_count() or 1


def default_num_workers():
    """On CUDA: NVIDIA's 3 DataLoader workers, but leave one core to the training process itself
    (3 would oversubscribe a 2-core machine, and PyTorch warns about it). Off CUDA see apply_performance.
    """
    return max(0, min(3, available_cpus() - 1))


def _default(opts, key, value):
    v = opts.get(key)
    return value if v is None else v


def open_training_set(opts):
    """The dataset kwargs and the opened dataset, or UserError naming --data / --subset."""
    from training.dataset import DatasetError

    data = os.path.expanduser(opts.data)
    if not os.path.exists(data):
        raise UserError(f"--data={opts.data}: no such file or directory")
    kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data,
                             use_labels=bool(opts.get("cond")), max_size=None, xflip=False)
    subset = opts.get("subset")
    if subset is not None:
        if str(subset).isdigit():
            kwargs.max_size = int(subset)
        elif str(subset).endswith(".json"):  # A file on disk, or one inside the dataset (lt_dataset.py output).
            path = os.path.expanduser(subset)
            kwargs.label_file = os.path.abspath(path) if os.path.isfile(path) else subset
        else:
            raise UserError(f"--subset={subset}: expected an image count or a label-subset .json file")
    try:
        training_set = dnnlib.util.construct_class_by_name(**kwargs)
    except (DatasetError, OSError) as exc:  # Not ValueError at large: a bug keeps its traceback.
        option = f"--subset={subset}" if "label_file" in kwargs else f"--data={opts.data}"
        raise UserError(f"{option}: {exc}") from None
    return kwargs, training_set


def build_dataset_kwargs(opts):
    kwargs, training_set = open_training_set(opts)
    kwargs.resolution = training_set.resolution
    kwargs.use_labels = training_set.has_labels
    kwargs.max_size = len(training_set)  # Be explicit about dataset size.
    desc = training_set.name
    cond = bool(_default(opts, "cond", False))
    if cond:
        desc += "-cond"
    if opts.get("subset") is not None:
        desc += f"-subset{len(training_set)}" if "label_file" not in kwargs else "-" + os.path.splitext(os.path.basename(kwargs.label_file))[0]
    if _default(opts, "mirror", False):
        desc += "-mirror"
        kwargs.xflip = True
    kwargs.random_seed = _default(opts, "seed", 0)
    if _default(opts, "skip_bad_images", False):
        kwargs.skip_bad_images = True
    if _default(opts, "verify_data", False) and hasattr(training_set, "verify"):
        bad = training_set.verify()
        if bad and not kwargs.get("skip_bad_images"):
            listed = "; ".join(f"{name}: {error}" for name, error in bad[:10])
            raise UserError(f"--verify-data: {len(bad)} damaged image(s) in {kwargs.path}: {listed}"
                            + (f" (+{len(bad) - 10} more)" if len(bad) > 10 else "")
                            + ". Rebuild the dataset, or pass --skip-bad-images=1 to train without them")
        print(f"--verify-data: {len(training_set)} images decoded, {len(bad)} damaged"
              + (" (skipped while training)" if bad else ""))
    return kwargs, training_set, desc


def apply_cfg(c, opts, training_set, gpus):
    cfg = _default(opts, "cfg", "auto")
    spec = dnnlib.EasyDict(CFG_SPECS[cfg])
    res = training_set.resolution
    if cfg == "auto":
        spec.ref_gpus = gpus
        spec.mb = max(min(gpus * min(4096 // res, 32), 64), gpus)
        spec.mbstd = min(spec.mb // gpus, 4)
        spec.fmaps = 1 if res >= 512 else 0.5
        spec.lrate = 0.002 if res >= 1024 else 0.0025
        spec.gamma = 0.0002 * (res ** 2) / spec.mb
        spec.ema = spec.mb * 10 / 32
    channel_base = spec.get("channel_base") or int(spec.fmaps * 32768)
    channel_max = spec.get("channel_max") or 512
    c.G_kwargs = dnnlib.EasyDict(class_name="training.networks.Generator", z_dim=spec.get("z_dim", 512),
                                 w_dim=spec.get("w_dim", 512), mapping_kwargs=dnnlib.EasyDict(),
                                 synthesis_kwargs=dnnlib.EasyDict())
    c.D_kwargs = dnnlib.EasyDict(class_name="training.networks.Discriminator", block_kwargs=dnnlib.EasyDict(),
                                 mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    c.G_kwargs.synthesis_kwargs.channel_base = c.D_kwargs.channel_base = channel_base
    c.G_kwargs.synthesis_kwargs.channel_max = c.D_kwargs.channel_max = channel_max
    c.G_kwargs.mapping_kwargs.num_layers = spec.map
    c.G_kwargs.synthesis_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 4  # Enable mixed-precision training.
    c.G_kwargs.synthesis_kwargs.conv_clamp = c.D_kwargs.conv_clamp = 256  # Clamp activations to avoid float16 overflow.
    c.D_kwargs.epilogue_kwargs.mbstd_group_size = spec.mbstd
    c.G_opt_kwargs = dnnlib.EasyDict(class_name="torch.optim.Adam", lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name="torch.optim.Adam", lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    c.loss_kwargs = dnnlib.EasyDict(class_name="training.loss.StyleGAN2Loss", r1_gamma=spec.gamma)
    c.total_kimg = spec.kimg
    c.batch_size = spec.mb
    c.batch_gpu = spec.mb // max(spec.ref_gpus, gpus)  # More GPUs than the preset's reference share its batch.
    c.ema_kimg = spec.ema
    c.ema_rampup = spec.ramp
    c.kimg_per_tick = spec.get("tick", 4)
    if cfg in ("cifar", "noisytwins-cifar", "tiny", "tiny512"):
        c.loss_kwargs.pl_weight = 0  # disable path length regularization
        c.loss_kwargs.style_mixing_prob = 0  # disable style mixing
    if cfg in ("cifar", "noisytwins-cifar"):
        c.D_kwargs.architecture = "orig"  # disable residual skip connections
    return cfg, spec


def apply_overrides(c, opts, gpus):
    desc = ""
    gamma = opts.get("gamma")
    if gamma is not None:
        if gamma < 0:
            raise UserError("--gamma must be non-negative")
        desc += f"-gamma{gamma:g}"
        c.loss_kwargs.r1_gamma = gamma
    kimg = opts.get("kimg")
    if kimg is not None:
        if kimg <= 0:
            raise UserError("--kimg must be positive")
        desc += f"-kimg{kimg:g}"
        c.total_kimg = kimg
    batch = opts.get("batch")
    if batch is not None:
        if not (batch >= 1 and batch % gpus == 0):
            raise UserError(f"--batch={batch} must be at least 1 and divisible by --gpus={gpus}")
        desc += f"-batch{batch}"
        c.batch_size = batch
        c.batch_gpu = batch // gpus
    batch_gpu = opts.get("batch_gpu")
    if batch_gpu is not None:
        if batch_gpu < 1:
            raise UserError(f"--batch-gpu={batch_gpu} must be at least 1")
        c.batch_gpu = batch_gpu
    if c.batch_size % (c.batch_gpu * gpus) != 0:
        raise UserError(f"--batch={c.batch_size} must be divisible by --gpus x --batch-gpu = {gpus} x {c.batch_gpu}")
    mbstd = c.D_kwargs.epilogue_kwargs.mbstd_group_size
    if mbstd is not None and c.batch_gpu % min(mbstd, c.batch_gpu) != 0:
        raise UserError(f"the per-GPU batch ({c.batch_gpu}) must be divisible by the minibatch-stddev group size "
                        f"({mbstd}); change --batch or --batch-gpu")
    for name, kwargs_list, key in [
            ("cbase", [c.G_kwargs.synthesis_kwargs, c.D_kwargs], "channel_base"),
            ("cmax", [c.G_kwargs.synthesis_kwargs, c.D_kwargs], "channel_max"),
            ("glr", [c.G_opt_kwargs], "lr"),
            ("dlr", [c.D_opt_kwargs], "lr"),
            ("map_lr", [c.G_kwargs.mapping_kwargs, c.D_kwargs.mapping_kwargs], "lr_multiplier")]:
        value = opts.get(name)
        if value is not None:  # click has checked the range.
            desc += f"-{name.replace('_', '')}{value:g}"
            for kwargs in kwargs_list:
                kwargs[key] = value
    tick = opts.get("tick")
    if tick is not None:
        if tick <= 0:
            raise UserError("--tick must be positive")
        c.kimg_per_tick = tick
    return desc


def apply_augment(c, opts):
    from training.augment import augpipe_specs

    aug = _default(opts, "aug", "ada")
    desc = f"-{aug}"
    c.augment_p = 0
    c.ada_target = None
    if aug == "ada":
        c.ada_target = 0.6
    elif aug == "fixed":
        if opts.get("p") is None:
            raise UserError("--aug=fixed requires specifying --p")
    p = opts.get("p")
    if p is not None:
        if aug != "fixed":
            raise UserError("--p can only be specified with --aug=fixed")
        if not 0 <= p <= 1:
            raise UserError("--p must be between 0 and 1")
        desc += f"-p{p:g}"
        c.augment_p = p
    target = opts.get("target")
    if target is not None:
        if aug != "ada":
            raise UserError("--target can only be specified with --aug=ada")
        if not 0 <= target <= 1:
            raise UserError("--target must be between 0 and 1")
        desc += f"-target{target:g}"
        c.ada_target = target
    augpipe = opts.get("augpipe")
    if augpipe is not None and aug == "noaug":
        raise UserError("--augpipe cannot be specified with --aug=noaug")
    augpipe = augpipe or "bgc"
    if opts.get("augpipe") is not None:
        desc += f"-{augpipe}"
    c.augment_kwargs = None
    if aug != "noaug":
        c.augment_kwargs = dnnlib.EasyDict(class_name="training.augment.AugmentPipe", **augpipe_specs[augpipe])
    return desc


def apply_resume(c, opts):
    resume = opts.get("resume") or "noresume"
    if resume == "noresume":
        return ""
    if resume in RESUME_SPECS or "://" in resume:
        url = RESUME_SPECS.get(resume, resume)
        try:  # Download (or find in the cache) now, so that an offline machine fails before training.
            c.resume_pkl = dnnlib.util.open_url(url, return_filename=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"--resume={resume}: {exc}") from None
        desc = f"-resume{resume}" if resume in RESUME_SPECS else "-resumecustom"
    else:
        weights_only = bool(opts.get("resume_weights_only") or opts.get("resume_partial"))
        from training import run_lock

        source_dir = resume if os.path.isdir(os.path.expanduser(resume)) else os.path.dirname(os.path.abspath(
            os.path.expanduser(resume)))
        try:
            run_lock.check_not_live(source_dir, "resume it")
        except run_lock.RunLockedError as exc:
            raise UserError(str(exc)) from None
        try:
            c.resume_pkl, c.resume_state = checkpoint.resolve_resume(resume, weights_only=weights_only)
        except (FileNotFoundError, checkpoint.StateError) as exc:
            raise UserError(str(exc)) from None
        desc = "-resumecustom"
    if c.get("resume_state") is None:
        c.ada_kimg = 100  # Make ADA react faster at the beginning (weights-only resume, as upstream).
        c.ema_rampup = None  # Disable EMA rampup.
    return desc


def check_device(device):
    """--device names a device this machine has (said before the run directory exists)."""
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={device}: no CUDA device is available (torch {torch.__version__}); use --device=cpu "
                        "or auto")
    if kind == "cuda" and ":" in str(device) and int(str(device).split(":")[1]) >= torch.cuda.device_count():
        raise UserError(f"--device={device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"--device={device}: MPS is not available here; use --device=cpu or auto")
    if kind not in ("auto", "cpu", "cuda", "mps"):
        raise UserError(f"--device={device}: use cpu, cuda, cuda:N, mps or auto")


def resolve_fp32(opts):
    """--fp32 as given, else auto: float32 networks wherever float16 does not run (every device but CUDA).

    The preset's num_fp16_res/conv_clamp only pay off on CUDA: off it the blocks run in float32 anyway, and
    the clamp (±256, a float16 overflow guard) costs about a tenth of a CPU step in masks and copies (31.1 vs
    27.6 s/kimg, bench/train_speed.py --interleave --variants="fp32=0,nhwc=0;nhwc=0"). CPUs with native bfloat16 are not used for it: none was at hand
    to measure the trade, and an emulated bfloat16 is many times slower than float32.
    """
    if opts.get("fp32") is not None:
        return bool(opts.fp32)
    return not on_cuda(opts)


def on_cuda(opts):
    import torch

    device = str(_default(opts, "device", "auto"))
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def apply_performance(c, opts):
    on_cpu = not on_cuda(opts) and str(_default(opts, "device", "auto")) != "mps"
    if resolve_fp32(opts):  # Recorded as num_fp16_res=0, conv_clamp=None in G_kwargs/D_kwargs.
        c.G_kwargs.synthesis_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 0
        c.G_kwargs.synthesis_kwargs.conv_clamp = c.D_kwargs.conv_clamp = None
    if on_cuda(opts):
        if _default(opts, "nhwc", False):  # NVIDIA's meaning: channels-last in the float16 blocks.
            c.G_kwargs.synthesis_kwargs.fp16_channels_last = c.D_kwargs.block_kwargs.fp16_channels_last = True
    else:
        # On the CPU every block is channels-last unless --nhwc=0: oneDNN's convolutions (the transposed ones of
        # G's upsampling above all) run faster on NHWC; x0.92 s/kimg for the tiny preset on a 2-core AVX2 CPU
        # (bench/train_speed.py --interleave --variants="default;nhwc=0"). Not measured on MPS: off there.
        channels_last = bool(_default(opts, "nhwc", on_cpu))
        c.G_kwargs.synthesis_kwargs.channels_last = c.D_kwargs.block_kwargs.channels_last = channels_last
        # Off CUDA the data is loaded in the training process: a worker process takes a core from the compute
        # threads that it cannot repay (x0.95 s/kimg at 16 px on 2 cores: bench/train_speed.py --res=16 --variants="workers=0;workers=1" --rounds=3).
        c.data_loader_kwargs.num_workers = 0
    # Adam's fused kernel: one op per step for all of a network's tensors instead of about ten per tensor, the
    # same update up to float rounding. Off by default on CUDA (NVIDIA's); on the CPU the default, where a small
    # network's step is made of small ops (x0.97 s/kimg at 16 px: bench/train_speed.py --res=16 --interleave
    # --variants="fused_adam=0;default").
    if _default(opts, "fused_adam", on_cpu):
        c.G_opt_kwargs.fused = c.D_opt_kwargs.fused = True
    if _default(opts, "nobench", False):
        c.cudnn_benchmark = False
    if _default(opts, "allow_tf32", False):
        c.allow_tf32 = True
    workers = opts.get("workers")
    if workers is not None:
        if workers < 0:
            raise UserError("--workers must be non-negative")
        c.data_loader_kwargs.num_workers = workers


def validate_metrics(opts, host=None):
    metrics = opts.get("metrics")
    if metrics is None:
        metrics = "fid50k_full"
    if metrics.lower() == "none":
        return []
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    from metrics import metric_main

    if host is not None:
        host.register_metrics()
    for name in names:
        if not metric_main.is_valid_metric(name):
            raise UserError(f"--metrics: unknown metric {name!r}; valid metrics: {', '.join(metric_main.list_valid_metrics())}")
    return names


def build_config(opts, host):
    """(config EasyDict for training_loop, run description).

    `host` is the launcher's PluginHost, built from `opts.plugin_kwargs` (which the config records):
    it registers the plugins' metrics and runs gan_configure, once per run, before the config is final.
    The dataset is opened here for its size and resolution (as NVIDIA's train.py does); the plugins' checks
    of the data (gan_setup) and the resume pickle's are the training loop's, which runs them once.
    """
    c = dnnlib.EasyDict()
    from torch_utils import distributed

    world = distributed.env_world_size()  # > 1 under torchrun.
    gpus = _default(opts, "gpus", world)
    if gpus < 1:
        raise UserError("--gpus must be at least 1")
    if world > 1 and gpus != world:
        raise UserError(f"--gpus={gpus}, but torchrun started {world} processes; drop --gpus under torchrun")
    c.num_gpus = gpus
    c.network_snapshot_ticks = c.image_snapshot_ticks = _default(opts, "snap", 50)
    if c.network_snapshot_ticks < 1:
        raise UserError("--snap must be at least 1")
    c.random_seed = _default(opts, "seed", 0)
    c.device = _default(opts, "device", "auto")
    check_device(c.device)
    c.metrics = validate_metrics(opts, host)
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, num_workers=default_num_workers(), prefetch_factor=2)

    c.training_set_kwargs, training_set, desc = build_dataset_kwargs(opts)
    cfg, _spec = apply_cfg(c, opts, training_set, gpus)
    desc += f"-{cfg}"
    desc += apply_overrides(c, opts, gpus)
    desc += apply_augment(c, opts)
    desc += apply_resume(c, opts)
    if _default(opts, "freezed", 0):
        c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
        desc += f"-freezed{opts.freezed:d}"
    apply_performance(c, opts)
    c.fake_labels = opts.get("fake_labels")  # None until gan_configure: a plugin may choose its method's default.
    c.run_report = True
    c.export_safetensors = bool(_default(opts, "export_safetensors", False))
    c.state_ticks = opts.get("state_ticks")
    # The CPU presets checkpoint every few minutes of work by default, so that a stop loses little (as --state-ticks).
    c.state_minutes = opts.get("state_minutes") or (5.0 if cfg in ("tiny", "tiny512") else None)
    from training.training_loop import default_cpu_threads

    c.num_threads = opts.get("threads") or default_cpu_threads(gpus)  # Recorded: cores / local processes by default.
    c.omp_wait_policy = os.environ.get("OMP_WAIT_POLICY") or "default"  # Recorded (train.py chose it; no effect on
    # results): PASSIVE, ACTIVE, or OpenMP's default spin-then-sleep.
    c.grid_scale = opts.get("grid_scale")  # None: readable (torch_utils/grid_layout.py).
    c.grid_gap = opts.get("grid_gap")
    c.resume_partial = bool(_default(opts, "resume_partial", False))
    c.loggers = dnnlib.EasyDict(tensorboard=_default(opts, "tensorboard", "auto"), wandb=bool(opts.get("wandb")),
                                wandb_project=opts.get("wandb_project"), wandb_name=opts.get("wandb_name"),
                                wandb_mode=opts.get("wandb_mode"))
    if c.loggers.wandb:
        from training.run_logging import check_wandb_available

        try:
            check_wandb_available()
        except RuntimeError as exc:
            raise UserError(str(exc)) from None

    if host.plugins:
        desc += "-" + "-".join(host.plugins)
    c.plugin_kwargs = dnnlib.EasyDict(opts.get("plugin_kwargs") or {})
    host.pm.hook.gan_configure(config=c, dataset_kwargs=c.training_set_kwargs)
    if c.fake_labels is None:
        c.fake_labels = "dataset"  # sg2ada's default: labels of random dataset images (class frequencies).
    training_set.close()
    return c, desc
