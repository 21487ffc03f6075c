"""The smallest flipping L-inf epsilon by a grid-then-root search along a fixed attack path.

:func:`minimal_epsilon` evaluates ``x(eps)`` (the FGSM direction ``clip(x + eps * d, 0, 1)``,
or a PGD attack of radius eps) for the whole batch at once, in three steps:

1. the clean pass (:class:`_Evaluator` holds the path and counts the passes);
2. :func:`_walk_grid`: a coarse grid walked upwards in batched forwards to each image's FIRST
   flipping bracket ``[lo, hi]`` (lo right, hi wrong), kept in :class:`_Brackets`;
3. :func:`_root_search`: the root of the logit margin inside every bracket at once (Illinois
   regula falsi, or bisection), to ``tol``.

The table it returns is :func:`helpers.attacks.results.result_frame`'s.

The evaluator holds the path as a callable ``path(idx, e) -> images`` (:func:`_fgsm_path`,
:func:`_pgd_path`); :func:`minimal_parameter` runs the same search along any other
one-parameter family of images that is the clean image at 0 (a natural corruption's severity:
:func:`helpers.corruptions.minimal_severity`).

Along ``direction="fgsm"`` the search is over ``x(eps) = clip(x + eps * d, 0, 1)`` with
``d = sign(grad CE)`` (times the mask) from one forward+backward. The grid is walked upwards
only for the images that have not flipped yet, and each image stops at its FIRST grid point
where it is misclassified (the flip need not be monotone in epsilon), so an image that never
flips walks the whole grid (a search that assumes monotonicity would stop after testing
max_eps). The cost is at most 1 F+B + ``grid`` + root forwards per image.

Why a linear grid by default: a grid point costs one forward for every image still unflipped,
and along the FGSM direction the fine-tuned scene model's minimal epsilons are large (median
~0.1, 14 % beyond 0.25), so a geometric grid, which spends half its points below max_eps/16,
costs more grid forwards and saves no root-search forwards. Defaults measured on 256 scene
images (``benchmarks/minimal_epsilon.py``): 8 linear points up to 0.25 cost 4.2 grid + 6.5
root forwards per image, about 13 forward-equivalents with the forward+backward; 16 points up
to 0.1 cost 10.8 grid forwards and left 46 % unflipped. ``spacing="geometric"`` is there for
searches whose epsilons spread over decades (PGD, whose minimal epsilons on this model are
20-80 times smaller).

The root search: inside the bracket [lo, hi] (lo right, hi wrong) the root of the margin
``m(eps) = logit_y - max_other logit`` is searched for all images in parallel, one batched
forward per iteration: ``method="illinois"`` (regula falsi with the Illinois modification;
each secant estimate is probed at +-tol/2 so that the bracket closes as soon as the estimate
is good, with a bisection step whenever the bracket shrank by less than half) or
``"bisection"``. The bracket invariant holds throughout: the prediction at ``lo`` is right, at
``hi`` wrong; the search stops when ``hi - lo <= tol`` and returns ``hi``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import folding
from ..plumbing import as_labels, check_images, eval_mode, model_device
from ._base import as_mask, check_eps, directions, forward, margin
from .fixed_budget import pgd_steps
from .results import result_frame

# Images evaluated together in one forward when few images are still searching: below this,
# the grid search evaluates several grid points per image in the same forward (speculatively).
_MIN_GRID_BATCH = 8


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
    """Evaluates (image, parameter) pairs along a path in forwards of ``batch_size`` and counts
    the passes.

    ``path(idx, e) -> images``: ``x[idx]`` moved to the parameter ``e`` (one value per image, in
    ``x``'s dtype): :func:`_fgsm_path`, :func:`_pgd_path`, or a corruption's severity
    (:func:`helpers.corruptions.minimal_severity`). ``backward_per_image``: forward+backward
    passes one image costs per call of the path (a PGD run: its steps).
    """

    def __init__(self, model, x, y, batch_size, path, *, backward_per_image: int = 0):
        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.path, self.backward_per_image = path, int(backward_per_image)
        self.n_forward = torch.zeros(len(x), dtype=torch.long)
        self.n_backward = torch.zeros(len(x), dtype=torch.long)
        self.batched_forwards = 0
        self.chunk_sizes: list[int] = []

    def perturb(self, i: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x[i] moved along the path to e (one value per image); counts its backward passes."""
        e = e.to(self.x.dtype)
        if self.backward_per_image:
            self.n_backward.index_add_(0, i.cpu(), torch.full((len(i),), self.backward_per_image))
        return self.path(i, e)

    def adversarials(self, eps: np.ndarray) -> torch.Tensor:
        """Every image moved to its ``eps`` (NaN: left clean), in chunks of batch_size."""
        out = self.x.clone()
        todo = torch.as_tensor(np.flatnonzero(np.isfinite(eps) & (eps > 0)), device=self.x.device)
        e_all = torch.as_tensor(np.nan_to_num(eps), dtype=self.x.dtype, device=self.x.device)
        for i in todo.split(self.batch_size):
            out[i] = self.perturb(i, e_all[i])
        return out

    def __call__(self, idx: torch.Tensor, eps: torch.Tensor):
        """margin, predicted class, its softmax probability, for x[idx] moved to eps."""
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
            margins.append(margin(logits, self.y[i]))
            preds.append(pred)
            confs.append(conf)
        if not margins:
            e = torch.empty(0, device=self.x.device)
            return e, e.long(), e
        return torch.cat(margins).double(), torch.cat(preds), torch.cat(confs).double()


def _fgsm_path(x: torch.Tensor, d: torch.Tensor):
    """``path(i, e) = clip(x[i] + e * d[i], 0, 1)``."""

    def path(i, e):
        return (x[i] + e.view(-1, 1, 1, 1) * d[i]).clamp(0, 1)

    return path


def _pgd_path(model, x, y, kw: dict, mask, unit_start):
    """``path(i, e)``: PGD of radius e on x[i] (``kw``: its settings, with ``steps``)."""
    kw = dict(kw)
    steps = int(kw.pop("steps", 10))

    def path(i, e):
        return pgd_steps(
            model,
            x[i],
            y[i],
            eps=e,
            steps=steps,
            mask=None if mask is None else mask.expand(len(x), *mask.shape[1:])[i],
            unit_start=None if unit_start is None else unit_start[i],
            **kw,
        )

    return path, steps


def _fgsm_evaluator(model, x, y, mask, batch_size):
    """The FGSM path (one forward+backward per image) and the clean logits."""
    sign, clean_logits = directions(model, x, y, batch_size)
    d = sign if mask is None else sign * mask
    return _Evaluator(model, x, y, batch_size, _fgsm_path(x, d)), clean_logits


def _pgd_evaluator(model, x, y, mask, batch_size, pgd_kw):
    """The PGD path (``pgd_kw``; a random start is drawn once per image and scaled with eps)
    and the clean logits (one forward, counted)."""
    clean_logits = forward(model, x, batch_size)
    kw = {"random_start": False, "steps": 10, **(pgd_kw or {})}
    kw.pop("eps", None)
    unit = None
    if kw.pop("random_start"):
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(kw.get("seed") or 0))
        unit = 2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1
    kw.pop("seed", None)
    kw.setdefault("norm", "linf")
    if kw["norm"] != "linf":
        raise ValueError("minimal_epsilon searches an L-inf radius; pgd_kw norm must be 'linf'")
    kw.update(random_start=False, seed=None, targeted=False)
    kw.setdefault("step_size", None)
    kw.setdefault("loss", "ce")
    path, steps = _pgd_path(model, x, y, kw, mask, unit)
    ev = _Evaluator(model, x, y, batch_size, path, backward_per_image=steps)
    ev.n_forward += 1  # the clean forward
    return ev, clean_logits


