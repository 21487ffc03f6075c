"""Natural corruptions with a continuous severity, and the smallest severity that flips each image.

The corruptions are those of ImageNet-C (Hendrycks & Dietterich 2019, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", ICLR; the parameters are those of
``ImageNet-C/create_c/make_imagenet_c.py`` in github.com/hendrycks/robustness), with ONE
severity ``s`` in [0, 1] instead of five levels: ``s = 0`` is the image unchanged (exactly),
``s = 1`` is ImageNet-C's severity-5 parameter, and in between the parameter goes linearly from
its identity value to the severity-5 value. ImageNet-C's levels 1-5 are then the severities in
``Corruption.levels`` (only brightness has them at 0.2, 0.4, ... 1.0):

==============  ====================================  ===========  ==========================
name            parameter at s (identity -> sev. 5)   continuous   ImageNet-C levels 1-5 at s
==============  ====================================  ===========  ==========================
gaussian_noise  sigma 0.38 s                          yes          .21 .32 .47 .68 1
gaussian_blur   sigma 6 s (x side/224)                yes          .17 .33 .50 .67 1
motion_blur     sigma 15 s (x side/224), radius 20    yes          .20 .33 .53 .80 1
jpeg            quality round(100 - 93 s)             no (steps)   .81 .88 .91 .97 1
brightness      HSV value + 0.5 s                     yes          .20 .40 .60 .80 1
contrast        deviation from the mean x (1-0.95 s)  yes          .63 .74 .84 .95 1
fog             fog thickness 3 s, decay 1.4          yes          .50 .67 .83 .83 1
pixelate        side x (1 - 0.75 s), box filter       no (steps)   .53 .67 .80 .93 1
==============  ====================================  ===========  ==========================

Random patterns (the noise, the fog, the motion blur's angle) are drawn ONCE per image from
its own seed (``seeds[i]``, default ``seed + i``) and scaled by the severity, so the corrupted
image is a deterministic function of (image, seed, severity), the same alone or in any batch,
and continuous in the severity where the table says so. Outputs are clipped to [0, 1].

Where this differs from ImageNet-C (which draws new noise per call and has 224 px images): the
blurs scale their pixel sizes with ``min(H, W) / 224``; gaussian_blur uses skimage's edge mode
and radius (equal to ``skimage.filters.gaussian`` at s = 1); motion_blur is a one-sided
Gaussian streak with offsets rounded to whole pixels, a hand-made stand-in for ImageMagick's
``MotionBlurImage``, with the radius of severity 5 at every s (only sigma grows); fog uses a
seeded fractal with the plasma fractal's decay per octave (not its diamond-square recursion),
and keeps severity 5's decay 1.4 at every s (ImageNet-C's levels 1-4 also change the decay,
2 to 1.5: only their thickness is matched); jpeg quantises to 8 bits at every s > 0 (quality
100 is not lossless), so it jumps at 0.

:func:`minimal_severity` finds, per image, the smallest severity that flips the model's
prediction with the grid-then-root search of :func:`helpers.attacks.minimal_epsilon`
(:func:`helpers.attacks.search.minimal_parameter`): the linear grid ``k / grid`` walked upwards
to each image's first wrong point, then bisection of that bracket to ``tol``, at most
``grid + ceil(log2(1 / (grid tol)))`` forwards per image besides the clean one. Bisection is
the default for every corruption: JPEG's and pixelate's margins jump between steps, so a secant
estimate is no better than the midpoint, and for the others the bracket (about 0.125 wide by
default) needs only ``ceil(log2(0.125 / tol))`` = 3 halvings to tol 0.02. ``method="illinois"``
is allowed for the continuous ones (the bracket invariant, right at lo and wrong at hi, is
checked by predictions either way, so the answer is correct to tol in both).
:func:`severity_table` does it for every corruption, :func:`accuracy_at` gives accuracy at
fixed severities (for accuracy-vs-severity curves).

Cost (``benchmarks/natural_corruptions.py``; fine-tuned Lite0 at 128 px, 2-core CPU): about
7.5 ms per image and forward, corrupting included. :func:`severity_table` of 300 test images x
8 corruptions took 144 s at the defaults (grid 8, tol 0.02: 7.7 forwards per image and
corruption) and 80 s at grid 4, tol 0.05 (4.5), before the probes ran the BatchNorm-folded copy
(helpers.folding); with it, notebook 12's search at grid 4, tol 0.05 (the shared parameters of
helpers.setup.NATURAL) took 37 s on an idle machine.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import folding
from .attacks._base import forward
from .attacks.search import minimal_parameter
from .plumbing import as_labels, check_images, eval_mode, model_device
from .progress import tqdm

__all__ = [
    "CORRUPTIONS",
    "Corruption",
    "corrupt",
    "get_corruption",
    "minimal_severity",
    "severity_table",
    "accuracy_at",
]


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``function(x, s, pattern) -> images`` (``x`` [N, 3, H, W] in [0, 1],
    ``s`` [N] severities in x's dtype, ``pattern`` the per-image random pattern from
    ``pattern(x, seeds)``, or None); ``imagenet_c``: its ImageNet-C counterpart and what
    severity 1 matches; ``continuous``: False where the image changes in steps of severity;
    ``levels``: the severities that reach ImageNet-C's severity 1-5 parameters."""

    name: str
    function: Callable
    label: str
    imagenet_c: str
    continuous: bool
    levels: tuple[float, ...]
    pattern: Callable | None = None


