"""Adversarial attacks in pixel space, the smallest flipping epsilon per image, and masks.

Every image is float in [0, 1], NCHW; the model normalises inside (its first layer), so the
attacks clip to [0, 1] honestly. One signature per family, hyperparameters keyword-only::

    fgsm(model, x, y, *, eps, targeted=False, mask=None) -> x_adv
    pgd(model, x, y, *, eps, norm="linf", steps=10, step_size=None, random_start=True,
        seed=None, targeted=False, mask=None, loss="ce") -> x_adv

``mask`` ([N, 1, H, W], [N, H, W] or [H, W]; bool or float in {0, 1}) confines the perturbation:
pixels outside it never change. Targeted attacks read ``y`` as the target class.

``epsilon_sweep`` gives robust accuracy per epsilon (FGSM: one gradient per image, reused for
every epsilon). ``minimal_epsilon`` finds, for a whole batch at once, the smallest L-inf
epsilon that flips each prediction: one forward+backward for the FGSM direction, a coarse grid
evaluated in batched forwards to find the FIRST flipping bracket, then a root search in that
bracket (Illinois regula falsi on the logit margin, or bisection) to ``tol``.
``fragility_by_region`` runs it with the perturbation confined to regions (whole image,
object, background) and ``per_class_fragility`` summarises that per class.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTACKS",
    "eval_mode",
    "fgsm",
    "pgd",
    "fgsm_direction",
    "epsilon_sweep",
    "epsilon_grid",
    "minimal_epsilon",
    "minimum_norm_epsilon",
    "fmn_reference",
    "robust_accuracy_from_epsilons",
    "top_fraction_mask",
    "complement",
    "equal_area",
    "fragility_by_region",
    "per_class_fragility",
]

# Images evaluated together in one forward when few images are still searching: below this,
# the grid search evaluates several grid points per image in the same forward (speculatively).
_MIN_GRID_BATCH = 8


# --------------------------------------------------------------------------------------------
# small shared pieces
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every sub-module in eval mode; restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _check_eps(eps, name: str = "eps") -> None:
    values = eps.detach().cpu().numpy() if torch.is_tensor(eps) else np.asarray(eps, dtype=float)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(
            f"{name} must be a finite number >= 0 (a perturbation budget in [0, 1] "
            f"pixel units), got {eps!r}"
        )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _as_labels(y, n: int, device) -> torch.Tensor:
    y = torch.as_tensor(y, device=device).long().reshape(-1)
    if y.numel() == 1 and n > 1:
        y = y.expand(n)
    if y.numel() != n:
        raise ValueError(f"got {y.numel()} labels for {n} images")
    return y


def _check_images(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(
            "x must be a float tensor [N, C, H, W] of images in [0, 1], got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    bad = ~torch.isfinite(x.detach()).flatten(1).all(1)
    if bool(bad.any()):
        raise ValueError(
            f"{int(bad.sum())} of {len(x)} images hold NaN or inf values (first: image "
            f"{int(bad.nonzero()[0, 0])}); images must be finite floats in [0, 1]"
        )


def _as_mask(mask, x: torch.Tensor) -> torch.Tensor | None:
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


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit of y minus the largest other logit (> 0: y is predicted)."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def _objective(logits: torch.Tensor, y: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """The sum over the batch of what the attack ascends."""
    if loss == "ce":
        value = F.cross_entropy(logits, y, reduction="sum")
    elif loss == "margin":  # Carlini-Wagner style: largest other logit minus logit of y
        value = -_margin(logits, y).sum()
    else:
        raise ValueError(f"unknown loss {loss!r}; expected 'ce' or 'margin'")
    return -value if targeted else value


def _input_gradient(model, x, y, *, loss="ce", targeted=False):
    """Gradient of the objective w.r.t. the input only (no parameter gradient is stored)."""
    with torch.enable_grad():  # also when called under torch.no_grad()
        x = x.detach().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(_objective(logits, y, loss, targeted), x)
    return grad, logits.detach()


def _on_model_device(model, x, y, mask):
    """Detached images, labels and mask on the model's device."""
    xd = x.detach().to(_model_device(model))
    return xd, _as_labels(y, len(xd), xd.device), _as_mask(mask, xd)


def _per_sample(eps, n: int, x: torch.Tensor) -> torch.Tensor:
    return (
        torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        .reshape(-1)
        .expand(n)
        .reshape(n, 1, 1, 1)
    )


