import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import plots  # noqa: E402
from helpers.quality import CurveResult  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _heat_arrays(fig):
    """The data of every image drawn over another one (the heatmaps), as float arrays."""
    out = []
    for ax in fig.axes:
        images = ax.get_images()
        out += [np.asarray(im.get_array(), dtype=float) for im in images[1:]]
    return out


# ----------------------------------------------------------------------------- scale_map
@pytest.mark.parametrize("flat", [np.zeros((5, 5)), np.full((5, 5), 3.0), torch.full((5, 5), -2.0)])
def test_scale_map_constant_gives_finite_zeros(flat):
    for signed in (None, True, False):
        out = plots.scale_map(flat, signed=signed)
        assert out.shape == (5, 5) and np.isfinite(out).all() and not out.any()


def test_scale_map_signed_is_symmetric_and_detected():
    m = np.array([[-4.0, -1.0], [1.0, 4.0]])
    out = plots.scale_map(m, percentile=100)
    np.testing.assert_allclose(out, m / 4)  # symmetric: -4 -> -1 and 4 -> 1, 0 stays 0
    np.testing.assert_allclose(plots.scale_map(-m, percentile=100), -out)
    absolute = plots.scale_map(m, signed=False, percentile=100)
    np.testing.assert_allclose(absolute, np.abs(m) / 4)
    positive = plots.scale_map(torch.tensor([[0.0, 1.0], [2.0, 4.0]]), percentile=100)
    assert positive.min() == 0 and positive.max() == 1  # no negatives: absolute, [0, 1]


def test_scale_map_percentile_clips_outliers():
    m = np.ones((20, 20))
    m[0, 0] = 1000.0  # one extreme pixel of 400
    out = plots.scale_map(m, percentile=99)
    assert out[0, 0] == 1.0
    assert np.median(out) > 0.9  # the rest is not squashed to black
    assert plots.scale_map(m, percentile=100)[5, 5] == pytest.approx(0.001)
    sparse = np.zeros((10, 10))
    sparse[3, 3] = 2.0  # the 99th percentile is 0: fall back to the maximum
    assert plots.scale_map(sparse)[3, 3] == 1.0 and plots.scale_map(sparse).sum() == 1.0
    with_nan = np.array([[np.nan, 1.0], [2.0, np.inf]])
    assert np.isfinite(plots.scale_map(with_nan)).all()


# ----------------------------------------------------------------------------- overlay / grid
def test_overlay_colormaps_and_zero_maps_without_warnings():
    image = torch.rand(3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.overlay(image, torch.zeros(8, 8), title="zeros")
        fig.canvas.draw()
    assert len(fig.axes) == 1
    heat = fig.axes[0].get_images()[1]
    assert heat.cmap.name == plots.ABS_CMAP and np.isfinite(heat.get_array()).all()
    fig2, ax = plt.subplots()
    out = plots.overlay(image.numpy(), np.random.default_rng(0).normal(size=(8, 8)), ax=ax, grey=False)
    assert out is fig2
    heat = ax.get_images()[1]
    assert heat.cmap.name == plots.SIGNED_CMAP and heat.norm.vmin == -1 and heat.norm.vmax == 1
    # a coarse map (e.g. Grad-CAM at 2x2) is stretched over the whole image
    fig3 = plots.overlay(image, np.arange(4.0).reshape(2, 2))
    assert fig3.axes[0].get_images()[1].get_extent() == fig3.axes[0].get_images()[0].get_extent()


def test_attribution_grid_layout_and_legends():
    images = torch.rand(3, 3, 8, 8)
    maps = {"gradient": torch.randn(3, 8, 8), "grad-cam": torch.rand(3, 8, 8), "broken": torch.zeros(3, 8, 8)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.attribution_grid(images, maps, titles=["a", "b", "c"])
        fig.canvas.draw()
    # (1 image row + 3 method rows) x 3 images, plus one colour bar per method row
    assert len(fig.axes) == 4 * 3 + 3
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert {"image", "gradient", "grad-cam", "broken"} <= set(labels)
    bars = [ax for ax in fig.axes if not ax.get_images()]  # colour bars, one per method row
    ticks = [[t.get_text() for t in ax.get_yticklabels()] for ax in bars]
    assert len(bars) == 3
    assert ticks[0] == ["against", "0", "for"] and ticks[1] == ["none", "most"]
    assert all(np.isfinite(a).all() for a in _heat_arrays(fig))
    forced = plots.attribution_grid(images[:2], {"g": torch.randn(2, 8, 8)}, signed={"g": False})
    assert len(forced.axes) == 2 * 2 + 1
    bar, = [ax for ax in forced.axes if not ax.get_images()]
    assert bar.get_yticklabels()[-1].get_text() == "most"


# ----------------------------------------------------------------------------- curves, randomisation
def test_curve_plot_mean_and_band():
    fr = np.linspace(0, 1, 5)
    probs = np.array([[1, 0.5, 0.2, 0.1, 0.0], [1, 0.7, 0.4, 0.1, 0.0]])
    result = CurveResult("deletion", "black", fr, probs)
    fig = plots.curve_plot(result, label="gradient")
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), probs.mean(0))
    assert "gradient" in line.get_label() and f"{result.auc.mean():.3f}" in line.get_label()
    assert "deleted" in ax.get_xlabel() and len(ax.collections) == 1  # the band
    fig2, ax2 = plt.subplots()
    plots.curve_plot({"fractions": fr, "probs": probs, "auc": probs.mean(1), "kind": "insertion"}, ax=ax2)
    assert "inserted" in ax2.get_xlabel()
    plots.curve_plot(result, ax=ax2)  # both kinds on one axis: the label says so
    assert "deleted / inserted" in ax2.get_xlabel() and len(ax2.get_lines()) == 2


def test_randomisation_plot_lines_and_zero_line():
    stages = ["original", "fc", "layer4", "conv1"]
    dfs = {"gradient": pd.DataFrame({"stage": stages, "spearman_abs": [1, 0.4, 0.1, 0.0]}),
           "edges": pd.DataFrame({"stage": stages, "spearman_abs": [1.0] * 4})}
    fig = plots.randomisation_plot(dfs)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [l.get_label() for l in lines[:2]] == ["gradient", "edges"]
    zero = [l for l in lines if l.get_linestyle() == "--"]
    assert len(zero) == 1 and np.all(np.asarray(zero[0].get_ydata()) == 0)
    assert [t.get_text() for t in ax.get_xticklabels()] == stages
