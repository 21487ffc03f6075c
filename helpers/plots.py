"""Figures. Plot functions take ``ax=None`` (or make their own figure) and return the figure;
only :func:`save_figure` writes, to ``figures/NN_slug.png``."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch

from .paths import figures_dir

CLASS_COLORS = ("#7f7f7f", "#2ca02c", "#17becf", "#8c564b", "#1f77b4", "#ff7f0e",
                "#9467bd", "#e377c2", "#bcbd22", "#d62728")


def save_figure(fig, slug: str, *, dpi: int = 110) -> Path:
    """Write ``fig`` to ``figures/<slug>.png`` (slug like ``"02_confusion"``) and return the path."""
    path = figures_dir() / f"{slug}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def _axes(ax, figsize=(5, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def class_colormap(num_classes: int) -> ListedColormap:
    """One fixed colour per class index, the same in every figure."""
    if num_classes > len(CLASS_COLORS):
        return ListedColormap(plt.get_cmap("tab20").colors[:num_classes])
    return ListedColormap(CLASS_COLORS[:num_classes])


def _to_hwc(image):
    image = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    return image.transpose(1, 2, 0) if image.ndim == 3 and image.shape[0] in (1, 3) else image


def image_grid(images, titles=None, *, masks=None, ncols: int = 8, size: float = 1.6,
               title_colors=None, row_labels=None):
    """Images ([N,3,H,W] tensor/array or a list of HxWx3) in a grid; optional mask outlines."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.12),
                             squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(_to_hwc(images[i]))
        if masks is not None:
            ax.contour(np.asarray(masks[i]).astype(float), levels=[0.5], colors="yellow", linewidths=0.9)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8, color="black" if title_colors is None else title_colors[i])
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right",
                            va="center", fontsize=9, fontweight="bold")
    return fig


