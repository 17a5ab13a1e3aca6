"""The StyleGAN2-ADA training loop, as named steps.

`training_loop(**config)` builds a `Trainer` and runs it. Each step of one iteration is a method:
fetch_data -> run_phases -> update_ema -> update_ada, and at tick boundaries
report_tick -> save_images -> save_network -> run_metrics -> write_stats. Plugins take part only through their
hooks (`self.pm.hook.gan_*`, pluggy called directly; the lifecycle is in plugins/hookspecs.py); the baseline's
own answers are the sg2ada plugin's, so this file names no method and has no "no plugin answered" branches.
"""

import copy
import json
import os
import time

import numpy as np
import psutil
import torch

import dnnlib
from dnnlib.dataset_format import DatasetError
from torch_utils import distributed, misc, training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training import checkpoint, image_grid, run_lock
from training.loss import LossTerm
from training.plugin_api import OptimizerSpec, PluginError, RunContext, check_labels
from training.run_logging import RunLoggers


def build_host(plugin_kwargs):
    from plugins.host import PluginHost  # Imported lazily: a loop without plugins needs no pluggy at import time.

    return PluginHost.from_config(plugin_kwargs)


class Trainer:
    def __init__(self,
        run_dir=".",                # Output directory.
        training_set_kwargs={},     # Options for the training set.
        data_loader_kwargs={},      # Options for torch.utils.data.DataLoader.
        G_kwargs={},                # Options for the generator network.
        D_kwargs={},                # Options for the discriminator network.
        G_opt_kwargs={},            # Options for the generator optimiser.
        D_opt_kwargs={},            # Options for the discriminator optimiser.
        augment_kwargs=None,        # Options for the augmentation pipeline, None = disable.
        loss_kwargs={},             # Options for the loss function.
        metrics=[],                 # Metrics to evaluate at network snapshots.
        random_seed=0,              # Global random seed.
        num_gpus=1,                 # Number of processes taking part.
        rank=0,                     # Rank of this process in [0, num_gpus).
        batch_size=4,               # Total batch size for one training iteration.
        batch_gpu=4,                # Number of samples processed at a time by one process.
        ema_kimg=10,                # Half-life of the exponential moving average (EMA) of generator weights.
        ema_rampup=None,            # EMA ramp-up coefficient.
        G_reg_interval=4,           # How often to perform regularisation for G? None = disable lazy regularisation.
        D_reg_interval=16,          # How often to perform regularisation for D? None = disable lazy regularisation.
        augment_p=0,                # Initial value of augmentation probability.
        ada_target=None,            # ADA target value. None = fixed p.
        ada_interval=4,             # How often to perform ADA adjustment?
        ada_kimg=500,               # ADA adjustment speed: kimg needed for p to go from 0 to 1.
        fake_labels="dataset",      # Labels of generated images: 'dataset' (class frequencies) or 'uniform'.
        total_kimg=25000,           # Total length of the training, measured in thousands of real images.
        kimg_per_tick=4,            # Progress snapshot interval.
        image_snapshot_ticks=50,    # How often to save image snapshots? None = disable.
        network_snapshot_ticks=50,  # How often to save network snapshots? None = disable.
        resume_pkl=None,            # Network pickle (or URL) to resume from.
        resume_state=None,          # Sidecar training state for an exact resume, None = weights only.
        cudnn_benchmark=True,       # Enable torch.backends.cudnn.benchmark?
        allow_tf32=False,           # Enable torch.backends.cuda.matmul.allow_tf32 and cudnn.allow_tf32?
        device="auto",              # 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'.
        loggers={},                 # Options for RunLoggers (tensorboard, wandb).
        plugin_kwargs={},           # {name: {class_name | module, version, source, **options}}, in --plugins order.
        host=None,                  # A ready plugins.host.PluginHost instead of plugin_kwargs (tests: plugin objects).
        abort_fn=None,              # Callback that determines whether to abort training.
        progress_fn=None,           # Callback function for updating training progress.
        max_iterations=None,        # Stop after this many iterations of this process (tests, benchmarks).
        run_report=False,           # Refresh RUN_DIR/report.html at each network snapshot (needs matplotlib)?
        resume_partial=False,       # Resume a pickle of another configuration, copying only the tensors that fit?
        export_safetensors=False,   # Also write G_ema of each snapshot as .safetensors (weights without code)?
        state_ticks=None,           # Resumable checkpoint every N ticks between snapshots (newest kept), None = off.
        state_minutes=None,         # Resumable checkpoint when this many minutes passed since the last one, None = off.
        omp_wait_policy=None,       # OMP_WAIT_POLICY that train.py set before torch loaded (recorded, informational).
        num_threads=None,           # CPU threads of this process (--threads), None = torch's (one process) or
                                    # cores / local processes (several).
        grid_scale=None,            # Enlargement of the sample grids' tiles, None = readable (tiles >= 64 px), 1 = raw.
        grid_gap=None,              # Pixels between the grids' tiles, None = auto, 0 = none.
    ):
        self.c = dnnlib.EasyDict(locals())
        del self.c["self"]
        self.host = host if host is not None else build_host(plugin_kwargs)
        self.pm = self.host.pm
        self.rank = rank
        self.num_gpus = num_gpus
        self.run_dir = run_dir
        self.batch_size = batch_size
        self.batch_gpu = batch_gpu
        self.start_time = time.time()

        self.setup_environment()
        self.load_dataset()
        self.build_networks()
        self.setup_augment()
        self.setup_phases()
        self.setup_counters()
        plugin_states = None  # {plugin: state} of the resumed training state, None for a fresh run.
        if resume_pkl is not None:
            plugin_states = self.resume(resume_pkl, resume_state)
            if self.cur_nimg >= total_kimg * 1000:
                raise SetupError(f"--kimg={total_kimg:g}, but the resumed run is already at {self.cur_nimg / 1000:g} "
                                 "kimg; pass a larger --kimg to continue it")
        self.sync_weights()
        self.ctx = RunContext(self, self.pm.get_name, plugin_states)
        self.host.register_metrics()
        self.pm.hook.gan_setup(ctx=self.ctx)  # Once: everything above is final (see plugins/hookspecs.py).
        self.setup_data_iterator()
        self.loggers = None
        self.started = False  # The first grids and the loggers are written by start().

    def start(self):
        """Write the first files into run_dir (the real/fake grids, the loggers); run() calls it if needed."""
        self.setup_snapshot_grid()
        self.loggers = RunLoggers(self.run_dir, rank=self.rank, options=dict(self.c.loggers)) if self.rank == 0 else None
        self.started = True

    # ------------------------------------------------------------------ setup steps

    def setup_environment(self):
        c = self.c
        if c.device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = c.device
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", distributed.local_rank() if self.num_gpus > 1 else 0)
        if self.num_gpus > 1:  # One process per device: NCCL on CUDA, gloo on the CPU.
            rank, world = distributed.init(self.device.type)
            if (rank, world) != (self.rank, self.num_gpus):
                raise ValueError(f"process group says rank {rank} of {world}, the config rank {self.rank} of "
                                 f"{self.num_gpus}")
            training_stats.init_multiprocessing(rank=self.rank, sync_device=self.device)
        if self.device.type == "cpu" and (c.num_threads or self.num_gpus > 1):  # --threads (train.py records it);
            torch.set_num_threads(c.num_threads or default_cpu_threads(self.num_gpus))  # processes share the cores.
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = c.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = c.allow_tf32
            torch.backends.cudnn.allow_tf32 = c.allow_tf32
            conv2d_gradfix.enabled = True  # Improves training speed on GPUs.
            grid_sample_gradfix.enabled = True  # Avoids errors with the augmentation pipe.
        # Latents and fake labels are drawn for the whole batch from generators seeded alike on every rank; each
        # process takes every num_gpus-th one (as the sampler shares out the reals), so N processes see the
        # batch one process would. Other randomness (augmentation, noise inputs) is per rank.
        self.np_rng = np.random.RandomState(c.random_seed)
        self.z_gen = torch.Generator().manual_seed(c.random_seed)
        torch.manual_seed(c.random_seed * self.num_gpus + self.rank)
        threads = f", {torch.get_num_threads()} CPU thread(s) each" if self.device.type == "cpu" else ""
        self.log(f"Training on {self.device} ({self.num_gpus} process{'es' if self.num_gpus > 1 else ''}{threads})")

    def load_dataset(self):
        self.log("Loading training set...")
        self.training_set = dnnlib.util.construct_class_by_name(**self.c.training_set_kwargs)
        ts = self.training_set
        self.log(f"Num images:  {len(ts)}")
        self.log(f"Image shape: {ts.image_shape}")
        self.log(f"Label shape: {ts.label_shape}")
        if ts.has_labels:
            self.log(f"Fake labels: {self.c.fake_labels or 'dataset'}")
        self.class_counts = ts.class_counts() if ts.has_labels and ts.has_onehot_labels else None
        self.c_dim = self.pm.hook.gan_label_dim(dataset=ts, label_dim=ts.label_dim)  # A plugin may label the data.
        if not isinstance(self.c_dim, (int, np.integer)) or self.c_dim < 0 or (self.c_dim == 0 and ts.label_dim > 0):
            raise PluginError(f"plugin {self.host.answerer('gan_label_dim')!r}: gan_label_dim must return a "
                                 f"positive int, got {self.c_dim!r}")
        self.c_dim = int(self.c_dim)
        if self.c_dim != ts.label_dim:
            self.log(f"Networks' label width: {self.c_dim} (set by a plugin; the dataset's is {ts.label_dim})")
            self.class_counts = None  # Until the plugin announces its own (ctx.set_class_counts in gan_setup).

    def build_networks(self):
        c = self.c
        self.log("Constructing networks...")
        common = dict(c_dim=self.c_dim, img_resolution=self.training_set.resolution,
                      img_channels=self.training_set.num_channels)
        self.G = dnnlib.util.construct_class_by_name(**c.G_kwargs, **common).train().requires_grad_(False)
        self.D = dnnlib.util.construct_class_by_name(**c.D_kwargs, **common).train().requires_grad_(False)
        self.pm.hook.gan_extend_networks(G=self.G, D=self.D, dataset=self.training_set)
        self.G = self.G.train().requires_grad_(False).to(self.device)  # Again: extensions arrive trainable.
        self.D = self.D.train().requires_grad_(False).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        freeze = (c.D_kwargs.get("block_kwargs") or {}).get("freeze_layers", 0)
        layers = sum(getattr(self.D, f"b{res}").num_layers for res in self.D.block_resolutions)
        if not 0 <= freeze <= layers:
            raise SetupError(f"--freezed={freeze}: D has {layers} layers at {self.training_set.resolution} px; "
                             f"freeze 0..{layers} of them")
        self.frozen_modules = {}  # Used by plugins, never trained or saved.
        for plugin, modules in self.host.each("gan_frozen_modules", device=self.device):
            for name, module in (modules or {}).items():
                if name in self.frozen_modules or not isinstance(module, torch.nn.Module):
                    raise PluginError(f"plugin {plugin!r}: frozen module {name!r} is not a torch.nn.Module or "
                                         "its name is taken")
                self.frozen_modules[name] = module.to(self.device).eval().requires_grad_(False)

    def setup_augment(self):
        from training.augment import AdaController

        c = self.c
        self.augment_pipe = None
        self.ada = None
        if c.augment_kwargs is not None and (c.augment_p > 0 or c.ada_target is not None):
            self.augment_pipe = dnnlib.util.construct_class_by_name(**c.augment_kwargs).train().requires_grad_(False)
            self.augment_pipe = self.augment_pipe.to(self.device)
            self.augment_pipe.p.copy_(torch.as_tensor(c.augment_p))
            if c.ada_target is not None:
                self.ada = AdaController(self.augment_pipe, target=c.ada_target, ada_kimg=c.ada_kimg,
                                         interval=c.ada_interval, batch_size=self.batch_size,
                                         reduce_fn=_all_reduce_sum if self.num_gpus > 1 else None, rank=self.rank)

    def setup_phases(self):
        c = self.c
        self.loss = dnnlib.util.construct_class_by_name(device=self.device, G=self.G, D=self.D,
                                                        augment_pipe=self.augment_pipe, **c.loss_kwargs)
        self.phases = []
        self.extra_optimizers = {}  # {plugin/name: optimiser} declared through gan_extra_optimizers.
        extra_specs = self.extra_optimizer_specs()
        for spec in extra_specs:  # Trainable only during their network's phases, like G and D.
            for p in spec.params:
                p.requires_grad_(False)
        for name, module, opt_kwargs, reg_interval in [("G", self.G, c.G_opt_kwargs, c.G_reg_interval),
                                                       ("D", self.D, c.D_opt_kwargs, c.D_reg_interval)]:
            params = [p for p in module.parameters()]
            extras = [dnnlib.EasyDict(name=spec.name, params=spec.params,
                                      opt=dnnlib.util.construct_class_by_name(spec.params, **lazy_reg_opt_kwargs(
                                          spec.opt_kwargs, reg_interval)))
                      for spec in extra_specs if spec.step_with == name]
            opt = dnnlib.util.construct_class_by_name(params, **lazy_reg_opt_kwargs(opt_kwargs, reg_interval))
            if reg_interval is None:
                self.phases.append(dnnlib.EasyDict(name=name + "both", module=module, opt=opt, interval=1, extras=extras))
            else:  # Lazy regularisation: lr and betas are scaled so the main phase behaves as if reg were every step.
                self.phases.append(dnnlib.EasyDict(name=name + "main", module=module, opt=opt, interval=1, extras=extras))
                self.phases.append(dnnlib.EasyDict(name=name + "reg", module=module, opt=opt, interval=reg_interval,
                                                   extras=extras))
            self.extra_optimizers.update({extra.name: extra.opt for extra in extras})

    def extra_optimizer_specs(self):
        """The plugins' OptimizerSpecs, named <plugin>/<name>."""
        specs = []
        c = self.c
        for plugin, answer in self.host.each("gan_extra_optimizers", G=self.G, D=self.D, G_opt_kwargs=dict(c.G_opt_kwargs),
                                             D_opt_kwargs=dict(c.D_opt_kwargs)):
            for spec in answer or []:
                try:
                    spec = spec if isinstance(spec, OptimizerSpec) else OptimizerSpec(**spec)
                except (TypeError, PluginError) as exc:
                    raise PluginError(f"plugin {plugin!r}: gan_extra_optimizers: {exc}") from None
                spec.name = f"{plugin}/{spec.name}"
                if any(s.name == spec.name for s in specs):
                    raise PluginError(f"plugin {plugin!r} declares optimiser {spec.name!r} twice")
                specs.append(spec)
        return specs

    def setup_counters(self):
        self.cur_nimg = 0
        self.cur_tick = 0
        self.batch_idx = 0
        self.samples_consumed = 0  # Real images drawn by this process (sampler position for exact resume).
        self.tick_start_nimg = 0
        self.tick_start_time = time.time()
        self.maintenance_time = 0.0
        self.stats_collector = training_stats.Collector(regex=".*")
        self.state_checkpoints = []  # Paths of --state-ticks checkpoints written by this run, oldest first.
        self.last_checkpoint_time = time.time()  # For --state-minutes.
        self.skipped_metrics = set()  # Metrics that failed once (e.g. a detector not available offline).
        self.eta_origin = None  # (time, nimg) at the end of the first tick: the ETA uses the steady speed since.
        self.stats_metrics = dict()
        self.last_grid = None  # Path of the newest sample grid, for the end-of-run summary.
        self.last_metrics = dict()  # {metric: results} of the newest snapshot.
        self.report_hint_shown = False

    def sync_weights(self):
        """Every rank starts from rank 0's networks and plugin heads (each rank initialised with its own seed)."""
        if self.num_gpus == 1:
            return
        tensors = [t for net in (self.G, self.D, self.G_ema) for t in list(net.parameters()) + list(net.buffers())]
        tensors += [p for opt in self.extra_optimizers.values() for g in opt.param_groups for p in g["params"]]
        distributed.broadcast_tensors(tensors)

    def setup_data_iterator(self):
        sampler = misc.InfiniteSampler(dataset=self.training_set, rank=self.rank, num_replicas=self.num_gpus,
                                       seed=self.c.random_seed, start_index=self.samples_consumed * self.num_gpus)
        kwargs = dict(self.c.data_loader_kwargs)
        if kwargs.get("num_workers", 0) == 0:
            kwargs.pop("prefetch_factor", None)
        if self.device.type != "cuda":
            kwargs["pin_memory"] = False
        loader = torch.utils.data.DataLoader(dataset=self.training_set, sampler=sampler,
                                             batch_size=self.batch_size // self.num_gpus, **kwargs)
        with torch.random.fork_rng(devices=[]):  # iter() draws a worker seed; keep the training RNG untouched.
            self.training_set_iterator = iter(loader)

    def setup_snapshot_grid(self):
        self.grid_size = self.grid_z = self.grid_c = None
        if self.rank != 0:
            return
        with torch.random.fork_rng(devices=[]):
            self.grid_size, images, labels = image_grid.setup_snapshot_image_grid(self.training_set, self.c.random_seed)
            labels = self.grid_labels(labels)
            try:
                image_grid.save_image_grid(images, os.path.join(self.run_dir, "reals.png"), drange=[0, 255],
                                           grid_size=self.grid_size, scale=self.c.grid_scale, gap=self.c.grid_gap)
            except OSError as exc:
                raise self.write_error("the image grid", os.path.join(self.run_dir, "reals.png"), exc) from None
            gen = torch.Generator().manual_seed(self.c.random_seed)
            self.grid_z = torch.randn([labels.shape[0], self.G.z_dim], generator=gen).to(self.device).split(self.batch_gpu)
            self.grid_c = torch.from_numpy(labels).to(self.device).split(self.batch_gpu)
            if self.c.resume_state is None:
                self.save_images("_init.png")

    def grid_labels(self, dataset_labels):
        labels = self.pm.hook.gan_grid_labels(grid_size=self.grid_size, labels=dataset_labels, c_dim=self.c_dim,
                                              G=self.G, random_seed=self.c.random_seed)
        return check_labels(labels, dataset_labels.shape[0], self.c_dim, "gan_grid_labels",
                            self.host.answerer("gan_grid_labels")).numpy()

    def resume(self, resume_pkl, resume_state):
        import legacy

        self.log(f'Resuming from "{resume_pkl}"')
        if self.rank == 0 and "://" not in str(resume_pkl):
            source_dir = os.path.dirname(os.path.abspath(resume_pkl))
            run_lock.check_not_live(source_dir, "resume it")  # Its temporary files may be a live write.
            for name in checkpoint.remove_stale_temp_files(source_dir):
                self.log(f"Removed {name}, left by an interrupted write")
        try:
            with dnnlib.util.open_url(resume_pkl) as f:
                resume_data = legacy.load_network_pkl(f)
        except legacy.NetworkPickleError as exc:
            raise SetupError(f"--resume: {exc}") from None
        state = checkpoint.load_state(resume_state) if resume_state is not None else None
        problem = checkpoint.unit_problem(resume_pkl, state) if state is not None else None
        if problem is not None:
            raise SetupError(f"--resume={resume_pkl}: {problem}; resume from the run directory (its newest complete "
                             "snapshot is used) or from another snapshot")
        self.host.check_resume_plugins(snapshot=resume_data, state=state)
        self.pm.hook.gan_check_resume(snapshot=resume_data, state=state)
        for name, module in [("G", self.G), ("D", self.D), ("G_ema", self.G_ema)]:
            if resume_data.get(name) is None:
                raise SetupError(f"--resume={resume_pkl}: the pickle has no {name!r} network")
            missing, unused = transfer_gaps(resume_data[name], module)
            if (missing or unused) and not self.c.resume_partial:
                def listed(names):
                    return ", ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "") or "none"
                raise SetupError(f"--resume={resume_pkl}: {name} of the pickle does not fit this configuration "
                                 f"(another resolution or architecture?): missing in the pickle: {listed(missing)}; "
                                 f"not used here: {listed(unused)}. Pass --resume-partial=1 to copy only the tensors "
                                 "that fit (transfer learning), or use the pickle's --cfg and data.")
            try:
                misc.copy_params_and_buffers(resume_data[name], module, require_all=False)
            except ValueError as exc:
                raise SetupError(f"--resume={resume_pkl}: {name} does not match this configuration: {exc}. "
                                 f"Use the --cfg and options of the run that wrote the pickle.") from None
        if self.augment_pipe is not None and resume_data.get("augment_pipe") is not None:
            self.augment_pipe.p.copy_(resume_data["augment_pipe"].p.to(self.device))
        if resume_state is None:
            nimg = checkpoint.snapshot_nimg(resume_pkl)
            kimg = None if nimg is None else nimg / 1000
            self.cur_nimg = self.tick_start_nimg = nimg or 0
            self.log("Notice: resuming weights only (no training state asked for or beside the pickle): optimisers, "
                     f"counters and RNG start fresh, kimg continues from {kimg or 0}.")
            return None
        self.load_state_dict(state)
        self.log(f"Restored training state from {resume_state} at kimg {self.cur_nimg / 1000:.1f}")
        return dict(state.get("plugins", {}))

    # ------------------------------------------------------------------ state for exact resume

    def state_dict(self):
        return dict(
            version=1,
            # Saved during tick cur_tick: the resumed run's first tick is the next one.
            cur_nimg=self.cur_nimg, cur_tick=self.cur_tick + 1, batch_idx=self.batch_idx,
            samples_consumed=self.samples_consumed,
            optimizers={phase.name: phase.opt.state_dict() for phase in self.phases},
            extra_optimizers={name: opt.state_dict() for name, opt in self.extra_optimizers.items()},
            pl_mean=self.loss.pl_mean.detach().cpu(),
            pl_mean_per_rank=self.ctx.per_rank(self.loss.pl_mean.detach().cpu()) if self.num_gpus > 1 else None,
            ada=self.ada.state_dict() if self.ada is not None else None,  # Summed over the ranks.
            augment_p=float(self.augment_pipe.p) if self.augment_pipe is not None else None,
            rng=self.rng_states(),
            plugins={name: s for name, s in self.host.each("gan_state_dict") if s is not None},
            plugin_names=list(self.host.plugins),
        )

    def rng_states(self):
        """The generators' states; with several processes every rank's torch state too (a collective call)."""
        states = checkpoint.capture_rng_states(self.np_rng)
        states["latent"] = self.z_gen.get_state()
        if self.num_gpus > 1:
            states["per_rank"] = self.ctx.per_rank(torch.get_rng_state())
            if self.device.type == "cuda":  # Each rank's own device generator (capture_rng_states holds rank 0's).
                states["cuda_per_rank"] = self.ctx.per_rank(torch.cuda.get_rng_state(self.device))
        return states

    def load_state_dict(self, state):
        self.cur_nimg = int(state["cur_nimg"])
        self.tick_start_nimg = self.cur_nimg
        self.cur_tick = int(state["cur_tick"])
        self.batch_idx = int(state["batch_idx"])
        self.samples_consumed = int(state["samples_consumed"])
        for phase in self.phases:
            if phase.name in state["optimizers"]:
                phase.opt.load_state_dict(state["optimizers"][phase.name])
        saved_extras = state.get("extra_optimizers", {})
        for name, opt in self.extra_optimizers.items():
            if name in saved_extras:
                opt.load_state_dict(saved_extras[name])
            else:
                self.log(f"Notice: optimiser {name!r} is new in this run; it starts fresh")
        pl_means = state.get("pl_mean_per_rank")  # Each rank tracks its own (from its share of the batch).
        pl_mean = pl_means[self.rank] if pl_means is not None and len(pl_means) == self.num_gpus else state["pl_mean"]
        self.loss.pl_mean.copy_(pl_mean.to(self.device))
        if self.ada is not None and state.get("ada") is not None:
            self.ada.load_state_dict(state["ada"])  # Rank 0 carries on the saved totals of all ranks.
        if self.augment_pipe is not None and state.get("augment_p") is not None:
            self.augment_pipe.p.copy_(torch.as_tensor(state["augment_p"]))
        rng = state["rng"]
        checkpoint.restore_rng_states(rng, self.np_rng)  # Sets rank 0's torch state (the one the file holds)...
        if "per_rank" in rng and len(rng["per_rank"]) == self.num_gpus:
            torch.set_rng_state(rng["per_rank"][self.rank])  # ...so this rank's own comes after it.
        if "cuda_per_rank" in rng and len(rng["cuda_per_rank"]) == self.num_gpus and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda_per_rank"][self.rank], self.device)
        if "latent" in rng:
            self.z_gen.set_state(rng["latent"])

    # ------------------------------------------------------------------ one iteration

    def sample_fake_labels(self, n, real_c):
        labels = self.pm.hook.gan_sample_fake_labels(n=n, rng=self.np_rng, dataset=self.training_set,
                                                     class_counts=self.class_counts, real_labels=real_c)
        return check_labels(labels, n, self.c_dim, "gan_sample_fake_labels", self.host.answerer("gan_sample_fake_labels"))

    def fetch_data(self):
        with torch.autograd.profiler.record_function("data_fetch"):
            real_img, real_c = next(self.training_set_iterator)
            self.samples_consumed += real_img.shape[0]
            real_img = real_img.to(self.device).to(torch.float32) / 127.5 - 1
            real_c = real_c.to(self.device)
            real_c = check_labels(self.pm.hook.gan_real_labels(images=real_img, labels=real_c, cur_nimg=self.cur_nimg),
                                  real_img.shape[0], self.c_dim, "gan_real_labels", self.host.answerer("gan_real_labels"))
            n = len(self.phases) * self.batch_size
            all_gen_z = torch.randn([n, self.G.z_dim], generator=self.z_gen).to(self.device)
            all_gen_c = self.sample_fake_labels(n, real_c).to(self.device)

        def share(t):  # Per phase: this process's every num_gpus-th sample, in micro-batches.
            return [chunk[self.rank::self.num_gpus].split(self.batch_gpu) for chunk in t.split(self.batch_size)]

        return dnnlib.EasyDict(real_img=real_img.split(self.batch_gpu), real_c=real_c.split(self.batch_gpu),
                               gen_z=share(all_gen_z), gen_c=share(all_gen_c))

    def run_phases(self, data):
        ada_signal = self.ada.accumulate if self.ada is not None else None
        for phase, phase_gen_z, phase_gen_c in zip(self.phases, data.gen_z, data.gen_c):
            if self.batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for extra in phase.extras:
                extra.opt.zero_grad(set_to_none=True)
                for p in extra.params:
                    p.requires_grad_(True)
            for real_img, real_c, gen_z, gen_c in zip(data.real_img, data.real_c, phase_gen_z, phase_gen_c):
                accumulate_gradients(self.loss, self.host, phase=phase.name, real_img=real_img, real_c=real_c,
                                     gen_z=gen_z, gen_c=gen_c, gain=phase.interval, cur_nimg=self.cur_nimg,
                                     ada_signal=ada_signal)
            phase.module.requires_grad_(False)
            for extra in phase.extras:
                for p in extra.params:
                    p.requires_grad_(False)
            with torch.autograd.profiler.record_function(phase.name + "_opt"):
                self.step_optimizer(phase.opt)
                for extra in phase.extras:
                    self.step_optimizer(extra.opt)

    def step_optimizer(self, opt):
        """Average gradients over ranks, replace NaN/inf, step."""
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if len(params) > 0:
            flat = torch.cat([p.grad.flatten() for p in params])
            if self.num_gpus > 1:
                torch.distributed.all_reduce(flat)
                flat /= self.num_gpus
            # On the CPU, one process with finite gradients (nearly every step) has nothing to write back:
            # skipping the per-tensor copies saves ~80 small ops a step, which a 16 px CPU step is made of.
            # (On CUDA the finiteness test would cost a synchronisation instead.)
            if self.num_gpus > 1 or self.device.type != "cpu" or not bool(torch.isfinite(flat).all()):
                misc.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
                grads = [g.view_as(p) for p, g in zip(params, flat.split([p.numel() for p in params]))]
                torch._foreach_copy_([p.grad for p in params], grads)
        opt.step()

    def sync_buffers(self):
        """Average over ranks the buffers G's modules declare in ``rank_averaged_buffers`` (running averages of w):
        each rank tracked its share of the batch, and the tracking is linear in the batch means, so the average is
        what one process would have. Other buffers are equal on every rank already."""
        buffers = [getattr(m, name) for m in self.G.modules() for name in getattr(m, "rank_averaged_buffers", ())]
        if self.num_gpus > 1 and buffers:
            flat = torch.cat([b.flatten() for b in buffers])
            torch.distributed.all_reduce(flat)
            flat /= self.num_gpus
            for b, value in zip(buffers, flat.split([b.numel() for b in buffers])):
                b.copy_(value.reshape(b.shape))

    def update_ema(self):
        self.sync_buffers()
        with torch.autograd.profiler.record_function("Gema"):
            ema_nimg = self.c.ema_kimg * 1000
            if self.c.ema_rampup is not None:
                ema_nimg = min(ema_nimg, self.cur_nimg * self.c.ema_rampup)
            ema_beta = 0.5 ** (self.batch_size / max(ema_nimg, 1e-8))
            # NVIDIA's p_ema = p.lerp(p_ema, beta), bit for bit, as two multi-tensor ops instead of two per tensor.
            ema_params, params = list(self.G_ema.parameters()), list(self.G.parameters())
            torch._foreach_copy_(ema_params, torch._foreach_lerp(params, ema_params, ema_beta))
            torch._foreach_copy_(list(self.G_ema.buffers()), list(self.G.buffers()))

    def update_ada(self):
        if self.ada is not None and self.batch_idx % self.c.ada_interval == 0:
            r = self.ada.update()
            if r is not None:
                training_stats.report("Progress/ada_r", r)

    def train_step(self):
        self.pm.hook.gan_step(ctx=self.ctx)
        data = self.fetch_data()
        self.run_phases(data)
        self.update_ema()
        self.cur_nimg += self.batch_size
        self.batch_idx += 1
        self.update_ada()

    # ------------------------------------------------------------------ tick steps

    def report_tick(self, done):
        tick_end_time = time.time()
        kimg = self.cur_nimg / 1e3
        sec_per_tick = tick_end_time - self.tick_start_time
        sec_per_kimg = sec_per_tick / max(self.cur_nimg - self.tick_start_nimg, 1) * 1e3
        remaining_kimg = max(self.c.total_kimg - kimg, 0)
        fields = [
            f"tick {training_stats.report0('Progress/tick', self.cur_tick):<5d}",
            f"kimg {training_stats.report0('Progress/kimg', kimg):<8.1f}",
            f"time {dnnlib.util.format_time(training_stats.report0('Timing/total_sec', tick_end_time - self.start_time)):<12s}",
            f"sec/tick {training_stats.report0('Timing/sec_per_tick', sec_per_tick):<7.1f}",
            f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', sec_per_kimg):<7.2f}",
            f"maintenance {training_stats.report0('Timing/maintenance_sec', self.maintenance_time):<6.1f}",
            f"cpumem {training_stats.report0('Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30):<6.2f}",
        ]
        if self.device.type == "cuda":
            fields.append(f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(self.device) / 2**30):<6.2f}")
            torch.cuda.reset_peak_memory_stats()
        p = float(self.augment_pipe.p) if self.augment_pipe is not None else 0
        fields.append(f"augment {training_stats.report0('Progress/augment', p):.3f}")
        if self.ada is not None and self.ada.last_r is not None:
            fields.append(f"ada_r {self.ada.last_r:.3f}")
        if not done:  # From the speed since the first tick: start-up and first-call costs are not the pace.
            if self.eta_origin is None or self.cur_nimg <= self.eta_origin[1]:
                fields.append("eta ?")
            else:
                steady = (tick_end_time - self.eta_origin[0]) / (self.cur_nimg - self.eta_origin[1]) * 1e3
                fields.append(f"eta {dnnlib.util.format_time(remaining_kimg * steady)}")
        training_stats.report0("Timing/total_hours", (tick_end_time - self.start_time) / (60 * 60))
        training_stats.report0("Timing/total_days", (tick_end_time - self.start_time) / (24 * 60 * 60))
        self.log(" ".join(fields))
        if p > 0.8 and self.cur_tick % 10 == 0:
            self.log(f"Warning: augmentation probability p={p:.2f} is high: D overfits strongly; "
                     "consider more data, --mirror=1 or a smaller network.")

    def grid_suffix(self):
        """NVIDIA's name (whole kimg) unless this run already used it: then the image count too, as for snapshots,
        so a grid never replaces an earlier one."""
        plain = f"{self.cur_nimg // 1000:06d}.png"
        if not os.path.exists(os.path.join(self.run_dir, "fakes" + plain)):
            return plain
        return f"{self.cur_nimg // 1000:06d}-{self.cur_nimg:09d}.png"

    def save_images(self, suffix):
        """Every plugin's grids (sg2ada's is fakes) as <prefix><suffix>."""
        grids = {}
        for _plugin, answer in self.host.each("gan_snapshot_images", G_ema=self.G_ema, grid_z=self.grid_z,
                                              grid_c=self.grid_c):
            grids.update(answer or {})
        for prefix, images in grids.items():
            path = os.path.join(self.run_dir, f"{prefix}{suffix}")
            try:
                image_grid.save_image_grid(images, path, drange=[-1, 1], grid_size=self.grid_size,
                                           scale=self.c.grid_scale, gap=self.c.grid_gap)
            except OSError as exc:
                raise self.write_error("the image grid", path, exc) from None
            if prefix == "fakes":
                self.last_grid = path

    def save_network(self):
        """Snapshot, then its training state bound to it by SHA-256 (see training/checkpoint.py)."""
        path = checkpoint.snapshot_path(self.run_dir, self.cur_nimg)
        modules = dict(G=self.G, D=self.D, G_ema=self.G_ema, augment_pipe=self.augment_pipe)
        for name in ("G", "D", "G_ema"):
            bad = [k for k, t in modules[name].state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
            if bad:
                raise NonFiniteLossError(f"{name} holds non-finite values at kimg {self.cur_nimg / 1000:g} "
                                         f"({', '.join(bad[:4])}); no snapshot was written over the last good one")
        state = self.state_dict()  # On every rank: it gathers the ranks' RNG states.
        self.last_checkpoint_time = time.time()
        if self.rank == 0:
            try:
                checkpoint.save_snapshot(path, self.c.training_set_kwargs, modules,
                                         before_rename=lambda: crash_point("snapshot-temp", self.cur_nimg))
                crash_point("snapshot", self.cur_nimg)
                state["snapshot_sha256"] = dnnlib.util.file_sha256(path)
                state_path = checkpoint.state_path_for(path)
                checkpoint.save_state(state_path, state, before_rename=lambda: crash_point("state-temp", self.cur_nimg))
                crash_point("state", self.cur_nimg)
                if self.c.export_safetensors:
                    from training.safe_export import export_networks

                    export_networks({"G_ema": self.G_ema}, os.path.splitext(path)[0] + ".safetensors",
                                    checkpoint.upstream_dataset_kwargs(self.c.training_set_kwargs))
            except OSError as exc:
                raise self.write_error("the checkpoint", path, exc) from None
        return path

    def write_error(self, what, path, exc):
        """The message of a failed write (disk full, permissions): what is intact and what to do next."""
        snapshot = checkpoint.latest_snapshot(self.run_dir)
        then = (f"resume with --resume={self.run_dir} (its newest complete checkpoint is used)" if snapshot else
                "start the run again (nothing worth resuming was written yet)")
        return CheckpointWriteError(f"writing {what} {path} failed: {exc.strerror or exc} ({exc.filename or path}); "
                                    f"earlier files are intact. Free disk space or fix the permissions, then {then}")

    def prune_state_checkpoints(self):
        """Delete the --state-ticks checkpoints older than the one just completed (they only bridge a crash)."""
        if self.rank != 0:
            return
        for old in self.state_checkpoints:
            for path in (old, checkpoint.state_path_for(old), os.path.splitext(old)[0] + ".safetensors"):
                if os.path.exists(path):
                    os.remove(path)
        self.state_checkpoints = []

    def run_metrics(self, snapshot_pkl):
        if len(self.c.metrics) == 0:
            return
        from metrics import metric_main

        self.log("Evaluating metrics...")
        for metric in self.c.metrics:
            if metric in self.skipped_metrics:
                continue
            try:
                result_dict = metric_main.calc_metric(metric=metric, G=self.G_ema, dataset_kwargs=self.c.training_set_kwargs,
                                                      num_gpus=self.num_gpus, rank=self.rank, device=self.device,
                                                      progress=self.rank == 0)  # A progress bar on the console.
            except (OSError, RuntimeError, ValueError) as exc:
                self.log(f"Warning: metric {metric} skipped for the rest of this run: {exc}")
                self.skipped_metrics.add(metric)  # Said once, not at every snapshot.
                continue
            if self.rank == 0:
                metric_main.report_metric(result_dict, run_dir=self.run_dir, snapshot_pkl=snapshot_pkl)
            self.stats_metrics.update(result_dict.results)
            self.last_metrics[metric] = result_dict.results

    def write_stats(self, timestamp):
        self.stats_collector.update()
        stats_dict = self.stats_collector.as_dict()
        if self.loggers is not None:
            self.loggers.write(stats_dict, self.stats_metrics, timestamp=timestamp, cur_nimg=self.cur_nimg)
        self.stats_metrics = dict()

    def end_tick(self, done):
        self.report_tick(done)
        maintenance_start = time.time()
        if self.c.abort_fn is not None and self.c.abort_fn():
            done = True
            self.log("Aborting...")
        snap = self.cur_tick % (self.c.network_snapshot_ticks or 1) == 0 or done
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if self.rank == 0 and self.c.image_snapshot_ticks is not None and (done or self.cur_tick % self.c.image_snapshot_ticks == 0):
                self.save_images(self.grid_suffix())
            if self.c.network_snapshot_ticks is not None and snap:
                snapshot_pkl = self.save_network()
                self.prune_state_checkpoints()
                self.run_metrics(snapshot_pkl)
            elif self.agree((self.c.state_ticks and self.cur_tick % self.c.state_ticks == 0) or self.checkpoint_due()):
                path = self.save_network()  # A checkpoint to resume from if the job dies; no metrics.
                self.prune_state_checkpoints()
                self.state_checkpoints.append(path)
        self.write_stats(timestamp=time.time())
        if snap and self.c.run_report and self.rank == 0:
            self.refresh_report()
        if self.c.progress_fn is not None:
            self.c.progress_fn(self.cur_nimg // 1000, self.c.total_kimg)
        self.cur_tick += 1
        self.tick_start_nimg = self.cur_nimg
        self.tick_start_time = time.time()
        if self.eta_origin is None:
            self.eta_origin = (self.tick_start_time, self.cur_nimg)
        self.maintenance_time = self.tick_start_time - maintenance_start
        return done

    def checkpoint_due(self):
        minutes = self.c.state_minutes
        return bool(minutes) and time.time() - self.last_checkpoint_time >= minutes * 60

    def agree(self, flag):
        """flag as rank 0 and the others agree on it: any rank's True (time- and signal-based decisions differ
        between processes, but checkpoints and stops are collective)."""
        flag = bool(flag)
        if self.num_gpus == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def refresh_report(self):
        from training import report

        if not report.matplotlib_available():
            if not self.report_hint_shown:
                self.log("Notice: no run report (report.html with plots): it needs matplotlib; "
                         "pip install matplotlib, then python -m training.report RUN_DIR at any time.")
                self.report_hint_shown = True
            return
        try:
            report.write_report(self.run_dir)
        except Exception as exc:  # A plotting problem must never stop a training run.
            self.log(f"Warning: the run report was not refreshed: {exc.__class__.__name__}: {exc}")

    def print_summary(self):
        """Where the results are, and the final metrics, once the run has finished."""
        from training.report import PER_CLASS_RE

        self.log("")
        self.log(f"Finished at kimg {self.cur_nimg / 1000:g} after {dnnlib.util.format_time(time.time() - self.start_time)}.")
        if self.last_grid is not None:
            self.log(f"Final samples: {self.last_grid}")
        for metric, results in self.last_metrics.items():
            shown = {k: v for k, v in results.items() if not PER_CLASS_RE.match(k)}  # Per-class values: see the report.
            self.log(f"Final {metric}: " + ", ".join(f"{k} = {v:.4f}" for k, v in shown.items())
                     + f" (recorded in {os.path.join(self.run_dir, 'metric-' + metric + '.jsonl')})")
        if os.path.isfile(os.path.join(self.run_dir, "report.html")):
            self.log(f"Run report: {os.path.join(self.run_dir, 'report.html')}")

    # ------------------------------------------------------------------ main loop

    def run(self):
        if not self.started:
            self.start()
        total_nimg = self.c.total_kimg * 1000
        self.log(f"Training for {self.c.total_kimg} kimg... (Ctrl-C stops after the current step with a checkpoint)")
        self.tick_start_time = time.time()
        iterations = 0
        with StopSignals(self.log) as stop:
            while True:
                self.train_step()
                iterations += 1
                done = self.cur_nimg >= total_nimg
                if self.c.max_iterations is not None and iterations >= self.c.max_iterations:
                    done = True
                stopping = self.agree(stop.requested)
                tick_due = self.cur_nimg >= self.tick_start_nimg + self.c.kimg_per_tick * 1000
                # Tick 0 ends after the first iteration (as upstream), later ticks every kimg_per_tick.
                if not done and not stopping and self.cur_tick != 0 and not tick_due:
                    continue
                done = self.end_tick(done or stopping)
                if done:
                    break
        if self.loggers is not None:
            self.loggers.close()
        self.print_summary()
        if stopping and self.cur_nimg < total_nimg:
            self.log(f"Stopped at kimg {self.cur_nimg / 1000:g} with a checkpoint. Continue with:\n"
                     f"  python train.py --resume={self.run_dir}")
        self.log("Exiting...")

    def log(self, message):
        if self.rank == 0:
            print(message, flush=True)


def transfer_gaps(src, dst):
    """(tensors of dst's own network that src lacks, tensors of src that dst has no place for). Plugin extensions,
    modules a plugin removed (e.g. a head replaced by its own) and the label embedding of an unconditional src
    (a plugin that adds conditioning to a plain pickle) do not count: plugins may resume plain pickles."""
    src_names = {name for name, _ in misc.named_params_and_buffers(src)}
    dst_names = {name for name, _ in misc.named_params_and_buffers(dst)}

    def core(name):
        return "extensions." not in name

    def removed(name):
        parent = name.rpartition(".")[0]
        while parent:
            head, _, attr = parent.rpartition(".")
            holder = dst.get_submodule(head) if head else dst
            if getattr(holder, attr, "absent") is None:
                return True
            if not hasattr(holder, attr):
                return False
            parent = head
        return False

    def new_embedding(name):  # G's label embedding, or D's whole label mapping (an unconditional D has none).
        if getattr(src, "c_dim", None) != 0:
            return False
        return name.startswith("mapping.embed.") or (name.startswith("mapping.") and getattr(src, "mapping", None) is None)

    missing = sorted(n for n in dst_names - src_names if core(n) and not new_embedding(n))
    unused = sorted(n for n in src_names - dst_names if core(n) and not _safe(removed, n, dst))
    return missing, unused


def _safe(fn, name, dst):
    try:
        return fn(name)
    except AttributeError:
        return False


def default_cpu_threads(num_processes=1):
    """Threads per process on the CPU: $OMP_NUM_THREADS when set, else the cores this process may use shared by the
    processes of this machine (never oversubscribed: waiting threads would compete for the cores)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", num_processes))
    return max(1, cores // max(local, 1))


def lazy_reg_opt_kwargs(opt_kwargs, reg_interval):
    """Optimiser kwargs for a network whose regulariser runs every reg_interval steps (NVIDIA's lr/betas scaling)."""
    if reg_interval is None:  # Betas as floats: torch's Adam refuses a mix of int and float ([0, 0.99]).
        return dnnlib.EasyDict(opt_kwargs, betas=[float(b) for b in opt_kwargs.get("betas", [0.9, 0.999])]) \
            if "betas" in opt_kwargs else opt_kwargs
    mb_ratio = reg_interval / (reg_interval + 1)
    opt_kwargs = dnnlib.EasyDict(opt_kwargs)
    opt_kwargs.lr = opt_kwargs.lr * mb_ratio
    opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
    return opt_kwargs


def accumulate_gradients(loss, host, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, ada_signal=None):
    """Run one phase on one micro-batch: the one place where loss terms are weighted, reported, summed and
    backpropagated. Each pass of the phase (loss.passes) gets the plugins' terms for its context, then
    `sum(mean(term) * weight) * gain` is backpropagated before the next pass runs."""
    hook = host.pm.hook

    def rebuild_batch(phase, z, c, cur_nimg):
        new_z, new_c = hook.gan_generator_batch(phase=phase, z=z, c=c, cur_nimg=cur_nimg)
        if new_z.shape != z.shape or new_c.shape != c.shape:
            raise PluginError(f"plugin {host.answerer('gan_generator_batch')!r}: gan_generator_batch must return z "
                                 "and c of the shapes it received")
        return new_z, new_c

    for loss_pass in loss.passes(phase, real_img, real_c, gen_z, gen_c, cur_nimg, rebuild_batch=rebuild_batch,
                                 select_real_logits=lambda ctx, default: hook.gan_real_logits(ctx=ctx)):
        ctx = loss_pass.ctx
        check_finite_terms(loss_pass.terms, ctx.phase, cur_nimg)  # Plugin terms check themselves.
        answers = sorted(host.each("gan_loss_terms", ctx=ctx), key=lambda pa: host.order[pa[0]])  # Summed in --plugins order.
        terms = loss_pass.terms + [LossTerm.from_plugin(plugin, term, ctx, _batch_size_of(ctx))
                                   for plugin, answer in answers for term in answer or []]
        base_weight = None
        total = loss_pass.anchor if loss_pass.anchor is not None else 0
        for term in terms:
            training_stats.report(f"Loss/{term.owner}/{term.name}", term.value)
            weight = float(term.weight)
            if term.adversarial:
                if base_weight is None:
                    base_weight = base_loss_weight(host, phase=ctx.phase, cur_nimg=cur_nimg)
                weight *= base_weight
            elif weight == 0:
                continue  # A switched-off plugin term: reported, not backpropagated.
            total = total + term.value.mean() * weight
        if loss_pass.ada_signal is not None and ada_signal is not None:
            ada_signal(loss_pass.ada_signal)
        with torch.autograd.profiler.record_function(loss_pass.name + "_backward"):
            total.mul(gain).backward()


def base_loss_weight(host, phase, cur_nimg):
    """The product of the plugins' gan_base_loss_weight answers."""
    weight = 1.0
    for plugin, answer in host.each("gan_base_loss_weight", phase=phase, cur_nimg=cur_nimg):
        if answer is None:
            continue
        if not np.isfinite(float(answer)):
            raise PluginError(f"plugin {plugin!r}: gan_base_loss_weight returned {answer!r}")
        weight *= float(answer)
    return weight


def check_finite_terms(terms, phase, cur_nimg):
    """Stop with the term's name before a NaN/inf is backpropagated into the weights (and later a snapshot)."""
    values = torch.stack([term.value.detach().float().sum() for term in terms]) if terms else None
    if values is None or bool(torch.isfinite(values).all()):  # One device sync per pass.
        return
    bad = [term for term, value in zip(terms, values.tolist()) if not np.isfinite(value)]
    names = ", ".join(f"Loss/{t.owner}/{t.name} = {float(t.value.detach().float().mean())}" for t in bad)
    hint = " (R1: lower --gamma)" if any(t.name == "reg" and t.owner == "D" for t in bad) else ""
    raise NonFiniteLossError(f"non-finite loss at kimg {cur_nimg / 1000:g}, phase {phase}: {names}{hint}; "
                             "the run stops before the value reaches the weights or a snapshot")


def _batch_size_of(ctx):
    for tensor in (ctx.real_img, ctx.gen_z):
        if tensor is not None:
            return tensor.shape[0]
    return None


def _all_reduce_sum(tensor):
    tensor = tensor.clone()
    torch.distributed.all_reduce(tensor)
    return tensor


def crash_point(name, cur_nimg):
    """Fault injection for the crash-consistency test: with $GAN_CRASH_AT=name and the first write at or after
    $GAN_CRASH_AT_NIMG images, the process dies at once (as under SIGKILL: no cleanup, no flush)."""
    if os.environ.get("GAN_CRASH_AT") == name and cur_nimg >= int(os.environ.get("GAN_CRASH_AT_NIMG", "0")):
        os._exit(137)


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption) ask the loop to stop after the current step, with a
    checkpoint; a second Ctrl-C stops at once. Only in the main thread (where Python delivers signals)."""

    def __init__(self, log):
        self.log = log
        self.requested = False
        self.previous = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        import signal

        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.log(f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint "
                 "(Ctrl-C again to stop at once, without one)")

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class CheckpointWriteError(RuntimeError):
    """A snapshot or training state could not be written (disk full, permissions); the message names the path."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the iteration, phase and term."""


class SetupError(ValueError):
    """The run cannot start with these inputs (data, resume pickle, plugins); the message says why."""


def training_loop(**kwargs):
    """Set up (every input checked), then train. The launcher made run_dir and removes it if this fails early."""
    try:
        trainer = Trainer(**kwargs)
    except (SetupError, PluginError, DatasetError, checkpoint.StateError, run_lock.RunLockedError) as exc:
        raise SetupError(str(exc)) from exc  # Bad input: data, plugins, a resume that does not fit, a live run.
    except OSError as exc:
        if exc.filename is None:
            raise  # Not about a file of the user's: a bug keeps its traceback.
        raise SetupError(f"{exc.filename}: {exc.strerror or exc}") from exc
    trainer.run()
    return trainer


def write_training_options(run_dir, options):
    """training_options.json, written atomically."""
    dnnlib.util.atomic_write_text(os.path.join(run_dir, "training_options.json"), json.dumps(options, indent=2))
