"""An eval-only copy of a classifier with each BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map of its input, so after a convolution it can
be folded into that convolution's weights and bias (scale ``gamma / sqrt(var + eps)``): the copy
computes the same function with one layer fewer per block. On EfficientNet-Lite0 at 128 px on
this CPU a forward gets about 1.2x faster and a forward+backward (what gradient explanations and
attacks pay) about 1.25x; logits differ by about 1e-6 (float rounding). The probes that run the
model hundreds of times per image use it: :func:`helpers.explain.attribute`, the minimal-epsilon
and minimal-severity searches, FMN, class visualisation and :func:`helpers.train.predict_proba`.

What it never replaces: training (BatchNorm in train mode normalises by the batch), and the model
a caller changes (the sanity check re-initialises layers of a copy of the original, then
explains that copy, which is folded in turn). A pair is folded only where a ``Conv2d`` is directly
followed by a ``BatchNorm2d`` (or timm's ``BatchNormAct2d``, whose activation stays) among its
parent's children; the copy is then checked against the original on random images and the
original is used instead, with a warning, if they disagree (an architecture whose forward does
not run them in that order). Module names stay, so a layer named for Grad-CAM (``net.bn2`` of
Lite0: BatchNorm, then ReLU6) still names the same feature map.
"""

from __future__ import annotations

import copy
import warnings
import weakref

import torch
from torch import nn

from .plumbing import eval_mode

# model -> (state key, folded copy or None: use the model); rebuilt when a weight changes
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_COPIES: weakref.WeakSet = weakref.WeakSet()  # the folded copies (folding one again is a no-op)
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def folded(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The folded eval-mode copy of ``model`` (parameters frozen), or ``model`` itself when it
    has no Conv+BatchNorm pair, carries hooks, or the folded copy does not reproduce its
    outputs on (the first two images of) ``x``, the images it is about to be given.

    Cached per model and rebuilt whenever one of its tensors was changed in place or replaced,
    so a model trained further (or loaded anew) is folded again."""
    if model in _COPIES or any(getattr(m, h, None) for m in model.modules() for h in _HOOKS):
        return model  # folded already, or a caller watches the original's layers
    key = _state_key(model)
    hit = _CACHE.get(model)
    if hit is None or hit[0] != key:
        fast = _fold(model, x)
        hit = (key, None if fast is model else fast)
        _CACHE[model] = hit
        if hit[1] is not None:
            _COPIES.add(fast)
    return model if hit[1] is None else hit[1]


def _state_key(model: nn.Module) -> tuple:
    tensors = (*model.parameters(), *model.buffers())
    return (
        tuple(id(m) for m in model.modules()),
        tuple((t.data_ptr(), t._version, t.dtype, t.device, t.stride()) for t in tensors),
    )


def _fold(model: nn.Module, x: torch.Tensor) -> nn.Module:
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    pairs = 0
    for parent in list(fast.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, norm = parent._modules[a], parent._modules[b]
            after = _after_norm(norm)
            if after is None or not _foldable(conv, norm):
                continue
            _fold_pair(conv, norm)
            parent._modules[b] = after
            pairs += 1
    if not pairs:
        return model
    if not _agrees(model, fast, x[:2]):
        warnings.warn(
            f"folding BatchNorm into the convolutions of {type(model).__name__} changed its "
            "outputs (its forward does not run each convolution straight into the BatchNorm "
            "registered after it); using the unfolded model",
            stacklevel=3,
        )
        return model
    return fast


def _after_norm(norm: nn.Module) -> nn.Module | None:
    """What replaces a folded BatchNorm: nothing, or timm's dropout and activation after it."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    if type(norm).__name__ == "BatchNormAct2d" and hasattr(norm, "act") and hasattr(norm, "drop"):
        return nn.Sequential(norm.drop, norm.act)
    return None


def _foldable(conv: nn.Module, norm: nn.BatchNorm2d) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == conv.out_channels
    )


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    w = conv.weight
    fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else None
    weight = w * scale.view(-1, 1, 1, 1).to(w.dtype)
    weight = weight.contiguous(memory_format=fmt) if fmt else weight.contiguous()
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.bias = nn.Parameter(shift.to(w.dtype), requires_grad=False)


@torch.no_grad()
def _agrees(model: nn.Module, fast: nn.Module, x: torch.Tensor) -> bool:
    p = next(model.parameters())
    x = x.detach().to(device=p.device, dtype=p.dtype)
    with eval_mode(model):
        try:
            want = model(x)
        except Exception:  # noqa: BLE001 - the caller's own forward will say what is wrong
            return True
    got = fast(x)
    tol = 1e-3 * (1.0 + want.abs().max().item())
    return bool(got.shape == want.shape and (got - want).abs().max().item() <= tol)
