"""How each test image's prediction settled during training (InstanceFlow-style statistics).

Inputs are the per-epoch predictions a :class:`helpers.train.TrainHistory` records: an
``[epochs, images]`` array of predicted class indices and the ``[images]`` true labels.
A *forgetting event* is an epoch where an image goes from correct to wrong (Toneva et al.,
2019, "An Empirical Study of Example Forgetting during Deep Neural Network Learning").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES = ("learned early", "learned late", "forgotten", "never learned")


def audited_epoch(history) -> int:
    """Index (0-based) of the epoch whose weights were kept (``history.best_epoch``) and that
    every later notebook audits; the last recorded epoch when the history names none (-1)."""
    best = int(getattr(history, "best_epoch", -1))
    epochs = int(np.asarray(history.test_preds).shape[0])
    if epochs == 0:
        raise ValueError("the history has no recorded epoch")
    if best >= epochs:
        raise ValueError(f"best_epoch {best} lies beyond the {epochs} recorded epochs")
    return best if best >= 0 else epochs - 1


def audited(history) -> np.ndarray:
    """``[audited_epoch + 1, N]`` predicted classes of the test images, from the first epoch to
    the audited one (inclusive): the predictions the statistics of this module should use."""
    return np.asarray(history.test_preds)[: audited_epoch(history) + 1]


def _upto(preds: np.ndarray, upto) -> np.ndarray:
    if upto is None:
        return preds
    if (
        isinstance(upto, bool)
        or not isinstance(upto, (int, np.integer))
        or not 0 <= upto < preds.shape[0]
    ):
        raise ValueError(
            f"upto must be an epoch index in [0, {preds.shape[0]}) (e.g. history.best_epoch), "
            f"got {upto!r}"
        )
    return preds[: int(upto) + 1]


def _learned_epoch(correct: np.ndarray) -> np.ndarray:
    """First epoch from which each image stays correct to the end; -1 if wrong at the end."""
    epochs = correct.shape[0]
    wrong_epochs = np.where(~correct, np.arange(epochs)[:, None], -1)
    last_wrong = wrong_epochs.max(0)
    return np.where(correct[-1], last_wrong + 1, -1)


def image_stats(
    preds: np.ndarray,
    labels: np.ndarray,
    *,
    paths=None,
    classes=None,
    late_fraction: float = 0.5,
    upto: int | None = None,
) -> pd.DataFrame:
    """One row per image: how often its prediction changed, how many classes it visited, etc.

    ``upto``: the index of the last epoch to use (inclusive), normally ``history.best_epoch``
    (the audited model, see the module docstring); ``None`` uses every row of ``preds``. "The
    end" below is that epoch.

    ``category`` (exactly one per image, in this order of precedence): "never learned" (wrong at
    the end, whether or not it was right at some earlier epoch: ``ever_correct`` says), else
    "forgotten" (right at the end after at least one forgetting event), else "learned late"
    (right from some epoch in the last ``late_fraction`` of the epochs on, and wrong just
    before), else "learned early". ``correct_at_end`` is the kept model's answer.
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.ndim != 2 or preds.shape[1] != labels.shape[0]:
        raise ValueError(
            f"preds must be [epochs, images] matching {labels.shape[0]} labels, got {preds.shape}"
        )
    preds = _upto(preds, upto)
    epochs = preds.shape[0]
    correct = preds == labels[None]
    changes = (preds[1:] != preds[:-1]).sum(0)
    forgetting = (correct[:-1] & ~correct[1:]).sum(0)
    learned = _learned_epoch(correct)
    category = _category(learned, forgetting, epochs, late_fraction)
    stats = pd.DataFrame(
        {
            "label": labels,
            "final_pred": preds[-1],
            "changes": changes,
            "change_frequency": changes / max(1, epochs - 1),
            "classes_visited": [len(np.unique(preds[:, i])) for i in range(preds.shape[1])],
            "misclassification_rate": 1 - correct.mean(0),
            "learned_epoch": learned,
            "forgetting_events": forgetting,
            "correct_at_end": correct[-1],
            "ever_correct": correct.any(0),
            "category": category,
        }
    )
    _insert_names(stats, labels, preds[-1], paths=paths, classes=classes)
    return stats


