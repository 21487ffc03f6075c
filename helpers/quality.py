"""How good is an explanation: faithfulness curves, localisation against ground truth, compactness
and the model-randomisation sanity check.

Common format: attribution maps are ``[N,H,W]`` (torch or numpy; a single ``[H,W]`` map counts as
``N = 1``), images ``[N,3,H,W]`` floats in [0, 1], masks bool ``[N,H,W]``.

Conventions chosen here (and why):

* **Ranking** (deletion, insertion, relevance rank): pixels are ranked by the map's *signed*
  value, most positive first, so for a signed map the evidence *for* the target goes first and
  the evidence against it last. For a non-negative map this is the ordinary "most relevant
  first". Ties are broken by a stable sort, i.e. in row-major pixel order, so a constant map
  deletes the image row by row from the top left, the same way on every run.
* **Constant maps**: the pointing game counts them as a miss; relevance mass of an all-zero map
  is 0; compactness of a constant or all-zero map is that of an evenly spread map (area shares
  ``ceil(q * H * W) / (H * W)``, i.e. about 0.5 and 0.9, Gini 0), since its Lorenz curve is the
  line of equality. A Spearman correlation involving a constant map is undefined; where the
  sanity check needs one it counts the image as CHANGED (correlation 0) when the randomised map
  differs from the original (e.g. it went all-zero: a map that vanished with the weights does
  depend on them) and as unchanged (1) when both maps are the same constant, and it reports how
  many were undefined. Dropping them instead would bias the mean correlation upwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.integrate import trapezoid
from scipy.ndimage import distance_transform_edt
from scipy.stats import rankdata
from torch import nn

from helpers import folding
from helpers.plumbing import as_targets, check_images, eval_mode, gaussian_blur, model_device

__all__ = [
    "CurveResult",
    "make_baseline",
    "rank_pixels",
    "deletion_curve",
    "insertion_curve",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "compactness",
    "randomisation_stages",
    "model_randomisation",
    "shortcut_share",
    "summarise",
    "sanity_check",
    "cascade_correlation",
    "sanity_images",
    "sanity_gate",
    "SANITY_MIN_IMAGES",
]


# ----------------------------------------------------------------------------- common format
def _maps_np(maps) -> np.ndarray:
    """Maps as float64 numpy ``[N,H,W]`` with non-finite values set to 0."""
    arr = np.asarray(maps.detach().cpu() if hasattr(maps, "detach") else maps, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"attribution maps must be [N,H,W] (or [H,W]); got shape {arr.shape}")
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)


def _masks_np(masks, shape) -> np.ndarray:
    arr = np.asarray(masks.detach().cpu() if hasattr(masks, "detach") else masks).astype(bool)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != shape:
        raise ValueError(
            f"masks have shape {arr.shape}, the maps {shape}; expected the same [N,H,W]"
        )
    return arr


# ----------------------------------------------------------------------------- deletion / insertion
@dataclass
class CurveResult:
    """A deletion or insertion curve per image. Also readable as a dict (``result["auc"]``)."""

    kind: str  # "deletion" or "insertion"
    baseline: str  # what replaced / underlay the pixels
    fractions: np.ndarray  # [steps+1], 0 ... 1
    probs: np.ndarray  # [N, steps+1], softmax probability of the target
    auc: np.ndarray = field(default=None)  # [N], trapezoid over fractions

    def __post_init__(self):
        if self.auc is None:
            self.auc = trapezoid(self.probs, self.fractions, axis=1)

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return ("kind", "baseline", "fractions", "probs", "auc")


def make_baseline(
    x: torch.Tensor, baseline="blurred", *, sigma: float | None = None
) -> torch.Tensor:
    """The reference image for deletion/insertion, same shape as ``x``.

    ``"black"`` (zeros), ``"blurred"`` (:func:`helpers.plumbing.gaussian_blur`, the same
    baseline as explain's: sigma = side/20 unless ``sigma`` is given, reflect padding),
    ``"mean"`` (each image's per-channel mean colour), a float (a grey level) or a tensor
    broadcastable to ``x``.
    """
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x).expand_as(x).clone()
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if baseline == "blurred":
        return gaussian_blur(x, sigma)
    raise ValueError(
        f"unknown baseline {baseline!r}; expected 'black', 'blurred', 'mean', a float or a tensor"
    )


def rank_pixels(maps) -> torch.Tensor:
    """Pixel indices (row-major, ``[N, H*W]``) from the most to the least relevant.

    Ranks by the signed value, most positive first; ties keep row-major order (stable sort)."""
    m = _maps_np(maps)
    flat = m.reshape(len(m), -1)
    return torch.from_numpy(np.argsort(-flat, axis=1, kind="stable"))


@torch.no_grad()
def _perturbation_curve(kind, model, x, target, maps, *, steps, batch_size, baseline, sigma):
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1; got {steps}, {batch_size}")
    device = model_device(model)
    x = torch.as_tensor(x, dtype=torch.float32).to(device)
    model = folding.folded(model, x)
    check_images(x, "images")
    n, _, h, w = x.shape
    m = _maps_np(maps)
    if m.shape[0] != n:
        raise ValueError(f"{m.shape[0]} maps for {n} images")
    if m.shape[1:] != (h, w):  # e.g. a coarse map: bring it to the image's size first
        m = F.interpolate(
            torch.from_numpy(m)[:, None], size=(h, w), mode="bilinear", align_corners=False
        )[:, 0].numpy()
    t = as_targets(target, n, device)
    base = make_baseline(x, baseline, sigma=sigma)
    order = rank_pixels(m)
    rank = torch.empty_like(order)  # rank[i, pixel] = its position in the order
    rank.scatter_(1, order, torch.arange(h * w).expand(n, -1).contiguous())
    rank = rank.to(device)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = torch.as_tensor(np.rint(fractions * h * w).astype(np.int64), device=device)
    # every (image, step) pair goes through the model in batches of batch_size
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(steps + 1)).to(device)
    probs = torch.empty(n * (steps + 1), device=device)
    with eval_mode(model):
        for start in range(0, len(pairs), batch_size):
            i, k = pairs[start : start + batch_size].unbind(1)
            chosen = (rank[i] < counts[k, None]).view(-1, 1, h, w)  # the top pixels at step k
            if kind == "deletion":
                batch = torch.where(chosen, base[i], x[i])
            else:
                batch = torch.where(chosen, x[i], base[i])
            logits = model(batch)
            probs[start : start + len(i)] = logits.float().softmax(1).gather(1, t[i, None])[:, 0]
    name = baseline if isinstance(baseline, str) else "custom"
    return CurveResult(
        kind, name, fractions, probs.view(n, steps + 1).cpu().numpy().astype(np.float64)
    )


def deletion_curve(
    model,
    x,
    target,
    maps,
    *,
    steps: int = 20,
    batch_size: int = 64,
    baseline="black",
    sigma: float | None = None,
) -> CurveResult:
    """Deletion (RISE, Petsiuk et al. 2018): replace the most relevant pixels first with the
    baseline and follow the target's softmax probability; lower AUC = more faithful map.

    At each of ``steps + 1`` fractions f in 0 ... 1 the top ``round(f * H * W)`` pixels (ranked
    by the signed map, ties in row-major order) take the baseline's value in all channels. The
    image at f = 1 is the baseline itself. ``target``: one int or one per image. All
    (image, step) pairs are evaluated in batched forwards of ``batch_size`` without gradients;
    the model runs in eval mode and gets its mode back. Maps of another size than the images are
    resized bilinearly first. Returns a :class:`CurveResult` (fractions, probs [N, steps+1],
    auc [N])."""
    return _perturbation_curve(
        "deletion",
        model,
        x,
        target,
        maps,
        steps=steps,
        batch_size=batch_size,
        baseline=baseline,
        sigma=sigma,
    )


def insertion_curve(
    model,
    x,
    target,
    maps,
    *,
    steps: int = 20,
    batch_size: int = 64,
    baseline="blurred",
    sigma: float | None = None,
) -> CurveResult:
    """Insertion (RISE): start from the baseline (a blurred copy by default) and put the most
    relevant pixels of the image back first; higher AUC = more faithful map. The image at
    fraction 0 is the baseline, at fraction 1 the image. Otherwise as :func:`deletion_curve`."""
    return _perturbation_curve(
        "insertion",
        model,
        x,
        target,
        maps,
        steps=steps,
        batch_size=batch_size,
        baseline=baseline,
        sigma=sigma,
    )


# ----------------------------------------------------------------------------- localisation
def pointing_game(maps, masks, *, tolerance: float = 0) -> np.ndarray:
    """Pointing game (Zhang et al. 2016): a hit when the map's maximum lies in the mask, or within
    ``tolerance`` pixels of it (Euclidean; the paper uses 15 px at 224 px). Returns bool [N].

    The maximum of the signed value counts. When several pixels share the maximum, a hit needs
    all of them within the tolerance (no credit for a plateau that also covers the background).
    A constant map (no maximum) and an empty mask count as a miss."""
    m = _maps_np(maps)
    gt = _masks_np(masks, m.shape)
    hits = np.zeros(len(m), dtype=bool)
    for i, (mi, gi) in enumerate(zip(m, gt)):
        if not gi.any() or mi.max() == mi.min():
            continue
        distance = distance_transform_edt(~gi)  # 0 inside the mask
        hits[i] = bool(np.all(distance[mi == mi.max()] <= tolerance))
    return hits


def relevance_mass(maps, masks) -> np.ndarray:
    """Relevance mass accuracy (Arras et al. 2022, CLEVR-XAI): the share of the positive
    attribution that lies inside the mask, ``sum(max(R,0) * mask) / sum(max(R,0))``, in [0, 1].
    A map without positive values gives 0."""
    m = _maps_np(maps)
    gt = _masks_np(masks, m.shape)
    pos = np.clip(m, 0, None)
    total = pos.sum(axis=(1, 2))
    inside = (pos * gt).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def relevance_rank(maps, masks) -> np.ndarray:
    """Relevance rank accuracy (Arras et al. 2022): of the K = |mask| highest-ranked pixels (signed
    value), the share inside the mask. Pixels tied at the K-th value share the remaining places
    in proportion (the expectation over every tie order), so a constant map scores
    ``|mask| / (H*W)``, the chance level. An empty mask gives NaN (undefined)."""
    m = _maps_np(maps)
    gt = _masks_np(masks, m.shape)
    out = np.full(len(m), np.nan)
    for i, (mi, gi) in enumerate(zip(m, gt)):
        k = int(gi.sum())
        if k == 0:
            continue
        flat, inside = mi.ravel(), gi.ravel()
        kth = np.sort(flat)[::-1][k - 1]
        above, tied = flat > kth, flat == kth
        places = k - above.sum()
        out[i] = ((above & inside).sum() + places * (tied & inside).sum() / tied.sum()) / k
    return out


def shortcut_share(maps, boxes, *, mode: str = "positive"):
    """How much of the attribution sits on a planted mark: ``(share [N], area [N])``.

    ``share`` is the share of the positive attribution (evidence *for* the target; ``mode=
    "absolute"`` uses |map|) inside each box (x0, y0, x1, y1; x1/y1 exclusive, as
    :func:`helpers.scenes.add_shortcut_mark` returns), ``area`` the box's share of the image: a
    map that ignores the mark has ``share`` about ``area``. A map with no such attribution has
    share 0; a box of ``None`` (unmarked image) gives NaN for both."""
    if mode not in ("positive", "absolute"):
        raise ValueError(f"unknown mode {mode!r}; expected 'positive' or 'absolute'")
    m = _maps_np(maps)
    m = np.clip(m, 0, None) if mode == "positive" else np.abs(m)
    if len(boxes) != len(m):
        raise ValueError(f"{len(boxes)} boxes for {len(m)} maps")
    h, w = m.shape[1:]
    share, area = np.full(len(m), np.nan), np.full(len(m), np.nan)
    for i, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        inside = m[i, y0:y1, x0:x1].sum() if x1 > x0 and y1 > y0 else 0.0
        total = m[i].sum()
        share[i] = inside / total if total > 0 else 0.0
        area[i] = max(x1 - x0, 0) * max(y1 - y0, 0) / (h * w)
    return share, area


# ----------------------------------------------------------------------------- compactness
def compactness(maps, *, levels: Sequence[float] = (0.5, 0.9)) -> pd.DataFrame:
    """Per image: the smallest share of the image area that holds 50 % and 90 % of the absolute
    attribution mass (columns ``area_50``, ``area_90``; small = compact), and the Gini coefficient
    of |map| (``gini``: 0 = spread evenly, (n-1)/n = one pixel). A constant or all-zero map counts
    as evenly spread: area shares ``ceil(q*H*W)/(H*W)`` (about q) and Gini 0."""
    m = _maps_np(maps)
    a = np.abs(m).reshape(len(m), -1)
    n = a.shape[1]
    rows = {}
    desc = -np.sort(-a, axis=1)
    total = desc.sum(axis=1, keepdims=True)
    even = np.all(desc == desc[:, :1], axis=1)  # constant (or zero): the line of equality
    cum = np.cumsum(desc, axis=1)
    for q in levels:
        need = np.argmax(cum >= q * total * (1 - 1e-12), axis=1) + 1
        need = np.where(even, np.ceil(q * n - 1e-9), need)
        rows[f"area_{round(q * 100)}"] = need / n
    asc = desc[:, ::-1]
    idx = np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gini = 2 * (asc * idx).sum(axis=1) / (n * total[:, 0]) - (n + 1) / n
    rows["gini"] = np.where(even | (total[:, 0] == 0), 0.0, gini)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- randomisation
_ARCH_STAGES = {
    "resnet": [
        "net.fc",
        "net.layer4",
        "net.layer3",
        "net.layer2",
        "net.layer1",
        ("net.conv1", "net.bn1"),
    ],
    "mobilenet_v2": ["net.classifier"] + [f"net.features.{i}" for i in range(18, -1, -1)],
    "efficientnet_lite0": ["net.classifier", ("net.conv_head", "net.bn2")]
    + [f"net.blocks.{i}" for i in range(6, -1, -1)]
    + [("net.conv_stem", "net.bn1")],
}


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def randomisation_stages(model: nn.Module) -> list[tuple[str, ...]]:
    """The default cascade, from the output down: a list of stages, each a tuple of module names.

    resnet18/50: fc, layer4, layer3, layer2, layer1, conv1+bn1; mobilenet_v2: classifier,
    features.18 ... features.0; efficientnet_lite0 (timm): classifier, conv_head+bn2, blocks.6 ...
    blocks.0, conv_stem+bn1. Any other model: the top-level children of ``model.net`` (or of the
    model) that have parameters, last first."""
    arch = str(getattr(model, "arch", ""))
    key = "resnet" if arch.startswith("resnet") else arch
    names = dict(model.named_modules())
    if key in _ARCH_STAGES:
        stages = [(s,) if isinstance(s, str) else tuple(s) for s in _ARCH_STAGES[key]]
        if all(n in names for stage in stages for n in stage):
            return stages
    root, prefix = (
        (model.net, "net.") if isinstance(getattr(model, "net", None), nn.Module) else (model, "")
    )
    stages = [(prefix + n,) for n, child in root.named_children() if _has_params(child)]
    if not stages:
        raise ValueError("the model has no sub-modules with parameters to randomise")
    return stages[::-1]


def _stage_name(stage: tuple[str, ...]) -> str:
    return "+".join(n[4:] if n.startswith("net.") else n for n in stage)


def _reinitialise(module: nn.Module) -> None:
    """Every sub-module's own ``reset_parameters()`` (PyTorch's default initialisation; BatchNorm:
    weight 1, bias 0 and running statistics reset to mean 0, variance 1, so nothing learned is
    left); parameters of modules without one get N(0, 0.02^2)."""
    done = set()
    for sub in module.modules():
        if callable(getattr(sub, "reset_parameters", None)):
            sub.reset_parameters()
            done.update(id(p) for p in sub.parameters(recurse=False))
        elif callable(getattr(sub, "reset_running_stats", None)):
            sub.reset_running_stats()
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in done:
                p.normal_(0.0, 0.02)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho per row of two [N, P] arrays (average ranks for ties); NaN when a row is
    constant (the correlation is undefined)."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    out = np.full(len(a), np.nan)
    ok = denom > 0
    out[ok] = (ra * rb).sum(axis=1)[ok] / denom[ok]
    return np.clip(out, -1.0, 1.0)


def _changed_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho per row, with the undefined ones (a constant row) decided: 0 (changed)
    when the two rows differ, 1 (unchanged) when they are equal; and which were undefined."""
    rho = _spearman_rows(a, b)
    undefined = np.isnan(rho)
    if undefined.any():
        same = np.array(
            [np.allclose(x, y, rtol=1e-6, atol=1e-12) for x, y in zip(a[undefined], b[undefined])]
        )
        rho[undefined] = np.where(same, 1.0, 0.0)
    return rho, undefined


def model_randomisation(
    model: nn.Module,
    x,
    target,
    explain_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    layers=None,
    seed: int = 0,
    return_maps: bool = False,
):
    """Cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency
    Maps"): on a deep copy of ``model``, re-initialise the stages in ``layers`` one after the
    other from the output down (cumulative: stage k leaves stages 1..k random) and recompute
    ``explain_fn(copy, x, target)`` after each.

    ``layers``: a list of module names (``"net.layer4"``) or tuples of names (one stage), default
    :func:`randomisation_stages`. Re-initialisation uses each module's ``reset_parameters()``
    under ``torch.manual_seed(seed + stage)`` (the caller's random state is left alone); BatchNorm
    layers are reset too, running statistics included, so the randomised stages carry nothing
    learned (in eval mode such a BatchNorm is the identity).

    Returns a DataFrame with one row per stage, the first ``"original"`` (the untouched copy: 1
    for any deterministic explain_fn; less shows the method's own noise): ``stage``, ``modules``,
    ``spearman_abs`` (mean over images of Spearman's rho between |original| and |randomised| maps,
    as in the paper), ``spearman`` (signed maps), ``spearman_abs_std``, ``undefined`` (images
    where a map was constant, so rho is not defined: counted as 0, *changed*, when the
    randomised map differs from the original, e.g. went all-zero, and as 1 when both are the
    same constant; see the module docstring), ``per_image`` (the per-image rho of |maps|, a
    tuple, undefined ones decided as above) and ``per_image_undefined`` (a tuple of bools).
    With ``return_maps=True`` also a dict stage -> maps ``[N,H,W]`` (numpy). ``model`` itself
    is never modified.
    """
    stages = _checked_stages(model, layers)
    original = _maps_np(explain_fn(model, x, target))
    work = copy.deepcopy(model)
    work_modules = dict(work.named_modules())
    rows, maps_by_stage = [], {}
    device = model_device(model)
    rng_devices = [device.index or 0] if device.type == "cuda" else []

    def record(name, modules):
        maps = _maps_np(explain_fn(work, x, target))
        rows.append(_randomisation_row(name, modules, original, maps))
        maps_by_stage[name] = maps

    record("original", "")
    for k, stage in enumerate(stages, start=1):
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(seed + k)
            for name in stage:
                _reinitialise(work_modules[name])
        record(_stage_name(stage), ", ".join(stage))
    df = pd.DataFrame(rows)
    return (df, maps_by_stage) if return_maps else df


def _checked_stages(model: nn.Module, layers) -> list[tuple[str, ...]]:
    """``layers`` as a list of stages (tuples of module names), default
    :func:`randomisation_stages`; a clear error for names that are not modules of ``model``."""
    stages = (
        randomisation_stages(model)
        if layers is None
        else [(s,) if isinstance(s, str) else tuple(s) for s in layers]
    )
    names = dict(model.named_modules())
    missing = [n for stage in stages for n in stage if n not in names]
    if missing:
        raise ValueError(
            f"no module(s) {missing} in the model; names are as in "
            f"model.named_modules(), e.g. {list(names)[1:4]}"
        )
    return stages


def _randomisation_row(name: str, modules: str, original: np.ndarray, maps: np.ndarray) -> dict:
    """One row of :func:`model_randomisation`: the ``maps`` after stage ``name`` (the
    re-initialised ``modules``, comma-separated) compared with the ``original`` maps."""
    if maps.shape != original.shape:
        raise ValueError(f"explain_fn returned {maps.shape} after {name}, {original.shape} before")
    flat_o, flat_r = original.reshape(len(original), -1), maps.reshape(len(maps), -1)
    rho_abs, undefined = _changed_rows(np.abs(flat_o), np.abs(flat_r))
    rho, _ = _changed_rows(flat_o, flat_r)
    return {
        "stage": name,
        "modules": modules,
        "spearman_abs": float(rho_abs.mean()),
        "spearman": float(rho.mean()),
        "spearman_abs_std": float(rho_abs.std()),
        "undefined": int(undefined.sum()),
        "per_image": tuple(float(v) for v in rho_abs),
        "per_image_undefined": tuple(bool(u) for u in undefined),
    }


# ----------------------------------------------------------------------------- summary table
def summarise(
    model,
    x,
    target,
    maps_by_method: dict,
    masks=None,
    *,
    steps: int = 20,
    batch_size: int = 64,
    tolerance: float = 0,
) -> pd.DataFrame:
    """One row per method: mean deletion AUC (black baseline; lower is better), insertion AUC
    (blurred; higher is better), and with ``masks`` the pointing-game hit rate, relevance mass and
    rank accuracy; then the mean compactness (area 50 %, 90 %, Gini)."""
    rows = {}
    for method, maps in maps_by_method.items():
        row = {
            "deletion_auc": deletion_curve(
                model, x, target, maps, steps=steps, batch_size=batch_size
            ).auc.mean(),
            "insertion_auc": insertion_curve(
                model, x, target, maps, steps=steps, batch_size=batch_size
            ).auc.mean(),
        }
        if masks is not None:
            row["pointing_game"] = pointing_game(maps, masks, tolerance=tolerance).mean()
            row["relevance_mass"] = relevance_mass(maps, masks).mean()
            row["relevance_rank"] = np.nanmean(relevance_rank(maps, masks))
        row.update(compactness(maps).mean().to_dict())
        rows[method] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def compare_methods(
    model,
    x,
    target,
    settings: dict,
    *,
    masks=None,
    steps: int = 20,
    batch_size: int = 32,
    progress: bool = True,
):
    """Run every attribution setting on the same images and score it.

    ``settings`` maps a label to the keyword arguments of :func:`helpers.explain.attribute`
    (``{"IG (black)": {"method": "integrated_gradients", "baseline": "black"}, ...}``;
    :func:`helpers.explain.settings` gives the notebooks' set). Returns
    the maps by label and a table (see :func:`summarise`) with ``seconds_per_image`` added.
    """
    import time

    from helpers.progress import tqdm

    from .explain import explain

    maps, seconds = {}, {}
    for label, kw in tqdm(settings.items(), desc="methods", disable=not progress):
        start = time.perf_counter()
        maps[label] = explain(model, x, target, **kw)
        seconds[label] = (time.perf_counter() - start) / len(x)
    table = summarise(model, x, target, maps, masks, steps=steps, batch_size=batch_size)
    table["seconds_per_image"] = pd.Series(seconds)
    return maps, table


def sanity_check(
    model, x, target, settings: dict, *, layers=None, seed: int = 0, progress: bool = True
) -> pd.DataFrame:
    """The cascading randomisation check of every setting: one row per (method, stage)."""
    from helpers.progress import tqdm

    from .explain import explain

    frames = []
    for label, kw in tqdm(settings.items(), desc="randomisation", disable=not progress):

        def explain_fn(m, xs, ts, kw=kw):
            return explain(m, xs, ts, **kw)

        frame = model_randomisation(model, x, target, explain_fn, layers=layers, seed=seed)
        frames.append(frame.assign(method=label))
    return pd.concat(frames, ignore_index=True)


def lime_stability(
    model,
    x,
    target,
    *,
    sample_counts=(100, 300, 1000, 3000),
    seeds=(0, 1),
    segmentation: str = "quickshift",
    batch_size: int = 32,
) -> pd.DataFrame:
    """How much LIME's superpixel weights depend on its random draw, per sample count: the
    Spearman correlation between the weights of two seeds (same segmentation) and the
    surrogate's fit score (R^2), averaged over the images."""
    from scipy.stats import spearmanr

    from .explain import attribute

    rows = []
    for n in sample_counts:
        fixed = (
            {"rng": 0} if segmentation == "quickshift" else None
        )  # same superpixels for every seed
        runs = [
            attribute(
                model,
                x,
                target,
                method="lime",
                num_samples=n,
                seed=s,
                segmentation=segmentation,
                segmentation_params=fixed,
                batch_size=batch_size,
            )
            for s in seeds
        ]
        correlations = []
        for i in range(len(x)):
            keys = sorted(runs[0].extras["weights"][i])
            a = [runs[0].extras["weights"][i][k] for k in keys]
            b = [runs[1].extras["weights"][i].get(k, 0.0) for k in keys]
            correlations.append(spearmanr(a, b).statistic)
        rows.append(
            {
                "samples": n,
                "seed_agreement": float(np.nanmean(correlations)),
                "fit_score": float(np.mean([r.extras["score"].mean().item() for r in runs])),
            }
        )
    return pd.DataFrame(rows).set_index("samples")


def localisation_table(maps_by_method: dict, masks) -> pd.DataFrame:
    """Per method: pointing-game hit rate and mean relevance mass against ground-truth masks."""
    rows = {
        m: {
            "pointing_game": pointing_game(v, masks).mean(),
            "relevance_mass": relevance_mass(v, masks).mean(),
        }
        for m, v in maps_by_method.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
    table.attrs["mask_share"] = float(
        _masks_np(masks, _maps_np(next(iter(maps_by_method.values()))).shape).mean()
    )
    return table


def coarse_stages(model: nn.Module, *, count: int = 4) -> list[tuple[str, ...]]:
    """:func:`randomisation_stages` merged into ``count`` cumulative steps of about equal size
    (the top stage, usually the classifier head, stays on its own)."""
    stages = randomisation_stages(model)
    if len(stages) <= count:
        return stages
    head, rest = stages[0], stages[1:]
    bounds = np.linspace(0, len(rest), count).round().astype(int)
    merged = [
        tuple(name for stage in rest[a:b] for name in stage)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return [head] + [m for m in merged if m]


def shortcut_table(
    models_by_name: dict, marked, boxes, target: int, settings: dict
) -> pd.DataFrame:
    """Share of each method's positive attribution for ``target`` that lands on the planted
    mark, per model (columns), next to the mark's share of the image."""
    from .explain import explain

    rows = {}
    for label, kw in settings.items():
        for name, model in models_by_name.items():
            maps = explain(model, marked, target, **kw)
            share, area = shortcut_share(maps, boxes)
            rows.setdefault(label, {})[name] = float(np.nanmean(share))
        rows[label]["mark's area share"] = float(np.nanmean(area))
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def cascade_correlation(sanity: pd.DataFrame, column: str = "spearman_abs") -> pd.Series:
    """One number per method from :func:`sanity_check`: the mean rank correlation with the
    original map over the randomised stages (the area under Adebayo et al.'s cascade curve,
    normalised). Near 0: the map depends on the learned weights; near 1: it does not."""
    randomised = sanity[sanity["stage"] != "original"]
    return randomised.groupby("method", sort=False)[column].mean()


def sanity_images(sanity: pd.DataFrame, method: str, *, stage: str = "all") -> pd.DataFrame:
    """One row per image of ``method`` in a :func:`sanity_check` frame: ``correlation`` (the
    rank correlation of |maps| with the original; with ``stage="all"`` its mean over the
    randomised stages, the per-image term of :func:`cascade_correlation`; ``"last"`` the fully
    randomised stage; or a stage name) and ``undefined`` (how many of the correlations used
    were undefined, i.e. decided as changed/unchanged, see :func:`model_randomisation`)."""
    if "method" in sanity.columns:
        if method not in set(sanity["method"]):
            raise ValueError(
                f"no method {method!r} in the sanity check; it has "
                f"{list(pd.unique(sanity['method']))}"
            )
        rows = sanity[sanity["method"] == method]
    else:
        rows = sanity
    if "per_image" not in rows.columns:
        raise ValueError(
            "this sanity frame has no per-image correlations (column 'per_image'); "
            "recompute it with quality.sanity_check / model_randomisation"
        )
    randomised = rows[rows["stage"] != "original"]
    if stage == "all":
        used = randomised
    elif stage == "last":
        used = randomised.iloc[-1:]
    else:
        used = rows[rows["stage"] == stage]
        if used.empty:
            raise ValueError(
                f"no stage {stage!r}; expected 'all', 'last' or one of {list(rows['stage'])}"
            )
    if used.empty:
        raise ValueError("the sanity check has no randomised stage")
    values = np.array([list(v) for v in used["per_image"]], dtype=float)  # [stages, images]
    undefined = np.array([list(v) for v in used["per_image_undefined"]], dtype=bool)
    return pd.DataFrame({"correlation": values.mean(0), "undefined": undefined.sum(0)}).rename_axis(
        "image"
    )


SANITY_MIN_IMAGES = (
    8  # fewer images: the gate does not decide (a percentile bootstrap is too narrow)
)


def sanity_gate(
    sanity: pd.DataFrame,
    method: str,
    *,
    threshold: float = 0.5,
    stage: str = "all",
    seed: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
    min_images: int = SANITY_MIN_IMAGES,
) -> dict:
    """The sanity-check decision for ``method`` with its uncertainty: the mean over images of
    the rank correlation with the original map after randomisation (:func:`sanity_images`;
    ``stage="all"`` gives :func:`cascade_correlation`'s value) and a seeded percentile bootstrap
    interval over the images (:func:`helpers.stats.bootstrap`).

    ``decision``: ``"pass"`` when the whole interval lies below ``threshold`` (the maps depend on
    the learned weights), ``"fail"`` when it lies above (they do not), ``"undecided"`` when it
    straddles the threshold or fewer than ``min_images`` images were checked: a percentile
    bootstrap over a handful of images is too narrow (it cannot see variation it was not shown;
    on 3 images it spans about their range), so it reports the interval but does not decide.
    Check 16 or more images for a decision that means something.

    Returns ``dict(mean, ci_low, ci_high, n_images, n_undefined, decision, threshold, stage,
    level, min_images)``; ``n_undefined`` counts the undefined correlations among those averaged."""
    from .stats import bootstrap

    per_image = sanity_images(sanity, method, stage=stage)
    e = bootstrap(
        per_image["correlation"].to_numpy(), np.mean, n_boot=n_boot, seed=seed, level=level
    )
    if e.n < max(2, int(min_images)) or not np.isfinite(e.low):
        decision = "undecided"
    elif e.high < threshold:
        decision = "pass"
    elif e.low > threshold:
        decision = "fail"
    else:
        decision = "undecided"
    return {
        "mean": e.estimate,
        "ci_low": e.low,
        "ci_high": e.high,
        "n_images": e.n,
        "n_undefined": int(per_image["undefined"].sum()),
        "decision": decision,
        "threshold": float(threshold),
        "stage": stage,
        "level": level,
        "min_images": int(min_images),
    }
