"""Every hook the trainer calls, in one place.

Rules that hold for all hooks:
  * **Keyword calls, subset signatures.** The trainer calls hooks with keyword arguments only; an
    implementation may accept any subset of them (pluggy passes only the names it asks for), so new
    arguments can be added later without breaking plugins.
  * **One call order.** Every hook runs in `--plugins` order (the order of the run config's
    `plugin_kwargs`), whether its results are collected or the first non-None one wins.
  * **Options in the constructor.** A plugin is a class (or a module with `create_plugin(**options)`);
    the host constructs it with its resolved options as keyword arguments, from the run config, on
    every rank. `gan_add_options` is therefore called on the class before construction and must be a
    `@staticmethod` (or a module-level function).
  * **Ranks.** "Every rank" hooks must behave identically on all processes (same tensors, same control
    flow); "rank 0" hooks run on the process that writes files.
  * **firstresult** hooks (declared below with `firstresult=True`) may be answered by one enabled
    plugin only; two plugins answering one is a start-up conflict, never resolved silently.
  * Tensors placed into networks must live in `@persistence.persistent_class` modules whose source
    file imports only torch, numpy, dnnlib and torch_utils: snapshots must run without the plugin.
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import click
import numpy as np
import pluggy
import torch

PROJECT_NAME = "gan_plugins"  # pluggy project name and entry-point group of third-party plugins.

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

LossTerm = Tuple[str, float, torch.Tensor]  # (name, weight, per-sample tensor [N] or scalar)

# Published state: ``jobs.shared`` (gan_step) is one dict for all plugins, where a plugin publishes a value
# that others read, so methods compose without importing each other. Write in gan_step; read at any later
# point of the iteration (keep a reference to the dict). Keys and their meaning:
SHARED_KEYS = {
    "label_weight": "float in [0, 1]: how strongly the class label acts in this iteration (a plugin that "
                    "ramps conditioning in, e.g. transitional's lambda_t); absent = 1",
    "full_res_loss_weight": "float: weight of the full-resolution adversarial terms when a plugin adds terms at "
                            "another resolution (UTLO's a_c); plugins adding full-resolution adversarial terms of "
                            "their own scale them by it; absent = 1",
}


# ----------------------------------------------------------------------------- setup


@hookspec
def gan_add_options() -> List[click.Option]:
    """Declare this plugin's command-line options.

    Called on the plugin's class (a ``@staticmethod``) or module before the plugin is constructed,
    while train.py builds its command; the launching process only. Option names must carry the
    plugin's prefix (e.g. ``--nt-sigma``); giving one without enabling the plugin is an error. The
    resolved values become the plugin's constructor keyword arguments (the click destination names)
    and are recorded in ``training_options.json`` under ``plugin_kwargs``.
    """


@hookspec
def gan_configure(config: Dict[str, Any], dataset_kwargs: Dict[str, Any]) -> None:
    """Validate and adjust the run configuration before it is written and before networks are built.

    Called once per run, by the launcher (train.py) on the launching process, after every option is
    known; the adjusted config is what ``training_options.json`` records and what every rank receives,
    so a replayed run (``--config``) does not call it again. Keep no state here: the instance that
    trains is constructed later from the config.

    :param config: the EasyDict passed to the training loop (G_kwargs, D_kwargs, loss_kwargs,
        batch_size, batch_gpu, fake_labels, total_kimg, ...); change it in place.
    :param dataset_kwargs: the training set's kwargs, with ``resolution`` and ``use_labels`` filled in.
    :raises plugins.PluginError: with a message that says what to change.
    """


@hookspec
def gan_dataset_ready(dataset: Any, class_counts: Optional[np.ndarray]) -> None:
    """The training set is open. Once per run, every rank, before networks are built.

    :param dataset: the ``training.dataset.Dataset``.
    :param class_counts: int array [label_dim] for class-labelled data, else None.
    :raises plugins.PluginError: to stop before networks are built (e.g. labels are required).
    """


@hookspec(firstresult=True)
def gan_label_dim(dataset: Any, label_dim: int) -> Optional[int]:
    """The width of the networks' labels (c_dim), when it is not the dataset's. Once per run, every rank,
    after gan_dataset_ready and before networks are built.

    A plugin that makes its own labels (e.g. k clusters) answers here, on a dataset with or without labels;
    it then also provides the real labels (gan_real_labels) and usually a label prior (``jobs.set_label_prior``
    or ``training.networks.set_label_prior``) from which fakes, grids, generate.py and the metrics draw c.

    :param dataset: the training set.
    :param label_dim: the dataset's label width (0 without ``--cond=1`` or without labels).
    :returns: the networks' c_dim, or None to keep ``label_dim``.
    """


@hookspec
def gan_extend_networks(G: torch.nn.Module, D: torch.nn.Module, dataset: Any) -> None:
    """Attach extension modules: ``G.mapping.extensions[name] = module``, ``D.extensions[name] = module``.

    Once per run, every rank, right after construction and before optimisers exist (so D extension
    parameters are trained by D's optimiser) and before resumed weights are copied in.

    :param G: the generator (training copy; G_ema is copied from it afterwards).
    :param D: the discriminator.
    :param dataset: the training set.
    """


@hookspec
def gan_extra_optimizers(G: torch.nn.Module, D: torch.nn.Module, G_opt_kwargs: Mapping[str, Any],
                         D_opt_kwargs: Mapping[str, Any]) -> Optional[Sequence[Dict[str, Any]]]:
    """Optimisers for parameters outside G and D (e.g. the trainable heads of a vision-aided discriminator).
    Once per run, every rank, after networks, extensions and frozen modules exist and before resume.

    :param G: the generator.
    :param D: the discriminator.
    :param G_opt_kwargs: G's optimiser kwargs as configured (before the lazy-regularisation ratio).
    :param D_opt_kwargs: D's, likewise (e.g. to give a head D's learning rate).
    :returns: a list of dicts ``{name, params, opt_kwargs, step_with}``: ``params`` a list of parameters on
        the training device, ``opt_kwargs`` like G_opt_kwargs (``class_name``, ``lr``, ``betas``...),
        ``step_with`` 'G' or 'D'. The loop zeroes them with that network's phases, makes their parameters
        trainable only during those phases, averages their gradients over ranks, replaces NaN/inf and steps
        them after each of those phases, with that network's lazy-regularisation ratio applied to ``lr`` and
        ``betas``; their state is saved in the training state and restored on resume (an optimiser new to
        a resumed run starts fresh, with a notice).
    """


@hookspec
def gan_frozen_modules(device: torch.device) -> Optional[Dict[str, torch.nn.Module]]:
    """Pretrained modules that are used but never trained (e.g. a vision backbone). Once per run, every rank.

    The host moves each to ``device``, puts it in eval mode with ``requires_grad=False``, keeps it out of
    every optimiser, and never writes it into snapshots or the training state (keep your own reference;
    gradients may still flow *through* it to G's images).

    :param device: the training device.
    :returns: {name: module}; names must be unique across plugins.
    """


@hookspec
def gan_check_resume(snapshot: Mapping[str, Any], state: Optional[Mapping[str, Any]]) -> None:
    """A snapshot is about to be resumed. Once per run, every rank, before its weights are copied.

    :param snapshot: the loaded pickle dict (G, D, G_ema, augment_pipe, training_set_kwargs).
    :param state: the training-state dict, or None for a weights-only resume.
    :raises plugins.PluginError: if the snapshot cannot continue under this plugin's options.
    """


@hookspec
def gan_train_start(G: torch.nn.Module, D: torch.nn.Module, G_ema: torch.nn.Module, device: torch.device,
                    rank: int, num_gpus: int, random_seed: int, run_dir: str, batch_size: int) -> None:
    """Networks, optimisers and the data iterator exist; training is about to start. Once, every rank.

    :param G: the training generator (in train mode between steps).
    :param D: the discriminator.
    :param G_ema: the moving-average generator (eval mode; used for snapshots and metrics).
    :param device: the device this process trains on.
    :param rank: this process's rank in [0, num_gpus).
    :param num_gpus: the number of processes.
    :param random_seed: the run's seed (seed private generators from it and ``rank``).
    :param run_dir: the run directory. A single-process run creates it only after set-up succeeded, i.e. after
        this hook: write files there from gan_step / gan_tick on, not here.
    :param batch_size: real images per iteration, all processes together.
    """


# ----------------------------------------------------------------------------- every iteration


@hookspec
def gan_step(cur_nimg: int, batch_idx: int, jobs: Any) -> None:
    """Start of every iteration, before the batch is fetched. Every rank.

    Schedules must be computed from ``cur_nimg`` in closed form (never by counting calls), so that a
    resumed run continues exactly. Periodic jobs with the data (e.g. re-clustering every N kimg) run here.

    :param cur_nimg: real images shown so far (all ranks together).
    :param batch_idx: iterations done so far.
    :param jobs: ``training.training_loop.IterationJobs``: ``D``, ``dataset``, ``device``, ``rank``,
        ``num_gpus``, ``random_seed``; ``frozen_D()`` (an eval-mode, gradient-free copy of D made on
        demand); ``on_rank0_then_broadcast(fn)`` (runs ``fn()`` on rank 0 and returns its picklable result
        on every rank); ``set_class_counts(counts)`` (announces new class counts: gan_class_counts_changed);
        ``set_label_prior(probs)`` (G's and G_ema's label prior); ``shared`` (published state, see
        SHARED_KEYS: set values here, read them later in the iteration).
    """


@hookspec(firstresult=True)
def gan_real_labels(images: torch.Tensor, labels: torch.Tensor, cur_nimg: int) -> Optional[torch.Tensor]:
    """Replace the labels of a real batch (e.g. pseudo-labels). Every rank, identical results.

    :param images: the real batch, float [N, C, H, W] in [-1, 1], on the training device.
    :param labels: the dataset's labels for it, float [N, label_dim].
    :param cur_nimg: real images shown so far.
    :returns: a float tensor shaped like ``labels``, or None to keep them.
    """


@hookspec(firstresult=True)
def gan_sample_fake_labels(n: int, rng: np.random.RandomState, dataset: Any, class_counts: Optional[np.ndarray],
                           real_labels: torch.Tensor) -> Optional[np.ndarray]:
    """Labels for ``n`` generated images (all phases of one iteration). Every rank.

    :param n: how many labels.
    :param rng: the trainer's numpy RandomState (saved in the training state for exact resume).
    :param dataset: the training set.
    :param class_counts: the current class counts (the dataset's, or the last ``set_class_counts``).
    :param real_labels: this iteration's real labels [batch, c_dim], after gan_real_labels.
    :returns: float32 [n, c_dim] (one-hot), or None for the default: G's label prior when it has one, else
        ``--fake-labels``.
    """


@hookspec
def gan_class_counts_changed(class_counts: np.ndarray) -> None:
    """The classes' image counts changed (a plugin relabelled the data, e.g. re-clustering). Every rank.

    :param class_counts: int array [c_dim].
    """


@hookspec(firstresult=True)
def gan_grid_labels(grid_size: Tuple[int, int], labels: np.ndarray) -> Optional[np.ndarray]:
    """Labels of the snapshot grid (``fakes*.png``), when the dataset's do not fit the network. Rank 0.

    :param grid_size: (columns, rows).
    :param labels: the dataset's labels of the grid's real images, [columns * rows, label_dim].
    :returns: float32 [columns * rows, c_dim], or None (then G's label prior, else the dataset's labels).
    """


@hookspec(firstresult=True)
def gan_generator_batch(phase: str, z: torch.Tensor, c: torch.Tensor,
                        cur_nimg: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Rebuild a generator batch (e.g. twins that share z and c). Every rank.

    :param phase: ``'Gmain'`` or ``'Dmain'``.
    :param z: latents [N, z_dim].
    :param c: labels [N, c_dim].
    :param cur_nimg: real images shown so far.
    :returns: (z, c) of the same shapes, or None to keep them.
    """


@hookspec
def gan_base_loss_weight(phase: str, cur_nimg: int) -> Optional[float]:
    """Multiplier of the base adversarial loss terms in ``phase``. Every rank.

    :param phase: ``'Gmain'`` or ``'Dmain'``.
    :param cur_nimg: real images shown so far.
    :returns: a finite float (the weights of all plugins are multiplied), or None for 1.
    """


@hookspec
def gan_loss_terms(ctx: Mapping[str, Any]) -> Optional[Sequence[LossTerm]]:
    """Extra loss terms of one phase and micro-batch. Every rank.

    :param ctx: an EasyDict with ``phase``, ``cur_nimg``, ``device``, ``G``, ``D``, ``augment_pipe`` and
        ``loss`` (the StyleGAN2Loss: ``run_G``, ``run_D`` and ``augment`` are the API for extra passes),
        plus the phase's data. Gmain: gen_z, gen_c, gen_img, gen_ws, g_capture (mapping streams, block
        outputs), gen_logits, d_capture (D's features of the fake pass). Greg: gen_z, gen_c, gen_img,
        gen_ws, g_capture. Dmain: real_img, real_c, real_logits, d_capture (real pass) and the fake batch
        (gen_z, gen_c, gen_img detached, g_capture). Dreg: real_img, real_img_tmp, real_c, real_logits.
    :returns: a list of (name, weight, per-sample tensor [N] or scalar). The host adds
        weight * mean(term) to the phase loss, reports each under ``Loss/<plugin>/<name>`` and refuses
        non-finite terms or terms of the wrong shape, naming the plugin.
    """


@hookspec(firstresult=True)
def gan_real_logits(ctx: Mapping[str, Any]) -> Optional[torch.Tensor]:
    """The real-image logits that feed R1 and the ADA signal (default: D's output). Every rank.

    :param ctx: as for gan_loss_terms in Dmain/Dreg.
    :returns: a tensor [N, 1] computed from ``ctx.real_img_tmp`` (R1 differentiates it), or None.
    """


# ----------------------------------------------------------------------------- ticks, snapshots, state


@hookspec
def gan_snapshot_images(G_ema: torch.nn.Module, grid_z: Sequence[torch.Tensor],
                        grid_c: Sequence[torch.Tensor]) -> Optional[Dict[str, np.ndarray]]:
    """Extra image grids written beside each ``fakesNNNNNN.png``. Rank 0 only.

    :param G_ema: the moving-average generator (eval mode).
    :param grid_z: latents of the grid, split into per-GPU batches.
    :param grid_c: labels of the grid, split likewise.
    :returns: {file prefix: float images [N, C, H, W] in [-1, 1]}, one image per grid cell.
    """


@hookspec
def gan_tick(cur_nimg: int, stats: Mapping[str, Any]) -> None:
    """End of a tick, after statistics were collected and before they are written. Every rank.

    :param cur_nimg: real images shown so far.
    :param stats: {name: EasyDict(num, mean, std)} of the tick (the line stats.jsonl receives).
    """


@hookspec
def gan_state_dict() -> Optional[Dict[str, Any]]:
    """Plugin state for an exact resume (beyond network buffers). Rank 0 writes it.

    :returns: a picklable dict, stored in ``training-state-*.pt`` under the plugin's name.
    """


@hookspec
def gan_load_state_dict(state: Dict[str, Any]) -> None:
    """Restore what gan_state_dict returned. Every rank, during resume, before gan_train_start.

    :param state: this plugin's dict.
    """


@hookspec
def gan_register_metrics(register: Callable) -> None:
    """Add metrics before ``--metrics`` is validated. The launching process and every rank.

    :param register: ``metrics.metric_main.register_metric``; call ``register(fn)`` (or
        ``register(fn, name=..., needs_labels=True)``) for each metric function ``fn(opts) -> dict``.
    """


@hookspec
def gan_train_end(cur_nimg: int, run_dir: str) -> None:
    """Training finished normally (not on an error). Every rank.

    :param cur_nimg: real images shown in all.
    :param run_dir: the run directory.
    """
