"""The per-class trust report: one table per model, one row per class, every number traced to
the analysis it came from, one trust score per class, a written verdict, CSV and HTML export.

How the pieces fit (notebook 10)::

    sources = {
        "predictions": trust.per_class_from_predictions(labels, probs, classes,
                                                        calibrated_probs=probs_ts),
        "training":    trust.per_class_from_history(run.history, labels, classes),
        "attacks":     trust.per_class_from_fragility(region_df, classes),  # fragility_by_region
        "explanations": trust.per_class_localisation(maps, masks, labels_explained, classes),
        "sanity check": trust.from_sanity_check(sanity_df, "gradcam", classes),
    }
    table = trust.build_table(sources)          # joins, checks, remembers provenance
    table = trust.score(table)                  # normalised components, trust_score, rank
    words = trust.verdicts(table)               # one sentence per class
    trust.write_csv(table, "trust.csv", verdicts=words)
    trust.write_html(table, "trust.html", verdicts=words, model=..., data=..., n_images={...},
                     examples=report.class_examples(...), figures={...}, csv="trust.csv")
                                                # the page itself: helpers/report.py

A *source* is a small DataFrame indexed by class name, one row per class, with columns that no
other source uses. Columns that hold one model-level number repeated on every row (the sanity
check, the attack's search limit) are listed in ``frame.attrs["model_level"]``
(:func:`model_level` does this). :func:`build_table` joins the sources, checks that every source
has exactly the same classes and that no value is missing, and records, per column, the name
of the source it came from (``table.attrs["provenance"]``, see :func:`provenance`). Infinite
values are not missing: a median minimal epsilon of ``inf`` means that more than half of the
class withstood the largest epsilon searched.

Two kinds of empty cell are told apart. A value that *cannot be computed* for this model is
**not defined**, and the source says why in ``frame.attrs["undefined"]`` ``{(class, column):
reason}``: the precision of a class the model never predicts, the accuracy of a class without
test images, the median epsilon of a class none of whose images was classified correctly (so
none was attacked). A weak model (random weights, at chance, one class always predicted) is
an expected input: its table, score, verdicts, CSV and HTML are built and show "not defined
(<reason>)". A NaN that no source explains is **missing**: a bug in a source or in the notebook,
and :func:`build_table` raises (unless ``allow_missing``, then it is shown as a red error).
Structural errors (a source without a row for a class, an unknown class, a column in two
sources, a component whose column is absent) always raise.

The trust score (formula in :data:`SCORE_FORMULA` and :func:`score`) is a weighted geometric
mean of five components in [0, 1], each "1 = no weakness found". The verdicts are rule-based
on the thresholds in :data:`THRESHOLDS`.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import calibration

__all__ = [
    "COLUMNS", "COMPONENTS", "THRESHOLDS", "SCORE_FORMULA", "per_class_means",
    "per_class_from_predictions", "per_class_from_history", "per_class_from_fragility",
    "per_class_localisation", "model_level", "from_sanity_check", "build_table", "provenance",
    "undefined", "components", "score", "ranking", "model_verdict", "verdict_items", "verdicts",
    "format_value", "write_csv", "read_csv", "write_html",
]

# What each column a source function of this module produces means (shown in the HTML report).
COLUMNS = {
    "n_test": "test images of the class",
    "accuracy": "share of the class's test images predicted correctly (recall)",
    "n_predicted": "test images predicted as the class",
    "precision": "share of the images predicted as the class that belong to it",
    "mean_confidence": "mean confidence (max. probability) of the predictions of the class",
    "calibration_error": "ECE over the images predicted as the class (15 bins; 0 = honest confidence)",
    "mean_confidence_ts": "mean confidence after temperature scaling",
    "calibration_error_ts": "calibration error after temperature scaling",
    "share_learned_early": "share of the class's test images stable-correct from the first half of training",
    "share_learned_late": "share stable-correct only in the second half of training",
    "share_forgotten": "share with at least one correct-to-wrong flip between epochs",
    "share_never_learned": "share wrong at the last epoch",
    "mean_prediction_changes": "mean number of epochs at which an image's prediction changed",
    "n_attacked": "correctly classified test images attacked (minimal FGSM epsilon)",
    "median_eps_whole": "median smallest L-inf epsilon that flips the prediction, whole image",
    "median_eps_object": "the same with the perturbation confined to the object mask",
    "median_eps_background": "the same with the perturbation confined to the background",
    "object_background_ratio": "median_eps_object / median_eps_background (< 1: the object is the weak spot)",
    "share_not_flipped_whole": "share of attacked images not flipped up to the largest epsilon searched",
    "attack_max_eps": "largest epsilon the attack searched (model level)",
    "n_explained": "test images explained",
    "pointing_game": "share of explanations whose maximum lies on the object",
    "relevance_mass": "share of the positive attribution that lies on the object",
    "mask_share": "mean share of the image covered by the object (chance level of the two above)",
    "area_50": "smallest share of the image holding half the |attribution| (small = compact)",
    "gini": "Gini coefficient of |attribution| (0 = spread evenly, 1 = one pixel)",
    "sanity_correlation": "cascading randomisation: mean rank correlation with the original map "
                          "(near 0 = the explanation depends on the weights; model level)",
    "component_accuracy": "A = accuracy",
    "component_calibration": "C = 1 - calibration_error",
    "component_robustness": "R = min(1, eps / eps_ref) (eps capped at attack_max_eps)",
    "component_localisation": "L = clip((relevance_mass - mask_share) / (1 - mask_share), 0, 1)",
    "component_stability": "S = 1 - share_learned_late - share_forgotten",
    "trust_score": "weighted geometric mean of the components (see the formula)",
    "rank": "1 = the most trusted class",
}

COMPONENTS = ("accuracy", "calibration", "robustness", "localisation", "stability")

SCORE_FORMULA = (
    "trust = (A^wA * C^wC * R^wR * L^wL * S^wS) ^ (1 / (wA + wC + wR + wL + wS)), with "
    "A = accuracy; C = 1 - calibration_error; "
    "R = min(1, min(median_eps_whole, attack_max_eps) / eps_ref), eps_ref = median over the "
    "classes of the same capped epsilon; "
    "L = clip((relevance_mass - mask_share) / (1 - mask_share), 0, 1); "
    "S = 1 - share_learned_late - share_forgotten; all weights 1 by default; L gets weight 0 "
    "when the explanation method fails the sanity check (sanity_correlation > 0.5)."
)

# Verdict rules (see :func:`verdicts`); each value is the boundary of one clause.
THRESHOLDS = {
    "accurate": 0.90,         # accuracy >= this: "accurate"
    "inaccurate": 0.75,       # accuracy < this: "often wrong"; in between: "fairly accurate"
    "calibrated": 0.05,       # calibration_error <= this: "well calibrated"
    "miscalibrated": 0.10,    # calibration_error > this: "over-/under-confident", else "slightly"
    "fragile": 0.5,           # median_eps_whole < this * eps_ref: "fragile"
    "robust": 2.0,            # median_eps_whole >= this * eps_ref (or inf): "robust"
    "context": 2.0,           # object/background ratio >= this: "leans on the background";
                              # <= 1 / this: "relies on the object"
    "localised": 0.5,         # localisation component L >= this: "explanations find the object"
    "unlocalised": 0.1,       # L < this: "explanations no better than chance"
    "unstable": 0.25,         # share learned late + forgotten >= this: "unstable in training"
    "stable": 0.05,           # that share <= this: "learned early and stably"
    "sanity_max": 0.5,        # sanity_correlation > this: the explanation fails the sanity check
    "chance_z": 1.96,         # model not usable when the Wilson lower bound (this z) of its overall
                              # accuracy is at or below chance (the share of the largest class)
    "few_images": 10,         # fewer test images than this: "its numbers rest on only n images"
}

# Reasons why a value is not defined (see the module docstring).
NO_TEST_IMAGE = "no test image of this class"
NEVER_PREDICTED = calibration.NEVER_PREDICTED
NONE_ATTACKED = "no image of this class was classified correctly, so none was attacked"
NONE_EXPLAINED = "no image of this class was explained"

_DERIVED = "trust score"


# ----------------------------------------------------------------------------- helpers
def _numpy(a) -> np.ndarray:
    return np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)


def _class_list(classes) -> list[str]:
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError("classes must name at least one class")
    if len(set(classes)) != len(classes):
        raise ValueError(f"class names must be unique, got {classes}")
    return classes


def _labels(labels, classes: list[str], name: str = "labels") -> np.ndarray:
    y = _numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be [N] class indices, got shape {y.shape}")
    if len(y) and (not np.issubdtype(y.dtype, np.number) or np.any(np.mod(y, 1) != 0)
                   or y.min() < 0 or y.max() >= len(classes)):
        raise ValueError(f"{name} must be integer class indices in [0, {len(classes)}), got {y[:5]}...")
    return y.astype(np.int64)


def _frame(rows: dict, classes) -> pd.DataFrame:
    return pd.DataFrame(rows, index=pd.Index(classes, name="class"))


def _explain(frame: pd.DataFrame, reasons: dict) -> pd.DataFrame:
    """Record ``{(class, column): reason}`` in ``frame.attrs["undefined"]`` for the cells that
    are NaN (a reason for a value that exists is dropped)."""
    known = dict(frame.attrs.get("undefined", {}))
    for (cls, col), why in reasons.items():
        if col in frame.columns and cls in frame.index and _is_missing(frame.at[cls, col]):
            known[(str(cls), col)] = str(why)
    frame.attrs["undefined"] = known
    return frame


def per_class_means(labels, classes, **columns) -> pd.DataFrame:
    """A source from per-image values: ``n`` (images per class) and the mean of each keyword
    array (``[N]``, aligned with ``labels``) over the images of each class (NaN values skipped;
    NaN when a class has no value). E.g. ``per_class_means(y, classes, hit=pointing_game(...))``."""
    classes = _class_list(classes)
    y = _labels(labels, classes)
    rows = {"n": np.bincount(y, minlength=len(classes))}
    for name, values in columns.items():
        v = _numpy(values).astype(np.float64)
        if v.shape != y.shape:
            raise ValueError(f"{name} must be [N] with N={len(y)} (one per label), got shape {v.shape}")
        out = np.full(len(classes), np.nan)
        for k in range(len(classes)):
            sel = v[(y == k) & ~np.isnan(v)]
            out[k] = sel.mean() if len(sel) else np.nan
        rows[name] = out
    return _frame(rows, classes)


# ----------------------------------------------------------------------------- sources
def per_class_from_predictions(labels, probs, classes, *, calibrated_probs=None,
                               n_bins: int = calibration.N_BINS) -> pd.DataFrame:
    """Source "predictions" from test ``probs`` ``[N, C]`` (the audited model: for a
    :class:`helpers.runs.FineTunedRun`, ``history.test_probs[history.best_epoch]``).

    Columns: ``n_test``, ``accuracy`` (recall of the class), ``n_predicted``, ``precision``,
    ``mean_confidence`` and ``calibration_error``, both over the images PREDICTED as the class
    (:func:`helpers.calibration.per_class_calibration_error` with ``by="predicted"``: "when the
    model says *forest* with 0.9, is it right 9 times in 10?"). With ``calibrated_probs`` (e.g.
    after temperature scaling; same arg-max required) also ``mean_confidence_ts`` and
    ``calibration_error_ts``. A class never predicted has precision/confidence/error not defined
