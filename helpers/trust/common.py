"""What every part of the trust report shares: column meanings, reasons, small converters."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import calibration
from ..corruptions import CORRUPTIONS

LEVEL = 0.95  # every interval of the report is a 95 % interval
N_BOOT = 2000  # bootstrap replicates per class and statistic
SEED = 0  # base seed of every bootstrap (class k of a source uses SEED + k)

WITHSTANDING = "share_withstanding_"  # + corruption name: share withstanding its stated severity


def withstanding_column(corruption: str) -> str:
    return WITHSTANDING + corruption


def corruption_label(column_or_name: str) -> str:
    """ "Gaussian noise" for ``gaussian_noise`` or ``share_withstanding_gaussian_noise``."""
    name = column_or_name.removeprefix(WITHSTANDING)
    return CORRUPTIONS[name].label if name in CORRUPTIONS else name.replace("_", " ")


# What each column a source function produces means (shown in the HTML report). Every per-class
# number X also has X_ci_low / X_ci_high (its 95 % interval) and rests on the images counted in
# the column N_COLUMN[X].
COLUMNS = {
    "n_test": "test images of the class",
    "accuracy": "share of the class's test images predicted correctly (recall; Wilson interval)",
    "n_predicted": "test images predicted as the class",
    "precision": "share of the images predicted as the class that belong to it (Wilson interval)",
    "mean_confidence": "mean confidence (max. probability) of the predictions of the class "
    "(bootstrap)",
    "calibration_error": "ECE over the images predicted as the class (15 bins; 0 = honest "
    "confidence; bootstrap)",
    "calibration_error_expected": "mean ECE a class with these confidences would show if its "
    "confidence were honest (correct ~ Bernoulli(confidence), 2000 draws): the ECE of pure noise",
    "calibration_p_value": "share of those honest draws with an ECE at least the observed one "
    "(small: miscalibrated)",
    "mean_confidence_ts": "mean confidence after temperature scaling (bootstrap)",
    "calibration_error_ts": "calibration error after temperature scaling (bootstrap)",
    "n_history": "test images of the class followed through training (up to the audited epoch)",
    "share_learned_early": "share right from the first half of training on, never forgotten, right "
    "at the audited epoch (Wilson)",
    "share_learned_late": "share right only from the second half of training on (Wilson)",
    "share_forgotten": "share right at the audited epoch after at least one right-to-wrong flip "
    "(Wilson)",
    "share_never_learned": "share wrong at the audited epoch (Wilson)",
    "mean_prediction_changes": "mean number of epochs at which an image's prediction changed "
    "(bootstrap)",
    "history_epochs": "epochs of the training history used (the first to the audited one; model "
    "level)",
    "n_attacked": "correctly classified test images attacked (minimum-norm PGD search of the "
    "smallest flipping L-inf epsilon)",
    "median_eps_whole": "median smallest L-inf epsilon that flips the prediction, whole image "
    "(bootstrap)",
    "median_eps_object": "the same with the perturbation confined to the object (bootstrap)",
    "median_eps_background": "the same confined to a background region of the same pixel count "
    "(bootstrap)",
    "share_not_flipped_whole": "share of attacked images not flipped up to the largest epsilon "
    "searched (Wilson)",
    "n_object_background": "attacked images with a defined object/background ratio",
    "object_background_ratio": "median over images of epsilon(object) / epsilon(background), equal "
    "pixel counts (> 1: the background is the weak spot; bootstrap)",
    "object_background_p_value": "two-sided sign test of that ratio against 1 (exact binomial)",
    "attack_max_eps": "largest epsilon the attack searched (model level)",
    "n_corrupted": "correctly classified test images corrupted (smallest flipping severity of "
    "each natural corruption, helpers.corruptions)",
    "natural_robustness": "mean over those images of the share of the corruptions whose stated "
    "severity leaves the prediction unchanged (bootstrap)",
    **{
        withstanding_column(name): f"share of those images whose prediction survives "
        f"{c.label.lower()} up to its stated severity (Wilson)"
        for name, c in CORRUPTIONS.items()
    },
    "natural_level": "what the stated severities are (ImageNet-C level 3 by default; model level)",
    "natural_severities": "each corruption's stated severity on the [0, 1] scale of "
    "helpers.corruptions (model level)",
    "n_explained": "test images explained (the map explains the PREDICTED class)",
    "pointing_game": "share of explanations whose maximum lies on the object (Wilson)",
    "relevance_mass": "mean share of the positive attribution that lies on the object (bootstrap)",
    "localisation_p_value": "one-sided t test that relevance_mass exceeds mask_share (chance) on "
    "average",
    "mask_share": "mean share of the image covered by the object (chance level of the two above; "
    "bootstrap)",
    "area_50": "smallest share of the image holding half the |attribution| (small = compact; "
    "bootstrap)",
    "gini": "Gini coefficient of |attribution| (0 = spread evenly, 1 = one pixel; bootstrap)",
    "sanity_correlation": "cascading randomisation: mean rank correlation with the original map "
    "over the randomised stages and images (near 0 = the explanation depends on the weights; model "
    "level; t interval over images)",
    "n_sanity": "images of the sanity check (model level)",
    "n_sanity_undefined": "of those, images whose correlation is not defined (a constant map) at "
    "some stage",
    "sanity_gate": "pass: the interval of sanity_correlation lies below the threshold; fail: "
    "above; undecided: it straddles it",
    "explanation_method": "the explanation method of the localisation and the sanity check",
    "component_accuracy": "A = accuracy",
    "component_calibration": "C = 1 - calibration_error",
    "component_robustness": "R = share of the attacked images whose smallest flipping epsilon "
    "exceeds the budget (Wilson)",
    "component_localisation": "L = clip((relevance_mass - mask_share) / (1 - mask_share), 0, 1)",
    "component_stability": "S = share_learned_early = 1 - learned late - forgotten - never learned "
    "(Wilson)",
    "component_natural": "N = natural_robustness: mean over the corrupted images of the share of "
    "corruptions they withstand at the stated severity (bootstrap)",
    "trust_score": "weighted geometric mean of the components (interval: per-source bootstrap "
    "replicates combined)",
    "rank": "1 = the most trusted class (ties share the better rank)",
    "rank_ci_low": "best rank in 95 % of the bootstrap replicates of the trust scores",
    "rank_ci_high": "worst rank in 95 % of the bootstrap replicates of the trust scores",
}

# The image count each per-class number rests on.
N_COLUMN = {
    "accuracy": "n_test",
    "precision": "n_predicted",
    "mean_confidence": "n_predicted",
    "calibration_error": "n_predicted",
    "calibration_error_expected": "n_predicted",
    "calibration_p_value": "n_predicted",
    "mean_confidence_ts": "n_predicted",
    "calibration_error_ts": "n_predicted",
    "share_learned_early": "n_history",
    "share_learned_late": "n_history",
    "share_forgotten": "n_history",
    "share_never_learned": "n_history",
    "mean_prediction_changes": "n_history",
    "median_eps_whole": "n_attacked",
    "median_eps_object": "n_attacked",
    "median_eps_background": "n_attacked",
    "share_not_flipped_whole": "n_attacked",
    "object_background_ratio": "n_object_background",
    "object_background_p_value": "n_object_background",
    "natural_robustness": "n_corrupted",
    **{withstanding_column(name): "n_corrupted" for name in CORRUPTIONS},
    "pointing_game": "n_explained",
    "relevance_mass": "n_explained",
    "mask_share": "n_explained",
    "localisation_p_value": "n_explained",
    "area_50": "n_explained",
    "gini": "n_explained",
    "sanity_correlation": "n_sanity",
    "component_accuracy": "n_test",
    "component_calibration": "n_predicted",
    "component_robustness": "n_attacked",
    "component_localisation": "n_explained",
    "component_stability": "n_history",
    "component_natural": "n_corrupted",
}

COMPONENTS = ("accuracy", "calibration", "robustness", "localisation", "stability", "natural")

# Reasons why a value is not defined.
NO_TEST_IMAGE = "no test image of this class"
NEVER_PREDICTED = calibration.NEVER_PREDICTED
NONE_ATTACKED = "no image of this class was classified correctly, so none was attacked"
NONE_EXPLAINED = "no image of this class was explained"
NONE_CORRUPTED = "no image of this class was classified correctly, so none was corrupted"

DERIVED = "trust score"
CI = ("_ci_low", "_ci_high")


class Bag(dict):
    """A dict of arrays kept in ``DataFrame.attrs`` (per-image samples, bootstrap replicates).
    Compared by identity, so that pandas, which compares the attrs of frames it concatenates,
    never compares arrays element-wise."""

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = None


def ci_columns(column: str) -> tuple[str, str]:
    return column + CI[0], column + CI[1]


def is_ci(column: str) -> bool:
    return column.endswith(CI)


def numpy(a) -> np.ndarray:
    return np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)


def class_list(classes) -> list[str]:
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError("classes must name at least one class")
    if len(set(classes)) != len(classes):
        raise ValueError(f"class names must be unique, got {classes}")
    return classes


def frame_of(rows: dict, classes) -> pd.DataFrame:
    return pd.DataFrame(rows, index=pd.Index(classes, name="class"))


def is_missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def explain(frame: pd.DataFrame, reasons: dict) -> pd.DataFrame:
    """Record ``{(class, column): reason}`` in ``frame.attrs["undefined"]`` for the cells that
    are NaN (a reason for a value that exists is dropped); the reason of a column also covers
    its interval columns."""
    known = dict(frame.attrs.get("undefined", {}))
    for (cls, col), why in reasons.items():
        for c in (col, *ci_columns(col)):
            if c in frame.columns and cls in frame.index and is_missing(frame.at[cls, c]):
                known[(str(cls), c)] = str(why)
    frame.attrs["undefined"] = known
    return frame


def num(row, column):
    if column not in row.index or is_missing(row[column]):
        return None
    try:
        return float(row[column])
    except (TypeError, ValueError):
        return None


def grey(eps: float) -> str:
    """An L-inf epsilon in grey levels of 255 ("4.1/255")."""
    if math.isinf(eps):
        return "inf"
    return f"{eps * 255:.2g}/255" if eps * 255 < 10 else f"{eps * 255:.0f}/255"


def join_and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def pct(v: float) -> str:
    return f"{v:.0%}"


def interval_text(row, column: str, fmt=pct) -> str:
    """ "95 % CI 60-85 %, 50 images" style bracket content for a column of a row."""
    lo, hi = num(row, column + CI[0]), num(row, column + CI[1])
    n_col = N_COLUMN.get(column)
    n = num(row, n_col) if n_col else None
    parts = []
    if lo is not None and hi is not None:
        parts.append(f"95 % CI {fmt(lo)} to {fmt(hi)}")
    if n is not None:
        parts.append(f"{int(n)} image{'s' if n != 1 else ''}")
    return ", ".join(parts)