def _side(x: torch.Tensor) -> int:
    return min(x.shape[-2:])


def _generators(seeds):
    for s in seeds:
        yield torch.Generator().manual_seed(int(s))


def _noise_pattern(x, seeds):
    """One standard normal draw [3, H, W] per image (on the CPU, so every device agrees)."""
    z = [torch.randn(x.shape[1:], generator=g) for g in _generators(seeds)]
    return torch.stack(z).to(device=x.device, dtype=x.dtype) if z else torch.zeros_like(x)


def _gaussian_noise(x, s, z):
    """``x + 0.38 s z`` (ImageNet-C's severity 5: sigma 0.38 on [0, 1] pixels)."""
    return x + (0.38 * s).view(-1, 1, 1, 1) * z


def _gaussian_blur(x, s, _):
    """Gaussian blur of sigma ``6 s side / 224`` (ImageNet-C's severity 5: sigma 6 at 224 px,
    skimage's ``gaussian``: edge pixels repeated, radius ``int(4 sigma + 0.5)``). The radius
    is that of s = 1 for every s, so the kernel, hence the image, is continuous in s."""
    n, c, h, w = x.shape
    sigma_max = 6.0 * _side(x) / 224
    r = int(4 * sigma_max + 0.5)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    sigma = (sigma_max * s).clamp_min(1e-6)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [N * C, 2r + 1]
    out = x.reshape(1, n * c, h, w)
    out = F.conv2d(
        F.pad(out, (r, r, 0, 0), mode="replicate"), k.view(n * c, 1, 1, -1), groups=n * c
    )
    out = F.conv2d(
        F.pad(out, (0, 0, r, r), mode="replicate"), k.view(n * c, 1, -1, 1), groups=n * c
    )
    return out.view(n, c, h, w)


def _angle_pattern(x, seeds):
    """One motion direction per image, uniform in [-45, 45] degrees (as ImageNet-C), radians."""
    a = [(torch.rand((), generator=g, dtype=torch.float64) * 90 - 45) for g in _generators(seeds)]
    return torch.deg2rad(torch.stack(a)).to(x.device) if a else torch.zeros(0, device=x.device)


def _motion_blur(x, s, angle):
    """A one-sided Gaussian streak along each image's angle: taps k = 0 .. 40 side/224 pixels
    (ImageMagick's motion blur of radius 20, as ImageNet-C's severity 5), weights
    ``exp(-k^2 / 2 sigma^2)``, sigma ``15 s side / 224``, offsets rounded to whole pixels,
    edges repeated. Only sigma grows with s, so the image is continuous in s."""
    n, c, h, w = x.shape
    taps = max(1, round(40 * _side(x) / 224))
    k = torch.arange(taps + 1, device=x.device, dtype=torch.float64)
    sigma = (15.0 * _side(x) / 224 * s.double()).clamp_min(1e-6)
    wts = torch.exp(-0.5 * (k[None] / sigma[:, None]) ** 2)
    wts = (wts / wts.sum(1, keepdim=True)).to(x.dtype)  # [N, taps + 1]
    dx = (k[None] * torch.cos(angle)[:, None]).round().long()
    dy = (k[None] * torch.sin(angle)[:, None]).round().long()
    pad = F.pad(x, (taps, taps, taps, taps), mode="replicate")
    out = torch.zeros_like(x)
    for i, (wi, dxi, dyi) in enumerate(zip(wts.tolist(), dx.tolist(), dy.tolist())):
        for wij, c0, r0 in zip(wi, dxi, dyi):
            if wij > 0:
                out[i].add_(
                    pad[i, :, taps + r0 : taps + r0 + h, taps + c0 : taps + c0 + w], alpha=wij
                )
    return out


def _per_image(x, s, one):
    """``one(image [3, H, W] on the CPU, severity float)`` for every image with s > 0."""
    out = x.clone()
    for i in torch.nonzero(s > 0).flatten().tolist():
        out[i] = one(x[i].detach().cpu(), float(s[i])).to(device=x.device, dtype=x.dtype)
    return out


