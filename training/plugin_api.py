"""The typed objects that hooks receive and return (besides training.loss.LossContext and LossTerm).

  RunContext     gan_setup(ctx) and gan_step(ctx): the run's objects, counters and cross-rank helpers.
  OptimizerSpec  gan_extra_optimizers returns a list of them.

Each checks what it is given, so a plugin's mistake is reported where it is made, naming the plugin.
"""

import copy
import dataclasses
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch


class PluginError(ValueError):
    """A plugin cannot run with this configuration, or a hook answered what the API does not accept; the message
    names the plugin and says what to do. Plugins import it as ``plugins.PluginError``."""


@dataclasses.dataclass
class OptimizerSpec:
    """An optimiser for parameters outside G and D (e.g. a vision-aided head), declared by gan_extra_optimizers.

    ``params`` are trained only during the phases of ``step_with`` ('G' or 'D'): the loop zeroes them with that
    network's phases, averages their gradients over ranks, replaces NaN/inf, steps them after each of those phases
    with that network's lazy-regularisation ratio applied to ``lr`` and ``betas``, and saves and restores their
    state (an optimiser new to a resumed run starts fresh, with a notice). ``opt_kwargs`` are like G_opt_kwargs
    (``class_name``, ``lr``, ``betas``, ...). The loop names it ``<plugin>/<name>``.
    """

    name: str
    params: List[torch.nn.Parameter]
    opt_kwargs: Dict[str, Any]
    step_with: str

    def __post_init__(self):
        self.params = list(self.params)
        if self.step_with not in ("G", "D"):
            raise PluginError(f"optimiser {self.name!r} has step_with={self.step_with!r}; use 'G' or 'D'")
        if not self.params or not all(isinstance(p, torch.nn.Parameter) for p in self.params):
            raise PluginError(f"optimiser {self.name!r} needs a non-empty list of torch.nn.Parameter")
        if "class_name" not in self.opt_kwargs:
            raise PluginError(f"optimiser {self.name!r}: opt_kwargs needs a class_name (e.g. 'torch.optim.Adam')")


# Values one plugin publishes in ctx.shared (gan_step) for others to read later in the same iteration, so methods
# compose without importing each other. Every rank holds the same values. Keys and their meaning:
SHARED_KEYS = {
    "label_weight": "float in [0, 1]: how strongly the class label acts in this iteration (a plugin that ramps "
                    "conditioning in, e.g. transitional's lambda_t); absent = 1",
    "full_res_loss_weight": "float: weight of the full-resolution adversarial terms when a plugin adds terms at "
                            "another resolution (UTLO's a_c); plugins adding full-resolution adversarial terms of "
                            "their own scale them by it; absent = 1",
}


class RunContext:
    """What gan_setup and gan_step receive: one object for the whole run, its counters updated every iteration.

    Objects (final when gan_setup runs): ``run_dir`` (exists; rank 0 writes there), ``dataset``, ``G``, ``D``,
    ``G_ema``, ``device``, ``rank``, ``num_gpus``, ``random_seed``, ``batch_size`` (real images per iteration, all
    ranks together), ``config`` (the run config, read only), ``c_dim`` (the networks' label width), ``class_counts`` (int array [c_dim] or None: the
    dataset's, or the last ``set_class_counts``), ``resumed`` (True when the run continues a training state).
    Counters: ``cur_nimg`` (real images shown so far, all ranks), ``batch_idx`` (iterations done).
    ``shared``: published values (SHARED_KEYS), reset never; set them in gan_step, read them later in the iteration.
    """

    def __init__(self, trainer, plugin_name_of: Callable[[Any], Optional[str]], restored_states: Dict[str, Any]):
        self._trainer = trainer
        self._plugin_name_of = plugin_name_of
        self._restored_states = restored_states
        self.shared: Dict[str, Any] = {}

    # The trainer's objects, read live (the trainer replaces none of them after setup).
    run_dir = property(lambda self: self._trainer.run_dir)
    dataset = property(lambda self: self._trainer.training_set)
    G = property(lambda self: self._trainer.G)
    D = property(lambda self: self._trainer.D)
    G_ema = property(lambda self: self._trainer.G_ema)
    device = property(lambda self: self._trainer.device)
    rank = property(lambda self: self._trainer.rank)
    num_gpus = property(lambda self: self._trainer.num_gpus)
    random_seed = property(lambda self: self._trainer.c.random_seed)
    batch_size = property(lambda self: self._trainer.batch_size)
    c_dim = property(lambda self: self._trainer.c_dim)
    class_counts = property(lambda self: self._trainer.class_counts)
    cur_nimg = property(lambda self: self._trainer.cur_nimg)
    batch_idx = property(lambda self: self._trainer.batch_idx)
    resumed = property(lambda self: bool(self._restored_states is not None))
    config = property(lambda self: self._trainer.c)  # The run config (read only), e.g. ctx.config.fake_labels.

    def restored_state(self, plugin) -> Optional[Dict[str, Any]]:
        """What ``plugin`` (pass ``self``) returned from gan_state_dict in the resumed run, or None (a fresh run,
        a weights-only resume, or a plugin new to the run)."""
        name = self._plugin_name_of(plugin)
        return (self._restored_states or {}).get(name)

    def set_class_counts(self, counts):
        """Announce the classes' image counts (e.g. after clustering): stored, then gan_class_counts_changed.
        A plugin that defines the label space calls it from a ``tryfirst`` gan_setup, so that the others' gan_setup
        already read the counts."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (self.c_dim,):
            raise PluginError(f"set_class_counts needs {self.c_dim} counts, got shape {list(counts.shape)}")
        self._trainer.class_counts = counts
        self._trainer.pm.hook.gan_class_counts_changed(class_counts=counts)

    def set_label_prior(self, probs):
        """G's (and G_ema's) label prior, from which fakes, grids, generate.py and the metrics draw c."""
        from training.networks import set_label_prior

        for G in (self.G, self.G_ema):
            set_label_prior(G, probs)

    def frozen_D(self):
        """A copy of D in eval mode without gradients (e.g. to embed images for clustering)."""
        D = copy.deepcopy(self.D).eval().requires_grad_(False)
        for param in D.parameters():
            param.grad = None  # The copy needs no gradient buffers (deepcopy would duplicate D's).
        return D

    def on_rank0_then_broadcast(self, fn):
        """fn() on rank 0, its (picklable) result on every rank: identical decisions on all processes."""
        if self.num_gpus == 1:
            return fn()
        box = [fn() if self.rank == 0 else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def per_rank(self, value):
        """[value of rank 0, value of rank 1, ...] of a picklable value (a collective call: every rank calls it, e.g.
        in gan_state_dict, to save state each rank holds for itself)."""
        if self.num_gpus == 1:
            return [value]
        gathered = [None] * self.num_gpus
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over ranks (a new tensor; the input itself with one process)."""
        if self.num_gpus == 1:
            return tensor
        out = tensor.detach().clone()
        torch.distributed.all_reduce(out)
        return out / self.num_gpus


def check_labels(labels, n, c_dim, hook, plugin):
    """A float32 tensor [n, c_dim] from a hook's label answer, or a PluginError naming the plugin."""
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float32) if not torch.is_tensor(labels) else labels)
    if tuple(labels.shape) != (n, c_dim):
        raise PluginError(f"plugin {plugin!r}: {hook} returned labels of shape {list(labels.shape)}, expected "
                             f"{[n, c_dim]}")
    if not bool(torch.isfinite(labels).all()):
        raise PluginError(f"plugin {plugin!r}: {hook} returned non-finite labels")
    return labels.to(torch.float32)
