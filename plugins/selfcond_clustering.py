"""Self-conditioned GAN's clustering: k-means on D features, stable cluster ids, nearest-centroid labels.

Pure numpy / scikit-learn / scipy functions, so they are tested on synthetic features without a GAN.
"""

import numpy as np
import scipy.optimize
import torch


def first_clustering(features, k, seed, n_init=10):
    """(centroids [k, d], labels [n]) of k-means++ with n_init restarts (the official first clustering)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed).fit(features)
    return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64)


def means_under_labels(features, labels, k, rng):
    """[k, d] initial centroids: each cluster's mean under the old labels; an emptied cluster is re-seeded with a
    random feature vector (the official code crashes on this branch). Returns (centroids, re-seeded ids)."""
    centroids = np.zeros([k, features.shape[1]], dtype=np.float64)
    counts = np.bincount(labels, minlength=k)
    np.add.at(centroids, labels, features)
    empty = np.flatnonzero(counts == 0)
    centroids[counts > 0] /= counts[counts > 0, None]
    if empty.size:
        centroids[empty] = features[rng.choice(features.shape[0], size=empty.size, replace=False)]
    return centroids, empty


def recluster(features, old_labels, k, seed, init_means=True):
    """(centroids, labels, re-seeded ids) of k-means started from the old clusters' means (n_init 1), or from
    k-means++ when init_means is False."""
    from sklearn.cluster import KMeans

    if not init_means:
        return (*first_clustering(features, k, seed), np.zeros([0], dtype=np.int64))
    init, empty = means_under_labels(features, old_labels, k, np.random.default_rng(seed))
    km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(features)
    return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64), empty


def match_to_previous(new_labels, old_labels, k):
    """permutation p (new id i -> p[i]) maximising the overlap of new with old clusters (Hungarian matching on
    the contingency M[i, j] = #{n: new_n = i, old_n = j})."""
    overlap = np.zeros([k, k], dtype=np.int64)
    np.add.at(overlap, (new_labels, old_labels), 1)
    rows, cols = scipy.optimize.linear_sum_assignment(-overlap)
    perm = np.empty(k, dtype=np.int64)
    perm[rows] = cols
    return perm


def apply_permutation(centroids, labels, perm):
    """Centroids and labels renamed by perm (new id i becomes perm[i])."""
    out = np.empty_like(centroids)
    out[perm] = centroids
    return out, perm[labels]


def nearest_centroid(features, centroids):
    """int64 [n] index of the nearest centroid (squared Euclidean), in torch so it runs on the device."""
    f = torch.as_tensor(features, dtype=torch.float32)
    mu = torch.as_tensor(centroids, dtype=torch.float32, device=f.device)
    d2 = f.square().sum(1, keepdim=True) - 2 * f @ mu.t() + mu.square().sum(1)[None]
    return d2.argmin(dim=1)


def purity(cluster_ids, class_ids):
    """sum over clusters of the largest class count in it, divided by n."""
    cluster_ids, class_ids = np.asarray(cluster_ids), np.asarray(class_ids)
    total = 0
    for j in np.unique(cluster_ids):
        total += np.bincount(class_ids[cluster_ids == j]).max()
    return float(total / len(cluster_ids))


def nmi(cluster_ids, class_ids):
    """Normalised mutual information (arithmetic normalisation, scikit-learn's default)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(class_ids, cluster_ids))
