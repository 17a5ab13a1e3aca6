"""Snapshots and resume state, written atomically.

A snapshot `network-snapshot-{kimg:06d}.pkl` is NVIDIA's format: {training_set_kwargs, G, D, G_ema,
augment_pipe} with the modules in eval mode, without gradients, on the CPU. Everything else that an
exact resume needs (optimiser states, counters, RNG states, sampler position, ADA accumulators, plugin
state) goes into the sidecar `training-state-{kimg:06d}.pt`, so that upstream tools keep reading the
pickle and never see our extras.

Integrity: the state file starts with a line that carries the SHA-256 of the rest (a flipped byte is refused),
and the state records the SHA-256 of its snapshot (a state never pairs with another snapshot). A resume is exact
or refused: a weights-only resume of a snapshot whose state is missing or damaged happens only when asked for
(``--resume-weights-only=1``, or ``--resume-partial=1``, which transfers weights only).

Crash consistency: both are written atomically (temporary file, fsync, rename), the snapshot first and then
the state, which records the snapshot's SHA-256. A kill at any instant therefore leaves either a complete
new pair or an incomplete one that resume recognises and skips (resuming the newest complete pair); a
mismatched pair is refused. Names never collide (sub-kimg ticks get the images count in the name), so a
write never replaces an earlier checkpoint, and leftover temporary files are removed at the next start.
"""

import copy
import glob
import hashlib
import io
import os
import pickle
import re

import torch

import dnnlib
from dnnlib.util import atomic_write

SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+)(?:-(\d+))?\.pkl$")
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # dnnlib.util.atomic_path's temporary files.
UPSTREAM_DATASET_KEYS = ("class_name", "path", "resolution", "use_labels", "max_size", "xflip", "random_seed")
STATE_MAGIC = b"gan-plugins training state, sha256 of the rest:"  # Then 64 hex digits and a newline.