def training_curves(history, axes=None):
    """Loss and accuracy per epoch (train, validation, and the recorded test accuracy)."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    fig = axes[0].figure
    epochs = np.arange(1, history.epochs + 1)
    axes[0].plot(epochs, history.train_loss, "o-", label="train")
    axes[0].plot(epochs, history.val_loss, "s-", label="validation")
    axes[1].plot(epochs, history.train_acc, "o-", label="train")
    axes[1].plot(epochs, history.val_acc, "s-", label="validation")
    axes[1].plot(epochs, history.test_acc, "^--", label="test (recorded only)")
    for ax, name in zip(axes, ("cross-entropy loss", "accuracy")):
        ax.axvline(history.best_epoch + 1, color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].annotate("best (kept)", (history.best_epoch + 1, axes[0].get_ylim()[1]), fontsize=8,
                     ha="left", va="top", color="grey", xytext=(3, -3), textcoords="offset points")
    return fig


def confusion_heatmap(cm, classes, ax=None, *, title="confusion (rows: true class)"):
    """Confusion counts with the row share as colour; the diagonal is the per-class recall."""
    fig, ax = _axes(ax, (5.2, 4.4))
    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (t, p), count in np.ndenumerate(cm):
        if count:
            ax.text(p, t, str(count), ha="center", va="center", fontsize=8,
                    color="white" if share[t, p] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return fig


def per_class_accuracy(cm, classes, ax=None):
    """Horizontal bars of recall per class, with the overall accuracy as a line."""
    fig, ax = _axes(ax, (5, 3))
    cm = np.asarray(cm)
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    colors = class_colormap(len(classes)).colors
    ax.barh(range(len(classes)), recall, color=colors)
    for i, r in enumerate(recall):
        ax.text(r - 0.01, i, f"{r:.0%}", va="center", ha="right", fontsize=8, color="white")
    overall = np.trace(cm) / max(cm.sum(), 1)
    ax.axvline(overall, color="black", ls="--", lw=1, label=f"overall {overall:.1%}")
    ax.set_yticks(range(len(classes)), classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy (recall)")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def instance_flow(history, stats, order, *, classes):
    """InstanceFlow-style overview: images x epochs coloured by predicted class, with the accuracy
    and loss curves above on the same epoch axis and per-image bars (change frequency, classes
    visited, share of epochs wrong) on the right, on the same image rows."""
    preds = history.test_preds[:, order].T             # [images, epochs]
    labels = history.test_labels[order]
    n, epochs = preds.shape
    cmap = class_colormap(len(classes))
    norm = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
    fig = plt.figure(figsize=(13, 12), layout="constrained")
    grid = fig.add_gridspec(3, 5, height_ratios=[1, 1, 6], width_ratios=[0.35, 4, 1, 1, 1])
    heat = fig.add_subplot(grid[2, 1])
    acc = fig.add_subplot(grid[0, 1], sharex=heat)
    loss = fig.add_subplot(grid[1, 1], sharex=heat)
    truth = fig.add_subplot(grid[2, 0], sharey=heat)
    bars = [fig.add_subplot(grid[2, 2 + k], sharey=heat) for k in range(3)]
    key = fig.add_subplot(grid[0:2, 2:])
    key.set_axis_off()

    x = np.arange(epochs)
    for values, style, label in ((history.train_acc, "o-", "train"), (history.val_acc, "s-", "validation"),
                                 (history.test_acc, "^-", "test")):
        acc.plot(x, values, style, ms=4, label=label)
    loss.plot(x, history.train_loss, "o-", ms=4, label="train")
    loss.plot(x, history.val_loss, "s-", ms=4, label="validation")
    for ax, name in ((acc, "accuracy"), (loss, "loss")):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False)
        ax.axvline(history.best_epoch, color="grey", ls=":", lw=1)
    acc.legend(fontsize=7, loc="lower right")
    acc.set_title("How every test image's prediction settled, epoch by epoch", fontsize=11)

    heat.imshow(preds, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    heat.set_xticks(x, [str(e + 1) for e in x])
    heat.set_xlabel("epoch  (dotted line: the kept epoch)")
    heat.tick_params(labelleft=False, left=False)
    heat.axvline(history.best_epoch, color="black", ls=":", lw=1)
    truth.imshow(labels[:, None], aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    truth.set_xticks([0], ["true\nclass"])
    truth.set_yticks([])
    truth.set_ylabel(f"{n} test images, grouped by true class, hardest first")
    for b in np.nonzero(np.diff(labels))[0] + 0.5:
        for ax in (heat, truth, *bars):
            ax.axhline(b, color="white" if ax in (heat, truth) else "grey", lw=0.8)

    s = stats.iloc[order]
    most_visited = max(3, int(s["classes_visited"].max()))
    columns = [("change_frequency", "change frequency", (0, 1)),
               ("classes_visited", "classes visited", (0, most_visited)),
               ("misclassification_rate", "share of epochs wrong", (0, 1))]
    for ax, (column, title, xlim) in zip(bars, columns):
        ax.barh(np.arange(n), s[column].to_numpy(), height=1.0, color=cmap(labels), lw=0)
        ax.set_xlim(*xlim)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelleft=False, left=False)
        ax.grid(axis="x", alpha=0.3)
    bars[1].set_xticks(range(most_visited + 1))
    key.legend(handles=[Patch(color=cmap(i), label=c) for i, c in enumerate(classes)],
               loc="center left", ncols=2, fontsize=9, title="colour = predicted class")
    key.text(0.0, 0.02, "A row whose colour differs from its true-class strip\nis a wrong prediction at that epoch.",
             fontsize=8, transform=key.transAxes, va="bottom")
    return fig


def prediction_strips(images, preds, labels, classes, *, titles=None, ncols: int = 8, size: float = 1.7):
    """Images with, under each, a strip of its predicted class per epoch (colour = class).

    ``preds`` is [epochs, images]; the frame around each image has its true class's colour."""
    n, epochs = len(images), preds.shape[0]
    nrows = -(-n // ncols)
    cmap = class_colormap(len(classes))
    fig = plt.figure(figsize=(ncols * size, nrows * size * 1.35 + 0.6), layout="constrained")
    grid = fig.add_gridspec(nrows * 2, ncols, height_ratios=[6, 1] * nrows)
    for i in range(n):
        r, c = divmod(i, ncols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(_to_hwc(images[i]))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(cmap(int(labels[i])))
            spine.set_linewidth(3)
        ax.set_title(titles[i] if titles is not None else f"true: {classes[int(labels[i])]}", fontsize=8)
        strip = fig.add_subplot(grid[2 * r + 1, c])
        strip.imshow(preds[:, i][None], cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, aspect="auto")
        strip.set_yticks([])
        strip.set_xticks([0, epochs - 1], ["1", str(epochs)], fontsize=6)
    fig.legend(handles=[Patch(color=cmap(i), label=c) for i, c in enumerate(classes)],
               loc="outside lower center", ncols=len(classes), fontsize=8,
               title="frame = true class; strip under each image = predicted class at epochs 1 ... last",
               title_fontsize=8)
    return fig


def category_bars(summary, ax=None):
    """Stacked share of each class's test images that were learned early/late, forgotten, never."""
    from .evolution import CATEGORIES

    fig, ax = _axes(ax, (7, 3.2))
    colors = {"learned early": "#2ca02c", "learned late": "#ffbf00",
              "forgotten": "#ff7f0e", "never learned": "#d62728"}
    left = np.zeros(len(summary))
    for category in CATEGORIES:
        values = summary[category].to_numpy()
        ax.barh(summary.index, values, left=left, color=colors[category], label=category)
        left += values
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the class's test images")
    ax.legend(ncols=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return fig


def subplots(*args, **kwargs):
    """``plt.subplots`` with a constrained layout (labels never overlap)."""
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(*args, **kwargs)


def class_balance(counts, ax=None):
    """Grouped bars of usable images per class (rows) and split (columns) of ``counts``."""
    fig, ax = _axes(ax, (7, 3))
    splits = list(counts.columns)
    width = 0.8 / len(splits)
    x = np.arange(len(counts))
    for k, split in enumerate(splits):
        bars = ax.bar(x + (k - (len(splits) - 1) / 2) * width, counts[split], width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, counts.index)
    ax.set_ylabel("usable images")
    ax.legend(title="split", fontsize=8)
    ax.set_title("images per class", fontsize=10)
    return fig


def confusion_over_epochs(per_epoch, classes, *, panels: int = 4):
    """Confusion matrices at ``panels`` epochs spread from the first to the last."""
    epochs = per_epoch.shape[0]
    picks = sorted(set(np.linspace(0, epochs - 1, min(panels, epochs)).round().astype(int)))
    fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 4.2), layout="constrained",
                             squeeze=False)
    for ax, epoch in zip(axes[0], picks):
        confusion_heatmap(per_epoch[epoch], classes, ax=ax, title=f"epoch {epoch + 1}")
        if ax is not axes[0, 0]:
            ax.set_ylabel("")
            ax.tick_params(labelleft=False)
    return fig


# ----------------------------------------------------------------------------- attribution maps
ABS_CMAP, SIGNED_CMAP = "inferno", "RdBu_r"


def _to_numpy(a) -> np.ndarray:
    return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64)