(NaN, with the reason in ``attrs["undefined"]``), a class without test images its accuracy."""
    classes = _class_list(classes)
    p = calibration._probs(probs)
    if p.shape[1] != len(classes):
        raise ValueError(f"probs have {p.shape[1]} columns for {len(classes)} classes")
    y = _labels(labels, classes)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} rows of probs")
    pred, conf = p.argmax(1), p.max(1)
    n_test = np.bincount(y, minlength=len(classes))
    n_pred = np.bincount(pred, minlength=len(classes))
    hits = np.bincount(y[pred == y], minlength=len(classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = {"n_test": n_test, "accuracy": np.where(n_test > 0, hits / n_test, np.nan),
                "n_predicted": n_pred, "precision": np.where(n_pred > 0, hits / n_pred, np.nan),
                "mean_confidence": np.where(n_pred > 0, np.bincount(pred, conf, len(classes)) / n_pred, np.nan),
                "calibration_error": calibration.per_class_calibration_error(p, y, n_bins=n_bins)}
    if calibrated_probs is not None:
        q = calibration._probs(calibrated_probs, "calibrated_probs")
        if q.shape != p.shape or np.any(q.argmax(1) != pred):
            raise ValueError("calibrated_probs must have the shape and the arg-max of probs "
                             "(temperature scaling never changes a prediction)")
        with np.errstate(invalid="ignore", divide="ignore"):
            rows["mean_confidence_ts"] = np.where(n_pred > 0, np.bincount(pred, q.max(1), len(classes)) / n_pred,
                                                  np.nan)
        rows["calibration_error_ts"] = calibration.per_class_calibration_error(q, y, n_bins=n_bins)
    reasons = {}
    for k, cls in enumerate(classes):
        if n_test[k] == 0:
            reasons[(cls, "accuracy")] = NO_TEST_IMAGE
        if n_pred[k] == 0:
            reasons.update({(cls, c): NEVER_PREDICTED for c in
                            ("precision", "mean_confidence", "calibration_error", "mean_confidence_ts",
                             "calibration_error_ts")})
    return _explain(_frame(rows, classes), reasons)


def per_class_from_history(history, labels=None, classes=None, *, late_fraction: float = 0.5) -> pd.DataFrame:
    """Source "training" from a :class:`helpers.train.TrainHistory` (or anything with
    ``test_preds [E, N]`` and ``test_labels``; or a plain ``[E, N]`` array of predictions with
    ``labels``), over all recorded epochs as in notebook 03 (:func:`helpers.evolution.image_stats`).

    Columns: ``share_learned_early``, ``share_learned_late``, ``share_forgotten``,
    ``share_never_learned`` (shares of the class's test images, summing to 1) and
    ``mean_prediction_changes``. ``labels``, when given with a history, must equal its
    ``test_labels`` (a guard against mixing runs)."""
    from . import evolution

    if hasattr(history, "test_preds"):
        preds = np.asarray(history.test_preds)
        own = _numpy(history.test_labels)
        if labels is not None and not np.array_equal(_numpy(labels), own):
            raise ValueError("labels differ from history.test_labels: the history is of another test set")
        labels = own
        classes = classes if classes is not None else getattr(history, "classes", None)
    else:
        preds = _numpy(history)
        if labels is None:
            raise ValueError("labels are needed when history is a plain [epochs, images] array")
    if classes is None:
        raise ValueError("classes are needed (the history has none)")
    classes = _class_list(classes)
    y = _labels(labels, classes)
    stats = evolution.image_stats(preds, y, late_fraction=late_fraction)
    summary = evolution.class_summary(stats, classes)
    rows = {f"share_{c.replace(' ', '_')}": summary[c].to_numpy() for c in evolution.CATEGORIES}
    rows["mean_prediction_changes"] = summary["mean_changes"].to_numpy()
    counts = np.bincount(y, minlength=len(classes))
    return _explain(_frame(rows, classes), {(cls, col): NO_TEST_IMAGE for k, cls in enumerate(classes)
                                            if counts[k] == 0 for col in rows})


def per_class_from_fragility(fragility: pd.DataFrame, classes, *, max_eps: float | None = None) -> pd.DataFrame:
    """Source "attacks" from :func:`helpers.attacks.fragility_by_region` (the long frame, one row
    per image and region; its ``attrs["max_eps"]`` is kept) or from its summary
    :func:`helpers.attacks.per_class_fragility` (then pass ``max_eps``).

    Columns: ``n_attacked`` (correctly classified images, the only ones attacked),
    ``median_eps_whole`` / ``_object`` / ``_background`` (those regions that were attacked;
    ``inf`` when more than half withstood the largest epsilon), ``object_background_ratio``,
    ``share_not_flipped_whole`` and, with a known ``max_eps``, the model-level ``attack_max_eps``."""
    from .attacks import per_class_fragility

    classes = _class_list(classes)
    if not isinstance(fragility, pd.DataFrame):
        raise ValueError("fragility must be the DataFrame of attacks.fragility_by_region or per_class_fragility")
    if "region" in fragility.columns:
        max_eps = fragility.attrs.get("max_eps") if max_eps is None else max_eps
        summary = per_class_fragility(fragility, classes)
    else:
        summary = fragility
    if "median_eps_whole" not in summary.columns:
        raise ValueError("the fragility table has no 'median_eps_whole' column: attack the whole image too")
    wanted = ["n_correct"] + [f"median_eps_{r}" for r in ("whole", "object", "background")] + \
             ["object_background_ratio", "share_not_flipped_whole"]
    out = summary[[c for c in wanted if c in summary.columns]].rename(columns={"n_correct": "n_attacked"})
    out = out.copy()
    out.index = out.index.astype(str).rename("class")
    out.attrs = {}
    if max_eps is not None:
        if not (isinstance(max_eps, (int, float, np.floating)) and max_eps > 0):
            raise ValueError(f"max_eps must be a number > 0, got {max_eps!r}")
        out["attack_max_eps"] = float(max_eps)
        out.attrs["model_level"] = ["attack_max_eps"]
    reasons = {}
    for cls in out.index:
        if "n_attacked" in out.columns and out.at[cls, "n_attacked"] == 0:
            none = ("none of its images was in the attacked sample" if "n" in summary.columns
                    and summary.at[cls, "n"] == 0 else NONE_ATTACKED)
            reasons.update({(cls, c): none for c in out.columns if c != "n_attacked"})
        elif "object_background_ratio" in out.columns:
            obj, bg = out.at[cls, "median_eps_object"], out.at[cls, "median_eps_background"]
            if np.isinf(obj) and np.isinf(bg):
                why = ("neither the object alone nor the background alone flips most of its images "
                       "up to the largest epsilon searched")
            elif obj == 0 and bg == 0:
                why = "both regions flip at epsilon 0"
            else:
                why = "the object or the background epsilon is not defined"
            reasons[(cls, "object_background_ratio")] = why
    return _explain(out, reasons)


def per_class_localisation(maps, masks, labels, classes, *, tolerance: float = 0) -> pd.DataFrame:
    """Source "explanations" from attribution maps ``[N, H, W]`` of N test images (for their
    true class), their object masks ``[N, H, W]`` and ``labels`` ``[N]``: ``n_explained`` and the
    class means of ``pointing_game`` (hit rate), ``relevance_mass``, ``mask_share`` (the chance
    level of both), and the compactness ``area_50`` and ``gini`` (see :mod:`helpers.quality`)."""
    from . import quality

    m = quality._maps_np(maps)
    gt = quality._masks_np(masks, m.shape)
    y = _labels(labels, _class_list(classes))
    if len(y) != len(m):
        raise ValueError(f"{len(y)} labels for {len(m)} maps")
    compact = quality.compactness(m)
    frame = per_class_means(y, classes, pointing_game=quality.pointing_game(m, gt, tolerance=tolerance),
                            relevance_mass=quality.relevance_mass(m, gt),
                            mask_share=gt.reshape(len(gt), -1).mean(1),
                            area_50=compact["area_50"].to_numpy(), gini=compact["gini"].to_numpy())
    frame = frame.rename(columns={"n": "n_explained"})
    return _explain(frame, {(cls, col): NONE_EXPLAINED for cls in frame.index
                            if frame.at[cls, "n_explained"] == 0 for col in frame.columns})


def model_level(classes, **values) -> pd.DataFrame:
    """A source of model-level numbers (or short texts): each keyword value repeated on every
    class's row, the columns listed in ``attrs["model_level"]`` (the HTML shows them once)."""
    classes = _class_list(classes)
    if not values:
        raise ValueError("give at least one model-level value, e.g. model_level(classes, temperature=1.7)")
    frame = _frame({k: [v] * len(classes) for k, v in values.items()}, classes)
    frame.attrs["model_level"] = list(values)
    return frame


def from_sanity_check(sanity: pd.DataFrame, method: str, classes) -> pd.DataFrame:
    """Source "sanity check": the model-level ``sanity_correlation`` of ``method`` from
    :func:`helpers.quality.sanity_check` (:func:`helpers.quality.cascade_correlation`: near 0
    passes, above ``THRESHOLDS["sanity_max"]`` fails) and its name ``explanation_method``."""
    from .quality import cascade_correlation

    values = cascade_correlation(sanity)
    if method not in values.index:
        raise ValueError(f"no method {method!r} in the sanity check; it has {list(values.index)}")
    frame = model_level(classes, sanity_correlation=float(values[method]), explanation_method=str(method))
    return _explain(frame, {(cls, "sanity_correlation"): "the explanation maps are constant, so their rank "
                            "correlation is not defined" for cls in frame.index})


# ----------------------------------------------------------------------------- the table
def build_table(sources: dict, *, classes=None, allow_missing=False) -> pd.DataFrame:
    """Join the per-class ``sources`` (``{source name: DataFrame}``) into one table, one row
    per class (index ``class``), in the order of ``classes`` (default: the first source's).

    Checks, each with an error that names the source, class and column: every source has a row
    for exactly the classes (no missing, no unknown, no duplicate class); no column name is in
    two sources; no value is missing (NaN/None) unless ``allow_missing`` is True or a
    collection of the column names allowed to miss (the missing cells are then listed in
    ``attrs["missing"]`` and shown as errors in the HTML). ``inf`` is a value, not missing. A
    NaN whose source gave a reason (``attrs["undefined"]``, e.g. the precision of a class the
    model never predicts) is *not defined*, an expected gap that never raises: it is listed
    in ``attrs["undefined"]`` and shown as "not defined (<reason>)".

    ``attrs``: ``provenance`` ``{column: source name}``, ``model_level`` ``{column: value}``
    (constant columns a source declared in its ``attrs["model_level"]``), ``sources`` (names in
    order), ``missing`` (``[(class, column), ...]``) and ``undefined`` ``{(class, column):
    reason}``."""
    if not isinstance(sources, dict) or not sources:
        raise ValueError("sources must be a non-empty dict {source name: per-class DataFrame}")
    frames = {}
    for name, frame in sources.items():
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"source {name!r} is a {type(frame).__name__}, expected a DataFrame indexed by class")
        if "class" in frame.columns:
            frame = frame.set_index("class")
        index = frame.index.astype(str)
        if index.has_duplicates:
            raise ValueError(f"source {name!r} has several rows for class(es) "
                             f"{sorted(set(index[index.duplicated()]))}")
        frames[name] = frame.set_axis(index, axis=0)
    first = next(iter(frames))
    order = _class_list(frames[first].index if classes is None else classes)
    seen: dict[str, str] = {}
    model: dict = {}
    reasons: dict = {}
    for name, frame in frames.items():
        reasons.update({(str(cls), col): why for (cls, col), why in sources[name].attrs.get("undefined", {}).items()})
        missing = [c for c in order if c not in frame.index]
        if missing:
            raise ValueError(f"source {name!r} has no row for class(es) {missing} "
                             f"(it has {list(frame.index)})")
        unknown = [c for c in frame.index if c not in order]
        if unknown:
            raise ValueError(f"source {name!r} has rows for unknown class(es) {unknown}; classes are {order}")
        for column in frame.columns:
            if column in seen:
                raise ValueError(f"column {column!r} comes from both source {seen[column]!r} and {name!r}; "
                                 "rename it in one of them")
            seen[column] = name
        for column in sources[name].attrs.get("model_level", ()):
            values = frame[column]
            if values.nunique(dropna=False) != 1:
                raise ValueError(f"model-level column {column!r} of source {name!r} differs between classes")
            model[column] = values.iloc[0]
    table = pd.concat([frames[name].loc[order] for name in frames], axis=1)
    table.index.name = "class"
    allowed = set(table.columns) if allow_missing is True else set(allow_missing or ())
    unknown_allowed = allowed - set(table.columns)
    if unknown_allowed:
        raise ValueError(f"allow_missing names unknown column(s) {sorted(unknown_allowed)}")
    empty = [(cls, col) for col in table.columns for cls in order if _is_missing(table.at[cls, col])]
    undefined_ = {cell: reasons[cell] for cell in empty if cell in reasons}
    holes = [cell for cell in empty if cell not in undefined_]
    bad = [(cls, col) for cls, col in holes if col not in allowed]
    if bad:
        listed = "; ".join(f"{col} of {cls!r} (source {seen[col]!r})" for cls, col in bad[:12])
        more = f" and {len(bad) - 12} more" if len(bad) > 12 else ""
        raise ValueError(f"{len(bad)} missing value(s): {listed}{more}. Fix the source, or pass "
                         f"allow_missing={sorted({c for _, c in bad})} to show them as errors in the report")
    table.attrs = {"provenance": dict(seen), "model_level": model, "sources": list(frames),
                   "missing": holes, "undefined": undefined_}
    return table


