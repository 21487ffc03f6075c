"""Figures. Plot functions take ``ax=None`` (or make their own figure) and return the figure;
only :func:`save_figure` writes, to ``figures/NN_slug.png``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch

from .paths import figures_dir
from .plumbing import atomic_write_bytes

CLASS_COLORS = (
    "#7f7f7f",
    "#2ca02c",
    "#17becf",
    "#8c564b",
    "#1f77b4",
    "#ff7f0e",
    "#9467bd",
    "#e377c2",
    "#bcbd22",
    "#d62728",
)


FIGURE_BUDGET_KB = 350  # a figure file at most this large (a notebook embeds each one once)


def save_figure(
    fig, slug: str, *, dpi: int = 100, max_kb: int = FIGURE_BUDGET_KB, show: bool | None = None
) -> Path:
    """Write ``fig`` to ``figures/<slug>.png`` (slug like ``"02_confusion"``) and, inside a
    notebook, show that same PNG below the cell; return the path.

    Size: the PNG is drawn at ``dpi``; when it is larger than ``max_kb`` it is reduced to a
    256-colour palette and, if still too large, scaled down until it fits, so that every figure
    stays small enough for a notebook to embed it (GitHub stops rendering heavy notebooks).
    ``show=None`` shows it when running in a Jupyter kernel (JupyterLab, papermill, nbval),
    whatever the matplotlib backend, and then closes ``fig`` so it is not drawn twice.
    """
    path = figures_dir() / f"{slug}.png"
    data = png_bytes(fig, dpi=dpi, max_kb=max_kb)
    atomic_write_bytes(path, data)
    if show is None:
        show = _in_notebook()
    if show:
        from IPython.display import Image, display

        display(Image(data=data, format="png"))
        plt.close(fig)
    return path


def png_bytes(fig, *, dpi: int = 100, max_kb: int | None = FIGURE_BUDGET_KB) -> bytes:
    """``fig`` as PNG bytes (white background, tight box), at most ``max_kb`` kilobytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    data = buffer.getvalue()
    if max_kb is None or len(data) <= max_kb * 1024:
        return data
    image = Image.open(io.BytesIO(data)).convert("RGB")
    for _ in range(6):
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
            buffer, "PNG", optimize=True
        )
        data = buffer.getvalue()
        if len(data) <= max_kb * 1024:
            break
        scale = max(0.5, 0.95 * (max_kb * 1024 / len(data)) ** 0.5)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
    return data


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (not in a plain script, pytest or a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


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


def image_grid(
    images,
    titles=None,
    *,
    masks=None,
    ncols: int = 8,
    size: float = 1.6,
    title_colors=None,
    row_labels=None,
):
    """Images ([N,3,H,W] tensor/array or a list of HxWx3) in a grid; optional mask outlines."""
    n = len(images)
    nrows = -(-n // ncols)
    # Room for the row labels and titles, so square images fill their cells (no blank bands).
    width = ncols * size + (0.9 if row_labels is not None else 0)
    height = nrows * size * (1.12 if titles is not None else 1.0)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained"
    )
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(_to_hwc(images[i]))
        if masks is not None:
            ax.contour(
                np.asarray(masks[i]).astype(float), levels=[0.5], colors="yellow", linewidths=0.9
            )
        if titles is not None:
            ax.set_title(
                titles[i], fontsize=8, color="black" if title_colors is None else title_colors[i]
            )
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].text(
                -0.08,
                0.5,
                label,
                transform=axes[r, 0].transAxes,
                ha="right",
                va="center",
                fontsize=9,
                fontweight="bold",
            )
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
    axes[0].annotate(
        "best (kept)",
        (history.best_epoch + 1, axes[0].get_ylim()[1]),
        fontsize=8,
        ha="left",
        va="top",
        color="grey",
        xytext=(3, -3),
        textcoords="offset points",
    )
    return fig


def confusion_heatmap(cm, classes, ax=None, *, title="confusion (rows: true class)"):
    """Confusion counts with the row share as colour; the diagonal is the per-class recall."""
    fig, ax = _axes(ax, (5.2, 4.4))
    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (t, p), count in np.ndenumerate(cm):
        if count:
            ax.text(
                p,
                t,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[t, p] > 0.6 else "black",
            )
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


def instance_flow(history, stats, order, *, classes, upto=None):
    """InstanceFlow-style overview: images x epochs coloured by predicted class, with the accuracy
    and loss curves above on the same epoch axis and per-image bars (change frequency, classes
    visited, share of epochs wrong) on the right, on the same image rows. ``upto``: the last
    epoch index shown (inclusive), e.g. ``history.best_epoch``, the audited model; ``stats``
    should then come from :func:`helpers.evolution.image_stats` with the same ``upto``."""
    shown = history.test_preds.shape[0] if upto is None else int(upto) + 1
    preds = history.test_preds[:shown, order].T  # [images, epochs]
    labels = history.test_labels[order]
    cmap = class_colormap(len(classes))
    norm = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
    fig = plt.figure(figsize=(13, 12), layout="constrained")
    heat, acc, loss, truth, bars, key = _flow_axes(fig)
    _flow_curves(acc, loss, history, epochs=preds.shape[1])
    _flow_predictions(heat, truth, bars, preds, labels, history, upto, cmap=cmap, norm=norm)
    _flow_image_bars(bars, stats.iloc[order], labels, cmap)
    _flow_key(key, classes, cmap)
    return fig


def _flow_axes(fig):
    """The panels of :func:`instance_flow`: the images x epochs heat map, the accuracy and loss
    curves above it, the true-class strip on its left, three bar panels on its right and the
    colour key (no axes) above those."""
    grid = fig.add_gridspec(3, 5, height_ratios=[1, 1, 6], width_ratios=[0.35, 4, 1, 1, 1])
    heat = fig.add_subplot(grid[2, 1])
    acc = fig.add_subplot(grid[0, 1], sharex=heat)
    loss = fig.add_subplot(grid[1, 1], sharex=heat)
    truth = fig.add_subplot(grid[2, 0], sharey=heat)
    bars = [fig.add_subplot(grid[2, 2 + k], sharey=heat) for k in range(3)]
    key = fig.add_subplot(grid[0:2, 2:])
    key.set_axis_off()
    return heat, acc, loss, truth, bars, key


