"""Images made by the model's gradients: fooling images and class visualisations.

Every image is float in [0, 1], NCHW; the model normalises inside (its first layer).

``fool(model, x, target, *, norm="linf", ...) -> FoolingResult``
    The smallest change a plain iterative targeted attack needs to make the model say
    ``target`` (:func:`helpers.attacks.iterative_targeted`): signed-gradient (L-inf) or
    normalised-gradient (L2) steps down the target's cross-entropy, clipped to [0, 1], and
    STOPPED for each image at the first step where the prediction is the target (the iterative
    method of Kurakin, Goodfellow & Bengio 2017, "Adversarial examples in the physical world",
    with early stopping instead of an epsilon ball; Szegedy et al. 2014, "Intriguing properties
    of neural networks", for the idea).
    ``magnified_difference`` maps the (tiny) change to a visible image.

``visualize_class(model, targets, *, param="pixel", size=128, ...) -> Tensor[N, 3, size, size]``
    Gradient ascent on the class score (the logit, not the softmax: Simonyan, Vedaldi &
    Zisserman 2014, "Deep Inside Convolutional Networks"). ``param="pixel"`` ascends the pixels
    with the regularisers of Yosinski et al. 2015 ("Understanding Neural Networks Through Deep
    Visualization"): L2 decay towards grey, periodic Gaussian blur, random jitter, plus small
    random scaling (transformation robustness, Olah, Mordvintsev & Schubert 2017, "Feature
    Visualization"). ``param="fourier"`` ascends a frequency-scaled Fourier spectrum in
    decorrelated colour instead (Olah et al. 2017; Mordvintsev et al. 2018, "Differentiable
    Image Parameterizations"; see :func:`fourier_image`). ``class_scores`` gives the final
    logits and softmax probabilities of the targets, ``visualization_table`` those and what the
    model predicts for each image.

    Tuned by eye on ImageNet EfficientNet-Lite0 at 128 px. ``param="pixel"``: Yosinski's decay
    1e-4 and blur 0.5 px every 4 steps left high-frequency noise with no visible object; blur
    1 px every 2 steps, decay 1e-3, jitter 16 px and zoom up to 15 % (the defaults) give colours
    and coarse shapes. ``param="fourier"``: 200 steps with jitter 16 px, zoom 20 % and rotation
    15 degrees draw recognisable parts in natural colours (a strawberry's seeds and leaves, a
    ladybird's spots, zebra stripes); the pixel version with the same transforms gives colours
    and coarse shapes under saturated pixel noise (notebook 07). One forward+backward per step
    for all targets (about 0.07 s a step for 8 classes at 128 px on 2 CPU cores).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers import folding
from helpers.attacks import FoolingResult, iterative_targeted
from helpers.plumbing import as_targets, eval_mode, gaussian_blur, model_device

__all__ = [
    "FoolingResult",
    "fool",
    "fooling_table",
    "magnified_difference",
    "visualize_class",
    "class_scores",
    "visualization_table",
    "fourier_image",
    "random_spectrum",
]


# --------------------------------------------------------------------------------------------
# fooling images
# --------------------------------------------------------------------------------------------
def fool(
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
    :func:`helpers.attacks.iterative_targeted` (same arguments, same result).

    Each step: one forward of the images still searching; those predicted as the target are
    frozen (their ``steps`` is the step count so far), the others take a step of ``step_size``
    (default 1/255 for ``"linf"``; for ``"l2"`` the L2 length of a 1/255 L-inf step divided by
    16, i.e. ``sqrt(C*H*W) / 4080``: 0.095 at 224 px). One forward+backward per step.
    ``confidence`` > 0 keeps going until the target is predicted with at least that softmax
    probability (a confident answer rather than a bare flip).
    ``random_start`` (off: the change should be minimal) starts within one step of ``x``,
    drawn from ``seed``; without it the method is deterministic and ``seed`` is unused.
    """
    return iterative_targeted(
        model,
        x,
        target,
        norm=norm,
        step_size=step_size,
        max_steps=max_steps,
        confidence=confidence,
        seed=seed,
        random_start=random_start,
    )


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


