"""Improved precision and recall (Kynkaanniemi et al. 2019), NVIDIA's batched procedure.

A probe counts as inside a manifold when its distance to some manifold point is at most that
point's distance to its k-th nearest manifold neighbour (k = nhood_size; the point itself is the
0-th). Precision: fakes inside the real manifold; recall: reals inside the fake manifold. Features
are stored as float16 like NVIDIA's; on devices without half-precision cdist the distances are
computed in float32 from the float16 features and rounded back to float16.
"""

import torch

from . import detectors, metric_utils


def _cdist(a, b):
    if a.device.type == "cpu":
        return torch.cdist(a.float().unsqueeze(0), b.float().unsqueeze(0))[0].to(a.dtype)
    return torch.cdist(a.unsqueeze(0), b.unsqueeze(0))[0]


def compute_distances(row_features, col_features, num_gpus=1, rank=0, col_batch_size=10000):
    """Distance matrix [rows, cols]; columns are split across GPUs and gathered on rank 0 (None elsewhere)."""
    assert 0 <= rank < num_gpus
    num_cols = col_features.shape[0]
    num_batches = ((num_cols - 1) // col_batch_size // num_gpus + 1) * num_gpus
    col_batches = torch.nn.functional.pad(col_features, [0, 0, 0, -num_cols % num_batches]).chunk(num_batches)
    dist_batches = []
    for col_batch in col_batches[rank::num_gpus]:
        dist_batch = _cdist(row_features, col_batch)
        for src in range(num_gpus):
            dist_broadcast = dist_batch.clone()
            if num_gpus > 1:
                torch.distributed.broadcast(dist_broadcast, src=src)
            dist_batches.append(dist_broadcast.cpu() if rank == 0 else None)
    return torch.cat(dist_batches, dim=1)[:, :num_cols] if rank == 0 else None


def precision_recall(real_features, gen_features, nhood_size=3, row_batch_size=10000, col_batch_size=10000, num_gpus=1, rank=0):
    """(precision, recall) of feature tensors [n, d]; NaN on ranks other than 0."""
    results = dict()
    for name, manifold, probes in [("precision", real_features, gen_features), ("recall", gen_features, real_features)]:
        kth = []
        for manifold_batch in manifold.split(row_batch_size):
            dist = compute_distances(manifold_batch, manifold, num_gpus=num_gpus, rank=rank, col_batch_size=col_batch_size)
            kth.append(dist.to(torch.float32).kthvalue(nhood_size + 1).values.to(manifold.dtype) if rank == 0 else None)
        kth = torch.cat(kth) if rank == 0 else None
        pred = []
        for probes_batch in probes.split(row_batch_size):
            dist = compute_distances(probes_batch, manifold, num_gpus=num_gpus, rank=rank, col_batch_size=col_batch_size)
            pred.append((dist <= kth).any(dim=1) if rank == 0 else None)
        results[name] = float(torch.cat(pred).to(torch.float32).mean()) if rank == 0 else float("nan")
    return results["precision"], results["recall"]


def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size, detector_url=detectors.VGG16_URL):
    detector_kwargs = dict(return_features=True)
    dataset_kwargs = metric_utils.reference_dataset_kwargs(opts)
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, rel_lo=0, rel_hi=0,
        capture_all=True, max_items=opts.max_real(max_real), dataset_kwargs=dataset_kwargs)
    gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs, rel_lo=0, rel_hi=1,
        capture_all=True, max_items=opts.num_gen(num_gen), dataset_kwargs=dataset_kwargs)
    real_features = real.get_all_torch().to(torch.float16).to(opts.device)
    gen_features = gen.get_all_torch().to(torch.float16).to(opts.device)
    return precision_recall(real_features, gen_features, nhood_size=nhood_size, row_batch_size=row_batch_size,
                            col_batch_size=col_batch_size, num_gpus=opts.num_gpus, rank=opts.rank)
