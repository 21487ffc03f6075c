"""The one table every minimisation method returns: one row per image, these columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

# The columns of a minimisation result, in order (see result_frame).
RESULT_COLUMNS = (
    "epsilon",
    "flipped",
    "already_wrong",
    "label",
    "pred_clean",
    "flip_class",
    "confidence_before",
    "confidence_at_flip",
    "n_forward",
    "n_backward",
)


def result_frame(
    *,
    epsilon: np.ndarray,
    labels: torch.Tensor,
    clean_logits: torch.Tensor,
    flip_class: np.ndarray,
    confidence_at_flip: np.ndarray,
    n_forward: np.ndarray,
    n_backward: np.ndarray,
    attrs: dict,
) -> pd.DataFrame:
    """The result of a minimisation method, one row per image (:data:`RESULT_COLUMNS`).

    ``epsilon``: the smallest flipping epsilon found (NaN: none; 0 for images the model gets
    wrong already); ``flipped`` is where it is not NaN; ``already_wrong``, ``pred_clean`` and
    ``confidence_before`` (softmax probability of the clean prediction) come from
    ``clean_logits``; ``flip_class`` (class predicted at ``epsilon``, <NA> where not flipped)
    and ``confidence_at_flip`` (its probability) from the search; ``n_forward`` /
    ``n_backward``: forward and forward+backward passes per image. ``attrs`` go to
    ``df.attrs``.
    """
    epsilon = np.asarray(epsilon, dtype=float)
    flipped = ~np.isnan(epsilon)
    conf0, pred0 = clean_logits.softmax(1).max(1)
    df = pd.DataFrame(
        {
            "epsilon": epsilon,
            "flipped": flipped,
            "already_wrong": (pred0 != labels).cpu().numpy(),
            "label": labels.cpu().numpy(),
            "pred_clean": pred0.cpu().numpy(),
            "flip_class": pd.array(np.where(flipped, flip_class, 0), dtype="Int64"),
            "confidence_before": conf0.double().cpu().numpy(),
            "confidence_at_flip": confidence_at_flip,
            "n_forward": n_forward,
            "n_backward": n_backward,
        }
    )
    df.loc[~df["flipped"], "flip_class"] = pd.NA
    df.attrs.update(attrs)
    return df