class StateError(ValueError):
    """A training state is missing, damaged or does not belong to its snapshot; the message names the file and a
    checkpoint to use instead."""


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
    a newer snapshot beside an older state (or none), which this detects. A state without the record is refused."""
    want = state.get("snapshot_sha256") if isinstance(state, dict) else None
    if want is None:
        return f"the training state {state_path_for(snapshot)} does not record which snapshot it belongs to"
    got = dnnlib.util.file_sha256(snapshot)
    if got != want:
        return (f"the training state {state_path_for(snapshot)} belongs to another snapshot (it records SHA-256 "
                f"{want[:16]}..., {os.path.basename(snapshot)} has {got[:16]}...)")
    return None


def check_unit(snapshot, state_path):
    """None if snapshot and the state file form one checkpoint, else why not (missing, damaged, mismatched)."""
    if state_path is None or not os.path.isfile(state_path):
        return "its training state is missing"
    try:
        return unit_problem(snapshot, load_state(state_path))
    except StateError as exc:
        return str(exc)


def latest_complete_unit(run_dir, log=print):
    """(snapshot, state) of the newest snapshot whose state is present, intact and bound to it; (None, None)
    when there is none. Newer snapshots whose state is missing (a kill between the two writes) are skipped with a
    notice; a newer state that is damaged or belongs to another snapshot is refused, naming the pair to use."""
    snaps = snapshots(run_dir)
    skipped = []
    for snap in reversed(snaps):
        problem = check_unit(snap, state_path_for(snap))
        if problem is None:
            if skipped:
                log(f"Notice: skipping {', '.join(skipped)}: the training state is missing (an interrupted write)")
            return snap, state_path_for(snap)
        if problem != "its training state is missing":
            good = next((s for s in reversed(snaps) if check_unit(s, state_path_for(s)) is None), None)
            hint = (f"resume from the newest good pair, --resume={good}" if good else
                    "no intact pair remains; --resume-weights-only=1 resumes the weights of a snapshot")
            raise StateError(f"{os.path.basename(snap)}: {problem}; {hint}")
        skipped.append(os.path.basename(snap))
    return None, None


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


def resolve_resume(resume, log=print, weights_only=False):
    """(snapshot path or URL, state path or None) for --resume=<run dir | snapshot | URL>.

    An exact resume needs an intact state bound to its snapshot: a run directory resumes its newest such pair; a
    snapshot of this trainer resumes with its state or is refused. ``weights_only`` (--resume-weights-only,
    --resume-partial) takes the weights alone. A pickle that is not one of our snapshots (NVIDIA's, a URL) has
    no state: its weights are resumed."""
    path = os.path.expanduser(resume)
    if os.path.isdir(path):
        if weights_only:
            snap = latest_snapshot(path)
            if snap is None:
                raise FileNotFoundError(f"--resume={resume}: the directory holds no network-snapshot-*.pkl")
            return snap, None
        snap, state = latest_complete_unit(path, log=log)
        if snap is None:
            what = "no network-snapshot-*.pkl" if not snapshots(path) else "no snapshot with its training state"
            raise StateError(f"--resume={resume}: the directory holds {what}, so it cannot continue exactly; "
                             "--resume-weights-only=1 resumes the weights of its newest snapshot")
        return snap, state
    if "://" not in resume and not os.path.isfile(path):
        raise FileNotFoundError(f"--resume={resume}: no such file or directory")
    state = state_path_for(path) if "://" not in resume else None
    if weights_only or state is None:
        return path, None
    problem = check_unit(path, state)
    if problem is not None:
        run_dir = os.path.dirname(os.path.abspath(path))
        good = next((s for s in reversed(snapshots(run_dir)) if check_unit(s, state_path_for(s)) is None), None)
        hint = f"resume from the newest good pair, --resume={good}" if good else "no intact pair is beside it"
        raise StateError(f"--resume={resume}: {problem}; {hint}, or pass --resume-weights-only=1 to resume its "
                         "weights alone (optimisers, counters and RNG start fresh)")
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
    """torch.save(state) behind a first line that carries the SHA-256 of what follows."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = STATE_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    atomic_write(path, _then(lambda f: (f.write(header), f.write(payload)), before_rename))
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
    """The training state: its digest checked, then torch.load(weights_only=True) (tensors, numbers, strings,
    containers and numpy arrays only, so a tampered file cannot run code), then its structure checked."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StateError(f"cannot read the training state {path}: {exc.strerror or exc}") from None
    payload = data
    if data.startswith(STATE_MAGIC):  # States of earlier versions carry no digest of their own.
        digest, payload = data[len(STATE_MAGIC):len(STATE_MAGIC) + 64], data[len(STATE_MAGIC) + 65:]
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise StateError(f"the training state {path} is damaged (its contents do not match the SHA-256 it carries)")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        first = f"unsupported global {found.group(1)}" if found else "an unsupported object"
        raise StateError(f"refusing the training state {path}: it holds objects other than tensors, numbers, strings "
                         f"and numpy arrays ({first}); it was not written by this trainer or has been tampered with") from None
    except Exception as exc:  # torch.load's errors on a truncated or foreign file vary (RuntimeError, EOFError...).
        raise StateError(f"cannot read the training state {path}: {exc.__class__.__name__}: {exc}; the file is "
                         "corrupt or truncated") from None
    problem = state_structure_problem(state)
    if problem is not None:
        raise StateError(f"the training state {path} is damaged: {problem}")
    return state


def state_structure_problem(state):
    """What is wrong with a loaded state's structure (keys, types, ranges), or None."""
    if not isinstance(state, dict):
        return f"it is a {type(state).__name__}, not a dict"
    for key in ("cur_nimg", "cur_tick", "batch_idx", "samples_consumed"):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} is {value!r}, not a non-negative int"
    for key in ("optimizers", "rng"):
        if not isinstance(state.get(key), dict):
            return f"{key} is missing or not a dict"
    rng = state["rng"]
    if not (torch.is_tensor(rng.get("torch")) and rng["torch"].dtype == torch.uint8
            and rng["torch"].numel() == torch.get_rng_state().numel()):
        return "rng['torch'] is not a torch RNG state"
    numpy_state = rng.get("numpy")
    if not (isinstance(numpy_state, tuple) and len(numpy_state) == 5 and getattr(numpy_state[1], "shape", None) == (624,)):
        return "rng['numpy'] is not a numpy RandomState state"
    if "latent" in rng and not (torch.is_tensor(rng["latent"]) and rng["latent"].numel() == torch.get_rng_state().numel()):
        return "rng['latent'] is not a torch RNG state"
    if not (torch.is_tensor(state.get("pl_mean")) and state["pl_mean"].numel() == 1):
        return "pl_mean is missing or not a scalar tensor"
    if not isinstance(state.get("plugins", {}), dict):
        return "plugins is not a dict"
    return None


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