def _category(learned, forgetting, epochs: int, late_fraction: float) -> np.ndarray:
    """Each image's category of :func:`image_stats`, the first that applies in this order."""
    late_from = int(np.ceil(epochs * (1 - late_fraction)))
    return np.select(
        [learned < 0, forgetting > 0, learned >= max(late_from, 1)],
        ["never learned", "forgotten", "learned late"],
        default="learned early",
    )


def _insert_names(stats: pd.DataFrame, labels, final_pred, *, paths, classes) -> None:
    """Add the class names next to ``label`` and ``final_pred`` and the paths in front (those
    given)."""
    if classes is not None:
        names = np.asarray(classes)
        stats.insert(1, "label_name", names[labels])
        stats.insert(3, "final_pred_name", names[final_pred])
    if paths is not None:
        stats.insert(0, "path", list(paths))


def flow_order(stats: pd.DataFrame) -> np.ndarray:
    """Row order for the images x epochs heatmap: by true class, then hardest first."""
    keys = (
        -stats["learned_epoch"].where(stats["learned_epoch"] >= 0, 10**6),
        -stats["misclassification_rate"],
        stats["label"],
    )
    return np.lexsort([np.asarray(k) for k in keys])


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """Counts [true, predicted]."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(preds)), 1)
    return cm


def confusion_per_epoch(
    preds: np.ndarray, labels: np.ndarray, num_classes: int, *, upto: int | None = None
) -> np.ndarray:
    """[epochs, true, predicted] confusion counts (epochs up to ``upto`` inclusive when given)."""
    return np.stack(
        [confusion_matrix(labels, p, num_classes) for p in _upto(np.asarray(preds), upto)]
    )


def class_summary(stats: pd.DataFrame, classes, *, level: float = 0.95) -> pd.DataFrame:
    """Per class: ``images`` (n), accuracy at the end (``final_accuracy``), ``mean_changes``, and
    the share of the class's images in each of :data:`CATEGORIES` (they add up to 1), each with
    its Wilson interval at ``level`` in ``<category> low`` and ``<category> high`` (and
    ``final_accuracy low/high``); a class without images has NaN shares and n = 0."""
    from .stats import wilson

    rows = []
    for index, name in enumerate(classes):
        own = stats[stats["label"] == index]
        n = len(own)
        row = {"class": name, "images": n}
        counts = {"final_accuracy": int((own["final_pred"] == index).sum())}
        counts.update(
            {category: int((own["category"] == category).sum()) for category in CATEGORIES}
        )
        row["final_accuracy"] = counts["final_accuracy"] / n if n else np.nan
        row["mean_changes"] = float(own["changes"].mean()) if n else np.nan
        for category in CATEGORIES:
            row[category] = counts[category] / n if n else np.nan
        for column, k in counts.items():
            row[f"{column} low"], row[f"{column} high"] = (
                wilson(k, n, level=level) if n else (np.nan, np.nan)
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def top_confusions(cm: np.ndarray, classes, k: int = 5) -> pd.DataFrame:
    """The ``k`` largest off-diagonal cells: true class, predicted class, count, share of errors."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:k]
    total = max(1, off.sum())
    rows = [
        (classes[t], classes[p], int(off[t, p]), off[t, p] / total)
        for t, p in zip(*np.unravel_index(flat, off.shape))
        if off[t, p] > 0
    ]
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_errors"])


def share_within_pairs(cm: np.ndarray, classes, pairs) -> float:
    """Share of all errors that confuse the two classes of one of ``pairs`` (either way)."""
    index = {name: i for i, name in enumerate(classes)}
    errors = cm.sum() - np.trace(cm)
    inside = sum(cm[index[a], index[b]] + cm[index[b], index[a]] for a, b in pairs)
    return float(inside / errors) if errors else 0.0


def hard_images(stats: pd.DataFrame, *, per_category: int = 8) -> pd.DataFrame:
    """Up to ``per_category`` images learned late, forgotten and never learned (most changes
    first)."""
    picked = [
        stats[stats["category"] == c]
        .sort_values("changes", ascending=False, kind="stable")
        .head(per_category)
        for c in ("learned late", "forgotten", "never learned")
    ]
    return pd.concat(picked)
