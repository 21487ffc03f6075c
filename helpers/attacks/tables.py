"""Summaries of minimal-epsilon tables: per class (with intervals) and per epsilon."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import bootstrap, wilson
from ._base import check_eps


def _median_ci(values, seed):
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

    ``df``: the frame of :func:`helpers.attacks.fragility_by_region` (or
    :func:`helpers.attacks.fragility`), or of :func:`helpers.attacks.minimal_epsilon` /
    :func:`helpers.attacks.minimum_norm_epsilon` (one region, named ``whole``).

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
    object is the more fragile region. Compare regions of equal area
    (:func:`helpers.attacks.equal_area`).
    """
    df, ok, has_l2 = _correct_images(df)
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
            row.update(_region_columns(sel, region, seed + 101 * k + j, has_l2, budget))
        if "object" in regions and "background" in regions:
            row.update(_object_background_columns(ok[ok["label"] == k], seed + 101 * k + 50))
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


def _correct_images(df: pd.DataFrame):
    """The images classified correctly before the attack, with ``eps_c`` / ``l2_c`` (epsilon and
    L2 norm, +inf where the image never flipped), a ``region`` (``whole`` where the frame has
    none) and an ``image`` column (the index where it has none). Returns ``(df, ok, has_l2)``:
    the frame (with its region), those images, and whether the frame has L2 norms."""
    ok = df[~df["already_wrong"]].copy()
    ok["eps_c"] = ok["epsilon"].where(ok["flipped"], np.inf)
    has_l2 = "l2_norm" in ok.columns  # minimal_epsilon's own frame has no L2 column
    ok["l2_c"] = ok["l2_norm"].where(ok["flipped"], np.inf) if has_l2 else np.nan
    if "region" not in df.columns:
        df, ok = df.assign(region="whole"), ok.assign(region="whole")
    if "image" not in ok.columns:
        ok = ok.assign(image=ok.index)
    return df, ok, has_l2


def _region_columns(sel: pd.DataFrame, region: str, seed: int, has_l2: bool, budget) -> dict:
    """The columns of one class in one region, from its correctly classified images ``sel``."""
    row = {}
    est, low, high = _median_ci(sel["eps_c"], seed)
    row[f"median_eps_{region}"] = est
    row[f"median_eps_{region}_ci_low"], row[f"median_eps_{region}_ci_high"] = low, high
    row[f"n_{region}"] = len(sel)
    if has_l2:
        row[f"median_l2_{region}"] = float(np.median(sel["l2_c"])) if len(sel) else np.nan
    row[f"share_not_flipped_{region}"] = float((~sel["flipped"]).mean()) if len(sel) else np.nan
    if budget is not None:
        kk = int((sel["eps_c"] > budget).sum())
        row[f"share_withstanding_{region}"] = kk / len(sel) if len(sel) else np.nan
        lo, hi = wilson(kk, len(sel)) if len(sel) else (np.nan, np.nan)
        (
            row[f"share_withstanding_{region}_ci_low"],
            row[f"share_withstanding_{region}_ci_high"],
        ) = lo, hi
    return row


def _object_background_columns(ok_class: pd.DataFrame, seed: int) -> dict:
    """The paired ratio eps_object / eps_background of one class's correctly classified images
    ``ok_class`` (median, bootstrap interval, number of images with a finite ratio)."""
    o = ok_class[ok_class["region"] == "object"].set_index("image")["eps_c"]
    b = ok_class[ok_class["region"] == "background"].set_index("image")["eps_c"]
    o, b = o.align(b, join="inner")
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (o / b).to_numpy(dtype=float)  # inf/inf -> nan: left out
    est, low, high = _median_ci(r, seed)
    return {
        "object_background_ratio": est,
        "object_background_ratio_ci_low": low,
        "object_background_ratio_ci_high": high,
        "n_object_background": int(np.sum(~np.isnan(r))),
    }


def robust_accuracy_from_epsilons(
    df: pd.DataFrame, epsilons, *, max_eps: float | None = None
) -> pd.DataFrame:
    """Robust accuracy per epsilon read off the minimal epsilons of every image (the frame of
    :func:`helpers.attacks.minimum_norm_epsilon` / :func:`helpers.attacks.minimal_epsilon`, one row
    per image): the share of
    ALL images whose minimal flipping epsilon exceeds ``e`` (already misclassified images have
    epsilon 0; images that never flipped count as beyond ``max_eps``), with a Wilson interval.
    Since a minimum-norm attack only bounds each image's minimal epsilon from above, this is an
    upper bound on the accuracy under the best possible attack. Epsilons at or above ``max_eps``
    (default ``df.attrs["max_eps"]``) are NaN: nothing is known there. Returns ``epsilon``,
    ``accuracy``, ``low``, ``high``, ``n_correct``, ``n``."""
    if "region" in df.columns:
        df = df[df["region"] == "whole"]
    max_eps = df.attrs.get("max_eps") if max_eps is None else max_eps
    eps = df["epsilon"].where(df["flipped"], np.inf).to_numpy(dtype=float)
    n = len(eps)
    rows = []
    for e in np.atleast_1d(np.asarray(epsilons, dtype=float)):
        check_eps(e, "every epsilon")
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


def _interval_strings(frame: pd.DataFrame, column: str, scale: float = 1.0) -> list[str]:
    """``"[low, high]"`` of ``column``'s interval columns, times ``scale``, two decimals."""
    pairs = frame[[f"{column}_ci_low", f"{column}_ci_high"]].to_numpy(dtype=float) * scale
    return [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in pairs]


def whole_image_table(
    per_class: pd.DataFrame, *, budget_grey_levels: float | None = None, fgsm=None
) -> pd.DataFrame:
    """Notebook 09's per-class table of :func:`per_class_fragility` (whole image), in grey
    levels (epsilon x 255): ``n`` correctly classified images attacked, the median minimal
    epsilon with its 95 % interval, the share that withstands ``budget_grey_levels`` with its
    Wilson interval (when the table has it), and ``fgsm``'s median (a second
    :func:`per_class_fragility` table, e.g. of the FGSM search) for comparison."""
    out = pd.DataFrame(index=per_class.index)
    out["n"] = per_class["n_whole"]
    out["median eps x255"] = per_class["median_eps_whole"] * 255
    out["95% CI"] = _interval_strings(per_class, "median_eps_whole", 255)
    if "share_withstanding_whole" in per_class and budget_grey_levels is not None:
        out[f"withstand {budget_grey_levels}/255"] = per_class["share_withstanding_whole"]
        out["95% CI "] = _interval_strings(per_class, "share_withstanding_whole")
    if fgsm is not None:
        out["FGSM median eps x255"] = fgsm["median_eps_whole"] * 255
    return out


def region_table(per_class: pd.DataFrame) -> pd.DataFrame:
    """Notebook 09's object-vs-background table of :func:`per_class_fragility`: the median
    minimal epsilon (x255) in the object and in an equal-area part of the background, the
    number of images attacked in both, and the median paired ratio object / background with its
    95 % interval (< 1: the object is the more fragile region)."""
    out = pd.DataFrame(
        {f"eps x255 {r}": per_class[f"median_eps_{r}"] * 255 for r in ("object", "background")}
    )
    out["n"] = per_class["n_object_background"]
    out["object / background"] = per_class["object_background_ratio"]
    out["95% CI"] = _interval_strings(per_class, "object_background_ratio")
    return out
