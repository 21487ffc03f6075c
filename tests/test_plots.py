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
    out = plots.overlay(
        image.numpy(), np.random.default_rng(0).normal(size=(8, 8)), ax=ax, grey=False
    )
    assert out is fig2
    heat = ax.get_images()[1]
    assert heat.cmap.name == plots.SIGNED_CMAP and heat.norm.vmin == -1 and heat.norm.vmax == 1
    # a coarse map (e.g. Grad-CAM at 2x2) is stretched over the whole image
    fig3 = plots.overlay(image, np.arange(4.0).reshape(2, 2))
    assert fig3.axes[0].get_images()[1].get_extent() == fig3.axes[0].get_images()[0].get_extent()


def test_attribution_grid_layout_and_legends():
    images = torch.rand(3, 3, 8, 8)
    maps = {
        "gradient": torch.randn(3, 8, 8),
        "grad-cam": torch.rand(3, 8, 8),
        "broken": torch.zeros(3, 8, 8),
    }
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
    (bar,) = [ax for ax in forced.axes if not ax.get_images()]
    assert bar.get_yticklabels()[-1].get_text() == "most"


# ------------------------------------------------------------------------- curves, randomisation
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
    plots.curve_plot(
        {"fractions": fr, "probs": probs, "auc": probs.mean(1), "kind": "insertion"}, ax=ax2
    )
    assert "inserted" in ax2.get_xlabel()
    plots.curve_plot(result, ax=ax2)  # both kinds on one axis: the label says so
    assert "deleted / inserted" in ax2.get_xlabel() and len(ax2.get_lines()) == 2


def test_randomisation_plot_lines_and_zero_line():
    stages = ["original", "fc", "layer4", "conv1"]
    dfs = {
        "gradient": pd.DataFrame({"stage": stages, "spearman_abs": [1, 0.4, 0.1, 0.0]}),
        "edges": pd.DataFrame({"stage": stages, "spearman_abs": [1.0] * 4}),
    }
    fig = plots.randomisation_plot(dfs)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines[:2]] == ["gradient", "edges"]
    zero = [line for line in lines if line.get_linestyle() == "--"]
    assert len(zero) == 1 and np.all(np.asarray(zero[0].get_ydata()) == 0)
    assert [t.get_text() for t in ax.get_xticklabels()] == stages


# ----------------------------------------------------------------------------- calibration, trust
def _reliability_inputs():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.4, 1.0, 400)
    probs = np.stack([conf, 1 - conf], 1)
    labels = (rng.random(400) >= conf - 0.2).astype(int)  # over-confident by about 0.2
    return probs, labels


def test_reliability_diagram_bars_are_the_bin_accuracies():
    from helpers import calibration

    probs, labels = _reliability_inputs()
    bins = calibration.reliability_bins(probs, labels, n_bins=10)
    used = bins["count"] > 0
    fig = plots.reliability_diagram(probs, labels, n_bins=10, title="raw")
    ax_d, ax_h = fig.axes
    accuracy, gap = ax_d.containers[:2]
    np.testing.assert_allclose([b.get_height() for b in accuracy], bins["accuracy"][used])
    np.testing.assert_allclose([b.get_x() for b in accuracy], bins["lower"][used])
    # the shaded gap runs from the accuracy to the mean confidence
    np.testing.assert_allclose([b.get_y() + b.get_height() for b in gap], bins["confidence"][used])
    ece = calibration.expected_calibration_error(probs, labels, n_bins=10)
    assert ax_d.get_title() == f"raw: ECE {ece:.3f}"
    diagonal = [line for line in ax_d.get_lines() if line.get_linestyle() == "--"]
    assert len(diagonal) == 1 and list(diagonal[0].get_xdata()) == [0, 1] == list(
        diagonal[0].get_ydata()
    )
    np.testing.assert_allclose([b.get_height() for b in ax_h.containers[0]], bins["share"])
    # one Axes: the histogram becomes a line on a twin axis; nothing is saved
    fig2, ax = plt.subplots()
    assert plots.reliability_diagram(probs, labels, ax=ax) is fig2 and len(fig2.axes) == 2