# --------------------------------------------------------------------------------------------
# attacks
# --------------------------------------------------------------------------------------------
def fgsm(
    model: nn.Module, x: torch.Tensor, y, *, eps: float, targeted: bool = False, mask=None
) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad CE), 0, 1)`` (minus for targeted).

    ``y``: true labels (or target labels when ``targeted``). ``eps`` may be a float or a
    tensor with one value per image. Pixels outside ``mask`` are never changed.
    """
    _check_images(x)
    _check_eps(eps)
    if not torch.is_tensor(eps) and eps == 0:
        return x.clone()
    xd, y, m = _on_model_device(model, x, y, mask)
    with eval_mode(model):
        grad, _ = _input_gradient(model, xd, y, targeted=targeted)
    step = grad.sign() if m is None else grad.sign() * m
    x_adv = (xd + _per_sample(eps, len(xd), xd) * step).clamp(0, 1)
    if m is not None:
        x_adv = torch.where(m > 0, x_adv, xd)
    return x_adv.detach().to(x.device)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    seed: int | None = None,
    targeted: bool = False,
    mask=None,
    loss: str = "ce",
) -> torch.Tensor:
    """Projected gradient descent in an ``eps`` ball (``norm="linf"`` or ``"l2"``).

    ``step_size`` defaults to ``2.5 * eps / steps``. ``random_start`` starts from a uniform
    point of the L-inf box (or of the L2 ball: a normalised normal vector times
    ``eps * U^(1/d)``), drawn from ``seed`` when given.
    ``loss``: ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini-Wagner logit margin).
    ``eps`` (and ``step_size``) may be tensors with one value per image. The L2 projection is
    computed on the masked perturbation; pixels outside ``mask`` never change.
    """
    _check_images(x)
    _check_eps(eps)
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; expected 'linf' or 'l2'")
    if loss not in ("ce", "margin"):
        raise ValueError(f"unknown loss {loss!r}; expected 'ce' or 'margin'")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if step_size is not None:
        _check_eps(step_size, "step_size")
    if not torch.is_tensor(eps) and eps == 0:
        return x.clone()
    xd, y, m = _on_model_device(model, x, y, mask)
    with eval_mode(model):
        x_adv = _pgd(
            model,
            xd,
            y,
            eps=eps,
            norm=norm,
            steps=int(steps),
            step_size=step_size,
            random_start=random_start,
            seed=seed,
            targeted=targeted,
            mask=m,
            loss=loss,
        )
    return x_adv.to(x.device)


def _pgd(
    model,
    x,
    y,
    *,
    eps,
    norm,
    steps,
    step_size,
    random_start,
    seed,
    targeted,
    mask,
    loss,
    unit_start=None,
):
    n = len(x)
    eps_t = _per_sample(eps, n, x)
    alpha = 2.5 * eps_t / steps if step_size is None else _per_sample(step_size, n, x)
    ones = torch.ones_like(x[:, :1]) if mask is None else mask.expand(n, 1, *x.shape[-2:])

    def l2(t):
        return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    if unit_start is not None:  # a fixed start in the unit ball, scaled by eps
        delta = unit_start * eps_t * ones
    elif random_start:
        gen = None
        if seed is not None:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(int(seed))
        if norm == "linf":
            u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            delta = (2 * u - 1) * eps_t * ones
        else:
            # uniform in the ball of the free (masked) coordinates: a normal vector normalised
            # gives the direction, eps * U^(1/d) the radius (d = number of free coordinates)
            g = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * ones
            d = (ones.flatten(1).sum(1) * x.shape[1]).clamp_min(1).view(-1, 1, 1, 1)
            u = torch.rand((n, 1, 1, 1), generator=gen, device=x.device, dtype=x.dtype)
            delta = g / l2(g).clamp_min(1e-12) * u.pow(1 / d) * eps_t
    else:
        delta = torch.zeros_like(x)
    for t in range(steps):
        if t > 0 or unit_start is not None or random_start:
            # keep the perturbation feasible: x + delta inside [0, 1]
            delta = (x + delta).clamp(0, 1) - x
        grad, _ = _input_gradient(model, (x + delta).clamp(0, 1), y, loss=loss, targeted=targeted)
        if norm == "linf":
            delta = delta + alpha * (grad.sign() * ones)
            delta = torch.maximum(torch.minimum(delta, eps_t), -eps_t)
        else:
            grad = grad * ones
            delta = delta + alpha * grad / l2(grad).clamp_min(1e-12)
            delta = delta * ones
            delta = delta * (eps_t / l2(delta).clamp_min(1e-12)).clamp(max=1)
    x_adv = (x + delta).clamp(0, 1)
    if mask is not None:
        x_adv = torch.where(ones > 0, x_adv, x)
    return x_adv.detach()


ATTACKS = {"fgsm": fgsm, "pgd": pgd}


def fgsm_direction(
    model: nn.Module, x: torch.Tensor, y, *, mask=None, batch_size: int = 64
) -> torch.Tensor:
    """``sign(grad CE)`` (times the mask): ``clip(x + eps * d, 0, 1)`` is FGSM at any eps."""
    _check_images(x)
    device = _model_device(model)
    xd = x.detach().to(device)
    y = _as_labels(y, len(xd), device)
    with eval_mode(model):
        d, _ = _directions(model, xd, y, batch_size)
    m = _as_mask(mask, xd)
    return (d if m is None else d * m).to(x.device)


def _directions(model, x, y, batch_size):
    """sign(grad CE) and clean logits, one forward+backward per chunk."""
    signs, logits = [], []
    for xs, ys in zip(x.split(batch_size), y.split(batch_size)):
        g, lg = _input_gradient(model, xs, ys)
        signs.append(g.sign())
        logits.append(lg)
    return torch.cat(signs), torch.cat(logits)


def _forward(model, x, batch_size):
    with torch.no_grad():
        return (
            torch.cat([model(c) for c in x.split(batch_size)])
            if len(x)
            else torch.empty(0, device=x.device)
        )


# --------------------------------------------------------------------------------------------
# robust accuracy per epsilon
# --------------------------------------------------------------------------------------------
def epsilon_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y,
    epsilons,
    *,
    attack: str = "fgsm",
    batch_size: int = 64,
    **attack_kw,
) -> pd.DataFrame:
    """Robust accuracy of ``model`` under ``attack`` for every epsilon in ``epsilons``.

    FGSM computes one gradient sign per image once (one forward+backward per chunk of
    ``batch_size``) and evaluates ``clip(x + eps * sign, 0, 1)`` for every epsilon in batched
    forwards. PGD runs the attack per epsilon. Returns one row per epsilon: ``epsilon``,
    ``accuracy``, ``n_correct``, ``n``.
    """
    _check_images(x)
    epsilons = [float(e) for e in np.atleast_1d(np.asarray(epsilons, dtype=float))]
    for e in epsilons:
        _check_eps(e, "every epsilon")
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; expected one of {', '.join(ATTACKS)}")
    device = _model_device(model)
    xd = x.detach().to(device)
    y = _as_labels(y, len(xd), device)
    correct = []
    with eval_mode(model):
        if attack == "fgsm":
            unknown = set(attack_kw) - {"mask"}
            if unknown:
                raise ValueError(f"the FGSM sweep takes only mask=, got {sorted(unknown)}")
            d, _ = _directions(model, xd, y, batch_size)
            m = _as_mask(attack_kw.get("mask"), xd)
            if m is not None:
                d = d * m
            # every (epsilon, image) pair, packed into forwards of batch_size images
            n = len(xd)
            eps_all = torch.tensor(epsilons, dtype=xd.dtype, device=device).repeat_interleave(n)
            img_all = torch.arange(n, device=device).repeat(len(epsilons))
            hits = []
            with torch.no_grad():
                for e, i in zip(eps_all.split(batch_size), img_all.split(batch_size)):
                    xe = (xd[i] + e.view(-1, 1, 1, 1) * d[i]).clamp(0, 1)
                    hits.append(model(xe).argmax(1) == y[i])
            hits = torch.cat(hits).view(len(epsilons), n)
            correct = hits.sum(1).tolist()
        else:
            for e in epsilons:
                n_ok = 0
                for xs, ys in zip(xd.split(batch_size), y.split(batch_size)):
                    xa = pgd(model, xs, ys, eps=e, **attack_kw)
                    n_ok += int((_forward(model, xa, batch_size).argmax(1) == ys).sum())
                correct.append(n_ok)
    n = len(xd)
    return pd.DataFrame(
        {"epsilon": epsilons, "accuracy": [c / n for c in correct], "n_correct": correct, "n": n}
    )


# --------------------------------------------------------------------------------------------
# smallest flipping epsilon
# --------------------------------------------------------------------------------------------
def epsilon_grid(max_eps: float, grid: int, spacing: str = "linear") -> np.ndarray:
    """The coarse grid of ``minimal_epsilon``: ``grid`` values in (0, max_eps], ascending.

    ``"linear"``: ``max_eps * k / grid`` for k = 1..grid; ``"geometric"``: from
    ``max_eps / 2**(grid/2)`` to ``max_eps`` (a ratio of about ``2**0.5`` per point).
    """
    if grid < 1 or int(grid) != grid:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    if spacing == "linear":
        return max_eps * np.arange(1, grid + 1) / grid
    if spacing == "geometric":
        return (
            max_eps * np.geomspace(2.0 ** (-grid / 2), 1.0, int(grid))
            if grid > 1
            else np.array([max_eps])
        )
    raise ValueError(f"unknown spacing {spacing!r}; expected 'geometric' or 'linear'")


class _Evaluator:
    """Evaluates (image, epsilon) pairs in forwards of ``batch_size`` and counts the passes."""

    def __init__(
        self, model, x, y, batch_size, *, direction, d=None, mask=None, pgd_kw=None, unit_start=None
    ):
        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.direction, self.d, self.mask = direction, d, mask
        self.pgd_kw, self.unit_start = pgd_kw or {}, unit_start
        self.n_forward = torch.zeros(len(x), dtype=torch.long)
        self.n_backward = torch.zeros(len(x), dtype=torch.long)
        self.batched_forwards = 0
        self.chunk_sizes: list[int] = []

    def perturb(self, i: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x[i] attacked at radius e (one value per image); PGD runs count their passes."""
        e = e.to(self.x.dtype)
        if self.direction == "fgsm":
            return (self.x[i] + e.view(-1, 1, 1, 1) * self.d[i]).clamp(0, 1)
        kw = dict(self.pgd_kw)
        steps = int(kw.pop("steps", 10))
        self.n_backward.index_add_(0, i.cpu(), torch.full((len(i),), steps))
        return _pgd(
            self.model,
            self.x[i],
            self.y[i],
            eps=e,
            steps=steps,
            mask=None
            if self.mask is None
            else self.mask.expand(len(self.x), *self.mask.shape[1:])[i],
            unit_start=None if self.unit_start is None else self.unit_start[i],
            **kw,
        )

    def adversarials(self, eps: np.ndarray) -> torch.Tensor:
        """Every image attacked at its ``eps`` (NaN: left clean), in chunks of batch_size."""
        out = self.x.clone()
        todo = torch.as_tensor(np.flatnonzero(np.isfinite(eps) & (eps > 0)), device=self.x.device)
        e_all = torch.as_tensor(np.nan_to_num(eps), dtype=self.x.dtype, device=self.x.device)
        for i in todo.split(self.batch_size):
            out[i] = self.perturb(i, e_all[i])
        return out

    def __call__(self, idx: torch.Tensor, eps: torch.Tensor):
        """margin, predicted class, its softmax probability, for x[idx] attacked at eps."""
        margins, preds, confs = [], [], []
        for i, e in zip(idx.split(self.batch_size), eps.split(self.batch_size)):
            xe = self.perturb(i, e)
            with torch.no_grad():
                logits = self.model(xe)
            self.batched_forwards += 1
            self.chunk_sizes.append(len(i))
            self.n_forward.index_add_(0, i.cpu(), torch.ones(len(i), dtype=torch.long))
            prob = logits.softmax(1)
            conf, pred = prob.max(1)
            margins.append(_margin(logits, self.y[i]))
            preds.append(pred)
            confs.append(conf)
        if not margins:
            e = torch.empty(0, device=self.x.device)
            return e, e.long(), e
        return torch.cat(margins).double(), torch.cat(preds), torch.cat(confs).double()


