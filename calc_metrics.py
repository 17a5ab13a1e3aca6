"""Evaluate quality metrics of a network snapshot (ours or NVIDIA's) and append them to metric-<name>.jsonl.

Examples:

    python calc_metrics.py --metrics=fid50k_full,pr50k3_full --network=runs/00000-x/network-snapshot-000400.pkl
    python calc_metrics.py --metrics=fd_cls,class_consistency --network=snap.pkl --data=datasets/digits16.zip
    python calc_metrics.py --metrics=fid_shots --network=snap.pkl --label-file=datasets/lt_100.json

Inception/VGG detectors are looked up in --detector-dir / $GAN_DETECTOR_DIR, then in the download cache,
then downloaded (metrics/detectors.py). *_cls metrics use the project's offline classifier
(metrics/offline_classifier.py), trained on the dataset on first use.
"""

import json
import os
import tempfile

import click
import torch

import dnnlib
import legacy
from metrics import metric_main, metric_utils

# ----------------------------------------------------------------------------


def load_snapshot(network_pkl):
    """The snapshot dict of a path or URL; click errors name the file when it is missing or not a pickle."""
    if not dnnlib.util.is_url(network_pkl, allow_file_urls=True) and not os.path.isfile(os.path.expanduser(network_pkl)):
        raise click.ClickException(f"--network: no such file: {network_pkl!r}")
    if network_pkl.endswith(".safetensors"):  # Weights without code: nothing is unpickled.
        from training.safe_export import SafeExportError, load_networks

        try:
            networks, training_set_kwargs = load_networks(os.path.expanduser(network_pkl))
        except SafeExportError as exc:
            raise click.ClickException(f"--network: {exc}") from None
        return dict(networks, training_set_kwargs=training_set_kwargs or None)
    try:
        with dnnlib.util.open_url(network_pkl, verbose=False) as f:
            data = legacy.load_network_pkl(f)
    except legacy.NetworkPickleError as exc:
        raise click.ClickException(f"--network {network_pkl!r} is not a usable network pickle: {exc}") from None
    except (OSError, dnnlib.util.DownloadError) as exc:
        raise click.ClickException(f"--network {network_pkl!r} cannot be read: {exc}") from None
    if data.get("G_ema") is None:
        raise click.ClickException(f"--network {network_pkl!r} has no G_ema network")
    return data


def find_run_dir(network_pkl, run_dir):
    if run_dir is not None:
        return run_dir
    path = os.path.expanduser(network_pkl)
    return os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else None


def training_label_file(run_dir):
    """The label file the run was trained with, from its training_options.json (if recorded)."""
    options = os.path.join(run_dir or "", "training_options.json")
    if not run_dir or not os.path.isfile(options):
        return None
    try:
        with open(options, "r", encoding="utf-8") as f:
            kwargs = json.load(f).get("training_set_kwargs") or {}
    except (OSError, ValueError):
        return None
    return kwargs.get("label_file")


def build_dataset_kwargs(snapshot, G, data, label_file, mirror, run_dir):
    if data is not None:
        kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data)
    elif snapshot.get("training_set_kwargs") is not None:
        from training.trusted_classes import UntrustedInput, check_dataset_kwargs

        if not isinstance(snapshot["training_set_kwargs"], dict):
            raise click.ClickException("--network: its training_set_kwargs is not a mapping; pass --data")
        try:  # A safetensors header is data: it may name only this project's dataset class.
            kwargs = check_dataset_kwargs(snapshot["training_set_kwargs"], "--network")
        except UntrustedInput as exc:
            raise click.ClickException(f"{exc}; or pass --data") from None
        if label_file is None:  # Our snapshots keep it beside the upstream kwargs; older runs in training_options.json.
            label_file = (snapshot.get("training_set_extra_kwargs") or {}).get("label_file") or training_label_file(run_dir)
    else:
        raise click.ClickException("Could not look up dataset options from the snapshot; please specify --data")
    kwargs.resolution = G.img_resolution
    kwargs.use_labels = G.c_dim != 0
    if label_file is not None:
        kwargs.label_file = label_file
    if mirror is not None:
        kwargs.xflip = mirror
    return kwargs


def subprocess_fn(rank, args, temp_dir):
    if args.num_gpus > 1:
        init_file = os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))
        torch.distributed.init_process_group(backend="nccl", init_method=f"file://{init_file}", rank=rank,
                                             world_size=args.num_gpus)
    device = torch.device(args.device if args.num_gpus == 1 else f"cuda:{rank}")
    G = args.G
    for metric in args.metrics:
        if rank == 0 and args.verbose:
            print(f"Calculating {metric}...", flush=True)
        result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=args.dataset_kwargs, num_gpus=args.num_gpus,
                                         rank=rank, device=device, progress=args.verbose, detector=args.detector,
                                         fake_labels=args.fake_labels, num_gen_override=args.num_gen, seed=args.seed)
        if rank == 0:
            metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
        if rank == 0 and args.verbose:
            print()


def parse_comma_list(s):
    if isinstance(s, list):
        return s
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def parse_fake_labels(text):
    if text in ("dataset", "uniform"):
        return text
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: use 'dataset', 'uniform' or a comma list of class ids") from None


