"""The vision-aided losses, per sample, on a head's list of level logits (spatial [N, h, w], global [N, 1]).

BCE(s, t) = softplus(s) - t*s. alpha = 0.8 for the `_s` variants (one-sided label smoothing), else 1.
  sigmoid:            D real BCE(s, alpha), D fake BCE(s, 0), G BCE(s, alpha) -- on the head's global level.
  multilevel_sigmoid: the same, summed over levels of the per-position mean.
  hinge:              D relu(1 - s_real) + relu(1 + s_fake), G -s -- global level.
  multilevel_hinge:   the same, summed over levels of the per-position mean.
With `_s`, G's optimum is s = ln(alpha / (1 - alpha)) = ln 4: its gradient vanishes there.
Per-sample means are the official batch means taken one step later (all samples have equal size).
"""

import torch.nn.functional as F

LOSSES = ("sigmoid", "sigmoid_s", "multilevel_sigmoid", "multilevel_sigmoid_s", "hinge", "multilevel_hinge")
ROLES = ("D_real", "D_fake", "G")


def is_multilevel(loss):
    return loss.startswith("multilevel")


def _per_sample(logits):
    return logits.flatten(1).mean(dim=1)


def _bce(s, target):
    return F.softplus(s) - target * s


def _level_loss(loss, role, s):
    if "sigmoid" in loss:
        alpha = 0.8 if loss.endswith("_s") else 1.0
        return _per_sample(_bce(s, 0.0 if role == "D_fake" else alpha))
    if role == "G":
        return _per_sample(-s)
    return _per_sample(F.relu(1 - s) if role == "D_real" else F.relu(1 + s))


def vision_loss(loss, role, levels):
    """Per-sample loss [N] of one head's level logits for role 'D_real', 'D_fake' or 'G'."""
    if loss not in LOSSES or role not in ROLES:
        raise ValueError(f"unknown loss {loss!r} or role {role!r}")
    used = levels if is_multilevel(loss) else levels[-1:]
    total = 0
    for s in used:
        total = total + _level_loss(loss, role, s)
    return total


def default_loss(head_type, smooth):
    """The official progressive driver's rule: multilevel_sigmoid on ViT backbones, sigmoid otherwise; `_s` when
    smoothing (its probe's accuracy above 0.9, or DiffAugment)."""
    base = "multilevel_sigmoid" if head_type == "vit" else "sigmoid"
    return base + ("_s" if smooth else "")


def training_default_loss(head_type, aug):
    """--va-loss=auto for a training run: what both official READMEs train CLIP with (multilevel_sigmoid_s, label
    smoothing) for every ViT backbone; other backbones keep the driver's rule (sigmoid, `_s` with DiffAugment)."""
    return "multilevel_sigmoid_s" if head_type == "vit" else default_loss(head_type, smooth=aug == "diffaug")
