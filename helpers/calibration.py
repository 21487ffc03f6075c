"""Is the classifier's confidence honest? Calibration errors, and temperature scaling.

Common format: ``probs`` is ``[N, C]`` softmax probabilities (numpy or torch; each row sums to
1), ``logits`` ``[N, C]`` raw scores, ``labels`` ``[N]`` integer classes in ``[0, C)``. The
*confidence* of a prediction is its largest probability, the *prediction* its arg-max.

Binning (Guo et al. 2017, "On Calibration of Modern Neural Networks"): ``n_bins`` equal-width
bins on the confidence, right-closed like the paper's ``((m-1)/M, m/M]``, the first one also
holding 0. The expected calibration error is the bin-size weighted mean of
``|accuracy - mean confidence|`` over the bins, the maximum calibration error the largest such
gap over the non-empty bins. Both are biased upwards on small samples (a perfectly calibrated
model scores about ``sqrt(n_bins / N)`` times a constant, not 0), so compare them only at
similar ``N`` and ``n_bins``.

Temperature scaling (Guo et al. 2017): one scalar ``T > 0``, ``softmax(logits / T)``, chosen to
minimise the negative log-likelihood on held-out data. ``T`` does not change any arg-max, so
accuracy stays the same. The held-out data must be images that neither trained the model nor
SELECTED it: the validation split (:func:`validation_indices`) chose the kept epoch by early
stopping, so the kept model was picked for looking good on exactly those images, and a
temperature fitted there is biased towards finding it under-confident (T < 1). Without a third
split (and without retraining), :func:`cross_fit_temperature` fits ``T`` on the test images by
cross-fitting: stratified, seeded folds; each fold is scaled with a ``T`` fitted on the OTHER
folds, so no image's calibrated probability comes from a ``T`` that saw its label. It can be
fitted from probabilities too: ``log p`` differs from the logits by a constant per row, which
``softmax(. / T)`` ignores, so the result is the same up to float32 underflow of tiny
probabilities (floored at the smallest normal float32, ``log`` about -87).

Functions::

    reliability_bins(probs, labels, *, n_bins=15) -> DataFrame     # one row per bin
    expected_calibration_error(probs, labels, *, n_bins=15) -> float
    maximum_calibration_error(probs, labels, *, n_bins=15) -> float
    negative_log_likelihood(probs, labels) -> float
    brier_score(probs, labels) -> float
    per_class_calibration_error(probs, labels, *, n_bins=15, by="predicted") -> ndarray [C]
    per_class_undefined(probs, labels, *, by="predicted") -> list [C] of None or the reason
    summary(probs_by_name, labels, *, n_bins=15) -> DataFrame       # one row per model/state
    fit_temperature(scores, labels, *, kind="logits") -> TemperatureFit
    apply_temperature(scores, temperature, *, kind="logits") -> probs
    validation_indices(run) -> ndarray ;  validation_predictions(run) -> (probs, labels)
    stratified_folds(labels, folds=5, *, seed=0) -> ndarray [N]      # fold index per image
    cross_fit_temperature(scores, labels, *, kind="probs", folds=5, seed=0, n_bins=15) -> CrossFit
    ece_interval(probs, labels, *, n_bins=15, n_boot=2000, seed=0, level=0.95) -> DataFrame
    ece_consistency(confidence, correct, *, n_bins=15, n_draws=1000, seed=0) -> Consistency
    per_class_consistency(probs, labels, *, n_bins=15, n_draws=1000, seed=0) -> DataFrame

Statistics (``ece_interval``, ``ece_consistency``): the ECE of a small set is biased upwards
(see above), so an interval around it says how precisely it is known, not whether the model
is miscalibrated. For that, :func:`ece_consistency` compares it with the ECE a PERFECTLY
calibrated model would show on the same confidences ("consistency resampling", Bröcker &
Smith 2007; Vaicenavicius et al. 2019): draw ``correct ~ Bernoulli(confidence)`` many times
(seeded) and ask how often that null ECE reaches the observed one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from .plumbing import as_labels

__all__ = [
    "reliability_bins",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "brier_score",
    "per_class_calibration_error",
    "per_class_undefined",
    "summary",
    "NEVER_PREDICTED",
    "TemperatureFit",
    "fit_temperature",
    "apply_temperature",
    "validation_indices",
    "validation_predictions",
    "CrossFit",
    "cross_fit_temperature",
    "stratified_folds",
    "ece_interval",
    "ece_rows",
    "Consistency",
    "ece_consistency",
    "per_class_consistency",
]

N_BINS = 15
# Probabilities of exactly 0 (float32 underflow) are floored here before taking the log.
PROB_FLOOR = float(np.finfo(np.float32).tiny)
# The search range for the temperature (the optimum is searched over log T inside it).
TEMPERATURE_BOUNDS = (0.01, 100.0)


# ----------------------------------------------------------------------------- input checks
def _numpy(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be an array or tensor, got {type(a).__name__}") from err


def _scores(scores, name: str = "logits") -> np.ndarray:
    s = _numpy(scores, name)
    if s.ndim != 2 or s.shape[1] < 2 or s.shape[0] < 1:
        raise ValueError(
            f"{name} must be [N, C] with N >= 1 and C >= 2 classes, got shape {s.shape}"
        )
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ValueError(f"{name} contain NaN or +inf")
    return s


def _probs(probs, name: str = "probs") -> np.ndarray:
    p = _scores(probs, name)
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(
            f"{name} must lie in [0, 1] (softmax outputs), got values in "
            f"[{p.min():.3g}, {p.max():.3g}]; pass logits to the *_temperature functions"
        )
    sums = p.sum(1)
    if np.abs(sums - 1).max() > 1e-3:
        raise ValueError(
            f"each row of {name} must sum to 1 (softmax outputs), got sums in "
            f"[{sums.min():.4g}, {sums.max():.4g}]"
        )
    return p.clip(0, 1)


def _labels(labels, n: int, num_classes: int) -> np.ndarray:
    return as_labels(labels, n, "cpu", num_classes=num_classes).numpy()


def _checked(probs, labels):
    p = _probs(probs)
    return p, _labels(labels, len(p), p.shape[1])


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


# ----------------------------------------------------------------------------- binning
def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin m holds ((m-1)/M, m/M] (0-based here), bin 0 also holds 0. Edges are k/M exactly."""
    inner = np.arange(1, n_bins) / n_bins
    return np.searchsorted(inner, confidence, side="left")