@dataclass
class _Brackets:
    """Per image: the bracket [lo, hi] with the margins there (``f_lo`` > 0 >= ``f_hi``), the
    class and its probability at hi, and whether a bracket was found at all."""

    lo: torch.Tensor
    f_lo: torch.Tensor
    hi: torch.Tensor
    f_hi: torch.Tensor
    hi_pred: torch.Tensor
    hi_conf: torch.Tensor
    found: torch.Tensor

    @classmethod
    def start(cls, clean_margin: torch.Tensor) -> _Brackets:
        n = len(clean_margin)
        return cls(
            lo=torch.zeros(n, dtype=torch.float64),
            f_lo=clean_margin.clone(),
            hi=torch.full((n,), np.nan, dtype=torch.float64),
            f_hi=torch.zeros(n, dtype=torch.float64),
            hi_pred=torch.zeros(n, dtype=torch.long),
            hi_conf=torch.full((n,), np.nan, dtype=torch.float64),
            found=torch.zeros(n, dtype=torch.bool),
        )


def _walk_grid(ev: _Evaluator, br: _Brackets, active: torch.Tensor, y, eps_grid) -> None:
    """Walk the grid upwards for the ``active`` images (all of them share the next grid level)
    and bracket each at its FIRST wrong grid point; several levels per forward when few
    images are left."""
    level, n_grid = 0, len(eps_grid)
    while len(active) and level < n_grid:
        k = min(n_grid - level, max(1, math.ceil(_MIN_GRID_BATCH / len(active))))
        levels = eps_grid[level : level + k]
        idx = active.repeat_interleave(k)
        m, pred, conf = ev(idx.to(ev.x.device), levels.repeat(len(active)))
        m, pred, conf = (t.cpu().view(len(active), k) for t in (m, pred, conf))
        wrong = pred != y.cpu()[active][:, None]
        has = wrong.any(1)
        first = torch.where(
            has, wrong.int().argmax(1), torch.full_like(has, k - 1, dtype=torch.long)
        )
        rows = torch.arange(len(active))
        # lo: the last right grid point before the first wrong one (or the last evaluated)
        prev = first - 1
        new_lo = torch.where(prev >= 0, levels[prev.clamp_min(0)], br.lo[active])
        new_flo = torch.where(prev >= 0, m[rows, prev.clamp_min(0)], br.f_lo[active])
        a_has = active[has]
        br.lo[a_has], br.f_lo[a_has] = new_lo[has], new_flo[has]
        br.hi[a_has] = levels[first[has]]
        br.f_hi[a_has] = m[rows[has], first[has]].clamp(max=0.0)
        br.hi_pred[a_has] = pred[rows[has], first[has]]
        br.hi_conf[a_has] = conf[rows[has], first[has]]
        br.found[a_has] = True
        a_no = active[~has]
        br.lo[a_no], br.f_lo[a_no] = levels[-1], m[~has, -1]
        active = a_no
        level += k