def _is_missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def undefined(table: pd.DataFrame) -> dict:
    """``{(class, column): reason}``: the values of ``table`` that are not defined, and why."""
    return dict(table.attrs.get("undefined", {}))


def provenance(table: pd.DataFrame) -> dict:
    """``{column: source name}`` of a table from :func:`build_table` (derived columns: ``"trust score"``)."""
    prov = table.attrs.get("provenance")
    if not prov:
        raise ValueError("this table has no provenance; build it with trust.build_table(sources)")
    unknown = [c for c in table.columns if c not in prov]
    if unknown:
        raise ValueError(f"column(s) {unknown} were added after build_table and have no source")
    return dict(prov)


# ----------------------------------------------------------------------------- the score
def _need(table, column, component, hint):
    if column not in table.columns:
        raise ValueError(f"component {component!r} needs column {column!r} ({hint}); "
                         f"add that source or give the component weight 0")
    return table[column].astype(float).to_numpy()


def components(table: pd.DataFrame, *, eps_ref: float | None = None, which=COMPONENTS) -> pd.DataFrame:
    """The normalised components (columns ``component_<name>``, each in [0, 1], 1 = no weakness
    found) of ``which`` (default all five); ``attrs["eps_ref"]`` holds the reference epsilon used.

    * accuracy ``A = accuracy``;
    * calibration ``C = 1 - calibration_error``;
    * robustness ``R = min(1, e / eps_ref)`` with ``e = min(median_eps_whole, attack_max_eps)``
      (the cap, when known, turns "never flipped" into the largest epsilon searched) and
      ``eps_ref`` the median of ``e`` over the classes unless given (give a number, e.g. 4/255, to
      compare models on one scale);
    * localisation ``L = clip((relevance_mass - mask_share) / (1 - mask_share), 0, 1)``: the
      share of the attribution on the object above what a map spread at random would put there
      (``mask_share``), as a share of the possible improvement (a chance-corrected agreement,
      like Cohen's kappa), so a class with a large object does not score well for free;
    * stability ``S = 1 - share_learned_late - share_forgotten``.
    """
    out, used_ref = {}, None
    unknown = set(which) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown component(s) {sorted(unknown)}; expected some of {COMPONENTS}")
    if "accuracy" in which:
        out["component_accuracy"] = _need(table, "accuracy", "accuracy", "per_class_from_predictions")
    if "calibration" in which:
        out["component_calibration"] = 1 - _need(table, "calibration_error", "calibration",
                                                 "per_class_from_predictions")
    if "robustness" in which:
        eps = _need(table, "median_eps_whole", "robustness", "per_class_from_fragility")
        cap = table.attrs.get("model_level", {}).get("attack_max_eps")
        e = np.minimum(eps, float(cap)) if cap is not None else eps
        if eps_ref is None:
            known = e[~np.isnan(e)]
            used_ref = float(np.median(known)) if len(known) else float("nan")
            if len(known) and not math.isfinite(used_ref):
                raise ValueError("the median epsilon over the classes is infinite (most classes never "
                                 "flipped) and no attack_max_eps is known: pass eps_ref")
        else:
            used_ref = float(eps_ref)
        if math.isnan(used_ref):          # no class had an image to attack: R is not defined anywhere
            out["component_robustness"] = np.full(len(e), np.nan)
        elif not used_ref > 0:
            raise ValueError(f"eps_ref must be > 0, got {used_ref}")
        else:
            with np.errstate(invalid="ignore"):
                out["component_robustness"] = np.minimum(1.0, e / used_ref)
    if "localisation" in which:
        mass = _need(table, "relevance_mass", "localisation", "per_class_localisation")
        share = _need(table, "mask_share", "localisation", "per_class_localisation")
        with np.errstate(invalid="ignore", divide="ignore"):
            out["component_localisation"] = np.clip((mass - share) / (1 - share), 0, 1)
    if "stability" in which:
        late = _need(table, "share_learned_late", "stability", "per_class_from_history")
        forgotten = _need(table, "share_forgotten", "stability", "per_class_from_history")
        out["component_stability"] = 1 - late - forgotten
    frame = pd.DataFrame(out, index=table.index)
    for column in frame.columns:
        frame[column] = frame[column].clip(0, 1)
    frame.attrs = {"eps_ref": used_ref, "undefined": _component_reasons(table, frame, used_ref)}
    return frame


