"""Snapshots and resume state, written atomically.

A snapshot `network-snapshot-{kimg:06d}.pkl` is NVIDIA's format: {training_set_kwargs, G, D, G_ema,
augment_pipe} with the modules in eval mode, without gradients, on the CPU. Everything else that an
exact resume needs (optimiser states, counters, RNG states, sampler position, ADA accumulators, plugin
state) goes into the sidecar `training-state-{kimg:06d}.pt`, so that upstream tools keep reading the
pickle and never see our extras.

Crash consistency: both are written atomically (temporary file, fsync, rename), the snapshot first and then
the state, which records the snapshot's SHA-256. A kill at any instant therefore leaves either a complete
new pair or an incomplete one that resume recognises and skips (resuming the newest complete pair); a
mismatched pair is refused. Names never collide (sub-kimg ticks get the images count in the name), so a
write never replaces an earlier checkpoint, and leftover temporary files are removed at the next start.
"""

import copy
import glob
import os
import pickle
import re

import torch

import dnnlib
from dnnlib.util import atomic_write

SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+)(?:-(\d+))?\.pkl$")
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # dnnlib.util.atomic_path's temporary files.
UPSTREAM_DATASET_KEYS = ("class_name", "path", "resolution", "use_labels", "max_size", "xflip", "random_seed")


def snapshot_kimg(path):
    """kimg encoded in a snapshot's file name, or None."""
    m = SNAPSHOT_RE.search(os.path.basename(str(path)))
    return int(m.group(1)) if m else None


def snapshot_nimg(path):
    """Images shown when the snapshot was taken: exact for sub-kimg names, kimg * 1000 otherwise; None if unnamed."""
    m = SNAPSHOT_RE.search(os.path.basename(str(path)))
    if not m:
        return None
    return int(m.group(2)) if m.group(2) is not None else int(m.group(1)) * 1000


def snapshot_path(run_dir, cur_nimg):
    """NVIDIA's name (whole kimg) unless this run already used it: a later tick within the same kimg gets
    ``network-snapshot-KKKKKK-NNNNNNNNN.pkl`` (N = images shown), so no snapshot or state is ever overwritten."""
    plain = os.path.join(run_dir, f"network-snapshot-{cur_nimg // 1000:06d}.pkl")
    if not os.path.exists(plain):
        return plain
    return os.path.join(run_dir, f"network-snapshot-{cur_nimg // 1000:06d}-{cur_nimg:09d}.pkl")


def state_path_for(snapshot_path):
    name = os.path.basename(str(snapshot_path))
    if SNAPSHOT_RE.search(name) is None:
        return None
    state = name.replace("network-snapshot-", "training-state-")[:-len(".pkl")] + ".pt"
    return os.path.join(os.path.dirname(os.path.abspath(snapshot_path)), state)


def snapshots(run_dir):
    """Snapshot paths of run_dir, oldest first."""
    found = [p for p in glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")) if snapshot_nimg(p) is not None]
    return sorted(found, key=snapshot_nimg)


def latest_snapshot(run_dir):
    """Path of the newest snapshot in run_dir, or None."""
    snaps = snapshots(run_dir)
    return snaps[-1] if snaps else None


def unit_problem(snapshot, state):
    """Why a snapshot and a loaded training state do not form one checkpoint, or None if they do.

    The state records the SHA-256 of the snapshot written just before it; a kill between the two writes leaves
    a newer snapshot beside an older state (or none), which this detects."""
    want = state.get("snapshot_sha256") if isinstance(state, dict) else None
    if want is None or "://" in str(snapshot):
        return None  # States written before the binding existed, or a remote snapshot: nothing to compare.
    got = dnnlib.util.file_sha256(snapshot)
    if got != want:
        return (f"the training state {state_path_for(snapshot)} belongs to another snapshot (it records SHA-256 "
                f"{want[:16]}..., {os.path.basename(snapshot)} has {got[:16]}...)")
    return None


def latest_complete_unit(run_dir, log=print):
    """(snapshot, state) of the newest snapshot whose state is present and bound to it; (newest, None) when
    none is; (None, None) without snapshots. Incomplete newer units (a killed write) are skipped with a notice."""
    snaps = snapshots(run_dir)
    for snap in reversed(snaps):
        state = state_path_for(snap)
        if os.path.isfile(state):
            try:
                problem = unit_problem(snap, load_state(state))
            except ValueError as exc:
                problem = str(exc)
            if problem is None:
                return snap, state
        else:
            problem = "its training state is missing"
        log(f"Notice: skipping {os.path.basename(snap)}: {problem} (an interrupted write)")
    return (snaps[-1], None) if snaps else (None, None)


def remove_stale_temp_files(directory):
    """Remove temporary files of writes that were killed before their rename; returns their names."""
    removed = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if TEMP_RE.match(name):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def resolve_resume(resume, log=print):
    """(snapshot path or URL, sidecar state path or None) for --resume=<run dir | snapshot | URL>."""
    path = os.path.expanduser(resume)
    if os.path.isdir(path):
        snap, state = latest_complete_unit(path, log=log)
        if snap is None:
            raise FileNotFoundError(f"--resume={resume}: the directory holds no network-snapshot-*.pkl")
        return snap, state
    if "://" not in resume and not os.path.isfile(path):
        raise FileNotFoundError(f"--resume={resume}: no such file or directory")
    state = state_path_for(path) if "://" not in resume else None
    if state is not None and not os.path.isfile(state):
        state = None
    return path, state


def upstream_dataset_kwargs(training_set_kwargs):
    """The part of the dataset kwargs that upstream's calc_metrics can pass to its ImageFolderDataset."""
    return {k: v for k, v in dict(training_set_kwargs).items() if k in UPSTREAM_DATASET_KEYS}


def _then(write_fn, before_rename):
    def write(f):
        write_fn(f)
        if before_rename is not None:
            f.flush()
            before_rename()
    return write


def save_snapshot(path, training_set_kwargs, modules, extras=None, before_rename=None):
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
    atomic_write(path, _then(lambda f: pickle.dump(data, f), before_rename))
    return path


def save_state(path, state, before_rename=None):
    atomic_write(path, _then(lambda f: torch.save(state, f), before_rename))
    return path


def _numpy_globals():
    """The numpy types a training state may hold (RNG state, plugin arrays): torch.load's allow-list."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
              "float64", "complex64", "complex128", "U1", "S1", "O")
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype] + \
        [type(np.dtype(t)) for t in dtypes]


def load_state(path):
    """The training state, loaded with torch.load(weights_only=True): tensors, numbers, strings, containers and
    numpy arrays only, so a tampered file cannot run code."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        first = f"unsupported global {found.group(1)}" if found else "an unsupported object"
        raise ValueError(f"Refusing resume state {path!r}: it holds objects other than tensors, numbers, strings and "
                         f"numpy arrays ({first}); it was not written by this trainer or has been tampered with. "
                         "Resume from another snapshot, or move the file away to resume weights only.") from None
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
