"""Vision-aided discriminators (Kumari et al., CVPR 2022): frozen pretrained backbones + trainable heads.

Beside D, each backbone k in ``--va-backbones`` (``clip+dino``...) scores images through a small trained head:
s_k = h_k(F_k(P_k(A_k(x))), c). Dmain adds the heads' D terms with the backbones under no-grad (only the heads
learn, with their own Adam stepped with D); Gmain adds their G terms with gradients through the frozen
backbones to the pixels. R1 stays on D alone. Terms switch on as a hard step at ``--va-warmup-kimg`` (before it
the backbones are never run) and are scaled by ``--va-weight``. Each backbone has its own augmentation
(``--va-aug``: ADA with its own p_k and then cutout, DiffAugment, or none).

Backbones are frozen modules of the host: eval mode, no gradient, in no optimiser, never in a snapshot or the
training state; their weights come from files (see ``weights.py``), checked by SHA-256, and a resumed run
reloads them and refuses a file with another digest. The heads, their optimisers and p_k are the plugin's state.

Composition: transitional's lambda_t scales the heads' class projection (``label_weight``), UTLO's a_c scales
the terms (``full_res_loss_weight``), selfcond's clusters are the c the heads see, NoisyTwins' twins are
ordinary fakes. ``python -m plugins.vision_aided probe|progressive`` picks backbones (see ``probe.py``).
"""

import glob
import os
import warnings

import click
import numpy as np
import torch

from plugins import PluginError, hookimpl
from torch_utils import training_stats

from . import weights as weights_mod
from .heads import HEAD_KINDS
from .losses import LOSSES, ROLES, is_multilevel, training_default_loss, vision_loss

__version__ = "1.0"

AUGS = ("ada", "diffaug", "none")
CONDS = ("auto", "on", "off")
ADA_INTERVAL = 4
ROLE_OF = {("Gmain", "fake"): "G", ("Dmain", "fake"): "D_fake", ("Dmain", "real"): "D_real"}