# The columns each component is computed from (for the reasons of an undefined component).
_INPUTS = {"accuracy": ("accuracy",), "calibration": ("calibration_error",),
           "robustness": ("median_eps_whole",), "localisation": ("relevance_mass", "mask_share"),
           "stability": ("share_learned_late", "share_forgotten")}


def _component_reasons(table, frame, eps_ref) -> dict:
    known = undefined(table)
    out = {}
    for column in frame.columns:
        name = column.removeprefix("component_")
        for cls in frame.index:
            if not _is_missing(frame.at[cls, column]):
                continue
            whys = [known[(cls, c)] for c in _INPUTS[name] if (cls, c) in known]
            if whys:
                out[(cls, column)] = whys[0]
            elif name == "robustness" and eps_ref is not None and math.isnan(eps_ref):
                out[(cls, column)] = "no class had a correctly classified image to attack"
            elif name == "localisation" and _num(table.loc[cls], "mask_share") == 1:
                out[(cls, column)] = "the object covers the whole image"
    return out


def score(table: pd.DataFrame, *, weights: dict | None = None, eps_ref: float | None = None,
          sanity_max: float | None = None) -> pd.DataFrame:
    """``table`` with the components (:func:`components`), ``trust_score`` and ``rank`` added.

    ``trust_score = (prod_i X_i ** w_i) ** (1 / sum_i w_i)`` over the components ``X_i`` in
    [0, 1] (A, C, R, L, S) with weights ``w_i`` (default 1 each; ``weights={"localisation": 0}``
    leaves a component out). A weighted GEOMETRIC mean because trust is limited by the weakest
    link: a class that fails one check outright (``X = 0``) scores 0 however good the others
    are, whereas an arithmetic mean would let 100 % accuracy buy back chance-level localisation;
    and halving any component lowers the score by the same factor ``2 ** (w_i / sum w)``
    whatever the others are. If the table has ``sanity_correlation`` above ``sanity_max``
    (default ``THRESHOLDS["sanity_max"]``), the explanation method fails the sanity check (its
    maps do not depend on the weights), so localisation says nothing about the model and its
    weight is set to 0. A component of 0 makes the score 0 (the others lie in [0, 1], so it is 0
    whatever they are, even when one is not defined); otherwise a missing or undefined
    component (NaN) makes the score NaN, not defined when every NaN component has a reason
    (``attrs["undefined"]`` names it). ``rank`` 1 is the highest score; ties share the better
    rank, NaN scores come last.

    ``attrs["score"]`` records the formula, the weights used, ``eps_ref`` and notes.
    """
    w = {c: 1.0 for c in COMPONENTS}
    for key, value in (weights or {}).items():
        if key not in w:
            raise ValueError(f"unknown weight {key!r}; components are {COMPONENTS}")
        if not (isinstance(value, (int, float, np.floating, np.integer)) and value >= 0 and math.isfinite(value)):
            raise ValueError(f"weight of {key!r} must be a finite number >= 0, got {value!r}")
        w[key] = float(value)
    notes = []
    sanity_max = THRESHOLDS["sanity_max"] if sanity_max is None else sanity_max
    sanity = table.attrs.get("model_level", {}).get("sanity_correlation")
    if sanity is not None and w["localisation"] > 0 and float(sanity) > sanity_max:
        w["localisation"] = 0.0
        notes.append(f"localisation left out of the score: the explanation method fails the sanity check "
                     f"(sanity_correlation {float(sanity):.3g} > {sanity_max:g})")
    active = [c for c in COMPONENTS if w[c] > 0]
    if not active:
        raise ValueError("all weights are 0; at least one component must count")
    comp = components(table, eps_ref=eps_ref, which=active)
    total = sum(w[c] for c in active)
    values = np.stack([comp[f"component_{c}"].to_numpy() for c in active], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = (np.array([w[c] for c in active]) * np.log(values)).sum(1)
        trust_score = np.exp(logs / total)
    # a component of 0 makes the score 0 whatever the others are (they all lie in [0, 1])
    trust_score[(values == 0).any(1)] = 0.0
    reasons = {**undefined(table), **comp.attrs["undefined"]}
    for i, cls in enumerate(table.index):
        if np.isnan(trust_score[i]):
            whys = [f"{c}: {reasons[(cls, f'component_{c}')]}" for c in active
                    if (cls, f"component_{c}") in reasons]
            if whys and len(whys) == int(np.isnan(values[i]).sum()):
                reasons[(cls, "trust_score")] = "; ".join(whys)
    out = table.copy()
    prov = provenance(table)
    for column in comp.columns:
        out[column] = comp[column]
        prov[column] = _DERIVED
    out["trust_score"] = trust_score
    out["rank"] = out["trust_score"].rank(ascending=False, method="min", na_option="bottom").astype(int)
    prov["trust_score"] = prov["rank"] = _DERIVED
    out.attrs = {**table.attrs, "provenance": prov, "undefined": reasons,
                 "score": {"formula": SCORE_FORMULA, "weights": w, "eps_ref": comp.attrs["eps_ref"],
                           "notes": notes}}
    return out


def ranking(table: pd.DataFrame) -> pd.DataFrame:
    """The scored table's classes from most to least trusted: rank, trust_score, components."""
    if "trust_score" not in table.columns:
        raise ValueError("the table has no trust_score; call trust.score(table) first")
    cols = ["rank", "trust_score"] + [c for c in table.columns if c.startswith("component_")]
    return table[cols].sort_values(["rank", "trust_score"], ascending=[True, False], kind="stable")


# ----------------------------------------------------------------------------- verdicts
def _num(row, column):
    if column not in row.index or _is_missing(row[column]):
        return None
    try:
        return float(row[column])
    except (TypeError, ValueError):
        return None


def _grey(eps: float) -> str:
    """An L-inf epsilon in grey levels of 255 ("4.1/255")."""
    return f"{eps * 255:.2g}/255" if eps * 255 < 10 else f"{eps * 255:.0f}/255"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def model_verdict(table: pd.DataFrame, *, thresholds: dict | None = None) -> str | None:
    """A clause when the model as a whole is not usable, else None.

    Rule: the overall accuracy (the classes' ``accuracy`` weighted by ``n_test``) is compared
    with chance, the accuracy of always answering the largest class (1/C when balanced). The
    model is "not usable" when the lower end of the Wilson interval of its accuracy (with
    ``z = THRESHOLDS["chance_z"]``, 1.96: a 95 % interval) is at or below chance, i.e. its
    accuracy cannot be told apart from guessing; with 1.96 a model at chance is flagged about
    97.5 % of the time, a model clearly above chance almost never (tests/test_trust.py simulates
    both). Needs ``accuracy`` and ``n_test``; None without them."""
    t = {**THRESHOLDS, **(thresholds or {})}
    if not {"accuracy", "n_test"} <= set(table.columns):
        return None
    n = table["n_test"].astype(float).to_numpy()
    acc = table["accuracy"].astype(float).to_numpy()
    ok = (n > 0) & ~np.isnan(acc)
    total = n[ok].sum()
    if total <= 0:
        return "no class has a test image, so nothing about the model can be judged"
    p = float((acc[ok] * n[ok]).sum() / total)
    chance = float(n.max() / n.sum())
    z = float(t["chance_z"])
    low = (p + z * z / (2 * total) - z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))) \
        / (1 + z * z / total)
    if low > chance:
        return None
    return (f"the model is no better than chance: {p:.0%} of {int(total)} test images right, "
            f"guessing gets {chance:.0%}")


