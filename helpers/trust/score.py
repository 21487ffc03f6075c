"""Components, trust score and ranking, each with a 95 % interval.

Each component is a number in [0, 1], 1 = no weakness found, estimated from one source's images:

* A = accuracy (Wilson interval);
* C = 1 - calibration error (bootstrap over the images predicted as the class);
* R = share of the class's attacked (correctly classified) images whose smallest flipping
  L-inf epsilon exceeds the BUDGET (Wilson). An absolute scale: no class is called robust
  because the others are weaker. Default budget 1/255: the smallest change an 8-bit image can
  store, so an image that flips within it is fooled by a change no saved image can even show;
* L = clip((relevance mass - mask share) / (1 - mask share), 0, 1) (bootstrap over the
  explained images, resampling mass and share together);
* S = share learned early = 1 - learned late - forgotten - never learned (Wilson);
* N = natural robustness: the mean over the class's correctly classified images of the share of
  natural corruptions (:mod:`helpers.corruptions`) each withstands at its stated severity
  (ImageNet-C level 3 by default; bootstrap over the images). Optional: a table without the
  corruption source (:func:`~helpers.trust.per_class_from_corruptions`) scores as before, with
  N left out (weight 0; why in ``attrs["score"]["left_out"]``), unless ``weights`` names it.

The trust score's interval propagates the components': each source's bootstrap replicates
(class k resampled with seed ``seed + k``, the same images for predictions and history) are
combined replicate by replicate in the geometric mean, and the ranks of the replicates give
each class's rank interval and which classes cannot be told apart.

The trust score (:func:`score`) is ``trust_score = (prod_i X_i ** w_i) ** (1 / sum_i w_i)`` over
the components in [0, 1] with weights ``w_i`` (default 1; ``weights={"localisation": 0}`` leaves
one out). A weighted GEOMETRIC mean: trust is limited by the weakest link (a component of 0
makes the score 0). Its interval: the same mean of the components' bootstrap replicates,
replicate by replicate; ``rank_ci_low`` / ``rank_ci_high``: the 2.5 % and 97.5 % quantiles of
the replicates' ranks.

``budget``: the L-inf epsilon (pixel units, [0, 1]) the robustness component judges against;
default 1/255, one grey level, the smallest change an 8-bit image can store.

Localisation counts only when the explanation method PASSES the sanity check
(``sanity_gate == "pass"``: the whole interval of its correlation lies below the threshold); a
failed or undecided check sets its weight to 0, with a note. (A table without the gate but with
``sanity_correlation`` above ``sanity_max`` (0.5) drops it too.)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats
from ..calibration import ece_rows
from .common import COMPONENTS, DERIVED, LEVEL, N_BOOT, SEED, Bag, ci_columns, is_missing, num
from .sources import SANITY_THRESHOLD, boot_indices
from .table import provenance, undefined

__all__ = [
    "DEFAULT_BUDGET",
    "SCORE_FORMULA",
    "components",
    "score",
    "ranking",
    "rank_probabilities",
    "pairwise_better",
    "robustness_summary",
]

DEFAULT_BUDGET = 1 / 255  # one grey level: the smallest change an 8-bit image can store

SCORE_FORMULA = (
    "trust = (A^wA * C^wC * R^wR * L^wL * S^wS * N^wN) ^ (1 / (wA + wC + wR + wL + wS + wN)), "
    "with "
    "A = accuracy; C = 1 - calibration_error; "
    "R = share of the attacked images whose smallest flipping epsilon exceeds the budget; "
    "L = clip((relevance_mass - mask_share) / (1 - mask_share), 0, 1); "
    "S = share_learned_early = 1 - learned late - forgotten - never learned; "
    "N = natural_robustness = mean over the images of the share of natural corruptions "
    "withstood at the stated severity (ImageNet-C level 3); "
    "all weights 1 by default; "
    "L gets weight 0 unless the explanation method passes the sanity check; "
    "N gets weight 0 when the table has no corruption source."
)

# The columns each component is computed from (for the reasons of an undefined component).
_INPUTS = {
    "accuracy": ("accuracy",),
    "calibration": ("calibration_error",),
    "robustness": ("median_eps_whole",),
    "localisation": ("relevance_mass", "mask_share"),
    "stability": ("share_learned_early",),
    "natural": ("natural_robustness",),
}
_SOURCE_HINT = {
    "accuracy": ("accuracy", "per_class_from_predictions"),
    "calibration": ("calibration_error", "per_class_from_predictions"),
    "robustness": ("n_attacked", "per_class_from_fragility"),
    "localisation": ("relevance_mass", "per_class_localisation"),
    "stability": ("share_learned_early", "per_class_from_history"),
    "natural": ("natural_robustness", "per_class_from_corruptions"),
}
_SAMPLES = {
    "accuracy": "correct",
    "calibration": "calibration",
    "robustness": "eps_whole",
    "localisation": "localisation",
    "stability": "learned_early",
    "natural": "withstood",
}
# Components whose source a table may lack: left out (weight 0, with a note) unless the
# weights name them, so that reports built before they existed score as before.
_OPTIONAL = {"natural": "natural robustness"}


def _check_budget(budget) -> float:
    if not (
        isinstance(budget, (int, float, np.floating)) and math.isfinite(budget) and budget >= 0
    ):
        raise ValueError(
            "budget must be an L-inf epsilon >= 0 in [0, 1] pixel units (e.g. 1/255), "
            f"got {budget!r}"
        )
    return float(budget)


def _loc(a):
    mass, share = a[..., 0].mean(-1), a[..., 1].mean(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((mass - share) / (1 - share), 0, 1)


def _check_sources(table: pd.DataFrame, which) -> None:
    """Raise when a component of ``which`` lacks its source's column or per-image values."""
    samples = table.attrs.get("samples", {})
    for name in which:
        column, fn = _SOURCE_HINT[name]
        if column not in table.columns or _SAMPLES[name] not in samples:
            raise ValueError(
                f"component {name!r} needs column {column!r} and its per-image values "
                f"(trust.{fn}); add that source or give the component weight 0"
            )


