"""Statistics reported from anywhere in the training code and collected at tick boundaries.

`report(name, value)` accumulates [count, sum, sum of squares] in float64 per name; a `Collector`
reads and (across processes) sums them. Names must be reported in the same order on every rank
because the sums are all-reduced as one tensor.
"""

import re

import numpy as np
import torch

import dnnlib

from . import misc

_num_moments = 3  # [num_scalars, sum_of_scalars, sum_of_squares]
_reduce_dtype = torch.float32  # Data type used for the reductions themselves.
_counter_dtype = torch.float64  # Data type of the accumulators (exact counts up to 2^53).
_rank = 0
_sync_device = None  # Device used for cross-process all-reduce (None = single process).
_sync_called = False
_counters = dict()  # {name: {device: torch.Tensor}}
_cumulative = dict()  # {name: torch.Tensor}


def init_multiprocessing(rank, sync_device):
    """Call once per process before any report when training with several processes.

    sync_device: the device used for all-reduce (the rank's GPU for NCCL, CPU for gloo), or None
    for a single process.
    """
    global _rank, _sync_device
    assert not _sync_called
    _rank = rank
    _sync_device = sync_device


@misc.profiled_function
def report(name, value):
    """Accumulate value (scalar, list or tensor of any shape) under name. Returns value unchanged."""
    if name not in _counters:
        _counters[name] = dict()

    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value

    elems = elems.detach().flatten().to(_reduce_dtype)
    moments = torch.stack([
        torch.ones_like(elems).sum(),
        elems.sum(),
        elems.square().sum(),
    ])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    moments = moments.to(_counter_dtype)

    # MPS has no float64: keep the accumulators on the CPU there.
    device = moments.device if moments.device.type != "mps" else torch.device("cpu")
    moments = moments.to(device)
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)
    return value


def report0(name, value):
    """Like report(), but only rank 0's values count (the others report empty to keep names aligned)."""
    report(name, value if _rank == 0 else [])
    return value


class Collector:
    """Reads the statistics reported since the previous update().

    regex selects the names to collect. keep_previous=True keeps the last value of a name that
    received no new report in this interval.
    """

    def __init__(self, regex=".*", keep_previous=True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()
        self._moments.clear()

    def names(self):
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self):
        """Fetch the totals (all-reduced across processes) and compute this interval's moments."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name):
        assert self._regex.fullmatch(name)
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name):
        return int(self._get_delta(name)[0])

    def mean(self, name):
        delta = self._get_delta(name)
        if int(delta[0]) == 0:
            return float("nan")
        return float(delta[1] / delta[0])

    def std(self, name):
        delta = self._get_delta(name)
        if int(delta[0]) == 0 or not np.isfinite(float(delta[1])):
            return float("nan")
        if int(delta[0]) == 1:
            return float(0)
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return float(np.sqrt(max(raw_var - np.square(mean), 0)))

    def as_dict(self):
        """{name: EasyDict(num, mean, std)}, the format of stats.jsonl."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name):
        return self.mean(name)


def _sync(names):
    """[(name, cumulative moments)] summed over local devices and, if distributed, over ranks."""
    if len(names) == 0:
        return []
    global _sync_called
    _sync_called = True

    deltas = []
    device = _sync_device if _sync_device is not None else torch.device("cpu")
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.copy_(torch.zeros_like(counter))
        deltas.append(delta)
    deltas = torch.stack(deltas)

    if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(deltas)

    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]
