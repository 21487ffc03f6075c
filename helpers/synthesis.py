"""Images made by the model's gradients: fooling images and class visualisations.

Every image is float in [0, 1], NCHW; the model normalises inside (its first layer).

``fool(model, x, target, *, norm="linf", ...) -> FoolingResult``
    The smallest change a plain iterative targeted attack needs to make the model say
    ``target``: signed-gradient (L-inf) or normalised-gradient (L2) steps down the target's
    cross-entropy, clipped to [0, 1], and STOPPED for each image at the first step where the
    prediction is the target (the iterative method of Kurakin, Goodfellow & Bengio 2017,
    "Adversarial examples in the physical world", with early stopping instead of an epsilon
    ball; Szegedy et al. 2014, "Intriguing properties of neural networks", for the idea).
    ``magnified_difference`` maps the (tiny) change to a visible image.

``visualize_class(model, targets, *, size=128, ...) -> Tensor[N, 3, size, size]``
    Gradient ascent on the class score (the logit, not the softmax: Simonyan, Vedaldi &
    Zisserman 2014, "Deep Inside Convolutional Networks") with the regularisers of Yosinski et
    al. 2015 ("Understanding Neural Networks Through Deep Visualization"): L2 decay towards grey,
    periodic Gaussian blur, random jitter, plus small random scaling (transformation robustness,
    Olah, Mordvintsev & Schubert 2017, "Feature Visualization"). ``class_scores`` gives the
    final logits and softmax probabilities of the targets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attacks import eval_mode

__all__ = ["FoolingResult", "fool", "magnified_difference", "visualize_class", "class_scores"]


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _as_targets(target, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"got {t.numel()} targets for {n} images; expected one or one per image")
    return t


def _check_images(x) -> None:
    if not torch.is_tensor(x) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError("x must be a float tensor [N, C, H, W] of images in [0, 1], got "
                         f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")


# --------------------------------------------------------------------------------------------
# fooling images
# --------------------------------------------------------------------------------------------
@dataclass
class FoolingResult:
    """What :func:`fool` found, one entry per image.

    ``steps``: steps taken until the target was first predicted (``max_steps`` when never);
    ``linf``/``l2``: measured norms of ``x_adv - x``; ``target_prob``: softmax probability of
    the target at ``x_adv``; ``original_pred``: the model's class for ``x``.
    """

    x_adv: torch.Tensor
    reached: torch.Tensor
    steps: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    target_prob: torch.Tensor
    original_pred: torch.Tensor
    target: torch.Tensor


def _fool_step(x_adv, grad, norm: str, step_size: float) -> torch.Tensor:
    """One step DOWN the target's cross-entropy, clipped to [0, 1]."""
    if norm == "linf":
        direction = grad.sign()
    else:
        length = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        direction = grad / length.view(-1, 1, 1, 1)
    return (x_adv - step_size * direction).clamp(0, 1)


def fool(model: nn.Module, x: torch.Tensor, target, *, norm: str = "linf",
         step_size: float | None = None, max_steps: int = 200, seed: int | None = None,
         random_start: bool = False) -> FoolingResult:
    """Make ``model`` predict ``target`` (int or LongTensor[N]) with a small change of ``x``.

    Each step: one forward of the images still searching; those predicted as the target are
    frozen (their ``steps`` is the step count so far), the others take a step of ``step_size``
    (default 1/255 for ``"linf"``; for ``"l2"`` the L2 length of a 1/255 L-inf step divided by
    16, i.e. ``sqrt(C*H*W) / 4080``: 0.095 at 224 px). One forward+backward per step.
    ``random_start`` (off: the change should be minimal) starts within one step of ``x``,
    drawn from ``seed``; without it the method is deterministic and ``seed`` is unused.
    """
    _check_images(x)
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; expected 'linf' or 'l2'")
    if int(max_steps) != max_steps or max_steps < 0:
        raise ValueError(f"max_steps must be an integer >= 0, got {max_steps!r}")
    device = _device_of(model)
    x0 = x.detach().to(device)
    n = len(x0)
    target = _as_targets(target, n, device)
    if step_size is None:
        step_size = 1 / 255 if norm == "linf" else math.sqrt(x0[0].numel()) / (255 * 16)
    x_adv = _random_start(x0, norm, step_size, seed) if random_start else x0.clone()
    steps = torch.full((n,), int(max_steps), dtype=torch.long, device=device)
    reached = torch.zeros(n, dtype=torch.bool, device=device)
    prob = torch.zeros(n, device=device)
    original = torch.zeros(n, dtype=torch.long, device=device)
    with eval_mode(model):
        for t in range(int(max_steps) + 1):
            idx = (~reached).nonzero()[:, 0]
            if len(idx) == 0:
                break
            xa = x_adv[idx].requires_grad_(True)
            logits = model(xa)
            if t == 0:
                original = logits.argmax(1).detach()
            prob[idx] = logits.detach().softmax(1).gather(1, target[idx, None])[:, 0]
            hit = logits.argmax(1) == target[idx]
            reached[idx[hit]], steps[idx[hit]] = True, t
            if t == max_steps or bool(hit.all()):
                break
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, target[idx], reduction="sum"), xa)
            keep = ~hit   # frozen images do not move
            x_adv[idx[keep]] = _fool_step(xa.detach()[keep], grad[keep], norm, step_size)
    delta = (x_adv - x0).flatten(1)
    return FoolingResult(x_adv=x_adv.to(x.device), reached=reached, steps=steps,
                         linf=delta.abs().amax(1), l2=delta.norm(dim=1), target_prob=prob,
                         original_pred=original, target=target)


