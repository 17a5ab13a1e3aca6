"""Self-conditioned GAN (Liu et al., CVPR 2020): k-means clusters of D's features as classes.

A conditional GAN without labels: real images are clustered (k-means) in the feature space of a frozen copy
of D, G and D are conditioned on the one-hot cluster, and the clustering is redone as D learns, with
Hungarian matching keeping cluster ids stable. Covering every cluster at its frequency counters mode
collapse.

Procedure: a clustering set of --sc-nimgs dataset indices, drawn once from the run seed; at kimg 0 k-means++
(10 restarts) on the features of the random-initialised D; every --sc-recluster-kimg: D_f <- copy(D), k-means
started from the old clusters' means (an emptied cluster is re-seeded), matched to the old ids. Each real
batch is labelled with its nearest centroid under D_f. Fake labels are the real batch's labels (`reuse`, the
official) or draws from the cluster histogram (`hist`), which is also G's label prior, so generate.py and
the metrics draw c from it without this plugin. Rank 0 clusters; the result is broadcast.
"""

import copy

import click
import numpy as np
import torch

from plugins import PluginError, hookimpl
from plugins import selfcond_clustering as clustering

__version__ = "1.0"

FEATURES = ("b4in", "fc")
FAKE_LABELS = ("reuse", "hist")
CAPTURE_KEY = {"b4in": "b4_in", "fc": "fc"}