def _is_signed(maps) -> bool:
    return bool(np.any(np.nan_to_num(_to_numpy(maps)) < 0))


def scale_map(attribution, *, signed=None, percentile: float = 99.0) -> np.ndarray:
    """One attribution map ([H,W], numpy or torch) scaled robustly for display.

    Absolute maps (``signed=False``: the magnitude |map| is shown) go to [0, 1], signed maps to
    [-1, 1] symmetric around 0: the ``percentile`` of |map| (the maximum when that percentile is
    0) becomes 1 and larger values are clipped, so a few extreme pixels do not darken the rest.
    ``signed=None`` decides from the data (any negative value -> signed). A constant or all-zero
    map gives zeros; NaN/inf count as 0."""
    m = np.nan_to_num(_to_numpy(attribution), nan=0.0, posinf=0.0, neginf=0.0)
    signed = _is_signed(m) if signed is None else bool(signed)
    if m.size == 0 or np.ptp(m) == 0:
        return np.zeros_like(m)
    mag = np.abs(m)
    top = np.percentile(mag, percentile)
    if top <= 0:
        top = mag.max()
    return np.clip(m / top, -1.0, 1.0) if signed else np.clip(mag / top, 0.0, 1.0)


def _grey(image) -> np.ndarray:
    img = _to_numpy(_to_hwc(image))
    return img @ np.array([0.299, 0.587, 0.114]) if img.ndim == 3 and img.shape[-1] == 3 else img


