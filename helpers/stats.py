"""Intervals for per-class figures: Wilson for proportions, a seeded bootstrap otherwise.

Every per-class figure of the audit is an estimate from a small sample of images. These helpers
give it a 95 % interval and its n, vectorised and seeded so that a notebook prints the same
numbers on every run.

- `wilson(k, n)`: the Wilson score interval of a proportion k/n (arrays broadcast).
- `bootstrap(values, stat)`: percentile bootstrap of a statistic of one sample; returns the
  estimate, the interval and (on request) the replicates, so that a caller can combine the
  replicates of several statistics (the trust score combines per-source replicates).
- `per_group(frame, group, value)`: one row per group with value, low, high, n, computed by
  Wilson (proportion of a 0/1 column) or the bootstrap.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = [
    "wilson",
    "bootstrap",
    "Estimate",
    "per_group",
    "z_value",
    "replicates",
    "percentile_interval",
]


def z_value(level: float = 0.95) -> float:
    """Two-sided standard normal quantile for a confidence level (1.96 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(_st.norm.ppf(0.5 + level / 2))


def wilson(k, n, *, level: float = 0.95):
    """Wilson score interval of the proportion k/n; returns (low, high).

    Scalars give floats, arrays give arrays (broadcast). n == 0 gives (nan, nan): no data,
    no interval. The interval never leaves [0, 1] and is not degenerate at k = 0 or k = n.
    """
    k_arr = np.asarray(k, dtype=float)
    n_arr = np.asarray(n, dtype=float)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("wilson needs 0 <= k <= n")
    z = z_value(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k_arr / n_arr
        denom = 1 + z * z / n_arr
        centre = (p + z * z / (2 * n_arr)) / denom
        half = z * np.sqrt(p * (1 - p) / n_arr + z * z / (4 * n_arr * n_arr)) / denom
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    empty = n_arr == 0
    low = np.where(empty, np.nan, low)
    high = np.where(empty, np.nan, high)
    # exact ends: k == 0 -> low 0, k == n -> high 1 (avoid 1e-17 residue)
    low = np.where((k_arr == 0) & ~empty, 0.0, low)
    high = np.where((k_arr == n_arr) & ~empty, 1.0, high)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


class Estimate(NamedTuple):
    """A statistic with its interval: `estimate`, `low`, `high`, `n`, and optionally the
    bootstrap `replicates` (None for Wilson or when not asked for)."""

    estimate: float
    low: float
    high: float
    n: int
    replicates: np.ndarray | None = None


def _resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(n_boot, n))


def replicates(
    values, stat: Callable = np.median, *, n_boot: int = 2000, seed: int = 0
) -> np.ndarray:
    """Bootstrap replicates of `stat` over `values` (resampling rows with replacement).

    `values` is 1-D (one value per image) or 2-D (one row per image, several columns, e.g.
    confidence and correctness for a calibration error); `stat` receives an array of the
    same kind. For a 1-D array and a numpy reduction (np.mean, np.median, ...) the replicates
    are computed in one vectorised call (`stat(sample, axis=-1)`); a `stat` with the attribute
    `batched = True` receives all resamples stacked (`[n_boot, n, ...]`) and returns `n_boot`
    values (e.g. :func:`helpers.calibration.ece_rows` wrapped)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    idx = _resample_indices(n, n_boot, rng)
    if getattr(stat, "batched", False):
        return np.asarray(stat(v[idx]), dtype=float).reshape(n_boot)
    if v.ndim == 1:
        try:
            out = np.asarray(stat(v[idx], axis=-1), dtype=float)
            if out.shape == (n_boot,):
                return out
        except TypeError:
            pass
    return np.array([stat(v[i]) for i in idx], dtype=float)


def bootstrap(
    values,
    stat: Callable = np.median,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    return_replicates: bool = False,
) -> Estimate:
    """Seeded percentile bootstrap of `stat` over a sample; returns an `Estimate`.

    The estimate is `stat(values)` itself (not the mean of the replicates); the interval is the
    (1-level)/2 and (1+level)/2 quantiles of the replicates. An empty sample gives nan. A
    sample of one value gives a zero-width interval at that value (the bootstrap cannot see
    variation it was not shown; the caller reports n next to it). NaNs in a 1-D sample are
    dropped before resampling."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[~np.isnan(v)]
    n = int(len(v))
    if n == 0:
        reps = np.full(n_boot, np.nan)
        return Estimate(np.nan, np.nan, np.nan, 0, reps if return_replicates else None)
    est = float(stat(v))
    reps = replicates(v, stat, n_boot=n_boot, seed=seed)
    low, high = percentile_interval(reps, level=level)
    return Estimate(est, low, high, n, reps if return_replicates else None)


def percentile_interval(reps, *, level: float = 0.95) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 quantiles of bootstrap replicates (NaN replicates
    dropped; infinite ones kept, e.g. a median epsilon beyond the search: then the quantiles
    are order statistics, so that inf never meets inf in an interpolation)."""
    r = np.asarray(reps, dtype=float)
    r = r[~np.isnan(r)]
    if len(r) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    method = "linear" if np.all(np.isfinite(r)) else "inverted_cdf"
    low, high = np.quantile(r, [alpha, 1 - alpha], method=method)
    return float(low), float(high)


def per_group(
    frame: pd.DataFrame,
    group: str,
    value: str,
    *,
    stat: Callable = np.mean,
    method: str = "auto",
    groups=None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per group of a long frame: columns value, low, high, n (index = group).

    method "wilson" treats `value` as 0/1 (or bool) and gives the proportion with its Wilson
    interval; "bootstrap" gives `stat` with a seeded percentile bootstrap; "auto" picks Wilson
    when the column is boolean or only holds 0 and 1 and `stat` is np.mean. `groups` fixes the
    order and includes groups with no rows (n = 0, nan). Each group's bootstrap uses its own
    seed (`seed` + the group's position), so appending a group does not change the
    intervals of the groups before it."""
    if method not in ("auto", "wilson", "bootstrap"):
        raise ValueError(f"method must be 'auto', 'wilson' or 'bootstrap', got {method!r}")
    col = frame[value]
    if method == "auto":
        vals = pd.to_numeric(col, errors="coerce").dropna().unique()
        binary = col.dtype == bool or (len(vals) > 0 and set(np.unique(vals)) <= {0.0, 1.0})
        method = "wilson" if binary and stat is np.mean else "bootstrap"
    order = list(groups) if groups is not None else list(pd.unique(frame[group]))
    rows = []
    for i, g in enumerate(order):
        v = (
            pd.to_numeric(frame.loc[frame[group] == g, value], errors="coerce")
            .dropna()
            .to_numpy(float)
        )
        n = len(v)
        if method == "wilson":
            k = float(v.sum())
            est = k / n if n else np.nan
            low, high = wilson(k, n, level=level) if n else (np.nan, np.nan)
        else:
            e = bootstrap(v, stat, n_boot=n_boot, seed=seed + i, level=level)
            est, low, high = e.estimate, e.low, e.high
        rows.append({"value": est, "low": low, "high": high, "n": n})
    out = pd.DataFrame(rows, index=pd.Index(order, name=group))
    out["n"] = out["n"].astype(int)
    return out