class VisionAided:
    version = __version__
    plugin_name = "vision_aided"

    def __init__(self, va_backbones="clip", va_weights=None, va_sha256=None, va_download=False, va_random_init=False,
                 va_loss="auto", va_weight=1.0, va_warmup_kimg=500.0, va_aug="ada", va_ada_target=0.3,
                 va_ada_kimg=500.0, va_head="sg2", va_cond="auto", va_heads_from=None):
        self.heads_from = str(va_heads_from) if va_heads_from else None
        self.names = [n.strip() for n in str(va_backbones).split("+") if n.strip()]
        if not self.names:
            raise PluginError("vision_aided: --va-backbones is empty; name at least one (clip, dino, swin, vgg, torchscript:PATH)")
        if len(set(self.names)) != len(self.names):
            raise PluginError(f"vision_aided: --va-backbones={va_backbones} names a backbone twice")
        from .backbones import kind_of

        for name in self.names:
            kind_of(name)
        if len({short_label(n) for n in self.names}) != len(self.names):
            raise PluginError(f"vision_aided: two torchscript backbones in --va-backbones={va_backbones} share a file "
                              "name; rename one")
        self.weights = weights_mod.parse_pairs(va_weights, "--va-weights")
        self.sha256 = weights_mod.parse_pairs(va_sha256, "--va-sha256")
        for option, given in (("--va-weights", self.weights), ("--va-sha256", self.sha256)):
            unknown = sorted(set(given) - set(self.names))
            if unknown:
                raise PluginError(f"vision_aided: {option} names {', '.join(unknown)}, which is not in --va-backbones="
                                  f"{'+'.join(self.names)}")
        self.download = bool(va_download)
        self.random_init = bool(va_random_init)
        self.loss_spec = str(va_loss)
        self.losses = self._parse_losses(self.loss_spec, str(va_aug))
        self.weight = float(va_weight)
        self.warmup_kimg = float(va_warmup_kimg)
        self.aug = str(va_aug)
        self.ada_target = float(va_ada_target)
        self.ada_kimg = float(va_ada_kimg)
        self.head_kind = str(va_head)
        self.cond = str(va_cond)
        for label, value in (("--va-weight", self.weight), ("--va-warmup-kimg", self.warmup_kimg),
                             ("--va-ada-target", self.ada_target), ("--va-ada-kimg", self.ada_kimg)):
            if not np.isfinite(value) or value < 0:
                raise PluginError(f"vision_aided: {label}={value} must be a finite number >= 0")
        if self.ada_kimg <= 0:
            raise PluginError("vision_aided: --va-ada-kimg must be positive")
        if self.aug not in AUGS or self.head_kind not in HEAD_KINDS or self.cond not in CONDS:
            raise PluginError(f"vision_aided: --va-aug must be one of {AUGS}, --va-head one of {HEAD_KINDS}, "
                              f"--va-cond one of {CONDS}")
        if self.head_kind == "sg2" and self.cond == "on":
            raise PluginError("vision_aided: --va-cond=on needs --va-head=pip (the StyleGAN2 fork's sg2 heads are "
                              "unconditional, as in the official code)")
        self.backbones = {}  # name -> plugins.vision_aided.backbones.Backbone (frozen, not saved)
        self.digests = {}  # name -> SHA-256 of its weights file (None for random init)
        self.files = {}
        self.heads = {}  # name -> head module (trained by its own optimiser, saved in the plugin state)
        self.labels = {name: short_label(name) for name in self.names}  # For stats, terms and optimisers.
        self.pipes = {}  # name -> AugmentPipe (ada)
        self.controllers = {}  # name -> AdaController (ada)
        self.device = torch.device("cpu")
        self.lam = 0.0
        self.shared = {}
        self._num_gpus = 1

    def _parse_losses(self, spec, aug):
        if spec == "auto":
            return {name: None for name in self.names}  # Resolved when the backbone's head type is known.
        parts = spec.split("+")
        if len(parts) != len(self.names):
            raise PluginError(f"vision_aided: --va-loss={spec} has {len(parts)} entries for {len(self.names)} backbones "
                              f"({'+'.join(self.names)}); give one per backbone, joined by '+', or 'auto'")
        bad = [p for p in parts if p not in LOSSES]
        if bad:
            raise PluginError(f"vision_aided: unknown --va-loss entry {bad[0]!r}; use one of {', '.join(LOSSES)} or auto")
        return dict(zip(self.names, parts))

    @staticmethod
    @hookimpl
    def gan_add_options():
        return [
            click.Option(["--va-backbones"], type=str, default="clip", show_default=True,
                         help="vision_aided: backbones joined by '+': clip, dino, swin, vgg, torchscript:PATH"),
            click.Option(["--va-weights"], type=str, default=None,
                         help=f"vision_aided: weights files, name=PATH[,name=PATH] (else ${weights_mod.WEIGHTS_DIR_ENV}, "
                              "then the cache)"),
            click.Option(["--va-sha256"], type=str, default=None,
                         help="vision_aided: expected SHA-256 of weights files, name=HEX[,...] (CLIP's is built in)"),
            click.Option(["--va-download"], is_flag=True, default=False,
                         help="vision_aided: fetch missing official weights into the cache (never done otherwise)"),
            click.Option(["--va-random-init"], is_flag=True, default=False,
                         help="vision_aided: random backbones where no weights are given (tests only; warned, recorded)"),
            click.Option(["--va-loss"], type=str, default="auto", show_default=True,
                         help="vision_aided: loss per backbone joined by '+' (" + ", ".join(LOSSES) + ") or auto "
                              "(multilevel_sigmoid_s for clip/dino, as the official READMEs train CLIP; sigmoid otherwise, _s with --va-aug=diffaug)"),
            click.Option(["--va-weight"], type=float, default=1.0, show_default=True,
                         help="vision_aided: weight of the heads' loss terms"),
            click.Option(["--va-warmup-kimg"], type=float, default=500, show_default=True,
                         help="vision_aided: the terms start (as a step) at this kimg; before it no backbone runs"),
            click.Option(["--va-aug"], type=click.Choice(AUGS), default="ada", show_default=True,
                         help="vision_aided: augmentation of the backbones' input: ada (own p per backbone, then "
                              "cutout), diffaug (color,translation,cutout) or none"),
            click.Option(["--va-ada-target"], type=float, default=0.3, show_default=True,
                         help="vision_aided: ADA target of each head's real-logit sign"),
            click.Option(["--va-ada-kimg"], type=float, default=500, show_default=True,
                         help="vision_aided: ADA speed (kimg for p to go from 0 to 1)"),
            click.Option(["--va-head"], type=click.Choice(HEAD_KINDS), default="sg2", show_default=True,
                         help="vision_aided: head layout: sg2 (the StyleGAN2 fork's, unconditional) or pip (the "
                              "vision-aided-loss package's: spectral norm, blur, class projection)"),
            click.Option(["--va-cond"], type=click.Choice(CONDS), default="auto", show_default=True,
                         help="vision_aided: class projection in pip heads: auto = on iff the networks have labels"),
            click.Option(["--va-heads-from"], type=str, default=None, metavar="STATE",
                         help="vision_aided: start the heads of known backbones from this training state (or the "
                              "state beside this snapshot) on a weights-only resume, as the official progressive "
                              "stages do; new backbones start fresh"),
        ]

    # ------------------------------------------------------------------ setup

    def _resolve(self, name):
        """(path or None, digest or None) of a backbone's weights; errors name the backbone and the option."""
        explicit = self.weights.get(name)
        try:
            path, _where = weights_mod.resolve(name, explicit=explicit, download=self.download)
        except PluginError:
            if self.random_init and not name.startswith("torchscript:") and explicit is None:
                return None, None
            raise
        return path, weights_mod.check_sha256(name, path, self.sha256.get(name))

    @hookimpl
    def gan_configure(self, config):
        # Find and check every weights file now, so a missing one stops the run before its directory exists.
        for name in self.names:
            path, _digest = self._resolve(name)
            if path is None:
                warnings.warn(f"vision_aided: backbone {name!r} is RANDOMLY INITIALISED (--va-random-init): for tests "
                              "only; the run records it")
        if config.get("resume_pkl") is not None and config.get("resume_state") is None and config.get("ada_kimg") != 500:
            # The official fork keeps ADA's default speed (500 kimg) on a weights-only resume when the vision-aided
            # loss is on; upstream's 100 is for restarting a model trained with the standard loss alone.
            config.ada_kimg = 500
            print("vision_aided: ADA speed 500 kimg on this weights-only resume, as the official fork's stages")
        total_kimg = config.get("total_kimg")
        if self.weight > 0 and total_kimg is not None and self.warmup_kimg >= total_kimg:
            print(f"Notice: vision_aided: --va-warmup-kimg={self.warmup_kimg:g} is not below this run's --kimg="
                  f"{total_kimg:g}, so the backbones are never used in it; pass --va-warmup-kimg=0 (or a smaller value) "
                  "for a short trial")
        for metric in config.get("metrics", []):
            for name in self.names:
                reason = _shared_feature_space(name, metric, self.weights.get(name))
                if reason:
                    warnings.warn(f"vision_aided: metric {metric!r} {reason}; G is trained against backbone {name!r} "
                                  "in that feature space, so the metric is biased in its favour")

    @hookimpl
    def gan_frozen_modules(self, device):
        from .backbones import build_backbone

        self.device = device
        for name in self.names:
            path, digest = self._resolve(name)
            if path is None:
                warnings.warn(f"vision_aided: backbone {name!r} is randomly initialised (--va-random-init)")
            self.backbones[name] = build_backbone(name, path, random_init=self.random_init).to(device)
            self.files[name], self.digests[name] = path, digest
        return {f"vision_aided/{name}": backbone for name, backbone in self.backbones.items()}

    @hookimpl
    def gan_extra_optimizers(self, D, D_opt_kwargs):
        from training.augment import AugmentPipe, augpipe_specs

        from .heads import build_head

        c_dim = int(getattr(D, "c_dim", 0))
        use_c = c_dim > 0 if self.cond == "auto" else self.cond == "on"
        specs = []
        for name, backbone in self.backbones.items():
            if self.losses[name] is None:
                self.losses[name] = training_default_loss(backbone.head_type, self.aug)
            map_shapes, vector_dim = backbone.feature_shapes()
            if backbone.head_type == "conv" or is_multilevel(self.losses[name]):
                if not map_shapes:
                    raise PluginError(f"vision_aided: backbone {name!r} returns no feature maps; its head needs one "
                                      "(or use a non-multilevel --va-loss)")
            head = build_head(self.head_kind, backbone.head_type, map_shapes, vector_dim,
                              is_multilevel(self.losses[name]), c_dim if use_c else 0)
            self.heads[name] = head.to(self.device).train()
            if self.aug == "ada":
                pipe = AugmentPipe(**augpipe_specs["bgc"]).train().requires_grad_(False).to(self.device)
                pipe.p.zero_()  # The pipe's buffer starts at 1; p_k starts at 0 and ADA raises it.
                self.pipes[name] = pipe
            specs.append(dict(name=self.labels[name], params=list(head.parameters()), step_with="D",
                              opt_kwargs=dict(class_name="torch.optim.Adam", lr=float(D_opt_kwargs.get("lr", 0.002)),
                                              betas=[0, 0.99], eps=1e-8)))
        return specs

    @hookimpl
    def gan_setup(self, ctx):
        from training.augment import AdaController

        self._num_gpus = int(ctx.num_gpus)
        self.shared = ctx.shared
        for name, pipe in self.pipes.items():
            self.controllers[name] = AdaController(pipe, target=self.ada_target, ada_kimg=self.ada_kimg,
                                                   interval=ADA_INTERVAL, batch_size=int(ctx.batch_size),
                                                   reduce_fn=_all_reduce_sum if ctx.num_gpus > 1 else None,
                                                   rank=ctx.rank)  # Per-rank accumulators, saved as totals.
        state = ctx.restored_state(self)
        if state is not None:
            self._apply_state(state)
        elif self.heads_from:
            self._apply_state(self._heads_state(), heads_only=True)

    def _heads_state(self):
        """The vision_aided part of --va-heads-from (a training state, or the snapshot it belongs to)."""
        from training import checkpoint

        path = self.heads_from
        if path.endswith(".pkl"):
            path = checkpoint.state_path_for(path) or path
        if not os.path.isfile(path):
            raise PluginError(f"vision_aided: --va-heads-from={self.heads_from}: no training state at {path}; pass a "
                              "training-state-*.pt file or a snapshot with its state beside it")
        try:
            state = checkpoint.load_state(path)
        except checkpoint.StateError as exc:
            raise PluginError(f"vision_aided: --va-heads-from={self.heads_from}: {exc}") from None
        part = state.get("plugins", {}).get("vision_aided")
        if not isinstance(part, dict):
            raise PluginError(f"vision_aided: --va-heads-from={self.heads_from}: that run did not use vision_aided")
        return part

    # ------------------------------------------------------------------ every iteration

    def active(self, cur_nimg):
        return cur_nimg >= self.warmup_kimg * 1000

    @hookimpl
    def gan_step(self, ctx):
        cur_nimg, batch_idx = ctx.cur_nimg, ctx.batch_idx
        self.lam = self.weight if self.active(cur_nimg) else 0.0
        if self.lam > 0 and batch_idx % ADA_INTERVAL == 0:
            for name, controller in self.controllers.items():
                r = controller.update()
                if r is not None:
                    training_stats.report(f"vision_aided/{self.labels[name]}/ada_r", r)
        for name, pipe in self.pipes.items():
            training_stats.report(f"vision_aided/{self.labels[name]}/p", float(pipe.p))

    def augment(self, name, images):
        if self.aug == "ada":
            from .diffaug import cutout

            return cutout(self.pipes[name](images))
        if self.aug == "diffaug":
            from .diffaug import diff_augment

            return diff_augment(images)
        return images

    def head_logits(self, name, images, c, grad_through_backbone):
        """The head's level logits of images (backbone under no-grad unless gradients must reach the images)."""
        x = self.augment(name, images)
        if grad_through_backbone:
            maps, vector = self.backbones[name](x)
        else:
            with torch.no_grad():
                maps, vector = self.backbones[name](x)
        return self.heads[name](maps, vector, c=c, label_weight=float(self.shared.get("label_weight", 1.0)))

    @hookimpl
    def gan_loss_terms(self, ctx):
        role = ROLE_OF.get((ctx.phase, ctx.side))
        if role is None:  # Greg and Dreg: R1 and path length stay on G and D alone.
            return []
        if self.lam == 0:  # Warm-up (or --va-weight=0): the backbones are not run at all.
            return [(f"{role}_{self.labels[name]}", 0.0, torch.zeros([], device=ctx.device)) for name in self.names]
        weight = self.lam * float(self.shared.get("full_res_loss_weight", 1.0))
        images = ctx.gen_img if role in ("G", "D_fake") else ctx.real_img.detach()
        c = ctx.gen_c if role in ("G", "D_fake") else ctx.real_c
        terms = []
        for name in self.names:
            levels = self.head_logits(name, images, c, grad_through_backbone=role == "G")
            terms.append((f"{role}_{self.labels[name]}", weight, vision_loss(self.losses[name], role, levels)))
            training_stats.report(f"vision_aided/{self.labels[name]}/logit_{'real' if role == 'D_real' else 'fake'}", levels[-1])
            if role == "D_real" and name in self.controllers:
                self.controllers[name].accumulate(levels[-1])
        return terms

    # ------------------------------------------------------------------ state

    @hookimpl
    def gan_state_dict(self):
        return dict(backbones={name: dict(
            head={k: v.detach().cpu() for k, v in self.heads[name].state_dict().items()},
            p=float(self.pipes[name].p) if name in self.pipes else None,
            ada=self.controllers[name].state_dict() if name in self.controllers else None,
            loss=self.losses[name], weights_file=self.files.get(name), sha256=self.digests.get(name),
            random_init=self.digests.get(name) is None, head_kind=self.head_kind,
        ) for name in self.heads})

    def _apply_state(self, state, heads_only=False):
        """Restore heads, p_k and ADA state of known backbones; heads_only: the head weights alone (a new stage starts
        its optimisers and augmentation fresh, as the official stages restore cvD from the pickle and nothing else)."""
        for name, saved in state.get("backbones", {}).items():
            if name not in self.heads:
                print(f"vision_aided: the resumed run had backbone {name!r}, which is not in --va-backbones; dropped")
                continue
            if saved.get("sha256") != self.digests.get(name):
                raise PluginError(f"vision_aided: backbone {name!r} was trained with weights of SHA-256 "
                                  f"{saved.get('sha256')} ({saved.get('weights_file')}), but this run loads "
                                  f"{self.digests.get(name)} ({self.files.get(name)}); pass the same file")
            if saved.get("loss") != self.losses[name] or saved.get("head_kind") != self.head_kind:
                raise PluginError(f"vision_aided: backbone {name!r} was trained with --va-loss {saved.get('loss')} and "
                                  f"--va-head {saved.get('head_kind')}; this run asks for {self.losses[name]} and "
                                  f"{self.head_kind}")
            self.heads[name].load_state_dict({k: v.to(self.device) for k, v in saved["head"].items()})
            if heads_only:
                print(f"vision_aided: head of backbone {name!r} restored from {self.heads_from}")
                continue
            if name in self.pipes and saved.get("p") is not None:
                self.pipes[name].p.copy_(torch.as_tensor(saved["p"]))
            if saved.get("ada") is not None and name in self.controllers:
                self.controllers[name].load_state_dict(saved["ada"])
        new = [n for n in self.names if n not in state.get("backbones", {})]
        if new:
            print(f"vision_aided: new backbone(s) {', '.join(new)}: their heads start fresh")


