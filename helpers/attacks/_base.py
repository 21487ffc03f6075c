"""Small pieces every attack shares: budgets, masks, margins, input gradients (the model's
device, labels, image checks and eval mode come from :mod:`helpers.plumbing`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..plumbing import as_labels, model_device


def check_eps(eps, name: str = "eps") -> None:
    values = eps.detach().cpu().numpy() if torch.is_tensor(eps) else np.asarray(eps, dtype=float)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(
            f"{name} must be a finite number >= 0 (a perturbation budget in [0, 1] "
            f"pixel units), got {eps!r}"
        )


def as_mask(mask, x: torch.Tensor) -> torch.Tensor | None:
    """Mask as a float tensor [N or 1, 1, H, W] of 0/1 on x's device (None stays None)."""
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask, device=x.device)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if (
        m.ndim != 4
        or m.shape[1] not in (1, x.shape[1])
        or m.shape[-2:] != x.shape[-2:]
        or (m.shape[0] not in (1, x.shape[0]))
    ):
        raise ValueError(
            f"mask of shape {tuple(m.shape)} does not fit images {tuple(x.shape)}; "
            "expected [N, 1, H, W], [N, H, W] or [H, W]"
        )
    m = m.to(x.dtype)
    if not torch.all((m == 0) | (m == 1)):
        raise ValueError(
            "mask values must be 0/1 (bool or float); threshold soft maps first, "
            "e.g. with top_fraction_mask"
        )
    return m


def on_model_device(model, x, y, mask=None):
    """Detached images, labels and mask on the model's device."""
    xd = x.detach().to(model_device(model))
    return xd, as_labels(y, len(xd), xd.device), as_mask(mask, xd)


def per_sample(eps, n: int, x: torch.Tensor) -> torch.Tensor:
    """``eps`` (a number or one per image) as a tensor [n, 1, 1, 1] like ``x``."""
    return (
        torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        .reshape(-1)
        .expand(n)
        .reshape(n, 1, 1, 1)
    )


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit of y minus the largest other logit (> 0: y is predicted)."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def objective(logits: torch.Tensor, y: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """The sum over the batch of what the attack ascends."""
    if loss == "ce":
        value = F.cross_entropy(logits, y, reduction="sum")
    elif loss == "margin":  # Carlini-Wagner style: largest other logit minus logit of y
        value = -margin(logits, y).sum()
    else:
        raise ValueError(f"unknown loss {loss!r}; expected 'ce' or 'margin'")
    return -value if targeted else value


def input_gradient(model, x, y, *, loss="ce", targeted=False):
    """Gradient of the objective w.r.t. the input only (no parameter gradient is stored)."""
    with torch.enable_grad():  # also when called under torch.no_grad()
        x = x.detach().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(objective(logits, y, loss, targeted), x)
    return grad, logits.detach()


def directions(model, x, y, batch_size):
    """sign(grad CE) and clean logits, one forward+backward per chunk."""
    signs, logits = [], []
    for xs, ys in zip(x.split(batch_size), y.split(batch_size)):
        g, lg = input_gradient(model, xs, ys)
        signs.append(g.sign())
        logits.append(lg)
    return torch.cat(signs), torch.cat(logits)


def forward(model, x, batch_size):
    """Logits of ``x`` in chunks of ``batch_size``, without gradients."""
    with torch.no_grad():
        return (
            torch.cat([model(c) for c in x.split(batch_size)])
            if len(x)
            else torch.empty(0, device=x.device)
        )