def minimal_epsilon(
    model: nn.Module,
    x: torch.Tensor,
    y,
    *,
    max_eps: float = 0.25,
    grid: int = 8,
    tol: float = 1e-4,
    method: str = "illinois",
    direction: str = "fgsm",
    mask=None,
    batch_size: int = 64,
    pgd_kw: dict | None = None,
    spacing: str = "linear",
    return_adversarial: bool = False,
    _precomputed=None,
):
    """The smallest L-inf epsilon that flips each image's prediction, for the batch at once.

    ``direction="fgsm"``: one forward+backward gives ``d = sign(grad CE)`` (times ``mask``);
    the search is over ``x(eps) = clip(x + eps * d, 0, 1)``. The grid (:func:`epsilon_grid`)
    is walked upwards in batched forwards, only for the images that have not flipped yet, and
    each image stops at its FIRST grid point where it is misclassified (the flip need not be
    monotone in epsilon). The grid is linear by default: a grid point costs one forward for
    every image still unflipped, and along the FGSM direction the fine-tuned scene model's
    minimal epsilons are large (median ~0.1, 14 % beyond 0.25), so a geometric grid, which
    spends half its points below max_eps/16, costs more grid forwards and saves no root-search
    forwards. Defaults measured on 256 scene images (``benchmarks/minimal_epsilon.py``): 8 linear
    points up to 0.25 cost 4.2 grid + 6.5 root forwards per image, about 13 forward-equivalents with
    the forward+backward; 16 points up to 0.1 cost 10.8 grid forwards and left 46 % unflipped.
    ``spacing="geometric"`` is there for searches whose epsilons spread over decades (PGD, whose
    minimal epsilons on this model are 20-80 times smaller). Inside the bracket [lo, hi]
    (lo right, hi wrong) the root of the
    margin ``m(eps) = logit_y - max_other logit`` is searched for all images in parallel, one
    batched forward per iteration: ``method="illinois"`` (regula falsi with the Illinois
    modification; each secant estimate is probed at +-tol/2 so that the bracket closes as soon
    as the estimate is good, with a bisection step whenever the bracket shrank by less than
    half) or ``"bisection"``. The bracket invariant holds throughout: the prediction at ``lo``
    is right, at ``hi`` wrong; the search stops when ``hi - lo <= tol`` and returns ``hi``.

    ``direction="pgd"``: the same search over the radius of an L-inf PGD attack (``pgd_kw``,
    default ``steps=10, random_start=False``; with ``random_start=True`` one start per image
    is drawn from ``seed`` and scaled with eps, so each eps is deterministic); the root search
    is always bisection (a PGD margin need not be continuous in eps).

    Returns one row per image: ``epsilon`` (NaN if no flip up to ``max_eps``; 0 for images
    already misclassified), ``flipped``, ``already_wrong``, ``label``, ``pred_clean``,
    ``flip_class`` (class predicted at ``epsilon``), ``confidence_before`` (softmax of the
    clean prediction), ``confidence_at_flip``, ``n_forward`` (forward passes of this image
    besides the forward+backward passes; for ``"pgd"`` this includes the clean forward) and
    ``n_backward`` (forward+backward passes: 1 for ``"fgsm"``, ``steps`` per PGD run).
    The cost is at most 1 F+B + ``grid`` + root forwards per image: an image that never flips
    walks the whole grid (a search that assumes monotonicity would stop after testing max_eps).
    ``df.attrs`` holds the grid, the method and the pass totals.

    ``return_adversarial=True`` returns ``(df, x_adv)``: each image attacked at its returned
    epsilon (the clean image where none flipped); for PGD this costs one more attack per image.
    """
    _check_images(x)
    _check_eps(max_eps, "max_eps")
    if max_eps <= 0:
        raise ValueError(f"max_eps must be > 0, got {max_eps!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if method not in ("illinois", "bisection"):
        raise ValueError(f"unknown method {method!r}; expected 'illinois' or 'bisection'")
    if direction not in ("fgsm", "pgd"):
        raise ValueError(f"unknown direction {direction!r}; expected 'fgsm' or 'pgd'")
    device = _model_device(model)
    xd = x.detach().to(device)
    n = len(xd)
    y = _as_labels(y, n, device)
    m = _as_mask(mask, xd)
    eps_grid = torch.tensor(epsilon_grid(max_eps, grid, spacing), dtype=torch.float64)
    with eval_mode(model):
        if direction == "pgd":
            clean_logits = _forward(model, xd, batch_size)
        elif _precomputed is not None:
            sign, clean_logits = _precomputed
        else:
            sign, clean_logits = _directions(model, xd, y, batch_size)
        n_backward0 = 1 if direction == "fgsm" else 0
        if direction == "fgsm":
            d = sign if m is None else sign * m
            ev = _Evaluator(model, xd, y, batch_size, direction="fgsm", d=d)
        else:
            kw = {"random_start": False, "steps": 10, **(pgd_kw or {})}
            kw.pop("eps", None)
            unit = None
            if kw.pop("random_start"):
                gen = torch.Generator(device=device)
                gen.manual_seed(int(kw.get("seed") or 0))
                unit = 2 * torch.rand(xd.shape, generator=gen, device=device, dtype=xd.dtype) - 1
            kw.pop("seed", None)
            kw.setdefault("norm", "linf")
            if kw["norm"] != "linf":
                raise ValueError(
                    "minimal_epsilon searches an L-inf radius; pgd_kw norm must be 'linf'"
                )
            kw.update(random_start=False, seed=None, targeted=False)
            kw.setdefault("step_size", None)
            kw.setdefault("loss", "ce")
            ev = _Evaluator(
                model, xd, y, batch_size, direction="pgd", mask=m, pgd_kw=kw, unit_start=unit
            )
            ev.n_forward += 1  # the clean forward
            method = "bisection"
        result = _search(ev, clean_logits, y, eps_grid, tol, method)
    res = result
    prob = clean_logits.softmax(1)
    conf0, pred0 = prob.max(1)
    df = pd.DataFrame(
        {
            "epsilon": res["eps"],
            "flipped": res["flipped"],
            "already_wrong": (pred0 != y).cpu().numpy(),
            "label": y.cpu().numpy(),
            "pred_clean": pred0.cpu().numpy(),
            "flip_class": pd.array(np.where(res["flipped"], res["flip_class"], 0), dtype="Int64"),
            "confidence_before": conf0.double().cpu().numpy(),
            "confidence_at_flip": res["conf"],
            "n_forward": ev.n_forward.numpy(),
            "n_backward": ev.n_backward.numpy() + n_backward0,
        }
    )
    df.loc[~df["flipped"], "flip_class"] = pd.NA
    df.attrs.update(
        {
            "grid": eps_grid.numpy().tolist(),
            "spacing": spacing,
            "method": method,
            "direction": direction,
            "tol": tol,
            "max_eps": max_eps,
            "batched_forwards": ev.batched_forwards,
            "forward_batch_sizes": list(ev.chunk_sizes),
            "forwards_per_image": float(ev.n_forward.double().mean()) if n else 0.0,
            "grid_forwards_per_image": res["grid_forwards"] / max(n, 1),
            "root_forwards_per_image": res["root_forwards"] / max(n, 1),
            "root_iterations": res["root_iterations"],
        }
    )
    if return_adversarial:
        with eval_mode(model):
            x_adv = ev.adversarials(np.where(df["flipped"], df["epsilon"], np.nan))
        return df, x_adv.detach().to(x.device)
    return df


def _search(ev: _Evaluator, clean_logits, y, eps_grid, tol, method):
    """Grid walk to the first flipping bracket, then the root search; arrays per image."""
    n = len(y)
    m0 = _margin(clean_logits, y).double().cpu()
    pred0 = clean_logits.argmax(1).cpu()
    conf0 = clean_logits.softmax(1).amax(1).double().cpu()
    wrong0 = pred0 != y.cpu()
    eps_out = np.full(n, np.nan)
    flipped = np.zeros(n, dtype=bool)
    flip_class = np.zeros(n, dtype=np.int64)
    conf_out = np.full(n, np.nan)
    eps_out[wrong0.numpy()] = 0.0
    flipped[wrong0.numpy()] = True
    flip_class[wrong0.numpy()] = pred0[wrong0].numpy()
    conf_out[wrong0.numpy()] = conf0[wrong0].numpy()

    # ---- grid walk: all still-searching images share the same next grid level
    lo = torch.zeros(n, dtype=torch.float64)
    f_lo = m0.clone()
    hi = torch.full((n,), np.nan, dtype=torch.float64)
    f_hi = torch.zeros(n, dtype=torch.float64)
    hi_pred = torch.zeros(n, dtype=torch.long)
    hi_conf = torch.full((n,), np.nan, dtype=torch.float64)
    bracketed = torch.zeros(n, dtype=torch.bool)
    active = torch.nonzero(~wrong0).flatten()
    level, n_grid = 0, len(eps_grid)
    start = int(ev.n_forward.sum())
    while len(active) and level < n_grid:
        k = min(n_grid - level, max(1, math.ceil(_MIN_GRID_BATCH / len(active))))
        levels = eps_grid[level : level + k]
        idx = active.repeat_interleave(k)
        margin, pred, conf = ev(idx.to(ev.x.device), levels.repeat(len(active)))
        margin, pred, conf = (t.cpu().view(len(active), k) for t in (margin, pred, conf))
        wrong = pred != y.cpu()[active][:, None]
        has = wrong.any(1)
        first = torch.where(
            has, wrong.int().argmax(1), torch.full_like(has, k - 1, dtype=torch.long)
        )
        rows = torch.arange(len(active))
        # lo: the last right grid point before the first wrong one (or the last evaluated)
        prev = first - 1
        new_lo = torch.where(prev >= 0, levels[prev.clamp_min(0)], lo[active])
        new_flo = torch.where(prev >= 0, margin[rows, prev.clamp_min(0)], f_lo[active])
        a_has = active[has]
        lo[a_has], f_lo[a_has] = new_lo[has], new_flo[has]
        hi[a_has] = levels[first[has]]
        f_hi[a_has] = margin[rows[has], first[has]].clamp(max=0.0)
        hi_pred[a_has] = pred[rows[has], first[has]]
        hi_conf[a_has] = conf[rows[has], first[has]]
        bracketed[a_has] = True
        a_no = active[~has]
        lo[a_no], f_lo[a_no] = levels[-1], margin[~has, -1]
        active = a_no
        level += k
    grid_forwards = int(ev.n_forward.sum()) - start

    # ---- root search inside [lo, hi] for all bracketed images at once
    start = int(ev.n_forward.sum())
    idx_b = torch.nonzero(bracketed).flatten()
    moved = torch.zeros(n, dtype=torch.long)  # 1: hi moved last, -1: lo moved, 0: both
    force_bisect = torch.zeros(n, dtype=torch.bool)
    iterations = 0
    yc = y.cpu()
    while True:
        act = idx_b[(hi[idx_b] - lo[idx_b]) > tol]
        if not len(act):
            break
        iterations += 1
        a_lo, a_hi = lo[act], hi[act]
        width = a_hi - a_lo
        mid = (a_lo + a_hi) / 2
        p1, p2 = mid.clone(), torch.full_like(mid, np.nan)
        if method == "illinois":
            c = a_lo + width * f_lo[act] / (f_lo[act] - f_hi[act])
            c = torch.where(torch.isfinite(c), c, mid)
            secant = ~force_bisect[act] & (width > 2 * tol)
            near_lo = secant & (c - tol / 2 <= a_lo)
            near_hi = secant & ~near_lo & (c + tol / 2 >= a_hi)
            pair = secant & ~near_lo & ~near_hi
            p1 = torch.where(near_lo, a_lo + tol, p1)
            p1 = torch.where(near_hi, a_hi - tol, p1)
            p1 = torch.where(pair, c - tol / 2, p1)
            p2 = torch.where(pair, c + tol / 2, p2)
        two = ~torch.isnan(p2)
        idx = torch.cat([act, act[two]])
        pts = torch.cat([p1, p2[two]])
        margin, pred, conf = (t.cpu() for t in ev(idx.to(ev.x.device), pts))
        right = pred == yc[idx]
        # per image: lowest wrong point becomes hi, then highest right point below hi becomes lo
        k1 = len(act)
        r1, m1, pr1, c1 = right[:k1], margin[:k1], pred[:k1], conf[:k1]
        r2 = torch.ones(k1, dtype=torch.bool)
        m2 = torch.zeros(k1, dtype=torch.float64)
        pr2 = torch.zeros(k1, dtype=torch.long)
        c2 = torch.zeros(k1, dtype=torch.float64)
        r2[two], m2[two], pr2[two], c2[two] = right[k1:], margin[k1:], pred[k1:], conf[k1:]
        new_hi, new_fhi = a_hi.clone(), f_hi[act].clone()
        new_pred, new_conf = hi_pred[act].clone(), hi_conf[act].clone()
        w2 = two & ~r2
        w1 = ~r1
        for wmask, p, mm, pr, cf in ((w2, p2, m2, pr2, c2), (w1, p1, m1, pr1, c1)):  # p1 wins
            new_hi = torch.where(wmask, p, new_hi)
            new_fhi = torch.where(wmask, mm.clamp(max=0.0), new_fhi)
            new_pred = torch.where(wmask, pr, new_pred)
            new_conf = torch.where(wmask, cf, new_conf)
        new_lo, new_flo = a_lo.clone(), f_lo[act].clone()
        for rmask, p, mm in ((r1 & (p1 < new_hi), p1, m1), (two & r2 & (p2 < new_hi), p2, m2)):
            new_lo = torch.where(rmask, p, new_lo)
            new_flo = torch.where(rmask, mm, new_flo)
        lo_moved, hi_moved = new_lo > a_lo, new_hi < a_hi
        side = torch.where(lo_moved & hi_moved, 0, torch.where(hi_moved, 1, -1))
        # Illinois: an endpoint kept twice in a row has its margin halved
        halve_lo = (side == 1) & (moved[act] == 1)
        halve_hi = (side == -1) & (moved[act] == -1)
        new_flo = torch.where(halve_lo, new_flo / 2, new_flo)
        new_fhi = torch.where(halve_hi, new_fhi / 2, new_fhi)
        force_bisect[act] = (new_hi - new_lo) > 0.5 * width
        moved[act] = side
        lo[act], f_lo[act], hi[act], f_hi[act] = new_lo, new_flo, new_hi, new_fhi
        hi_pred[act], hi_conf[act] = new_pred, new_conf
    root_forwards = int(ev.n_forward.sum()) - start

    b = bracketed.numpy()
    eps_out[b] = hi[bracketed].to(ev.x.dtype).double().numpy()
    flipped[b] = True
    flip_class[b] = hi_pred[bracketed].numpy()
    conf_out[b] = hi_conf[bracketed].numpy()
    return {
        "eps": eps_out,
        "flipped": flipped,
        "flip_class": flip_class,
        "conf": conf_out,
        "grid_forwards": grid_forwards,
        "root_forwards": root_forwards,
        "root_iterations": iterations,
    }


# --------------------------------------------------------------------------------------------
# minimum-norm search (foolbox's FMN), the strong minimal epsilon
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _fast(model: nn.Module, channels_last: bool = True) -> Iterator[nn.Module]:
    """Eval mode, parameters frozen (gradients w.r.t. the input only) and channels_last weights
    while attacking; everything restored afterwards, the weights as the very tensors they were
    (converting back to contiguous_format gives other strides for some weights, and a model whose
    strides changed computes slightly different results: later notebooks cells would depend on
    whether an attack ran before them)."""
    grads = [(p, p.requires_grad) for p in model.parameters()]
    tensors = [(t, t.data) for t in (*model.parameters(), *model.buffers())]
    with eval_mode(model):
        for p, _ in grads:
            p.requires_grad_(False)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        try:
            yield model
        finally:
            for t, data in tensors:
                t.data = data
            for p, flag in grads:
                p.requires_grad_(flag)


class _Confined(nn.Module):
    """``f(z) = model(x0 + mask * (z - x0))`` in channels_last: the model foolbox attacks.
    Outside the mask the gradient is zero, so foolbox's L-inf FMN (which starts at x0 and moves
    along the gradient) leaves those pixels at x0."""

    def __init__(self, model, x0=None, mask=None):
        super().__init__()
        self.model, self.x0, self.mask = model, x0, mask
        self.train(False)  # foolbox warns about modules in training mode

    def forward(self, z):
        if self.mask is not None:
            z = self.x0 + self.mask * (z - self.x0)
        return self.model(z.contiguous(memory_format=torch.channels_last))


def _fmn_deltas(model, x, y, mask, *, steps, gamma, max_stepsize, batch_size):
    """foolbox ``LInfFMNAttack`` per chunk: the perturbation it returns (zero where it found
    none), confined to the mask."""
    import foolbox as fb

    out = torch.zeros_like(x)
    attack = fb.attacks.LInfFMNAttack(
        steps=int(steps), gamma=float(gamma), max_stepsize=float(max_stepsize)
    )
    for i in torch.arange(len(x), device=x.device).split(batch_size):
        xs, m = x[i], None if mask is None else mask[i]
        fmodel = fb.PyTorchModel(_Confined(model, xs, m), bounds=(0, 1), device=x.device)
        d = attack.run(fmodel, xs, fb.criteria.Misclassification(y[i])).detach() - xs
        out[i] = d if m is None else d * m
    return out


def _shrink_along(model, x, y, delta, *, probes: int, batch_size: int):
    """Per image, the smallest t in (0, 1] (bisection, ``probes`` batched fp32 forwards) at which
    ``clip(x + t * delta)`` is still misclassified, after checking t = 1 (and, where the fp32
    model does not call that point wrong, t = 1.1, 1.25, 1.5, 2). Returns t (NaN: no flip found)
    and the number of forwards per image."""
    n = len(x)
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), np.nan, dtype=torch.float64)
    forwards = torch.zeros(n, dtype=torch.long)

    def wrong(idx, t):
        xs = (x[idx] + t.to(x.dtype).view(-1, 1, 1, 1).to(x.device) * delta[idx]).clamp(0, 1)
        forwards[idx] += 1
        logits = [_Confined(model)(c) for c in xs.split(batch_size)]
        pred = torch.cat(logits).argmax(1) if len(xs) else y[:0]
        return (pred != y[idx]).cpu()

    todo = torch.arange(n)
    for t in (1.0, 1.1, 1.25, 1.5, 2.0):
        if not len(todo):
            break
        w = wrong(todo, torch.full((len(todo),), t, dtype=torch.float64))
        hi[todo[w]] = t
        todo = todo[~w]
    found = torch.nonzero(~torch.isnan(hi)).flatten()
    for _ in range(int(probes)):
        if not len(found):
            break
        mid = (lo[found] + hi[found]) / 2
        w = wrong(found, mid)
        hi[found] = torch.where(w, mid, hi[found])
        lo[found] = torch.where(w, lo[found], mid)
    return hi, forwards