def _random_start(x0, norm: str, step_size: float, seed) -> torch.Tensor:
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    noise = torch.empty(x0.shape).uniform_(-1, 1, generator=g).to(x0.device)
    if norm == "l2":
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x0 + step_size * noise).clamp(0, 1)


def magnified_difference(x: torch.Tensor, x_adv: torch.Tensor, *, gain=None) -> torch.Tensor:
    """``0.5 + gain * (x_adv - x)`` clipped to [0, 1]: the change made visible.

    ``gain=None`` picks, per image, the gain that maps the largest |change| to 0.5 (so it shows
    as 0 or 1); an image with no change is flat 0.5 grey. A number (or one per image) fixes it,
    e.g. to compare images on one scale.
    """
    delta = (x_adv - x).detach()
    if gain is None:
        peak = delta.flatten(1).abs().amax(1) if delta.ndim == 4 else delta.abs().amax().reshape(1)
        gain = torch.where(peak > 0, 0.5 / peak.clamp_min(1e-30), torch.zeros_like(peak))
    gain = torch.as_tensor(gain, dtype=delta.dtype, device=delta.device)
    if gain.ndim == 1 and delta.ndim == 4:
        gain = gain.view(-1, 1, 1, 1)
    return (0.5 + gain * delta).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# class visualisation
# --------------------------------------------------------------------------------------------
def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel (radius 3 sigma, reflect padding)."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = (k / k.sum()).repeat(x.shape[1], 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(-1, 1, 1, 2 * r + 1), groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(-1, 1, 2 * r + 1, 1), groups=x.shape[1])


def _transform(x: torch.Tensor, jitter: int, scale: float, g: torch.Generator) -> torch.Tensor:
    """Random roll by up to ``jitter`` px, then random zoom in [1/(1+scale), 1+scale]
    (Yosinski et al. 2015 jitter; Olah et al. 2017 transformation robustness)."""
    if jitter > 0:
        dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if scale > 0:
        s = math.exp(math.log1p(scale) * (2 * torch.rand((), generator=g).item() - 1))
        theta = torch.tensor([[1 / s, 0, 0], [0, 1 / s, 0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x


def _initial_image(init, n: int, size: int, g: torch.Generator, device) -> torch.Tensor:
    if torch.is_tensor(init):
        x = init.detach().float()
        x = (x[None] if x.ndim == 3 else x).expand(n, -1, -1, -1)
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).to(device)
    if init not in ("noise", "grey"):
        raise ValueError(f"unknown init {init!r}; expected 'noise', 'grey' or an image tensor")
    noise = 0.02 * torch.randn((n, 3, size, size), generator=g) if init == "noise" else 0
    return (0.5 + noise + torch.zeros(n, 3, size, size)).clamp(0, 1).to(device)


def visualize_class(model: nn.Module, targets, *, size: int = 128, steps: int = 100, lr: float = 0.05,
                    l2_decay: float = 1e-3, blur_every: int = 2, blur_sigma: float = 1.0,
                    jitter: int = 16, scale: float = 0.15, seed: int = 0, init="noise",
                    progress: bool = True) -> torch.Tensor:
    """Images in [0, 1] that maximise the score (logit) of each class in ``targets``.

    Simonyan et al. 2014: gradient ascent on the pre-softmax class score from a small-noise
    grey image (``init="noise"``; ``"grey"`` or an image tensor also work). Each step, on all
    targets at once: the image is jittered (roll by up to ``jitter`` px) and zoomed by up to
    ``1 + scale`` (0 disables), the score gradient is normalised per image to a mean absolute
    value of 1 and added with step ``lr`` (in pixel units); then, as in Yosinski et al. 2015,
    L2 decay pulls it towards grey (``x <- 0.5 + (1 - l2_decay)(x - 0.5)``), every
    ``blur_every`` steps a Gaussian blur of ``blur_sigma`` px (decaying linearly to half by the
    end) removes high frequencies, and the image is clipped to [0, 1] (pixel-space
    parametrisation: the regularisers act on pixels as in the paper, and no sigmoid flattens
    the gradient of saturated colours). Deterministic for a ``seed``.

    Defaults, tuned by eye on ImageNet EfficientNet-Lite0 at 128 px: Yosinski's decay 1e-4 and
    blur 0.5 px every 4 steps left high-frequency noise with no visible object; blur 1 px every
    2 steps, decay 1e-3, jitter 16 px and zoom up to 15 % give the classes' colours and coarse
    shapes (a volcano's cone, a pizza's disc) in 100 steps (about 0.35 CPU-s a step for 6
    classes at 128 px).
    """
    from tqdm.auto import trange

    device = _device_of(model)
    targets = torch.as_tensor(targets, device=device).long().reshape(-1)
    g = torch.Generator().manual_seed(int(seed))
    x = _initial_image(init, len(targets), size, g, device)
    with eval_mode(model):
        for t in trange(int(steps), disable=not progress, desc="class visualisation"):
            x.requires_grad_(True)
            score = model(_transform(x, jitter, scale, g)).gather(1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(score, x)
            with torch.no_grad():
                grad = grad / grad.flatten(1).abs().mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                x = 0.5 + (1 - l2_decay) * (x + lr * grad - 0.5)
                if blur_every and (t + 1) % blur_every == 0:
                    x = _gaussian_blur(x, blur_sigma * (1 - 0.5 * t / max(steps - 1, 1)))
                x = x.clamp(0, 1)
    return x.detach()


@torch.no_grad()
def class_scores(model: nn.Module, x: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit, softmax probability) of each image's target class, model in eval mode."""
    device = _device_of(model)
    targets = _as_targets(targets, len(x), device)
    with eval_mode(model):
        logits = model(x.to(device))
    return logits.gather(1, targets[:, None])[:, 0], logits.softmax(1).gather(1, targets[:, None])[:, 0]
