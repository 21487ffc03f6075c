"""Attacks confined to regions: masks (top fraction of a map, complement, equal area), the
minimal epsilon per region, and the fragility of a fine-tuned run's test images (cached)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..plumbing import as_labels, check_images, model_device
from ..selection import attack_subset, per_class_indices
from ._base import as_mask
from .minimization import minimizer


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
    out). ``direction`` names the minimisation attack in
    :data:`helpers.attacks.minimization.MINIMIZERS`: ``"fmn"`` is
    :func:`helpers.attacks.minimum_norm_epsilon` (the strong search; keywords ``steps``,
    ``probes``, ``max_eps``), ``"fgsm"`` / ``"pgd"`` are :func:`helpers.attacks.minimal_epsilon`
    along that attack (each region's search computes its own gradient sign: 1 forward+backward
    per image and region). Pass regions of equal pixel count (:func:`equal_area`) to compare
    them. Returns a long DataFrame, one row per image and region: ``image``, ``region``,
    ``label``, ``epsilon``, ``flipped``, ``already_wrong``, ``flip_class``,
    ``confidence_before``, ``pixels`` (pixel count of the region), ``l2_norm`` (L2 norm of the
    perturbation actually applied at ``epsilon``, after clipping) and ``l2_nominal``
    (``eps * sqrt(pixels * C)``).
    """
    minimise = minimizer(direction)
    check_images(x)
    device = model_device(model)
    xd = x.detach().to(device)
    y = as_labels(y, len(xd), device)
    frames = [
        _region_frame(minimise, model, xd, y, name, mask, batch_size, minimal_epsilon_kw)
        for name, mask in _with_whole(masks, xd).items()
    ]
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {
        k: v
        for k, v in frames[0].attrs.items()
        if k in ("grid", "tol", "max_eps", "method", "steps", "probes")
    }
    return out


def _with_whole(masks: dict, xd: torch.Tensor) -> dict:
    """``masks`` with ``"whole"`` (all ones) first when missing, and without ``None`` entries."""
    n, _, h, w = xd.shape
    regions = dict(masks)
    if "whole" not in regions:
        regions = {"whole": torch.ones(n, h, w, dtype=torch.bool), **regions}
    return {k: v for k, v in regions.items() if v is not None}


def _region_frame(minimise, model, xd, y, name, mask, batch_size, kw) -> pd.DataFrame:
    """The minimal epsilons of the images ``xd`` with the change confined to ``mask``, with the
    columns of :func:`fragility_by_region` (``image``, ``region`` first; pixels, L2 norms)."""
    n, c, h, w = xd.shape
    m = as_mask(mask, xd).expand(n, 1, h, w)
    df, x_adv = minimise(model, xd, y, mask=m, batch_size=batch_size, return_adversarial=True, **kw)
    pixels = m.flatten(1).sum(1).cpu().numpy().astype(int)
    l2 = (x_adv - xd).flatten(1).norm(dim=1).double().cpu().numpy()
    l2[~df["flipped"].to_numpy()] = np.nan
    df.insert(0, "region", name)
    df.insert(0, "image", np.arange(n))
    df["pixels"] = pixels
    df["l2_norm"] = l2
    df["l2_nominal"] = df["epsilon"] * np.sqrt(pixels * c)
    return df


# --------------------------------------------------------------------------------------------
# a fine-tuned run's test images (anything with .model, .test_set.tensors(), .source.is_scenes,
# .test_masks() and .run_dir, i.e. a helpers.runs.FineTunedRun)
# --------------------------------------------------------------------------------------------
def region_masks(run, indices, *, object_from: str = "auto", top_fraction: float = 0.2) -> dict:
    """``{"object": mask, "background": its complement}``, bool [N, H, W], for test ``indices``.

    ``object_from="mask"``: the scene's ground-truth mask (embedded scenes only); ``"gradcam"``:
    the top ``top_fraction`` of the Grad-CAM map of the TRUE class (the region that holds the
    model's evidence for it); ``"auto"``: the mask where there is one, else Grad-CAM.
    """
    if object_from == "auto":
        object_from = "mask" if run.source.is_scenes else "gradcam"
    idx = np.asarray(indices)
    if object_from == "mask":
        obj = torch.from_numpy(run.test_masks()[idx])
    elif object_from == "gradcam":
        from .. import explain

        x, labels = run.test_set.tensors()
        cam = explain.explain(run.model, x[idx], labels[idx].long(), method="gradcam")
        obj = top_fraction_mask(cam, top_fraction)
    else:
        raise ValueError(
            f"unknown object_from {object_from!r}; expected 'auto', 'mask' or 'gradcam'"
        )
    return {"object": obj, "background": ~obj}


