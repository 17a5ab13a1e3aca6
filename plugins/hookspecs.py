"""Every hook the trainer calls, in one place (plugin API v3).

The lifecycle of one process (single process, ``--gpus=N`` workers and torchrun ranks alike)::

    launcher   gan_add_options (class)  ->  construct plugins from the run config  ->  gan_configure
    setup      run_dir exists (rank 0 made it; removed again if setup fails)
               dataset opened  ->  gan_label_dim  ->  networks built  ->  gan_extend_networks
               ->  gan_frozen_modules  ->  optimisers (core, then gan_extra_optimizers)
               ->  resume: gan_check_resume, weights and training state restored
               ->  gan_register_metrics  ->  gan_setup(ctx)      (once; sees everything above, final)
    iteration  gan_step(ctx)  ->  gan_real_labels  ->  gan_sample_fake_labels  ->  per phase and micro-batch:
               gan_generator_batch, gan_base_loss_weight, gan_loss_terms(ctx), gan_real_logits(ctx)
    snapshot   gan_grid_labels (first grid only)  ->  gan_snapshot_images  ->  gan_state_dict (rank 0 writes it)

Rules that hold for all hooks:
  * **Keyword calls, subset signatures.** An implementation may accept any subset of a hook's arguments
    (pluggy passes only the names it asks for), so arguments can be added later without breaking plugins.
  * **One call order**: ``--plugins`` order (the run config's ``plugin_kwargs`` order); ``tryfirst``/``trylast``
    as pluggy defines them. The baseline ``sg2ada`` (plugins/sg2ada.py) is always registered and answers every
    firstresult hook ``trylast``: a plugin's answer wins, and there is always one.
  * **firstresult** hooks may be answered by one enabled plugin besides sg2ada; two plugins answering one is a
    start-up error naming both, never resolved silently.
  * **Options in the constructor.** A plugin is a class (or a module with ``create_plugin(**options)``),
    constructed once per process with its resolved options as keyword arguments. ``gan_add_options`` is called
    on the class before construction and must be a ``@staticmethod``.
  * **Ranks.** Hooks run on every rank and must behave identically there (same tensors, same control flow),
    except those marked "rank 0", which run on the process that writes files.
  * Tensors placed into networks must live in ``@persistence.persistent_class`` modules whose source file imports
    only torch, numpy, dnnlib and torch_utils: snapshots must run without the plugin.
  * Errors: raise ``plugins.PluginError`` with a message that says what to change.

Types: ``RunContext`` and ``OptimizerSpec`` are in training/plugin_api.py; ``LossContext`` and ``LossTerm`` in
training/loss.py. Report a scalar of your own with ``torch_utils.training_stats.report("Plugin/<name>", value)``:
it reaches stats.jsonl, TensorBoard/W&B and the run report like the loop's own statistics.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import click
import numpy as np
import pluggy
import torch

from training.loss import LossContext, LossTerm
from training.plugin_api import SHARED_KEYS, OptimizerSpec, RunContext  # noqa: F401 (SHARED_KEYS: re-exported)

PROJECT_NAME = "gan_plugins"  # pluggy project name and entry-point group of plugins (built-in and third-party).

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# Hooks and conventions of API v2 that are gone, with what replaces them (a v2 plugin gets this as its error).
REMOVED_IN_V3 = {
    "gan_dataset_ready": "gan_setup(ctx): ctx.dataset and ctx.class_counts (final, after every plugin's labels)",
    "gan_train_start": "gan_setup(ctx): ctx.G, ctx.D, ctx.G_ema, ctx.device, ctx.rank, ctx.num_gpus, "
                       "ctx.random_seed, ctx.run_dir, ctx.batch_size",
    "gan_load_state_dict": "gan_setup(ctx): state = ctx.restored_state(self), applied when your objects are made",
    "gan_tick": "torch_utils.training_stats.report('Plugin/<name>', value) from any hook (it reaches stats.jsonl)",
    "gan_train_end": "nothing: write files from gan_step or gan_snapshot_images",
    "conflicts": "gan_configure(config): raise PluginError when config.plugin_kwargs holds a plugin you cannot "
                 "run with",
    "requires_plugins": "gan_configure(config): raise PluginError when config.plugin_kwargs lacks a plugin you need",
    "lifts_conflict": "gan_configure(config) of the plugin that refuses the combination",
}
# Arguments renamed in v3: {hook: {old argument: what to use instead}}.
RENAMED_ARGS_IN_V3 = {
    "gan_step": {"jobs": "ctx (a RunContext: ctx.cur_nimg, ctx.batch_idx, ctx.shared, ctx.frozen_D(), ...)",
                 "cur_nimg": "ctx.cur_nimg", "batch_idx": "ctx.batch_idx"},
}


# ----------------------------------------------------------------------------- launcher


@hookspec
def gan_add_options() -> List[click.Option]:
    """Declare this plugin's command-line options. Launcher only; called on the class (a ``@staticmethod``).

    Option names carry the plugin's prefix (e.g. ``--nt-sigma``); giving one without enabling the plugin is an
    error. The resolved values become the constructor's keyword arguments (the click destination names) and are
    recorded in ``training_options.json`` under ``plugin_kwargs``.
    """


@hookspec
def gan_configure(config: Dict[str, Any], dataset_kwargs: Dict[str, Any]) -> None:
    """Validate and adjust the run configuration before it is written. Launcher only, once per run.

    The adjusted config is what ``training_options.json`` records and every rank receives, so a replayed run
    (``--config``) does not call it again. Refuse combinations here: ``config.plugin_kwargs`` lists the enabled
    plugins with their options, in order. Keep no state: the instances that train are made from the config.

    :param config: the run config (G_kwargs, D_kwargs, loss_kwargs, batch_size, batch_gpu, fake_labels,
        total_kimg, plugin_kwargs, ...); change it in place.
    :param dataset_kwargs: the training set's kwargs, with ``resolution`` and ``use_labels`` filled in.
    """


# ----------------------------------------------------------------------------- setup


@hookspec(firstresult=True)
def gan_label_dim(dataset: Any, label_dim: int) -> Optional[int]:
    """The networks' label width (c_dim). Once, before networks are built. sg2ada answers ``label_dim``.

    A plugin that makes its own labels (e.g. k clusters) answers here; it then also answers gan_real_labels and
    announces class counts and a label prior from a ``tryfirst`` gan_setup (``ctx.set_class_counts``,
    ``ctx.set_label_prior``).

    :param dataset: the training set.
    :param label_dim: the dataset's label width (0 without ``--cond=1`` or without labels).
    :returns: a positive int.
    """


@hookspec
def gan_extend_networks(G: torch.nn.Module, D: torch.nn.Module, dataset: Any) -> None:
    """Attach extension modules: ``G.mapping.extensions[name] = module``, ``D.extensions[name] = module``.

    Once, right after construction, before optimisers exist (D's extensions are trained by D's optimiser) and
    before resumed weights are copied in. A D extension with ``epilogue_head(x, cmap, capture)`` supplies D's output
    from the epilogue features. Class counts are not known yet: set count-dependent buffers in gan_setup.
    """


@hookspec
def gan_frozen_modules(device: torch.device) -> Optional[Dict[str, torch.nn.Module]]:
    """Pretrained modules that are used but never trained (e.g. a vision backbone). Once.

    The loop moves each to ``device`` in eval mode without gradients, keeps it out of every optimiser and out of
    snapshots and the training state (keep your own reference; gradients may flow *through* it).

    :returns: {name: module}; names unique across plugins.
    """


@hookspec
def gan_extra_optimizers(G: torch.nn.Module, D: torch.nn.Module, G_opt_kwargs: Dict[str, Any],
                         D_opt_kwargs: Dict[str, Any]) -> Optional[Sequence[OptimizerSpec]]:
    """Optimisers for parameters outside G and D (e.g. vision-aided heads). Once, after the core optimisers.

    :param G_opt_kwargs: G's optimiser kwargs as configured (before the lazy-regularisation ratio).
    :param D_opt_kwargs: D's, likewise (e.g. to give a head D's learning rate).
    :returns: a list of ``OptimizerSpec`` (training/plugin_api.py says what the loop does with them).
    """


@hookspec
def gan_check_resume(snapshot: Dict[str, Any], state: Optional[Dict[str, Any]]) -> None:
    """A snapshot is about to be resumed. Once, before its weights are copied.

    :param snapshot: the loaded pickle dict (G, D, G_ema, augment_pipe, training_set_kwargs).
    :param state: the training-state dict, or None for a weights-only resume.
    :raises plugins.PluginError: if the snapshot cannot continue under this plugin's options.
    """


@hookspec
def gan_register_metrics(register: Any) -> None:
    """Add metrics. Once per process, on the instances that train (a metric may read their state).

    :param register: ``metrics.metric_main.register_metric``: ``register(fn, name=..., needs_labels=...)`` for
        each metric function ``fn(opts) -> dict``.
    """


@hookspec
def gan_setup(ctx: RunContext) -> None:
    """The run is set up: networks (resumed weights in), optimisers, dataset, device, run directory. Once.

    Build what the plugin needs here, and restore its state in the same place: ``ctx.restored_state(self)`` is
    what this plugin's gan_state_dict returned in the resumed run (None for a fresh run). Check requirements on
    the final label space here (``ctx.class_counts``; None for data without class labels). A plugin that defines
    the label space (answers gan_label_dim) marks its gan_setup ``tryfirst=True`` and calls
    ``ctx.set_class_counts`` in it, so the others see its counts. Write files from gan_step on, not here.
    """


# ----------------------------------------------------------------------------- every iteration


@hookspec
def gan_step(ctx: RunContext) -> None:
    """Start of every iteration, before the batch is fetched.

    Schedules are computed from ``ctx.cur_nimg`` in closed form (never by counting calls), so that a resumed run
    continues exactly. Periodic jobs with the data (e.g. re-clustering every N kimg) run here. Publish values for
    other plugins in ``ctx.shared`` (SHARED_KEYS in training/plugin_api.py).
    """


@hookspec(firstresult=True)
def gan_real_labels(images: torch.Tensor, labels: torch.Tensor, cur_nimg: int) -> Optional[torch.Tensor]:
    """The labels of a real batch for the networks (e.g. pseudo-labels). sg2ada answers the dataset's.

    :param images: the real batch, float [N, C, H, W] in [-1, 1], on the training device.
    :param labels: the dataset's labels for it, float [N, label_dim].
    :returns: float [N, c_dim].
    """


@hookspec(firstresult=True)
def gan_sample_fake_labels(n: int, rng: np.random.RandomState, dataset: Any, class_counts: Optional[np.ndarray],
                           real_labels: torch.Tensor) -> Optional[Union[np.ndarray, torch.Tensor]]:
    """Labels for ``n`` generated images (all phases of one iteration). sg2ada answers: G's label prior when it has
    one, else ``--fake-labels`` (class frequencies of the dataset, or uniform over the present classes).

    :param rng: the trainer's numpy RandomState (saved in the training state for exact resume).
    :param class_counts: the current class counts (the dataset's, or the last ``set_class_counts``).
    :param real_labels: this iteration's real labels [batch, c_dim], after gan_real_labels.
    :returns: float32 [n, c_dim].
    """


@hookspec
def gan_class_counts_changed(class_counts: np.ndarray) -> None:
    """The classes' image counts changed (``ctx.set_class_counts``, e.g. after re-clustering).

    :param class_counts: int array [c_dim].
    """


@hookspec(firstresult=True)
def gan_generator_batch(phase: str, z: torch.Tensor, c: torch.Tensor,
                        cur_nimg: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The generator batch of a phase (e.g. twins that share z and c). sg2ada answers (z, c) unchanged.

    :param phase: ``'Gmain'`` or ``'Dmain'``.
    :returns: (z, c) of the shapes received.
    """


@hookspec
def gan_base_loss_weight(phase: str, cur_nimg: int) -> Optional[float]:
    """Multiplier of the base adversarial terms (Loss/G/loss, Loss/D/fake, Loss/D/real) in ``phase``.

    :returns: a finite float (the answers of all plugins are multiplied), or None for 1.
    """


@hookspec
def gan_loss_terms(ctx: LossContext) -> Optional[Sequence[Union[LossTerm, Tuple[str, float, torch.Tensor]]]]:
    """Extra loss terms of one pass of a phase on one micro-batch.

    ``ctx`` (training/loss.py) says which pass this is (``phase``, ``side``) and holds its tensors, D's captures
    and every head's logits by name in ``ctx.d_capture['logits']``: ``D`` (D's output), transitional's ``uc``
    and ``c``, UTLO's low-resolution ``utlo_uc_fake`` / ``utlo_uc_real`` (UTLO answers ``tryfirst``, so they are
    there for every other plugin), and ``ctx.loss`` for extra passes. Terms are summed in ``--plugins`` order.

    :returns: ``LossTerm(name, weight, value)`` or ``(name, weight, value)`` tuples, ``value`` per sample [N] or a
        scalar. The loop adds ``weight * mean(value)`` to the pass's loss (times the phase's gain), reports the
        *unweighted* value as ``Loss/<plugin>/<name>``, and refuses non-finite terms or wrong shapes naming the
        plugin. A term of weight 0 is reported, not backpropagated. The core terms are Loss/G/loss, Loss/D/fake,
        Loss/D/real (scaled by gan_base_loss_weight), Loss/G/reg, Loss/D/reg; ``Loss/D/loss`` reports sg2ada's D
        loss (fake + real, unweighted) and never contains plugin terms.
    """


@hookspec(firstresult=True)
def gan_real_logits(ctx: LossContext) -> Optional[torch.Tensor]:
    """The real-image logits that feed R1 and the ADA signal. sg2ada answers ``ctx.real_logits``.

    :param ctx: a Dmain/Dreg pass with side 'real'.
    :returns: a tensor [N, 1] computed from ``ctx.real_img_tmp`` (R1 differentiates it).
    """


# ----------------------------------------------------------------------------- snapshots and state


@hookspec(firstresult=True)
def gan_grid_labels(grid_size: Tuple[int, int], labels: np.ndarray, c_dim: int, G: torch.nn.Module,
                    random_seed: int) -> Optional[np.ndarray]:
    """Labels of the snapshot grid. Rank 0, once. sg2ada answers the dataset's labels of the grid's reals, or,
    when the networks' classes are not the dataset's, classes drawn from G's label prior.

    :param grid_size: (columns, rows).
    :param labels: the dataset's labels of the grid's real images, [columns * rows, label_dim].
    :returns: float32 [columns * rows, c_dim].
    """


@hookspec
def gan_snapshot_images(G_ema: torch.nn.Module, grid_z: Sequence[torch.Tensor],
                        grid_c: Sequence[torch.Tensor]) -> Optional[Dict[str, np.ndarray]]:
    """Image grids written at each image snapshot as ``<prefix><kimg>.png``. Rank 0. sg2ada answers ``fakes``.

    :param grid_z: latents of the grid, split into per-GPU batches; ``grid_c``: labels, split likewise.
    :returns: {file prefix: float images [N, C, H, W] in [-1, 1]}, one image per grid cell.
    """


@hookspec
def gan_state_dict() -> Optional[Dict[str, Any]]:
    """Plugin state for an exact resume (beyond network buffers): picklable, stored in ``training-state-*.pt``
    under the plugin's name. Called on every rank at each checkpoint, after the tick's last iteration (a resumed
    run continues with the next iteration); rank 0 writes it. It comes back in gan_setup (``ctx.restored_state``).
    """