def overlay(image, attribution, ax=None, *, signed=None, alpha: float = 0.55, title=None,
            percentile: float = 99, grey: bool = True):
    """An attribution map as a heatmap over its image (shown in grey, or in colour with
    ``grey=False``): ``inferno`` (dark = none, bright = most) for absolute maps, ``RdBu_r`` centred
    at 0 (red = for the target, blue = against) for signed ones; scaled by :func:`scale_map`.
    A map of another resolution (e.g. Grad-CAM) is stretched over the whole image."""
    fig, ax = _axes(ax, (3, 3))
    signed = _is_signed(attribution) if signed is None else bool(signed)
    img = _grey(image) if grey else _to_numpy(_to_hwc(image))
    h, w = img.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1, extent=extent)
    heat = scale_map(attribution, signed=signed, percentile=percentile)
    ax.imshow(heat, cmap=SIGNED_CMAP if signed else ABS_CMAP, vmin=-1 if signed else 0, vmax=1,
              alpha=alpha, extent=extent, interpolation="bilinear" if heat.shape != (h, w) else "nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)
    return fig


def attribution_grid(images, maps_by_method: dict, *, titles=None, signed=None, size: float = 1.8,
                     percentile: float = 99, alpha: float = 0.6):
    """Methods x images: the first row shows the images, then one row per method (name at the
    left) with each map over its grey image, scaled on its own (:func:`scale_map`). ``signed``:
    None (decide per method from its maps), a bool, or a dict method -> bool. Each row has a colour
    bar that says how to read it."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    methods = list(maps_by_method)
    n = len(images)
    fig, grid = plt.subplots(len(methods) + 1, n + 1, figsize=(n * size + 1.4, (len(methods) + 1) * size),
                             squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1] * n + [0.07]})
    axes, bars = grid[:, :n], grid[:, n]  # the last narrow column holds each row's colour bar
    fig.delaxes(bars[0])
    for j in range(n):
        axes[0, j].imshow(np.clip(_to_numpy(_to_hwc(images[j])), 0, 1))
        axes[0, j].set_xticks([])
        axes[0, j].set_yticks([])
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
    axes[0, 0].set_ylabel("image", fontsize=9, fontweight="bold")
    for r, method in enumerate(methods, start=1):
        maps = maps_by_method[method]
        row_signed = signed.get(method) if isinstance(signed, dict) else signed
        row_signed = _is_signed(maps) if row_signed is None else bool(row_signed)
        for j in range(n):
            overlay(images[j], maps[j], ax=axes[r, j], signed=row_signed, alpha=alpha,
                    percentile=percentile)
            for spine in axes[r, j].spines.values():
                spine.set_visible(False)
        axes[r, 0].set_ylabel(method, fontsize=9, fontweight="bold")
        if row_signed:
            mappable = ScalarMappable(Normalize(-1, 1), SIGNED_CMAP)
            bar = fig.colorbar(mappable, cax=bars[r])
            bar.set_ticks([-1, 0, 1], labels=["against", "0", "for"])
        else:
            mappable = ScalarMappable(Normalize(0, 1), ABS_CMAP)
            bar = fig.colorbar(mappable, cax=bars[r])
            bar.set_ticks([0, 1], labels=["none", "most"])
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(f"Each map is scaled on its own ({percentile:g}th percentile of |map| = full colour):\n"
                 "compare where a method looks, not how strongly", fontsize=9)
    return fig


def curve_plot(result, ax=None, *, label=None, color=None):
    """A deletion or insertion curve (a :class:`helpers.quality.CurveResult` or a dict with
    ``fractions``, ``probs``, ``auc`` and optionally ``kind``): the mean over images with a band
    of +-1 standard deviation; the mean AUC is in the legend."""
    fig, ax = _axes(ax, (4.5, 3.2))
    fractions, probs = np.asarray(result["fractions"]), np.asarray(result["probs"])
    auc = float(np.mean(result["auc"]))
    kind = result["kind"] if "kind" in result.keys() else "curve"
    mean, sd = probs.mean(axis=0), probs.std(axis=0)
    line, = ax.plot(fractions, mean, color=color, label=f"{label or kind} (AUC {auc:.3f})")
    ax.fill_between(fractions, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1),
                    color=line.get_color(), alpha=0.2, lw=0)
    verb = {"deletion": "deleted", "insertion": "inserted"}.get(kind, "perturbed")
    previous = ax.get_xlabel()
    if previous.startswith("share of pixels ") and verb not in previous:  # both kinds on one axis
        verb = "deleted / inserted"
    ax.set_xlabel(f"share of pixels {verb} (most relevant first)")
    ax.set_ylabel("probability of the target class")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="mean over images, band +-1 sd", title_fontsize=7)
    return fig


def randomisation_plot(df_by_method: dict, ax=None, *, column: str = "spearman_abs"):
    """Cascading randomisation (Adebayo et al. 2018): rank correlation between the original map
    and the map after randomising the network from the top down to each stage, one line per
    method (DataFrames from :func:`helpers.quality.model_randomisation`). A method that passes the
    sanity check falls towards 0; one that stays near 1 does not depend on the weights."""
    fig, ax = _axes(ax, (6, 3.4))
    stages = None
    for method, df in df_by_method.items():
        stages = list(df["stage"]) if stages is None or len(df) > len(stages) else stages
        ax.plot(np.arange(len(df)), df[column].to_numpy(), "o-", ms=4, label=method)
    ax.axhline(0, color="grey", ls="--", lw=1)
    if stages is not None:
        ax.set_xticks(range(len(stages)), stages, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    ax.set_xlabel("randomised from the output down to ... (cumulative)")
    ax.set_ylabel("Spearman rank correlation" + (" of |maps|" if column == "spearman_abs" else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def lime_panel(image, segments, weights: dict, ax=None, *, top: int = 5, title=None):
    """LIME's answer on one image: its ``top`` superpixels for the class tinted green, the
    ``top`` against it tinted red, the rest grey; superpixel borders in white."""
    from skimage.segmentation import find_boundaries

    fig, ax = _axes(ax, (3, 3))
    rgb = np.asarray(_to_hwc(image), dtype=float)
    segments = np.asarray(segments.detach().cpu() if hasattr(segments, "detach") else segments)
    ranked = sorted(weights.items(), key=lambda kv: kv[1])
    positive = [s for s, w in ranked[::-1][:top] if w > 0]
    negative = [s for s, w in ranked[:top] if w < 0]
    grey = rgb.mean(axis=2, keepdims=True).repeat(3, axis=2)
    shown = 0.5 * grey + 0.3          # the superpixels LIME did not rank high: grey, faded
    for ids, tint in ((positive, (0.1, 0.85, 0.2)), (negative, (0.95, 0.15, 0.1))):
        where = np.isin(segments, ids)
        shown[where] = 0.45 * rgb[where] + 0.55 * np.asarray(tint)
    shown[find_boundaries(segments, mode="inner")] = 1.0
    ax.imshow(shown.clip(0, 1))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return fig
