"""Every hook the trainer calls, in one place.

Rules that hold for all hooks:
  * The trainer calls hooks with keyword arguments only; an implementation may accept any subset of
    them (pluggy passes only the names it asks for), so new arguments can be added later.
  * Before any hook runs, the host sets `plugin.options` (an EasyDict of the plugin's resolved CLI
    options) and `plugin.name` on the plugin object.
  * "every rank" hooks must behave identically on all processes (same tensors, same control flow).
  * Hooks marked firstresult may be answered by one enabled plugin only; two plugins answering the
    same firstresult hook is a start-up conflict, never resolved silently by registration order.
  * Tensors placed into networks must live in `@persistence.persistent_class` modules whose source
    file imports only torch, numpy, dnnlib and torch_utils: snapshots must run without the plugin.
"""

import pluggy

PROJECT_NAME = "gan_plugins"  # pluggy project name and entry-point group of third-party plugins.

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# Hooks answered by one plugin at most (the host checks for conflicts at start-up).
FIRSTRESULT_HOOKS = ("gan_sample_fake_labels", "gan_real_labels", "gan_generator_batch", "gan_real_logits")


# ----------------------------------------------------------------------------- setup


@hookspec
def gan_add_options():
    """Declare this plugin's command-line options. Called once while train.py builds its command.

    Ranks: the launching process only. Returns a list of `click.Option`. Option names must carry the
    plugin's prefix (e.g. `--nt-sigma`); giving one without enabling the plugin is an error.
    """


@hookspec
def gan_configure(config, dataset_kwargs):
    """Validate and adjust the run configuration, before the dataset is opened or networks are built.

    Called on every rank. `config` is the EasyDict that train.py passes to the training loop
    (G_kwargs, D_kwargs, loss_kwargs, batch_size, batch_gpu, fake_labels, total_kimg, ...); the plugin
    may change it in place. Raise `plugins.PluginError` with a message that says what to change.
    Returns None.
    """


@hookspec
def gan_dataset_ready(dataset, class_counts):
    """The training set is open. `class_counts` is an int array [label_dim] for class-labelled data, else None.

    Every rank. Use it to validate requirements (labels present) and to keep per-class statistics.
    Returns None; raise PluginError to stop before networks are built.
    """


@hookspec
def gan_extend_networks(G, D, dataset):
    """Attach extension modules: `G.mapping.extensions[name] = module`, `D.extensions[name] = module`.

    Every rank, right after construction and before optimisers exist (so D extension parameters are
    trained by D's optimiser). Also called when a snapshot is resumed (weights are copied afterwards).
    Returns None.
    """


@hookspec
def gan_extra_parameters(network, module):
    """Extra parameters (outside G/D) to train with the 'G' or 'D' optimiser. Every rank. Returns a list."""


@hookspec
def gan_check_resume(snapshot, state):
    """A snapshot is about to be resumed. `snapshot` is the loaded pickle dict; `state` the training
    state dict, or None for a weights-only resume. Every rank. Raise PluginError if incompatible."""


@hookspec
def gan_train_start(trainer):
    """Networks, optimisers and the data iterator exist; training is about to start. Every rank."""


# ----------------------------------------------------------------------------- every iteration


@hookspec
def gan_step(cur_nimg, trainer):
    """Start of every iteration; schedules must be computed from `cur_nimg` in closed form. Every rank."""


@hookspec(firstresult=True)
def gan_real_labels(images, labels, cur_nimg):
    """Replace the labels of a real batch (e.g. pseudo-labels). Every rank, identical results.

    Returns a float tensor like `labels`, or None to keep them.
    """


@hookspec(firstresult=True)
def gan_sample_fake_labels(n, rng, dataset, class_counts):
    """Labels for n generated images, drawn with `rng` (numpy RandomState, saved for exact resume).

    Every rank. Returns a float32 array [n, c_dim] (one-hot), or None for the trainer's default.
    """


@hookspec(firstresult=True)
def gan_generator_batch(phase, z, c, cur_nimg):
    """Rebuild a generator batch (z, c) for phase 'Gmain' or 'Dmain' (e.g. twins that share z and c).

    Every rank. Returns (z, c) of the same shapes, or None to keep them.
    """


@hookspec
def gan_base_loss_weight(phase, cur_nimg):
    """Multiplier of the base adversarial loss terms in `phase` ('Gmain', 'Dmain').

    Every rank. Returns a float; the weights of all plugins are multiplied. None = 1.
    """


@hookspec
def gan_loss_terms(ctx):
    """Extra loss terms of one phase and micro-batch.

    Every rank. `ctx` is an EasyDict with phase, cur_nimg, device, G, D, augment_pipe, loss (the
    StyleGAN2Loss, with run_G / run_D / augment) and phase data: Gmain: gen_z, gen_c, gen_img, gen_ws,
    g_capture (mapping streams, block outputs), gen_logits, d_capture; Greg: gen_z, gen_c, gen_img,
    gen_ws, g_capture; Dmain: real_img, real_c, real_logits, d_capture and the fake batch (gen_z,
    gen_c, gen_img detached, g_capture); Dreg: real_img, real_img_tmp, real_c, real_logits.
    Returns a list of (name, weight, per_sample_tensor [N] or scalar). The host adds
    weight * mean(term) to the phase loss, reports each under `Loss/<plugin>/<name>` and refuses
    non-finite terms or terms of the wrong shape, naming the plugin.
    """


@hookspec(firstresult=True)
def gan_real_logits(ctx):
    """The real-image logits that feed R1 and the ADA signal (default: D's output). Every rank.

    `ctx` as for gan_loss_terms in Dmain/Dreg. Returns a tensor [N, 1] or None.
    """


# ----------------------------------------------------------------------------- ticks, snapshots, state


@hookspec
def gan_snapshot_images(G_ema, grid_z, grid_c):
    """Extra image grids written beside each fakesNNNNNN.png. Rank 0 only.

    Returns a dict {file prefix: float images [N, C, H, W] in [-1, 1]} with one image per grid cell.
    """


@hookspec
def gan_tick(cur_nimg, stats):
    """End of a tick, after statistics were collected (stats: {name: EasyDict(num, mean, std)}). Every rank."""


@hookspec
def gan_state_dict():
    """Plugin state for an exact resume (beyond network buffers). Rank 0 writes it. Returns a picklable dict."""


@hookspec
def gan_load_state_dict(state):
    """Restore what gan_state_dict returned (`state` is this plugin's dict). Every rank."""


@hookspec
def gan_register_metrics(register):
    """Add metrics: call register(fn) for each metric function (see metrics/metric_main.py). Every rank."""


@hookspec
def gan_train_end(trainer):
    """Training finished normally. Every rank."""
