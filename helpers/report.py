"""The trust report as one self-contained HTML page for a human reader (notebook 10).

Order of the page: a **summary** (the model, the data, how many images the numbers rest on, a
verdict on the model as a whole when it is not usable, the ranking of the classes in one
picture and a small table of the score components), then **one section per class** (its
verdict as a short list, its example images, its numbers under plain headings with units,
grouped by the analysis they come from), then the **figures** behind the numbers, the
**method** (the score formula typeset in HTML) and the **sources** (which analysis each
number comes from, with the CSV column name). Everything is inline: CSS, images as base64
PNG/JPEG, no script, no network. The layout has no fixed width (it reflows at 800 px and
on phones; wide tables turn into lists) and prints cleanly.

::

    examples = report.class_examples(x_test, labels, probs, classes, fragility=regions)
    report.write_html(table, "trust_report.html", verdicts=trust.verdicts(table),
                      model="EfficientNet-Lite0 ...", data="embedded scenes ...",
                      n_images={"test images": 300, ...}, examples=examples,
                      figures={"Reliability": (fig, "300 test images"), ...},
                      csv="trust_report.csv")
"""

from __future__ import annotations

import base64
import html
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import trust
from .corruptions import CORRUPTIONS

__all__ = [
    "LABELS",
    "label",
    "display",
    "class_examples",
    "describe_run",
    "saved_figures",
    "write_html",
    "MAX_BYTES",
]

MAX_BYTES = 3_000_000  # write_html warns above this size
_FIGURE_BUDGET = 350_000  # an embedded figure larger than this is scaled down / re-encoded
_FIGURE_WIDTH = 1100  # ... to at most this many pixels wide

# Plain heading and unit kind of each column (kind: count, share, eps, ratio, number, text).
LABELS = {
    "n_test": ("Test images", "count"),
    "accuracy": ("Accuracy (its test images predicted right)", "share"),
    "n_predicted": ("Test images predicted as this class", "count"),
    "precision": ("Precision (its predictions that are right)", "share"),
    "mean_confidence": ("Mean confidence when it is predicted", "share"),
    "calibration_error": ("Calibration error (ECE; 0 = confidence matches accuracy)", "number"),
    "mean_confidence_ts": ("Mean confidence after temperature scaling", "share"),
    "calibration_error_ts": ("Calibration error after temperature scaling", "number"),
    "calibration_error_expected": (
        "Calibration error that honest confidence would show with these images (noise level)",
        "number",
    ),
    "calibration_p_value": (
        "Chance of an error this large if the confidence were honest (p)",
        "number",
    ),
    "n_history": ("Test images followed through training", "count"),
    "history_epochs": ("Epochs of training used (up to the audited checkpoint)", "count"),
    "share_learned_early": ("Learned in the first half of training and kept", "share"),
    "share_learned_late": ("Learned only in the second half of training", "share"),
    "share_forgotten": ("Forgotten at least once (right, then wrong)", "share"),
    "share_never_learned": ("Wrong at the audited epoch", "share"),
    "mean_prediction_changes": ("Changes of prediction per image during training (mean)", "number"),
    "n_attacked": ("Images attacked (the correctly classified ones; minimum-norm PGD)", "count"),
    "median_eps_whole": (
        "Smallest change that fools it, whole image (median; grey levels of 255)",
        "eps",
    ),
    "median_eps_object": ("Smallest change that fools it, object only (grey levels of 255)", "eps"),
    "median_eps_background": (
        "Smallest change that fools it, background only (grey levels of 255)",
        "eps",
    ),
    "n_object_background": ("Images with an object / background comparison", "count"),
    "object_background_ratio": (
        "Object / background ratio of that change, regions of equal size (median over "
        "images; below 1: the object is the weak spot)",
        "ratio",
    ),
    "object_background_p_value": ("Sign test of that ratio against 1 (p)", "number"),
    "share_not_flipped_whole": ("Images not fooled by the largest change searched", "share"),
    "attack_max_eps": ("Largest change searched (grey levels of 255)", "eps"),
    "n_corrupted": ("Images corrupted (the correctly classified ones)", "count"),
    "natural_robustness": (
        "Corruptions withstood at the stated severity (mean share per image)",
        "share",
    ),
    **{
        trust.common.withstanding_column(name): (
            f"Images that keep their prediction under {c.label.lower()} at its stated severity",
            "share",
        )
        for name, c in CORRUPTIONS.items()
    },
    "natural_level": ("Stated severity of the natural corruptions", "text"),
    "natural_severities": ("Stated severity of each corruption (0 to 1)", "text"),
    "pointing_game": ("Explanations whose peak lies on the object", "share"),
    "relevance_mass": ("Share of the explanation on the object", "share"),
    "mask_share": ("Share of the image the object covers (chance level)", "share"),
    "localisation_p_value": (
        "Chance of this much explanation on the object if the maps were at chance (p)",
        "number",
    ),
    "area_50": ("Share of the image that holds half the explanation", "share"),
    "gini": ("Concentration of the explanation (Gini; 0 = even, 1 = one pixel)", "number"),
    "sanity_correlation": (
        "Sanity check: similarity of the maps after randomising the weights (near 0 = passes)",
        "number",
    ),
    "explanation_method": ("Explanation method", "text"),
    "n_sanity": ("Images of the sanity check", "count"),
    "n_sanity_undefined": ("Of those, correlations not defined (constant maps)", "count"),
    "sanity_gate": ("Sanity check decision (pass / fail / undecided)", "text"),
    "n_explained": ("Images explained (each for its predicted class)", "count"),
    "component_accuracy": ("A: accuracy", "number"),
    "component_calibration": ("C: calibration (1 - error)", "number"),
    "component_robustness": ("R: robustness (share withstanding the budget)", "number"),
    "component_localisation": ("L: localisation above chance", "number"),
    "component_stability": ("S: stability in training (share learned early)", "number"),
    "component_natural": ("N: natural robustness (corruptions withstood)", "number"),
    "trust_score": ("Trust score (0 to 1)", "number"),
    "rank": ("Rank (1 = most trusted)", "count"),
}
# An interval is shown in the unit of its column; these are not shown as numbers of their own.
_HIDDEN = ("rank_ci_low", "rank_ci_high")
_COMPONENT_LETTERS = {
    "accuracy": "A",
    "calibration": "C",
    "robustness": "R",
    "localisation": "L",
    "stability": "S",
    "natural": "N",
}
_MARKS = {
    "model": "&#9888;",
    "model_note": "&#9888;",
    "note": "&#9679;",
    "good": "&#10003;",
    "bad": "&#10007;",
}