def _probe_points(a_lo, a_hi, f_lo, f_hi, force_bisect, tol, method):
    """One or two points to evaluate per bracket: the midpoint (bisection), or the Illinois
    secant estimate probed at +-tol/2 (at lo + tol or hi - tol when it lies that close)."""
    width = a_hi - a_lo
    mid = (a_lo + a_hi) / 2
    p1, p2 = mid.clone(), torch.full_like(mid, np.nan)
    if method == "illinois":
        c = a_lo + width * f_lo / (f_lo - f_hi)
        c = torch.where(torch.isfinite(c), c, mid)
        secant = ~force_bisect & (width > 2 * tol)
        near_lo = secant & (c - tol / 2 <= a_lo)
        near_hi = secant & ~near_lo & (c + tol / 2 >= a_hi)
        pair = secant & ~near_lo & ~near_hi
        p1 = torch.where(near_lo, a_lo + tol, p1)
        p1 = torch.where(near_hi, a_hi - tol, p1)
        p1 = torch.where(pair, c - tol / 2, p1)
        p2 = torch.where(pair, c + tol / 2, p2)
    return p1, p2


def _root_search(ev: _Evaluator, br: _Brackets, y, tol: float, method: str) -> int:
    """Shrink every found bracket to ``hi - lo <= tol``, one batched forward per iteration;
    the invariant (right at lo, wrong at hi) holds throughout. Returns the iterations."""
    n = len(y)
    idx_b = torch.nonzero(br.found).flatten()
    moved = torch.zeros(n, dtype=torch.long)  # 1: hi moved last, -1: lo moved, 0: both
    force_bisect = torch.zeros(n, dtype=torch.bool)
    iterations = 0
    yc = y.cpu()
    while True:
        act = idx_b[(br.hi[idx_b] - br.lo[idx_b]) > tol]
        if not len(act):
            return iterations
        iterations += 1
        a_lo, a_hi = br.lo[act], br.hi[act]
        width = a_hi - a_lo
        p1, p2 = _probe_points(
            a_lo, a_hi, br.f_lo[act], br.f_hi[act], force_bisect[act], tol, method
        )
        two = ~torch.isnan(p2)
        idx = torch.cat([act, act[two]])
        pts = torch.cat([p1, p2[two]])
        m, pred, conf = (t.cpu() for t in ev(idx.to(ev.x.device), pts))
        right = pred == yc[idx]
        # per image: lowest wrong point becomes hi, then highest right point below hi becomes lo
        k1 = len(act)
        r1, m1, pr1, c1 = right[:k1], m[:k1], pred[:k1], conf[:k1]
        r2 = torch.ones(k1, dtype=torch.bool)
        m2 = torch.zeros(k1, dtype=torch.float64)
        pr2 = torch.zeros(k1, dtype=torch.long)
        c2 = torch.zeros(k1, dtype=torch.float64)
        r2[two], m2[two], pr2[two], c2[two] = right[k1:], m[k1:], pred[k1:], conf[k1:]
        new_hi, new_fhi = a_hi.clone(), br.f_hi[act].clone()
        new_pred, new_conf = br.hi_pred[act].clone(), br.hi_conf[act].clone()
        w2 = two & ~r2
        w1 = ~r1
        for wmask, p, mm, pr, cf in ((w2, p2, m2, pr2, c2), (w1, p1, m1, pr1, c1)):  # p1 wins
            new_hi = torch.where(wmask, p, new_hi)
            new_fhi = torch.where(wmask, mm.clamp(max=0.0), new_fhi)
            new_pred = torch.where(wmask, pr, new_pred)
            new_conf = torch.where(wmask, cf, new_conf)
        new_lo, new_flo = a_lo.clone(), br.f_lo[act].clone()
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
        br.lo[act], br.f_lo[act], br.hi[act], br.f_hi[act] = new_lo, new_flo, new_hi, new_fhi
        br.hi_pred[act], br.hi_conf[act] = new_pred, new_conf


