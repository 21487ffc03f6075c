"""Which images a notebook shows or attacks: pickers over labels and predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pick_examples(labels, preds, *, correct: int = 4, wrong: int = 4, seed: int = 0) -> np.ndarray:
    """Indices of ``correct`` correctly and ``wrong`` wrongly predicted images (fewer if there
    are not enough), drawn with ``seed`` from different classes where possible."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    rng = np.random.default_rng(seed)
    picked = []
    for is_right, count in ((True, correct), (False, wrong)):
        pool = rng.permutation(np.flatnonzero((labels == preds) == is_right))
        # round robin over the classes: each image's rank among the earlier picks of its class
        order = np.argsort(
            [np.sum(labels[pool[:k]] == labels[i]) for k, i in enumerate(pool)], kind="stable"
        )
        picked.extend(int(i) for i in pool[order][:count])
    return np.asarray(picked, dtype=np.int64)


def per_class_indices(labels, per_class: int) -> np.ndarray:
    """The first ``per_class`` indices of each class, class by class."""
    labels = np.asarray(labels)
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])


def example_table(indices, labels, preds, probs, classes) -> pd.DataFrame:
    """One row per picked image: index, true class, predicted class and its confidence."""
    return pd.DataFrame(
        {
            "image": indices,
            "true": [classes[labels[i]] for i in indices],
            "predicted": [classes[preds[i]] for i in indices],
            "confidence": [float(probs[i].max()) for i in indices],
        }
    )


def attack_subset(run, images_per_class: int):
    """The test images the adversarial notebooks attack: the first ``images_per_class`` of each
    class of ``run`` (a :class:`helpers.runs.FineTunedRun`). Returns (indices, images, labels)."""
    x, labels = run.test_set.tensors()
    idx = per_class_indices(labels.numpy(), images_per_class)
    return idx, x[idx], labels[idx].long()