def _smallest_verified(model, x, y, delta, *, probes, batch_size):
    """The line search of :func:`_shrink_along` along FMN's change and along the corner of its
    L-inf ball (``sign(delta) * ||delta||_inf``, often still adversarial at a smaller epsilon);
    per image the smaller verified change. Returns (change, forwards per image); the change is
    NaN-free, zero where neither direction flips, with ``found`` marking the others."""
    corner = delta.sign() * delta.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    best = torch.zeros_like(delta)
    best_norm = torch.full((len(x),), np.inf, dtype=torch.float64)
    forwards = torch.zeros(len(x), dtype=torch.long)
    for direction in (delta, corner):
        t, fwd = _shrink_along(model, x, y, direction, probes=probes, batch_size=batch_size)
        forwards += fwd
        norm = t * direction.flatten(1).abs().amax(1).double().cpu()
        better = ~torch.isnan(t) & (norm < best_norm)
        b = better.to(x.device)
        best[b] = t[better].to(x.dtype).to(x.device).view(-1, 1, 1, 1) * direction[b]
        best_norm[better] = norm[better]
    return best, torch.isfinite(best_norm), forwards


def minimum_norm_epsilon(
    model: nn.Module,
    x: torch.Tensor,
    y,
    *,
    steps: int = 30,
    mask=None,
    max_eps: float | None = None,
    probes: int = 8,
    gamma: float = 0.15,
    max_stepsize: float = 0.3,
    batch_size: int = 64,
    return_adversarial: bool = False,
):
    """The smallest flipping L-inf epsilon of each image by a minimum-norm attack: foolbox's
    ``LInfFMNAttack`` (Pintor et al., 2021) with ``steps`` iterations, then line searches.

    1. FMN runs on the images the model gets right, on a wrapper that feeds the model
       channels_last input with its parameters frozen (gradients w.r.t. the input only); with
       ``mask`` the wrapper is ``model(x0 + mask * (z - x0))``, so the change stays inside the
       mask. ``gamma`` (FMN's epsilon step, 0.05 in foolbox) and ``max_stepsize`` (1.0 there)
       are set for a short run (tuning note below).
    2. FMN's change ``delta`` is checked on the fp32 model and shrunk by a bisection of
       ``clip(x + t * delta)`` over t in (0, 1] (``probes`` batched forwards); the same along
       the corner of its L-inf ball; the smaller verified change counts.
    Every reported epsilon is the L-inf norm of the change actually applied (after clipping),
    and that changed image is misclassified by the fp32 model.

    Tuning note (the fine-tuned scene model; two sets of 44 correctly classified test images;
    share of images within 10 % of foolbox's FMN-100, i.e. epsilon <= 1.1 x FMN-100's):
    30 steps, gamma 0.15, max_stepsize 0.3 (the default): 100 % and 95 %, median ratio 0.87;
    20 steps, max_stepsize 0.1 (the previous default): 75 % and 86 %; 25 steps: 84 % and 93 %;
    30 steps with max_stepsize 0.2: 91 % and 91 %; 40 steps with 0.1: 93 % and 91 %. FMN-100 is
    no optimum on this model (ours is below it on most images), so the check is one-sided.

    Returns the frame of :func:`minimal_epsilon` (``epsilon`` NaN where no flip was found or
    it exceeds ``max_eps``; 0 for images already misclassified); ``n_backward`` counts FMN steps,
    ``n_forward`` the clean forward and the fp32 checks. ``return_adversarial=True`` returns
    ``(df, x_adv)`` too (each image at its epsilon; clean where none).
    """
    _check_images(x)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if max_eps is not None:
        _check_eps(max_eps, "max_eps")
    device = _model_device(model)
    xd = x.detach().to(device)
    n = len(xd)
    y = _as_labels(y, n, device)
    m = _as_mask(mask, xd)
    if m is not None:
        m = m.expand(n, *m.shape[1:])
    x_adv = xd.clone()
    eps = np.full(n, np.nan)
    flip_class = np.zeros(n, dtype=np.int64)
    conf_flip = np.full(n, np.nan)
    n_fwd = np.ones(n, dtype=np.int64)
    n_bwd = np.zeros(n, dtype=np.int64)
    with _fast(model):
        with torch.no_grad():
            chunks = [_Confined(model)(c) for c in xd.split(batch_size)]
            clean = torch.cat(chunks) if n else torch.empty(0, 1, device=device)
        conf0, pred0 = clean.softmax(1).max(1) if n else (clean[:, 0], clean[:, 0].long())
        wrong0 = (pred0 != y).cpu().numpy()
        eps[wrong0] = 0.0
        flip_class[wrong0] = pred0.cpu().numpy()[wrong0]
        conf_flip[wrong0] = conf0.double().cpu().numpy()[wrong0]
        todo = torch.as_tensor(np.flatnonzero(~wrong0), device=device)
        if len(todo):
            xs, ys, ms = xd[todo], y[todo], None if m is None else m[todo]
            delta = _fmn_deltas(
                model, xs, ys, ms, steps=steps, gamma=gamma, max_stepsize=max_stepsize,
                batch_size=batch_size,
            )  # fmt: skip
            with torch.no_grad():
                change, ok, fwd = _smallest_verified(
                    model, xs, ys, delta, probes=probes, batch_size=batch_size
                )
                adv = (xs + change).clamp(0, 1)
                if ms is not None:
                    adv = torch.where(ms > 0, adv, xs)
                applied = (adv - xs).flatten(1).abs().amax(1).double().cpu()
                logits = torch.cat([_Confined(model)(c) for c in adv.split(batch_size)])
                conf, pred = logits.softmax(1).max(1)
                ok &= (pred != ys).cpu()  # the final fp32 check of the reported image
                if max_eps is not None:
                    ok &= applied <= max_eps
            sel = todo.cpu().numpy()
            n_fwd[sel] += fwd.numpy() + 1
            n_bwd[sel] += int(steps)
            okn = ok.numpy()
            eps[sel[okn]] = applied.numpy()[okn]
            flip_class[sel[okn]] = pred.cpu().numpy()[okn]
            conf_flip[sel[okn]] = conf.double().cpu().numpy()[okn]
            x_adv[todo[ok.to(device)]] = adv[ok.to(device)]
    flipped = ~np.isnan(eps)
    df = pd.DataFrame(
        {
            "epsilon": eps,
            "flipped": flipped,
            "already_wrong": wrong0,
            "label": y.cpu().numpy(),
            "pred_clean": pred0.cpu().numpy(),
            "flip_class": pd.array(np.where(flipped, flip_class, 0), dtype="Int64"),
            "confidence_before": conf0.double().cpu().numpy(),
            "confidence_at_flip": conf_flip,
            "n_forward": n_fwd,
            "n_backward": n_bwd,
        }
    )
    df.loc[~df["flipped"], "flip_class"] = pd.NA
    df.attrs.update(
        {
            "method": "fmn",
            "direction": "fmn",
            "steps": int(steps),
            "probes": int(probes),
            "max_eps": max_eps,
        }
    )
    if return_adversarial:
        return df, x_adv.detach().to(x.device)
    return df