def _jpeg_one(img, s):
    """PIL's JPEG at quality ``round(100 - 93 s)`` of the 8-bit image (ImageNet-C's severity
    5: quality 7; ``PIL.Image.save(..., "JPEG", quality=q)`` as ImageNet-C)."""
    quality = int(round(100 - 93 * s))
    arr = (img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    back = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(back).permute(2, 0, 1)


def _pixelate_one(img, s):
    """Box-filter down to ``int(side x (1 - 0.75 s))`` and back (ImageNet-C's severity 5:
    factor 0.25, ``PIL.Image.resize(..., BOX)`` both ways), on float channels (PIL mode F).
    The side is rounded down after adding 1e-4 px, so that the float32 severities of
    ImageNet-C's levels (``Corruption.levels``) give its sizes."""
    _, h, w = img.shape
    f = 1 - 0.75 * s
    small = (max(1, int(w * f + 1e-4)), max(1, int(h * f + 1e-4)))
    box = Image.Resampling.BOX
    out = [
        np.asarray(Image.fromarray(ch.numpy(), mode="F").resize(small, box).resize((w, h), box))
        for ch in img.float()
    ]
    return torch.from_numpy(np.stack(out))


def _brightness(x, s, _):
    """HSV value + 0.5 s, clipped at 1 (ImageNet-C's severity 5: +0.5). With hue and
    saturation kept, RGB scales with the value: ``x V'/V`` (black, V = 0, becomes grey V')."""
    v = x.amax(1, keepdim=True)
    v2 = (v + 0.5 * s.view(-1, 1, 1, 1)).clamp(max=1)
    return torch.where(v > 0, x * (v2 / v.clamp_min(1e-12)), v2.expand_as(x))


def _contrast(x, s, _):
    """Each channel's deviation from its mean times ``1 - 0.95 s`` (ImageNet-C's severity 5:
    0.05; its per-channel mean, not torchvision's ``adjust_contrast``'s grey mean)."""
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * (1 - 0.95 * s).view(-1, 1, 1, 1) + mean


def _fractal(h: int, w: int, gen: torch.Generator, decay: float = 1.4) -> torch.Tensor:
    """Seeded fractal noise [1, H, W] in [0, 1]: uniform random grids of 2^k + 1 points a side,
    bilinearly upsampled, octave k weighted ``decay^(-2k)``. ImageNet-C's plasma fractal
    (diamond-square) adds at each halving of scale a displacement ``wibble * U(-wibble,
    wibble)`` with ``wibble`` divided by ``decay`` per level: the same ``decay^-2`` per octave."""
    out = torch.zeros(1, 1, h, w, dtype=torch.float64)
    for k in range(max(1, math.ceil(math.log2(max(h, w))))):
        g = 2 * torch.rand(1, 1, 2**k + 1, 2**k + 1, generator=gen, dtype=torch.float64) - 1
        out += decay ** (-2 * k) * F.interpolate(
            g, size=(h, w), mode="bilinear", align_corners=True
        )
    out -= out.min()
    return (out / out.max().clamp_min(1e-12))[0]


def _fog_pattern(x, seeds):
    f = [_fractal(*x.shape[-2:], g) for g in _generators(seeds)]
    return torch.stack(f).to(device=x.device, dtype=x.dtype) if f else x[:, :1].clone()


def _fog(x, s, fractal):
    """ImageNet-C's fog with thickness ``t = 3 s``: ``(x + t P) max(x) / (max(x) + t)``, P the
    image's fractal (severity 5: t = 3, decay 1.4; here the decay stays 1.4 at every s)."""
    t = (3.0 * s).view(-1, 1, 1, 1)
    m = x.amax((1, 2, 3), keepdim=True)
    return (x + t * fractal) * m / (m + t)


def _level(p, identity, worst):
    """ImageNet-C parameters ``p`` (levels 1-5) as severities on the linear scale."""
    return tuple((v - identity) / (worst - identity) for v in p)


CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption(
            "gaussian_noise", _gaussian_noise, "Gaussian noise",
            "gaussian_noise: severity 1 = sigma 0.38 (ImageNet-C severity 5; levels .08 .12 "
            ".18 .26 .38)",
            True, _level([0.08, 0.12, 0.18, 0.26, 0.38], 0, 0.38), _noise_pattern,
        ),
        Corruption(
            "gaussian_blur", _gaussian_blur, "Gaussian blur",
            "gaussian_blur (extra set): severity 1 = sigma 6 px at 224 px, scaled with the "
            "side (ImageNet-C severity 5; levels 1 2 3 4 6)",
            True, _level([1, 2, 3, 4, 6], 0, 6),
        ),
        Corruption(
            "motion_blur", _motion_blur, "Motion blur",
            "motion_blur: severity 1 = ImageMagick radius 20, sigma 15 at 224 px, angle "
            "U(-45, 45) (ImageNet-C severity 5; sigmas 3 5 8 12 15), a one-sided Gaussian streak",
            True, _level([3, 5, 8, 12, 15], 0, 15), _angle_pattern,
        ),
        Corruption(
            "jpeg", lambda x, s, _: _per_image(x, s, _jpeg_one), "JPEG compression",
            "jpeg_compression: severity 1 = PIL quality 7 (ImageNet-C severity 5; qualities "
            "25 18 15 10 7), quality round(100 - 93 s)",
            False, _level([25, 18, 15, 10, 7], 100, 7),
        ),
        Corruption(
            "brightness", _brightness, "Brightness",
            "brightness: severity 1 = HSV value + 0.5 (ImageNet-C severity 5; .1 .2 .3 .4 .5)",
            True, _level([0.1, 0.2, 0.3, 0.4, 0.5], 0, 0.5),
        ),
        Corruption(
            "contrast", _contrast, "Contrast",
            "contrast: severity 1 = deviation from the channel mean x 0.05 (ImageNet-C severity "
            "5; .4 .3 .2 .1 .05)",
            True, _level([0.4, 0.3, 0.2, 0.1, 0.05], 1, 0.05),
        ),
        Corruption(
            "fog", _fog, "Fog",
            "fog: severity 1 = thickness 3, decay 1.4 (ImageNet-C severity 5; thickness 1.5 2 "
            "2.5 2.5 3), a seeded fractal with the plasma fractal's decay per octave",
            True, _level([1.5, 2, 2.5, 2.5, 3], 0, 3), _fog_pattern,
        ),
        Corruption(
            "pixelate", lambda x, s, _: _per_image(x, s, _pixelate_one), "Pixelate",
            "pixelate: severity 1 = box-resize to 0.25 of the side and back (ImageNet-C "
            "severity 5; .6 .5 .4 .3 .25)",
            False, _level([0.6, 0.5, 0.4, 0.3, 0.25], 1, 0.25),
        ),
    )
}  # fmt: skip