# Bumped whenever helpers.attacks.minimum_norm_epsilon changes its answers, so that a cached
# frame of an older search is not read back.
SEARCH_VERSION = 4


def fragility(
    run,
    *,
    region_images_per_class: int = 20,
    whole_images_per_class: int = 0,
    object_from: str = "auto",
    top_fraction: float = 0.2,
    steps: int = 30,
    max_eps: float = 16 / 255,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """The smallest flipping L-inf epsilon of each test image of ``run`` (a
    :class:`helpers.runs.FineTunedRun`) by a minimum-norm attack
    (:func:`helpers.attacks.minimum_norm_epsilon`: foolbox's FMN with ``steps`` iterations, then
    an fp32-checked line search), for the whole image on every test image (or the first
    ``whole_images_per_class`` of each class when > 0), and confined to the object and to the
    background on the first ``region_images_per_class`` test images of each class.

    The object and background regions (:func:`region_masks`) are made of EQUAL pixel count
    per image (:func:`equal_area`: the larger one subsampled at random, seeded per image by
    ``seed`` and its test index), so a region is not more fragile merely for being larger;
    column ``pixels`` records the count. Epsilons above ``max_eps`` count as not flipped.
    Cached in the run's folder (:func:`helpers.runs.cached_frame`) so notebooks 09 and 10 share
    it. Measured on the embedded default (300 test images whole, 20 per class in each region:
    540 searches, 30 FMN steps each): about 170 s on a 2-core CPU.

    Returns the long frame of :func:`fragility_by_region`, one row per image and region
    (``image`` is the index in the test set): ``image``, ``region``, ``label``, ``epsilon``,
    ``flipped``, ``already_wrong``, ``pixels``, ``confidence_before``, ``flip_class`` and
    more."""
    from ..runs import cached_frame  # the cache is the layer above; imported when used

    params = dict(
        region_images_per_class=region_images_per_class,
        whole_images_per_class=whole_images_per_class,
        object_from=object_from,
        top_fraction=top_fraction,
        steps=steps,
        max_eps=max_eps,
        seed=seed,
        attack="fmn",
        equal_area=True,
        search=SEARCH_VERSION,
    )
    kw = dict(direction="fmn", steps=steps, max_eps=max_eps, batch_size=batch_size)
    region_kw = dict(object_from=object_from, top_fraction=top_fraction, seed=seed)

    def compute():
        return _compute_fragility(
            run, whole_images_per_class, region_images_per_class, kw, region_kw
        )

    return cached_frame(run, "fragility", params, compute)


def _compute_fragility(run, whole_images_per_class, region_images_per_class, kw, region_kw):
    """What :func:`fragility` caches: the whole-image frame, then the object/background one.
    ``kw``: for :func:`fragility_by_region`; ``region_kw``: for :func:`_equal_area_regions`."""
    x, labels = run.test_set.tensors()
    labels = labels.long()
    whole_idx = (
        np.arange(len(x))
        if whole_images_per_class <= 0
        else per_class_indices(labels.numpy(), whole_images_per_class)
    )
    whole = fragility_by_region(run.model, x[whole_idx], labels[whole_idx], {}, **kw)
    whole["image"] = whole_idx[whole["image"].to_numpy()]
    frames = [whole]
    if region_images_per_class > 0:
        idx, xs, ys = attack_subset(run, region_images_per_class)
        masks = _equal_area_regions(run, idx, **region_kw)
        regions = fragility_by_region(run.model, xs, ys, masks, **kw)
        regions["image"] = idx[regions["image"].to_numpy()]
        frames.append(regions)
    df = pd.concat(frames, ignore_index=True)
    df.attrs = {**whole.attrs, "equal_area": True}
    return df


def _equal_area_regions(run, idx, *, object_from, top_fraction, seed) -> dict:
    """The masks :func:`fragility` attacks for the test images ``idx``: no whole image, object and
    background of equal pixel count (:func:`region_masks`, then :func:`equal_area`)."""
    masks = region_masks(run, idx, object_from=object_from, top_fraction=top_fraction)
    obj, bg = equal_area(masks["object"], masks["background"], seed=seed, image_ids=idx)
    return {"whole": None, "object": obj, "background": bg}