def short_label(name):
    """'clip' -> 'clip'; 'torchscript:/x/fmnist-cnn.pt' -> 'ts_fmnist-cnn' (names of stats, terms, optimisers)."""
    if name.startswith("torchscript:"):
        return "ts_" + os.path.splitext(os.path.basename(name[len("torchscript:"):]))[0]
    return name


def _all_reduce_sum(tensor):
    tensor = tensor.clone()
    torch.distributed.all_reduce(tensor)
    return tensor


# Feature spaces of the project's metrics, for the bias warning.
_VGG16_METRICS = ("pr50k3", "ppl")
_CLASSIFIER_MARKERS = ("_cls", "modes", "reverse_kl")


def _shared_feature_space(backbone, metric, explicit_path=None):
    """Why ``metric`` measures in (or next to) the feature space of ``backbone``, or None."""
    if backbone == "vgg" and metric.startswith(_VGG16_METRICS):
        return "uses VGG16 ImageNet features, the family of the vgg backbone"
    if backbone == "clip" and "clip" in metric:
        return "uses the image embedding of CLIP ViT-B/32, the clip backbone"
    if backbone.startswith("torchscript:") and any(m in metric for m in _CLASSIFIER_MARKERS):
        import dnnlib

        path = os.path.expanduser(backbone[len("torchscript:"):])
        if not os.path.isfile(path):
            return None
        digest = dnnlib.util.file_sha256(path)
        cached = glob.glob(os.path.join(dnnlib.make_cache_dir_path("gan-metrics", "classifiers"), "*.pt"))
        if any(dnnlib.util.file_sha256(p) == digest for p in cached):
            return "uses the project classifier that is this torchscript backbone"
    return None


__all__ = ["VisionAided", "ROLES"]
