"""Perceptual hashes and hash collisions: a NeuralHash-style neural hash and the classical pHash.

Every image is float in [0, 1], NCHW; a hash is a bool tensor ``[N, bits]``.

``NeuralHash`` (built by :func:`neural_hasher`) follows Apple's description of NeuralHash
(Apple, "CSAM Detection: Technical Summary", 2021): the image is resized to a fixed side, a
pretrained convolutional network maps it to an embedding, the embedding is projected onto
``bits`` fixed random hyperplanes (a matrix drawn once from a seed, as NeuralHash's 96 x 128
"seed" matrix) and each projection is thresholded at zero. NeuralHash's network was trained to
make the embedding robust and its bits balanced; ours is the shipped ImageNet EfficientNet-Lite0,
whose pooled features (1280 values after a ReLU6, all >= 0) are not centred. So the embedding is
first centred on a FIXED mean embedding, that of reference pictures which are none of the photos
hashed in the notebooks (:func:`reference_images`): without it every projection carries the same
offset (the projection of the mean feature vector), bits lean towards the same value on every
image, and unrelated photos share more bits than chance. Measured at 160 px on the four photos of
:mod:`helpers.photos` (6 pairs): 31-53 differing bits of 96, mean 43.5, uncentred; 38-55, mean
48.2, centred (chance: 48). The effect is modest because the random hyperplanes already mix
1280 features, but it is free. The centred embedding is scaled to length ``sqrt(dim)`` and
each hyperplane normal to length 1, so that every projection has unit variance over random
directions: margins are in those units.

``phash`` is the classical DCT hash (Zauner 2010, "Implementation and Benchmarking of
Perceptual Image Hash Functions"; the pHash.org library): greyscale (ITU-R 601 luma), resize
to 32 x 32, 2-D DCT-II, keep the 8 x 8 lowest frequencies and compare each with their median.
As in pHash.org we EXCLUDE the DC row and column (coefficients 1..8 in each direction), so no
bit is spent on the mean brightness; ``include_dc=True`` gives the ``imagehash`` library's
variant (coefficients 0..7, including DC). pHash.org smooths with a 7 x 7 mean filter before
resizing; an antialiased resize plays that part here.

``find_collision(hasher, x, target_hash, ...) -> CollisionResult``
    An image that looks like ``x`` but has the hash ``target_hash`` (e.g. that of an unrelated
    photo), found by gradient descent on a hinge loss over the signed projections (everything
    but the final threshold is differentiable), as in the NeuralHash collisions published in
    August 2021 (Ygvar, "AppleNeuralHash2ONNX"; Struppek et al. 2022, "Learning to Break Deep
    Perceptual Hashing: The Use Case NeuralHash").

``robustness_table(hashers, images, ...)``: mean Hamming distance between the hash of each photo
and that of a transformed copy (JPEG, resizing, crops, brightness, random sign noise), with the
distance between unrelated photos as the reference row. ``survival_table``: the same question
for a found collision (does it keep the target's hash after JPEG, resizing ...?).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from helpers.plumbing import check_images, eval_mode

__all__ = [
    "NeuralHash",
    "Embedding",
    "neural_hasher",
    "projection_matrix",
    "reference_images",
    "phash",
    "dct_matrix",
    "hamming",
    "hamming_matrix",
    "to_hex",
    "quantize",
    "CollisionResult",
    "find_collision",
    "total_variation",
    "TRANSFORMS",
    "transform",
    "robustness_table",
    "survival_table",
]

BITS = 96  # NeuralHash's hash length
PHASH_SIZE, PHASH_LOW = 32, 8  # pHash: resize side, low-frequency block side


# the hash networks take RGB or grey images
_check_images = partial(check_images, channels=(3, 1))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize to ``size`` x ``size`` (differentiable)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


# --------------------------------------------------------------------------------------------
# the neural hash
# --------------------------------------------------------------------------------------------
class Embedding(nn.Module):
    """The pooled features before the classifier of a model built by :mod:`helpers.models`
    (timm nets: ``forward_features`` then ``forward_head(..., pre_logits=True)``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        net = getattr(model, "net", None)
        if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
            raise ValueError(
                "Embedding needs a model from helpers.models whose .net is a timm network "
                "(forward_features/forward_head), e.g. build_model('efficientnet_lite0'); "
                "for other networks pass any module mapping images to [N, D] as features"
            )
        self.normalize = model.normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)