def label(column: str) -> str:
    """The plain heading of a column ("Accuracy (...)"); unknown columns: words from the name."""
    return LABELS.get(column, (column.replace("_", " ").capitalize(), "number"))[0]


def display(value, column: str, *, max_eps: float | None = None, reason: str | None = None) -> str:
    """A value as a reader sees it, in the unit of its heading: shares in %, epsilons in grey
    levels of 255, counts as integers; "not defined (<reason>)" or "MISSING" for NaN."""
    if trust._is_missing(value):
        return f"not defined ({reason})" if reason else "MISSING"
    kind = LABELS.get(column, ("", "number"))[1]
    if isinstance(value, str) or kind == "text":
        return str(value)
    v = float(value)
    if kind == "count" and math.isfinite(v) and v == int(v):
        return str(int(v))
    if kind == "share":
        return f"{v:.0%}" if v == 0 or v >= 0.01 else f"{v:.1%}"
    if kind == "eps":
        if math.isinf(v):
            return (
                f"more than {max_eps * 255:.3g} (not fooled by the largest change searched)"
                if max_eps is not None
                else "never fooled"
            )
        return f"{v * 255:.3g}"
    if kind == "ratio" and math.isinf(v):
        return "no change on the object alone fools it" if v > 0 else "-inf"
    return trust.format_value(v, column=column, max_eps=max_eps)


def interval(table: pd.DataFrame, cls, column: str, *, max_eps: float | None = None) -> str:
    """ "95 % CI 60% to 85%; 50 images" for a class's number, in the column's unit ("" when the
    table has no interval and no count for it)."""
    row = table.loc[cls]
    parts = []
    low_col, high_col = trust.ci_columns(column)
    if (
        low_col in row.index
        and not trust._is_missing(row[low_col])
        and not trust._is_missing(row[high_col])
    ):
        lo, hi = (display(row[c], column, max_eps=max_eps) for c in (low_col, high_col))
        beyond = f"more than {max_eps * 255:.3g}" if max_eps is not None else "never fooled"
        if LABELS.get(column, ("", ""))[1] == "eps" and math.isinf(float(row[low_col])):
            parts.append(f"95 % CI wholly beyond the largest change searched ({beyond})")
        else:
            if LABELS.get(column, ("", ""))[1] == "eps" and math.isinf(float(row[high_col])):
                hi = beyond
            parts.append(f"95 % CI {lo} to {hi}")
    n_col = trust.N_COLUMN.get(column)
    if n_col and n_col in row.index and not trust._is_missing(row[n_col]):
        n = int(row[n_col])
        parts.append(f"{n} image{'s' if n != 1 else ''}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- images
def _compact(value, column: str, max_eps: float | None) -> str:
    """A number in the unit of its column, short enough for a table cell."""
    v, kind = float(value), LABELS.get(column, ("", "number"))[1]
    if math.isinf(v):
        if kind == "eps" and max_eps is not None:
            return f">{max_eps * 255:.3g}"
        return "inf" if v > 0 else "-inf"
    if kind == "share":
        return f"{v:.0%}"
    if kind == "count":
        return str(int(v))
    if kind == "eps":
        v *= 255
    return f"{v:.2g}" if abs(v) < 0.1 else f"{v:.2f}"


def interval_table(table: pd.DataFrame, columns, *, max_eps: float | None = None) -> pd.DataFrame:
    """The per-class ``columns`` of ``table`` as short text for a notebook: "92% [81%, 97%]"
    (value, then its 95 % interval) in the column's unit (epsilons in grey levels of 255,
    ">16" beyond the largest change searched), one extra column ``n_<source>`` per image count
    the values rest on, and "n/d" where a value is not defined."""
    out = {}
    for column in columns:
        if column not in table.columns:
            continue
        low_col, high_col = trust.ci_columns(column)
        cells = []
        for cls in table.index:
            value = table.at[cls, column]
            if trust._is_missing(value):
                cells.append("n/d")
                continue
            text = _compact(value, column, max_eps)
            if low_col in table.columns and not trust._is_missing(table.at[cls, low_col]):
                lo, hi = (_compact(table.at[cls, c], column, max_eps) for c in (low_col, high_col))
                text = f"{text} [{lo}, {hi}]"
            cells.append(text)
        out[column] = cells
        n_col = trust.N_COLUMN.get(column)
        if n_col and n_col in table.columns and n_col not in out:
            out[n_col] = [str(int(v)) if not trust._is_missing(v) else "0" for v in table[n_col]]
    return pd.DataFrame(out, index=table.index)


def _image_array(image) -> np.ndarray:
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # [C, H, W] -> [H, W, C]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(
            f"an example image must be [H, W, 3], [3, H, W] or [H, W], got shape {a.shape}"
        )
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1)
        a = np.round(a * 255).astype(np.uint8)
    return a


