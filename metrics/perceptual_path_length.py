"""Perceptual Path Length (Karras et al. 2019), NVIDIA's stylegan2-ada-pytorch procedure.

For random (z0, z1) and t (uniform for 'full', 0 for 'end'), the squared LPIPS distance between
images at t and t + epsilon, divided by epsilon^2. Interpolation is slerp in Z or lerp in W; noise
buffers are re-randomised per batch; optional centre crop; images larger than 256 px are box
downsampled to 256. The result is the mean after dropping values outside the 1st-99th percentile.
"""

import copy

import numpy as np
import torch

import dnnlib

from . import detectors, metric_utils


def slerp(a, b, t):
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d)
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True)
    d = a * torch.cos(p) + c * torch.sin(p)
    return d / d.norm(dim=-1, keepdim=True)


class PPLSampler(torch.nn.Module):
    def __init__(self, G, G_kwargs, epsilon, space, sampling, crop, vgg16, generator=None):
        assert space in ["z", "w"]
        assert sampling in ["full", "end"]
        super().__init__()
        self.G = copy.deepcopy(G)
        self.G_kwargs = G_kwargs
        self.epsilon = epsilon
        self.space = space
        self.sampling = sampling
        self.crop = crop
        self.vgg16 = vgg16  # TorchScript, read-only here (deep copies of loaded TorchScript lose leaf parameters).
        self.generator = generator

    def forward(self, c):
        gen = self.generator
        t = torch.rand([c.shape[0]], device=c.device, generator=gen) * (1 if self.sampling == "full" else 0)
        z0, z1 = torch.randn([c.shape[0] * 2, self.G.z_dim], device=c.device, generator=gen).chunk(2)

        if self.space == "w":
            w0, w1 = self.G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
            wt0 = w0.lerp(w1, t.unsqueeze(1).unsqueeze(2))
            wt1 = w0.lerp(w1, t.unsqueeze(1).unsqueeze(2) + self.epsilon)
        else:
            zt0 = slerp(z0, z1, t.unsqueeze(1))
            zt1 = slerp(z0, z1, t.unsqueeze(1) + self.epsilon)
            wt0, wt1 = self.G.mapping(z=torch.cat([zt0, zt1]), c=torch.cat([c, c])).chunk(2)

        for name, buf in self.G.named_buffers():
            if name.endswith(".noise_const"):
                buf.copy_(torch.randn(buf.shape, device=buf.device, generator=gen if buf.device == c.device else None))

        img = self.G.synthesis(ws=torch.cat([wt0, wt1]), noise_mode="const", force_fp32=True, **self.G_kwargs)
        if self.crop:
            assert img.shape[2] == img.shape[3]
            c8 = img.shape[2] // 8
            img = img[:, :, c8 * 3: c8 * 7, c8 * 2: c8 * 6]
        factor = self.G.img_resolution // 256
        if factor > 1:
            img = img.reshape([-1, img.shape[1], img.shape[2] // factor, factor, img.shape[3] // factor, factor]).mean([3, 5])
        img = (img + 1) * (255 / 2)
        if self.G.img_channels == 1:
            img = img.repeat([1, 3, 1, 1])
        lpips_t0, lpips_t1 = self.vgg16(img, resize_images=False, return_lpips=True).chunk(2)
        return (lpips_t0 - lpips_t1).square().sum(1) / self.epsilon ** 2


def trimmed_mean(dist):
    """Mean of the values within the [1st, 99th] percentile (lower/higher interpolation), as NVIDIA's PPL."""
    dist = np.asarray(dist)
    lo = np.percentile(dist, 1, method="lower")
    hi = np.percentile(dist, 99, method="higher")
    return float(np.extract(np.logical_and(dist >= lo, dist <= hi), dist).mean())


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size, detector_url=detectors.VGG16_URL):
    num_samples = opts.num_gen(num_samples)
    dataset_kwargs = metric_utils.reference_dataset_kwargs(opts)
    c_dim = int(getattr(opts.G, "c_dim", 0))
    dataset = dnnlib.util.construct_class_by_name(**dataset_kwargs) if c_dim > 0 and opts.fake_labels == "dataset" else None
    seed = (opts.seed if opts.seed is not None else int.from_bytes(np.random.bytes(4), "little")) * opts.num_gpus + opts.rank
    labels = metric_utils.FakeLabelSampler(dataset, c_dim, opts.fake_labels, rng=np.random.default_rng(seed))
    vgg16 = metric_utils.get_feature_detector(detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                              verbose=opts.verbose, opts=opts)
    gen = torch.Generator(device=opts.device).manual_seed(seed)
    sampler = PPLSampler(G=opts.G, G_kwargs=opts.G_kwargs, epsilon=epsilon, space=space, sampling=sampling, crop=crop,
                         vgg16=vgg16, generator=gen)
    sampler.G.eval().requires_grad_(False).to(opts.device)

    dist = []
    with metric_utils._progress_bar(opts, num_samples, "ppl sampling") as bar:
        for _batch_start in range(0, num_samples, batch_size * opts.num_gpus):
            c = torch.from_numpy(labels.sample(batch_size)[0]).to(opts.device)
            with torch.no_grad():
                x = sampler(c)
            for src in range(opts.num_gpus):
                y = x.clone()
                if opts.num_gpus > 1:
                    torch.distributed.broadcast(y, src=src)
                dist.append(y)
            bar.update(min(batch_size * opts.num_gpus, num_samples - bar.n))
    if opts.rank != 0:
        return float("nan")
    return trimmed_mean(torch.cat(dist)[:num_samples].cpu().numpy())