@click.command()
@click.pass_context
@click.option("network_pkl", "--network", help="Network pickle filename or URL", metavar="PATH", required=True)
@click.option("--metrics", help="Comma-separated list or 'none'", type=parse_comma_list, default="fid50k_full", show_default=True)
@click.option("--data", help="Dataset to evaluate against [default: look up from the snapshot]", metavar="PATH")
@click.option("--label-file", help="Label file (e.g. lt_dataset.py output) for the dataset; shot-band metrics need one", metavar="PATH")
@click.option("--mirror", help="Whether the dataset was augmented with x-flips during training [default: look up]", type=bool, metavar="BOOL")
@click.option("--gpus", help="Number of GPUs to use", type=int, default=1, metavar="INT", show_default=True)
@click.option("--verbose", help="Print optional information", type=bool, default=True, metavar="BOOL", show_default=True)
@click.option("--device", help="cpu, cuda, cuda:N [default: cuda if available]", metavar="DEVICE")
@click.option("--detector-dir", help="Directory holding inception-2015-12-05.pt / vgg16.pt [default: $GAN_DETECTOR_DIR]", metavar="DIR")
@click.option("--detector-sha256", help="Expected detector digests, NAME=HEX[,NAME=HEX] (NAME: file name without .pt)", metavar="LIST")
@click.option("--classifier", help="Offline classifier (TorchScript) for *_cls metrics [default: cached/trained]", metavar="PATH")
@click.option("--fake-labels", help="Classes of fakes: dataset (as counts), uniform, or a comma list", default="dataset", show_default=True)
@click.option("--num-gen", help="Use at most this many fakes (quick, non-standard values)", type=int, metavar="INT")
@click.option("--seed", help="Random seed of the fakes [default: random]", type=click.IntRange(0, 2 ** 32 - 1), metavar="INT")
@click.option("--run-dir", help="Where metric-<name>.jsonl goes [default: the snapshot's directory]", metavar="DIR")
def calc_metrics(ctx, network_pkl, metrics, data, label_file, mirror, gpus, verbose, device, detector_dir, detector_sha256,
                 classifier, fake_labels, num_gen, seed, run_dir):
    """Calculate quality metrics for a previous training run or a pretrained network pickle (the list of metrics
    below is generated from metrics/metric_main.py's registry)."""
    if metrics == ["none"]:
        metrics = []
    invalid = [m for m in metrics if not metric_main.is_valid_metric(m)]
    if invalid:
        ctx.fail("\n".join([f"unknown metric(s): {', '.join(invalid)}", "--metrics can only contain the following values:"]
                           + metric_main.list_valid_metrics()))
    if gpus < 1:
        ctx.fail("--gpus must be at least 1")
    if gpus > 1 and torch.cuda.device_count() < gpus:
        ctx.fail(f"--gpus={gpus} needs {gpus} CUDA devices, but {torch.cuda.device_count()} are available; use --gpus=1")
    try:
        detector_sha = metric_utils.detectors.parse_sha256_spec(detector_sha256)
    except metric_utils.MetricError as exc:
        ctx.fail(f"--detector-sha256: {exc}")

    args = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, network_pkl=network_pkl, verbose=verbose,
                           fake_labels=parse_fake_labels(fake_labels), num_gen=num_gen, seed=seed,
                           detector=dict(dir=detector_dir, sha256=detector_sha, classifier=classifier))
    args.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if verbose:
        print(f'Loading network from "{network_pkl}"...')
    snapshot = load_snapshot(network_pkl)
    args.G = snapshot["G_ema"].eval().requires_grad_(False)
    args.run_dir = find_run_dir(network_pkl, run_dir)
    args.dataset_kwargs = build_dataset_kwargs(snapshot, args.G, data, label_file, mirror, args.run_dir)
    try:
        for metric in metrics:
            metric_main.check_metric(metric, G=args.G, dataset_kwargs=args.dataset_kwargs)
    except (ValueError, metric_utils.MetricError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        dataset = dnnlib.util.construct_class_by_name(**args.dataset_kwargs)
        getattr(dataset, "close", lambda: None)()
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot use the dataset {args.dataset_kwargs.get('path')!r} for this network: {exc} "
                                   "(pass --data=PATH to choose another)") from None
    if verbose:
        print("Dataset options:")
        print(json.dumps(args.dataset_kwargs, indent=2))
    if args.run_dir is not None and not os.path.isdir(args.run_dir):
        os.makedirs(args.run_dir, exist_ok=True)

    if verbose:
        print("Launching processes...")
    try:
        with tempfile.TemporaryDirectory() as temp_dir:
            if args.num_gpus == 1:
                subprocess_fn(rank=0, args=args, temp_dir=temp_dir)
            else:
                torch.multiprocessing.spawn(fn=subprocess_fn, args=(args, temp_dir), nprocs=args.num_gpus)
    except metric_utils.MetricError as exc:
        raise click.ClickException(str(exc)) from None


# ----------------------------------------------------------------------------

def metrics_help():
    """calc_metrics' help text with every registered metric, so that it cannot fall behind the registry."""
    import textwrap

    names = textwrap.wrap(", ".join(metric_main.list_valid_metrics()), 96)
    return (" ".join(calc_metrics.help.split()) + "\n\n\b\nMetrics: " + "\n  ".join(names) +
            "\n\nPlugins register more while they train (e.g. selfcond's cluster_nmi and cluster_purity).")


calc_metrics.help = metrics_help()

if __name__ == "__main__":
    calc_metrics()