def _bin_stats(confidence: np.ndarray, correct: np.ndarray, n_bins: int):
    """Per bin: the count, the mean confidence and the accuracy (NaN in empty bins)."""
    index = _bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    hit_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, conf_sum / count, np.nan)
        acc = np.where(count > 0, hit_sum / count, np.nan)
    return count, conf, acc


def _bins_table(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> pd.DataFrame:
    n_bins = _check_bins(n_bins)
    count, conf, acc = _bin_stats(confidence, correct, n_bins)
    total = max(len(confidence), 1)
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "share": count / total,
            "confidence": conf,
            "accuracy": acc,
            "gap": conf - acc,
        }
    ).rename_axis("bin")


def _ece(confidence, correct, n_bins) -> float:
    """ECE from the bin statistics (plain numpy: the bootstraps call it thousands of times)."""
    if len(confidence) == 0:
        return float("nan")
    count, conf, acc = _bin_stats(confidence, correct, _check_bins(n_bins))
    used = count > 0
    return float(np.sum(count[used] / len(confidence) * np.abs(conf[used] - acc[used])))


def ece_rows(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """ECE of each row of ``[B, n]`` confidences and 0/1 correctness, same bins as
    the other functions here (bin m holds ((m-1)/M, m/M]): sum over bins of
    |sum confidence - sum correct| / n."""
    conf = np.atleast_2d(np.asarray(confidence, dtype=float))
    hit = np.broadcast_to(np.atleast_2d(np.asarray(correct, dtype=float)), conf.shape)
    rows, n = conf.shape
    if n == 0:
        return np.full(rows, np.nan)
    inner = np.arange(1, n_bins) / n_bins
    flat = np.searchsorted(inner, conf, side="left") + n_bins * np.arange(rows)[:, None]
    c = np.bincount(flat.ravel(), weights=conf.ravel(), minlength=rows * n_bins).reshape(
        rows, n_bins
    )
    h = np.bincount(flat.ravel(), weights=hit.ravel(), minlength=rows * n_bins).reshape(
        rows, n_bins
    )
    return np.abs(c - h).sum(1) / n


def reliability_bins(probs, labels, *, n_bins: int = N_BINS) -> pd.DataFrame:
    """One row per confidence bin (the data of a reliability diagram): ``lower``, ``upper``
    (bin edges), ``count``, ``share`` (of all images), ``confidence`` (mean confidence in the bin),
    ``accuracy`` (share of correct predictions in the bin) and ``gap = confidence - accuracy``
    (> 0: over-confident). Empty bins have NaN confidence, accuracy and gap."""
    p, y = _checked(probs, labels)
    return _bins_table(p.max(1), p.argmax(1) == y, n_bins)


def expected_calibration_error(probs, labels, *, n_bins: int = N_BINS) -> float:
    """ECE (Guo et al. 2017): ``sum_m |B_m| / N * |acc(B_m) - conf(B_m)|`` over equal-width
    confidence bins, in [0, 1]; 0 is perfectly calibrated."""
    p, y = _checked(probs, labels)
    return _ece(p.max(1), p.argmax(1) == y, n_bins)


def maximum_calibration_error(probs, labels, *, n_bins: int = N_BINS) -> float:
    """MCE (Guo et al. 2017): the largest ``|acc(B_m) - conf(B_m)|`` over the non-empty bins."""
    bins = reliability_bins(probs, labels, n_bins=n_bins)
    return float(bins["gap"].abs().max())


def negative_log_likelihood(probs, labels) -> float:
    """Mean ``-log p[label]`` (natural log; probabilities of 0 floored at :data:`PROB_FLOOR`)."""
    p, y = _checked(probs, labels)
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], PROB_FLOOR)).mean())