def verdict_items(table: pd.DataFrame, *, thresholds: dict | None = None,
                  eps_ref: float | None = None) -> dict:
    """The verdict of each class as a list of ``(kind, clause)``, ``kind`` one of ``"model"``
    (the model is not usable, see :func:`model_verdict`), ``"note"`` (how much the numbers
    rest on), ``"good"`` and ``"bad"``; clauses start lower-case and have no full stop. The
    rules are those of :func:`verdicts`, which joins these into one sentence; the HTML report
    shows them as a list."""
    t = {**THRESHOLDS, **(thresholds or {})}
    unknown = set(thresholds or {}) - set(THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown threshold(s) {sorted(unknown)}; known: {sorted(THRESHOLDS)}")
    model = table.attrs.get("model_level", {})
    if eps_ref is None:
        eps_ref = table.attrs.get("score", {}).get("eps_ref")
    if eps_ref is None and "median_eps_whole" in table.columns:
        try:
            eps_ref = components(table, which=("robustness",)).attrs["eps_ref"]
        except ValueError:
            eps_ref = None
    max_eps = model.get("attack_max_eps")
    sanity = model.get("sanity_correlation")
    sanity_failed = sanity is not None and float(sanity) > t["sanity_max"]
    loc = None
    if {"relevance_mass", "mask_share"} <= set(table.columns):
        loc = components(table, which=("localisation",))["component_localisation"]
    out = {}
    unusable = model_verdict(table, thresholds=thresholds)
    for cls, row in table.iterrows():
        good, bad, notes = [], [], []
        n_test, n_pred = _num(row, "n_test"), _num(row, "n_predicted")
        if n_test is not None and n_test < t["few_images"]:
            notes.append(f"its numbers rest on only {int(n_test)} test image{'s' if n_test != 1 else ''}"
                         if n_test > 0 else "it has no test image, so most of its numbers are not defined")
        if n_pred == 0:
            bad.append("never predicted: the model does not answer this class for any test image")
        acc = _num(row, "accuracy")
        if acc is not None:
            if acc >= t["accurate"]:
                good.append(f"accurate ({acc:.0%})")
            elif acc < t["inaccurate"]:
                bad.append(f"often wrong ({acc:.0%} correct)")
            else:
                good.append(f"fairly accurate ({acc:.0%})")
        prec = _num(row, "precision")
        if prec is not None and prec < t["inaccurate"]:
            bad.append(f"often a false alarm (only {prec:.0%} of the images it calls {cls} are {cls})")
        ce = _num(row, "calibration_error")
        if ce is not None:
            if ce <= t["calibrated"]:
                good.append(f"well calibrated (ECE {ce:.2f})")
            else:
                conf, prec = _num(row, "mean_confidence"), _num(row, "precision")
                degree = "slightly " if ce <= t["miscalibrated"] else ""
                if conf is None or prec is None:
                    bad.append(f"{degree}miscalibrated (ECE {ce:.2f})")
                else:
                    way = "over" if conf > prec else "under"
                    bad.append(f"{degree}{way}-confident (ECE {ce:.2f}; says {conf:.0%} on average when "
                               f"predicting it and is right {prec:.0%})")
        eps = _num(row, "median_eps_whole")
        if eps is not None:
            never = math.isinf(eps) or (max_eps is not None and eps >= float(max_eps))
            if never:
                limit = _grey(float(max_eps)) if max_eps is not None else "the largest epsilon searched"
                good.append(f"robust (most of its images withstand {limit})")
            elif eps_ref is not None and math.isfinite(eps_ref) and eps < t["fragile"] * eps_ref:
                bad.append(f"fragile: flips at {_grey(eps)} (median; the classes' median is {_grey(eps_ref)})")
            elif eps_ref is not None and math.isfinite(eps_ref) and eps >= t["robust"] * eps_ref:
                good.append(f"robust (flips at {_grey(eps)}, the classes' median is {_grey(eps_ref)})")
        ratio = _num(row, "object_background_ratio")
        if ratio is not None:
            if ratio >= t["context"] and not math.isfinite(ratio):
                bad.append("leans on the background (changing the object alone does not flip it up to the "
                           "largest epsilon searched; changing the background does)")
            elif ratio >= t["context"]:
                bad.append(f"leans on the background (it flips with a {ratio:.3g}x smaller epsilon there "
                           f"than on the object)")
            elif ratio <= 1 / t["context"]:
                good.append(f"relies on the object (object/background epsilon ratio {ratio:.3g})")
        if sanity_failed and loc is not None:
            bad.append(f"its explanations fail the sanity check (correlation {float(sanity):.2f}), "
                       "so where they point says little")
        elif loc is not None and not _is_missing(loc[cls]):
            mass, share = _num(row, "relevance_mass"), _num(row, "mask_share")
            if loc[cls] >= t["localised"]:
                good.append(f"explanations find the object (relevance mass {mass:.2f}, chance {share:.2f})")
            elif loc[cls] < t["unlocalised"]:
                bad.append(f"explanations no better than chance at finding the object "
                           f"(relevance mass {mass:.2f}, chance {share:.2f})")
        late, forgotten = _num(row, "share_learned_late"), _num(row, "share_forgotten")
        if late is not None and forgotten is not None:
            unstable = late + forgotten
            if unstable >= t["unstable"]:
                bad.append(f"unstable in training ({unstable:.0%} of its images learned late or forgotten)")
            elif unstable <= t["stable"] and not (_num(row, "share_learned_early") or 0) < 0.5 <= \
                    (_num(row, "share_never_learned") or 0):       # not "stable" when never learned
                good.append("learned early and stably")
        out[cls] = ([("model", unusable)] if unusable else []) + [("note", x) for x in notes] + \
            [("good", x) for x in good] + [("bad", x) for x in bad]
    return out


def verdicts(table: pd.DataFrame, *, thresholds: dict | None = None, eps_ref: float | None = None) -> pd.Series:
    """One sentence per class (a Series indexed like ``table``) that follows from its numbers by
    the rules below (thresholds in :data:`THRESHOLDS`, overridable); a clause appears only when
    its columns are in the table. Strengths come first, then "but" and the weaknesses.

    * accuracy ``>= accurate``: "accurate (94%)"; ``< inaccurate``: "often wrong (62% correct)";
      else "fairly accurate (82%)". precision ``< inaccurate``: "often a false alarm".
    * calibration_error ``<= calibrated``: "well calibrated"; else over-confident when
      ``mean_confidence > precision`` (under- otherwise), "slightly" up to ``miscalibrated``.
    * median_eps_whole ``< fragile * eps_ref``: "fragile: flips at 2.5/255 ..."; ``>= robust * eps_ref``
      or never flipped: "robust". ``eps_ref`` as in :func:`components` (or the scored table's).
    * object_background_ratio ``>= context``: "leans on the background"; ``<= 1/context``:
      "relies on the object".
    * the sanity check failed (``sanity_correlation > sanity_max``): "its explanations fail the
      sanity check"; otherwise the localisation component ``L >= localised``: "explanations find
      the object"; ``L < unlocalised``: "explanations no better than chance at finding the object".
    * share learned late + forgotten ``>= unstable``: "unstable in training"; ``<= stable``:
      "learned early and stably".
    * the model as a whole no better than chance (:func:`model_verdict`): the sentence starts
      with "Not usable: ..."; a class never predicted: "never predicted"; fewer than
      ``few_images`` test images: "its numbers rest on only n test images".
    With a ``trust_score`` the sentence starts with "trust 0.71 (rank 2 of 6): ".
    """
    items = verdict_items(table, thresholds=thresholds, eps_ref=eps_ref)
    out = {}
    for cls, row in table.iterrows():
        kinds = {k: [text for kind, text in items[cls] if kind == k] for k in ("model", "note", "good", "bad")}
        good, bad = kinds["good"], kinds["bad"]
        if good and bad:
            text = f"{_and(good)}, but {'; '.join(bad)}."
        elif good:
            text = f"{_and(good)}."
        elif bad:
            text = f"{'; '.join(bad)}."
        else:
            text = "no clear strength or weakness in the numbers available."
        if kinds["note"]:
            text = "; ".join(kinds["note"]) + ". " + text[0].upper() + text[1:]
        if kinds["model"]:
            text = f"Not usable: {kinds['model'][0]}. " + text[0].upper() + text[1:]
        ts = _num(row, "trust_score")
        if "trust_score" in row.index:
            rank = f" (rank {int(row['rank'])} of {len(table)})" if "rank" in row.index else ""
            text = (f"trust {ts:.2f}{rank}: " if ts is not None else f"trust score not defined{rank}: ") + text
        out[cls] = text[0].upper() + text[1:]
    series = pd.Series(out, name="verdict").rename_axis(table.index.name)
    series.attrs["items"] = items          # the same verdicts as lists (the HTML report shows them so)
    return series


# ----------------------------------------------------------------------------- export
def format_value(value, *, column: str = "", max_eps: float | None = None, reason: str | None = None) -> str:
    """How the CSV-style cell prints a value: ``"not defined (<reason>)"`` for NaN/None with a
    ``reason``, ``"MISSING"`` without one, integers as they are, other numbers to 3
    significant digits, ``inf`` in an epsilon column as ``"> max_eps"`` (never flipped up to
    the largest epsilon searched) and ``"inf"`` elsewhere, texts as they are."""
    if _is_missing(value):
        return f"not defined ({reason})" if reason else "MISSING"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            if column.startswith("median_eps") and max_eps is not None and v > 0:
                return f"> {max_eps:.3g}"
            return "inf" if v > 0 else "-inf"
        if (column == "rank" or column.startswith("n_")) and v == int(v):
            return str(int(v))
        return f"{v:.3g}"
    return str(value)


def _atomic_write(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # a report to share, not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _verdict_series(verdicts_, table) -> pd.Series | None:
    if verdicts_ is None:
        return None
    series = pd.Series(verdicts_)
    series.index = series.index.astype(str)
    missing = [c for c in table.index if c not in series.index]
    if missing:
        raise ValueError(f"verdicts lack class(es) {missing}")
    return series.loc[list(table.index)]


def write_csv(table: pd.DataFrame, path, *, verdicts=None) -> Path:
    """Write the table (one row per class, index ``class``; plus a ``verdict`` column when
    ``verdicts`` are given) as CSV, atomically. Missing values are written ``NaN``, never
    left blank; numbers at full precision, so :func:`read_csv` gives the same values back.
    When some values are not defined, a ``not_defined`` column says which and why, per class
    (``"precision: the model never predicts this class; ..."``, ``"-"`` when none)."""
    frame = table.copy()
    series = _verdict_series(verdicts, table)
    if series is not None:
        frame["verdict"] = series.to_numpy()
    reasons = undefined(table)
    if reasons:
        frame["not_defined"] = ["; ".join(f"{col}: {why}" for (c, col), why in reasons.items() if c == cls) or "-"
                                for cls in table.index]
    text = frame.to_csv(index_label="class", na_rep="NaN")
    return _atomic_write(path, text.encode("utf-8"))


def read_csv(path) -> pd.DataFrame:
    """A table written by :func:`write_csv` (values only: provenance lives in the HTML report)."""
    # pandas 3 parses floats exactly by default (and deprecates the option); pandas 2 needs it
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(path, index_col="class", **exact)


def write_html(table: pd.DataFrame, path, **kw) -> Path:
    """The self-contained HTML report: see :func:`helpers.report.write_html` (same arguments)."""
    from .report import write_html as _write_html

    return _write_html(table, path, **kw)
