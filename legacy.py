"""Load network pickles: ours and NVIDIA stylegan2-ada-pytorch's, written under numpy 1 or numpy 2.

TensorFlow-era pickles (stylegan2 / stylegan2-ada TF) are not supported: convert them with NVIDIA's
legacy.py first.
"""

import copy
import io
import pickle
import sys

import click
import torch

import dnnlib
from torch_utils import misc

NETWORK_KEYS = ("G", "D", "G_ema")


class NetworkPickleError(ValueError):
    """The file is not a usable network pickle; the message names the file and the problem."""


class _CompatUnpickler(pickle.Unpickler):
    """Maps numpy's private module paths between numpy 1 (`numpy.core`) and numpy 2 (`numpy._core`)."""

    def find_class(self, module, name):
        if module.startswith("numpy._core") or module.startswith("numpy.core"):
            suffix = module.split("core", 1)[1]
            for candidate in ("numpy._core" + suffix, "numpy.core" + suffix):
                try:
                    __import__(candidate)
                    return super().find_class(candidate, name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def _describe(f):
    return getattr(f, "name", None) or "<network pickle>"


def load_network_pkl(f, force_fp16=False):
    """Read a snapshot from a binary file object. Returns a dict with G, D, G_ema, augment_pipe,
    training_set_kwargs (and any extra keys). Raises NetworkPickleError with the file name on bad input."""
    where = _describe(f)
    data = f.read() if hasattr(f, "read") else f
    if len(data) == 0:
        raise NetworkPickleError(f"{where}: the file is empty")
    if data[:1] != b"\x80":
        raise NetworkPickleError(f"{where}: not a pickle file (network snapshots are .pkl files written by train.py)")
    try:
        obj = _CompatUnpickler(io.BytesIO(data)).load()
    except (EOFError, pickle.UnpicklingError) as exc:
        raise NetworkPickleError(f"{where}: corrupt or truncated pickle ({exc.__class__.__name__}: {exc}); "
                                 "use an earlier snapshot") from None
    except (ImportError, AttributeError, ModuleNotFoundError) as exc:
        raise NetworkPickleError(f"{where}: the pickle needs code that is not available ({exc}). Network "
                                 "snapshots need the packages dnnlib and torch_utils on the Python path.") from None

    if isinstance(obj, tuple) and len(obj) == 3 and all(type(x).__name__ == "Network" for x in obj):
        raise NetworkPickleError(f"{where}: this is a TensorFlow-era StyleGAN pickle; convert it with NVIDIA's "
                                 "stylegan2-ada-pytorch legacy.py first")
    if isinstance(obj, torch.nn.Module):  # A bare network: treat it as G_ema.
        obj = dict(G_ema=obj)
    if not isinstance(obj, dict) or not any(k in obj for k in NETWORK_KEYS):
        raise NetworkPickleError(f"{where}: not a network snapshot (expected a dict with G, D, G_ema)")

    obj.setdefault("augment_pipe", None)
    obj.setdefault("training_set_kwargs", None)
    for key in NETWORK_KEYS:
        if key in obj and obj[key] is not None and not isinstance(obj[key], torch.nn.Module):
            raise NetworkPickleError(f"{where}: entry {key!r} is not a network")

    if force_fp16:
        for key in NETWORK_KEYS:
            if obj.get(key) is not None:
                obj[key] = _with_fp16(obj[key])
    return obj


def _with_fp16(old):
    """Rebuild a network with num_fp16_res=4 and conv_clamp=256 (as upstream's --force_fp16)."""
    kwargs = copy.deepcopy(old.init_kwargs)
    if "synthesis_kwargs" in kwargs:  # Generator: the settings live in its synthesis kwargs.
        kwargs["synthesis_kwargs"] = dict(kwargs["synthesis_kwargs"])
        target = kwargs["synthesis_kwargs"]
    else:
        target = kwargs
    if target.get("num_fp16_res") == 4 and target.get("conv_clamp") == 256:
        return old
    target["num_fp16_res"] = 4
    target["conv_clamp"] = 256
    new = type(old)(*old.init_args, **kwargs).eval().requires_grad_(False)
    misc.copy_params_and_buffers(old, new, require_all=True)
    for name, value in old.__dict__.items():
        if name not in new.__dict__:
            new.__dict__[name] = value
    return new


@click.command()
@click.option("--source", help="Input pickle", required=True, metavar="PATH")
@click.option("--dest", help="Output pickle", required=True, metavar="PATH")
@click.option("--force-fp16", help="Force the networks to use FP16", type=bool, default=False, metavar="BOOL", show_default=True)
def convert_network_pickle(source, dest, force_fp16):
    """Re-save a network pickle (e.g. to force FP16)."""
    from dnnlib.util import atomic_write

    print(f'Loading "{source}"...')
    try:
        with dnnlib.util.open_url(source) as f:
            data = load_network_pkl(f, force_fp16=force_fp16)
    except NetworkPickleError as exc:
        raise click.ClickException(f"--source: {exc}") from None
    except (OSError, dnnlib.util.DownloadError) as exc:
        raise click.ClickException(f"--source={source}: cannot read it: {exc}") from None
    print(f'Saving "{dest}"...')
    try:
        atomic_write(dest, lambda f: pickle.dump(data, f))
    except OSError as exc:
        raise click.ClickException(f"--dest={dest}: cannot write it: {exc.strerror or exc}; nothing was written") from None
    print("Done.")


if __name__ == "__main__":
    convert_network_pickle()  # pylint: disable=no-value-for-parameter
    sys.exit(0)
