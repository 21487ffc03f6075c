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
corruption) and 80 s at grid 4, tol 0.05 (4.5); a notebook that must run in 2 minutes takes a
subset of images (10 per class: about a fifth of that).
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
