"""Per-class sources of the trust table: one small DataFrame per analysis, indexed by class.

Every per-class number ``X`` comes with ``X_ci_low`` / ``X_ci_high`` (a 95 % interval: Wilson
for a proportion, a seeded percentile bootstrap over the class's images otherwise) and the
count of images it rests on (``n_<source>`` column, see :data:`common.N_COLUMN`). The per-image
values the score needs are kept in ``frame.attrs["samples"]`` ``{name: {class: array}}`` so that
:mod:`.score` can bootstrap the components and combine their replicates.

Bootstrap seeds: class k of any source uses ``seed + k``; two sources with the same images of
a class in the same order (predictions and training history: the test set) therefore resample
the same images in every replicate, which keeps their dependence in the combined score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as _st

from .. import calibration, stats
from ..calibration import ece_rows
from ..plumbing import as_labels
from .common import (
    LEVEL,
    N_BOOT,
    NEVER_PREDICTED,
    NO_TEST_IMAGE,
    NONE_ATTACKED,
    NONE_CORRUPTED,
    NONE_EXPLAINED,
    SEED,
    Bag,
    ci_columns,
    class_list,
    explain,
    frame_of,
    numpy,
    withstanding_column,
)

__all__ = [
    "per_class_means",
    "per_class_from_predictions",
    "per_class_from_history",
    "per_class_from_fragility",
    "per_class_from_corruptions",
    "per_class_localisation",
    "model_level",
    "from_sanity_check",
    "boot_indices",
    "SANITY_THRESHOLD",
]

SANITY_THRESHOLD = 0.5  # mean rank correlation above which the maps do not depend on the weights


# ----------------------------------------------------------------------------- building blocks
def boot_indices(n: int, k: int, *, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """``[n_boot, n]`` resampling indices of class k (seed ``seed + k``)."""
    rng = np.random.default_rng(seed + k)
    return rng.integers(0, n, size=(n_boot, n)) if n > 0 else np.zeros((n_boot, 0), dtype=int)


def _wilson_cols(rows: dict, name: str, k, n, level):
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows[name] = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
    low, high = stats.wilson(k, n, level=level)
    lo_col, hi_col = ci_columns(name)
    rows[lo_col], rows[hi_col] = np.atleast_1d(low), np.atleast_1d(high)


def _boot_cols(rows: dict, name: str, groups: list, stat, *, n_boot, seed, level, replicates=None):
    """Estimate and percentile interval of ``stat`` per group (``groups[k]``: the values of
    class k, 1-D or [n, d]); ``stat`` maps ``[B, n(, d)]`` to ``[B]`` and ``[n(, d)]`` to a
    number."""
    est, lo, hi = [], [], []
    for k, v in enumerate(groups):
        v = np.asarray(v, dtype=float)
        if len(v) == 0:
            est.append(np.nan), lo.append(np.nan), hi.append(np.nan)
            if replicates is not None:
                replicates.append(np.full(n_boot, np.nan))
            continue
        reps = np.asarray(stat(v[boot_indices(len(v), k, n_boot=n_boot, seed=seed)]), dtype=float)
        a, b = stats.percentile_interval(reps, level=level)
        est.append(float(stat(v[None])[0])), lo.append(a), hi.append(b)
        if replicates is not None:
            replicates.append(reps)
    rows[name] = np.array(est)
    lo_col, hi_col = ci_columns(name)
    rows[lo_col], rows[hi_col] = np.array(lo), np.array(hi)


def _mean(a):
    return a.mean(axis=-1)


def _median(a):
    return np.median(a, axis=-1)


def per_class_means(labels, classes, **columns) -> pd.DataFrame:
    """A source from per-image values: ``n`` (images per class) and the mean of each keyword
    array (``[N]``, aligned with ``labels``) over the images of each class (NaN values
    skipped), with its bootstrap interval (``<name>_ci_low`` / ``_ci_high``)."""
    classes = class_list(classes)
    y = as_labels(labels, None, "cpu", num_classes=len(classes)).numpy()
    rows = {"n": np.bincount(y, minlength=len(classes))}
    for name, values in columns.items():
        v = numpy(values).astype(np.float64)
        if v.shape != y.shape:
            raise ValueError(
                f"{name} must be [N] with N={len(y)} (one per label), got shape {v.shape}"
            )
        groups = [v[(y == k) & ~np.isnan(v)] for k in range(len(classes))]
        _boot_cols(rows, name, groups, _mean, n_boot=N_BOOT, seed=SEED, level=LEVEL)
    return frame_of(rows, classes)


# ----------------------------------------------------------------------------- predictions
def _ece_stat(n_bins: int):
    """``stat`` for :func:`_boot_cols`: the ECE of ``[..., n, 2]`` (confidence, correct)."""

    def ece(a):
        return ece_rows(a[..., 0], a[..., 1], n_bins)

    return ece


def _calibration_null(by_pred: list, observed, n_bins: int, n_null: int, seed: int):
    """Consistency resampling (Broecker & Smith 2007) per class: the mean ECE of ``n_null``
    draws with correct ~ Bernoulli(confidence) (class k seeded ``seed + 10_000 + k``), and the
    share of draws with an ECE at least the ``observed`` one, ``(1 + count) / (1 + n_null)``."""
    C = len(by_pred)
    expected, p_value = np.full(C, np.nan), np.full(C, np.nan)
    for k, g in enumerate(by_pred):
        if len(g) == 0:
            continue
        rng = np.random.default_rng(seed + 10_000 + k)
        draws = rng.random((n_null, len(g))) < g[:, 0]
        null = ece_rows(np.broadcast_to(g[:, 0], draws.shape), draws, n_bins)
        expected[k] = null.mean()
        p_value[k] = (1 + np.sum(null >= observed[k] - 1e-12)) / (1 + n_null)
    return expected, p_value


def _by_predicted_class(conf, pred, y, C) -> list:
    """Per predicted class k: ``[n, 2]`` (confidence, correct) of the images predicted as k."""
    return [np.column_stack([conf[pred == k], (y[pred == k] == k)]) for k in range(C)]


def _temperature_scaled_columns(rows, calibrated_probs, p, pred, y, n_bins, kw) -> None:
    """``mean_confidence_ts`` and ``calibration_error_ts`` from ``calibrated_probs``."""
    q = calibration._probs(calibrated_probs, "calibrated_probs")
    if q.shape != p.shape or np.any(q.argmax(1) != pred):
        raise ValueError(
            "calibrated_probs must have the shape and the arg-max of probs "
            "(temperature scaling never changes a prediction)"
        )
    by_pred_ts = _by_predicted_class(q.max(1), pred, y, p.shape[1])
    _boot_cols(rows, "mean_confidence_ts", [g[:, 0] for g in by_pred_ts], _mean, **kw)
    _boot_cols(rows, "calibration_error_ts", by_pred_ts, _ece_stat(n_bins), **kw)


_PREDICTED_COLUMNS = (
    "precision",
    "mean_confidence",
    "calibration_error",
    "calibration_error_expected",
    "calibration_p_value",
    "mean_confidence_ts",
    "calibration_error_ts",
)


def _predictions_reasons(classes, n_test, n_pred) -> dict:
    """Why a class's numbers are not defined: no test image, or never predicted."""
    reasons = {}
    for k, cls in enumerate(classes):
        if n_test[k] == 0:
            reasons[(cls, "accuracy")] = NO_TEST_IMAGE
        if n_pred[k] == 0:
            reasons.update({(cls, c): NEVER_PREDICTED for c in _PREDICTED_COLUMNS})
    return reasons


