"""The trust figures: heat table with intervals, per-class component plot with error bars."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import plots  # noqa: E402


def _table():
    t = pd.DataFrame(
        {
            "component_accuracy": [0.9, 0.5, np.nan],
            "component_robustness": [1.0, 0.2, 0.7],
            "trust_score": [0.95, 0.3, np.nan],
            "rank": [1, 2, 3],
            "n_test": [50, 40, 30],
            "n_attacked": [8, 7, 6],
        },
        index=["sea", "forest", "street"],
    )
    for c, half in (
        ("component_accuracy", 0.1),
        ("component_robustness", 0.2),
        ("trust_score", 0.15),
    ):
        t[f"{c}_ci_low"], t[f"{c}_ci_high"] = (t[c] - half).clip(0, 1), (t[c] + half).clip(0, 1)
    return t.iloc[[2, 0, 1]]


def test_heatmap_ignores_interval_columns_and_writes_them_in_the_cells():
    fig = plots.trust_heatmap(_table())
    ax = fig.axes[0]
    data = ax.get_images()[0].get_array()
    assert data.shape == (3, 3)  # two components and the score, no CI columns
    np.testing.assert_allclose(data.filled(np.nan)[:2], [[0.9, 1.0, 0.95], [0.5, 0.2, 0.3]])
    texts = [t.get_text() for t in ax.texts]
    assert "0.90\n0.80-1.00" in texts and "0.20\n0.00-0.40" in texts
    plt.close(fig)


def test_component_plot_draws_one_bar_per_defined_value():
    fig = plots.trust_components(_table())
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["accuracy", "robustness", "trust score"]
    acc = panels[0]
    bars = [c for c in acc.collections]  # errorbar's LineCollection
    segments = bars[0].get_segments()
    assert len(segments) == 2  # street's accuracy is not defined
    np.testing.assert_allclose(sorted(s[:, 0].tolist() for s in segments), [[0.4, 0.6], [0.8, 1.0]])
    texts = [t.get_text() for t in acc.texts]
    assert "not defined" in texts and "n=50" in texts and "n=40" in texts
    assert [t.get_text() for t in acc.get_yticklabels()] == ["sea", "forest", "street"]  # by rank
    with pytest.raises(ValueError, match="trust.score"):
        plots.trust_components(_table().drop(columns="trust_score_ci_low"))
    plt.close(fig)


def test_component_plot_accepts_an_estimate_outside_its_interval():
    """A percentile bootstrap of an upward-biased statistic (the ECE) can lie wholly above the
    estimate: the bar runs from the low end to the high end, none is drawn below the dot."""
    t = _table()
    t.loc["sea", ["component_accuracy_ci_low", "component_accuracy_ci_high"]] = [0.92, 0.97]
    fig = plots.trust_components(t)
    segments = [ax for ax in fig.axes if ax.get_visible()][0].collections[0].get_segments()
    ends = sorted(s[:, 0].tolist() for s in segments)
    np.testing.assert_allclose(ends, [[0.4, 0.6], [0.9, 0.97]])
    plt.close(fig)