def _one_class_component(name, v, idx, *, budget, n_bins, level):
    """Estimate, interval and bootstrap replicates of component ``name`` for one class from its
    per-image values ``v`` and resampling indices ``idx`` ``[n_boot, n]``."""
    if name in ("accuracy", "stability", "robustness"):
        hits = v > budget if name == "robustness" else v
        lo, hi = stats.wilson(int(hits.sum()), len(hits), level=level)
        return hits.mean(), lo, hi, hits[idx].mean(1)
    if name == "natural":  # per-image shares of the corruptions withstood
        est, rep = v.mean(), v[idx].mean(1)
    elif name == "calibration":
        est = 1 - ece_rows(v[None, :, 0], v[None, :, 1], n_bins)[0]
        rep = 1 - ece_rows(v[idx, 0], v[idx, 1], n_bins)
    else:  # localisation
        est = float(_loc(v[None])[0])
        rep = _loc(v[idx])
    lo, hi = stats.percentile_interval(rep, level=level)
    return est, lo, hi, rep


def _component_columns(table, name, *, budget, n_boot, seed, level):
    """``(estimates, lows, highs, replicates [classes, n_boot])`` of one component, class k
    resampled with seed ``seed + k`` (NaN for a class without images)."""
    per = table.attrs["samples"][_SAMPLES[name]]
    classes = [str(c) for c in table.index]
    C = len(classes)
    est, lo, hi = np.full(C, np.nan), np.full(C, np.nan), np.full(C, np.nan)
    rep = np.full((C, n_boot), np.nan)
    for k, cls in enumerate(classes):
        v = np.asarray(per.get(cls, []), dtype=float)
        if len(v) == 0:
            continue
        idx = boot_indices(len(v), k, n_boot=n_boot, seed=seed)
        est[k], lo[k], hi[k], rep[k] = _one_class_component(
            name, v, idx, budget=budget, n_bins=table.attrs.get("n_bins", 15), level=level
        )
    return est, lo, hi, rep