def get_corruption(name) -> Corruption:
    """The registered corruption ``name`` (a :class:`Corruption` passes through)."""
    if isinstance(name, Corruption):
        return name
    try:
        return CORRUPTIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}"
        ) from None


def _check_pixels(x) -> None:
    check_images(x, channels=(3,))
    if len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(
            f"x must hold images in [0, 1]; got values in [{float(x.min()):.4g}, "
            f"{float(x.max()):.4g}]"
        )


def _severities(severity, n: int, x: torch.Tensor) -> torch.Tensor:
    """``severity`` (a number or one per image) as a tensor [n] in x's dtype; each in [0, 1]."""
    s = torch.as_tensor(
        severity.detach().cpu() if torch.is_tensor(severity) else np.asarray(severity, float),
        dtype=torch.float64,
    )
    if s.ndim == 0:
        s = s.expand(n)
    if s.shape != (n,):
        raise ValueError(
            f"severity must be a number or one per image ([{n}]), got shape {tuple(s.shape)}"
        )
    if not bool((torch.isfinite(s) & (s >= 0) & (s <= 1)).all()):
        raise ValueError(f"severity must lie in [0, 1] (0: unchanged), got {severity!r}")
    return s.to(device=x.device, dtype=x.dtype)


def _seeds(seed: int, seeds, n: int) -> list[int]:
    """One seed per image: ``seeds`` (n integers), or ``seed + i``."""
    if seeds is None:
        return [int(seed) + i for i in range(n)]
    out = [int(v) for v in (seeds.tolist() if torch.is_tensor(seeds) else np.asarray(seeds))]
    if len(out) != n:
        raise ValueError(f"got {len(out)} seeds for {n} images; expected one per image")
    return out


def _apply(c: Corruption, x, s, pattern) -> torch.Tensor:
    """The corruption at severities ``s`` [N], clipped to [0, 1]; exactly ``x`` where s = 0."""
    out = c.function(x, s, pattern).clamp(0, 1).to(x.dtype)
    return torch.where((s == 0).view(-1, 1, 1, 1), x, out)


def _pattern(c: Corruption, x, seeds):
    return None if c.pattern is None else c.pattern(x, seeds)


def corrupt(x: torch.Tensor, name, severity, *, seed: int = 0, seeds=None) -> torch.Tensor:
    """``x`` [N, 3, H, W] in [0, 1] corrupted by ``name`` (a key of :data:`CORRUPTIONS`) at
    ``severity`` (a number or a [N] tensor, each in [0, 1]: 0 leaves the image unchanged, 1 is
    ImageNet-C's severity 5, Hendrycks & Dietterich 2019; the module docstring lists what each
    parameter is at s). Random patterns come from ``seeds[i]`` per image (default
    ``seed + i``). Returns a tensor like ``x`` (dtype, device), clipped to [0, 1]."""
    c = get_corruption(name)
    _check_pixels(x)
    s = _severities(severity, len(x), x)
    seeds = _seeds(seed, seeds, len(x))
    with torch.no_grad():
        return _apply(c, x.detach(), s, _pattern(c, x.detach(), seeds))


def _path(c: Corruption, x, pattern, bar):
    """``path(i, s)``: images x[i] corrupted at severities s (the search's path)."""

    def path(i, s):
        if bar is not None:
            bar.update(1)
        return _apply(c, x[i], s, None if pattern is None else pattern[i])

    return path


