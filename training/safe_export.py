"""Networks as safetensors: weights without code, rebuilt from this project's own classes.

A network pickle runs code when it is loaded (that is how pickles work; NVIDIA's embed their source). The
safetensors export holds tensors only, plus a JSON header that says how to rebuild each network: the class (one
of this project's ``torch.nn.Module`` classes in ``training.*`` or ``plugins.nets.*``; nothing else is accepted),
its constructor arguments, and the plugin extension modules attached to it. Loading never unpickles anything.

  python -m training.safe_export SNAP.pkl [--out FILE.safetensors] [--with-D]

``generate.py`` and ``calc_metrics.py`` accept the ``.safetensors`` file in place of the pickle; ``train.py
--export-safetensors=1`` writes one beside every snapshot.
"""

import importlib
import json
import os

import click
import torch

import dnnlib

FORMAT = "gan-plugins-safetensors/1"
ALLOWED_PREFIXES = ("training.", "plugins.nets.")
EXTENSION_HOLDERS = ("mapping.extensions", "extensions")


class SafeExportError(ValueError):
    """The network cannot be exported or the file cannot be loaded; the message says why."""


def network_modules():
    """The modules that may hold network classes: training.networks and every module of plugins.nets (found on
    disk, so a new plugin network needs no list here)."""
    import pkgutil

    found = ["training.networks"]
    try:
        import plugins.nets as nets

        found += [f"plugins.nets.{info.name}" for info in pkgutil.iter_modules(nets.__path__)]
    except ImportError:
        pass
    return found


def _class_path(module):
    """'module.Class' of a network or extension, also for instances of classes unpickled from a snapshot (whose
    module is a synthetic one: the class is looked up by name among network_modules())."""
    cls = type(module)
    name = getattr(cls, "_orig_class_name", cls.__name__)
    candidates = [cls.__module__] + [m for m in network_modules() if m != cls.__module__]
    for mod_name in candidates:
        if not mod_name.startswith(ALLOWED_PREFIXES):
            continue
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if isinstance(getattr(mod, name, None), type):
            return f"{mod_name}.{name}"
    raise SafeExportError(f"cannot export a {name}: it is not one of this project's network classes "
                          f"(modules {', '.join(network_modules())})")


def _jsonable(value, what):
    try:
        return json.loads(json.dumps(value))
    except TypeError as exc:
        raise SafeExportError(f"the constructor arguments of {what} are not plain data: {exc}") from None


def describe(net):
    """{class_name, init_args, init_kwargs, extensions: {path: {...}}} of a persistent network."""
    if not hasattr(net, "init_kwargs"):
        raise SafeExportError(f"{type(net).__name__} records no constructor arguments (not a persistent class)")
    desc = dict(class_name=_class_path(net), init_args=_jsonable(list(net.init_args), type(net).__name__),
                init_kwargs=_jsonable(dict(net.init_kwargs), type(net).__name__), extensions={})
    # Submodules a plugin removed after construction (e.g. transitional's D.b4.out): removed again on load.
    fresh = _build(desc, type(net).__name__)
    live = {name for name, _ in net.named_modules()}
    desc["removed"] = sorted(name for name, _ in fresh.named_modules() if name and name not in live
                             and name.rpartition(".")[0] in live)
    for holder_path in EXTENSION_HOLDERS:
        try:
            holder = net.get_submodule(holder_path)
        except AttributeError:
            continue
        for name, ext in holder.items():
            desc["extensions"][f"{holder_path}.{name}"] = dict(
                class_name=_class_path(ext), init_args=_jsonable(list(getattr(ext, "init_args", [])), name),
                init_kwargs=_jsonable(dict(getattr(ext, "init_kwargs", {})), name))
    return desc


def export_networks(networks, path, training_set_kwargs=None):
    """Write {name: network} (e.g. G_ema, D) as one safetensors file with its JSON header, atomically."""
    from safetensors.torch import save

    config = dict(format=FORMAT, networks={}, training_set_kwargs=_jsonable(dict(training_set_kwargs or {}), "dataset"))
    tensors = {}
    for key, net in networks.items():
        config["networks"][key] = describe(net)
        for name, tensor in net.state_dict().items():
            tensors[f"{key}.{name}"] = tensor.detach().cpu().contiguous()
    blob = save(tensors, metadata={"gan_plugins": json.dumps(config)})
    dnnlib.util.atomic_write(path, lambda f: f.write(blob))
    return path


