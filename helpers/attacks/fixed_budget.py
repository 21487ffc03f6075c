"""Attacks with a fixed budget: FGSM and PGD in an epsilon ball, the targeted iterative attack
stopped at the first step that reaches its target, and robust accuracy per epsilon.

    fgsm(model, x, y, *, eps, targeted=False, mask=None) -> x_adv
    pgd(model, x, y, *, eps, norm="linf", steps=10, ...) -> x_adv
    iterative_targeted(model, x, target, *, norm="linf", max_steps=200, ...) -> FoolingResult

:data:`ATTACKS` maps the names ``epsilon_sweep`` accepts to the attack functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..plumbing import as_labels, check_images, eval_mode, model_device
from ._base import (
    as_mask,
    check_eps,
    directions,
    forward,
    input_gradient,
    on_model_device,
    per_sample,
)


def fgsm(
    model: nn.Module, x: torch.Tensor, y, *, eps: float, targeted: bool = False, mask=None
) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad CE), 0, 1)`` (minus for targeted).

    ``y``: true labels (or target labels when ``targeted``). ``eps`` may be a float or a
    tensor with one value per image. Pixels outside ``mask`` are never changed.
    """
    check_images(x)
    check_eps(eps)
    if not torch.is_tensor(eps) and eps == 0:
        return x.clone()
    xd, y, m = on_model_device(model, x, y, mask)
    with eval_mode(model):
        grad, _ = input_gradient(model, xd, y, targeted=targeted)
    step = grad.sign() if m is None else grad.sign() * m
    x_adv = (xd + per_sample(eps, len(xd), xd) * step).clamp(0, 1)
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
    check_images(x)
    check_eps(eps)
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; expected 'linf' or 'l2'")
    if loss not in ("ce", "margin"):
        raise ValueError(f"unknown loss {loss!r}; expected 'ce' or 'margin'")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if step_size is not None:
        check_eps(step_size, "step_size")
    if not torch.is_tensor(eps) and eps == 0:
        return x.clone()
    xd, y, m = on_model_device(model, x, y, mask)
    with eval_mode(model):
        x_adv = pgd_steps(
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


def _l2(t):
    return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _pgd_start(x, eps_t, ones, *, norm, random_start, seed, unit_start):
    """The starting perturbation: ``unit_start`` scaled by eps, a random point, or zero."""
    if unit_start is not None:  # a fixed start in the unit ball, scaled by eps
        return unit_start * eps_t * ones
    if not random_start:
        return torch.zeros_like(x)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(seed))
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps_t * ones
    # uniform in the ball of the free (masked) coordinates: a normal vector normalised gives
    # the direction, eps * U^(1/d) the radius (d = number of free coordinates)
    g = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * ones
    d = (ones.flatten(1).sum(1) * x.shape[1]).clamp_min(1).view(-1, 1, 1, 1)
    u = torch.rand((len(x), 1, 1, 1), generator=gen, device=x.device, dtype=x.dtype)
    return g / _l2(g).clamp_min(1e-12) * u.pow(1 / d) * eps_t