def _search(ev: _Evaluator, clean_logits, y, eps_grid, tol, method):
    """Grid walk to the first flipping bracket, then the root search; arrays per image."""
    n = len(y)
    pred0 = clean_logits.argmax(1).cpu()
    conf0 = clean_logits.softmax(1).amax(1).double().cpu()
    wrong0 = pred0 != y.cpu()
    eps_out = np.full(n, np.nan)
    flip_class = np.zeros(n, dtype=np.int64)
    conf_out = np.full(n, np.nan)
    eps_out[wrong0.numpy()] = 0.0
    flip_class[wrong0.numpy()] = pred0[wrong0].numpy()
    conf_out[wrong0.numpy()] = conf0[wrong0].numpy()

    br = _Brackets.start(margin(clean_logits, y).double().cpu())
    start = int(ev.n_forward.sum())
    _walk_grid(ev, br, torch.nonzero(~wrong0).flatten(), y, eps_grid)
    grid_forwards = int(ev.n_forward.sum()) - start
    start = int(ev.n_forward.sum())
    iterations = _root_search(ev, br, y, tol, method)
    root_forwards = int(ev.n_forward.sum()) - start

    b = br.found.numpy()
    eps_out[b] = br.hi[br.found].to(ev.x.dtype).double().numpy()
    flip_class[b] = br.hi_pred[br.found].numpy()
    conf_out[b] = br.hi_conf[br.found].numpy()
    return {
        "eps": eps_out,
        "flip_class": flip_class,
        "conf": conf_out,
        "grid_forwards": grid_forwards,
        "root_forwards": root_forwards,
        "root_iterations": iterations,
    }


