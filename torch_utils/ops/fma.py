"""Fused multiply-add a * b + c with broadcasting (NVIDIA-compatible API).

torch.addcmul computes it in one op, broadcasts all three operands, promotes dtypes and has
derivatives of every order, so no custom autograd Function is needed (gradients w.r.t. broadcast
operands are summed back to their shapes by autograd).
"""

import torch

# ----------------------------------------------------------------------------


def fma(a, b, c):
    """a * b + c, broadcast; differentiable to any order. Python numbers are accepted too."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and isinstance(c, torch.Tensor)):
        return a * b + c
    return torch.addcmul(c, a, b)


# ----------------------------------------------------------------------------