def _jpeg(image, *, side: int = 160) -> str:
    """A data URI of a small JPEG of ``image`` (at most ``side`` pixels on its longer side)."""
    from PIL import Image

    pic = Image.fromarray(_image_array(image))
    if max(pic.size) > side:
        pic.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    pic.convert("RGB").save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure_uri(figure) -> str:
    """A data URI of a matplotlib figure or a PNG file, scaled down and re-encoded when large."""
    from PIL import Image

    if hasattr(figure, "savefig"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
        data = buf.getvalue()
    else:
        path = Path(figure)
        if not path.is_file():
            raise FileNotFoundError(f"figure file not found: {path}")
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"{path} is not a PNG file")
    if len(data) <= _FIGURE_BUDGET:
        return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    pic = Image.open(io.BytesIO(data)).convert("RGB")
    if pic.width > _FIGURE_WIDTH:
        pic = pic.resize(
            (_FIGURE_WIDTH, round(pic.height * _FIGURE_WIDTH / pic.width)), Image.LANCZOS
        )
    buf = io.BytesIO()
    pic.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    if buf.tell() <= _FIGURE_BUDGET:
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _ranking_uri(rows: pd.DataFrame) -> str:
    """The ranking in one picture: a horizontal bar of the trust score per class."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    scores = rows["trust_score"].astype(float).to_numpy()
    names = [str(c) if len(str(c)) <= 28 else str(c)[:26] + "..." for c in rows.index]
    fig = Figure(figsize=(7.5, 0.42 * len(rows) + 0.9))
    ax = fig.subplots()
    colours = plt.get_cmap("RdYlGn")(np.nan_to_num(scores, nan=0.0))
    y = np.arange(len(rows))
    ax.barh(y, np.nan_to_num(scores, nan=0.0), color=colours, edgecolor="#555", height=0.65)
    if "trust_score_ci_low" in rows.columns:
        lo = rows["trust_score_ci_low"].astype(float).to_numpy()
        hi = rows["trust_score_ci_high"].astype(float).to_numpy()
        ok = ~np.isnan(scores) & ~np.isnan(lo)
        ax.errorbar(
            scores[ok],
            y[ok],
            xerr=[scores[ok] - lo[ok], hi[ok] - scores[ok]],
            fmt="none",
            ecolor="black",
            elinewidth=1.2,
            capsize=3,
        )
    else:
        hi = np.full(len(scores), np.nan)
    for i, v in enumerate(scores):
        right = v if np.isnan(hi[i]) else hi[i]
        ax.text(
            (0 if np.isnan(v) else right) + 0.015,
            i,
            "not defined" if np.isnan(v) else f"{v:.2f}",
            va="center",
            fontsize=9,
        )
    ranks = rows["rank"].tolist() if "rank" in rows.columns else range(1, len(rows) + 1)
    ax.set_yticks(y, [f"{r}. {n}" for r, n in zip(ranks, names)], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
    ax.set_xlabel(
        "trust score with its 95 % interval (0 = fails a check outright, 1 = no weakness found)",
        fontsize=9,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _figure_uri(fig)


def _components_uri(table: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    from .plots import trust_components

    fig = trust_components(table)
    try:
        return _figure_uri(fig)
    finally:
        plt.close(fig)


def class_examples(
    images, labels, probs, classes, *, fragility: pd.DataFrame | None = None
) -> dict:
    """Up to three example images per class for the report: ``{class: [(caption, image), ...]}``.

    * the correct prediction the model is most confident of ("Right: forest, 97 % sure");
    * the wrong prediction it is most confident of ("Wrong: taken for sea, 81 % sure");
    * with ``fragility`` (the frame of :func:`helpers.attacks.fragility_by_region` /
      :func:`helpers.attacks.fragility`, whose ``image`` column indexes ``images``): the attacked
      image fooled by the smallest whole-image change ("Most fragile: fooled by 1.3/255").

    ``images`` ``[N, 3, H, W]`` in [0, 1], ``labels`` ``[N]``, ``probs`` ``[N, C]``. A class
    with no such image simply has fewer examples."""
    x = images
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels).astype(
        int
    )
    p = np.asarray(probs.detach().cpu().numpy() if hasattr(probs, "detach") else probs)
    if len(y) != len(p) or len(y) != len(x):
        raise ValueError(
            "images, labels and probs must have one row per image, "
            f"got {len(x)}, {len(y)}, {len(p)}"
        )
    pred, conf = p.argmax(1), p.max(1)
    out = {}
    for k, cls in enumerate(classes):
        items = []
        right = np.flatnonzero((y == k) & (pred == k))
        if len(right):
            i = right[np.argmax(conf[right])]
            items.append((f"Right, {conf[i]:.0%} sure", x[i]))
        wrong = np.flatnonzero((y == k) & (pred != k))
        if len(wrong):
            i = wrong[np.argmax(conf[wrong])]
            items.append((f"Wrong: taken for {classes[pred[i]]}, {conf[i]:.0%} sure", x[i]))
        if fragility is not None and len(fragility):
            f = fragility
            if "region" in f.columns:
                f = f[f["region"] == "whole"]
            f = f[(f["label"] == k) & ~f["already_wrong"].astype(bool) & f["flipped"].astype(bool)]
            if len(f):
                row = f.loc[f["epsilon"].idxmin()]
                into = ""
                if "flip_class" in row.index and not trust._is_missing(row["flip_class"]):
                    fc = int(row["flip_class"])
                    into = f", becomes {classes[fc]}" if 0 <= fc < len(classes) else ""
                items.append(
                    (
                        f"Most fragile: fooled by a change of {row['epsilon'] * 255:.2g}/255{into}",
                        x[int(row["image"])],
                    )
                )
        out[cls] = items
    return out


def describe_run(run) -> tuple[str, str]:
    """``(model, data)``: one line each on what a :class:`helpers.runs.FineTunedRun` is."""
    cfg, history = run.config, run.history
    weights = cfg.weights if cfg.weights else "none (random initial weights)"
    epochs = len(np.asarray(history.test_preds))
    best = (
        f", weights of epoch {history.best_epoch + 1} (lowest validation loss)"
        if history.best_epoch >= 0
        else ""
    )
    model = (
        f"{cfg.arch}, pretrained weights: {weights}; "
        f"fine-tuned {epochs} epoch(s) at {cfg.image_size} px{best}"
    )
    where = "the embedded procedural scenes" if run.source.is_scenes else str(run.source.root)
    data = (
        f"{where}: {len(run.classes)} classes, {len(run.train_set)} training images (the "
        f"validation split is held out from them), {len(run.test_set)} test images"
    )
    return model, data


def saved_figures(wanted: dict, folder=None) -> dict:
    """``{caption: (path, note)}`` for the figures of ``wanted`` (``{slug: (caption, note)}``,
    e.g. ``{"02_confusion": ("Confusion matrix (02)", "300 test images")}``) that an earlier
    notebook saved in ``folder`` (default :func:`helpers.paths.figures_dir`), in the given order;
    the ones not saved are left out."""
    from .paths import figures_dir

    folder = Path(folder) if folder is not None else figures_dir()
    return {
        caption: (folder / f"{slug}.png", note)
        for slug, (caption, note) in wanted.items()
        if (folder / f"{slug}.png").is_file()
    }


# ----------------------------------------------------------------------------- the page
_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;
line-height:1.5;background:#fff;overflow-wrap:break-word}
main{max-width:960px;margin:0 auto;padding:1.2em 1.2em 3em}
h1{font-size:1.7em;line-height:1.25;margin:0.2em 0 0.4em}
h2{font-size:1.35em;margin:2em 0 0.6em;padding-bottom:0.2em;border-bottom:2px solid #d0d7de}
h3{font-size:1.05em;margin:1.2em 0 0.4em;color:#444}
p{margin:0.5em 0}
nav{font-size:0.92em;margin:0.6em 0 1em;color:#555}nav a{margin-right:0.9em;white-space:nowrap}
a{color:#0b5cad}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:0.88em;\
overflow-wrap:anywhere}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:0.25em 1em;margin:0.6em 0}
.facts dt{font-weight:600;color:#444}.facts dd{margin:0}
.banner{border-radius:6px;padding:0.7em 1em;margin:1em 0}
.error{background:#fde8e8;border:2px solid #d62728;color:#7a0000}
.unusable{background:#fff4e5;border:2px solid #e8590c;color:#6b2600;font-size:1.05em}
.undefined-box{background:#f6f8fa;border:1px solid #d0d7de;color:#333}
.banner ul{margin:0.3em 0 0;padding-left:1.3em}
img{max-width:100%;height:auto}
figure{margin:1em 0;break-inside:avoid}
figure.chart img{display:block;width:100%;max-width:760px;border:1px solid #eee}
figure.fig img{display:block;border:1px solid #eee}
figcaption{font-size:0.9em;color:#555;margin-top:0.3em}
figcaption .n{color:#333;font-weight:600}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.92em;max-width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top}
th{background:#f6f8fa;text-align:left;font-weight:600}
table.glance td.num:nth-child(3){font-weight:700}
table.glance{font-size:0.86em}table.glance th,table.glance td{padding:4px 6px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name{font-weight:600;overflow-wrap:anywhere}
td.nd,dd.nd{color:#666;font-style:italic;font-size:0.9em;white-space:normal}
td.missing,dd.missing{background:#d62728;color:#fff;font-weight:bold;font-style:normal}
section.cls{border:1px solid #d0d7de;border-radius:8px;padding:0.2em 1.1em 1em;margin:1.4em 0;\
break-inside:auto}
section.cls h2{border:0;margin:0.6em 0 0.4em;display:flex;flex-wrap:wrap;align-items:baseline;\
gap:0.2em 0.6em}
section.cls h2 .name{overflow-wrap:anywhere}
.pill{font-size:0.7em;font-weight:600;border-radius:999px;padding:0.1em 0.7em;white-space:nowrap;\
color:#000}
.rankno{font-size:0.75em;color:#666;font-weight:600}
ul.verdict{list-style:none;padding:0;margin:0.4em 0 0.8em}
ul.verdict li{padding:0.15em 0 0.15em 1.6em;text-indent:-1.6em}
ul.verdict .mark{display:inline-block;width:1.6em;text-indent:0;font-weight:bold}
li.good .mark{color:#1a7f37}li.bad .mark{color:#cf222e}li.note .mark{color:#0b5cad}\
li.model .mark{color:#e8590c}
li.model{font-weight:600}
.examples{display:flex;flex-wrap:wrap;gap:0.8em;margin:0.4em 0 0.6em}
.examples figure{margin:0;width:170px;max-width:100%}
.examples img{width:160px;max-width:100%;image-rendering:auto;border:1px solid #ccc;\
border-radius:3px;display:block}
.examples figcaption{font-size:0.82em}
dl.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:0.5em;\
margin:0.3em 0 0.6em}
dl.kv>div{border:1px solid #e3e6ea;border-radius:6px;padding:0.35em 0.6em;background:#fbfcfd;\
min-width:0}
dl.kv dt{font-size:0.8em;color:#555;line-height:1.3}
dl.kv dd{margin:0.15em 0 0;font-size:1.08em;font-weight:600;font-variant-numeric:tabular-nums}
dl.kv dd.nd{font-size:0.85em;font-weight:normal}
.src{font-size:0.8em;color:#666;font-weight:normal}
.formula{font-family:"Cambria Math","STIX Two Math","Latin Modern Math",Georgia,serif;\
font-size:1.3em;
background:#f6f8fa;border-radius:6px;padding:0.7em 1em;margin:0.6em 0;overflow-wrap:anywhere}
.formula var,dl.defs var{font-style:italic}
dl.defs{display:grid;grid-template-columns:2em 1fr;gap:0.4em 0.4em}
dl.defs dt{font-weight:600;font-size:1.1em}dl.defs dd{margin:0}
table.prov td code{white-space:nowrap}
.small{font-size:0.88em;color:#555}
.ci{display:block;font-size:0.78em;font-weight:normal;color:#555;white-space:normal}
td.num .ci{white-space:nowrap}
.model-note{background:#fff8e1;border:1px solid #e0b100;color:#4d3800}
ul.apart{padding-left:1.3em}ul.apart li{overflow-wrap:anywhere}
@media (max-width:700px){
  .facts{grid-template-columns:1fr}.facts dd{margin-bottom:0.4em}
  table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
  table.stack thead{display:none}
  table.stack tr{border:1px solid #d0d7de;border-radius:6px;margin:0 0 0.6em;padding:0.3em 0.5em}
  table.stack td{border:0;padding:2px 0;text-align:left;white-space:normal}
  table.stack td::before{content:attr(data-label) ": ";font-weight:600;color:#555}
}
@media print{
  body{font-size:10.5pt}main{max-width:none;padding:0}nav{display:none}
  a{color:inherit;text-decoration:none}
  h2{break-after:avoid}section.cls{break-inside:avoid-page;border-color:#999}
  figure,dl.kv>div,tr{break-inside:avoid}
  .banner,.pill,td.missing,dd.missing{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def _verdict_lists(verdicts, table: pd.DataFrame) -> dict | None:
    """``{class: [(kind, sentence), ...]}`` from the verdicts given (None: from the table)."""
    if verdicts is None:
        return None
    items = getattr(verdicts, "attrs", {}).get("items") if isinstance(verdicts, pd.Series) else None
    if (
        items is None
        and isinstance(verdicts, dict)
        and verdicts
        and all(isinstance(v, (list, tuple)) for v in verdicts.values())
    ):
        items = verdicts
    if items is None:
        series = trust._verdict_series(verdicts, table)
        return {cls: [("text", str(series[cls]))] for cls in table.index}
    missing = [c for c in table.index if c not in items]
    if missing:
        raise ValueError(f"verdicts lack class(es) {missing}")
    out = {}
    for cls in table.index:
        out[cls] = [
            (str(e[0]), str(e[1])) if isinstance(e, (list, tuple)) else ("text", str(e))
            for e in items[cls]
        ]
    return out


def _sentence(text: str) -> str:
    text = str(text).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _pill(score) -> str:
    if trust._is_missing(score):
        return '<span class="pill" style="background:#e1e4e8">trust not defined</span>'
    import matplotlib.pyplot as plt

    r, g, b, _ = plt.get_cmap("RdYlGn")(float(score))
    colour = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    text = (
        "#fff" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "#000"
    )  # readable on dark red/green
    return (
        f'<span class="pill" style="background:{colour};color:{text}">'
        f"trust {float(score):.2f}</span>"
    )


def _short(column: str) -> str:
    return column.removeprefix("component_").replace("_", " ").capitalize()


def _anchor(cls, index: int) -> str:
    return f"class-{index}"


def _rule_summary(rule) -> str:
    """The first paragraph of a rule's docstring, on one line."""
    doc = (rule.__doc__ or rule.__name__).strip().split("\n\n")[0]
    return " ".join(doc.split())