def test_reliability_comparison_side_by_side():
    from helpers import calibration

    probs, labels = _reliability_inputs()
    fit = calibration.fit_temperature(probs, labels, kind="probs")
    fig = plots.reliability_comparison({"before": probs, "after T": fit.apply(probs)}, labels)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert (
        len(fig.axes) == 4
        and titles[0].startswith("before: ECE")
        and titles[1].startswith("after T: ECE")
    )
    before, after = (float(t.rsplit(" ", 1)[1]) for t in titles)
    assert after < before


def test_trust_heatmap_shows_components_by_rank():
    table = pd.DataFrame(
        {
            "component_accuracy": [0.9, 0.5, np.nan],
            "component_robustness": [1.0, 0.2, 0.7],
            "trust_score": [0.95, 0.3, np.nan],
            "rank": [1, 2, 3],
        },
        index=["sea", "forest", "street"],
    )
    table = table.iloc[[2, 0, 1]]  # not in rank order
    fig = plots.trust_heatmap(table)
    ax = fig.axes[0]
    data = ax.get_images()[0].get_array()
    np.testing.assert_allclose(data.filled(np.nan)[:2], [[0.9, 1.0, 0.95], [0.5, 0.2, 0.3]])
    assert data.mask[2, 0] and data.mask[2, 2]  # missing stays visible as missing
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1. sea", "2. forest", "3. street"]
    assert sum(t.get_text() == "not defined" for t in ax.texts) == 2
    with pytest.raises(ValueError, match="trust.score"):
        plots.trust_heatmap(table.drop(columns="trust_score"))


# ----------------------------------------------------------------------------- adversarial figures
def _fragility_frame():
    import pandas as pd

    rows = []
    for region, scale in (("whole", 1.0), ("object", 2.0), ("background", 4.0)):
        for i in range(12):
            label = i % 3
            flipped = not (region == "background" and label == 2)
            rows.append(
                {
                    "image": i,
                    "region": region,
                    "label": label,
                    "already_wrong": i == 0,
                    "flipped": flipped,
                    "epsilon": scale * 0.01 * (1 + i) if flipped else np.nan,
                    "confidence_before": 0.5 + 0.04 * i,
                    "flip_class": (label + 1) % 3,
                    "pixels": 100,
                    "l2_norm": scale * (1 + i) if flipped else np.nan,
                }
            )
    df = pd.DataFrame(rows)
    df.attrs["max_eps"] = 0.5
    return df


def test_adversarial_figures_draw_from_the_attack_tables():
    import pandas as pd

    from helpers import attacks

    df = _fragility_frame()
    classes = ["a", "b", "c"]
    sweep = pd.DataFrame({"epsilon": [0, 0.01, 0.02], "accuracy": [1.0, 0.5, 0.1], "n": 10})
    fig = plots.robust_accuracy_curves({"FGSM": sweep})
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [1.0, 0.5, 0.1])
    fig = plots.minimal_epsilon_by_class(df, classes, region="background")
    ax = fig.axes[0]
    # class c never flips in the background: its dots sit above max_eps, and it has no median bar
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert (offsets[:, 1] > 0.5).sum() == 4
    assert len([ln for ln in ax.lines if ln.get_linewidth() == 2]) == 2
    fig = plots.minimal_epsilon_by_class(df, classes, region="whole", log=True)
    low, high = fig.axes[0].get_ylim()
    shown = df[(df["region"] == "whole") & ~df["already_wrong"]]
    assert fig.axes[0].get_yscale() == "log" and 0 < low < shown["epsilon"].min() and high > 0.5
    per_class = attacks.per_class_fragility(df, classes)
    fig = plots.region_fragility(per_class, ["whole", "object", "background"])
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == 1  # class c, background: infinite median
    fig = plots.confidence_vs_epsilon(df[df["region"] == "whole"], classes)
    assert len(fig.axes[0].collections) == 3
    x = torch.rand(2, 3, 8, 8)
    fig = plots.adversarial_examples(x, (x + 0.01).clamp(0, 1), ["a", "b"], ["c", "d"])
    assert len(fig.axes) == 6