def pgd_steps(
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
    """The PGD iterations on checked inputs (model in eval mode, x, y, mask on its device)."""
    n = len(x)
    eps_t = per_sample(eps, n, x)
    alpha = 2.5 * eps_t / steps if step_size is None else per_sample(step_size, n, x)
    ones = torch.ones_like(x[:, :1]) if mask is None else mask.expand(n, 1, *x.shape[-2:])
    delta = _pgd_start(
        x, eps_t, ones, norm=norm, random_start=random_start, seed=seed, unit_start=unit_start
    )
    for t in range(steps):
        if t > 0 or unit_start is not None or random_start:
            # keep the perturbation feasible: x + delta inside [0, 1]
            delta = (x + delta).clamp(0, 1) - x
        grad, _ = input_gradient(model, (x + delta).clamp(0, 1), y, loss=loss, targeted=targeted)
        if norm == "linf":
            delta = delta + alpha * (grad.sign() * ones)
            delta = torch.maximum(torch.minimum(delta, eps_t), -eps_t)
        else:
            grad = grad * ones
            delta = delta + alpha * grad / _l2(grad).clamp_min(1e-12)
            delta = delta * ones
            delta = delta * (eps_t / _l2(delta).clamp_min(1e-12)).clamp(max=1)
    x_adv = (x + delta).clamp(0, 1)
    if mask is not None:
        x_adv = torch.where(ones > 0, x_adv, x)
    return x_adv.detach()


# The fixed-budget attacks by name: ``attack(model, x, y, *, eps, mask=None, ...) -> x_adv``.
ATTACKS = {"fgsm": fgsm, "pgd": pgd}


def fgsm_direction(
    model: nn.Module, x: torch.Tensor, y, *, mask=None, batch_size: int = 64
) -> torch.Tensor:
    """``sign(grad CE)`` (times the mask): ``clip(x + eps * d, 0, 1)`` is FGSM at any eps."""
    check_images(x)
    device = model_device(model)
    xd = x.detach().to(device)
    y = as_labels(y, len(xd), device)
    with eval_mode(model):
        d, _ = directions(model, xd, y, batch_size)
    m = as_mask(mask, xd)
    return (d if m is None else d * m).to(x.device)


# --------------------------------------------------------------------------------------------
# robust accuracy per epsilon
# --------------------------------------------------------------------------------------------
def _sweep_fgsm(model, x, y, epsilons, batch_size, mask=None, **unknown):
    """Correct counts per epsilon from ONE gradient sign per image, every (epsilon, image) pair
    packed into forwards of batch_size images."""
    if unknown:
        raise ValueError(f"the FGSM sweep takes only mask=, got {sorted(unknown)}")
    d, _ = directions(model, x, y, batch_size)
    m = as_mask(mask, x)
    if m is not None:
        d = d * m
    n = len(x)
    eps_all = torch.tensor(epsilons, dtype=x.dtype, device=x.device).repeat_interleave(n)
    img_all = torch.arange(n, device=x.device).repeat(len(epsilons))
    hits = []
    with torch.no_grad():
        for e, i in zip(eps_all.split(batch_size), img_all.split(batch_size)):
            xe = (x[i] + e.view(-1, 1, 1, 1) * d[i]).clamp(0, 1)
            hits.append(model(xe).argmax(1) == y[i])
    return torch.cat(hits).view(len(epsilons), n).sum(1).tolist()


def _sweep_attack(attack):
    """Correct counts per epsilon by running ``attack`` at each epsilon, chunk by chunk."""

    def sweep(model, x, y, epsilons, batch_size, **attack_kw):
        correct = []
        for e in epsilons:
            n_ok = 0
            for xs, ys in zip(x.split(batch_size), y.split(batch_size)):
                xa = attack(model, xs, ys, eps=e, **attack_kw)
                n_ok += int((forward(model, xa, batch_size).argmax(1) == ys).sum())
            correct.append(n_ok)
        return correct

    return sweep


# Sweeps faster than running the attack at every epsilon (the others use _sweep_attack).
_FAST_SWEEPS = {"fgsm": _sweep_fgsm}


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
    """Robust accuracy of ``model`` under ``attack`` (a name in :data:`ATTACKS`) for every
    epsilon in ``epsilons``; an unknown name is refused.

    FGSM computes one gradient sign per image once (one forward+backward per chunk of
    ``batch_size``) and evaluates ``clip(x + eps * sign, 0, 1)`` for every epsilon in batched
    forwards. Any other attack (PGD) runs per epsilon with ``attack_kw``. Returns one row per
    epsilon: ``epsilon``, ``accuracy``, ``n_correct``, ``n``.
    """
    check_images(x)
    epsilons = [float(e) for e in np.atleast_1d(np.asarray(epsilons, dtype=float))]
    for e in epsilons:
        check_eps(e, "every epsilon")
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; expected one of {', '.join(ATTACKS)}")
    sweep = _FAST_SWEEPS.get(attack) or _sweep_attack(ATTACKS[attack])
    device = model_device(model)
    xd = x.detach().to(device)
    y = as_labels(y, len(xd), device)
    with eval_mode(model):
        correct = sweep(model, xd, y, epsilons, batch_size, **attack_kw)
    n = len(xd)
    return pd.DataFrame(
        {"epsilon": epsilons, "accuracy": [c / n for c in correct], "n_correct": correct, "n": n}
    )


# --------------------------------------------------------------------------------------------
# the targeted iterative attack, stopped at the target
# --------------------------------------------------------------------------------------------
@dataclass
class FoolingResult:
    """What :func:`iterative_targeted` found, one entry per image.

    ``steps``: steps taken until the target was first predicted (with the asked confidence;
    ``max_steps`` when never);
    ``linf``/``l2``: measured norms of ``x_adv - x``; ``target_prob``: softmax probability of
    the target at ``x_adv``; ``original_pred``/``original_prob``: the model's class for ``x``
    and its probability.
    """

    x_adv: torch.Tensor
    reached: torch.Tensor
    steps: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    target_prob: torch.Tensor
    original_pred: torch.Tensor
    target: torch.Tensor
    original_prob: torch.Tensor


def _targeted_step(x_adv, grad, norm: str, step_size: float) -> torch.Tensor:
    """One step DOWN the target's cross-entropy, clipped to [0, 1]."""
    if norm == "linf":
        direction = grad.sign()
    else:
        length = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        direction = grad / length.view(-1, 1, 1, 1)
    return (x_adv - step_size * direction).clamp(0, 1)


def _random_start(x0, norm: str, step_size: float, seed) -> torch.Tensor:
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    noise = torch.empty(x0.shape).uniform_(-1, 1, generator=g).to(x0.device)
    if norm == "l2":
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x0 + step_size * noise).clamp(0, 1)