def _ranking_html(table: pd.DataFrame, esc) -> list:
    """Which classes cannot be told apart: each class's rank interval over the bootstrap draws
    and the classes whose score it cannot be told apart from."""
    if table.attrs.get("replicates", {}).get("trust_score") is None:
        return []
    order = trust.ranking(table)
    out = ["<h3>Which classes can be told apart</h3>"]
    if order.attrs.get("note"):
        out.append(f'<p class="banner model-note">{esc(order.attrs["note"])}</p>')
    out.append(
        '<p class="small">Rank over 2000 bootstrap draws of the images; two classes cannot be told '
        'apart when neither scores higher in at least 97.5 % of the draws.</p><ul class="apart">'
    )
    for cls, row in order.iterrows():
        lo, hi = int(row["rank_ci_low"]), int(row["rank_ci_high"])
        span = f"rank {int(row['rank'])}" + (
            f" (between {lo} and {hi} in 95 % of draws)" if lo != hi else ""
        )
        same = row.get("cannot_tell_apart") or ""
        tail = (
            f": cannot be told apart from {same}" if same else ": told apart from every other class"
        )
        out.append(f"<li><strong>{esc(str(cls))}</strong>, {esc(span)}{esc(tail)}.</li>")
    out.append("</ul>")
    return out


