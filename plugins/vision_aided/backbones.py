"""Frozen pretrained backbones of the vision-aided discriminators, built by their own libraries.

Every backbone is wrapped in `Backbone`: it takes G's images in [-1, 1] (any size, 1 or 3 channels), applies
the official preprocessing P_k ((x+1)/2, gray repeated to RGB, area-resize to the backbone's input size, no
crop, the backbone's own mean/std) and returns ``(maps, vector)``: a list of feature maps [N, C, h, w] and a
global vector [N, d]. ``head_type`` tells the heads what to build on them: 'vit' (spatial heads on the maps +
a global head, CLIP and DINO), 'conv' (one conv head on the last map, Swin and VGG).

Kinds (the architecture is read off the weights file where the library allows, so the official checkpoints
and the tests' tiny random ones load through the same code):

* ``clip``  OpenAI CLIP ViT-B/32 (open-clip-torch; OpenAI's TorchScript ``ViT-B-32.pt`` or a state dict).
  Tokens after blocks 4 and 8 of 12 (CLS dropped) as maps, the projected image embedding as vector.
* ``dino``  DINO ViT-B/16 (timm's VisionTransformer). Normed tokens of blocks 5 and 9 of 12 as maps, the
  normed block-12 CLS as vector.
* ``swin``  Swin-T, MoBY self-supervised weights (timm's SwinTransformer; ``encoder.`` stripped, the original
  Swin layout converted by timm). The final normed tokens as one 768x7x7 map, their mean as vector.
* ``vgg``   anti-aliased VGG16 (antialiased-cnns, ``filter_size=4``): ``features`` output 512x7x7, its
  average as vector.
* ``torchscript:PATH``  any scripted module ``f(x) -> (maps..., vector)``; optional attributes
  ``input_size`` (224), ``image_mean`` / ``image_std`` (ImageNet) and ``head_type`` ('vit').
"""

import math
import os

import torch
import torch.nn.functional as F

from metrics import clip_features
from metrics.detectors import MetricError
from plugins import PluginError
from torch_utils import vision_libraries

CLIP_MEAN, CLIP_STD = clip_features.CLIP_MEAN, clip_features.CLIP_STD  # CLIP's own statistics, as the CLIP metrics use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

KINDS = ("clip", "dino", "swin", "vgg")
EXTRA_HINT = 'pip install -e ".[vision]"'


def kind_of(name):
    """'clip' / 'dino' / 'swin' / 'vgg' / 'torchscript' for a backbone name (``torchscript:PATH`` included)."""
    if name.startswith("torchscript:"):
        return "torchscript"
    if name not in KINDS:
        raise PluginError(f"vision_aided: unknown backbone {name!r}; use one of {', '.join(KINDS)} or torchscript:PATH")
    return name


# ----------------------------------------------------------------------------- libraries


def import_library(module_name, backbone):
    """Import timm / open_clip / antialiased_cnns (torch_utils/vision_libraries.py), with a message that names the
    extra when it is missing."""
    try:
        return vision_libraries.import_vision_library(module_name)
    except ImportError as exc:
        raise PluginError(f"vision_aided: backbone {backbone!r} needs the Python package {module_name!r} ({exc}); "
                          f"install the optional extra: {EXTRA_HINT}") from None


# ----------------------------------------------------------------------------- wrapper