def _check_search(max_eps, tol, method, direction, name="max_eps"):
    check_eps(max_eps, name)
    if max_eps <= 0:
        raise ValueError(f"{name} must be > 0, got {max_eps!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if method not in ("illinois", "bisection"):
        raise ValueError(f"unknown method {method!r}; expected 'illinois' or 'bisection'")
    if direction is not None and direction not in ("fgsm", "pgd"):
        raise ValueError(f"unknown direction {direction!r}; expected 'fgsm' or 'pgd'")


def _evaluator(model, xd, y, m, batch_size, direction, pgd_kw):
    """The evaluator of the attack path ``direction`` and the clean logits; also the
    forward+backward passes not counted by the evaluator (1 for the FGSM direction)."""
    if direction == "fgsm":
        ev, clean_logits = _fgsm_evaluator(model, xd, y, m, batch_size)
        return ev, clean_logits, 1
    ev, clean_logits = _pgd_evaluator(model, xd, y, m, batch_size, pgd_kw)
    return ev, clean_logits, 0


def _search_frame(ev: _Evaluator, res: dict, y, clean_logits, n_backward0, eps_grid, settings):
    """The frame of :func:`minimal_epsilon` from the search's per-image arrays ``res`` and the
    evaluator's pass counts; ``df.attrs``: the grid, the ``settings``, then the pass totals."""
    n = len(y)
    return result_frame(
        epsilon=res["eps"],
        labels=y,
        clean_logits=clean_logits,
        flip_class=res["flip_class"],
        confidence_at_flip=res["conf"],
        n_forward=ev.n_forward.numpy(),
        n_backward=ev.n_backward.numpy() + n_backward0,
        attrs={
            "grid": eps_grid.numpy().tolist(),
            **settings,
            "batched_forwards": ev.batched_forwards,
            "forward_batch_sizes": list(ev.chunk_sizes),
            "forwards_per_image": float(ev.n_forward.double().mean()) if n else 0.0,
            "grid_forwards_per_image": res["grid_forwards"] / max(n, 1),
            "root_forwards_per_image": res["root_forwards"] / max(n, 1),
            "root_iterations": res["root_iterations"],
        },
    )


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
):
    """The smallest L-inf epsilon that flips each image's prediction, for the batch at once.

    ``direction="fgsm"``: along ``clip(x + eps * sign(grad CE), 0, 1)``, the grid
    (:func:`epsilon_grid`) walked upwards to each image's FIRST wrong point, then the root of
    the logit margin in that bracket by ``method`` (``"illinois"`` or ``"bisection"``) to ``tol``
    (details, costs and why the grid is linear: the module docstring).
    ``direction="pgd"``: the same search over the radius of an L-inf PGD attack (``pgd_kw``,
    default ``steps=10, random_start=False``; with ``random_start=True`` one start per image
    is drawn from ``seed`` and scaled with eps, so each eps is deterministic); the root search
    is always bisection (a PGD margin need not be continuous in eps).

    Returns the frame of :func:`helpers.attacks.results.result_frame`, one row per image:
    ``epsilon`` (NaN if no flip up to ``max_eps``; 0 for images already misclassified),
    ``flipped``, ``already_wrong``, ``label``, ``pred_clean``, ``flip_class`` (class predicted
    at ``epsilon``), ``confidence_before``, ``confidence_at_flip``, ``n_forward`` (forward
    passes besides the forward+backward passes; for ``"pgd"`` with the clean forward) and
    ``n_backward`` (forward+backward passes: 1 for ``"fgsm"``, ``steps`` per PGD run).
    ``df.attrs``: the grid, the method, the pass totals. ``return_adversarial=True`` returns
    ``(df, x_adv)``, each image attacked at its epsilon (clean where none flipped; PGD: one more
    attack per image).
    """
    check_images(x)
    _check_search(max_eps, tol, method, direction)
    model = folding.folded(model, x)  # same function, BatchNorm folded into the convolutions
    device = model_device(model)
    xd = x.detach().to(device)
    y = as_labels(y, len(xd), device)
    m = as_mask(mask, xd)
    eps_grid = torch.tensor(epsilon_grid(max_eps, grid, spacing), dtype=torch.float64)
    with eval_mode(model):
        ev, clean_logits, n_backward0 = _evaluator(model, xd, y, m, batch_size, direction, pgd_kw)
        method = "bisection" if direction == "pgd" else method
        res = _search(ev, clean_logits, y, eps_grid, tol, method)
    settings = dict(spacing=spacing, method=method, direction=direction, tol=tol, max_eps=max_eps)
    df = _search_frame(ev, res, y, clean_logits, n_backward0, eps_grid, settings)
    if return_adversarial:
        with eval_mode(model):
            x_adv = ev.adversarials(np.where(df["flipped"], df["epsilon"], np.nan))
        return df, x_adv.detach().to(x.device)
    return df