def brier_score(probs, labels) -> float:
    """Mean over images of ``sum_c (p_c - [c == label])^2`` (multi-class Brier score, in [0, 2])."""
    p, y = _checked(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def per_class_calibration_error(
    probs, labels, *, n_bins: int = N_BINS, by: str = "predicted"
) -> np.ndarray:
    """Calibration error per class, ``[C]`` (NaN for a class with no image to measure).

    ``by="predicted"`` (default, the one the trust report uses): the ECE restricted to the images
    PREDICTED as class k, i.e. the same bins, confidence = max probability, correct = (label ==
    k). It answers the question a user can actually ask at run time, when only the prediction
    and its confidence are known: "when the model says *forest* with 0.9, is it right 9 times
    in 10?". Its population is the images predicted as k (not those labelled k), so it pairs
    with the precision of k, and it is at least ``|mean confidence - precision|`` over them.

    ``by="classwise"``: the classwise-ECE term of Kull et al. (2019, "Beyond temperature
    scaling"): over ALL images, bins on ``p_k`` and compares the mean ``p_k`` with the share of
    images whose label is k. It covers under-confidence in k too, but most images have
    ``p_k`` near 0 and land in the lowest bin with a tiny gap, so its values are much smaller
    than a top-label ECE and not comparable with it. Their mean over classes is Kull et al.'s
    classwise-ECE.
    """
    p, y = _checked(probs, labels)
    pred, conf = p.argmax(1), p.max(1)
    out = np.full(p.shape[1], np.nan)
    for k in range(p.shape[1]):
        if by == "predicted":
            sel = pred == k
            out[k] = _ece(conf[sel], y[sel] == k, n_bins)
        elif by == "classwise":
            out[k] = _ece(p[:, k], y == k, n_bins)
        else:
            raise ValueError(f"unknown by={by!r}; expected 'predicted' or 'classwise'")
    return out


NEVER_PREDICTED = "the model never predicts this class"


def per_class_undefined(probs, labels, *, by: str = "predicted") -> list:
    """Why :func:`per_class_calibration_error` is NaN for a class: ``[C]``, ``None`` where the
    error is defined, else the reason in words. With ``by="predicted"`` the error of a class is
    not defined when no image is predicted as it (:data:`NEVER_PREDICTED`); with
    ``by="classwise"`` it is always defined (every image has a ``p_k``). A weak model (random
    weights, one class always predicted) is an expected case, not an error."""
    p, _ = _checked(probs, labels)
    if by == "classwise":
        return [None] * p.shape[1]
    if by != "predicted":
        raise ValueError(f"unknown by={by!r}; expected 'predicted' or 'classwise'")
    counts = np.bincount(p.argmax(1), minlength=p.shape[1])
    return [None if n > 0 else NEVER_PREDICTED for n in counts]


def summary(
    probs_by_name: dict, labels, *, n_bins: int = N_BINS, seed: int | None = None
) -> pd.DataFrame:
    """One row per entry of ``{name: probs}`` (e.g. ``{"before": p, "after T": p_ts}``):
    ``accuracy``, ``mean_confidence``, ``ece``, ``mce``, ``nll``, ``brier``; with ``seed``
    also ``ece 95% interval`` (:func:`ece_interval` over all images, as text)."""
    if not isinstance(probs_by_name, dict) or not probs_by_name:
        raise ValueError("probs_by_name must be a non-empty dict {name: probs [N, C]}")
    rows = {}
    for name, probs in probs_by_name.items():
        p, y = _checked(probs, labels)
        rows[name] = {
            "accuracy": float((p.argmax(1) == y).mean()),
            "mean_confidence": float(p.max(1).mean()),
            "ece": expected_calibration_error(p, y, n_bins=n_bins),
            "mce": maximum_calibration_error(p, y, n_bins=n_bins),
            "nll": negative_log_likelihood(p, y),
            "brier": brier_score(p, y),
        }
        if seed is not None:
            ece = ece_interval(p, y, n_bins=n_bins, seed=seed).loc["all"]
            rows[name]["ece 95% interval"] = f"[{ece['low']:.3f}, {ece['high']:.3f}]"
    return pd.DataFrame.from_dict(rows, orient="index")


# ----------------------------------------------------------------------------- temperature
_KINDS = ("logits", "probs")


def _as_logits(scores, kind: str) -> np.ndarray:
    if kind == "logits":
        z = _scores(scores, "logits")
        if np.isneginf(z).any():
            raise ValueError("logits contain -inf")
        if z.min() >= 0 and z.max() <= 1 and np.abs(z.sum(1) - 1).max() < 1e-4:
            warnings.warn(
                "these logits look like probabilities (rows in [0, 1] summing to 1); "
                "pass kind='probs' if they are",
                stacklevel=3,
            )
        return z
    if kind == "probs":
        return np.log(np.maximum(_probs(scores), PROB_FLOOR))
    raise ValueError(f"unknown kind {kind!r}; expected one of {_KINDS}")


def _nll_at(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(z / temperature, axis=1)[np.arange(len(y)), y].mean())


def apply_temperature(scores, temperature: float, *, kind: str = "logits") -> np.ndarray:
    """``softmax(logits / temperature)`` as float64 ``[N, C]``; ``kind="probs"`` takes softmax
    outputs and uses ``log p`` as the logits (same result, see the module docstring)."""
    if not (
        isinstance(temperature, (int, float, np.floating, np.integer))
        and math.isfinite(temperature)
        and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return softmax(_as_logits(scores, kind) / float(temperature), axis=1)


@dataclass(frozen=True)
class TemperatureFit:
    """The result of :func:`fit_temperature`; ``apply(scores)`` scales new scores of the same
    kind."""

    temperature: float  # > 1 softens (the model was over-confident), < 1 sharpens
    nll_before: float  # mean NLL at T = 1 on the fitting data
    nll_after: float  # mean NLL at the fitted T on the fitting data
    kind: str  # "logits" or "probs": what apply() expects
    n: int  # images it was fitted on

    def apply(self, scores) -> np.ndarray:
        """Calibrated probabilities ``[N, C]`` for ``scores`` of this fit's ``kind``."""
        return apply_temperature(scores, self.temperature, kind=self.kind)


def fit_temperature(
    scores,
    labels,
    *,
    kind: str = "logits",
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    xatol: float = 1e-7,
) -> TemperatureFit:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` that minimises the mean NLL of
    ``softmax(logits / T)`` against ``labels``. Fit it on images that neither trained nor
    selected the model; on the images it will be judged on only through
    :func:`cross_fit_temperature` (each fold scaled by a ``T`` fitted on the others).

    The NLL is convex in ``1/T`` (a log-sum-exp of functions linear in ``1/T``), hence unimodal
    in ``log T``, so a bounded scalar search over ``log T`` in ``bounds`` (Brent's method,
    ``xatol`` on ``log T``) finds the global optimum. A warning says when it lies on a bound
    (e.g. accuracy at chance, where the NLL keeps falling as ``T`` grows). ``kind="probs"``
    fits from softmax outputs instead of logits. Computations are in float64.
    """
    z = _as_logits(scores, kind)
    y = _labels(labels, len(z), z.shape[1])
    lo, hi = bounds
    if not 0 < lo < 1 < hi:
        raise ValueError(f"bounds must satisfy 0 < low < 1 < high, got {bounds}")
    res = minimize_scalar(
        lambda log_t: _nll_at(z, y, math.exp(log_t)),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": xatol},
    )
    t = float(math.exp(res.x))
    if min(abs(res.x - math.log(lo)), abs(res.x - math.log(hi))) < 1e-3:
        warnings.warn(
            f"the fitted temperature {t:.4g} lies on the search bound {bounds}; "
            "the validation NLL may have no interior minimum",
            stacklevel=2,
        )
    before, after = _nll_at(z, y, 1.0), _nll_at(z, y, t)
    if after > before:  # never worse than doing nothing (cannot happen for a converged search)
        t, after = 1.0, before
    return TemperatureFit(temperature=t, nll_before=before, nll_after=after, kind=kind, n=len(y))


# ----------------------------------------------------------------------------- validation split
def validation_indices(run) -> np.ndarray:
    """Indices into ``run.train_set`` of the validation images that fine-tuning held out (and
    chose the best epoch with): the same call as :func:`helpers.train.fine_tune` makes, from
    ``run.config.val_fraction``, ``run.config.seed`` and the training labels.

    ``run`` is a :class:`helpers.runs.FineTunedRun` (anything with ``train_set.labels`` and
    ``config.val_fraction``/``config.seed``). A test holds this to fine_tune's split."""
    from .data import split_train_val

    labels = _numpy(run.train_set.labels, "train_set.labels")
    _, val = split_train_val(
        len(labels), val_fraction=run.config.val_fraction, seed=run.config.seed, labels=labels
    )
    return val


def validation_predictions(
    run, *, batch_size: int = 64, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs [V, C], labels [V])`` of ``run.model`` (the best checkpoint) on the validation
    split of :func:`validation_indices`. Early stopping chose the kept epoch on these images, so
    a temperature fitted on them is biased (towards T < 1); use :func:`cross_fit_temperature`."""
    from .train import predict_proba

    idx = validation_indices(run)
    if len(idx) == 0:
        raise ValueError("the run has no validation images (val_fraction too small for the data)")
    probs, _ = predict_proba(
        run.model, run.train_set, indices=idx, batch_size=batch_size, device=device
    )
    labels = _numpy(run.train_set.labels, "train_set.labels")[idx].astype(np.int64)
    return probs, labels


# ----------------------------------------------------------------------------- cross-fitting
def stratified_folds(labels, folds: int = 5, *, seed: int = 0) -> np.ndarray:
    """``[N]`` fold index in ``[0, folds)`` per image: within each class the images are shuffled
    (``numpy.random.default_rng(seed)``) and dealt to the folds in turn, so every fold holds
    about ``1 / folds`` of each class (a class with fewer images than folds is missing from
    some folds)."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    y = as_labels(labels, None, "cpu").numpy()
    if len(y) < folds:
        raise ValueError(f"{len(y)} images cannot be split into {folds} folds")
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    start = 0
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        out[idx] = (start + np.arange(len(idx))) % folds  # continue the deal: folds stay balanced
        start += len(idx)
    return out


@dataclass(frozen=True)
class CrossFit:
    """The result of :func:`cross_fit_temperature`."""

    probs: np.ndarray  # [N, C] calibrated probabilities, each from a T fitted without its fold
    temperatures: np.ndarray  # [folds] T applied to fold f (fitted on the other folds)
    fold: np.ndarray  # [N] fold index of each image
    nll_before: float  # mean NLL of all N images at T = 1
    nll_after: float  # mean NLL of all N images, cross-fitted
    ece_before: float  # ECE of all N images at T = 1 (n_bins bins)
    ece_after: float  # ECE of all N images, cross-fitted
    n_bins: int
    seed: int
    kind: str

    @property
    def temperature(self) -> float:
        """The median of the per-fold temperatures (one number to quote; the probabilities
        are NOT scaled with it)."""
        return float(np.median(self.temperatures))

    @property
    def n(self) -> int:
        return len(self.fold)


def cross_fit_temperature(
    scores,
    labels,
    *,
    kind: str = "probs",
    folds=5,
    seed: int = 0,
    n_bins: int = N_BINS,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> CrossFit:
    """Temperature scaling fitted by cross-fitting on images that neither trained nor selected
    the model (the test images, when there is no third split): ``folds`` seeded folds
    stratified by class (:func:`stratified_folds`, or pass your own ``[N]`` array of fold
    indices as ``folds``); fold f is scaled with the ``T`` that :func:`fit_temperature` fits on
    all the other folds. Every image's calibrated probability therefore comes from a ``T``
    that never saw its label, and the NLL/ECE after scaling are honest held-out figures.

    Returns a :class:`CrossFit`: ``probs`` ``[N, C]``, ``temperatures`` ``[folds]``, ``fold``
    ``[N]``, NLL and ECE of all images before (T = 1) and after. ``kind`` as in
    :func:`fit_temperature` (default ``"probs"``: softmax outputs)."""
    z = _as_logits(scores, kind)
    y = _labels(labels, len(z), z.shape[1])
    n_bins = _check_bins(n_bins)
    if isinstance(folds, (int, np.integer)) and not isinstance(folds, bool):
        fold = stratified_folds(y, int(folds), seed=seed)
    else:
        fold = _numpy(folds, "folds")
        if fold.shape != y.shape or not np.issubdtype(fold.dtype, np.integer):
            raise ValueError(
                f"folds must be an integer >= 2 or [N={len(y)}] integer fold indices, "
                f"got {fold.dtype} {fold.shape}"
            )
    ids = np.unique(fold)
    if len(ids) < 2:
        raise ValueError("cross-fitting needs at least two folds")
    out = np.empty_like(z)
    temperatures = []
    for f in ids:
        held = fold == f
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a bound is reported via the temperatures
            fit = fit_temperature(z[~held], y[~held], kind="logits", bounds=bounds)
        temperatures.append(fit.temperature)
        out[held] = softmax(z[held] / fit.temperature, axis=1)
    before = softmax(z, axis=1)
    return CrossFit(
        probs=out,
        temperatures=np.asarray(temperatures),
        fold=fold.astype(np.int64),
        nll_before=negative_log_likelihood(before, y),
        nll_after=negative_log_likelihood(out, y),
        ece_before=expected_calibration_error(before, y, n_bins=n_bins),
        ece_after=expected_calibration_error(out, y, n_bins=n_bins),
        n_bins=n_bins,
        seed=seed,
        kind=kind,
    )


# ----------------------------------------------------------------------------- intervals and tests
def ece_interval(
    probs,
    labels,
    *,
    n_bins: int = N_BINS,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    classes=None,
) -> pd.DataFrame:
    """The ECE of all images and of each class (the images PREDICTED as it, as in
    :func:`per_class_calibration_error`) with a seeded percentile bootstrap interval over the
    images (:func:`helpers.stats.bootstrap`). One row per ``"all"`` and class (names from
    ``classes``, else the index): ``ece``, ``low``, ``high``, ``n``. The interval says how
    precisely the (upward-biased) ECE of this sample is known; whether it is larger than a
    calibrated model would show is :func:`ece_consistency`'s question. A class never predicted
    has NaN and n = 0."""
    from .stats import bootstrap

    p, y = _checked(probs, labels)
    n_bins = _check_bins(n_bins)
    conf, pred = p.max(1), p.argmax(1)
    names = list(classes) if classes is not None else list(range(p.shape[1]))
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} class names for {p.shape[1]} classes")

    def stat(sample):  # [n, 2] or, batched, [n_boot, n, 2]: (confidence, correct)
        ece = ece_rows(sample[..., 0], sample[..., 1], n_bins)
        return ece if sample.ndim == 3 else float(ece[0])

    stat.batched = True

    rows = {}
    groups = [("all", np.ones(len(y), bool))] + [(names[k], pred == k) for k in range(p.shape[1])]
    for i, (name, sel) in enumerate(groups):
        values = np.column_stack([conf[sel], (y[sel] == pred[sel]).astype(float)])
        if len(values) == 0:
            rows[name] = {"ece": np.nan, "low": np.nan, "high": np.nan, "n": 0}
            continue
        e = bootstrap(values, stat, n_boot=n_boot, seed=seed + i, level=level)
        rows[name] = {"ece": e.estimate, "low": e.low, "high": e.high, "n": e.n}
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")
    out["n"] = out["n"].astype(int)
    return out


class Consistency(NamedTuple):
    """The result of :func:`ece_consistency`; unpacks as ``(ece, p_value, null_quantile_95)``."""

    ece: float  # observed ECE of the images
    p_value: float  # share of perfectly calibrated draws with an ECE at least as large
    null_quantile_95: (
        float  # 95th percentile of the ECE under perfect calibration (same confidences)
    )


def _ece_of_draws(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE of each row of ``correct`` ``[D, N]`` for the same ``confidence`` ``[N]``."""
    index = _bin_index(confidence, n_bins)
    onehot = np.zeros((len(confidence), n_bins))
    onehot[np.arange(len(confidence)), index] = 1.0
    conf_sum = confidence @ onehot  # [B]
    hit_sum = correct.astype(np.float64) @ onehot  # [D, B]
    return np.abs(conf_sum[None] - hit_sum).sum(1) / len(confidence)


def ece_consistency(
    confidence, correct, *, n_bins: int = N_BINS, n_draws: int = 1000, seed: int = 0
) -> Consistency:
    """Is the ECE of these predictions larger than a perfectly calibrated model's would be on
    the same confidences? Consistency resampling: ``n_draws`` times (seeded) draw
    ``correct ~ Bernoulli(confidence)`` and compute the ECE; the p-value is
    ``(1 + #{null ECE >= observed}) / (1 + n_draws)`` (a valid Monte-Carlo p-value: under
    perfect calibration ``P(p <= a) <= a``). It accounts for the upward bias of the ECE on a
    small sample, which a fixed ECE threshold does not.

    ``confidence`` ``[N]`` in [0, 1] (the top probability of each prediction), ``correct``
    ``[N]`` bool. Returns :class:`Consistency` ``(ece, p_value, null_quantile_95)``. No
    image: all NaN."""
    conf = _numpy(confidence, "confidence").astype(np.float64).reshape(-1)
    hit = _numpy(correct, "correct").reshape(-1)
    if len(conf) != len(hit):
        raise ValueError(
            f"confidence ({len(conf)}) and correct ({len(hit)}) must have one entry per image"
        )
    if np.isnan(conf).any() or (len(conf) and (conf.min() < 0 or conf.max() > 1)):
        raise ValueError("confidence must lie in [0, 1]")
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}")
    n_bins = _check_bins(n_bins)
    if len(conf) == 0:
        return Consistency(float("nan"), float("nan"), float("nan"))
    hit = hit.astype(bool)
    observed = float(_ece_of_draws(conf, hit[None], n_bins)[0])
    rng = np.random.default_rng(seed)
    null = _ece_of_draws(conf, rng.random((int(n_draws), len(conf))) < conf[None], n_bins)
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_draws))
    return Consistency(observed, p_value, float(np.quantile(null, 0.95)))


def per_class_consistency(
    probs, labels, *, n_bins: int = N_BINS, n_draws: int = 1000, seed: int = 0, classes=None
) -> pd.DataFrame:
    """:func:`ece_consistency` for the images predicted as each class (the population of
    :func:`per_class_calibration_error`): one row per class, ``ece``, ``p_value``,
    ``null_quantile_95``, ``n``; NaN for a class never predicted. Class k uses seed
    ``seed + k``."""
    p, y = _checked(probs, labels)
    conf, pred = p.max(1), p.argmax(1)
    names = list(classes) if classes is not None else list(range(p.shape[1]))
    rows = {}
    for k in range(p.shape[1]):
        sel = pred == k
        r = ece_consistency(conf[sel], y[sel] == k, n_bins=n_bins, n_draws=n_draws, seed=seed + k)
        rows[names[k]] = {**r._asdict(), "n": int(sel.sum())}
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")
    out["n"] = out["n"].astype(int)
    return out