class Backbone(torch.nn.Module):
    """A frozen feature extractor with its preprocessing; forward(images in [-1, 1]) -> (maps, vector)."""

    def __init__(self, name, extractor, input_size, mean, std, head_type):
        super().__init__()
        self.name = name
        self.extractor = extractor
        self.input_size = int(input_size)
        self.head_type = head_type
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.calls = 0  # Forward passes so far (the tests check that warm-up never runs the backbone).

    def preprocess(self, images):
        x = (images.to(torch.float32) + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return (x - self.mean) / self.std

    def forward(self, images):
        self.calls += 1
        maps, vector = self.extractor(self.preprocess(images))
        return [m.float() for m in maps], vector.float()

    @torch.no_grad()
    def feature_shapes(self):
        """([map shapes C,h,w], vector dim) from one forward of a blank image, for sizing the heads."""
        device = self.mean.device
        maps, vector = self.extractor(torch.zeros([1, 3, self.input_size, self.input_size], device=device))
        return [tuple(m.shape[1:]) for m in maps], int(vector.shape[1])


def _taps(depth, fractions):
    """Block indices (0-based, after which to tap) at the given fractions of the depth (4/12 -> block 4)."""
    return [min(max(int(round(depth * f)), 1), depth) - 1 for f in fractions]


def _tokens_to_map(tokens):
    n, length, dim = tokens.shape
    side = int(round(math.sqrt(length)))
    return tokens.transpose(1, 2).reshape(n, dim, side, side)


# ----------------------------------------------------------------------------- CLIP


class ClipExtractor(torch.nn.Module):
    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.taps = _taps(len(visual.transformer.resblocks), [4 / 12, 8 / 12])

    def forward(self, x):
        v = self.visual
        x = v.conv1(x)
        x = x.flatten(2).transpose(1, 2)  # [N, grid**2, width]
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        maps = []
        for i, block in enumerate(v.transformer.resblocks):  # open_clip's blocks are batch-first.
            x = block(x)
            if i in self.taps:
                maps.append(_tokens_to_map(x[:, 1:]))
        vector = v.ln_post(x[:, 0])
        if v.proj is not None:
            vector = vector @ v.proj
        return maps, vector


def build_clip(path, random_init):
    open_clip = import_library("open_clip", "clip")

    if random_init and path is None:
        visual = open_clip.create_model("ViT-B-32", pretrained=None).visual
    else:
        # OpenAI's release (a TorchScript archive, only its tensors used) or a plain state dict, read as the
        # CLIP metrics read it.
        try:
            visual = clip_features.load_clip_visual(path)
        except MetricError as exc:
            raise PluginError(f"vision_aided: backbone 'clip': {exc}") from None
    return Backbone("clip", ClipExtractor(visual.float()), visual.image_size[0] if isinstance(
        visual.image_size, (tuple, list)) else visual.image_size, CLIP_MEAN, CLIP_STD, "vit")


# ----------------------------------------------------------------------------- DINO (timm ViT)


class VitExtractor(torch.nn.Module):
    def __init__(self, vit):
        super().__init__()
        self.vit = vit
        self.taps = _taps(len(vit.blocks), [5 / 12, 9 / 12])

    def forward(self, x):
        vit = self.vit
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.norm_pre(x)
        maps = []
        for i, block in enumerate(vit.blocks):
            x = block(x)
            if i in self.taps:
                maps.append(_tokens_to_map(vit.norm(x)[:, 1:]))
        return maps, vit.norm(x)[:, 0]


def build_dino(path, random_init):
    timm = import_library("timm", "dino")
    from timm.models.vision_transformer import VisionTransformer

    if random_init and path is None:
        state, arch = None, dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)
    else:
        state = _load_state_dict(path, "dino")
        state = state.get("teacher", state) if isinstance(state.get("teacher"), dict) else state
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        state = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        try:
            dim = state["cls_token"].shape[-1]
            patch = state["patch_embed.proj.weight"].shape[-1]
            grid = int(round(math.sqrt(state["pos_embed"].shape[1] - 1)))
            depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        except KeyError as exc:
            raise PluginError(f"vision_aided: {path} is not a DINO ViT state dict (no {exc})") from None
        arch = dict(img_size=grid * patch, patch_size=patch, embed_dim=dim, depth=depth, num_heads=max(dim // 64, 1),
                    mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim)
    del timm
    vit = VisionTransformer(num_classes=0, qkv_bias=True, **arch)
    if state is not None:
        _strict_load(vit, state, "dino", path)
    return Backbone("dino", VitExtractor(vit), arch["img_size"], IMAGENET_MEAN, IMAGENET_STD, "vit")


# ----------------------------------------------------------------------------- Swin-T (timm)


class SwinExtractor(torch.nn.Module):
    def __init__(self, swin):
        super().__init__()
        self.swin = swin

    def forward(self, x):
        x = self.swin.norm(self.swin.layers(self.swin.patch_embed(x)))  # timm >= 0.9: NHWC.
        fmap = x.permute(0, 3, 1, 2)
        return [fmap], fmap.mean(dim=(2, 3))


def build_swin(path, random_init):
    timm = import_library("timm", "swin")
    from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

    arch = dict(img_size=224, patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    state = None
    if not (random_init and path is None):
        raw = _load_state_dict(path, "swin")
        raw = raw.get("model", raw)
        # MoBY checkpoints hold the online encoder, its momentum twin and the projectors: keep the encoder.
        if any(k.startswith("encoder.") for k in raw):
            raw = {k[len("encoder."):]: v for k, v in raw.items() if k.startswith("encoder.")}
        raw = {k: v for k, v in raw.items() if not k.startswith("head")}
        try:
            stages = sorted({int(k.split(".")[1]) for k in raw if k.startswith("layers.")})
            arch.update(
                embed_dim=raw["patch_embed.proj.weight"].shape[0], patch_size=raw["patch_embed.proj.weight"].shape[-1],
                depths=tuple(len({k.split(".")[3] for k in raw if k.startswith(f"layers.{s}.blocks.")}) for s in stages),
                num_heads=tuple(raw[f"layers.{s}.blocks.0.attn.relative_position_bias_table"].shape[1] for s in stages),
                window_size=(int(round(math.sqrt(raw["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]))) + 1) // 2)
        except KeyError as exc:
            raise PluginError(f"vision_aided: {path} is not a Swin Transformer state dict (no {exc})") from None
        state = raw
    del timm
    swin = SwinTransformer(num_classes=0, **arch)
    if state is not None:
        _strict_load(swin, checkpoint_filter_fn(state, swin), "swin", path)
    return Backbone("swin", SwinExtractor(swin), arch["img_size"], IMAGENET_MEAN, IMAGENET_STD, "conv")


# ----------------------------------------------------------------------------- anti-aliased VGG16


class VggExtractor(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, x):
        fmap = self.features(x)
        return [fmap], fmap.mean(dim=(2, 3))


def build_vgg(path, random_init):
    aa = import_library("antialiased_cnns", "vgg")
    model = aa.vgg16(pretrained=False, filter_size=4)
    if path is not None:
        state = _load_state_dict(path, "vgg")
        state = state.get("state_dict", state)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        has_classifier = any(k.startswith("classifier.") for k in state)
        if not has_classifier:  # A features-only file.
            model = torch.nn.Module()
            model.features = aa.vgg16(pretrained=False, filter_size=4).features
        _strict_load(model, state, "vgg", path)
    return Backbone("vgg", VggExtractor(model.features), 224, IMAGENET_MEAN, IMAGENET_STD, "conv")


# ----------------------------------------------------------------------------- TorchScript


class ScriptedExtractor(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        out = self.module(x)
        out = list(out) if isinstance(out, (tuple, list)) else [out]
        if not out or out[-1].ndim != 2 or any(m.ndim != 4 for m in out[:-1]):
            raise PluginError("vision_aided: a torchscript backbone must return (maps [N,C,h,w]..., vector [N,d])")
        return out[:-1], out[-1]


def build_torchscript(path, name):
    try:
        module = torch.jit.load(path, map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise PluginError(f"vision_aided: backbone {name!r}: {path} is not a TorchScript file: {_short(exc)}") from None
    size = int(getattr(module, "input_size", 224))
    mean = tuple(float(v) for v in getattr(module, "image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(module, "image_std", IMAGENET_STD))
    head_type = str(getattr(module, "head_type", "vit"))
    if head_type not in ("vit", "conv"):
        raise PluginError(f"vision_aided: backbone {name!r} has head_type={head_type!r}; use 'vit' or 'conv'")
    return Backbone(name, ScriptedExtractor(module), size, mean, std, head_type)


# ----------------------------------------------------------------------------- loading helpers


def _short(exc):
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__


def _load_state_dict(path, backbone):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message.
        raise PluginError(f"vision_aided: cannot read the weights of backbone {backbone!r} from {path}: "
                          f"{_short(exc)}") from None
    if not isinstance(state, dict):
        raise PluginError(f"vision_aided: {path} holds a {type(state).__name__}, not a state dict ({backbone})")
    return state


def _strict_load(module, state, backbone, path):
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        def listed(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "") if keys else "none"
        raise PluginError(f"vision_aided: the weights in {path} do not fit backbone {backbone!r}: missing keys: "
                          f"{listed(missing)}; unexpected keys: {listed(unexpected)}; wrong shapes: {listed(wrong)}")
    module.load_state_dict(state, strict=True)


def build_backbone(name, path, random_init=False):
    """The Backbone for ``name`` from the weights file ``path`` (None with random_init: the real architecture,
    randomly initialised)."""
    kind = kind_of(name)
    if kind == "torchscript":
        return build_torchscript(path, name)
    builder = dict(clip=build_clip, dino=build_dino, swin=build_swin, vgg=build_vgg)[kind]
    if path is not None and not os.path.isfile(path):
        raise PluginError(f"vision_aided: weights file of backbone {name!r} not found: {path}")
    return builder(path, random_init)