def fmn_reference(
    model: nn.Module, x: torch.Tensor, y, epsilons, *, steps: int = 100, batch_size: int = 64
) -> pd.DataFrame:
    """Check minimal epsilons against foolbox's ``LInfFMNAttack(steps)`` on the plain fp32 model:
    one row per image with ``epsilon`` (the one checked), ``reference`` (FMN's L-inf norm; NaN
    where it found no flip), ``ratio`` (epsilon / reference) and ``within_10pct`` (ratio <= 1.1).
    Images already misclassified (epsilon 0) are left out of the ratio (NaN)."""
    import foolbox as fb

    _check_images(x)
    device = _model_device(model)
    xd = x.detach().to(device)
    y = _as_labels(y, len(xd), device)
    ref = []
    with _fast(model, channels_last=False):
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
        for xs, ys in zip(xd.split(batch_size), y.split(batch_size)):
            adv = fb.attacks.LInfFMNAttack(steps=int(steps)).run(
                fmodel, xs, fb.criteria.Misclassification(ys)
            )
            with torch.no_grad():
                ok = model(adv).argmax(1) != ys
            e = (adv - xs).flatten(1).abs().amax(1).double()
            ref.append(torch.where(ok, e, torch.full_like(e, float("nan"))).cpu())
    ref = torch.cat(ref).numpy() if ref else np.zeros(0)
    eps = np.asarray(epsilons, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(eps > 0, np.nan_to_num(eps, nan=np.inf) / ref, np.nan)
    return pd.DataFrame(
        {"epsilon": eps, "reference": ref, "ratio": ratio, "within_10pct": ratio <= 1.1}
    )


# --------------------------------------------------------------------------------------------
# masks and regions
# --------------------------------------------------------------------------------------------
def top_fraction_mask(maps, q: float) -> torch.Tensor:
    """Bool [N, H, W]: the ``round(q * H * W)`` highest pixels of each map (e.g. Grad-CAM).

    Ties are broken deterministically: among equal values the earlier pixel (row-major) wins.
    NaN counts as the lowest value.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"q must be a fraction in [0, 1], got {q!r}")
    t = torch.as_tensor(np.asarray(maps) if not torch.is_tensor(maps) else maps).detach()
    if t.ndim == 2:
        t = t[None]
    if t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 3:
        raise ValueError(f"maps must be [N, H, W] (or [H, W]), got shape {tuple(t.shape)}")
    n, h, w = t.shape
    flat = t.reshape(n, -1).double().nan_to_num(nan=-np.inf)
    k = int(round(q * h * w))
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    out = torch.zeros(n, h * w, dtype=torch.bool, device=t.device)
    out.scatter_(1, order, True)
    return out.view(n, h, w)


def complement(mask):
    """The pixels not in ``mask`` (bool or 0/1 float; tensor or numpy), same type back."""
    if torch.is_tensor(mask):
        return ~mask if mask.dtype == torch.bool else 1 - mask
    mask = np.asarray(mask)
    return ~mask if mask.dtype == bool else 1 - mask


def equal_area(object_mask, background_mask, *, seed: int = 0, image_ids=None):
    """Object and background masks of EQUAL pixel count per image: the larger of the two is
    subsampled at random (without replacement) to the smaller one's pixel count; the smaller
    is kept whole. The draw for an image uses the generator ``[seed, image id]`` (``image_ids``:
    one id per image, default 0..N-1), so it does not depend on the other images in the batch.
    Returns two bool tensors [N, H, W].

    The subsampled region is a scattered subset of its pixels, not a contiguous area."""
    obj = torch.as_tensor(
        np.asarray(object_mask) if not torch.is_tensor(object_mask) else object_mask
    ).bool()
    bg = torch.as_tensor(
        np.asarray(background_mask) if not torch.is_tensor(background_mask) else background_mask
    ).bool()
    if obj.ndim == 4:
        obj, bg = obj[:, 0], bg[:, 0]
    if obj.shape != bg.shape or obj.ndim != 3:
        raise ValueError(
            f"object and background masks must both be [N, H, W], got {tuple(obj.shape)} "
            f"and {tuple(bg.shape)}"
        )
    ids = np.arange(len(obj)) if image_ids is None else np.asarray(image_ids)
    obj_out, bg_out = obj.clone(), bg.clone()
    for i in range(len(obj)):
        a, b = obj[i].flatten(), bg[i].flatten()
        k = int(min(a.sum(), b.sum()))
        big = 0 if a.sum() > b.sum() else 1
        where = np.flatnonzero((a if big == 0 else b).numpy())
        keep = np.random.default_rng([int(seed), int(ids[i])]).choice(where, size=k, replace=False)
        sub = torch.zeros_like(a)
        sub[torch.as_tensor(keep, dtype=torch.long)] = True
        (obj_out if big == 0 else bg_out)[i] = sub.view(obj.shape[1:])
    return obj_out, bg_out


def fragility_by_region(
    model: nn.Module,
    x: torch.Tensor,
    y,
    masks: dict,
    *,
    batch_size: int = 64,
    direction: str = "fgsm",
    **minimal_epsilon_kw,
) -> pd.DataFrame:
    """The smallest flipping epsilon with the perturbation confined to each region of ``masks``.

    ``masks``: ``{name: mask}`` (``[N, H, W]`` or ``[N, 1, H, W]``, bool or 0/1); ``"whole"``
    (all ones) is added when missing, unless ``masks`` holds ``"whole": None`` (then it is left
    out). ``direction="fmn"`` uses :func:`minimum_norm_epsilon` (the strong search; keywords
    ``steps``, ``probes``, ``max_eps``), ``"fgsm"`` / ``"pgd"`` use
    :func:`minimal_epsilon` (for the FGSM direction the gradient sign is computed once and
    masked per region). Pass regions of equal pixel count (:func:`equal_area`) to compare them.
    Returns a long DataFrame, one row per image and region: ``image``, ``region``, ``label``,
    ``epsilon``, ``flipped``, ``already_wrong``, ``flip_class``, ``confidence_before``,
    ``pixels`` (pixel count of the region), ``l2_norm`` (L2 norm of the perturbation actually
    applied at ``epsilon``, after clipping) and ``l2_nominal`` (``eps * sqrt(pixels * C)``).
    """
    _check_images(x)
    device = _model_device(model)
    xd = x.detach().to(device)
    n, c, h, w = xd.shape
    y = _as_labels(y, n, device)
    regions = dict(masks)
    if "whole" not in regions:
        regions = {"whole": torch.ones(n, h, w, dtype=torch.bool), **regions}
    regions = {k: v for k, v in regions.items() if v is not None}
    pre = None
    if direction == "fgsm":
        with eval_mode(model):
            pre = _directions(model, xd, y, batch_size)
    frames = []
    for name, mask in regions.items():
        m = _as_mask(mask, xd).expand(n, 1, h, w)
        if direction == "fmn":
            df, x_adv = minimum_norm_epsilon(
                model,
                xd,
                y,
                mask=m,
                batch_size=batch_size,
                return_adversarial=True,
                **minimal_epsilon_kw,
            )
        else:
            df, x_adv = minimal_epsilon(
                model,
                xd,
                y,
                mask=m,
                batch_size=batch_size,
                _precomputed=pre,
                return_adversarial=True,
                direction=direction,
                **minimal_epsilon_kw,
            )
        pixels = m.flatten(1).sum(1).cpu().numpy().astype(int)
        l2 = (x_adv - xd).flatten(1).norm(dim=1).double().cpu().numpy()
        l2[~df["flipped"].to_numpy()] = np.nan
        df.insert(0, "region", name)
        df.insert(0, "image", np.arange(n))
        df["pixels"] = pixels
        df["l2_norm"] = l2
        df["l2_nominal"] = df["epsilon"] * np.sqrt(pixels * c)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {
        k: v
        for k, v in frames[0].attrs.items()
        if k in ("grid", "tol", "max_eps", "method", "steps", "probes")
    }
    return out


def _median_ci(values, seed):
    from .stats import bootstrap

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return np.nan, np.nan, np.nan
    e = bootstrap(v, np.median, seed=seed)
    # a median that is inf (more than half never flipped) has its upper end at inf too
    return e.estimate, e.low, (np.inf if np.isinf(e.estimate) else e.high)


def per_class_fragility(
    df: pd.DataFrame, classes: list[str], *, budget: float | None = None, seed: int = 0
) -> pd.DataFrame:
    """Per class (rows) and region: median minimal epsilon with its 95 % interval, share not
    flipped, median L2, and with ``budget`` the share that withstands it (Wilson interval).

    ``df``: the frame of :func:`fragility_by_region` (or :func:`helpers.runs.fragility`), or of
    :func:`minimal_epsilon` / :func:`minimum_norm_epsilon` (one region, named ``whole``).

    Only images classified correctly before the attack count (``already_wrong`` images have
    epsilon 0 and say nothing about fragility); ``n_correct`` (whole image, or the first region)
    and ``n_<region>`` give how many. Images that never flip count as ``+inf`` (their epsilon
    is beyond ``max_eps``), so a median is ``inf`` when more than half of a class withstands
    ``max_eps``. Columns per region ``r``: ``median_eps_r`` with ``median_eps_r_ci_low`` /
    ``_ci_high`` (seeded percentile bootstrap over the class's images, helpers.stats),
    ``n_r``, ``share_not_flipped_r``, ``median_l2_r`` (when the frame has L2 norms) and, with
    ``budget``, ``share_withstanding_r`` (share whose epsilon exceeds ``budget``) with its
    Wilson ``_ci_low`` / ``_ci_high``.

    With ``object`` and ``background`` regions: ``object_background_ratio`` is the median over
    images of the PAIRED ratio eps_object / eps_background (each image attacked in both regions;
    a region that never flips counts as inf; images where neither flips are left out), with its
    bootstrap interval (``_ci_low``, ``_ci_high``) and ``n_object_background``. < 1: the
    object is the more fragile region. Compare regions of equal area (:func:`equal_area`).
    """
    from .stats import wilson

    ok = df[~df["already_wrong"]].copy()
    ok["eps_c"] = ok["epsilon"].where(ok["flipped"], np.inf)
    has_l2 = "l2_norm" in ok.columns  # minimal_epsilon's own frame has no L2 column
    ok["l2_c"] = ok["l2_norm"].where(ok["flipped"], np.inf) if has_l2 else np.nan
    if "region" not in df.columns:
        df, ok = df.assign(region="whole"), ok.assign(region="whole")
    if "image" not in ok.columns:
        ok = ok.assign(image=ok.index)
    rows = []
    regions = list(dict.fromkeys(df["region"]))
    first = "whole" if "whole" in regions else regions[0]
    for k, name in enumerate(classes):
        row = {
            "class": name,
            "n": int(((df["label"] == k) & (df["region"] == first)).sum()),
            "n_correct": int(((ok["label"] == k) & (ok["region"] == first)).sum()),
        }
        for j, region in enumerate(regions):
            sel = ok[(ok["label"] == k) & (ok["region"] == region)]
            est, low, high = _median_ci(sel["eps_c"], seed + 101 * k + j)
            row[f"median_eps_{region}"] = est
            row[f"median_eps_{region}_ci_low"], row[f"median_eps_{region}_ci_high"] = low, high
            row[f"n_{region}"] = len(sel)
            if has_l2:
                row[f"median_l2_{region}"] = float(np.median(sel["l2_c"])) if len(sel) else np.nan
            row[f"share_not_flipped_{region}"] = (
                float((~sel["flipped"]).mean()) if len(sel) else np.nan
            )
            if budget is not None:
                kk = int((sel["eps_c"] > budget).sum())
                row[f"share_withstanding_{region}"] = kk / len(sel) if len(sel) else np.nan
                lo, hi = wilson(kk, len(sel)) if len(sel) else (np.nan, np.nan)
                (
                    row[f"share_withstanding_{region}_ci_low"],
                    row[f"share_withstanding_{region}_ci_high"],
                ) = lo, hi
        if "object" in regions and "background" in regions:
            o = ok[(ok["label"] == k) & (ok["region"] == "object")].set_index("image")["eps_c"]
            b = ok[(ok["label"] == k) & (ok["region"] == "background")].set_index("image")["eps_c"]
            o, b = o.align(b, join="inner")
            with np.errstate(divide="ignore", invalid="ignore"):
                r = (o / b).to_numpy(dtype=float)  # inf/inf -> nan: left out
            est, low, high = _median_ci(r, seed + 101 * k + 50)
            row["object_background_ratio"] = est
            row["object_background_ratio_ci_low"], row["object_background_ratio_ci_high"] = (
                low,
                high,
            )
            row["n_object_background"] = int(np.sum(~np.isnan(r)))
            if has_l2:
                with np.errstate(divide="ignore", invalid="ignore"):
                    row["object_background_l2_ratio"] = (
                        row["median_l2_object"] / row["median_l2_background"]
                    )
        rows.append(row)
    out = pd.DataFrame(rows).set_index("class")
    if budget is not None:
        out.attrs["budget"] = float(budget)
    return out


def robust_accuracy_from_epsilons(
    df: pd.DataFrame, epsilons, *, max_eps: float | None = None
) -> pd.DataFrame:
    """Robust accuracy per epsilon read off the minimal epsilons of every image (the frame of
    :func:`minimum_norm_epsilon` / :func:`minimal_epsilon`, one row per image): the share of
    ALL images whose minimal flipping epsilon exceeds ``e`` (already misclassified images have
    epsilon 0; images that never flipped count as beyond ``max_eps``), with a Wilson interval.
    Since a minimum-norm attack only bounds each image's minimal epsilon from above, this is an
    upper bound on the accuracy under the best possible attack. Epsilons at or above ``max_eps``
    (default ``df.attrs["max_eps"]``) are NaN: nothing is known there. Returns ``epsilon``,
    ``accuracy``, ``low``, ``high``, ``n_correct``, ``n``."""
    from .stats import wilson

    if "region" in df.columns:
        df = df[df["region"] == "whole"]
    max_eps = df.attrs.get("max_eps") if max_eps is None else max_eps
    eps = df["epsilon"].where(df["flipped"], np.inf).to_numpy(dtype=float)
    n = len(eps)
    rows = []
    for e in np.atleast_1d(np.asarray(epsilons, dtype=float)):
        _check_eps(e, "every epsilon")
        k = int((eps > e).sum())
        known = max_eps is None or e < max_eps
        low, high = wilson(k, n) if n else (np.nan, np.nan)
        rows.append(
            {
                "epsilon": float(e),
                "accuracy": k / n if n and known else np.nan,
                "low": low if known else np.nan,
                "high": high if known else np.nan,
                "n_correct": k if known else pd.NA,
                "n": n,
            }
        )
    out = pd.DataFrame(rows)
    out["n_correct"] = out["n_correct"].astype("Int64")
    return out