def projection_matrix(bits: int, dim: int, seed: int) -> torch.Tensor:
    """``[bits, dim]`` Gaussian hyperplane normals of unit length, fixed by ``seed``."""
    if int(bits) != bits or bits < 1 or int(dim) != dim or dim < 1:
        raise ValueError(f"bits and dim must be integers >= 1, got bits={bits!r}, dim={dim!r}")
    g = torch.Generator().manual_seed(int(seed))
    w = torch.randn(int(bits), int(dim), generator=g, dtype=torch.float64)
    return (w / w.norm(dim=1, keepdim=True)).float()


class NeuralHash(nn.Module):
    """``bits`` signs of fixed random projections of a centred image embedding.

    ``features``: any module mapping images in [0, 1] of side ``size`` to ``[N, dim]``
    (e.g. :class:`Embedding`). ``center``: the fixed mean embedding subtracted first (zeros if
    ``None``; :meth:`set_center` computes it from reference images). ``projections(x)`` is
    differentiable; calling the module returns the hash (``projections(x) > 0``).
    """

    def __init__(
        self,
        features: nn.Module,
        dim: int,
        *,
        bits: int = BITS,
        size: int = 160,
        seed: int = 0,
        center: torch.Tensor | None = None,
    ):
        super().__init__()
        if int(size) != size or size < 8:
            raise ValueError(f"size must be an integer >= 8 (pixels), got {size!r}")
        self.features = features
        self.size = int(size)
        self.seed = int(seed)
        self.register_buffer("projection", projection_matrix(bits, dim, seed))
        center = (
            torch.zeros(int(dim))
            if center is None
            else torch.as_tensor(center, dtype=torch.float32)
        )
        if center.shape != (int(dim),):
            raise ValueError(f"center must have shape ({dim},), got {tuple(center.shape)}")
        self.register_buffer("center", center.clone())

    @property
    def bits(self) -> int:
        return self.projection.shape[0]

    @property
    def dim(self) -> int:
        return self.projection.shape[1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The raw embedding ``[N, dim]`` of images resized to ``size``."""
        _check_images(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        e = self.features(_resize(x.to(self.projection.device), self.size))
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise ValueError(f"features gave shape {tuple(e.shape)}; expected [N, {self.dim}]")
        return e

    def projections(self, x: torch.Tensor) -> torch.Tensor:
        """Signed projections ``[N, bits]`` (unit variance over random directions);
        differentiable."""
        e = self.embed(x) - self.center
        e = e * (math.sqrt(self.dim) / e.norm(dim=1, keepdim=True).clamp_min(1e-12))
        return e @ self.projection.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self):
            return self.projections(x) > 0

    @torch.no_grad()
    def set_center(self, images: torch.Tensor, *, batch_size: int = 8) -> "NeuralHash":
        """Set ``center`` to the mean embedding of ``images`` (then fixed)."""
        with eval_mode(self):
            e = torch.cat(
                [self.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
            )
        self.center.copy_(e.mean(0))
        return self


REFERENCE_PICTURES = (
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "brick",
    "grass",
    "gravel",
)


def reference_images(*, size: int = 224) -> torch.Tensor:
    """The pictures the neural hash is centred on: the 13 pictures shipped with scikit-image
    that are NOT among :data:`helpers.photos.PHOTOS` (telescope, microscope, retina, colour
    wheel, camera man, coins, moon, text pages, clock, textures; greyscale ones as RGB),
    centre square crop, [13, 3, size, size] in [0, 1]."""
    from skimage import data as skdata

    images = []
    for name in REFERENCE_PICTURES:
        a = np.asarray(getattr(skdata, name)())
        a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
        h, w = a.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = (
            torch.from_numpy(a[top : top + side, left : left + side].copy())
            .permute(2, 0, 1)
            .float()
            / 255
        )
        images.append(_resize(square[None], size)[0])
    return torch.stack(images).clamp(0, 1)


def neural_hasher(
    arch: str = "efficientnet_lite0",
    *,
    weights="imagenet",
    size: int = 160,
    bits: int = BITS,
    seed: int = 0,
    center="reference",
) -> NeuralHash:
    """The NeuralHash-style hash on the pooled features of ``arch`` (a timm model of
    :mod:`helpers.models`, by default the shipped ImageNet EfficientNet-Lite0), in eval mode.

    ``center="reference"`` centres on the mean embedding of :func:`reference_images`;
    ``None`` does not centre; a tensor ``[dim]`` is used as given.
    """
    from helpers.models import build_model

    model = build_model(arch, None, weights=weights).eval()
    features = Embedding(model)
    with torch.no_grad():
        dim = features(torch.zeros(1, 3, size, size)).shape[1]
    hasher = NeuralHash(
        features,
        dim,
        bits=bits,
        size=size,
        seed=seed,
        center=None if isinstance(center, str) else center,
    ).eval()
    if isinstance(center, str):
        if center != "reference":
            raise ValueError(f"center must be 'reference', None or a tensor, got {center!r}")
        hasher.set_center(reference_images(size=size))
    return hasher


# --------------------------------------------------------------------------------------------
# pHash
# --------------------------------------------------------------------------------------------
def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` (``D @ v`` = ``scipy.fft.dct(v, norm="ortho")``)."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def phash(x: torch.Tensor, *, include_dc: bool = False) -> torch.Tensor:
    """The 64-bit pHash ``[N, 64]`` of images in [0, 1] (see the module docstring)."""
    _check_images(x)
    x = x.detach().double().cpu()
    grey = x[:, 0] if x.shape[1] == 1 else 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    small = _resize(grey[:, None], PHASH_SIZE)[:, 0]
    d = dct_matrix(PHASH_SIZE)
    coeffs = d @ small @ d.T
    first = 0 if include_dc else 1
    low = coeffs[:, first : first + PHASH_LOW, first : first + PHASH_LOW].flatten(1)
    # the median of an even count is the mean of the two middle values (numpy's, pHash.org's)
    return low > torch.quantile(low, 0.5, dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------------------------
def _as_bits(h) -> torch.Tensor:
    h = torch.as_tensor(h)
    if h.dtype != torch.bool:
        if not torch.all((h == 0) | (h == 1)):
            raise ValueError("hashes must be bool tensors (or 0/1 values) [..., bits]")
        h = h.bool()
    return h


def hamming(a, b) -> torch.Tensor:
    """Number of differing bits along the last axis (broadcasting): ``[...]`` int64."""
    a, b = _as_bits(a), _as_bits(b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"hashes of different lengths: {a.shape[-1]} and {b.shape[-1]} bits")
    return (a != b).sum(-1)


def hamming_matrix(a, b=None) -> torch.Tensor:
    """``[len(a), len(b)]`` Hamming distances between two stacks of hashes (``b=a`` by default)."""
    a = _as_bits(a)
    b = a if b is None else _as_bits(b)
    return hamming(a[:, None], b[None])


def to_hex(h) -> list[str]:
    """Each hash as a hexadecimal string (first bit = most significant), like NeuralHash's
    output."""
    h = _as_bits(h)
    h = h[None] if h.ndim == 1 else h
    out = []
    for row in h.cpu().numpy():
        pad = (-len(row)) % 4
        row = np.concatenate([np.zeros(pad, bool), row])
        out.append(
            "".join(
                "0123456789abcdef"[int("".join("1" if b else "0" for b in row[i : i + 4]), 2)]
                for i in range(0, len(row), 4)
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# collisions
# --------------------------------------------------------------------------------------------
def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round images in [0, 1] to the 256 levels of an 8-bit file (``round(255 x) / 255``)."""
    return _round8(x)


def _round8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def total_variation(delta: torch.Tensor) -> torch.Tensor:
    """Smoothness penalty per image ``[N]``: mean squared difference between neighbouring
    pixels (horizontal and vertical), i.e. the squared-gradient (L2) total variation."""
    dx = (delta[..., :, 1:] - delta[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (delta[..., 1:, :] - delta[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy


@dataclass
class CollisionResult:
    """What :func:`find_collision` found, one entry per image.

    ``x_adv``: the found images (8-bit values when ``quantize``); ``x_start``: the images the
    change is measured from (``x`` rounded to 8 bits when ``quantize``); ``distances``:
    ``[N, max_steps + 1]`` Hamming distance between the hash of the (8-bit) image and the target
    at every step (column 0: the start; after an image stops, its last value is repeated);
    ``reached``: distance 0 with every projection on the target's side by at least
    ``stop_margin``; ``steps``: gradient steps taken (``max_steps`` when not reached);
    ``linf``/``l2``: measured norms of ``x_adv - x_start``; ``margin``: the smallest signed
    projection towards the target at the end (> 0: every bit matches).
    """

    x_adv: torch.Tensor
    x_start: torch.Tensor
    target_hash: torch.Tensor
    distances: np.ndarray
    reached: torch.Tensor
    steps: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    margin: torch.Tensor


def _apply_change(x0, delta, bound, quantize_: bool):
    """``x0 + delta`` inside the L-inf ball ``bound`` ([N, 1, 1, 1] or None) and [0, 1]; on the
    8-bit grid (straight-through gradient) when ``quantize_``."""
    if bound is not None:
        delta = torch.maximum(torch.minimum(delta, bound), -bound)
    if quantize_:
        rounded = (delta * 255).round()
        if bound is not None:  # whole levels inside the ball (eps need not be a multiple of 1/255)
            top = torch.floor(bound * 255 + 1e-6)
            rounded = torch.maximum(torch.minimum(rounded, top), -top)
        delta = delta + (rounded / 255 - delta).detach()
    return (x0 + delta).clamp(0, 1)


def _as_bound(eps, n: int, quantize_: bool, device):
    """``eps`` (None, a number, or one per image) as a tensor [n, 1, 1, 1] (or None), checked."""
    if eps is None:
        return None
    values = torch.as_tensor(eps, dtype=torch.float64).reshape(-1)
    if values.numel() == 1:
        values = values.expand(n)
    if values.numel() != n:
        raise ValueError(
            f"got {values.numel()} eps values for {n} images; expected one or one per image"
        )
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(
            f"eps must be None or numbers >= 0 (L-inf bound in [0, 1] pixel units), got {eps!r}"
        )
    if quantize_ and bool(((values > 0) & (values < 1 / 255 - 1e-6)).any()):
        raise ValueError(
            f"with quantize=True, eps must be 0 or at least 1/255 (one 8-bit level), got {eps!r}"
        )
    return values.float().to(device).view(-1, 1, 1, 1)


def find_collision(
    hasher: NeuralHash,
    x: torch.Tensor,
    target_hash,
    *,
    margin: float = 0.5,
    stop_margin: float = 0.1,
    eps: float | None = None,
    tv_weight: float = 0.0,
    step_size: float = 1 / 255,
    optimizer: str = "adam",
    max_steps: int = 300,
    quantize: bool = True,
    progress: bool = False,
) -> CollisionResult:
    """Change ``x`` as little as it takes to give it the hash ``target_hash`` ([N, bits] or
    [bits], bool).

    Gradient descent on
    ``sum_bits relu(margin - s * p) + tv_weight * total_variation(255 * change)``
    (the smoothness penalty in squared 8-bit levels), where ``p`` are the hasher's signed
    projections and ``s = +-1`` the target bits (the hinge pulls each projection past zero by
    ``margin`` and then lets it be). Steps: Adam with learning rate ``step_size`` (pixel units)
    or, with ``optimizer="sign"``, signed-gradient steps of ``step_size`` (as the iterative
    FGSM). After each step the change is clipped to the L-inf ball ``eps`` (``None``: no bound;
    a number, or one per image) and to [0, 1].

    ``quantize`` (default): ``x`` is first rounded to 8 bits and every forward pass sees the
    8-bit image ``x_start + round(255 change) / 255`` (straight-through gradient), so the hash
    recorded at each step is that of the image as it would be saved to a PNG. An image stops at
    the first step where its Hamming distance is 0 and every projection is on the target's side
    by at least ``stop_margin`` (so tiny numeric differences, e.g. another batch size, cannot
    flip a bit back). One forward+backward pass per step for the images still searching.
    Deterministic (no randomness).
    """
    _check_collision_args(x, optimizer, max_steps, margin, stop_margin, step_size, tv_weight)
    device = hasher.projection.device
    x0 = x.detach().to(device)
    x0 = _round8(x0) if quantize else x0.clamp(0, 1)
    n = len(x0)
    target = _target_bits(target_hash, n, hasher.bits, device)
    bound = _as_bound(eps, n, quantize, device)
    delta, found = _collision_descent(
        hasher, x0, target.float() * 2 - 1, bound, margin=margin, stop_margin=stop_margin,
        tv_weight=tv_weight, step_size=step_size, optimizer=optimizer, max_steps=int(max_steps),
        quantize=quantize, progress=progress,
    )  # fmt: skip
    with torch.no_grad():
        x_adv = _apply_change(x0, delta, bound, quantize).detach()
    return _collision_result(x_adv, x0, target, found, x.device)


def _collision_result(x_adv, x0, target, found: dict, device) -> CollisionResult:
    """The :class:`CollisionResult` of the final images ``x_adv`` (started from ``x0``), on
    ``device`` (that of the images passed in)."""
    change = (x_adv - x0).flatten(1)
    return CollisionResult(
        x_adv=x_adv.to(device),
        x_start=x0.to(device),
        target_hash=target.cpu(),
        distances=found["distances"],
        reached=found["reached"],
        steps=found["steps"],
        linf=change.abs().amax(1).cpu(),
        l2=change.norm(dim=1).cpu(),
        margin=found["margin"],
    )


def _check_collision_args(x, optimizer, max_steps, margin, stop_margin, step_size, tv_weight):
    _check_images(x)
    if optimizer not in ("adam", "sign"):
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'adam' or 'sign'")
    if int(max_steps) != max_steps or max_steps < 0:
        raise ValueError(f"max_steps must be an integer >= 0, got {max_steps!r}")
    if not (margin >= 0 and stop_margin >= 0 and step_size > 0 and tv_weight >= 0):
        raise ValueError(
            "margin, stop_margin and tv_weight must be >= 0 and step_size > 0, got "
            f"{margin!r}, {stop_margin!r}, {tv_weight!r}, {step_size!r}"
        )


def _target_bits(target_hash, n: int, bits: int, device) -> torch.Tensor:
    """``target_hash`` ([bits] or [n, bits]) as bool [n, bits] on ``device``, checked."""
    target = _as_bits(target_hash).to(device)
    target = target[None].expand(n, -1) if target.ndim == 1 else target
    if target.shape != (n, bits):
        raise ValueError(
            f"target_hash must be [{bits}] or [{n}, {bits}] bits, got {tuple(target.shape)}"
        )
    return target


def _collision_descent(
    hasher, x0, sign, bound, *, margin, stop_margin, tv_weight, step_size, optimizer, max_steps,
    quantize, progress,
):  # fmt: skip
    """The gradient steps of :func:`find_collision` on the change ``delta`` of ``x0`` towards
    the target bits ``sign`` (+-1), each image stopped once it reaches the target. Returns
    ``(delta, found)``; ``found``: per image ``distances`` (at every step), ``steps``,
    ``reached`` and ``margin`` (the smallest signed projection at its last step)."""
    n, device = len(x0), x0.device
    delta = torch.zeros_like(x0, requires_grad=True)
    adam = torch.optim.Adam([delta], lr=step_size) if optimizer == "adam" else None
    found = {
        "distances": np.zeros((n, max_steps + 1), dtype=np.int64),
        "steps": torch.full((n,), max_steps, dtype=torch.long),
        "reached": torch.zeros(n, dtype=torch.bool),
        "margin": torch.zeros(n),
    }
    active = torch.ones(n, dtype=torch.bool)
    bar = _progress_bar(max_steps) if progress else None
    with eval_mode(hasher):
        for t in range(max_steps + 1):
            idx = active.nonzero()[:, 0]
            on = idx.to(device)
            x_adv = _apply_change(x0[on], delta[on], None if bound is None else bound[on], quantize)
            proj = hasher.projections(x_adv)
            signed = sign[on] * proj
            dist = _record_step(found, active, idx, signed.detach(), t, stop_margin)
            if t == max_steps or not bool(active.any()):
                break
            loss = F.relu(margin - signed).sum()
            if tv_weight > 0:
                loss = loss + tv_weight * total_variation(255 * (x_adv - x0[on])).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            _step_change(delta, grad, (~active).to(device), adam, step_size, bound, x0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(hamming=int(dist.max()))
    if bar is not None:
        bar.close()
    return delta, found


def _progress_bar(max_steps: int):
    from helpers.progress import tqdm

    return tqdm(total=max_steps, desc="collision search", leave=False)


def _record_step(found: dict, active, idx, signed, t: int, stop_margin: float) -> torch.Tensor:
    """Record step ``t`` of the searching images ``idx`` (``signed``: their signed projections)
    in ``found``; those that reached the target (distance 0, every projection at least
    ``stop_margin`` on its side) stop (``active`` cleared). Returns their Hamming distances."""
    dist = (signed <= 0).sum(1).cpu()
    found["distances"][idx.numpy(), t:] = dist.numpy()[:, None]
    found["margin"][idx] = signed.amin(1).cpu()
    done = (dist == 0) & (signed.amin(1).cpu() >= stop_margin)
    found["reached"][idx[done]], found["steps"][idx[done]] = True, t
    active[idx[done]] = False
    return dist


def _step_change(delta, grad, frozen, adam, step_size: float, bound, x0) -> None:
    """One step of ``delta`` in place (Adam, or a signed-gradient step without ``adam``); the
    ``frozen`` images keep theirs; then into the L-inf ball ``bound`` and [0, 1]."""
    with torch.no_grad():
        keep = delta[frozen].clone()
        if adam is not None:
            delta.grad = grad
            adam.step()
            adam.zero_grad(set_to_none=True)
        else:
            delta -= step_size * grad.sign()
        delta[frozen] = keep
        if bound is not None:
            delta.copy_(torch.maximum(torch.minimum(delta, bound), -bound))
        delta.copy_((x0 + delta).clamp(0, 1) - x0)


# --------------------------------------------------------------------------------------------
# robustness of the hashes
# --------------------------------------------------------------------------------------------
def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for image in x:
        arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(
            buf, format="JPEG", quality=int(quality)
        )
        buf.seek(0)
        back = np.asarray(Image.open(buf).convert("RGB" if arr.shape[-1] == 3 else "L"))
        back = back[..., None] if back.ndim == 2 else back
        out.append(torch.from_numpy(back.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(x.device)


def _rescale(x: torch.Tensor, factor: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(
        x,
        size=(max(1, round(h * factor)), max(1, round(w * factor))),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return F.interpolate(
        small, size=(h, w), mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


def _crop(x: torch.Tensor, share: float) -> torch.Tensor:
    """Cut ``share`` of each side's length off (half on each edge), resize back."""
    h, w = x.shape[-2:]
    dh, dw = round(h * share / 2), round(w * share / 2)
    inner = x[..., dh : h - dh, dw : w - dw]
    return F.interpolate(
        inner, size=(h, w), mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


def _sign_noise(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, x.shape, generator=g).float().mul_(2).sub_(1).to(x.device)
    return (x + eps * signs).clamp(0, 1)


# name -> (kind, parameter); kinds: jpeg (quality), resize (factor, down and back up), crop (share
# of each side cut off, then resized back), brightness (factor), noise (eps of random +-eps signs)
TRANSFORMS = {
    "JPEG quality 90": ("jpeg", 90),
    "JPEG quality 50": ("jpeg", 50),
    "JPEG quality 20": ("jpeg", 20),
    "resize to 1/2 and back": ("resize", 0.5),
    "resize to 1/4 and back": ("resize", 0.25),
    "crop 5 %, resize back": ("crop", 0.05),
    "crop 10 %, resize back": ("crop", 0.10),
    "brightness x 1.2": ("brightness", 1.2),
    "brightness x 0.8": ("brightness", 0.8),
    "random signs ±2/255": ("noise", 2 / 255),
    "random signs ±8/255": ("noise", 8 / 255),
}


def transform(x: torch.Tensor, kind: str, value, *, seed: int = 0) -> torch.Tensor:
    """One of the :data:`TRANSFORMS` kinds applied to images in [0, 1] (``seed``: noise only)."""
    _check_images(x)
    if kind == "jpeg":
        return _jpeg(x, value)
    if kind == "resize":
        return _rescale(x, value)
    if kind == "crop":
        return _crop(x, value)
    if kind == "brightness":
        return (x * value).clamp(0, 1)
    if kind == "noise":
        return _sign_noise(x, value, seed)
    raise ValueError(
        f"unknown transform kind {kind!r}; expected jpeg, resize, crop, brightness or noise"
    )


def robustness_table(
    hashers: dict, images: torch.Tensor, *, transforms: dict | None = None, seed: int = 0
) -> pd.DataFrame:
    """Mean Hamming distance between the hash of each image and that of its transformed copy.

    ``hashers``: name -> function from images to hashes (e.g. ``{"neural": hasher, "pHash":
    phash}``); ``transforms``: name -> (kind, value) (default :data:`TRANSFORMS`). Rows: the
    transforms, then ``"unrelated photos"``: the mean distance between the hashes of every pair
    of different images (the reference a robust hash must stay far below). Columns: the hashers.
    ``df.attrs["bits"]`` holds each hash's length.
    """
    _check_images(images, "images")
    if len(images) < 2:
        raise ValueError(
            "robustness_table needs at least 2 images (the unrelated-pairs reference row)"
        )
    transforms = TRANSFORMS if transforms is None else transforms
    originals = {name: h(images) for name, h in hashers.items()}
    rows = {}
    for label, (kind, value) in transforms.items():
        changed = transform(images, kind, value, seed=seed)
        rows[label] = {
            name: hamming(h(changed), originals[name]).float().mean().item()
            for name, h in hashers.items()
        }
    pairs = torch.triu_indices(len(images), len(images), offset=1)
    rows["unrelated photos"] = {
        name: hamming_matrix(hs)[pairs[0], pairs[1]].float().mean().item()
        for name, hs in originals.items()
    }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "transformation"
    df.attrs["bits"] = {name: int(hs.shape[-1]) for name, hs in originals.items()}
    return df


def survival_table(
    hasher, x: torch.Tensor, references: dict, *, transforms: dict | None = None, seed: int = 0
) -> pd.DataFrame:
    """Does a (found) image keep its hash when it is transformed? Rows: ``"unchanged"`` then the
    transforms (default :data:`TRANSFORMS`); columns: the names of ``references`` (name -> hash
    ``[bits]`` or ``[N, bits]``); values: mean Hamming distance between ``hasher(T(x))`` and
    that reference hash, e.g. ``{"target B": hash_b, "start A": hash_a}`` for a collision."""
    _check_images(x)
    transforms = TRANSFORMS if transforms is None else transforms
    rows = {"unchanged": x}
    for label, (kind, value) in transforms.items():
        rows[label] = transform(x, kind, value, seed=seed)
    table = {
        label: {
            name: hamming(
                hasher(images),
                _as_bits(ref).to(images.device) if torch.is_tensor(ref) else _as_bits(ref),
            )
            .float()
            .mean()
            .item()
            for name, ref in references.items()
        }
        for label, images in rows.items()
    }
    df = pd.DataFrame.from_dict(table, orient="index")
    df.index.name = "transformation"
    return df
