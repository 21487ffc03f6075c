"""The evidence notebook 10 gathers from a fine-tuned run, and the report it writes from it.

Two calls keep the notebook a page of prose around its numbers::

    evidence = audit.gather(run, probs, probs_ts, globals())
    table = trust.score(trust.build_table(evidence.sources), budget=budget, seed=seed)
    ...
    html_path, csv_path = audit.write_report(run, table, words, evidence, cross, globals())

``params`` is the notebook's globals: the values of its ``parameters`` cell (after papermill's
overrides), read by name (the names of :data:`helpers.setup.SHARED` and 10's own). The attacks
(09) and the corruption searches (12) come from the run's cache when those notebooks ran first,
and are computed here otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import attacks, corruptions, explain, quality, report, selection, trust
from .paths import reports_dir


@dataclass
class Evidence:
    """What :func:`gather` collected: the trust table's ``sources`` and what they rest on."""

    sources: dict[str, pd.DataFrame]
    explained: np.ndarray  # test indices explained with Grad-CAM
    checked: np.ndarray  # test indices of the model-randomisation sanity check
    sanity: pd.DataFrame  # quality.sanity_check of Grad-CAM on those
    regions: pd.DataFrame  # attacks.fragility: minimal epsilons, whole image and regions
    natural: pd.DataFrame  # corruptions.natural_fragility: minimal severities
    probs: np.ndarray  # the model's softmax probabilities of the test images


def gather(run, probs: np.ndarray, calibrated_probs: np.ndarray, params: Mapping) -> Evidence:
    """Every source of the trust table for ``run``: predictions (raw and ``calibrated_probs``),
    training history, attacks (09's cached frame), natural corruptions (12's cached frame), the
    Grad-CAM sanity check and, where the data has masks, Grad-CAM's localisation on them."""
    p = params
    classes = run.classes
    x_test, labels = run.test_set.tensors()
    labels = labels.numpy()
    preds = probs.argmax(1)
    per_class = p["explained_per_class"]
    explained = (
        selection.per_class_indices(labels, per_class) if per_class else np.arange(len(labels))
    )
    checked = selection.per_class_indices(labels, math.ceil(p["sanity_images"] / len(classes)))
    gradcam = {"gradcam": dict(method="gradcam")}
    stages = quality.coarse_stages(run.model, count=4)
    sanity = quality.sanity_check(
        run.model, x_test[checked], preds[checked], gradcam, layers=stages, progress=False
    )
    regions = attacks.fragility(
        run,
        whole_images_per_class=p["whole_images_per_class"],
        region_images_per_class=p["region_images_per_class"],
        object_from=p["object_from"],
        steps=p["attack_steps"],
        max_eps=p["attack_max_eps"],
        seed=p["seed"],
    )
    names = p["corruption_names"]
    natural = corruptions.natural_fragility(
        run,
        names=names,
        images_per_class=p["natural_images_per_class"],
        grid=p["severity_grid"],
        tol=p["severity_tol"],
        seed=p["seed"],
    )
    stated = corruptions.stated_severities(p["stated_level"], names)
    sources = {
        "predictions (02)": trust.per_class_from_predictions(
            labels, probs, classes, calibrated_probs=calibrated_probs
        ),
        "training history (03)": trust.per_class_from_history(run.history, labels, classes),
        "attacks (09)": trust.per_class_from_fragility(regions, classes),
        "natural corruptions (12)": trust.per_class_from_corruptions(
            natural, classes, severities=stated
        ),
        "sanity check (06)": trust.from_sanity_check(sanity, "gradcam", classes),
    }
    if run.source.is_scenes:
        cams = explain.explain(run.model, x_test[explained], preds[explained], method="gradcam")
        sources["Grad-CAM on the masks (05)"] = trust.per_class_localisation(
            cams, run.test_masks()[explained], labels[explained], classes
        )
    return Evidence(sources, explained, checked, sanity, regions, natural, probs)


# The figures of earlier notebooks the report shows when they have run: name -> caption.
FIGURES = {
    "10_reliability": "Reliability before and after temperature scaling (cross-fitted)",
    "02_confusion": "Confusion matrix (02)",
    "03_instance_flow": "How the test images' predictions changed during training (03)",
    "09_minimal_epsilon_by_class": "Smallest change that fools an image, per class (09)",
    "09_object_vs_background": (
        "The same, confined to the object or to an equal-area part of the background (09)"
    ),
    "12_severity_by_class": "Smallest natural corruption that flips an image, per class (12)",
}


def write_report(
    run, table: pd.DataFrame, words: dict, evidence: Evidence, cross, params: Mapping
) -> tuple[Path, Path]:
    """The trust report of ``table`` (scored) with its ``words`` (verdicts) as
    ``trust_report.html`` and ``trust_report.csv`` in :func:`helpers.paths.reports_dir`, with
    example images, the saved figures of :data:`FIGURES` that exist, the image counts and the
    notes on temperature, attacks and corruptions; returns the two paths."""
    p = params
    x_test, labels = run.test_set.tensors()
    labels = labels.numpy()
    examples = report.class_examples(
        x_test, labels, evidence.probs, run.classes, fragility=evidence.regions
    )
    n_attacked = int(table["n_attacked"].sum())
    n_corrupted = int(table["n_corrupted"].sum()) if "n_corrupted" in table else 0
    counts = {
        "10_reliability": f"{len(labels)} test images",
        "02_confusion": f"{len(labels)} test images",
        "03_instance_flow": f"{len(labels)} test images",
        "09_minimal_epsilon_by_class": f"{n_attacked} correctly classified test images attacked",
        "09_object_vs_background": f"{int(table['n_object_background'].sum())} images",
        "12_severity_by_class": f"{n_corrupted} correctly classified test images corrupted",
    }
    figures = report.saved_figures({k: (caption, counts[k]) for k, caption in FIGURES.items()})
    model_line, data_line = report.describe_run(run)
    csv_path = trust.write_csv(table, reports_dir() / "trust_report.csv", verdicts=words)
    level = p["stated_level"]
    notes = [
        f"Temperature cross-fitted on the test images in {p['temperature_folds']} folds: "
        f"T = {', '.join(f'{t:.2f}' for t in cross.temperatures)}.",
        f"Attacks: minimum-norm L-inf search (foolbox FMN, {p['attack_steps']} steps), up to "
        f"{p['attack_max_eps'] * 255:.0f}/255; robustness budget {p['budget_grey_levels']:g}/255.",
        f"Natural corruptions: {len(p['corruption_names'])} ImageNet-C corruptions, the smallest "
        f"flipping severity searched to {p['severity_tol']:g}; judged at ImageNet-C level {level}.",
    ]
    title = f"Trust report: {p['arch']} on {p['data_dir'] or 'the embedded scenes'}"
    html_path = trust.write_html(
        table, reports_dir() / "trust_report.html", verdicts=words, figures=figures,
        examples=examples, model=model_line, data=data_line, csv=csv_path, title=title,
        n_images={
            "test": len(labels),
            "temperature (cross-fitted on the test images)": cross.n,
            "attacked (minimum-norm, whole image)": n_attacked,
            f"corrupted ({len(p['corruption_names'])} natural corruptions)": n_corrupted,
            "explained (Grad-CAM)": len(evidence.explained),
            "sanity check": len(evidence.checked),
        },
        notes=notes,
    )  # fmt: skip
    return html_path, csv_path
