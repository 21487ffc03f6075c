from types import SimpleNamespace

import numpy as np
import pytest

from helpers import evolution

# 4 epochs x 5 images, true labels [0, 1, 2, 0, 1], worked out by hand below.
PREDS = np.array(
    [
        [0, 0, 2, 1, 2],
        [0, 1, 2, 0, 2],
        [0, 1, 1, 0, 2],
        [0, 1, 2, 2, 0],
    ]
)
LABELS = np.array([0, 1, 2, 0, 1])


def test_image_stats_match_a_hand_count():
    s = evolution.image_stats(PREDS, LABELS, classes=["a", "b", "c"], late_fraction=0.5)
    assert s["changes"].tolist() == [0, 1, 2, 2, 1]
    assert s["classes_visited"].tolist() == [1, 2, 2, 3, 2]
    assert np.allclose(s["misclassification_rate"], [0, 0.25, 0.25, 0.5, 1.0])
    # image 2 is correct at epochs 0,1 then wrong at 2 (one forgetting event), correct again at 3
    assert s["forgetting_events"].tolist() == [0, 0, 1, 1, 0]
    assert s["learned_epoch"].tolist() == [0, 1, 3, -1, -1]
    assert s["category"].tolist() == [
        "learned early",
        "learned early",
        "forgotten",
        "never learned",
        "never learned",
    ]
    assert s["label_name"].tolist() == ["a", "b", "c", "a", "b"]
    assert np.allclose(s["change_frequency"], np.array([0, 1, 2, 2, 1]) / 3)


def test_learned_late_needs_the_second_half():
    preds = np.array([[1, 1], [1, 1], [1, 0], [0, 0]])  # image 0 learned at epoch 3 of 4
    s = evolution.image_stats(preds, np.array([0, 0]))
    assert s["category"].tolist() == ["learned late", "learned late"]
    assert s["learned_epoch"].tolist() == [3, 2]


def test_confusion_and_top_confusions():
    cm = evolution.confusion_matrix(LABELS, PREDS[-1], 3)
    assert cm.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert cm.sum() == len(LABELS)
    top = evolution.top_confusions(cm, ["a", "b", "c"], k=5)
    assert len(top) == 2 and top["count"].sum() == 2 and np.isclose(top["share_of_errors"].sum(), 1)
    per_epoch = evolution.confusion_per_epoch(PREDS, LABELS, 3)
    assert per_epoch.shape == (4, 3, 3) and (per_epoch.sum((1, 2)) == 5).all()


def test_flow_order_groups_by_class_hardest_first():
    s = evolution.image_stats(PREDS, LABELS)
    order = evolution.flow_order(s)
    assert sorted(order) == list(range(5))
    assert LABELS[order].tolist() == sorted(LABELS)
    assert order[:2].tolist() == [3, 0]  # class 0: never-learned image first


def test_class_summary_shares_add_up():
    s = evolution.image_stats(PREDS, LABELS)
    summary = evolution.class_summary(s, ["a", "b", "c"])
    shares = summary[list(evolution.CATEGORIES)].sum(axis=1)
    assert np.allclose(shares, 1)
    assert summary.loc["a", "final_accuracy"] == 0.5


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="epochs, images"):
        evolution.image_stats(PREDS[:, :3], LABELS)


def test_share_within_pairs_counts_both_directions():
    cm = np.array([[5, 2, 0], [1, 5, 0], [3, 0, 5]])  # errors: a->b 2, b->a 1, c->a 3
    assert np.isclose(evolution.share_within_pairs(cm, ["a", "b", "c"], [("a", "b")]), 3 / 6)
    assert evolution.share_within_pairs(np.eye(3, dtype=int), ["a", "b", "c"], [("a", "b")]) == 0


def test_hard_images_picks_only_hard_categories():
    s = evolution.image_stats(PREDS, LABELS)
    hard = evolution.hard_images(s, per_category=8)
    assert set(hard["category"]) <= {"learned late", "forgotten", "never learned"}
    assert sorted(hard.index) == [2, 3, 4]