def _checked_predictions(labels, probs, classes):
    """``(classes, probs [N, C], labels [N])`` after checking that they fit together."""
    classes = class_list(classes)
    p = calibration._probs(probs)
    if p.shape[1] != len(classes):
        raise ValueError(f"probs have {p.shape[1]} columns for {len(classes)} classes")
    y = as_labels(labels, None, "cpu", num_classes=len(classes)).numpy()
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} rows of probs")
    return classes, p, y


def per_class_from_predictions(
    labels,
    probs,
    classes,
    *,
    calibrated_probs=None,
    n_bins: int = calibration.N_BINS,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    n_null: int = 2000,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Source "predictions" from test ``probs`` ``[N, C]`` of the audited model.

    Columns (each number with its 95 % interval): ``n_test``, ``accuracy`` (recall, Wilson),
    ``n_predicted``, ``precision`` (Wilson), ``mean_confidence`` and ``calibration_error``
    (bootstrap over the images PREDICTED as the class: "when the model says *forest* with 0.9,
    is it right 9 times in 10?"), and two columns that say how much of that error is noise:
    ``calibration_error_expected``, the mean ECE the class would show if its confidence were
    honest (its own confidences, correct ~ Bernoulli(confidence), ``n_null`` draws: consistency
    resampling, Broecker & Smith 2007), and ``calibration_p_value``, the share of those draws
    with an ECE at least the observed one ((1 + count) / (1 + n_null)). With
    ``calibrated_probs`` (same arg-max) also ``mean_confidence_ts`` and ``calibration_error_ts``."""
    classes, p, y = _checked_predictions(labels, probs, classes)
    C = len(classes)
    pred, conf = p.argmax(1), p.max(1)
    n_test = np.bincount(y, minlength=C)
    n_pred = np.bincount(pred, minlength=C)
    hits = np.bincount(y[pred == y], minlength=C)
    rows = {"n_test": n_test}
    _wilson_cols(rows, "accuracy", hits, n_test, level)
    rows["n_predicted"] = n_pred
    _wilson_cols(rows, "precision", hits, n_pred, level)
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    by_pred = _by_predicted_class(conf, pred, y, C)
    _boot_cols(rows, "mean_confidence", [g[:, 0] for g in by_pred], _mean, **kw)
    _boot_cols(rows, "calibration_error", by_pred, _ece_stat(n_bins), **kw)
    rows["calibration_error_expected"], rows["calibration_p_value"] = _calibration_null(
        by_pred, rows["calibration_error"], n_bins, n_null, seed
    )
    if calibrated_probs is not None:
        _temperature_scaled_columns(rows, calibrated_probs, p, pred, y, n_bins, kw)
    frame = explain(frame_of(rows, classes), _predictions_reasons(classes, n_test, n_pred))
    frame.attrs["samples"] = Bag(
        correct={cls: (pred[y == k] == k).astype(float) for k, cls in enumerate(classes)},
        calibration={cls: by_pred[k] for k, cls in enumerate(classes)},
    )
    frame.attrs["n_bins"] = n_bins
    return frame


# ----------------------------------------------------------------------------- training history
def _history_inputs(history, labels, classes, upto):
    """``(preds [E, N], labels, classes, upto)`` from a history object (its ``test_preds``,
    ``test_labels``, ``classes`` and audited epoch) or a plain ``[E, N]`` array."""
    from .. import evolution

    if hasattr(history, "test_preds"):
        preds = np.asarray(history.test_preds)
        own = numpy(history.test_labels)
        if labels is not None and not np.array_equal(numpy(labels), own):
            raise ValueError(
                "labels differ from history.test_labels: the history is of another test set"
            )
        labels = own
        classes = classes if classes is not None else getattr(history, "classes", None)
        if isinstance(upto, str):
            if upto != "audited":
                raise ValueError(f"upto must be 'audited', an epoch index or None, got {upto!r}")
            upto = evolution.audited_epoch(history)
    else:
        preds = numpy(history)
        if labels is None:
            raise ValueError("labels are needed when history is a plain [epochs, images] array")
        if isinstance(upto, str):
            upto = None
    if classes is None:
        raise ValueError("classes are needed (the history has none)")
    return preds, labels, class_list(classes), upto


def per_class_from_history(
    history,
    labels=None,
    classes=None,
    *,
    late_fraction: float = 0.5,
    upto="audited",
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Source "training" from a :class:`helpers.train.TrainHistory` (or anything with
    ``test_preds [E, N]`` and ``test_labels``; or a plain ``[E, N]`` array with ``labels``).

    The statistics stop at the AUDITED epoch: ``upto="audited"`` (default) uses the epochs up to
    and including ``history.best_epoch`` when the history names one (the checkpoint every
    notebook audits, :func:`helpers.evolution.audited_epoch`), else all; an int is an epoch index
    (0-based, inclusive); None uses every recorded epoch.

    Columns: ``n_history``; ``share_learned_early``, ``share_learned_late``,
    ``share_forgotten``, ``share_never_learned`` (shares of the class's test images, summing to
    1, each with its Wilson interval; :func:`helpers.evolution.image_stats` defines them);
    ``mean_prediction_changes`` (bootstrap) and the model-level ``history_epochs`` (epochs used).
    ``labels``, when given with a history, must equal its ``test_labels``."""
    from .. import evolution

    preds, labels, classes, upto = _history_inputs(history, labels, classes, upto)
    y = as_labels(labels, None, "cpu", num_classes=len(classes)).numpy()
    image = evolution.image_stats(preds, y, late_fraction=late_fraction, upto=upto)
    C = len(classes)
    n = np.bincount(y, minlength=C)
    rows = {"n_history": n}
    for cat in evolution.CATEGORIES:
        k = np.bincount(y[image["category"].to_numpy() == cat], minlength=C)
        _wilson_cols(rows, f"share_{cat.replace(' ', '_')}", k, n, level)
    changes = image["changes"].to_numpy(float)
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    _boot_cols(rows, "mean_prediction_changes", [changes[y == k] for k in range(C)], _mean, **kw)
    used = preds.shape[0] if upto is None else int(upto) + 1
    rows["history_epochs"] = [used] * C
    frame = frame_of(rows, classes)
    frame.attrs["model_level"] = ["history_epochs"]
    early = (image["category"].to_numpy() == "learned early").astype(float)
    frame.attrs["samples"] = Bag(
        learned_early={cls: early[y == k] for k, cls in enumerate(classes)}
    )
    no_image = [cls for k, cls in enumerate(classes) if n[k] == 0]
    shown = [col for col in rows if col not in ("n_history", "history_epochs")]
    return explain(frame, {(cls, col): NO_TEST_IMAGE for cls in no_image for col in shown})


# ----------------------------------------------------------------------------- attacks
def _ratio(obj: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Per-image eps(object) / eps(background); undefined (dropped) when both are inf or 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = obj / bg
    return r[~np.isnan(r)]


def _epsilons_by_region(fragility: pd.DataFrame, C: int) -> dict:
    """``{region: [class k's epsilons]}`` of the correctly classified images, each a Series
    indexed by image (never flipped = ``inf``); the regions in the frame's order."""
    if not isinstance(fragility, pd.DataFrame) or "region" not in fragility.columns:
        raise ValueError(
            "fragility must be the long DataFrame of attacks.fragility_by_region (one row per "
            "image and region); the per-class summary has no per-image epsilons for intervals"
        )
    ok = fragility[~fragility["already_wrong"].astype(bool)]
    regions = list(dict.fromkeys(fragility["region"]))
    if "whole" not in regions:
        raise ValueError("the fragility frame has no 'whole' region: attack the whole image too")
    eps = {}
    for region in regions:
        sel = ok[ok["region"] == region]
        eps[region] = [
            sel.loc[sel["label"] == k].set_index("image")["epsilon"].astype(float).fillna(np.inf)
            for k in range(C)
        ]
    return eps


def _images_in_sample(fragility: pd.DataFrame, C: int) -> np.ndarray:
    """Images of each class attacked as a whole, right or wrong."""
    whole = fragility[fragility["region"] == "whole"]
    return np.array([whole[whole["label"] == k]["image"].nunique() for k in range(C)])


def _object_background_columns(rows: dict, eps: dict, kw: dict) -> None:
    """``n_object_background``, ``object_background_ratio`` (median per-image eps(object) /
    eps(background), bootstrap) and ``object_background_p_value`` (exact two-sided sign test)."""
    ratios = []
    for o, b in zip(eps["object"], eps["background"]):
        common_images = o.index.intersection(b.index)
        ratios.append(_ratio(o.loc[common_images].to_numpy(), b.loc[common_images].to_numpy()))
    rows["n_object_background"] = np.array([len(r) for r in ratios])
    _boot_cols(rows, "object_background_ratio", ratios, _median, **kw)
    pv = []
    for r in ratios:
        above, below = int(np.sum(r > 1)), int(np.sum(r < 1))
        pv.append(
            _st.binomtest(above, above + below, 0.5).pvalue if above + below else 1.0
        )  # all ties: no evidence
    rows["object_background_p_value"] = np.array(pv)


def _fragility_class_reasons(columns, k: int, eps: dict, n_sample: int, n_ratio) -> dict:
    """Why class k's attack numbers are not defined (``n_ratio``: its ``n_object_background``,
    None without both regions)."""
    if len(eps["whole"][k]) == 0:
        none = "none of its images was in the attacked sample" if n_sample == 0 else NONE_ATTACKED
        return {c: none for c in columns if not c.startswith("n_") and c != "attack_max_eps"}
    reasons = {}
    for region in ("object", "background"):
        if region in eps and len(eps[region][k]) == 0:
            why = (
                f"none of the images attacked in the {region} is one the model gets right "
                "(the region sample is the first images of each class)"
            )
            reasons.update({c: why for c in columns if c.startswith(f"median_eps_{region}")})
    if n_ratio == 0:
        why = (
            "no image of this class the model gets right was attacked in both regions"
            if len(eps["object"][k]) == 0 or len(eps["background"][k]) == 0
            else "on every attacked image the object alone and the background alone both "
            "withstand the largest epsilon searched (or both flip at 0)"
        )
        reasons.update({c: why for c in ("object_background_ratio", "object_background_p_value")})
    return reasons


def _with_max_eps(out: pd.DataFrame, max_eps) -> pd.DataFrame:
    """``out`` with the model-level column ``attack_max_eps`` (the largest epsilon searched)."""
    if max_eps is not None:
        if not (isinstance(max_eps, (int, float, np.floating)) and max_eps > 0):
            raise ValueError(f"max_eps must be a number > 0, got {max_eps!r}")
        out["attack_max_eps"] = float(max_eps)
        out.attrs["model_level"] = ["attack_max_eps"]
    return out


def per_class_from_fragility(
    fragility: pd.DataFrame,
    classes,
    *,
    max_eps: float | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Source "attacks" from the long frame of :func:`helpers.attacks.fragility_by_region` (one
    row per image and region: ``image``, ``label``, ``region`` in whole / object / background,
    ``epsilon`` (the smallest flipping L-inf epsilon of the minimum-norm PGD search; NaN when
    it never flipped), ``flipped``, ``already_wrong``; ``attrs["max_eps"]`` is kept).

    Only correctly classified images count (``n_attacked``). Columns: ``median_eps_whole`` /
    ``_object`` / ``_background`` (bootstrap; an image that never flipped counts as ``inf``, so a
    median is ``inf`` when more than half withstood the largest epsilon),
    ``share_not_flipped_whole`` (Wilson), and, with both regions (of equal pixel count),
    ``object_background_ratio``: the median over images of eps(object) / eps(background)
    (bootstrap), ``n_object_background`` (images where it is defined) and
    ``object_background_p_value`` (exact two-sided sign test of "ratio > 1" against "ratio < 1").
    The per-image whole-image epsilons are kept for the robustness component
    (``attrs["samples"]["eps_whole"]``); ``attack_max_eps`` is model level."""
    classes = class_list(classes)
    C = len(classes)
    eps = _epsilons_by_region(fragility, C)
    max_eps = fragility.attrs.get("max_eps") if max_eps is None else max_eps
    n_sample = _images_in_sample(fragility, C)
    rows = {"n_attacked": np.array([len(e) for e in eps["whole"]])}
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    for region in ("whole", "object", "background"):
        if region in eps:
            _boot_cols(
                rows, f"median_eps_{region}", [e.to_numpy() for e in eps[region]], _median, **kw
            )
    not_flipped = [int(np.isinf(e.to_numpy()).sum()) for e in eps["whole"]]
    _wilson_cols(rows, "share_not_flipped_whole", not_flipped, rows["n_attacked"], level)
    both = "object" in eps and "background" in eps
    if both:
        _object_background_columns(rows, eps, kw)
    out = _with_max_eps(frame_of(rows, classes), max_eps)
    reasons = {}
    for k, cls in enumerate(classes):
        n_ratio = rows["n_object_background"][k] if both else None
        why = _fragility_class_reasons(out.columns, k, eps, n_sample[k], n_ratio)
        reasons.update({(cls, c): text for c, text in why.items()})
    out = explain(out, reasons)
    out.attrs["samples"] = Bag(
        eps_whole={cls: eps["whole"][k].to_numpy() for k, cls in enumerate(classes)}
    )
    return out


# ----------------------------------------------------------------------------- corruptions
_CORRUPTION_COLUMNS = ("corruption", "image", "label", "severity", "already_wrong")


def _stated(frame: pd.DataFrame, severities) -> dict:
    """``{corruption: stated severity}`` for the corruptions of ``frame``, in its order."""
    from ..corruptions import stated_severities

    if not isinstance(frame, pd.DataFrame) or not set(_CORRUPTION_COLUMNS) <= set(frame.columns):
        raise ValueError(
            "frame must be the long DataFrame of corruptions.natural_fragility / severity_table "
            f"(one row per corruption and image, with columns {list(_CORRUPTION_COLUMNS)})"
        )
    severities = stated_severities() if severities is None else dict(severities)
    present = list(dict.fromkeys(frame["corruption"]))
    if not present:
        raise ValueError("the corruption frame has no row")
    unstated = [c for c in present if c not in severities]
    if unstated:
        raise ValueError(
            f"no stated severity for corruption(s) {unstated}: give severities={{name: s}} "
            "with s in (0, 1], or leave those corruptions out of the frame"
        )
    bad = {c: severities[c] for c in present if not 0 < float(severities[c]) <= 1}
    if bad:
        raise ValueError(f"stated severities must lie in (0, 1], got {bad}")
    return {c: float(severities[c]) for c in present}


def _severity_level(stated: dict) -> str:
    """ "ImageNet-C level L" when every stated severity is that level's, else a plain phrase."""
    from ..corruptions import CORRUPTIONS, stated_severities

    if set(stated) <= set(CORRUPTIONS):
        for level in range(1, 6):
            if stated_severities(level, list(stated)) == stated:
                return f"ImageNet-C level {level}"
    return "the stated severities"


def _withstood(frame: pd.DataFrame, stated: dict) -> pd.DataFrame:
    """``[image, corruption]`` 1.0 where the correctly classified image keeps its prediction up
    to the corruption's stated severity (never flipped, or flipped only above it), 0.0 where it
    flips at or below it, NaN where the frame has no row; column ``label`` last."""
    ok = frame[~frame["already_wrong"].astype(bool)]
    severity = ok["severity"].astype(float)
    held = severity.isna() | (severity > ok["corruption"].map(stated))
    keys = ok[["image", "corruption"]]
    if keys.duplicated().any():
        raise ValueError("the corruption frame has several rows for one (image, corruption)")
    wide = held.astype(float).set_axis(pd.MultiIndex.from_frame(keys)).unstack("corruption")
    wide = wide.reindex(columns=list(stated))
    return wide.assign(label=ok.groupby("image")["label"].first())


def _corruption_reasons(classes, rows: dict, in_sample: np.ndarray, stated: dict) -> dict:
    """Why a class's natural-robustness numbers are not defined: no image it gets right, or
    none of those corrupted by one corruption (a frame that lacks it for the class)."""
    reasons = {}
    for k, cls in enumerate(classes):
        none = rows["n_corrupted"][k] == 0
        why = NONE_CORRUPTED if in_sample[k] else "none of its images was in the corrupted sample"
        if none:
            reasons[(cls, "natural_robustness")] = why
        for c in stated:
            if np.isnan(rows[withstanding_column(c)][k]):
                reasons[(cls, withstanding_column(c))] = (
                    why if none else f"none of its images was corrupted by {c}"
                )
    return reasons


def per_class_from_corruptions(
    frame: pd.DataFrame,
    classes,
    *,
    severities: dict | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Source "natural corruptions" from the long frame of
    :func:`helpers.corruptions.natural_fragility` / :func:`~helpers.corruptions.severity_table`
    (one row per corruption and image: ``corruption``, ``image``, ``label``, ``severity``, the
    smallest severity in (0, 1] that flips the prediction, NaN when none does, 0 when it is
    wrong already; ``already_wrong``, ...).

    ``severities``: ``{corruption: stated severity}``, default
    :func:`helpers.corruptions.stated_severities` (ImageNet-C level 3 of each corruption); every
    corruption of the frame needs one, and the columns are those of the corruptions the frame
    has. Only correctly classified images count (``n_corrupted``); an image *withstands*
    corruption c when it does not flip up to c's stated severity s_c (severity NaN or > s_c).

    Columns: ``share_withstanding_<corruption>`` (Wilson) for each corruption;
    ``natural_robustness``, the mean over the images of the share of the corruptions each
    withstands (the mean of the shares when every image has every corruption), with a bootstrap
    interval over the images (class k seeded ``seed + k``); the model-level ``natural_level``
    ("ImageNet-C level 3") and ``natural_severities``. The per-image shares are kept for the
    natural-robustness component (``attrs["samples"]["withstood"]``)."""
    classes = class_list(classes)
    C = len(classes)
    stated = _stated(frame, severities)
    wide = _withstood(frame, stated)
    y = as_labels(wide.pop("label").to_numpy(), None, "cpu", num_classes=C).numpy()
    rows = {"n_corrupted": np.bincount(y, minlength=C)}
    per_image = wide.mean(axis=1).to_numpy()  # over the corruptions the image has
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    groups = [per_image[y == k] for k in range(C)]
    _boot_cols(rows, "natural_robustness", groups, _mean, **kw)
    for name in stated:
        held = wide[name].to_numpy()
        k = [np.nansum(held[y == c]) for c in range(C)]
        n = [np.sum(~np.isnan(held[y == c])) for c in range(C)]
        _wilson_cols(rows, withstanding_column(name), k, n, level)
    rows["natural_level"] = [_severity_level(stated)] * C
    rows["natural_severities"] = [", ".join(f"{c} {s:.2g}" for c, s in stated.items())] * C
    out = frame_of(rows, classes)
    out.attrs["model_level"] = ["natural_level", "natural_severities"]
    in_sample = np.isin(np.arange(C), frame["label"].to_numpy(int))
    out = explain(out, _corruption_reasons(classes, rows, in_sample, stated))
    out.attrs["samples"] = Bag(withstood={cls: groups[k] for k, cls in enumerate(classes)})
    return out


# ----------------------------------------------------------------------------- explanations
def _localisation_p_values(mass: np.ndarray, share: np.ndarray, y: np.ndarray, C: int):
    """Per class: one-sided t test p-value that relevance mass - mask share is above 0 (0 when
    every one of 2+ differences is positive and they do not vary; 1 otherwise or with a single
    image; NaN without images)."""
    pv = np.full(C, np.nan)
    for k in range(C):
        d = (mass - share)[(y == k) & ~np.isnan(mass)]
        if len(d) >= 2 and np.std(d) > 0:
            pv[k] = float(_st.ttest_1samp(d, 0.0, alternative="greater").pvalue)
        elif len(d) >= 1:
            pv[k] = 0.0 if np.all(d > 0) and len(d) >= 2 else 1.0
    return pv


def _checked_maps(maps, masks, labels, classes):
    """``(classes, maps [N, H, W], masks [N, H, W], labels [N])`` after checking them."""
    from .. import quality

    classes = class_list(classes)
    m = quality._maps_np(maps)
    gt = quality._masks_np(masks, m.shape)
    y = as_labels(labels, None, "cpu", num_classes=len(classes)).numpy()
    if len(y) != len(m):
        raise ValueError(f"{len(y)} labels for {len(m)} maps")
    return classes, m, gt, y


def per_class_localisation(
    maps,
    masks,
    labels,
    classes,
    *,
    tolerance: float = 0,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Source "explanations" from attribution maps ``[N, H, W]`` of N test images, each map
    explaining the class the model PREDICTED for the image (what it actually used), their object
    masks ``[N, H, W]`` and the images' true ``labels`` ``[N]`` (the rows' classes).

    Columns: ``n_explained``; ``pointing_game`` (hit rate, Wilson); the class means of
    ``relevance_mass``, ``mask_share`` (the chance level of both), ``area_50`` and ``gini``
    (bootstrap; :mod:`helpers.quality`) and ``localisation_p_value``, a one-sided t test that
    the mean of relevance mass - mask share over the images is above 0 (chance): the
    percentile bootstrap of a mean of 10 values is too narrow to decide on alone. The per-image
    (relevance mass, mask share) pairs are
    kept for the localisation component (``attrs["samples"]["localisation"]``)."""
    from .. import quality

    classes, m, gt, y = _checked_maps(maps, masks, labels, classes)
    C = len(classes)
    compact = quality.compactness(m)
    hit = np.asarray(quality.pointing_game(m, gt, tolerance=tolerance), dtype=float)
    mass = np.asarray(quality.relevance_mass(m, gt), dtype=float)
    share = gt.reshape(len(gt), -1).mean(1).astype(float)
    n = np.bincount(y, minlength=C)
    rows = {"n_explained": n}
    _wilson_cols(rows, "pointing_game", np.bincount(y, weights=hit, minlength=C), n, level)
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    for name, v in (
        ("relevance_mass", mass),
        ("mask_share", share),
        ("area_50", compact["area_50"].to_numpy(float)),
        ("gini", compact["gini"].to_numpy(float)),
    ):
        _boot_cols(rows, name, [v[(y == k) & ~np.isnan(v)] for k in range(C)], _mean, **kw)
    rows["localisation_p_value"] = _localisation_p_values(mass, share, y, C)
    frame = frame_of(rows, classes)
    none = [cls for k, cls in enumerate(classes) if n[k] == 0]
    shown = [col for col in frame.columns if col != "n_explained"]
    frame = explain(frame, {(cls, col): NONE_EXPLAINED for cls in none for col in shown})
    frame.attrs["samples"] = Bag(
        localisation={
            cls: np.column_stack([mass[y == k], share[y == k]]) for k, cls in enumerate(classes)
        }
    )
    return frame


# ----------------------------------------------------------------------------- model level
def model_level(classes, **values) -> pd.DataFrame:
    """A source of model-level numbers (or short texts): each keyword value repeated on every
    class's row, the columns listed in ``attrs["model_level"]`` (the HTML shows them once)."""
    classes = class_list(classes)
    if not values:
        raise ValueError(
            "give at least one model-level value, e.g. model_level(classes, temperature=1.7)"
        )
    frame = frame_of({k: [v] * len(classes) for k, v in values.items()}, classes)
    frame.attrs["model_level"] = list(values)
    return frame


def from_sanity_check(
    sanity: pd.DataFrame,
    method: str,
    classes,
    *,
    threshold: float = SANITY_THRESHOLD,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> pd.DataFrame:
    """Source "sanity check" (model level) from the frame of :func:`helpers.quality.sanity_check`,
    through :func:`helpers.quality.sanity_gate`: ``sanity_correlation`` (mean over images of the
    rank correlation with the original map after randomisation, near 0 = the maps depend on the
    weights) with its bootstrap interval over the images, ``n_sanity`` (images),
    ``n_sanity_undefined`` (undefined correlations among those averaged), ``sanity_gate``
    ("pass" when the whole interval lies below ``threshold``, "fail" above, "undecided" when it
    straddles it or fewer than 2 images) and ``explanation_method``."""
    from ..quality import sanity_gate

    g = sanity_gate(sanity, method, threshold=threshold, level=level, n_boot=n_boot, seed=seed)
    lo, hi = ci_columns("sanity_correlation")
    frame = model_level(
        classes,
        sanity_correlation=float(g["mean"]),
        **{lo: float(g["ci_low"]), hi: float(g["ci_high"])},
        n_sanity=int(g["n_images"]),
        n_sanity_undefined=int(g["n_undefined"]),
        sanity_gate=str(g["decision"]),
        explanation_method=str(method),
    )
    why = (
        "fewer than two images with a correlation: no interval"
        if not np.isnan(g["mean"])
        else "no image has a defined rank correlation"
    )
    return explain(frame, {(cls, "sanity_correlation"): why for cls in frame.index})