def iterative_targeted(
    model: nn.Module,
    x: torch.Tensor,
    target,
    *,
    norm: str = "linf",
    step_size: float | None = None,
    max_steps: int = 200,
    confidence: float = 0.0,
    seed: int | None = None,
    random_start: bool = False,
) -> FoolingResult:
    """Make ``model`` predict ``target`` (int or LongTensor[N]) with a small change of ``x``:
    signed-gradient (L-inf) or normalised-gradient (L2) steps down the target's cross-entropy,
    clipped to [0, 1], STOPPED for each image at the first step where the prediction is the
    target (the iterative method of Kurakin, Goodfellow & Bengio 2017, with early stopping
    instead of an epsilon ball). The budget is ``max_steps`` steps of ``step_size``.

    Each step: one forward of the images still searching; those predicted as the target are
    frozen (their ``steps`` is the step count so far), the others take a step of ``step_size``
    (default 1/255 for ``"linf"``; for ``"l2"`` the L2 length of a 1/255 L-inf step divided by
    16, i.e. ``sqrt(C*H*W) / 4080``: 0.095 at 224 px). One forward+backward per step.
    ``confidence`` > 0 keeps going until the target is predicted with at least that softmax
    probability (a confident answer rather than a bare flip).
    ``random_start`` (off: the change should be minimal) starts within one step of ``x``,
    drawn from ``seed``; without it the method is deterministic and ``seed`` is unused.
    """
    _check_targeted_args(x, norm, confidence, max_steps)
    device = model_device(model)
    x0 = x.detach().to(device)
    target = as_labels(target, len(x0), device, name="targets")
    if step_size is None:
        step_size = 1 / 255 if norm == "linf" else math.sqrt(x0[0].numel()) / (255 * 16)
    x_adv = _random_start(x0, norm, step_size, seed) if random_start else x0.clone()
    with eval_mode(model):
        found = _step_until_target(
            model, x0, x_adv, target, norm=norm, step_size=step_size, max_steps=int(max_steps),
            confidence=confidence, random_start=random_start,
        )  # fmt: skip
    delta = (x_adv - x0).flatten(1)
    return FoolingResult(
        x_adv=x_adv.to(x.device),
        reached=found["reached"],
        steps=found["steps"],
        linf=delta.abs().amax(1),
        l2=delta.norm(dim=1),
        target_prob=found["prob"],
        original_pred=found["original"],
        target=target,
        original_prob=found["original_prob"],
    )


def _check_targeted_args(x, norm, confidence, max_steps) -> None:
    check_images(x)
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; expected 'linf' or 'l2'")
    if not 0 <= confidence < 1:
        raise ValueError(f"confidence must be in [0, 1), got {confidence!r}")
    if int(max_steps) != max_steps or max_steps < 0:
        raise ValueError(f"max_steps must be an integer >= 0, got {max_steps!r}")


def _step_until_target(
    model, x0, x_adv, target, *, norm, step_size, max_steps, confidence, random_start
) -> dict:
    """The steps of :func:`iterative_targeted` (model in eval mode), changing ``x_adv`` in
    place: each step one forward of the images still searching; those predicted as ``target``
    (with ``confidence``) are frozen, the others step down the target's cross-entropy. Returns
    per image ``reached``, ``steps``, ``prob`` (the target's probability at the last forward),
    ``original`` and ``original_prob`` (the class predicted for ``x0`` and its probability)."""
    n, device = len(x0), x0.device
    steps = torch.full((n,), max_steps, dtype=torch.long, device=device)
    reached = torch.zeros(n, dtype=torch.bool, device=device)
    prob = torch.zeros(n, device=device)
    original = torch.zeros(n, dtype=torch.long, device=device)
    original_prob = torch.zeros(n, device=device)
    if random_start:  # what the model said about the image itself, not the jittered start
        with torch.no_grad():
            original_prob, original = model(x0).softmax(1).max(1)
    for t in range(max_steps + 1):
        idx = (~reached).nonzero()[:, 0]
        if len(idx) == 0:
            break
        xa = x_adv[idx].requires_grad_(True)
        logits = model(xa)
        if t == 0 and not random_start:
            original_prob, original = logits.detach().softmax(1).max(1)
        prob[idx] = logits.detach().softmax(1).gather(1, target[idx, None])[:, 0]
        hit = (logits.argmax(1) == target[idx]) & (prob[idx] >= confidence)
        reached[idx[hit]], steps[idx[hit]] = True, t
        if t == max_steps or bool(hit.all()):
            break
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, target[idx], reduction="sum"), xa)
        keep = ~hit  # frozen images do not move
        x_adv[idx[keep]] = _targeted_step(xa.detach()[keep], grad[keep], norm, step_size)
    return {
        "reached": reached,
        "steps": steps,
        "prob": prob,
        "original": original,
        "original_prob": original_prob,
    }