_esc = html.escape


class _Page:
    """What every section of the report reads: the table and what is derived from it once
    (sources, undefined values with their reasons, verdict lists, rank order, missing values)."""

    def __init__(self, table: pd.DataFrame, verdicts, examples):
        self.table = table
        self.prov = trust.provenance(table)
        self.model_values = table.attrs.get("model_level", {})
        self.max_eps = self.model_values.get("attack_max_eps")
        self.reasons = {k: v for k, v in trust.undefined(table).items() if not trust.is_ci(k[1])}
        self.lists = _verdict_lists(verdicts, table)
        if examples:
            unknown = [c for c in examples if str(c) not in set(map(str, table.index))]
            if unknown:
                raise ValueError(f"examples name unknown class(es) {unknown}")
        self.examples = examples
        self.scored = "trust_score" in table.columns
        self.rows = table.sort_values("rank", kind="stable") if "rank" in table.columns else table
        self.index_of = {cls: i for i, cls in enumerate(table.index)}
        self.shown = [c for c in table.columns if not trust.is_ci(c)]
        self.missing = [
            (cls, col)
            for col in self.shown
            for cls in table.index
            if trust._is_missing(table.at[cls, col]) and (cls, col) not in self.reasons
        ]

    def value_html(self, cls, col, tag="dd") -> str:
        """One value with its interval, marked when not defined or missing."""
        value = self.table.at[cls, col]
        text = _esc(display(value, col, max_eps=self.max_eps, reason=self.reasons.get((cls, col))))
        css = (
            ' class="missing"'
            if text == "MISSING"
            else ' class="nd"'
            if trust._is_missing(value)
            else ""
        )
        ci = (
            interval(self.table, cls, col, max_eps=self.max_eps)
            if not trust._is_missing(value)
            else ""
        )
        ci = f'<span class="ci">{_esc(ci)}</span>' if ci else ""
        return f'<{tag}{css} data-col="{_esc(col)}">{text}{ci}</{tag}>'