def components(
    table: pd.DataFrame,
    *,
    budget: float = DEFAULT_BUDGET,
    which=None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> pd.DataFrame:
    """The components ``component_<name>`` of ``which`` (default all; N only when the table
    has its source), each with ``_ci_low`` / ``_ci_high``; ``attrs["replicates"]`` ``{name:
    [classes, n_boot]}`` (the bootstrap replicates the score combines), ``attrs["budget"]``
    and ``attrs["undefined"]``. Needs the per-image samples the sources keep (a table from
    :func:`build_table`)."""
    if which is None:
        samples = table.attrs.get("samples", {})
        which = [c for c in COMPONENTS if c not in _OPTIONAL or _SAMPLES[c] in samples]
    unknown = set(which) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown component(s) {sorted(unknown)}; expected some of {COMPONENTS}")
    budget = _check_budget(budget)
    _check_sources(table, which)
    out, reps = {}, {}
    for name in which:
        est, lo, hi, rep = _component_columns(
            table, name, budget=budget, n_boot=n_boot, seed=seed, level=level
        )
        col = f"component_{name}"
        out[col] = est
        out[ci_columns(col)[0]], out[ci_columns(col)[1]] = lo, hi
        reps[name] = rep
    frame = pd.DataFrame(out, index=table.index)
    frame.attrs = {
        "replicates": Bag(reps),
        "budget": budget,
        "undefined": _component_reasons(table, frame),
    }
    return frame


def _component_reasons(table, frame) -> dict:
    known = undefined(table)
    out = {}
    for column in [
        c for c in frame.columns if c.startswith("component_") and not c.endswith(("_low", "_high"))
    ]:
        name = column.removeprefix("component_")
        for cls in frame.index:
            if not is_missing(frame.at[cls, column]):
                continue
            whys = [known[(cls, c)] for c in _INPUTS[name] if (cls, c) in known]
            why = whys[0] if whys else None
            if why is None and name == "localisation" and num(table.loc[cls], "mask_share") == 1:
                why = "the object covers the whole image"
            if why is None and name == "robustness" and num(table.loc[cls], "n_attacked") == 0:
                why = "no image of this class was attacked"
            if why:
                for c in (column, *ci_columns(column)):
                    out[(cls, c)] = why
    return out


def _geomean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted geometric mean over axis 1 of ``[classes, components, ...]``; 0 when any
    component is 0 (the others lie in [0, 1]), NaN when one is NaN and none is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(values)
        w = weights.reshape((1, -1) + (1,) * (values.ndim - 2))
        out = np.exp((w * logs).sum(1) / weights.sum())
    out[(values == 0).any(1)] = 0.0
    return out


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks (1 = best, ties share the better rank, NaN last) along axis 0 of ``[C, ...]``."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return 1 + (s[None, :] > s[:, None]).sum(1)


def robustness_summary(table: pd.DataFrame, *, near_zero: float | None = None) -> dict | None:
    """When every class with attacked images has an R interval wholly below ``near_zero``
    (default ``THRESHOLDS["not_robust"]``, 0.5: most of its images flip within the budget), the
    model is not robust at the budget: ``{"budget", "high"}`` (the largest upper end), else None."""
    if near_zero is None:
        from .rules import THRESHOLDS

        near_zero = THRESHOLDS["not_robust"]
    col = "component_robustness"
    if col not in table.columns:
        return None
    hi = table[ci_columns(col)[1]].astype(float).to_numpy()
    hi = hi[~np.isnan(hi)]
    if len(hi) == 0 or np.any(hi >= near_zero):
        return None
    return {"budget": table.attrs.get("score", {}).get("budget"), "high": float(hi.max())}


def _check_weights(weights: dict | None) -> dict:
    """``{component: weight}``: 1 for each component unless ``weights`` says otherwise."""
    w = {c: 1.0 for c in COMPONENTS}
    for key, value in (weights or {}).items():
        if key not in w:
            raise ValueError(f"unknown weight {key!r}; components are {COMPONENTS}")
        if not (
            isinstance(value, (int, float, np.floating, np.integer))
            and value >= 0
            and math.isfinite(value)
        ):
            raise ValueError(f"weight of {key!r} must be a finite number >= 0, got {value!r}")
        w[key] = float(value)
    return w


def _leave_out_absent(w: dict, table: pd.DataFrame, weights: dict | None) -> dict:
    """Set to 0 the weight of each optional component whose source the table lacks, unless
    ``weights`` names it (then :func:`components` says which source it needs); ``{component:
    why}`` (kept apart from the notes, so that an older report reads as before)."""
    samples = table.attrs.get("samples", {})
    left_out = {}
    for name, long_name in _OPTIONAL.items():
        if _SAMPLES[name] not in samples and name not in (weights or {}):
            w[name] = 0.0
            left_out[name] = (
                f"{long_name} left out of the score: the table has no "
                f"{_SOURCE_HINT[name][0]} (add the source trust.{_SOURCE_HINT[name][1]})"
            )
    return left_out


def _gate_localisation(w: dict, model: dict, sanity_max: float) -> list:
    """Set the localisation weight in ``w`` to 0 unless the explanation method passes the
    sanity check (see :func:`score`); the notes that say why."""
    gate, sanity = model.get("sanity_gate"), model.get("sanity_correlation")
    if w["localisation"] <= 0:
        return []
    if gate is not None and gate != "pass":
        w["localisation"] = 0.0
        lo, hi = model.get("sanity_correlation_ci_low"), model.get("sanity_correlation_ci_high")
        interval = (
            f", 95 % CI {float(lo):.2f} to {float(hi):.2f}"
            if lo is not None and not is_missing(lo)
            else ""
        )
        return [
            "localisation left out of the score: the explanation method "
            f"{'fails' if gate == 'fail' else 'has not been shown to pass'} the sanity check "
            f"(mean correlation {float(sanity):.2f}{interval}, {model.get('n_sanity', '?')} "
            f"images; it passes when the whole interval lies below {sanity_max:g})"
        ]
    if (
        gate is None
        and sanity is not None
        and not is_missing(sanity)
        and float(sanity) > sanity_max
    ):
        w["localisation"] = 0.0
        return [
            "localisation left out of the score: the explanation method fails the sanity check "
            f"(sanity_correlation {float(sanity):.3g} > {sanity_max:g})"
        ]
    return []


def _combine(comp: pd.DataFrame, active: list, w: dict, level: float):
    """The weighted geometric mean of the ``active`` components, class by class and replicate
    by replicate: ``(values [C, K], trust_score, ci_low, ci_high, replicates [C, B])``."""
    wv = np.array([w[c] for c in active])
    values = np.stack([comp[f"component_{c}"].to_numpy() for c in active], axis=1)
    trust_score = _geomean(values, wv)
    rep = np.stack([comp.attrs["replicates"][c] for c in active], axis=1)  # [C, K, B]
    rep_score = _geomean(rep, wv)  # [C, B]
    lo = np.full(len(comp), np.nan)
    hi = np.full(len(comp), np.nan)
    for i in range(len(comp)):
        if not np.isnan(trust_score[i]):
            lo[i], hi[i] = stats.percentile_interval(rep_score[i], level=level)
    return values, trust_score, lo, hi, rep_score


def _rank_interval(rep_score: np.ndarray, level: float):
    """Each class's ``level`` interval of its rank over the replicates ``[C, B]``."""
    rank_rep = _ranks(rep_score)  # [C, B]
    alpha = (1 - level) / 2
    rank_lo = np.quantile(rank_rep, alpha, axis=1, method="inverted_cdf")
    rank_hi = np.quantile(rank_rep, 1 - alpha, axis=1, method="inverted_cdf")
    return rank_lo, rank_hi


def _with_score_columns(table, comp, score_interval, rep_score, level):
    """A copy of ``table`` with the components, ``trust_score`` (``score_interval``: estimate,
    low, high) and ``rank`` with their intervals; its provenance (those columns derived)."""
    trust_score, lo, hi = score_interval
    rank_lo, rank_hi = _rank_interval(rep_score, level)
    out = table.copy()
    prov = provenance(table)
    for column in comp.columns:
        out[column] = comp[column]
        prov[column] = DERIVED
    out["trust_score"] = trust_score
    out["trust_score_ci_low"], out["trust_score_ci_high"] = lo, hi
    out["rank"] = _ranks(trust_score).astype(int)
    out["rank_ci_low"], out["rank_ci_high"] = rank_lo.astype(int), rank_hi.astype(int)
    prov.update({c: DERIVED for c in _SCORE_COLUMNS})
    return out, prov


def _score_reasons(table, comp, active, trust_score, values) -> dict:
    """The table's and the components' reasons, plus the trust score's where every undefined
    component of a class has one."""
    reasons = {**undefined(table), **comp.attrs["undefined"]}
    for i, cls in enumerate(table.index):
        if np.isnan(trust_score[i]):
            whys = [
                f"{c}: {reasons[(cls, f'component_{c}')]}"
                for c in active
                if (cls, f"component_{c}") in reasons
            ]
            if whys and len(whys) == int(np.isnan(values[i]).sum()):
                for c in ("trust_score", *ci_columns("trust_score")):
                    reasons[(cls, c)] = "; ".join(whys)
    return reasons


_SCORE_COLUMNS = (
    "trust_score",
    "trust_score_ci_low",
    "trust_score_ci_high",
    "rank",
    "rank_ci_low",
    "rank_ci_high",
)


def _not_robust_note(budget: float, weak: dict) -> str:
    return (
        f"the model is not robust at a budget of {budget * 255:.3g}/255: in every class most "
        f"attacked images flip within it (at most {weak['high']:.0%} withstand it, upper ends "
        "of the 95 % intervals), so R is low everywhere and the trust scores and their ranking "
        "mostly reflect that, not a difference between the classes"
    )


def score(
    table: pd.DataFrame,
    *,
    weights: dict | None = None,
    budget: float = DEFAULT_BUDGET,
    sanity_max: float | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> pd.DataFrame:
    """``table`` with the components (:func:`components`), ``trust_score``, ``rank`` and their
    intervals (``*_ci_low`` / ``*_ci_high``) added; ``weights`` (default 1 each,
    ``{"localisation": 0}`` leaves one out), ``budget`` (the L-inf epsilon R judges against)
    and the localisation gate (``sanity_max``, 0.5) as the module docstring says.

    ``attrs["score"]``: formula, weights, budget, level, notes, ``left_out`` (``{component:
    why}`` for an optional component without its source); ``attrs["replicates"]``:
    ``{component or "trust_score": [classes, n_boot]}``."""
    w = _check_weights(weights)
    budget = _check_budget(budget)
    sanity_max = SANITY_THRESHOLD if sanity_max is None else sanity_max
    left_out = _leave_out_absent(w, table, weights)
    notes = _gate_localisation(w, table.attrs.get("model_level", {}), sanity_max)
    active = [c for c in COMPONENTS if w[c] > 0]
    if not active:
        raise ValueError("all weights are 0; at least one component must count")
    comp = components(table, budget=budget, which=active, n_boot=n_boot, seed=seed, level=level)
    values, trust_score, lo, hi, rep_score = _combine(comp, active, w, level)
    out, prov = _with_score_columns(table, comp, (trust_score, lo, hi), rep_score, level)
    out.attrs = {
        **table.attrs,
        "provenance": prov,
        "undefined": _score_reasons(table, comp, active, trust_score, values),
        "replicates": Bag({**comp.attrs["replicates"], "trust_score": rep_score}),
        "score": {
            "formula": SCORE_FORMULA,
            "weights": w,
            "budget": budget,
            "level": level,
            "n_boot": n_boot,
            "notes": notes,
            "left_out": left_out,
        },
    }
    weak = robustness_summary(out)
    if weak is not None:
        out.attrs["score"]["notes"].append(_not_robust_note(budget, weak))
    return out


def pairwise_better(table: pd.DataFrame) -> pd.DataFrame:
    """``[class a, class b]``: the share of bootstrap replicates in which a's trust score is above
    b's (ties count half). Near 0.5: the two cannot be told apart."""
    rep = table.attrs.get("replicates", {}).get("trust_score")
    if rep is None:
        raise ValueError("the table has no trust-score replicates; call trust.score(table) first")
    r = np.where(np.isnan(rep), -np.inf, rep)
    better = (r[:, None, :] > r[None, :, :]).mean(2) + 0.5 * (r[:, None, :] == r[None, :, :]).mean(
        2
    )
    return pd.DataFrame(better, index=table.index, columns=table.index)


def rank_probabilities(table: pd.DataFrame) -> pd.DataFrame:
    """``[class, rank 1..C]``: the share of bootstrap replicates in which the class takes each
    rank."""
    rep = table.attrs.get("replicates", {}).get("trust_score")
    if rep is None:
        raise ValueError("the table has no trust-score replicates; call trust.score(table) first")
    ranks = _ranks(rep)
    C = len(table)
    probs = np.stack([(ranks == r).mean(1) for r in range(1, C + 1)], axis=1)
    return pd.DataFrame(probs, index=table.index, columns=pd.Index(range(1, C + 1), name="rank"))


def ranking(table: pd.DataFrame, *, level: float | None = None) -> pd.DataFrame:
    """The scored table's classes from most to least trusted: ``rank``, ``rank_ci_low``,
    ``rank_ci_high``, ``trust_score`` with its interval, the components, ``p_top`` (share of
    replicates in which the class ranks first) and ``cannot_tell_apart`` (the classes whose
    trust score it cannot be told apart from: the share of replicates with it above them lies
    within ``[(1-level)/2, (1+level)/2]``, a two-sided bootstrap comparison at ``level``).
    ``attrs["note"]``: a sentence when the ranking is mostly noise (the model is not robust at
    the budget), else None."""
    if "trust_score" not in table.columns:
        raise ValueError("the table has no trust_score; call trust.score(table) first")
    level = table.attrs.get("score", {}).get("level", LEVEL) if level is None else level
    cols = [
        "rank",
        "rank_ci_low",
        "rank_ci_high",
        "trust_score",
        "trust_score_ci_low",
        "trust_score_ci_high",
    ]
    cols += [
        c
        for c in table.columns
        if c.startswith("component_") and not c.endswith(("_ci_low", "_ci_high"))
    ]
    out = table[[c for c in cols if c in table.columns]].copy()
    if table.attrs.get("replicates", {}).get("trust_score") is not None:
        better = pairwise_better(table)
        alpha = (1 - level) / 2
        out["p_top"] = rank_probabilities(table)[1]
        out["cannot_tell_apart"] = [
            ", ".join(
                str(b) for b in table.index if b != a and alpha <= better.at[a, b] <= 1 - alpha
            )
            for a in table.index
        ]
    out = out.sort_values(["rank", "trust_score"], ascending=[True, False], kind="stable")
    weak = robustness_summary(table)
    out.attrs = {
        "note": None
        if weak is None
        else f"The model is not robust at {table.attrs['score']['budget'] * 255:.3g}/255: in every "
        f"class most attacked images flip within it (at most {weak['high']:.0%} withstand it, "
        "upper ends of 95 % intervals), so every trust score is held down by R and the order of "
        "the classes says little about anything else."
    }
    return out