def _allowed_class(class_name):
    module_name, _, name = str(class_name).rpartition(".")
    if module_name not in network_modules():  # Checked as a string: nothing else is imported.
        raise SafeExportError(f"refusing class {class_name!r}: only the network classes of "
                              f"{', '.join(network_modules())} are built from a safetensors file")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise SafeExportError(f"refusing {class_name!r}: not a torch.nn.Module class")
    return cls


MAX_HEADER_NUMBER = 2 ** 20  # Larger sizes in a header are not a network of this project (and would exhaust memory).


def _check_numbers(value, where):
    if isinstance(value, dict):
        for key, child in value.items():
            _check_numbers(child, f"{where}.{key}")
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _check_numbers(child, f"{where}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= MAX_HEADER_NUMBER:
        raise SafeExportError(f"{where} = {value!r} is not a plausible network setting")


def _build(desc, where):
    if not isinstance(desc, dict) or not isinstance(desc.get("class_name"), str):
        raise SafeExportError(f"{where}: not a network description (a JSON object with class_name)")
    cls = _allowed_class(desc["class_name"])
    args, kwargs = desc.get("init_args", []), desc.get("init_kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise SafeExportError(f"{where}: init_args must be a list and init_kwargs an object")
    _check_numbers([args, kwargs], where)
    try:
        return cls(*args, **kwargs)
    except Exception as exc:  # Any constructor complaint about the header's arguments is bad input, not a bug here.
        raise SafeExportError(f"{where}: {desc['class_name']} cannot be built from the recorded arguments "
                              f"({exc.__class__.__name__}: {exc})") from None


def load_networks(path, device="cpu"):
    """{name: network (eval, no grad)} and the training-set kwargs from a safetensors export; no unpickling."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            header = (f.metadata() or {}).get("gan_plugins")
        tensors = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise SafeExportError(f"{path}: not a readable safetensors file ({exc})") from None
    if header is None:
        raise SafeExportError(f"{path}: a safetensors file without this project's network header; export it with "
                              "python -m training.safe_export SNAP.pkl")
    try:
        config = json.loads(header)
    except ValueError as exc:
        raise SafeExportError(f"{path}: its network header is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise SafeExportError(f"{path}: format {found!r}, expected {FORMAT!r}")
    if not isinstance(config.get("networks"), dict) or not isinstance(config.get("training_set_kwargs", {}), dict):
        raise SafeExportError(f"{path}: the header's networks and training_set_kwargs must be JSON objects")
    networks = {}
    for key, desc in config["networks"].items():
        net = _build(desc, f"{path}: {key}")
        try:
            for removed in desc.get("removed", []):
                parent, _, name = removed.rpartition(".")
                setattr(net.get_submodule(parent) if parent else net, name, None)
            for ext_path, ext_desc in desc.get("extensions", {}).items():
                holder_path, _, name = ext_path.rpartition(".")
                net.get_submodule(holder_path)[name] = _build(ext_desc, f"{path}: {key}.{ext_path}")
            state = {k[len(key) + 1:]: v for k, v in tensors.items() if k.startswith(key + ".")}
            result = net.load_state_dict(state, strict=False)
        except (AttributeError, TypeError, KeyError, RuntimeError) as exc:  # Paths or shapes the network lacks.
            raise SafeExportError(f"{path}: {key} does not match its recorded configuration "
                                  f"({exc.__class__.__name__}: {str(exc)[:300]})") from None
        if result.missing_keys or result.unexpected_keys:
            raise SafeExportError(f"{path}: {key} does not match its recorded configuration (missing "
                                  f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
        networks[key] = net.eval().requires_grad_(False).to(device)
    if "G_ema" not in networks:
        raise SafeExportError(f"{path}: holds no G_ema network (networks: {', '.join(networks) or 'none'})")
    return networks, config.get("training_set_kwargs", {})


@click.command()
@click.argument("snapshot", metavar="SNAP.pkl")
@click.option("--out", help="Output file [default: SNAP.safetensors]")
@click.option("--with-D", "with_d", is_flag=True, help="Export D too (G_ema only by default)")
def main(snapshot, out, with_d):
    """Export a network pickle's G_ema (and D) as safetensors plus a JSON header. Unpickles SNAP.pkl once: only
    export pickles you trust."""
    import legacy

    with dnnlib.util.open_url(snapshot) as f:
        data = legacy.load_network_pkl(f)
    networks = {"G_ema": data["G_ema"]}
    if with_d and data.get("D") is not None:
        networks["D"] = data["D"]
    out = out or os.path.splitext(snapshot)[0] + ".safetensors"
    try:
        export_networks(networks, out, data.get("training_set_kwargs"))
    except SafeExportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {out} ({', '.join(networks)})")


if __name__ == "__main__":
    main()