def minimal_severity(
    model: nn.Module,
    x: torch.Tensor,
    y,
    corruption,
    *,
    grid: int = 8,
    tol: float = 0.02,
    batch_size: int = 32,
    seed: int = 0,
    seeds=None,
    method: str = "bisection",
    clean_logits: torch.Tensor | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The smallest severity in (0, 1] of ``corruption`` that flips each image's prediction.

    The search of :func:`helpers.attacks.minimal_epsilon` (Hendrycks & Dietterich 2019's
    corruptions instead of an attack): ``grid`` linear severities walked upwards to each
    image's FIRST wrong one, then bisection of that bracket to ``tol`` (``method="illinois"``
    only for a ``continuous`` corruption). The severity found flips the image; one within
    ``tol`` below it does not. Returns :func:`helpers.attacks.result_frame`'s table with
    ``severity`` in place of ``epsilon`` (NaN: no flip up to 1; 0: wrong already).
    ``df.attrs``: corruption, grid, tol, method, max_severity, seed, pass totals.
    ``clean_logits``: the model's logits of ``x`` if known (``n_forward`` then leaves out
    the clean forward); ``progress``: a bar of the batched forwards.
    """
    c = get_corruption(corruption)
    _check_pixels(x)
    if method == "illinois" and not c.continuous:
        raise ValueError(f"{c.name} changes in steps of severity; use method='bisection'")
    xd = x.detach().to(model_device(model))
    y = as_labels(y, len(xd), xd.device)
    pattern = _pattern(c, xd, _seeds(seed, seeds, len(xd)))
    with tqdm(desc=c.name, unit="forward", disable=not progress) as bar:
        df = minimal_parameter(
            model,
            xd,
            y,
            _path(c, xd, pattern, bar),
            max_value=1.0,
            grid=grid,
            tol=tol,
            method=method,
            batch_size=batch_size,
            clean_logits=clean_logits,
            settings={"corruption": c.name, "max_severity": 1.0, "seed": seed},
        )
    return df.rename(columns={"epsilon": "severity"})


def _names(names) -> list[str]:
    names = list(CORRUPTIONS) if names is None else [names] if isinstance(names, str) else names
    return [get_corruption(n).name for n in names]


def severity_table(model: nn.Module, x: torch.Tensor, y, names=None, **kw) -> pd.DataFrame:
    """:func:`minimal_severity` for each corruption of ``names`` (default: all of
    :data:`CORRUPTIONS`), one table: columns ``corruption``, ``image`` (index into x), then
    the result columns. The clean forward is made once for all (``kw``: minimal_severity's;
    ``progress=True`` shows one bar per corruption). ``df.attrs[name]``: each search's attrs.
    """
    names = _names(names)
    _check_pixels(x)
    model = folding.folded(model, x)
    xd = x.detach().to(model_device(model))
    with eval_mode(model):
        clean = forward(model, xd, kw.get("batch_size", 32))
    frames, attrs = [], {}
    for name in names:
        df = minimal_severity(model, xd, y, name, clean_logits=clean, **kw)
        attrs[name] = dict(df.attrs)
        df.insert(0, "image", np.arange(len(xd)))
        df.insert(0, "corruption", name)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out.attrs.update(attrs, clean_forwards_per_image=1)
    return out


def _correct_counts(model, c: Corruption, x, y, seeds, levels, batch_size) -> np.ndarray:
    """How many images the model gets right at each of ``levels``, corrupted by ``c``."""
    correct = np.zeros(len(levels), dtype=np.int64)
    for idx in torch.arange(len(x)).split(batch_size):
        idx = idx.to(x.device)
        xb = x[idx]
        pattern = _pattern(c, xb, seeds[idx.cpu()])
        for j, s in enumerate(levels):
            xs = _apply(c, xb, _severities(s, len(xb), xb), pattern)
            correct[j] += int((model(xs).argmax(1) == y[idx]).sum())
    return correct


def accuracy_at(
    model: nn.Module,
    x: torch.Tensor,
    y,
    names=None,
    severities=(0.2, 0.4, 0.6, 0.8, 1.0),
    batch_size: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy of ``model`` on ``x`` corrupted at each severity, per corruption: a long frame
    (corruption, severity, accuracy, n) for accuracy-vs-severity curves, evaluated directly
    (a flip need not persist at higher severity, so the minimal severities do not give it).
    ``severities="imagenet_c"``: each corruption's ImageNet-C levels 1-5
    (``Corruption.levels``). Images are seeded as in :func:`corrupt` (``seed + i``)."""
    if isinstance(severities, str) and severities != "imagenet_c":
        raise ValueError(f"severities must be numbers or 'imagenet_c', got {severities!r}")
    _check_pixels(x)
    model = folding.folded(model, x)
    xd = x.detach().to(model_device(model))
    y = as_labels(y, len(xd), xd.device)
    seeds = torch.as_tensor(_seeds(seed, None, len(xd)), dtype=torch.long)
    rows = []
    with eval_mode(model), torch.no_grad():
        for name in _names(names):
            c = CORRUPTIONS[name]
            levels = c.levels if isinstance(severities, str) else tuple(severities)
            correct = _correct_counts(model, c, xd, y, seeds, levels, batch_size)
            for s, k in zip(levels, correct):
                acc = k / len(xd) if len(xd) else np.nan
                rows.append(dict(corruption=name, severity=float(s), accuracy=acc, n=len(xd)))
    return pd.DataFrame(rows, columns=["corruption", "severity", "accuracy", "n"])


# The severity the trust report judges natural robustness against: ImageNet-C's middle level.
STATED_LEVEL = 3


def stated_severities(level: int = STATED_LEVEL, names=None) -> dict[str, float]:
    """Each corruption's ImageNet-C level ``level`` (1-5) on this module's [0, 1] scale
    (``Corruption.levels``): the stated severities of the trust report's natural-robustness
    component (default level 3, ImageNet-C's middle one)."""
    if level not in (1, 2, 3, 4, 5):
        raise ValueError(f"level must be an ImageNet-C level 1-5, got {level!r}")
    return {name: float(CORRUPTIONS[name].levels[level - 1]) for name in _names(names)}