def minimal_parameter(
    model: nn.Module,
    x: torch.Tensor,
    y,
    path,
    *,
    max_value: float = 1.0,
    grid: int = 8,
    tol: float = 0.02,
    method: str = "bisection",
    spacing: str = "linear",
    batch_size: int = 64,
    clean_logits: torch.Tensor | None = None,
    settings: dict | None = None,
) -> pd.DataFrame:
    """The smallest parameter in (0, ``max_value``] along ``path`` that flips each image: the
    search of :func:`minimal_epsilon` (grid walk, then the root search to ``tol``) along any path.

    ``path(idx, e) -> images``: ``x[idx]`` (``x`` on the model's device) moved to the parameter
    ``e`` (a tensor of one value per image, ``x``'s dtype); it must be deterministic, and give
    the clean image at 0. The bracket (right at lo, wrong at hi) is checked by predictions,
    so either ``method`` is correct to ``tol``; ``"illinois"`` pays off only where the margin
    is continuous in the parameter, ``"bisection"`` costs the same anywhere. ``clean_logits``:
    the model's logits of ``x`` if already computed (then ``n_forward`` does not count a clean
    forward; otherwise it does). Returns :func:`helpers.attacks.results.result_frame`'s table
    (the parameter in ``epsilon``); ``df.attrs``: the grid, ``settings``, the pass totals.
    """
    _check_search(max_value, tol, method, None, "max_value")
    model = folding.folded(model, x)
    y = as_labels(y, len(x), x.device)
    values = torch.tensor(epsilon_grid(max_value, grid, spacing), dtype=torch.float64)
    with eval_mode(model):
        ev = _Evaluator(model, x, y, batch_size, path)
        if clean_logits is None:
            clean_logits = forward(model, x, batch_size)
            ev.n_forward += 1
        res = _search(ev, clean_logits, y, values, tol, method)
    settings = {"spacing": spacing, "method": method, "tol": tol, **(settings or {})}
    return _search_frame(ev, res, y, clean_logits, 0, values, settings)