class SelfCond:
    version = __version__
    plugin_name = "selfcond"

    def __init__(self, sc_k=100, sc_nimgs=25000, sc_recluster_kimg=1600.0, sc_feature="b4in", sc_fake_labels="reuse",
                 sc_match=True, sc_init_means=True):
        self.k = int(sc_k)
        self.nimgs = int(sc_nimgs)
        self.recluster_kimg = float(sc_recluster_kimg)
        self.feature = str(sc_feature)
        self.fake_labels = str(sc_fake_labels)
        self.match = bool(sc_match)  # click type=bool options, as noisytwins' --nt-d-noise.
        self.init_means = bool(sc_init_means)
        if self.k < 2:
            raise PluginError(f"selfcond: --sc-k={self.k}; need at least 2 clusters")
        if self.nimgs < 1 or self.recluster_kimg <= 0:
            raise PluginError("selfcond: --sc-nimgs and --sc-recluster-kimg must be positive")
        if self.feature not in FEATURES or self.fake_labels not in FAKE_LABELS:
            raise PluginError(f"selfcond: --sc-feature must be one of {FEATURES}, --sc-fake-labels one of {FAKE_LABELS}")
        self.dataset = None
        self.device = None
        self.seed = 0
        self.D_f = None
        self.centroids = None  # float32 [k, d] (numpy) and its device copy.
        self._centroids_t = None
        self.counts = None
        self.indices = None  # Clustering set: dataset indices.
        self.labels = None  # Their cluster ids at the last clustering.
        self.done = -1  # Index of the last clustering: floor(kimg / recluster_kimg) when it ran.
        self._agreement = None  # (clustering key, {cluster_nmi, cluster_purity}) of the last evaluation.

    @staticmethod
    @hookimpl
    def gan_add_options():
        return [
            click.Option(["--sc-k"], type=int, default=100, show_default=True, help="selfcond: number of clusters k"),
            click.Option(["--sc-nimgs"], type=int, default=25000, show_default=True,
                         help="selfcond: images in the clustering set (capped at the dataset size)"),
            click.Option(["--sc-recluster-kimg"], type=float, default=1600, show_default=True,
                         help="selfcond: re-cluster every this many kimg"),
            click.Option(["--sc-feature"], type=click.Choice(FEATURES), default="b4in", show_default=True,
                         help="selfcond: D feature to cluster: b4in (epilogue input, before minibatch-stddev) or fc"),
            click.Option(["--sc-fake-labels"], type=click.Choice(FAKE_LABELS), default="reuse", show_default=True,
                         help="selfcond: fake labels = the real batch's clusters (reuse, official) or draws from the cluster histogram (hist)"),
            click.Option(["--sc-match"], type=bool, default=True, show_default=True, metavar="BOOL",
                         help="selfcond: keep cluster ids stable across re-clusterings (Hungarian matching)"),
            click.Option(["--sc-init-means"], type=bool, default=True, show_default=True, metavar="BOOL",
                         help="selfcond: start each re-clustering from the old clusters' means (else k-means++)"),
        ]

    # ------------------------------------------------------------------ setup

    def _check_size(self, size):
        n = min(self.nimgs, size)
        if self.k > n:
            raise PluginError(f"selfcond: --sc-k={self.k} is larger than the clustering set ({n} images: --sc-nimgs "
                              "capped at the dataset size); use fewer clusters")

    @hookimpl
    def gan_configure(self, config, dataset_kwargs):
        if dataset_kwargs.get("use_labels"):
            raise PluginError("selfcond supplies its own labels; drop --cond=1 (dataset labels, if any, are still "
                              "used for the cluster_nmi and cluster_purity metrics)")
        if dataset_kwargs.get("max_size"):
            self._check_size(int(dataset_kwargs["max_size"]))

    @hookimpl
    def gan_label_dim(self):
        return self.k

    def cluster_index(self, cur_nimg):
        """Which clustering is due at cur_nimg: floor(kimg / recluster_kimg)."""
        return int(cur_nimg // int(round(self.recluster_kimg * 1000)))

    @hookimpl(tryfirst=True)  # The clusters are the label space: announced before the other plugins' gan_setup.
    def gan_setup(self, ctx):
        self.dataset = ctx.dataset
        self._check_size(len(ctx.dataset))
        self.device = ctx.device
        self.seed = int(ctx.random_seed)
        state = ctx.restored_state(self)
        if state is not None:
            self._restore(state, ctx.D)
        if self.indices is None:
            n = min(self.nimgs, len(self.dataset))
            self.indices = np.sort(np.random.default_rng(self.seed).choice(len(self.dataset), size=n, replace=False))
        if self.centroids is None:
            self._cluster(ctx, ctx.cur_nimg, self.cluster_index(ctx.cur_nimg))
        else:  # Resumed: tell the trainer and the other plugins the restored counts.
            self._announce(ctx)

    # ------------------------------------------------------------------ clustering

    def features(self, images):
        """Flattened D_f features of images in [-1, 1] (no augmentation, no gradient)."""
        n = images.shape[0]
        mbstd = getattr(self.D_f.b4, "mbstd", None)
        group = int(mbstd.group_size or 1) if mbstd is not None else 1
        if n % group:  # D's minibatch-stddev needs whole groups: pad with copies of the last image.
            images = torch.cat([images, images[-1:].expand(group - n % group, *images.shape[1:])])
        capture = {}
        with torch.no_grad():
            self.D_f(images, torch.zeros([images.shape[0], self.k], device=images.device), capture=capture)
        return capture[CAPTURE_KEY[self.feature]][:n].flatten(1).float()

    def dataset_features(self, dataset, indices, batch=256):
        out = []
        for start in range(0, len(indices), batch):
            imgs = np.stack([dataset[int(i)][0] for i in indices[start:start + batch]])
            x = torch.as_tensor(imgs, device=self.device).to(torch.float32) / 127.5 - 1
            out.append(self.features(x).cpu())
        return torch.cat(out).numpy()

    def _kmeans(self, cluster_index):
        feats = self.dataset_features(self.dataset, self.indices)
        seed = self.seed * 1000 + cluster_index
        if self.labels is None:
            centroids, labels = clustering.first_clustering(feats, self.k, seed)
            reseeded = np.zeros([0], dtype=np.int64)
        else:
            centroids, labels, reseeded = clustering.recluster(feats, self.labels, self.k, seed, self.init_means)
            if self.match:
                perm = clustering.match_to_previous(labels, self.labels, self.k)
                centroids, labels = clustering.apply_permutation(centroids, labels, perm)
        return dict(centroids=centroids, labels=labels, reseeded=reseeded)

    def _cluster(self, ctx, cur_nimg, cluster_index):
        self.D_f = ctx.frozen_D()  # Every rank copies D at the same cur_nimg.
        result = ctx.on_rank0_then_broadcast(lambda: self._kmeans(cluster_index))
        self.centroids, self.labels = result["centroids"], result["labels"]
        self._centroids_t = torch.as_tensor(self.centroids, device=self.device)
        self.counts = np.bincount(self.labels, minlength=self.k)
        self.done = cluster_index
        self._announce(ctx)
        if ctx.rank == 0:
            print(f"selfcond: clustered {len(self.labels)} images at kimg {cur_nimg / 1000:g}: cluster sizes "
                  f"{self.counts.min()}-{self.counts.max()}, {int((self.counts == 0).sum())} empty, "
                  f"{len(result['reseeded'])} re-seeded")

    def _announce(self, ctx):
        ctx.set_class_counts(self.counts)  # e.g. NoisyTwins' lambda_k follow the clusters.
        ctx.set_label_prior(np.maximum(self.counts, 0) + 1e-12)

    @hookimpl
    def gan_step(self, ctx):
        index = self.cluster_index(ctx.cur_nimg)
        if index > self.done:
            self._cluster(ctx, ctx.cur_nimg, index)

    @hookimpl
    def gan_real_labels(self, images):
        ids = clustering.nearest_centroid(self.features(images), self._centroids_t)
        return torch.nn.functional.one_hot(ids, self.k).to(torch.float32)

    @hookimpl
    def gan_sample_fake_labels(self, n, rng, real_labels):
        if self.fake_labels == "reuse":  # The real batch's clusters, repeated for every phase.
            labels = real_labels.detach().cpu().numpy()
            return labels[np.arange(n) % labels.shape[0]]
        p = self.counts / self.counts.sum()
        onehot = np.zeros([n, self.k], dtype=np.float32)
        onehot[np.arange(n), rng.choice(self.k, size=n, p=p)] = 1
        return onehot

    # ------------------------------------------------------------------ state

    @hookimpl
    def gan_state_dict(self):
        if self.centroids is None:
            return dict(k=self.k, feature=self.feature)
        return dict(k=self.k, feature=self.feature, centroids=self.centroids, counts=self.counts, indices=self.indices,
                    labels=self.labels, done=self.done,
                    D_f={k: v.detach().cpu() for k, v in self.D_f.state_dict().items()})

    def _restore(self, state, D):
        if state.get("k") != self.k or state.get("feature") != self.feature:
            raise PluginError(f"selfcond: the resumed run used --sc-k={state.get('k')} --sc-feature={state.get('feature')}; "
                              f"this run asks for {self.k} and {self.feature}; use the same values to resume")
        if "centroids" not in state:
            return
        self.centroids = np.asarray(state["centroids"], dtype=np.float32)
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self.indices = np.asarray(state["indices"], dtype=np.int64)
        self.labels = np.asarray(state["labels"], dtype=np.int64)
        self.done = int(state["done"])
        self.D_f = copy.deepcopy(D).eval().requires_grad_(False)
        self.D_f.load_state_dict(state["D_f"])
        self._centroids_t = torch.as_tensor(self.centroids, device=self.device)

    # ------------------------------------------------------------------ metrics

    @hookimpl
    def gan_register_metrics(self, register):
        # Both measure the current clustering (D_f and centroids), so they exist only while this plugin trains.
        # Each name reports its own value (no duplicate result lines); both come from one labelling of the data.
        register(lambda opts: {"cluster_nmi": self._cluster_agreement(opts)["cluster_nmi"]}, name="cluster_nmi")
        register(lambda opts: {"cluster_purity": self._cluster_agreement(opts)["cluster_purity"]}, name="cluster_purity")

    def _cluster_agreement(self, opts):
        """Both measures of the current clustering, computed once per clustering (the metrics ask in turn)."""
        key = (self.done, id(self.D_f), str(opts.dataset_kwargs.get("path")))
        if self._agreement is None or self._agreement[0] != key:
            self._agreement = (key, self._compute_agreement(opts))
        return self._agreement[1]

    def _compute_agreement(self, opts):
        """{cluster_nmi, cluster_purity}: every training image labelled with D_f and the centroids, against the
        dataset's true labels."""
        from metrics.metric_utils import MetricError

        if self.D_f is None:
            raise MetricError("cluster_nmi / cluster_purity: selfcond has not clustered yet")
        kwargs = dict(opts.dataset_kwargs, use_labels=True, xflip=False, max_size=None)
        from dnnlib.util import construct_class_by_name

        labelled = construct_class_by_name(**kwargs)
        if not labelled.has_labels or not getattr(labelled, "has_onehot_labels", True):
            raise MetricError(f"cluster_nmi / cluster_purity need the dataset's true class labels; "
                              f"'{labelled.name}' has none")
        classes = np.array([int(np.argmax(labelled.get_label(i))) for i in range(len(labelled))])
        feats = self.dataset_features(labelled, np.arange(len(labelled)))
        clusters = clustering.nearest_centroid(feats, self.centroids).numpy()
        return dict(cluster_nmi=clustering.nmi(clusters, classes), cluster_purity=clustering.purity(clusters, classes))