def fooling_table(result: FoolingResult, class_names, *, names=None):
    """One row per image of a :func:`fool` result: what the model said (and how sure), the
    target, whether and after how many steps it was reached, the size of the change (L-inf and
    L2 in [0, 1] pixel units; ``linf_255``: L-inf in grey levels of 255; ``rms_255``: the
    root-mean-square change per pixel value in grey levels) and the target's probability after."""
    import pandas as pd

    n = len(result.steps)
    per_value = result.x_adv[0].numel()
    return pd.DataFrame(
        {
            "image": list(names) if names is not None else list(range(n)),
            "model_said": [class_names[int(k)] for k in result.original_pred],
            "prob_before": result.original_prob.double().cpu().numpy(),
            "target": [class_names[int(k)] for k in result.target],
            "reached": result.reached.cpu().numpy(),
            "steps": result.steps.cpu().numpy(),
            "linf": result.linf.double().cpu().numpy(),
            "linf_255": (255 * result.linf).double().cpu().numpy(),
            "l2": result.l2.double().cpu().numpy(),
            "rms_255": (255 * result.l2 / math.sqrt(per_value)).double().cpu().numpy(),
            "target_prob": result.target_prob.double().cpu().numpy(),
        }
    )


# --------------------------------------------------------------------------------------------
# class visualisation
# --------------------------------------------------------------------------------------------
def _transform(
    x: torch.Tensor, jitter: int, scale: float, g: torch.Generator, rotate: float = 0.0
) -> torch.Tensor:
    """Random roll by up to ``jitter`` px, then random zoom in [1/(1+scale), 1+scale] and
    rotation by up to ``rotate`` degrees (Yosinski et al. 2015 jitter; Olah et al. 2017
    transformation robustness)."""
    if jitter > 0:
        dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if scale > 0 or rotate > 0:
        s = (
            math.exp(math.log1p(scale) * (2 * torch.rand((), generator=g).item() - 1))
            if scale > 0
            else 1.0
        )
        a = (
            math.radians(rotate) * (2 * torch.rand((), generator=g).item() - 1)
            if rotate > 0
            else 0.0
        )
        c, si = math.cos(a) / s, math.sin(a) / s
        theta = torch.tensor([[c, -si, 0], [si, c, 0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x


# Square root of the colour covariance of ImageNet photos (Lucid's ``color_correlation_svd_sqrt``,
# Olah et al. 2017), columns scaled so the largest has length 1: the image is optimised in these
# decorrelated colour axes, so a step changes brightness and the two colour-opponent axes
# independently instead of pushing red, green and blue apart.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_SQRT = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _frequency_scale(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """1 / max(f, 1/max(h, w)) ** decay for the frequencies of ``torch.fft.rfft2`` ([h, w//2+1])."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return (fx**2 + fy**2).sqrt().clamp_min(1.0 / max(h, w)) ** -decay


def random_spectrum(n: int, size: int, *, seed: int = 0, std: float = 0.01) -> torch.Tensor:
    """A small random spectrum [n, 3, size, size//2+1, 2] (real, imaginary) for
    :func:`fourier_image`."""
    g = torch.Generator().manual_seed(int(seed))
    return std * torch.randn(n, 3, size, size // 2 + 1, 2, generator=g)


def fourier_image(spectrum: torch.Tensor, size: int, *, decay: float = 1.0) -> torch.Tensor:
    """Image [N, 3, size, size] in (0, 1) from a spectrum [N, 3, size, size//2+1, 2].

    Each coefficient is scaled by 1/frequency**``decay`` (so equal steps in every coefficient
    give an image whose spectrum falls like a natural photo's, and gradient steps favour low
    frequencies: the preconditioning of Olah et al. 2017), inverted with an orthonormal real
    FFT, divided by 4, mapped from the decorrelated colour axes to RGB and squashed by a
    sigmoid (Lucid's ``fft_image`` + ``to_valid_rgb``). A zero spectrum is flat grey 0.5.
    """
    if (
        spectrum.ndim != 5
        or spectrum.shape[1] != 3
        or spectrum.shape[-1] != 2
        or tuple(spectrum.shape[2:4]) != (size, size // 2 + 1)
    ):
        raise ValueError(
            f"spectrum must be [N, 3, {size}, {size // 2 + 1}, 2] for size {size}, "
            f"got {tuple(spectrum.shape)}"
        )
    scale = _frequency_scale(size, size, decay).to(spectrum.device)
    coeffs = torch.complex(spectrum[..., 0], spectrum[..., 1]) * scale
    decorrelated = torch.fft.irfftn(coeffs, s=(size, size), dim=(-2, -1), norm="ortho") / 4
    rgb = torch.einsum("nchw,dc->ndhw", decorrelated, _COLOR_SQRT.to(spectrum.device))
    return torch.sigmoid(rgb)


def _initial_image(init, n: int, size: int, g: torch.Generator, device) -> torch.Tensor:
    if torch.is_tensor(init):
        x = init.detach().float()
        x = (x[None] if x.ndim == 3 else x).expand(n, -1, -1, -1)
        return (
            F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            .clamp(0, 1)
            .to(device)
        )
    if init not in ("noise", "grey"):
        raise ValueError(f"unknown init {init!r}; expected 'noise', 'grey' or an image tensor")
    noise = 0.02 * torch.randn((n, 3, size, size), generator=g) if init == "noise" else 0
    return (0.5 + noise + torch.zeros(n, 3, size, size)).clamp(0, 1).to(device)


def visualize_class(
    model: nn.Module,
    targets,
    *,
    param: str = "pixel",
    size: int = 128,
    steps: int = 100,
    lr: float | None = None,
    l2_decay: float = 1e-3,
    blur_every: int = 2,
    blur_sigma: float = 1.0,
    jitter: int = 16,
    scale: float = 0.15,
    rotate: float = 0.0,
    seed: int = 0,
    init="noise",
    progress: bool = True,
) -> torch.Tensor:
    """Images in [0, 1] that maximise the score (logit) of each class in ``targets``.

    Simonyan et al. 2014: gradient ascent on the pre-softmax class score, all targets at once.
    Each step the image is jittered (roll by up to ``jitter`` px), zoomed by up to ``1 + scale``
    and rotated by up to ``rotate`` degrees (0 disables each) before the model sees it, so only
    features that survive small shifts grow. Deterministic for a ``seed``.

    ``param="pixel"`` (Yosinski et al. 2015): the pixels themselves, from a small-noise grey
    image (``init="noise"``; ``"grey"`` or an image tensor also work). The score gradient is
    normalised per image to a mean absolute value of 1 and added with step ``lr`` (default
    0.05, pixel units); then L2 decay pulls the image towards grey (``x <- 0.5 + (1 -
    l2_decay)(x - 0.5)``), every ``blur_every`` steps a Gaussian blur of ``blur_sigma`` px
    (decaying linearly to half by the end) removes high frequencies, and the image is clipped
    to [0, 1].

    ``param="fourier"`` (Olah et al. 2017; Mordvintsev et al. 2018): Adam (default ``lr`` 0.1)
    on a spectrum in decorrelated colour, shown through :func:`fourier_image`; the frequency
    scaling takes the place of blur and decay (``l2_decay``, ``blur_*`` are unused) and the
    sigmoid keeps the range. How the defaults were chosen, and the cost: the module docstring.
    """
    if param not in ("pixel", "fourier"):
        raise ValueError(f"unknown param {param!r}; expected 'pixel' or 'fourier'")
    device = model_device(model)
    probe = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    model = folding.folded(model, probe)  # same function, BatchNorm folded into the convolutions
    targets = torch.as_tensor(targets, device=device).long().reshape(-1)
    g = torch.Generator().manual_seed(int(seed))

    def target_score(x):  # the summed target logits of the randomly transformed images
        return model(_transform(x, jitter, scale, g, rotate)).gather(1, targets[:, None]).sum()

    ascent = dict(model=model, score=target_score, steps=int(steps), progress=progress)
    if param == "fourier":
        return _visualize_fourier(
            **ascent, n=len(targets), size=size, lr=lr, seed=seed, init=init, g=g, device=device
        )
    x = _initial_image(init, len(targets), size, g, device)
    return _visualize_pixels(
        **ascent, x=x, lr=lr, l2_decay=l2_decay, blur_every=blur_every, blur_sigma=blur_sigma
    )


def _ascent_steps(steps: int, progress: bool):
    from helpers.progress import trange

    return trange(steps, disable=not progress, desc="class visualisation")


def _visualize_pixels(*, model, score, steps, progress, x, lr, l2_decay, blur_every, blur_sigma):
    """``param="pixel"`` of :func:`visualize_class`: normalised gradient ascent on the pixels of
    ``x`` with L2 decay towards grey, a periodic (decaying) blur and clipping to [0, 1]."""
    lr = 0.05 if lr is None else lr
    with eval_mode(model):
        for t in _ascent_steps(steps, progress):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(score(x), x)
            with torch.no_grad():
                grad = grad / grad.flatten(1).abs().mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                x = 0.5 + (1 - l2_decay) * (x + lr * grad - 0.5)
                if blur_every and (t + 1) % blur_every == 0:
                    x = gaussian_blur(x, blur_sigma * (1 - 0.5 * t / max(steps - 1, 1)))
                x = x.clamp(0, 1)
    return x.detach()


def _visualize_fourier(*, model, score, steps, progress, n, size, lr, seed, init, g, device):
    """``param="fourier"`` of :func:`visualize_class`: Adam on a small random spectrum (drawn
    from ``seed``; the transforms' generator ``g`` is reseeded to ``seed + 1``), the image
    shown through :func:`fourier_image`."""
    if not (isinstance(init, str) and init == "noise"):
        raise ValueError(
            "param='fourier' starts from a small random spectrum; init must be 'noise'"
        )
    spectrum = random_spectrum(n, size, seed=seed).to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([spectrum], lr=0.1 if lr is None else lr)
    g.manual_seed(int(seed) + 1)  # the transforms' draws, apart from the spectrum's
    with eval_mode(model):
        for _ in _ascent_steps(steps, progress):
            x = fourier_image(spectrum, size)
            # gradient w.r.t. the spectrum only: no weight gradients
            (spectrum.grad,) = torch.autograd.grad(-score(x), spectrum)
            optimiser.step()
    with torch.no_grad():
        x = fourier_image(spectrum, size)
    return x.detach()


@torch.no_grad()
def class_scores(model: nn.Module, x: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit, softmax probability) of each image's target class, model in eval mode."""
    device = model_device(model)
    targets = as_targets(targets, len(x), device)
    with eval_mode(model):
        logits = model(x.to(device))
    return logits.gather(1, targets[:, None])[:, 0], logits.softmax(1).gather(1, targets[:, None])[
        :, 0
    ]


def visualization_table(
    model: nn.Module, x: torch.Tensor, targets, *, start: torch.Tensor | None = None
):
    """One row per visualisation: its target class, the target's logit (and, given the
    ``start`` images, the logit there), its softmax probability, and the class the model
    predicts for the image with that class's probability."""
    import pandas as pd

    names = getattr(model, "class_names", None)
    name = (lambda k: names[k]) if names is not None else str
    targets = as_targets(targets, len(x), model_device(model))
    logit, prob = class_scores(model, x, targets)
    with torch.no_grad(), eval_mode(model):
        top_prob, top = model(x.to(model_device(model))).softmax(1).max(1)
    table = {"class": [name(int(k)) for k in targets]}
    if start is not None:
        table["logit_start"] = class_scores(model, start, targets)[0].double().cpu().numpy()
    table.update(
        {
            "logit": logit.double().cpu().numpy(),
            "probability": prob.double().cpu().numpy(),
            "model_says": [name(int(k)) for k in top],
            "its_probability": top_prob.double().cpu().numpy(),
        }
    )
    return pd.DataFrame(table)
