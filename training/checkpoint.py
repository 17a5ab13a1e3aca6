"""Snapshots and resume state, written atomically.

A snapshot `network-snapshot-{kimg:06d}.pkl` is NVIDIA's format: {training_set_kwargs, G, D, G_ema,
augment_pipe} with the modules in eval mode, without gradients, on the CPU. Everything else that an
exact resume needs (optimiser states, counters, RNG states, sampler position, ADA accumulators, plugin
state) goes into the sidecar `training-state-{kimg:06d}.pt`, so that upstream tools keep reading the
pickle and never see our extras.
"""

import copy
import glob
import os
import pickle
import re

import torch

from dnnlib.util import atomic_write

SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+)\.pkl$")
UPSTREAM_DATASET_KEYS = ("class_name", "path", "resolution", "use_labels", "max_size", "xflip", "random_seed")


def snapshot_kimg(path):
    """kimg encoded in a snapshot's file name, or None."""
    m = SNAPSHOT_RE.search(os.path.basename(str(path)))
    return int(m.group(1)) if m else None


def state_path_for(snapshot_path):
    kimg = snapshot_kimg(snapshot_path)
    if kimg is None:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(snapshot_path)), f"training-state-{kimg:06d}.pt")


def latest_snapshot(run_dir):
    """Path of the snapshot with the highest kimg in run_dir, or None."""
    snaps = [p for p in glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")) if snapshot_kimg(p) is not None]
    return max(snaps, key=snapshot_kimg) if snaps else None


def resolve_resume(resume):
    """(snapshot path or URL, sidecar state path or None) for --resume=<run dir | snapshot | URL>."""
    path = os.path.expanduser(resume)
    if os.path.isdir(path):
        snap = latest_snapshot(path)
        if snap is None:
            raise FileNotFoundError(f"--resume={resume}: the directory holds no network-snapshot-*.pkl")
        path = snap
    elif "://" not in resume and not os.path.isfile(path):
        raise FileNotFoundError(f"--resume={resume}: no such file or directory")
    state = state_path_for(path) if "://" not in resume else None
    if state is not None and not os.path.isfile(state):
        state = None
    return path, state


def upstream_dataset_kwargs(training_set_kwargs):
    """The part of the dataset kwargs that upstream's calc_metrics can pass to its ImageFolderDataset."""
    return {k: v for k, v in dict(training_set_kwargs).items() if k in UPSTREAM_DATASET_KEYS}


def save_snapshot(path, training_set_kwargs, modules, extras=None):
    """Pickle {training_set_kwargs, G, D, G_ema, augment_pipe, **extras} atomically. Returns the path."""
    data = dict(training_set_kwargs=upstream_dataset_kwargs(training_set_kwargs))
    extra_kwargs = {k: v for k, v in dict(training_set_kwargs).items() if k not in UPSTREAM_DATASET_KEYS}
    if extra_kwargs:  # e.g. label_file of an lt_dataset.py subset; upstream ignores unknown keys.
        data["training_set_extra_kwargs"] = extra_kwargs
    for name, module in modules.items():
        if module is not None:
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        data[name] = module
    for key, value in (extras or {}).items():
        data[key] = value
    atomic_write(path, lambda f: pickle.dump(data, f))
    return path


def save_state(path, state):
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_state(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"Cannot read resume state {path!r}: {exc}. The file is corrupt or truncated; "
                         f"resume from an earlier snapshot or delete it to resume weights only.") from exc


# ----------------------------------------------------------------------------
# Random number generator states (exact resume).


def capture_rng_states(np_rng):
    states = dict(torch=torch.get_rng_state(), numpy=np_rng.get_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states, np_rng):
    torch.set_rng_state(states["torch"])
    np_rng.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