# ----------------------------------------------------------------------------- the audited epoch
def test_statistics_stop_at_the_audited_epoch():
    # 4 epochs, the kept weights are epoch index 1. Image 0 is right up to it and wrong after:
    # the audited model gets it right, so it is "learned early", not "never learned".
    # Image 1 is wrong up to it and right after: the audited model gets it wrong.
    preds = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
    labels = np.array([0, 1])
    history = SimpleNamespace(test_preds=preds, test_labels=labels, best_epoch=1)
    assert evolution.audited_epoch(history) == 1
    np.testing.assert_array_equal(evolution.audited(history), preds[:2])
    s = evolution.image_stats(preds, labels, upto=history.best_epoch)
    assert s["category"].tolist() == ["learned early", "never learned"]
    assert s["correct_at_end"].tolist() == [True, False]
    assert s["final_pred"].tolist() == [0, 0]
    assert s["forgetting_events"].tolist() == [0, 0]  # the forgetting at epoch 2 is after the audit
    assert evolution.image_stats(evolution.audited(history), labels).equals(s)
    assert evolution.confusion_per_epoch(preds, labels, 2, upto=1).shape == (2, 2, 2)
    # without a named best epoch the last one is audited
    assert evolution.audited_epoch(SimpleNamespace(test_preds=preds, best_epoch=-1)) == 3
    with pytest.raises(ValueError, match="upto"):
        evolution.image_stats(preds, labels, upto=4)


def test_categories_are_exclusive_and_never_learned_means_wrong_at_the_audited_epoch():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 3, size=(7, 400))
    labels = rng.integers(0, 3, size=400)
    for upto in (0, 3, 6):
        s = evolution.image_stats(preds, labels, upto=upto)
        assert set(s["category"]) <= set(evolution.CATEGORIES)
        wrong = preds[upto] != labels
        np.testing.assert_array_equal(s["category"] == "never learned", wrong)
        if (
            upto > 0
        ):  # some were right at an earlier epoch: still "never learned", not also "forgotten"
            assert (s["ever_correct"] & (s["category"] == "never learned")).any()
        right = s[~wrong]
        np.testing.assert_array_equal(
            right["category"] == "forgotten", right["forgetting_events"] > 0
        )
        summary = evolution.class_summary(s, ["a", "b", "c"])
        np.testing.assert_allclose(summary[list(evolution.CATEGORIES)].sum(axis=1), 1)


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_class_summary_gives_shares_with_wilson_intervals_and_n():
    s = evolution.image_stats(PREDS, LABELS)
    summary = evolution.class_summary(s, ["a", "b", "c"])
    assert summary["images"].tolist() == [2, 2, 1]
    # class b: image 1 learned early, image 4 never learned -> 1 of 2 each
    low, high = _wilson_by_hand(1, 2)
    assert summary.loc["b", "never learned"] == 0.5
    assert summary.loc["b", "never learned low"] == pytest.approx(low)
    assert summary.loc["b", "never learned high"] == pytest.approx(high)
    # 0 of 2 learned late: the interval starts at 0 and is not degenerate
    assert summary.loc["b", "learned late low"] == 0 and summary.loc["b", "learned late high"] > 0.5
    for category in evolution.CATEGORIES:
        assert (summary[f"{category} low"] <= summary[category]).all()
        assert (summary[category] <= summary[f"{category} high"]).all()
    # a class without images: NaN shares, n = 0
    empty = evolution.class_summary(s, ["a", "b", "c", "d"])
    assert empty.loc["d", "images"] == 0 and np.isnan(empty.loc["d", "never learned high"])


def test_plots_of_notebook_03_stop_at_the_audited_epoch_and_show_intervals():
    import matplotlib

    matplotlib.use("Agg")
    from helpers import plots

    history = SimpleNamespace(
        test_preds=PREDS,
        test_labels=LABELS,
        best_epoch=1,
        train_acc=np.linspace(0.5, 1, 4),
        val_acc=np.linspace(0.5, 1, 4),
        test_acc=np.linspace(0.5, 1, 4),
        train_loss=np.linspace(1, 0.1, 4),
        val_loss=np.linspace(1, 0.1, 4),
    )
    stats = evolution.image_stats(PREDS, LABELS, upto=1)
    fig = plots.instance_flow(
        history, stats, evolution.flow_order(stats), classes=["a", "b", "c"], upto=1
    )
    heat = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (5, 2)]
    assert heat, "the images x epochs panel shows the two audited epochs"
    summary = evolution.class_summary(stats, ["a", "b", "c"])
    fig = plots.category_bars(summary)
    assert len(fig.axes) == len(evolution.CATEGORIES)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "a (n=2)",
        "b (n=2)",
        "c (n=1)",
    ]
    plots.plt.close("all")
