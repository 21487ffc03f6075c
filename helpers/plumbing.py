"""Shared low-level plumbing: eval mode, device, class indices, image checks, blur, atomic writes.

Every helper that runs a model, takes class indices or images, blurs a baseline or writes a
file goes through these few functions, so each rule lives in one place.

The "blurred" baseline of both ``explain.make_baseline`` and ``quality.make_baseline`` is
``gaussian_blur(x)``: sigma = min(H, W) / 20, reflect padding. The sigma scales with the image,
so the same share of detail goes at 64 px as at 150 or 224 px; at 224 px it is 11 px, the
strength of Fong & Vedaldi's (2017) blur perturbation (sigma 10 at 224 px): the fine texture a
scene classifier reads is gone, colours and coarse layout stay. A baseline that still held the
target's evidence would shrink Integrated Gradients' gap F(x) - F(baseline) and start every
insertion curve high. Reflect padding (as torchvision's ``gaussian_blur``, scipy's "mirror"):
replicate over-weights the outermost row, zeros darken the border.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "eval_mode",
    "model_device",
    "as_labels",
    "as_targets",
    "check_images",
    "gaussian_blur",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every module in eval mode inside; on exit (also on error) each module gets its own
    previous ``training`` flag back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, else of its first buffer, else the CPU."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def as_labels(
    y, n: int | None = None, device=None, *, num_classes: int | None = None, name: str = "labels"
) -> torch.Tensor:
    """Class indices as a LongTensor ``[n]`` on ``device`` (None: ``y``'s device or the CPU).

    ``y``: an int, a sequence, a numpy array or a tensor of integer values (floats only when
    they are whole numbers; bools are refused); a single value is broadcast to ``n``, and
    ``n=None`` accepts any length. Values must lie in ``[0, num_classes)`` (just ``>= 0`` when
    ``num_classes`` is None). Anything else raises a ValueError that names ``name``."""
    if torch.is_tensor(y):
        t = y.detach()
    else:
        a = np.asarray(y)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be integer class indices, got {a.dtype} values")
        t = torch.as_tensor(a if a.flags.writeable else a.copy())  # e.g. a pandas column
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be integer class indices, got dtype {t.dtype}")
    if t.is_floating_point() and not bool((torch.isfinite(t) & (t == t.round())).all()):
        raise ValueError(f"{name} must be integer class indices, got non-integer {t.dtype} values")
    if t.dim() > 1:
        raise ValueError(
            f"{name} must be [N] class indices or a single int, got shape {tuple(t.shape)}"
        )
    if n is not None and t.numel() == 1:
        t = t.reshape(1).expand(n)
    t = t.reshape(-1)
    if n is not None and len(t) != n:
        raise ValueError(
            f"got {len(t)} {name} for {n} images; expected one per image (one per row) "
            f"or a single int"
        )
    if len(t):
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            limit = "" if num_classes is None else f" in [0, {num_classes})"
            raise ValueError(
                f"{name} out of range: expected class indices{limit}, got values in [{lo}, {hi}]"
            )
    return t.to(device=t.device if device is None else device, dtype=torch.long).contiguous()


def as_targets(
    y, n: int | None = None, device=None, *, num_classes: int | None = None
) -> torch.Tensor:
    """:func:`as_labels` for the class an explanation or attack aims at (errors say "target")."""
    return as_labels(y, n, device, num_classes=num_classes, name="target")


def check_images(x, name: str = "x", *, channels: tuple[int, ...] | None = None) -> None:
    """ValueError unless ``x`` is a float tensor ``[N, C, H, W]`` (C in ``channels`` when
    given) of finite values; the message says which images hold NaN or inf."""
    shape = " or ".join(f"[N, {c}, H, W]" for c in channels) if channels else "[N, C, H, W]"
    if (
        not torch.is_tensor(x)
        or x.ndim != 4
        or not x.is_floating_point()
        or (channels and x.shape[1] not in channels)
    ):
        got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor {shape} of images in [0, 1], got {got}")
    bad = ~torch.isfinite(x.detach()).flatten(1).all(1)
    if bool(bad.any()):
        raise ValueError(
            f"{int(bad.sum())} of {len(x)} images hold NaN or inf values (first: image "
            f"{int(bad.nonzero()[0, 0])}); {name} must hold finite floats in [0, 1]"
        )


def gaussian_blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur of each channel of ``x`` ``[N, C, H, W]``, reflect padding, kernel radius
    ``round(3 sigma)`` (scipy's ``gaussian_filter(mode="mirror", truncate=3)``; the radius is
    capped at the side - 1). ``sigma=None``: the "blurred" baseline, min(H, W) / 20 (see the
    module docstring for why). ``sigma <= 0`` returns a copy. Differentiable."""
    sigma = min(x.shape[-2:]) / 20 if sigma is None else float(sigma)
    out, c = x, x.shape[1]
    for dim in (3, 2):
        r = min(int(3 * sigma + 0.5), x.shape[dim] - 1) if sigma > 0 else 0
        if r < 1:
            continue
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
        k = (k / k.sum()).repeat(c, 1)
        pad, view = ((r, r, 0, 0), (c, 1, 1, -1)) if dim == 3 else ((0, 0, r, r), (c, 1, -1, 1))
        out = F.conv2d(F.pad(out, pad, mode="reflect"), k.view(view), groups=c)
    return out.clone() if out is x else out


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(f)`` (``f`` a binary file open on a temporary file in the
    same folder), fsync, then ``os.replace``: readers see the old file or the whole new one.
    On any failure (also KeyboardInterrupt) the temporary file is removed, the target is left
    as it was and the error propagates. The folder must exist. Returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of ``text`` (``encoding``; newlines written as given)."""
    return atomic_write(path, lambda f: f.write(text.encode(encoding)))
