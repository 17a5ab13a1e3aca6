"""A vision-aided backbone without downloads: the project's offline classifier of a dataset (a small CNN trained on
its labelled images, metrics/offline_classifier.py) exported as a TorchScript backbone for --va-backbones.

  python -m plugins.vision_aided export-backbone --data=datasets/fmnist32.zip --out=backbones/fmnist-cnn.pt

prints the --va-backbones value to use. The backbone returns (conv2 map, conv3 map, fc features) of images in
[-1, 1]; its input size, normalisation and head type are attributes of the file, as the plugin reads them. Train it
on images the GAN does not see (a --label-file of other images) when the GAN's own data is small, as
experiments/vision_aided_limited.py does; the *_cls metrics use the same classifier, and the plugin warns when a
reported metric measures in a backbone's own feature space.
"""

import os

import torch
import torch.nn.functional as F

import dnnlib


class ClassifierBackbone(torch.nn.Module):
    """The offline classifier (SmallCNN) as a backbone: 3 channels in (gray repeated when it was trained on gray),
    normalised to [-1, 1] (mean = std = 0.5); returns (conv2 map, conv3 map, fc features)."""

    input_size: int
    in_channels: int
    head_type: str

    def __init__(self, model):
        super().__init__()
        self.input_size = int(model.resolution)
        self.in_channels = int(model.in_channels)
        self.image_mean = [0.5, 0.5, 0.5]
        self.image_std = [0.5, 0.5, 0.5]
        self.head_type = "vit"  # Global features last: the heads treat the vector as a ViT's CLS token.
        self.m = model

    def forward(self, x: torch.Tensor):
        x = x.mean(dim=1, keepdim=True) if self.in_channels == 1 else x
        m = self.m
        a = F.max_pool2d(F.relu(m.bn1(m.conv1(x))), 2)
        b = F.max_pool2d(F.relu(m.bn2(m.conv2(a))), 2)
        c = F.relu(m.bn3(m.conv3(b)))
        v = F.relu(m.fc(F.adaptive_avg_pool2d(c, [2, 2]).flatten(1)))
        return b, c, v


def export_classifier_backbone(data, out, label_file=None, seed=0, steps=None, verbose=True):
    """Train (or reuse from the cache) the offline classifier of ``data`` and write it to ``out`` as a TorchScript
    backbone, atomically. Returns (path, classifier info)."""
    from metrics import offline_classifier as oc

    kwargs = dict(class_name=oc.DEFAULT_CLASS_NAME, path=data, label_file=label_file)
    model_path, info = oc.build_classifier(kwargs, seed=seed, steps=steps, verbose=verbose)
    model = torch.jit.load(model_path, map_location="cpu").eval()
    scripted = torch.jit.script(ClassifierBackbone(model))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    dnnlib.util.atomic_write(out, lambda f: torch.jit.save(scripted, f))
    return out, info