def _flow_curves(acc, loss, history, *, epochs):
    """The accuracy and loss curves of the first ``epochs`` epochs, the kept epoch dotted."""
    x = np.arange(epochs)
    for values, style, label in (
        (history.train_acc, "o-", "train"),
        (history.val_acc, "s-", "validation"),
        (history.test_acc, "^-", "test"),
    ):
        acc.plot(x, values[:epochs], style, ms=4, label=label)
    loss.plot(x, history.train_loss[:epochs], "o-", ms=4, label="train")
    loss.plot(x, history.val_loss[:epochs], "s-", ms=4, label="validation")
    for ax, name in ((acc, "accuracy"), (loss, "loss")):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False)
        ax.axvline(history.best_epoch, color="grey", ls=":", lw=1)
    acc.legend(fontsize=7, loc="lower right")
    acc.set_title("How every test image's prediction settled, epoch by epoch", fontsize=11)


def _flow_predictions(heat, truth, bars, preds, labels, history, upto, *, cmap, norm):
    """The images x epochs heat map of predicted classes beside the true-class strip, with a line
    between true classes across the heat map, the strip and the bar panels."""
    n, epochs = preds.shape
    x = np.arange(epochs)
    heat.imshow(preds, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    heat.set_xticks(x, [str(e + 1) for e in x])
    heat.set_xlabel(
        "epoch  (dotted line: the kept epoch)"
        if upto is None
        else f"epoch  (up to the kept epoch {epochs}, the model every later notebook audits)"
    )
    heat.tick_params(labelleft=False, left=False)
    heat.axvline(history.best_epoch, color="black", ls=":", lw=1)
    truth.imshow(labels[:, None], aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    truth.set_xticks([0], ["true\nclass"])
    truth.set_yticks([])
    truth.set_ylabel(f"{n} test images, grouped by true class, hardest first")
    for b in np.nonzero(np.diff(labels))[0] + 0.5:
        for ax in (heat, truth, *bars):
            ax.axhline(b, color="white" if ax in (heat, truth) else "grey", lw=0.8)


def _flow_image_bars(bars, s, labels, cmap):
    """Per image (rows of ``s``, the image stats in display order) its change frequency, classes
    visited and share of epochs wrong, one bar panel each, coloured by true class."""
    n = len(labels)
    most_visited = max(3, int(s["classes_visited"].max()))
    columns = [
        ("change_frequency", "change frequency", (0, 1)),
        ("classes_visited", "classes visited", (0, most_visited)),
        ("misclassification_rate", "share of epochs wrong", (0, 1)),
    ]
    for ax, (column, title, xlim) in zip(bars, columns):
        ax.barh(np.arange(n), s[column].to_numpy(), height=1.0, color=cmap(labels), lw=0)
        ax.set_xlim(*xlim)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelleft=False, left=False)
        ax.grid(axis="x", alpha=0.3)
    bars[1].set_xticks(range(most_visited + 1))


def _flow_key(key, classes, cmap):
    """The colour key of :func:`instance_flow` and how to read a row."""
    key.legend(
        handles=[Patch(color=cmap(i), label=c) for i, c in enumerate(classes)],
        loc="center left",
        ncols=2,
        fontsize=9,
        title="colour = predicted class",
    )
    key.text(
        0.0,
        0.02,
        "A row whose colour differs from its true-class strip\n"
        "is a wrong prediction at that epoch.",
        fontsize=8,
        transform=key.transAxes,
        va="bottom",
    )


def prediction_strips(
    images, preds, labels, classes, *, titles=None, ncols: int = 8, size: float = 1.7
):
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
        ax.set_title(
            titles[i] if titles is not None else f"true: {classes[int(labels[i])]}", fontsize=8
        )
        strip = fig.add_subplot(grid[2 * r + 1, c])
        strip.imshow(
            preds[:, i][None], cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, aspect="auto"
        )
        strip.set_yticks([])
        strip.set_xticks([0, epochs - 1], ["1", str(epochs)], fontsize=6)
    fig.legend(
        handles=[Patch(color=cmap(i), label=c) for i, c in enumerate(classes)],
        loc="outside lower center",
        ncols=len(classes),
        fontsize=8,
        title="frame = true class; strip under each image = predicted class at epochs 1 ... last",
        title_fontsize=8,
    )
    return fig


_CATEGORY_COLORS = {
    "learned early": "#2ca02c",
    "learned late": "#ffbf00",
    "forgotten": "#ff7f0e",
    "never learned": "#d62728",
}


def category_bars(summary, ax=None):
    """Share of each class's test images learned early/late, forgotten, never learned.

    When ``summary`` (:func:`helpers.evolution.class_summary`) has the Wilson intervals
    (``<category> low`` / ``high``): one panel per category, a bar per class with its 95 %
    interval, and n beside the class name (``ax`` is then ignored). Otherwise one stacked bar
    per class."""
    from .evolution import CATEGORIES

    if all(f"{c} low" in summary and f"{c} high" in summary for c in CATEGORIES):
        return _category_panels(summary, CATEGORIES)
    return _category_stacked(summary, CATEGORIES, ax)


def _category_panels(summary, categories):
    """One panel per category: a bar per class with its 95 % Wilson interval, n by the name."""
    n = summary["images"].to_numpy() if "images" in summary else None
    names = (
        [f"{c} (n={k})" for c, k in zip(summary.index, n)] if n is not None else list(summary.index)
    )
    fig, axes = plt.subplots(
        1,
        len(categories),
        figsize=(11, 0.45 * len(summary) + 1.4),
        layout="constrained",
        sharey=True,
    )
    y = np.arange(len(summary))
    for ax_, category in zip(axes, categories):
        value = summary[category].to_numpy(dtype=float)
        err = np.vstack(
            [
                value - summary[f"{category} low"].to_numpy(dtype=float),
                summary[f"{category} high"].to_numpy(dtype=float) - value,
            ]
        ).clip(0, None)  # an estimate outside its bootstrap interval: no bar on that side
        ax_.barh(y, value, color=_CATEGORY_COLORS[category], alpha=0.8)
        ax_.errorbar(value, y, xerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=2)
        ax_.set_xlim(0, 1)
        ax_.set_title(category, fontsize=9)
        ax_.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    fig.supxlabel(
        "share of the class's test images (bar) with its 95 % Wilson interval", fontsize=9
    )
    return fig


def _category_stacked(summary, categories, ax=None):
    """One stacked bar per class, a segment per category (no intervals)."""
    fig, ax = _axes(ax, (7, 3.2))
    left = np.zeros(len(summary))
    for category in categories:
        values = summary[category].to_numpy()
        ax.barh(summary.index, values, left=left, color=_CATEGORY_COLORS[category], label=category)
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
    fig, axes = plt.subplots(
        1, len(picks), figsize=(4.2 * len(picks), 4.2), layout="constrained", squeeze=False
    )
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


def overlay(
    image,
    attribution,
    ax=None,
    *,
    signed=None,
    alpha: float = 0.55,
    title=None,
    percentile: float = 99,
    grey: bool = True,
):
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
    ax.imshow(
        heat,
        cmap=SIGNED_CMAP if signed else ABS_CMAP,
        vmin=-1 if signed else 0,
        vmax=1,
        alpha=alpha,
        extent=extent,
        interpolation="bilinear" if heat.shape != (h, w) else "nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)
    return fig


def attribution_grid(
    images,
    maps_by_method: dict,
    *,
    titles=None,
    signed=None,
    size: float = 1.8,
    percentile: float = 99,
    alpha: float = 0.6,
):
    """Methods x images: the first row shows the images, then one row per method (name at the
    left) with each map over its grey image, scaled on its own (:func:`scale_map`). ``signed``:
    None (decide per method from its maps), a bool, or a dict method -> bool. Each row has a colour
    bar that says how to read it."""
    methods = list(maps_by_method)
    n = len(images)
    fig, grid = plt.subplots(
        len(methods) + 1,
        n + 1,
        figsize=(n * size + 1.4, (len(methods) + 1) * size),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [1] * n + [0.07]},
    )
    axes, bars = grid[:, :n], grid[:, n]  # the last narrow column holds each row's colour bar
    fig.delaxes(bars[0])
    _image_row(axes[0], images, titles)
    for r, method in enumerate(methods, start=1):
        maps = maps_by_method[method]
        row_signed = signed.get(method) if isinstance(signed, dict) else signed
        row_signed = _is_signed(maps) if row_signed is None else bool(row_signed)
        for j in range(n):
            overlay(
                images[j],
                maps[j],
                ax=axes[r, j],
                signed=row_signed,
                alpha=alpha,
                percentile=percentile,
            )
            for spine in axes[r, j].spines.values():
                spine.set_visible(False)
        axes[r, 0].set_ylabel(method, fontsize=9, fontweight="bold")
        _map_colorbar(fig, bars[r], signed=row_signed)
    fig.suptitle(
        f"Each map is scaled on its own ({percentile:g}th percentile of |map| = full colour):\n"
        "compare where a method looks, not how strongly",
        fontsize=9,
    )
    return fig


def _image_row(axes, images, titles=None):
    """The first row of :func:`attribution_grid`: the images themselves, titled when asked."""
    for j in range(len(images)):
        axes[j].imshow(np.clip(_to_numpy(_to_hwc(images[j])), 0, 1))
        axes[j].set_xticks([])
        axes[j].set_yticks([])
        if titles is not None:
            axes[j].set_title(titles[j], fontsize=8)
    axes[0].set_ylabel("image", fontsize=9, fontweight="bold")


def _map_colorbar(fig, cax, *, signed: bool):
    """A colour bar in ``cax`` that says how to read a row of maps: against/for when signed,
    none/most otherwise."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if signed:
        mappable = ScalarMappable(Normalize(-1, 1), SIGNED_CMAP)
        bar = fig.colorbar(mappable, cax=cax)
        bar.set_ticks([-1, 0, 1], labels=["against", "0", "for"])
    else:
        mappable = ScalarMappable(Normalize(0, 1), ABS_CMAP)
        bar = fig.colorbar(mappable, cax=cax)
        bar.set_ticks([0, 1], labels=["none", "most"])
    bar.ax.tick_params(labelsize=7)


def curve_plot(result, ax=None, *, label=None, color=None):
    """A deletion or insertion curve (a :class:`helpers.quality.CurveResult` or a dict with
    ``fractions``, ``probs``, ``auc`` and optionally ``kind``): the mean over images with a band
    of +-1 standard deviation; the mean AUC is in the legend."""
    fig, ax = _axes(ax, (4.5, 3.2))
    fractions, probs = np.asarray(result["fractions"]), np.asarray(result["probs"])
    auc = float(np.mean(result["auc"]))
    kind = result["kind"] if "kind" in result.keys() else "curve"
    mean, sd = probs.mean(axis=0), probs.std(axis=0)
    (line,) = ax.plot(fractions, mean, color=color, label=f"{label or kind} (AUC {auc:.3f})")
    ax.fill_between(
        fractions,
        np.clip(mean - sd, 0, 1),
        np.clip(mean + sd, 0, 1),
        color=line.get_color(),
        alpha=0.2,
        lw=0,
    )
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
    counts = {len(v) for df in df_by_method.values() if "per_image" in df for v in df["per_image"]}
    if len(counts) == 1:
        ax.set_title(
            f"mean over n = {counts.pop()} images (a map that went constant counts as 0)",
            fontsize=9,
        )
    ax.set_xlabel("randomised from the output down to ... (cumulative)")
    ax.set_ylabel("Spearman rank correlation" + (" of |maps|" if column == "spearman_abs" else ""))
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method", title_fontsize=8
    )
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
    shown = 0.5 * grey + 0.3  # the superpixels LIME did not rank high: grey, faded
    for ids, tint in ((positive, (0.1, 0.85, 0.2)), (negative, (0.95, 0.15, 0.1))):
        where = np.isin(segments, ids)
        shown[where] = 0.45 * rgb[where] + 0.55 * np.asarray(tint)
    shown[find_boundaries(segments, mode="inner")] = 1.0
    ax.imshow(shown.clip(0, 1))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return fig


# ----------------------------------------------------------------------------- adversarial
def _eps_axis(ax, which="x"):
    """Label an epsilon axis in [0, 1] pixel units with the /255 equivalent."""
    label = "epsilon (L-inf, pixel range 0-1; x255 = grey levels)"
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(label)


def robust_accuracy_curves(sweeps: dict, ax=None):
    """Accuracy against epsilon, one line per attack (DataFrames of
    :func:`helpers.attacks.epsilon_sweep` or :func:`helpers.attacks.robust_accuracy_from_epsilons`:
    columns ``epsilon`` and ``accuracy``, and ``low`` / ``high``, drawn as a band, when present).
    Epsilon in grey levels on a scale that is linear up to a quarter of one and logarithmic above,
    so that a curve falling within one grey level and one spread up to 16 are both readable."""
    fig, ax = _axes(ax, (5.2, 3.4))
    top = 0.0
    for name, df in sweeps.items():
        grey = df["epsilon"].to_numpy(dtype=float) * 255
        top = max(top, float(np.nanmax(grey)) if len(grey) else 0.0)
        (line,) = ax.plot(
            grey, df["accuracy"], "o-", ms=4, label=f"{name} (n={int(df['n'].iloc[0])})"
        )
        if {"low", "high"} <= set(df.columns):  # a 95 % interval (Wilson) where there is one
            ax.fill_between(
                grey,
                df["low"].astype(float),
                df["high"].astype(float),
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
    ax.set_xscale("symlog", linthresh=0.25, linscale=0.6)
    ax.set_xlim(0, max(top, 1.0) * 1.1)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda g, _: f"{g:g}"))
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy under attack")
    ax.set_xlabel("epsilon in grey levels of 255 (L-inf; linear below 0.25, log above)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def minimal_epsilon_by_class(df, classes, ax=None, *, region: str | None = None, log: bool = False):
    """The smallest flipping epsilon of each image (rows of :func:`helpers.attacks.minimal_epsilon`
    or of ``fragility_by_region`` for one ``region``), one column of dots per class with its
    median as a bar with its 95 % bootstrap interval (helpers.stats) and n; images that never
    flipped up to ``max_eps`` sit above the dashed line.
    ``log=True``: a logarithmic epsilon axis (for epsilons that spread over decades)."""
    fig, ax = _axes(ax, (6.4, 3.4))
    if region is not None:
        df = df[df["region"] == region]
    df = df[~df["already_wrong"]]
    max_eps = float(
        df.attrs.get("max_eps", np.nanmax(df["epsilon"]) if df["flipped"].any() else 1.0)
    )
    above = max_eps * 1.08
    rng = np.random.default_rng(0)
    colors = class_colormap(len(classes)).colors
    for k in range(len(classes)):
        _epsilon_column(ax, k, df[df["label"] == k], above=above, color=colors[k], rng=rng)
    ax.axhline(max_eps, color="grey", ls="--", lw=1)
    ax.text(
        len(classes) - 0.5,
        above,
        f"no flip up to {max_eps:g}",
        ha="right",
        va="bottom",
        fontsize=7,
        color="grey",
    )
    ax.set_xticks(range(len(classes)), classes)
    if log:
        low = df.loc[df["flipped"] & (df["epsilon"] > 0), "epsilon"]
        ax.set_yscale("log")
        ax.set_ylim((low.min() if len(low) else max_eps / 100) / 1.5, above * 1.3)
    else:
        ax.set_ylim(0, above * 1.1)
    _eps_axis(ax, "y")
    ax.set_ylabel("smallest flipping epsilon")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(
        "black bar: class median with its 95 % interval (only correctly classified images)",
        fontsize=8,
    )
    return fig


def _epsilon_column(ax, k, sel, *, above, color, rng):
    """Class ``k``'s column of :func:`minimal_epsilon_by_class`: a jittered dot per image (at
    ``above`` when it never flipped), the median with its 95 % bootstrap interval, and n."""
    from .stats import bootstrap

    eps = np.where(sel["flipped"], sel["epsilon"], above)
    jitter = rng.uniform(-0.22, 0.22, len(eps))
    ax.scatter(k + jitter, eps, s=12, color=color, alpha=0.75, lw=0)
    if not len(eps):
        return
    est = bootstrap(np.where(sel["flipped"], sel["epsilon"], np.inf), np.median, seed=k)
    med = est.estimate
    if np.isfinite(med):
        ax.plot([k - 0.32, k + 0.32], [med, med], color="black", lw=2)
        high = est.high if np.isfinite(est.high) else above
        ax.errorbar(
            k,
            med,
            yerr=[[med - est.low], [high - med]],
            color="black",
            lw=1.2,
            capsize=4,
            zorder=3,
        )
    ax.text(
        k,
        0.0,
        f"n={len(eps)}",
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="bottom",
        fontsize=7,
        color="dimgrey",
    )


def region_fragility(per_class, regions, *, columns=("median_eps", "median_l2"), size=(11, 3.4)):
    """Per class, the median smallest flipping epsilon (and the median L2 norm of that change)
    for the perturbation confined to each region; a table from
    :func:`helpers.attacks.per_class_fragility` (error bars: its ``_ci_low`` / ``_ci_high``
    columns, when present). Infinite medians (more than half the class never flipped) are
    drawn as hatched bars at the top of the axis."""
    titles = {
        "median_eps": "median smallest L-inf epsilon",
        "median_l2": "median L2 norm of the change",
    }
    fig, axes = plt.subplots(1, len(columns), figsize=size, layout="constrained", squeeze=False)
    classes = list(per_class.index)
    width = 0.8 / len(regions)
    for ax, column in zip(axes[0], columns):
        scale = (
            255.0 if column == "median_eps" else 1.0
        )  # epsilons in grey levels, as in the tables
        values = per_class[[f"{column}_{r}" for r in regions]].to_numpy(dtype=float) * scale
        finite = values[np.isfinite(values)]
        top = 1.15 * (finite.max() if finite.size else 1.0)
        for j, region in enumerate(regions):
            v = values[:, j]
            xs = np.arange(len(classes)) + (j - (len(regions) - 1) / 2) * width
            bars = ax.bar(
                xs,
                np.where(np.isfinite(v), v, top),
                width,
                label=region,
                color=plt.get_cmap("Set2")(j),
            )
            lo_col, hi_col = f"{column}_{region}_ci_low", f"{column}_{region}_ci_high"
            if lo_col in per_class.columns:  # 95 % interval where the table has one
                lo = per_class[lo_col].to_numpy(dtype=float) * scale
                hi = np.minimum(per_class[hi_col].to_numpy(dtype=float) * scale, top)
                ok = np.isfinite(v) & np.isfinite(lo)
                ax.errorbar(
                    xs[ok],
                    v[ok],
                    yerr=[v[ok] - lo[ok], hi[ok] - v[ok]],
                    fmt="none",
                    ecolor="black",
                    lw=1,
                    capsize=2,
                )
            for bar, ok in zip(bars, np.isfinite(v)):
                if not ok:
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
        ax.set_ylim(0, top * 1.02)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_title(titles.get(column, column), fontsize=9)
        if column == "median_eps":
            ax.set_ylabel("grey levels of 255", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8, title="perturbation confined to", title_fontsize=8)
    return fig


def adversarial_examples(x, x_adv, titles_clean, titles_adv, *, gain=None, size: float = 1.9):
    """Three rows: the originals, the adversarial images, and their difference magnified
    (mid-grey = no change); column titles say what the model answered."""
    from .synthesis import magnified_difference

    n = len(x)
    diff = magnified_difference(x, x_adv, gain=gain)
    fig, axes = plt.subplots(
        3, n, figsize=(n * size, 3 * size * 1.15), squeeze=False, layout="constrained"
    )
    for i in range(n):
        for r, (images, titles) in enumerate(
            ((x, titles_clean), (x_adv, titles_adv), (diff, None))
        ):
            ax = axes[r][i]
            ax.imshow(_to_hwc(images[i]).clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    for r, label in enumerate(("original", "adversarial", "difference, magnified")):
        axes[r][0].set_ylabel(label, fontsize=8)
    return fig


def confidence_vs_epsilon(df, classes, ax=None, *, confident: float = 0.9, fragile=None):
    """Each correctly classified image: its clean confidence against its smallest flipping epsilon.
    The shaded corner holds the confident-but-fragile images (confidence >= ``confident``,
    epsilon <= ``fragile``, by default the lower quartile of the flipped images' epsilons)."""
    fig, ax = _axes(ax, (5.4, 3.6))
    df = df[~df["already_wrong"] & df["flipped"]]
    fragile = (
        float(np.quantile(df["epsilon"], 0.25)) if fragile is None and len(df) else (fragile or 0.0)
    )
    colors = class_colormap(len(classes)).colors
    for k, name in enumerate(classes):
        sel = df[df["label"] == k]
        ax.scatter(
            sel["epsilon"],
            sel["confidence_before"],
            s=14,
            color=colors[k],
            label=name,
            alpha=0.8,
            lw=0,
        )
    ax.axvspan(0, fragile, ymin=0, ymax=1, color="red", alpha=0.06)
    ax.axhline(confident, color="red", ls=":", lw=1)
    ax.axvline(fragile, color="red", ls=":", lw=1)
    ax.text(
        fragile, 1.0, " confident but fragile ", ha="right", va="bottom", fontsize=7, color="red"
    )
    _eps_axis(ax)
    ax.set_xlabel("smallest flipping epsilon")
    ax.set_ylabel("confidence before the attack")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return fig


# ------------------------------------------------------------------------- calibration and trust
def reliability_diagram(
    probs,
    labels,
    ax=None,
    *,
    n_bins: int = 15,
    title=None,
    color="#1f77b4",
    interval: bool = True,
    seed: int = 0,
):
    """Reliability diagram (Guo et al. 2017): per equal-width confidence bin, a bar of the
    accuracy next to the diagonal of perfect calibration, the gap to the bin's mean confidence
    shaded red (above the bar: over-confident; inside it: under-confident), the ECE in the title,
    and a histogram of the confidences (share of images per bin). With ``interval`` the legend
    also gives the ECE's 95 % seeded bootstrap interval and n
    (:func:`helpers.calibration.ece_interval`).

    ``ax``: ``None`` (own figure, diagram above the histogram), a pair of axes ``(diagram,
    histogram)`` (e.g. one column of ``subplots(2, k)``; see :func:`reliability_comparison` for
    before/after side by side), or one Axes (the histogram then a grey step line on a right
    axis)."""
    from .calibration import ece_interval, expected_calibration_error, reliability_bins

    bins = reliability_bins(probs, labels, n_bins=n_bins)
    ece = expected_calibration_error(probs, labels, n_bins=n_bins)
    fig, ax_d, ax_h = _reliability_axes(ax)
    _reliability_bars(ax_d, bins, 1 / n_bins, color)
    if interval:
        row = ece_interval(probs, labels, n_bins=n_bins, seed=seed).loc["all"]
        ax_d.plot(
            [],
            [],
            " ",
            label=f"ECE 95 % interval [{row['low']:.3f}, {row['high']:.3f}], n = {int(row['n'])}",
        )
    ax_d.set_xlim(0, 1)
    ax_d.set_ylim(0, 1)
    ax_d.set_ylabel("accuracy")
    ax_d.set_title(f"{title}: ECE {ece:.3f}" if title else f"ECE {ece:.3f}", fontsize=10)
    ax_d.legend(fontsize=7, loc="upper left")
    _confidence_histogram(ax_d, ax_h, bins, 1 / n_bins)
    return fig


def _reliability_axes(ax):
    """``(figure, diagram axes, histogram axes or None)`` for the ``ax`` given to
    :func:`reliability_diagram`: None, a pair of axes, or one Axes (no histogram axes)."""
    if ax is None:
        fig, (ax_d, ax_h) = plt.subplots(
            2, 1, figsize=(4.2, 5.2), sharex=True, height_ratios=(3, 1), layout="constrained"
        )
    elif isinstance(ax, (list, tuple, np.ndarray)):
        ax_d, ax_h = ax
        fig = ax_d.figure
    else:
        ax_d, ax_h, fig = ax, None, ax.figure
    return fig, ax_d, ax_h


def _reliability_bars(ax_d, bins, width, color):
    """Per used bin, the accuracy bar and the hatched red gap to its mean confidence, and the
    diagonal of perfect calibration."""
    used = bins["count"].to_numpy() > 0
    lower = bins["lower"].to_numpy()[used]
    acc = bins["accuracy"].to_numpy()[used]
    conf = bins["confidence"].to_numpy()[used]
    ax_d.bar(
        lower, acc, width, align="edge", color=color, edgecolor="white", label="accuracy in the bin"
    )
    ax_d.bar(
        lower,
        conf - acc,
        width,
        bottom=acc,
        align="edge",
        color="#d62728",
        alpha=0.25,
        edgecolor="#d62728",
        hatch="//",
        label="gap to its mean confidence",
    )
    ax_d.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")


def _confidence_histogram(ax_d, ax_h, bins, width):
    """The share of images per confidence bin: bars in ``ax_h``, or (``ax_h`` None) a grey step
    line on a right axis of ``ax_d``."""
    share = bins["share"].to_numpy()
    if ax_h is not None:
        ax_h.bar(bins["lower"], share, width, align="edge", color="#7f7f7f", edgecolor="white")
        ax_h.set_xlim(0, 1)
        ax_h.set_ylim(0, max(share.max() * 1.15, 0.05))
        ax_h.set_xlabel("confidence (max. probability)")
        ax_h.set_ylabel("share of images", fontsize=8)
    else:
        ax_d.set_xlabel("confidence (max. probability)")
        twin = ax_d.twinx()
        edges = np.append(bins["lower"].to_numpy(), 1.0)
        twin.stairs(share, edges, color="#7f7f7f", lw=1.2, label="share of images")
        twin.set_ylim(0, 1)
        twin.set_ylabel("share of images (grey line)", fontsize=8, color="#7f7f7f")


def reliability_comparison(
    probs_by_name: dict,
    labels,
    *,
    n_bins: int = 15,
    size: float = 3.6,
    interval: bool = True,
    seed: int = 0,
):
    """Reliability diagrams side by side, one column per entry of ``{name: probs}`` (e.g.
    before and after temperature scaling), each with its confidence histogram below."""
    if not probs_by_name:
        raise ValueError("probs_by_name must be a non-empty dict {name: probs [N, C]}")
    k = len(probs_by_name)
    fig, axes = plt.subplots(
        2,
        k,
        figsize=(size * k, size * 1.3),
        height_ratios=(3, 1),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for j, (name, probs) in enumerate(probs_by_name.items()):
        reliability_diagram(
            probs,
            labels,
            ax=(axes[0, j], axes[1, j]),
            n_bins=n_bins,
            title=name,
            interval=interval,
            seed=seed,
        )
    return fig


def trust_heatmap(table, ax=None, *, columns=None):
    """Per-class heat table of the trust components and the score of a table from
    :func:`helpers.trust.score` (rows ordered by rank, red 0 to green 1, values written in the
    cells; a missing value is a grey cell marked "not defined")."""
    if columns is None:
        columns = _trust_columns(table)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {missing}; call trust.score(table) first")
    rows = table.sort_values("rank", kind="stable") if "rank" in table.columns else table
    values = rows[columns].astype(float).to_numpy()
    with_ci = all(f"{c}_ci_low" in rows.columns for c in columns)
    fig, ax = _axes(ax, (1.25 * len(columns) + 2, (0.6 if with_ci else 0.45) * len(rows) + 1.4))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#bdbdbd")
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        text = "not defined" if np.isnan(v) else f"{v:.2f}"
        if with_ci and not np.isnan(v):
            lo, hi = (float(rows[f"{columns[j]}_ci_{e}"].iloc[i]) for e in ("low", "high"))
            if not (np.isnan(lo) or np.isnan(hi)):
                text += f"\n{lo:.2f}-{hi:.2f}"
        ax.text(
            j,
            i,
            text,
            ha="center",
            va="center",
            fontsize=8 if not with_ci else 7,
            color="#8b0000" if np.isnan(v) else "black",
            fontweight="bold" if columns[j] == "trust_score" else "normal",
        )
    names = [c.removeprefix("component_").replace("_", " ") for c in columns]
    ax.set_xticks(range(len(columns)), names, rotation=30, ha="right", fontsize=8)
    labels = [
        f"{r}. {c}" if "rank" in rows.columns else str(c)
        for c, r in zip(rows.index, rows["rank"] if "rank" in rows.columns else rows.index)
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    if columns[-1] == "trust_score" and len(columns) > 1:
        ax.axvline(len(columns) - 1.5, color="black", lw=1.5)  # the score apart from its components
    ax.set_title(
        "trust components per class (1 = no weakness found)"
        + ("; under each value its 95 % interval" if with_ci else ""),
        fontsize=10,
    )
    return fig


def _trust_columns(table) -> list:
    """The component columns of a scored trust table (no interval columns), then the score."""
    return [
        c
        for c in table.columns
        if c.startswith("component_") and not c.endswith(("_ci_low", "_ci_high"))
    ] + ["trust_score"]


def trust_components(table, *, columns=None, ncols: int = 3):
    """One panel per component of a table from :func:`helpers.trust.score` (and one for the trust
    score): each class a dot at its value with a horizontal bar for its 95 % interval and its n
    beside it, classes in rank order, the x axis from 0 to 1. Overlapping bars are classes the
    data cannot tell apart on that component."""
    if columns is None:
        columns = _trust_columns(table)
    missing = [c for c in columns if c not in table.columns or f"{c}_ci_low" not in table.columns]
    if missing:
        raise ValueError(
            f"the table has no column(s) or intervals {missing}; call trust.score(table) first"
        )
    rows = table.sort_values("rank", kind="stable") if "rank" in table.columns else table
    n_rows = int(np.ceil(len(columns) / ncols))
    fig, axes = plt.subplots(
        n_rows,
        min(ncols, len(columns)),
        squeeze=False,
        figsize=(3.6 * min(ncols, len(columns)), 0.32 * len(rows) * n_rows + 1.2 * n_rows),
    )
    names = [str(c) if len(str(c)) <= 18 else str(c)[:16] + "..." for c in rows.index]
    for k, (ax, col) in enumerate(zip(axes.flat, columns)):
        _component_panel(ax, rows, col, names if k % axes.shape[1] == 0 else [""] * len(rows))
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    fig.suptitle(
        "trust components per class with 95 % intervals (1 = no weakness found)", fontsize=10
    )
    fig.tight_layout()
    return fig


def _component_panel(ax, rows, col, names):
    """One panel of :func:`trust_components`: each class (``rows`` in rank order, labelled
    ``names``) a dot at its value of ``col`` with its 95 % interval and n, or "not defined"."""
    from .trust import N_COLUMN

    y = np.arange(len(rows))
    v = rows[col].astype(float).to_numpy()
    lo = rows[f"{col}_ci_low"].astype(float).to_numpy()
    hi = rows[f"{col}_ci_high"].astype(float).to_numpy()
    ok = ~np.isnan(v) & ~np.isnan(lo) & ~np.isnan(hi)
    colour = "black" if col == "trust_score" else "#1f77b4"
    ax.errorbar(
        v[ok],
        y[ok],
        # an estimate may lie outside its percentile bootstrap interval (the ECE is biased
        # upwards, so its replicates can all exceed it): no bar on that side, not an error
        xerr=[np.clip(v[ok] - lo[ok], 0, None), np.clip(hi[ok] - v[ok], 0, None)],
        fmt="o",
        ms=4,
        color=colour,
        ecolor=colour,
        elinewidth=1.5,
        capsize=2,
    )
    n_col = N_COLUMN.get(col)
    for i in range(len(rows)):
        if not ok[i]:
            ax.text(0.02, i, "not defined", va="center", fontsize=7, color="#8b0000")
        elif n_col in rows.columns:
            ax.text(
                1.02,
                i,
                f"n={int(rows[n_col].iloc[i])}",
                va="center",
                fontsize=7,
                color="#555",
                transform=ax.get_yaxis_transform(),
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_title(
        col.removeprefix("component_").replace("_", " "),
        fontsize=9,
        fontweight="bold" if col == "trust_score" else "normal",
    )
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)


# ----------------------------------------------------------------------------- perceptual hashes
def hamming_curve(distances, ax=None, *, steps=None, labels=None, bits=None, title=None):
    """Hamming distance to the target hash at every step of a collision search, one line per
    image (``distances`` [N, T] or [T], e.g. :attr:`helpers.hashing.CollisionResult.distances`).
    ``steps`` (one per image) ends each line where its search stopped, with a dot when the
    distance there is 0 (collision) and a cross when not; ``bits`` draws the chance level of
    unrelated images (half the bits) as a dashed line."""
    fig, ax = _axes(ax, (5, 3.4))
    d = np.atleast_2d(_to_numpy(distances))
    ends = (
        [d.shape[1] - 1] * len(d)
        if steps is None
        else [int(s) for s in np.atleast_1d(_to_numpy(steps))]
    )
    if len(ends) != len(d):
        raise ValueError(f"{len(ends)} steps for {len(d)} distance curves")
    for i, (row, end) in enumerate(zip(d, ends)):
        label = None if labels is None else labels[i]
        (line,) = ax.plot(np.arange(end + 1), row[: end + 1], lw=1.5, label=label)
        ax.plot([end], [row[end]], "o" if row[end] == 0 else "x", color=line.get_color(), ms=6)
    if bits is not None:
        ax.axhline(bits / 2, color="grey", ls="--", lw=1)
        ax.text(
            ax.get_xlim()[1],
            bits / 2,
            f"chance level of unrelated images ({bits // 2} of {bits})",
            ha="right",
            va="bottom",
            fontsize=7,
            color="grey",
        )
    ax.set_ylim(bottom=0)
    ax.set_xlabel("gradient step")
    ax.set_ylabel("bits differing from the target hash")
    ax.grid(alpha=0.3)
    if labels is not None:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def hash_robustness_bars(
    df, ax=None, *, bits=None, title="hash bits flipped by everyday changes (lower = more robust)"
):
    """Grouped horizontal bars of :func:`helpers.hashing.robustness_table`: for each
    transformation (rows of ``df``) and hash (columns), the share of the hash's bits that change
    (mean Hamming distance / ``bits[name]``; ``bits`` defaults to ``df.attrs["bits"]``). A last
    row named ``"unrelated photos"`` is the reference: hatched, below a line."""
    bits = dict(df.attrs.get("bits", {}) if bits is None else bits)
    missing = [c for c in df.columns if c not in bits]
    if missing:
        raise ValueError(f"no bit count for {missing}; pass bits={{name: number of bits}}")
    rows = list(df.index)
    fig, ax = _axes(ax, (6.4, 0.32 * len(rows) * max(1, len(df.columns)) / 2 + 1.4))
    height = 0.8 / len(df.columns)
    y = np.arange(len(rows))
    for k, name in enumerate(df.columns):
        share = df[name].to_numpy(dtype=float) / bits[name]
        pos = y - 0.4 + height * (k + 0.5)
        bars = ax.barh(pos, share, height=height, label=f"{name} ({bits[name]} bits)")
        for bar, row, value, s in zip(bars, rows, df[name].to_numpy(dtype=float), share):
            if row == "unrelated photos":
                bar.set_hatch("//")
                bar.set_edgecolor("white")
            ax.text(
                s + 0.005,
                bar.get_y() + bar.get_height() / 2,
                f"{value:.1f}",
                va="center",
                fontsize=6.5,
            )
    if "unrelated photos" in rows:
        ax.axhline(rows.index("unrelated photos") - 0.5, color="black", lw=0.8)
    ax.set_yticks(y, rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(0.62, ax.get_xlim()[1] + 0.05))
    ax.set_xlabel("share of the hash's bits that change (mean over photos; numbers: bits)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


# ------------------------------------------------------------------------ natural corruptions
def severity_heatmap(table, ax=None, *, title=None):
    """Class (rows) x corruption (columns): the median smallest flipping severity of
    :func:`helpers.corruptions.per_class_severity`'s table, annotated with the median and its
    95 % interval; n (correctly classified images) beside each class. Darker = flips at a
    smaller severity. A median beyond severity 1 (more than half of the class never flipped)
    is a hatched white cell reading "> 1"; a class with no image, an empty grey cell."""
    classes = list(dict.fromkeys(table["class"]))
    names = list(dict.fromkeys(table["corruption"]))
    get = table.set_index(["class", "corruption"])
    med = np.array([[get.loc[(c, k), "median"] for k in names] for c in classes], dtype=float)
    fig, ax = _axes(ax, (1.05 * len(names) + 2.2, 0.62 * len(classes) + 1.4))
    shown = np.ma.masked_invalid(np.where(np.isinf(med), np.nan, med))
    im = ax.imshow(shown, cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.set_facecolor("#dddddd")
    for i, c in enumerate(classes):
        for j, k in enumerate(names):
            _severity_cell(ax, i, j, get.loc[(c, k)])
    ns = [int(get.loc[(c, names[0]), "n"]) for c in classes]
    ax.set_yticks(range(len(classes)), [f"{c} (n={n})" for c, n in zip(classes, ns)])
    ax.set_xticks(range(len(names)), [k.replace("_", " ") for k in names], rotation=30, ha="right")
    ax.figure.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="median flipping severity")
    ax.set_title(title or "median severity that flips an image (95 % interval)", fontsize=9)
    return fig


def _severity_cell(ax, i, j, row):
    """One cell of :func:`severity_heatmap`: the text, hatched when the median is beyond 1."""
    med, low, high = float(row["median"]), float(row["low"]), float(row["high"])
    if np.isnan(med):
        ax.text(j, i, "no image", ha="center", va="center", fontsize=7, color="dimgrey")
        return
    if np.isinf(med):
        box = plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#999")
        ax.add_patch(box)
        ax.text(j, i, "> 1\nmost never\nflip", ha="center", va="center", fontsize=7)
        return
    top = ">1" if np.isinf(high) else f"{high:.2f}"
    color = "white" if med < 0.55 else "black"
    ax.text(j, i - 0.1, f"{med:.2f}", ha="center", va="center", fontsize=9, color=color)
    ax.text(j, i + 0.22, f"[{low:.2f}, {top}]", ha="center", va="center", fontsize=6.5, color=color)


def accuracy_vs_severity(curves, ax=None, *, title=None):
    """Accuracy against severity, one line per corruption, from
    :func:`helpers.corruptions.accuracy_curves` (level 0: clean; levels 1-5 at their
    severities on this project's [0, 1] scale, so each corruption's ImageNet-C levels sit
    where its parameter puts them), with the Wilson 95 % band and n in the title."""
    fig, ax = _axes(ax, (6.6, 3.8))
    colors = plt.get_cmap("tab10")
    for j, (name, df) in enumerate(curves.groupby("corruption", sort=False)):
        s = df["severity"].to_numpy(float)
        label = name.replace("_", " ")
        (line,) = ax.plot(s, df["accuracy"], "o-", ms=3.5, lw=1.4, color=colors(j), label=label)
        ax.fill_between(s, df["low"], df["high"], color=line.get_color(), alpha=0.08, lw=0)
    n = int(curves["n"].iloc[0]) if len(curves) else 0
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("severity (0: clean; 1: ImageNet-C severity 5; dots: ImageNet-C levels 1-5)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"accuracy at ImageNet-C's five levels (n={n} test images)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return fig


def adversarial_vs_natural(per_class, ax=None, *, budget=None, title=None):
    """Per class (one dot each, with 95 % intervals both ways): the median smallest flipping
    epsilon of the whole image (x, grey levels) against the share of corruptions withstood at
    the stated severities (y), the table of
    :func:`helpers.corruptions.class_rank_correlation`."""
    fig, ax = _axes(ax, (5.4, 3.8))
    colors = class_colormap(max(1, len(per_class))).colors
    x = per_class["median_eps"].to_numpy(float) * 255
    y = per_class["withstanding"].to_numpy(float)
    xlo, xhi = (per_class[f"median_eps_{e}"].to_numpy(float) * 255 for e in ("low", "high"))
    ylo, yhi = (per_class[f"withstanding_{e}"].to_numpy(float) for e in ("low", "high"))
    for k, name in enumerate(per_class.index):
        if not np.isfinite(x[k]):
            continue
        ax.errorbar(
            x[k],
            y[k],
            xerr=[[x[k] - xlo[k]], [min(xhi[k], 1e3) - x[k]]],
            yerr=[[y[k] - ylo[k]], [yhi[k] - y[k]]],
            fmt="o",
            color=colors[k % len(colors)],
            capsize=3,
            label=f"{name} (n={int(per_class['n'].iloc[k])})",
        )
    ax.set_xlabel("median smallest flipping epsilon, whole image (grey levels of 255)")
    ax.set_ylabel("share of corruptions withstood\nat the stated severities")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "per class: adversarial against natural fragility", fontsize=9)
    return fig