# ----------------------------------------------------------------------------- perceptual hashes
def test_hamming_curve_ends_each_line_at_its_step():
    d = np.array([[40, 20, 5, 0, 0, 0], [45, 30, 12, 6, 3, 2]])
    fig = plots.hamming_curve(d, steps=[3, 5], labels=["a", "b"], bits=96)
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_label() in ("a", "b")]
    np.testing.assert_array_equal(lines[0].get_ydata(), [40, 20, 5, 0])
    np.testing.assert_array_equal(lines[1].get_ydata(), d[1])
    markers = [
        line.get_marker() for line in ax.get_lines() if line.get_marker() not in ("None", None, "")
    ]
    assert markers == ["o", "x"]  # reached (distance 0) vs not
    chance = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(chance) == 1 and np.all(np.asarray(chance[0].get_ydata()) == 48)
    plots.hamming_curve(torch.tensor([10, 3, 0]))  # one curve, no steps: the whole row
    with pytest.raises(ValueError, match="2 distance curves"):
        plots.hamming_curve(d, steps=[3])


def test_hash_robustness_bars_share_of_bits():
    df = pd.DataFrame(
        {"neural": [3.0, 48.0], "pHash": [0.0, 32.0]},
        index=pd.Index(["JPEG 90", "unrelated photos"], name="transformation"),
    )
    df.attrs["bits"] = {"neural": 96, "pHash": 64}
    fig = plots.hash_robustness_bars(df)
    ax = fig.axes[0]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert widths == sorted([3 / 96, 0.5, 0.0, 0.5])
    assert sum(bool(p.get_hatch()) for p in ax.patches) == 2  # the reference row
    assert [t.get_text() for t in ax.get_yticklabels()] == ["JPEG 90", "unrelated photos"]
    with pytest.raises(ValueError, match="no bit count"):
        plots.hash_robustness_bars(df, bits={"neural": 96})


def test_save_figure_writes_the_png_and_stays_under_budget(isolated_cache):
    fig, ax = plots.subplots(figsize=(8, 8))
    ax.imshow(np.random.default_rng(0).random((256, 256, 3)))  # noise: the worst case for PNG
    raw = plots.png_bytes(fig, dpi=100, max_kb=None)
    assert len(raw) > 300 * 1024
    path = plots.save_figure(fig, "99_noise", max_kb=150)
    assert path == isolated_cache / "figures" / "99_noise.png"
    assert 0 < path.stat().st_size <= 150 * 1024
    assert not list(path.parent.glob(".*.tmp"))
    from PIL import Image

    with Image.open(path) as image:
        assert image.width > 200  # still a picture, not a thumbnail


def test_save_figure_small_figure_untouched(isolated_cache):
    fig, ax = plots.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    path = plots.save_figure(fig, "99_line")
    from PIL import Image

    with Image.open(path) as image:  # under budget: full colour, drawn at dpi 100
        assert image.mode in ("RGB", "RGBA") and image.width >= 250


def test_save_figure_shows_the_same_png_in_a_notebook(isolated_cache, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    fig, ax = plots.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    assert not plots._in_notebook()  # pytest is no kernel: nothing shown by default
    plots.save_figure(fig, "99_quiet")
    assert shown == []
    path = plots.save_figure(fig, "99_shown", show=True)
    assert len(shown) == 1 and shown[0].data == path.read_bytes()
    assert (
        fig.number not in plt.get_fignums()
    )  # closed, so the inline backend does not draw it twice