def natural_fragility(
    run,
    *,
    names=None,
    images_per_class: int = 0,
    grid: int = 4,
    tol: float = 0.05,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`severity_table` of the test images of ``run`` (a
    :class:`helpers.runs.FineTunedRun`): every test image, or the first ``images_per_class`` of
    each class when > 0, for each corruption of ``names`` (default all). ``image`` is the index
    in the test set. Cached in the run's folder (:func:`helpers.runs.cached_frame`), so
    notebooks 10 and 12 share one computation."""
    from .runs import cached_frame  # the cache is the layer above; imported when used
    from .selection import per_class_indices

    names = _names(names)
    params = dict(
        names=names, images_per_class=images_per_class, grid=grid, tol=tol, seed=seed, v=1
    )

    def compute():
        x, labels = run.test_set.tensors()
        idx = np.arange(len(labels))
        if images_per_class > 0:
            idx = per_class_indices(labels.numpy(), images_per_class)
        df = severity_table(
            run.model, x[idx], labels[idx], names, grid=grid, tol=tol, seed=seed,
            seeds=[seed + int(i) for i in idx], batch_size=batch_size, progress=progress,
        )  # fmt: skip
        df["image"] = idx[df["image"].to_numpy()]
        return df

    return cached_frame(run, "natural_fragility", params, compute)


# ------------------------------------------------------------------ summaries (notebook 12)
def strip(image: torch.Tensor, names=None, severities=(0, 0.25, 0.5, 0.75, 1.0), *, seed: int = 0):
    """One image [3, H, W] (or [1, 3, H, W]) under each corruption of ``names`` (default all)
    at each of ``severities``: a tensor [len(names) x len(severities), 3, H, W], row by row
    (one row per corruption), every one with the image's pattern seed ``seed``."""
    x = image.reshape(1, *image.shape[-3:])
    s = torch.as_tensor(severities, dtype=torch.float64)
    seeds = [seed] * len(s)
    return torch.cat(
        [corrupt(x.expand(len(s), -1, -1, -1), n, s, seeds=seeds) for n in _names(names)]
    )


def per_class_severity(
    df: pd.DataFrame, classes: list[str], *, stated: dict | None = None, seed: int = 0
) -> pd.DataFrame:
    """Per class and corruption of a :func:`severity_table` / :func:`natural_fragility` frame:
    :func:`helpers.attacks.per_class_fragility` with ``severity`` as its epsilon and each
    corruption as its region, so its rules hold: only correctly classified images count (n),
    an image never flipped up to severity 1 counts as +inf (a median is inf when more than
    half of the class withstands severity 1), the 95 % interval is a seeded bootstrap over the
    class's images. ``stated`` ({corruption: severity}, e.g. :func:`stated_severities`) adds
    the share that withstands it (flips above it or never) with its Wilson interval.

    Returns a long frame, one row per (class, corruption), classes then corruptions in order:
    ``class``, ``corruption``, ``n``, ``median``, ``low``, ``high``, ``not_flipped`` (share),
    and with ``stated``: ``stated``, ``withstanding``, ``withstanding_low``, ``_high``."""
    from .attacks.tables import per_class_fragility

    frames = []
    for j, name in enumerate(dict.fromkeys(df["corruption"])):
        sub = df[df["corruption"] == name].rename(
            columns={"severity": "epsilon", "corruption": "region"}
        )
        budget = None if stated is None else float(stated[name])
        t = per_class_fragility(sub, classes, budget=budget, seed=seed + 1009 * j)
        out = pd.DataFrame({"class": t.index, "corruption": name, "n": t[f"n_{name}"]})
        for new, col in (("median", ""), ("low", "_ci_low"), ("high", "_ci_high")):
            out[new] = t[f"median_eps_{name}{col}"]
        out["not_flipped"] = t[f"share_not_flipped_{name}"]
        if budget is not None:
            out["stated"] = budget
            for suffix in ("", "_ci_low", "_ci_high"):
                out["withstanding" + suffix.replace("_ci", "")] = t[
                    f"share_withstanding_{name}{suffix}"
                ]
        frames.append(out.reset_index(drop=True))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    order = {c: i for i, c in enumerate(classes)}
    return out.sort_values("class", key=lambda c: c.map(order), kind="stable").reset_index(
        drop=True
    )


def interval_text(est, low, high, *, beyond: str = ">1") -> str:
    """``0.42 [0.35, 0.50]``: an estimate and its interval, two decimals; an infinite value
    (a median beyond the search: never flipped) reads ``beyond``, a missing one ``no image``."""
    if np.isnan(est):
        return "no image"

    def f(v):
        return beyond if np.isinf(v) else f"{v:.2f}"

    return f"{f(est)} [{f(low)}, {f(high)}]"


def severity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`per_class_severity`'s table to print: one row per corruption, one column per
    class, each cell the median flipping severity with its 95 % interval (``>1``: more than
    half of the class, or of a resample, never flipped up to severity 1); the first row is
    each class's n (the correctly classified images, the same for every corruption)."""
    cells = table.assign(
        text=[interval_text(*r) for r in table[["median", "low", "high"]].to_numpy(float)]
    )
    wide = cells.pivot(index="corruption", columns="class", values="text")
    wide = wide.reindex(index=list(dict.fromkeys(table["corruption"])))
    wide = wide[list(dict.fromkeys(table["class"]))]
    n = table.drop_duplicates("class").set_index("class")["n"].astype(int).astype(str)
    top = pd.DataFrame([n.reindex(wide.columns).to_numpy()], index=["n"], columns=wide.columns)
    out = pd.concat([top, wide])
    out.columns.name, out.index.name = None, "median severity [95% CI]"
    return out


def most_sensitive(table: pd.DataFrame) -> pd.DataFrame:
    """Per class of :func:`per_class_severity`'s table: the corruption with the lowest median
    flipping severity and the runner-up, each with its 95 % interval, and ``apart``: True when
    the first one's interval lies wholly below the runner-up's (a conservative reading: two
    overlapping intervals can still differ). A class with no finite median gets no answer."""
    rows = []
    for name, sel in table.groupby("class", sort=False):
        row = {"class": name, "n": int(sel["n"].iloc[0])}
        sel = sel[np.isfinite(sel["median"].to_numpy(float))].sort_values("median", kind="stable")
        for rank, key in ((0, "first"), (1, "second")):
            r = sel.iloc[rank] if len(sel) > rank else None
            row[key] = r["corruption"] if r is not None else None
            for col in ("median", "low", "high"):
                row[f"{key}_{col}"] = float(r[col]) if r is not None else np.nan
        row["apart"] = bool(row["first_high"] < row["second_low"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def sensitivity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`most_sensitive` of :func:`per_class_severity`'s table, to print: per class its n,
    the corruption that flips it at the lowest median severity and the runner-up, each with
    its 95 % interval, and whether the intervals tell the two apart (``-``: no corruption, or
    no second one, flips more than half of the class up to severity 1)."""
    m = most_sensitive(table)
    out = pd.DataFrame({"n": m["n"]})
    for key, head in (("first", "most sensitive to"), ("second", "runner-up")):
        out[head] = m[key].fillna("-")
        cols = [f"{key}_median", f"{key}_low", f"{key}_high"]
        text = [interval_text(*r) for r in m[cols].to_numpy(float)]
        out[f"{head}: median [95% CI]"] = np.where(m[key].isna(), "-", text)
    out["apart"] = np.where(m["apart"], "yes", "no")
    return out


def image_withstanding(df: pd.DataFrame, stated: dict) -> pd.DataFrame:
    """Per correctly classified image of a :func:`severity_table` frame: ``withstanding``, the
    share of the corruptions in ``stated`` ({corruption: severity}) whose stated severity it
    withstands (its flipping severity is above it, or it never flips), with its ``label``;
    indexed by ``image``. Corruptions of ``df`` not in ``stated`` are left out."""
    ok = df[~df["already_wrong"] & df["corruption"].isin(list(stated))]
    limit = ok["corruption"].map(stated).to_numpy(float)
    holds = ~ok["flipped"].to_numpy(bool) | (ok["severity"].to_numpy(float) > limit)
    out = ok.assign(withstanding=holds.astype(float)).groupby("image")
    return pd.DataFrame({"label": out["label"].first(), "withstanding": out["withstanding"].mean()})


def _class_stats(a, b, groups, idx=None):
    """Per group: the median of ``a`` and the mean of ``b`` over its members (resampled with
    ``idx[g]``, [n_boot, n_g] positions, when given): two arrays [G] or [n_boot, G]."""
    ma, mb = [], []
    for g, members in enumerate(groups):
        pick = members if idx is None else members[idx[g]]
        ma.append(np.median(a[pick], axis=-1))
        mb.append(np.mean(b[pick], axis=-1))
    return np.stack(ma, -1), np.stack(mb, -1)


def class_rank_correlation(
    adversarial: pd.Series,
    natural: pd.Series,
    labels: pd.Series,
    classes: list[str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
):
    """Does a class that is easy to fool with a small adversarial change also fail under
    natural corruptions? Per image (indexed alike): ``adversarial`` its smallest flipping
    epsilon (+inf: never flipped), ``natural`` its share of corruptions withstood at the
    stated severities (:func:`image_withstanding`), ``labels`` its class. Per class: the median
    epsilon and the mean share; Spearman's rank correlation of the two over the classes, with
    a seeded percentile bootstrap over images (resampled within each class, both numbers from
    the same resample). Only images in all three series count; classes with none are left out.

    Returns ``(per_class, estimate)``: a frame (``n``, ``median_eps``, ``withstanding``, each
    with ``_low`` / ``_high``) and a :class:`helpers.stats.Estimate` of rho (``n``: classes)."""
    from .quality import _spearman_rows
    from .stats import Estimate, percentile_interval

    both = pd.concat({"a": adversarial, "b": natural, "y": labels}, axis=1, join="inner")
    a, b = both["a"].to_numpy(float), both["b"].to_numpy(float)
    y = both["y"].to_numpy(int)
    present = [k for k in range(len(classes)) if (y == k).any()]
    groups = [np.flatnonzero(y == k) for k in present]
    if not groups:  # no image in all three: nothing to compare
        cols = [
            "n",
            *(f"{c}{e}" for c in ("median_eps", "withstanding") for e in ("", "_low", "_high")),
        ]
        empty = pd.DataFrame(columns=cols, dtype=float)
        return empty.rename_axis("class"), Estimate(np.nan, np.nan, np.nan, 0)
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(g), size=(n_boot, len(g))) for g in groups]
    est_a, est_b = _class_stats(a, b, groups)
    rep_a, rep_b = _class_stats(a, b, groups, idx)
    table = pd.DataFrame(
        {"n": [len(g) for g in groups], "median_eps": est_a, "withstanding": est_b},
        index=pd.Index([classes[k] for k in present], name="class"),
    )
    for col, reps in (("median_eps", rep_a), ("withstanding", rep_b)):
        ends = [percentile_interval(reps[:, g]) for g in range(len(groups))]
        table[f"{col}_low"], table[f"{col}_high"] = np.array(ends).reshape(-1, 2).T
    rho, low, high = np.nan, np.nan, np.nan
    if len(groups) > 2:  # a rank correlation of fewer than three classes says nothing
        rho = float(_spearman_rows(est_a[None], est_b[None])[0])
        low, high = percentile_interval(_spearman_rows(rep_a, rep_b))
    return table, Estimate(rho, low, high, len(groups))


def correlation_summary(per_class: pd.DataFrame, *, max_eps: float = 16 / 255) -> pd.DataFrame:
    """:func:`class_rank_correlation`'s per-class table, to print: n, the median epsilon in
    grey levels (x255; ``>16``: beyond ``max_eps``) and the share withstood, each with its 95 %
    interval."""
    eps = per_class[["median_eps", "median_eps_low", "median_eps_high"]].to_numpy(float) * 255
    share = per_class[["withstanding", "withstanding_low", "withstanding_high"]].to_numpy(float)
    beyond = f">{max_eps * 255:.0f}"
    return pd.DataFrame(
        {
            "n": per_class["n"],
            "median eps x255 [95% CI]": [interval_text(*r, beyond=beyond) for r in eps],
            "share withstood [95% CI]": [interval_text(*r) for r in share],
        }
    )


def accuracy_curves(model: nn.Module, x, y, names=None, *, seed: int = 0, batch_size: int = 32):
    """:func:`accuracy_at` at ImageNet-C's five levels of each corruption, with the clean
    accuracy as level 0 (severity 0), a ``level`` column (0-5: fog's levels 3 and 4 share one
    severity, so the level, not the severity, names a row) and the Wilson 95 % interval of each
    accuracy (``low``, ``high``); ``n`` images."""
    from .stats import wilson

    names = _names(names)
    clean = accuracy_at(model, x, y, names[:1], severities=(0.0,), batch_size=batch_size)
    acc = accuracy_at(model, x, y, names, "imagenet_c", batch_size=batch_size, seed=seed)
    acc.insert(1, "level", np.tile(np.arange(1, 6), len(names)))
    parts = []
    for name in names:
        zero = dict(corruption=name, level=0, severity=0.0, accuracy=clean["accuracy"].iloc[0])
        parts += [pd.DataFrame([{**zero, "n": len(x)}]), acc[acc["corruption"] == name]]
    out = pd.concat(parts, ignore_index=True)
    k = np.round(out["accuracy"].to_numpy(float) * out["n"].to_numpy()).astype(int)
    out["low"], out["high"] = wilson(k, out["n"].to_numpy())
    return out


def at_flip(x: torch.Tensor, df: pd.DataFrame, image: int, names=None, *, seed: int = 0):
    """Test image ``image`` of ``x`` under each corruption of ``names`` (default those of the
    :func:`natural_fragility` frame ``df``) at the severity that flips it (severity 1 when it
    never flips), with its pattern seed ``seed + image`` as in :func:`natural_fragility`.
    Returns ``(images [K, 3, H, W], rows)``: ``rows`` the frame's rows for those corruptions,
    in that order (``severity`` NaN where it did not flip)."""
    names = _names(list(dict.fromkeys(df["corruption"])) if names is None else names)
    rows = df[df["image"] == image].set_index("corruption").loc[names].reset_index()
    s = rows["severity"].fillna(1.0).to_numpy(float)
    one = x[image : image + 1]
    images = [corrupt(one, n, float(v), seeds=[seed + image]) for n, v in zip(names, s)]
    return torch.cat(images), rows


def flip_gallery(x: torch.Tensor, df: pd.DataFrame, images, classes, *, seed: int = 0):
    """For each test image of ``images``: the original, then :func:`at_flip`'s corrupted
    versions, with titles for :func:`helpers.plots.image_grid` (the corruption, the flipping
    severity and the class it flips to; "no flip up to 1" where it never flips, shown at 1).
    Returns ``(images [len(images) x (1 + K), 3, H, W], titles)``."""
    cells, titles = [], []
    for i in images:
        corrupted, rows = at_flip(x, df, int(i), seed=seed)
        cells += [x[int(i)], *corrupted]
        titles.append(f"original: {classes[int(rows['label'].iloc[0])]}")
        for r in rows.itertuples():
            name = r.corruption.replace("_", " ")
            if r.already_wrong:
                titles.append(f"{name}\nwrong already")
            elif r.flipped:
                titles.append(f"{name} {r.severity:.2f}\n→ {classes[int(r.flip_class)]}")
            else:
                titles.append(f"{name}\nno flip up to 1")
    return torch.stack(cells), titles
