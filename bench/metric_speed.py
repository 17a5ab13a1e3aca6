"""Time a 10k-fake fd_cls evaluation on CPU (digits upscaled to 32 px, offline classifier detector).

    python bench/metric_speed.py                      # tiny stand-in generator
    python bench/metric_speed.py --generator=stylegan2 # training.networks.Generator, 32 px, channel_base 4096
    python bench/metric_speed.py --num-gen=2000 --threads=1

Prints the one-off costs (dataset build, classifier training, real-image features) and then the time of
an fd_cls evaluation whose classifier and real statistics are already cached, i.e. what a snapshot
evaluation during training costs.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dnnlib  # noqa: E402
from metrics import metric_main, offline_classifier  # noqa: E402


class TinyConvGenerator(torch.nn.Module):
    """z (+ one-hot c) -> FC -> 4x4 -> three (upsample, conv) blocks -> 32x32, tanh."""

    def __init__(self, z_dim=64, c_dim=10, img_resolution=32, img_channels=1, ch=32):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, c_dim, img_resolution, img_channels
        self.fc = torch.nn.Linear(z_dim + c_dim, ch * 16)
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(ch, ch, 3, padding=1) for _ in range(3)])
        self.out = torch.nn.Conv2d(ch, img_channels, 1)
        self.ch = ch

    def forward(self, z, c, truncation_psi=1, noise_mode="const", **kwargs):
        x = F.leaky_relu(self.fc(torch.cat([z, c], dim=1))).reshape(-1, self.ch, 4, 4)
        for conv in self.convs:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")), 0.2)
        return torch.tanh(self.out(x))


def stylegan2_generator(channel_base=4096, channel_max=128):
    """training.networks.Generator, random weights, CPU-sized (the cifar preset uses 16384/512: ~15x slower)."""
    from training.networks import Generator

    return Generator(z_dim=128, c_dim=10, w_dim=128, img_resolution=32, img_channels=1, mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max))


def build_digits(root, resolution=32):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16 * 255)[:, None]
    x = F.interpolate(x, size=[resolution, resolution], mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)
    os.makedirs(os.path.join(root, "00000"), exist_ok=True)
    labels = []
    for i, (img, k) in enumerate(zip(x.numpy(), d.target)):
        name = f"00000/img{i:08d}.png"
        PIL.Image.fromarray(img[0]).save(os.path.join(root, name))
        labels.append([name, int(k)])
    with open(os.path.join(root, "dataset.json"), "w") as f:
        import json

        json.dump({"labels": labels}, f)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", choices=["tiny", "stylegan2"], default="tiny")
    parser.add_argument("--num-gen", type=int, default=10000, help="fakes (fd_cls uses 10000)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    parser.add_argument("--workdir", default=None, help="dataset and cache directory [default: a temporary one]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or tmp
        dnnlib.util.set_cache_dir(os.path.join(work, "cache"))
        t0 = time.time()
        data = os.path.join(work, "digits32")
        if not os.path.isfile(os.path.join(data, "dataset.json")):
            build_digits(data)
        t1 = time.time()
        kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=data, use_labels=True, resolution=32)
        _path, info = offline_classifier.build_classifier(kwargs, verbose=False)
        t2 = time.time()

        torch.manual_seed(0)
        G = TinyConvGenerator() if args.generator == "tiny" else stylegan2_generator()
        common = dict(G=G, dataset_kwargs=kwargs, device="cpu", num_gen_override=args.num_gen, seed=0)
        cold = metric_main.calc_metric("fd_cls", **common)  # Computes and caches the real statistics.
        warm = metric_main.calc_metric("fd_cls", **common)
        print(f"torch threads: {torch.get_num_threads()}, cpu cores: {os.cpu_count()}, generator: {args.generator}")
        print(f"dataset build (1797 PNGs, 32 px):        {t1 - t0:7.1f} s")
        print(f"classifier (train or cache hit):         {t2 - t1:7.1f} s  (test accuracy {info['test_accuracy']:.4f},"
              f" trained in {info['train_seconds']:.1f} s)")
        print(f"fd_cls, cold (real features + fakes):    {cold.total_time:7.1f} s  fd_cls={cold.results.fd_cls:.3f}")
        print(f"fd_cls, {args.num_gen} fakes, cached reals: {warm.total_time:7.1f} s  fd_cls={warm.results.fd_cls:.3f}"
              f"  ({args.num_gen / warm.total_time:.0f} fakes/s)")


if __name__ == "__main__":
    main()
