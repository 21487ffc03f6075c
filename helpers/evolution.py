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


def _learned_epoch(correct: np.ndarray) -> np.ndarray:
    """First epoch from which each image stays correct to the end; -1 if wrong at the end."""
    epochs = correct.shape[0]
    wrong_epochs = np.where(~correct, np.arange(epochs)[:, None], -1)
    last_wrong = wrong_epochs.max(0)
    return np.where(correct[-1], last_wrong + 1, -1)


def image_stats(preds: np.ndarray, labels: np.ndarray, *, paths=None, classes=None,
                late_fraction: float = 0.5) -> pd.DataFrame:
    """One row per image: how often its prediction changed, how many classes it visited, etc.

    ``category`` is "never learned" (wrong at the last epoch), else "forgotten" (at least one
    forgetting event), else "learned late" (stable-correct only from the last ``late_fraction``
    of the epochs on), else "learned early".
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.ndim != 2 or preds.shape[1] != labels.shape[0]:
        raise ValueError(f"preds must be [epochs, images] matching {labels.shape[0]} labels, got {preds.shape}")
    epochs = preds.shape[0]
    correct = preds == labels[None]
    changes = (preds[1:] != preds[:-1]).sum(0)
    forgetting = (correct[:-1] & ~correct[1:]).sum(0)
    learned = _learned_epoch(correct)
    late_from = int(np.ceil(epochs * (1 - late_fraction)))
    category = np.select(
        [learned < 0, forgetting > 0, learned >= max(late_from, 1)],
        ["never learned", "forgotten", "learned late"], default="learned early")
    stats = pd.DataFrame({
        "label": labels,
        "final_pred": preds[-1],
        "changes": changes,
        "change_frequency": changes / max(1, epochs - 1),
        "classes_visited": [len(np.unique(preds[:, i])) for i in range(preds.shape[1])],
        "misclassification_rate": 1 - correct.mean(0),
        "learned_epoch": learned,
        "forgetting_events": forgetting,
        "category": category,
    })
    if classes is not None:
        names = np.asarray(classes)
        stats.insert(1, "label_name", names[labels])
        stats.insert(3, "final_pred_name", names[preds[-1]])
    if paths is not None:
        stats.insert(0, "path", list(paths))
    return stats


def flow_order(stats: pd.DataFrame) -> np.ndarray:
    """Row order for the images x epochs heatmap: by true class, then hardest first."""
    keys = (-stats["learned_epoch"].where(stats["learned_epoch"] >= 0, 10**6),
            -stats["misclassification_rate"], stats["label"])
    return np.lexsort([np.asarray(k) for k in keys])


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """Counts [true, predicted]."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(preds)), 1)
    return cm


def confusion_per_epoch(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[epochs, true, predicted] confusion counts."""
    return np.stack([confusion_matrix(labels, p, num_classes) for p in preds])


def class_summary(stats: pd.DataFrame, classes) -> pd.DataFrame:
    """Per class: accuracy at the end, and the share of images in each category."""
    rows = []
    for index, name in enumerate(classes):
        own = stats[stats["label"] == index]
        row = {"class": name, "images": len(own),
               "final_accuracy": float((own["final_pred"] == index).mean()) if len(own) else np.nan,
               "mean_changes": float(own["changes"].mean()) if len(own) else np.nan}
        for category in CATEGORIES:
            row[category] = float((own["category"] == category).mean()) if len(own) else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def top_confusions(cm: np.ndarray, classes, k: int = 5) -> pd.DataFrame:
    """The ``k`` largest off-diagonal cells: true class, predicted class, count, share of errors."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:k]
    total = max(1, off.sum())
    rows = [(classes[t], classes[p], int(off[t, p]), off[t, p] / total)
            for t, p in zip(*np.unravel_index(flat, off.shape)) if off[t, p] > 0]
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_errors"])


def share_within_pairs(cm: np.ndarray, classes, pairs) -> float:
    """Share of all errors that confuse the two classes of one of ``pairs`` (either way)."""
    index = {name: i for i, name in enumerate(classes)}
    errors = cm.sum() - np.trace(cm)
    inside = sum(cm[index[a], index[b]] + cm[index[b], index[a]] for a, b in pairs)
    return float(inside / errors) if errors else 0.0


def hard_images(stats: pd.DataFrame, *, per_category: int = 8) -> pd.DataFrame:
    """Up to ``per_category`` images learned late, forgotten and never learned (most changes first)."""
    picked = [stats[stats["category"] == c].sort_values("changes", ascending=False, kind="stable").head(per_category)
              for c in ("learned late", "forgotten", "never learned")]
    return pd.concat(picked)