def write_html(
    table: pd.DataFrame,
    path,
    *,
    figures: dict | None = None,
    verdicts=None,
    title: str = "Trust report",
    notes=None,
    model: str | None = None,
    data: str | None = None,
    n_images: dict | None = None,
    examples: dict | None = None,
    csv=None,
) -> Path:
    """Write the trust report as one self-contained HTML page (inline CSS and images, no
    script, no external resource), atomically; it opens in any browser without Jupyter.

    ``table``: from :func:`helpers.trust.build_table` (scored or not). ``verdicts``: the Series
    of :func:`helpers.trust.verdicts` (its short clauses are listed), ``{class: text}`` or
    ``{class: [sentence or (kind, sentence), ...]}``. ``model`` and ``data``: one line each
    saying what was audited; ``n_images``: ``{what: count}`` of the images the numbers rest on
    (e.g. ``{"test images": 300, "attacked (PGD)": 48}``); ``notes``: a string or list of
    paragraphs. ``examples``: ``{class: [(caption, image), ...]}`` with images ``[H, W, 3]``
    or ``[3, H, W]`` in [0, 1] (arrays or tensors; see :func:`class_examples`), shown small
    (JPEG) in each class's section. ``figures``: ``{caption: figure}`` or ``{caption: (figure,
    "rests on 300 test images")}``, a figure being a matplotlib Figure or a PNG file; large
    ones are scaled down. ``csv``: the CSV written beside the page (linked by its name).

    Values that are not defined show "not defined (<reason>)"; missing ones (a bug) a red
    "MISSING" and a red banner at the top. Warns when the page exceeds :data:`MAX_BYTES`."""
    page = _Page(table, verdicts, examples)
    parts = _page_head(title, figures=bool(figures), scored=page.scored)
    parts += _section_summary(page, model=model, data=data, n_images=n_images, notes=notes)
    parts += _glance(page) if page.scored else []
    parts += _model_values_html(page)
    parts += _csv_link(csv) if csv is not None else []
    parts.append("</section>")
    parts += _section_classes(page)
    parts += _section_figures(figures) if figures else []
    parts += _section_method(table.attrs.get("score"))
    parts += _section_sources(page)
    parts.append("</main></body></html>\n")
    body = "\n".join(parts).encode("utf-8")
    if len(body) > MAX_BYTES:
        warnings.warn(
            f"the trust report is {len(body) / 1e6:.1f} MB (more than {MAX_BYTES / 1e6:.0f} MB): "
            "pass fewer or smaller figures",
            stacklevel=2,
        )
    from .trust.output import _write

    return _write(path, body)


def _csv_link(csv) -> list:
    """The link to the CSV written beside the page (by its name)."""
    name = Path(csv).name
    return [
        f'<p class="small">Every number at full precision, with each class&rsquo;s verdict: '
        f'<a href="{_esc(name)}">{_esc(name)}</a> (beside this page).</p>'
    ]


def _page_head(title: str, *, figures: bool, scored: bool) -> list:
    """The document head (title, inline CSS), the page title and the navigation bar."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>",
        f'<h1 id="top">{_esc(title)}</h1>',
        '<nav><a href="#summary">Summary</a><a href="#classes">Classes</a>'
        + ('<a href="#figures">Figures</a>' if figures else "")
        + ('<a href="#method">Method</a>' if scored else "")
        + '<a href="#sources">Sources</a></nav>',
    ]


def _section_summary(page: _Page, *, model, data, n_images, notes) -> list:
    """The opening of the summary: what was audited on how many images, the notes, and the
    banners (model not usable, notes about the whole model, missing and undefined values).
    The section is left open for the ranking, the model-level values and the CSV link."""
    parts = ['<section id="summary"><h2>Summary</h2><dl class="facts">']
    if model:
        parts.append(f"<dt>Model</dt><dd>{_esc(str(model))}</dd>")
    if data:
        parts.append(f"<dt>Data</dt><dd>{_esc(str(data))}</dd>")
    if n_images:
        counts = "; ".join(
            f"{_esc(str(what))}: <strong>{_esc(str(n))}</strong>" for what, n in n_images.items()
        )
        parts.append(f"<dt>Images</dt><dd>{counts}</dd>")
    parts.append(f"<dt>Classes</dt><dd>{len(page.table)}</dd></dl>")
    for paragraph in [notes] if isinstance(notes, str) else list(notes or []):
        parts.append(f"<p>{_esc(str(paragraph))}</p>")
    unusable = trust.model_verdict(page.table)
    if unusable:
        parts.append(
            '<div class="banner unusable"><strong>Not usable.</strong> '
            f"{_esc(_sentence(unusable))} "
            "Its per-class numbers below describe a model that should not be deployed.</div>"
        )
    lists = page.lists
    model_notes = list(
        dict.fromkeys(
            text for cls in (lists or {}) for kind, text in lists[cls] if kind == "model_note"
        )
    )
    for text in model_notes:
        parts.append(
            f'<div class="banner model-note"><strong>About the whole model.</strong> '
            f"{_esc(_sentence(text))}</div>"
        )
    return parts + _missing_banner(page) + _undefined_banner(page.reasons)


def _missing_banner(page: _Page) -> list:
    """The red banner listing every missing value (a bug in the analysis), if any."""
    if not page.missing:
        return []
    items = "".join(
        f"<li>{_esc(label(col))} of <strong>{_esc(str(cls))}</strong> "
        f"(<code>{_esc(col)}</code>, source: {_esc(page.prov.get(col, '?'))})</li>"
        for cls, col in page.missing
    )
    return [
        f'<div class="banner error"><strong>Error: {len(page.missing)} value(s) missing.</strong> '
        "The numbers below are incomplete (a bug in the analysis, not a property of the model):"
        f"<ul>{items}</ul></div>"
    ]


def _undefined_banner(reasons: dict) -> list:
    """The banner listing, per reason, the classes with values that cannot be computed."""
    if not reasons:
        return []
    by_reason: dict = {}
    for (cls, _col), why in reasons.items():
        by_reason.setdefault(why, set()).add(str(cls))
    items = "".join(
        f"<li>{_esc(why[0].upper() + why[1:])}: <strong>{_esc(', '.join(sorted(c)))}</strong>.</li>"
        for why, c in by_reason.items()
    )
    return [
        f'<div class="banner undefined-box"><strong>{len(reasons)} value(s) cannot be computed '
        "for this model</strong> and read &ldquo;not defined&rdquo;, with the "
        f"reason:<ul>{items}</ul></div>"
    ]


def _glance(page: _Page) -> list:
    """For a scored table: the ranking chart, the table of score and components per class
    with intervals, the components chart and which classes cannot be told apart."""
    table, rows = page.table, page.rows
    checks = "six" if "component_natural" in table.columns else "five"  # N is optional
    parts = [
        '<figure class="chart"><img alt="Trust score per class, most trusted first" '
        f'src="{_ranking_uri(rows)}"><figcaption>The classes ranked by trust score '
        f"(the weakest of {checks} checks limits it; see the method).</figcaption></figure>"
    ]
    comps = [c for c in table.columns if c.startswith("component_") and not trust.is_ci(c)]
    parts.append('<table class="stack glance"><thead><tr><th>Rank</th><th>Class</th><th>Trust</th>')
    parts += [f'<th title="{_esc(label(c))}">{_esc(_short(c))}</th>' for c in comps]
    parts.append("</tr></thead><tbody>")
    for cls, row in rows.iterrows():
        parts.append(
            f'<tr><td class="num" data-label="Rank">{_esc(display(row["rank"], "rank"))}</td>'
            f'<td class="name" data-label="Class"><a href="#{_anchor(cls, page.index_of[cls])}">'
            f"{_esc(str(cls))}</a></td>"
        )
        parts += [_glance_cell(page, cls, row, c) for c in ["trust_score"] + comps]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    parts.append(
        '<p class="small">Under each number: its 95 % interval (bootstrap over the '
        "class&rsquo;s images, Wilson for shares; the trust score combines the "
        "components&rsquo; bootstrap draws).</p>"
    )
    if all(f"{c}_ci_low" in table.columns for c in comps + ["trust_score"]):
        parts.append(
            '<figure class="chart"><img alt="Components per class with their 95 % intervals" '
            f'src="{_components_uri(table)}"><figcaption>Each component and the trust score '
            "per class with its 95 % interval and n; overlapping bars are classes the data "
            "cannot tell apart on that check.</figcaption></figure>"
        )
    return parts + _ranking_html(table, _esc)


def _glance_cell(page: _Page, cls, row, c) -> str:
    """One cell of the glance table: the value to two decimals with its interval under it,
    "not defined" (grey) or "MISSING" (red)."""
    v = row[c]
    cell = (
        "not defined"
        if trust._is_missing(v) and (cls, c) in page.reasons
        else "MISSING"
        if trust._is_missing(v)
        else f"{float(v):.2f}"
    )
    css = "num nd" if cell == "not defined" else "num missing" if cell == "MISSING" else "num"
    head = "Trust" if c == "trust_score" else _short(c)
    lo, hi = (row.get(x) for x in trust.ci_columns(c))
    if cell not in ("not defined", "MISSING") and lo is not None and not trust._is_missing(lo):
        cell += f'<span class="ci">{float(lo):.2f} to {float(hi):.2f}</span>'
    return f'<td class="{css}" data-label="{_esc(head)}">{cell}</td>'


def _model_values_html(page: _Page) -> list:
    """The values that describe the whole model rather than one class, with their sources."""
    if not page.model_values:
        return []
    parts = ['<h3>About the whole model</h3><dl class="kv">']
    for col in page.model_values:
        if trust.is_ci(col):
            continue
        parts.append(
            f'<div><dt>{_esc(label(col))} <span class="src">({_esc(page.prov[col])})</span></dt>'
            f"{page.value_html(page.table.index[0], col)}</div>"
        )
    parts.append("</dl>")
    return parts


def _section_classes(page: _Page) -> list:
    """The introduction to the class sections, then one section per class, most trusted first."""
    parts = [
        '<section id="classes"><h2>Class by class</h2>'
        '<p class="small">Most trusted first. Shares are of the class&rsquo;s images; a change '
        "in grey levels of 255 is the most any pixel value moves (the L&#8734; norm). Numbers in "
        "brackets name the notebook a number comes from.</p></section>"
    ]
    per_class = [c for c in page.shown if c not in page.model_values and c not in _HIDDEN]
    groups: dict = {}
    for col in per_class:
        groups.setdefault(page.prov[col], []).append(col)
    for cls, row in page.rows.iterrows():
        parts += _class_section(page, cls, row, groups)
    return parts


def _class_section(page: _Page, cls, row, groups: dict) -> list:
    """One class: rank, name and trust pill, its verdict list, its example images and its
    numbers grouped by the analysis they come from (``groups``: ``{source: [column, ...]}``)."""
    rank = (
        f'<span class="rankno">#{_esc(display(row["rank"], "rank"))}</span>'
        if "rank" in row.index
        else ""
    )
    pill = _pill(row["trust_score"]) if page.scored else ""
    parts = [
        f'<section class="cls" id="{_anchor(cls, page.index_of[cls])}" '
        f'data-class="{_esc(str(cls))}">'
        f'<h2>{rank}<span class="name">{_esc(str(cls))}</span>{pill}</h2>'
    ]
    if page.lists is not None:
        parts.append('<ul class="verdict">')
        for kind, text in page.lists[cls]:
            if kind == "model_note":
                continue  # said once, in the summary
            mark = _MARKS.get(kind, "&#8226;")
            parts.append(
                f'<li class="{_esc(kind)}">'
                f'<span class="mark">{mark}</span>{_esc(_sentence(text))}</li>'
            )
        parts.append("</ul>")
    if page.examples and page.examples.get(cls):
        parts.append('<div class="examples">')
        for caption, image in page.examples[cls]:
            parts.append(
                f'<figure><img alt="{_esc(str(caption))}" src="{_jpeg(image)}">'
                f"<figcaption>{_esc(str(caption))}</figcaption></figure>"
            )
        parts.append("</div>")
    for source, cols in groups.items():
        heading = "Trust score" if source == trust._DERIVED else source
        parts.append(f'<h3>{_esc(heading[0].upper() + heading[1:])}</h3><dl class="kv">')
        parts += [f"<div><dt>{_esc(label(c))}</dt>{page.value_html(cls, c)}</div>" for c in cols]
        parts.append("</dl>")
    parts.append("</section>")
    return parts


def _section_figures(figures: dict) -> list:
    """The figures behind the numbers, each with its caption and what it rests on."""
    parts = ['<section id="figures"><h2>The figures behind the numbers</h2>']
    for caption, figure in figures.items():
        note = None
        if isinstance(figure, tuple):
            figure, note = figure
        n = f' &middot; <span class="n">rests on {_esc(str(note))}</span>' if note else ""
        parts.append(
            f'<figure class="fig"><img alt="{_esc(str(caption))}" src="{_figure_uri(figure)}">'
            f"<figcaption>{_esc(str(caption))}{n}</figcaption></figure>"
        )
    parts.append("</section>")
    return parts


def _component_definitions(budget_text: str) -> dict:
    """What each component letter of the score formula measures (HTML)."""
    return {
        "A": "accuracy: the share of the class&rsquo;s test images predicted right.",
        "C": "1 &minus; calibration error (ECE of the images predicted as the class).",
        "R": "the share of the class&rsquo;s attacked images (the correctly classified ones) "
        f"whose smallest fooling change exceeds the budget of {_esc(budget_text)} of the "
        "grey-level range (the budget is absolute: one grey level is the smallest change an "
        "8-bit image can store; no class scores well because the others are weaker).",
        "L": "(relevance mass &minus; object share) / (1 &minus; object share), "
        "clipped to [0, 1]: the share of the explanation on the object above what chance "
        "puts there.",
        "S": "the share learned early: 1 &minus; learned late &minus; forgotten &minus; never "
        "learned, over the epochs up to the audited checkpoint.",
        "N": "natural robustness: the mean over the class&rsquo;s correctly classified images "
        "of the share of natural corruptions (noise, blur, JPEG, fog, ...) that leave its "
        "prediction unchanged up to their stated severity (ImageNet-C level 3 by default).",
    }


def _section_method(info) -> list:
    """The trust score's formula with the weights used (``info``: the table's ``score``
    attribute; nothing when the table is not scored), then the verdict rules."""
    if not info:
        return []
    w = info["weights"]
    active = [c for c in trust.COMPONENTS if w.get(c, 0) > 0]
    letters = [_COMPONENT_LETTERS[c] for c in active]
    product = " &middot; ".join(
        f"<var>{x}</var><sup><var>w</var><sub>{x}</sub></sup>" for x in letters
    )
    total = " + ".join(f"<var>w</var><sub>{x}</sub>" for x in letters)
    budget = info.get("budget")
    defs = _component_definitions(f"{budget * 255:.3g}/255" if budget is not None else "the budget")
    parts = [
        '<section id="method"><h2>Method: the trust score</h2>'
        f'<p class="formula">trust = ( {product} )<sup>1 / ({total})</sup></p>'
        "<p>a weighted geometric mean of components in [0, 1], each 1 when no weakness was "
        "found. Trust is limited by the weakest link: a component of 0 makes the score 0 "
        "however good the rest is; halving any component lowers the score by the same factor "
        'whatever the others are.</p><dl class="defs">'
    ]
    parts += [f"<dt><var>{x}</var></dt><dd>{defs[x]}</dd>" for x in letters]
    weights = ", ".join(
        f"<var>w</var><sub>{_COMPONENT_LETTERS[c]}</sub> = {w[c]:g}"
        for c in trust.COMPONENTS
        if c not in info.get("left_out", {})  # an optional component without its source
    )
    parts.append(f"</dl><p>Weights: {weights}.</p>")
    if len({w[c] for c in active}) == 1:
        plain = " &middot; ".join(f"<var>{x}</var>" for x in letters)
        parts.append(
            f'<p>With equal weights this is the plain geometric mean: </p><p class="formula">'
            f"trust = ( {plain} )<sup>1/{len(letters)}</sup></p>"
        )
    parts += [f"<p>{_esc(_sentence(note))}</p>" for note in info.get("notes", [])]
    return parts + _verdict_rules()


def _verdict_rules() -> list:
    """How the intervals are computed and the rules that turn numbers into verdict words."""
    parts = [
        "<p>Every number has a 95 % interval: Wilson for shares, a seeded bootstrap over the "
        "class&rsquo;s images otherwise. The trust score&rsquo;s interval repeats the "
        "geometric mean on each bootstrap draw of the components (each source resampled over "
        "its own images).</p>",
        "<h3>Verdict rules</h3><p>A word is used only when its interval supports it "
        "(thresholds in <code>helpers.trust.THRESHOLDS</code>):</p><ul>",
    ]
    parts += [f"<li>{_esc(_rule_summary(rule))}</li>" for rule in trust.RULES]
    parts.append(
        "<li>Not usable: the lower end of the 95 % Wilson interval of the overall accuracy is "
        "at or below guessing the largest class.</li></ul></section>"
    )
    return parts


def _section_sources(page: _Page) -> list:
    """The table of where each number comes from, what it means and its CSV column."""
    parts = [
        '<section id="sources"><h2>Where each number comes from</h2>'
        '<table class="stack prov"><thead><tr><th>Number</th><th>Source</th>'
        "<th>What it means</th><th>CSV column</th></tr></thead><tbody>"
    ]
    for col in page.shown:
        parts.append(
            f'<tr><td data-label="Number">{_esc(label(col))}</td>'
            f'<td data-label="Source">{_esc(page.prov[col])}</td>'
            f'<td data-label="What it means">{_esc(trust.COLUMNS.get(col, ""))}</td>'
            f'<td data-label="CSV column"><code>{_esc(col)}</code></td></tr>'
        )
    parts.append("</tbody></table></section>")
    return parts
