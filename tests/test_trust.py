import base64
import html
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import calibration, quality, report, stats, trust  # noqa: E402

CLASSES = ["forest", "sea", "street"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- the sources
# Six test images (the hand example of test_calibration): labels forest, sea, sea, street,
# street, forest.
P = np.array(
    [
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.1, 0.7, 0.2],
        [0.4, 0.35, 0.25],
        [0.2, 0.2, 0.6],
        [1.0, 0.0, 0.0],
    ]
)
Y = np.array([0, 1, 1, 2, 2, 0])


def test_predictions_source_matches_a_hand_count():
    src = trust.per_class_from_predictions(Y, P, CLASSES, n_bins=5)
    assert list(src.index) == CLASSES and src.index.name == "class"
    assert src["n_test"].tolist() == [2, 2, 2]
    np.testing.assert_allclose(
        src["accuracy"], [1, 0.5, 0.5]
    )  # forest both right; sea, street one each
    assert src["n_predicted"].tolist() == [4, 1, 1]
    np.testing.assert_allclose(src["precision"], [0.5, 1, 1])
    np.testing.assert_allclose(src["mean_confidence"], [(0.9 + 0.8 + 0.4 + 1) / 4, 0.7, 0.6])
    np.testing.assert_allclose(
        src["calibration_error"], [0.325, 0.3, 0.4]
    )  # hand-computed in test_calibration
    # the per-class error is at least the gap between mean confidence and precision
    assert (
        src["calibration_error"] >= (src["mean_confidence"] - src["precision"]).abs() - 1e-12
    ).all()
    # intervals: Wilson for the shares (sea: 1 of 2 right -> symmetric about 0.5), bootstrap
    # otherwise
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 2 + z * z / 16) / (1 + z * z / 2)
    assert src.loc["sea", "accuracy_ci_low"] == pytest.approx(0.5 - half)
    assert src.loc["sea", "accuracy_ci_high"] == pytest.approx(0.5 + half)
    assert src.loc["forest", "accuracy_ci_high"] == 1.0 and src.loc["forest", "accuracy_ci_low"] < 1
    for col in ("accuracy", "precision", "mean_confidence", "calibration_error"):
        assert (src[f"{col}_ci_low"] <= src[col] + 1e-12).all() and (
            src[col] <= src[f"{col}_ci_high"] + 1e-12
        ).all()
    # one image predicted as sea: the bootstrap sees no spread
    assert (
        src.loc["sea", "mean_confidence_ci_low"] == src.loc["sea", "mean_confidence_ci_high"] == 0.7
    )
    assert ((src["calibration_p_value"] > 0) & (src["calibration_p_value"] <= 1)).all()


def test_predictions_source_after_temperature_scaling():
    sharp = calibration.apply_temperature(P, 0.5, kind="probs")
    src = trust.per_class_from_predictions(Y, P, CLASSES, calibrated_probs=sharp, n_bins=5)
    np.testing.assert_allclose(
        src["calibration_error_ts"], calibration.per_class_calibration_error(sharp, Y, n_bins=5)
    )
    assert (src["mean_confidence_ts"] > src["mean_confidence"]).all()  # T < 1 sharpens
    with pytest.raises(ValueError, match="arg-max"):
        trust.per_class_from_predictions(Y, P, CLASSES, calibrated_probs=P[:, ::-1])
    with pytest.raises(ValueError, match="3 columns for 2 classes"):
        trust.per_class_from_predictions(Y, P, CLASSES[:2])


# 4 epochs x 5 images (the hand example of test_evolution): categories
# [learned early, learned early, forgotten, never learned, never learned]
PREDS = np.array([[0, 0, 2, 1, 2], [0, 1, 2, 0, 2], [0, 1, 1, 0, 2], [0, 1, 2, 2, 0]])
LABELS = np.array([0, 1, 2, 0, 1])


class _History:
    test_preds = PREDS
    test_labels = LABELS
    classes = CLASSES


def test_history_source_shares():
    src = trust.per_class_from_history(_History(), LABELS, CLASSES)
    np.testing.assert_allclose(src["share_learned_early"], [0.5, 0.5, 0])
    np.testing.assert_allclose(src["share_never_learned"], [0.5, 0.5, 0])
    np.testing.assert_allclose(src["share_forgotten"], [0, 0, 1])
    np.testing.assert_allclose(src["share_learned_late"], [0, 0, 0])
    shares = [c for c in src.columns if c.startswith("share_") and not trust.is_ci(c)]
    np.testing.assert_allclose(src[shares].sum(axis=1), 1)
    assert src["n_history"].tolist() == [2, 2, 1] and (src["history_epochs"] == 4).all()
    assert src.loc["street", "share_forgotten_ci_low"] == pytest.approx(
        1 / (1 + 1.959963984540054**2)
    )  # Wilson 1/1
    pd.testing.assert_frame_equal(trust.per_class_from_history(PREDS, LABELS, CLASSES), src)
    pd.testing.assert_frame_equal(
        trust.per_class_from_history(_History()), src
    )  # labels, classes from it
    with pytest.raises(ValueError, match="another test set"):
        trust.per_class_from_history(_History(), LABELS[::-1], CLASSES)


def test_history_stops_at_the_audited_epoch():
    class Best(_History):
        best_epoch = 1  # the checkpoint kept is the one after epoch 2 (index 1)

    src = trust.per_class_from_history(Best())
    # epochs 0-1 only: image 0 (forest) right at both -> early; image 3 (forest) wrong then right ->
    # learned late (second half of 2 epochs), although it is wrong at the last recorded epoch;
    # image 1 (sea) wrong then right -> late; image 4 (sea) wrong at both -> never;
    # image 2 (street) early
    np.testing.assert_allclose(src["share_learned_early"], [0.5, 0, 1])
    np.testing.assert_allclose(src["share_learned_late"], [0.5, 0.5, 0])
    np.testing.assert_allclose(src["share_never_learned"], [0, 0.5, 0])
    assert (src["history_epochs"] == 2).all()
    everything = trust.per_class_from_history(Best(), upto=None)
    np.testing.assert_allclose(everything["share_forgotten"], [0, 0, 1])


def test_a_class_never_learned_is_not_stable():
    """A class wrong at every epoch: S = share learned early = 0, never "learned early and
    stably"."""
    preds = np.zeros((5, 6), dtype=int)  # always answers class 0
    labels = np.array([0, 0, 0, 1, 1, 1])
    src = trust.per_class_from_history(preds, labels, ["a", "b"])
    assert src.loc["b", "share_never_learned"] == 1 and src.loc["b", "share_learned_early"] == 0
    table = trust.build_table({"h": src})
    scored = trust.score(
        table, weights={"accuracy": 0, "calibration": 0, "robustness": 0, "localisation": 0}
    )
    assert (
        scored.loc["b", "component_stability"] == 0 and scored.loc["a", "component_stability"] == 1
    )
    words = trust.verdicts(scored)
    assert "learned early and stably" not in words["b"] and "unstable in training" in words["b"]


def _fragility_frame():
    """What attacks.fragility_by_region returns, by hand: 6 images x 3 regions.
    image 2 (sea) is misclassified already and does not count."""
    nan = np.nan
    eps = {  # image: (label, whole, object, background); NaN = never flipped
        0: (0, 0.02, 0.03, 0.06),
        1: (0, 0.04, 0.05, nan),
        2: (1, 0, 0, 0),
        3: (1, 0.01, 0.02, 0.01),
        4: (2, nan, nan, nan),
        5: (2, 0.08, nan, 0.09),
    }
    rows = []
    for k, region in enumerate(("whole", "object", "background")):
        for image, (label, *e) in eps.items():
            rows.append(
                {
                    "image": image,
                    "region": region,
                    "label": label,
                    "epsilon": e[k],
                    "flipped": not math.isnan(e[k]) and image != 2,
                    "already_wrong": image == 2,
                    "l2_norm": e[k] * 10,
                }
            )
    frame = pd.DataFrame(rows)
    frame.attrs["max_eps"] = 0.1
    return frame


def test_fragility_source_medians_by_hand():
    src = trust.per_class_from_fragility(_fragility_frame(), CLASSES)
    assert src["n_attacked"].tolist() == [2, 1, 2]
    np.testing.assert_allclose(
        src["median_eps_whole"], [0.03, 0.01, np.inf]
    )  # never flipped counts as inf
    np.testing.assert_allclose(src["median_eps_object"], [0.04, 0.02, np.inf])
    np.testing.assert_allclose(src["median_eps_background"], [np.inf, 0.01, np.inf])
    # median of per-image ratios eps(object)/eps(background):
    # forest .03/.06 = .5 and .05/inf = 0 -> .25; sea .02/.01 = 2;
    # street: image 4 inf/inf is not defined, image 5 inf/.09 = inf
    np.testing.assert_allclose(src["object_background_ratio"], [0.25, 2, np.inf])
    assert src["n_object_background"].tolist() == [2, 1, 1]
    # sign test: 1 of 1 image above 1 -> two-sided p = 1; 2 images both below 1 -> p = 0.5
    np.testing.assert_allclose(src["object_background_p_value"], [0.5, 1, 1])
    np.testing.assert_allclose(src["share_not_flipped_whole"], [0, 0, 0.5])
    assert (src["attack_max_eps"] == 0.1).all() and src.attrs["model_level"] == ["attack_max_eps"]
    assert src.loc["street", "median_eps_whole_ci_high"] == np.inf
    np.testing.assert_array_equal(src.attrs["samples"]["eps_whole"]["forest"], [0.02, 0.04])
    # the per-class summary has no per-image epsilons: refused with a clear message
    from helpers.attacks import per_class_fragility

    with pytest.raises(ValueError, match="long DataFrame"):
        trust.per_class_from_fragility(
            per_class_fragility(_fragility_frame(), CLASSES), CLASSES, max_eps=0.1
        )


def test_fragility_source_says_why_when_a_class_has_no_region_image_it_gets_right():
    """A weak model: the class's whole-image sample holds images it gets right, but its region
    sample (the first images of each class) only ones it gets wrong. The region medians are
    "not defined" with that reason, not missing (build_table raises on a missing value)."""
    frame = _fragility_frame()
    extra = [
        {
            "image": 6,
            "region": "whole",
            "label": 1,
            "epsilon": 0.05,
            "flipped": True,
            "already_wrong": False,
            "l2_norm": 0.5,
        }
    ]
    frame = pd.concat(
        [frame[~((frame["label"] == 1) & (frame["region"] == "whole"))], pd.DataFrame(extra)],
        ignore_index=True,
    )
    frame.loc[(frame["label"] == 1) & (frame["region"] != "whole"), "already_wrong"] = True
    frame.attrs["max_eps"] = 0.1
    src = trust.per_class_from_fragility(frame, CLASSES)
    assert src.loc["sea", "n_attacked"] == 1 and np.isnan(src.loc["sea", "median_eps_object"])
    why = trust.undefined(src)
    assert "the model gets right" in why[("sea", "median_eps_object")]
    assert "both regions" in why[("sea", "object_background_ratio")]
    trust.build_table({"attacks": src})  # no missing value


def _localisation_inputs():
    maps = np.zeros((3, 2, 2))
    masks = np.zeros((3, 2, 2), bool)
    maps[0, 0, 0], masks[0, 0, 0] = 1, True  # forest: hit, mass 1, mask share .25
    maps[1, 1, 1], masks[1, 0, :] = 2, True  # forest: miss, mass 0, share .5
    maps[2], masks[2, 0, 0] = 1, True  # sea: constant map: miss, mass .25, share .25
    return maps, masks, np.array([0, 0, 1])


def test_localisation_source_by_hand():
    maps, masks, labels = _localisation_inputs()
    src = trust.per_class_localisation(maps, masks, labels, CLASSES)
    assert src["n_explained"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(src["pointing_game"][:2], [0.5, 0])
    np.testing.assert_allclose(src["relevance_mass"][:2], [0.5, 0.25])
    np.testing.assert_allclose(src["mask_share"][:2], [0.375, 0.25])
    np.testing.assert_allclose(
        src["area_50"][:2],
        [
            quality.compactness(maps[:2])["area_50"].mean(),
            quality.compactness(maps[2:])["area_50"].mean(),
        ],
    )
    assert src.loc["street"].drop("n_explained").isna().all()  # no street image explained
    np.testing.assert_allclose(
        src.attrs["samples"]["localisation"]["forest"], [[1, 0.25], [0, 0.5]]
    )


# ----------------------------------------------------------------------------- the table
def _sanity(*stages, repeat=4):
    """A sanity-check frame with per-image correlations, one list per randomised stage (each
    list repeated ``repeat`` times: 16 images, enough for the gate to decide)."""
    stages = [list(v) * repeat for v in stages]
    n = len(stages[0])
    rows = [
        {
            "method": "gradcam",
            "stage": "original",
            "spearman_abs": 1.0,
            "per_image": (1.0,) * n,
            "per_image_undefined": (False,) * n,
        }
    ]
    rows += [
        {
            "method": "gradcam",
            "stage": f"stage {k}",
            "spearman_abs": float(np.mean(v)),
            "per_image": tuple(v),
            "per_image_undefined": (False,) * n,
        }
        for k, v in enumerate(stages)
    ]
    return pd.DataFrame(rows)


def test_sanity_source_gate():
    src = trust.from_sanity_check(
        _sanity([0.3, 0.25, 0.35, 0.3], [0.1, 0.05, 0.15, 0.1]), "gradcam", CLASSES
    )
    np.testing.assert_allclose(src["sanity_correlation"], 0.2)
    assert (src["n_sanity"] == 16).all()
    assert (src["sanity_gate"] == "pass").all() and (src["sanity_correlation_ci_high"] < 0.5).all()
    assert "sanity_gate" in src.attrs["model_level"]
    fail = trust.from_sanity_check(_sanity([0.9, 0.8, 0.95, 0.85]), "gradcam", CLASSES)
    assert (fail["sanity_gate"] == "fail").all()
    straddles = trust.from_sanity_check(_sanity([0.1, 0.9, 0.2, 0.8]), "gradcam", CLASSES)
    assert (straddles["sanity_gate"] == "undecided").all()
    few = trust.build_table(
        {"s": trust.from_sanity_check(_sanity([0.1, 0.05, 0.15], repeat=1), "gradcam", CLASSES)}
    )
    assert few.attrs["model_level"]["sanity_gate"] == "undecided"
    assert "too few images checked" in trust.sanity_clause(few)


def _sources():
    maps, masks, labels = _localisation_inputs()
    sanity = _sanity([0.3, 0.25, 0.35, 0.3], [0.1, 0.05, 0.15, 0.1])
    return {
        "predictions": trust.per_class_from_predictions(Y, P, CLASSES, n_bins=5),
        "training": trust.per_class_from_history(_History()),
        "attacks": trust.per_class_from_fragility(_fragility_frame(), CLASSES),
        "explanations": trust.per_class_localisation(maps, masks, labels, CLASSES),
        "sanity check": trust.from_sanity_check(sanity, "gradcam", CLASSES),
    }


def _table(**kw):
    kw.setdefault(
        "allow_missing",
        [
            "object_background_ratio",
            "pointing_game",
            "relevance_mass",
            "mask_share",
            "area_50",
            "gini",
        ],
    )
    return trust.build_table(_sources(), **kw)


def test_every_number_traces_to_its_source():
    sources = _sources()
    sources["training"] = sources["training"].iloc[::-1]  # row order does not matter, names do
    table = trust.build_table(sources, allow_missing=True)
    prov = trust.provenance(table)
    assert list(table.index) == CLASSES and set(prov) == set(table.columns)
    assert set(prov.values()) == set(sources)
    for column, source in prov.items():
        pd.testing.assert_series_equal(
            table[column], sources[source][column].loc[CLASSES], check_names=False
        )
    assert table.attrs["model_level"]["attack_max_eps"] == 0.1
    assert table.attrs["model_level"]["sanity_correlation"] == pytest.approx(0.2)
    assert (
        table.attrs["model_level"]["sanity_gate"] == "pass"
        and table.attrs["model_level"]["n_sanity"] == 16
    )
    # no street image was explained: its localisation is not defined (with the reason), not missing
    assert trust.undefined(table)[("street", "relevance_mass")] == trust.NONE_EXPLAINED
    assert table.attrs["missing"] == []
    # the scored table keeps it, and names the derived columns
    scored = trust.score(table, weights={"localisation": 0})
    prov = trust.provenance(scored)
    assert (
        prov["accuracy"] == "predictions"
        and prov["trust_score"] == prov["component_accuracy"] == "trust score"
    )


def test_missing_class_or_value_raises():
    sources = _sources()
    with pytest.raises(ValueError, match=r"source 'attacks' has no row for class\(es\) \['sea'\]"):
        trust.build_table(
            {**sources, "attacks": sources["attacks"].drop("sea")}, allow_missing=True
        )
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['desert'\]"):
        extra = pd.concat(
            [sources["training"], sources["training"].iloc[:1].rename(index={"forest": "desert"})]
        )
        trust.build_table({**sources, "training": extra}, allow_missing=True)
    with pytest.raises(ValueError, match="several rows"):
        trust.build_table(
            {**sources, "training": pd.concat([sources["training"]] * 2)}, allow_missing=True
        )
    with pytest.raises(ValueError, match="column 'accuracy' comes from both"):
        trust.build_table(
            {**sources, "again": sources["predictions"][["accuracy"]]}, allow_missing=True
        )
    # values the sources explain (not defined) do not raise; a NaN no source explains names the
    # column, the class and the source
    assert (
        trust.undefined(trust.build_table(sources))[("street", "relevance_mass")]
        == trust.NONE_EXPLAINED
    )
    broken = sources["training"].copy()
    broken.loc["street", "share_forgotten"] = np.nan
    with pytest.raises(ValueError, match=r"share_forgotten of 'street' \(source 'training'\)"):
        trust.build_table({**sources, "training": broken})
    shown = trust.build_table({**sources, "training": broken}, allow_missing=["share_forgotten"])
    assert shown.attrs["missing"] == [("street", "share_forgotten")]
    with pytest.raises(ValueError, match="unknown column"):
        trust.build_table(sources, allow_missing=["no_such_column"])
    with pytest.raises(ValueError, match="DataFrame"):
        trust.build_table({"x": [1, 2]})
    with pytest.raises(ValueError, match="class"):
        trust.build_table({"a": sources["training"]}, classes=["forest", "sea"])
    with pytest.raises(ValueError, match="no provenance"):
        trust.provenance(pd.DataFrame({"a": [1]}))


# ----------------------------------------------------------------------------- the score
def test_trust_score_follows_its_formula():
    table = trust.score(_table(), budget=0.015)
    # R = share of attacked images with a minimal epsilon above .015: forest [.02, .04] -> 1,
    # sea [.01] -> 0, street [never, .08] -> 1 (absolute: no reference to the other classes)
    np.testing.assert_allclose(table["component_robustness"], [1, 0, 1])
    np.testing.assert_allclose(table["component_accuracy"], [1, 0.5, 0.5])
    np.testing.assert_allclose(table["component_calibration"], [0.675, 0.7, 0.6])
    # L = (mass - share) / (1 - share) of the class means: forest (.5 - .375) / .625; sea 0;
    # street none
    np.testing.assert_allclose(table["component_localisation"][:2], [0.2, 0])
    assert np.isnan(table.loc["street", "component_localisation"])
    np.testing.assert_allclose(table["component_stability"], [0.5, 0.5, 0])  # share learned early
    # forest: the geometric mean; sea: R = 0 and L = 0; street: S = 0 -> 0 although L is not defined
    np.testing.assert_allclose(table["trust_score"], [(1 * 0.675 * 1 * 0.2 * 0.5) ** (1 / 5), 0, 0])
    assert table["rank"].tolist() == [1, 2, 2]  # ties share the better rank
    assert (
        table.attrs["score"]["budget"] == 0.015
        and table.attrs["score"]["weights"]["localisation"] == 1
    )
    # Wilson intervals of the shares, the same as the source's for A
    np.testing.assert_allclose(table["component_accuracy_ci_low"], table["accuracy_ci_low"])
    lo, hi = stats.wilson(0, 1)
    assert (
        table.loc["sea", "component_robustness_ci_low"],
        table.loc["sea", "component_robustness_ci_high"],
    ) == pytest.approx((lo, hi))
    # weights: localisation left out, accuracy counted twice
    weighted = trust.score(_table(), budget=0.015, weights={"localisation": 0, "accuracy": 2})
    a, c, r, s = (
        weighted[f"component_{k}"].to_numpy()
        for k in ("accuracy", "calibration", "robustness", "stability")
    )
    np.testing.assert_allclose(weighted["trust_score"], (a**2 * c * r * s) ** (1 / 5))
    assert "component_localisation" not in weighted.columns
    # the default budget is one grey level: every attacked image here needs more
    assert trust.DEFAULT_BUDGET == 1 / 255
    np.testing.assert_allclose(trust.score(_table())["component_robustness"], [1, 1, 1])


def test_trust_interval_combines_the_components_replicates():
    table = trust.score(_table(), budget=0.015, weights={"localisation": 0})
    reps = table.attrs["replicates"]
    assert reps["trust_score"].shape == (3, 2000)
    # the score's replicates are the geometric mean of the components' replicates, draw by draw
    comps = np.stack(
        [reps[c] for c in ("accuracy", "calibration", "robustness", "stability")], axis=1
    )
    with np.errstate(divide="ignore"):
        by_hand = np.exp(np.log(comps).mean(1))
    np.testing.assert_allclose(reps["trust_score"], by_hand)
    lo, hi = np.quantile(by_hand[0], [0.025, 0.975])
    assert table.loc["forest", "trust_score_ci_low"] == pytest.approx(lo)
    assert table.loc["forest", "trust_score_ci_high"] == pytest.approx(hi)
    # accuracy and stability rest on the same test images and are resampled together: in a draw
    # without forest's misclassified... forest has 2 test images, accuracy 1 and learned early
    # [1, 0]
    acc_rep, stab_rep = reps["accuracy"][0], reps["stability"][0]
    assert np.all(acc_rep == 1) and set(np.unique(stab_rep)) <= {0, 0.5, 1}


def _two_groups(n=50, accuracies=(0.96, 0.96, 0.5), seed=0):
    """A predictions-only table: classes with the given accuracy (exact counts), confident
    answers."""
    rng = np.random.default_rng(seed)
    classes = [f"c{k}" for k in range(len(accuracies))]
    labels, probs = [], []
    for k, acc in enumerate(accuracies):
        right = int(round(acc * n))
        for i in range(n):
            p = np.full(len(classes), 0.05 / (len(classes) - 1))
            answer = k if i < right else (k + 1) % len(classes)
            p[answer] = 0.95
            labels.append(k)
            probs.append(p)
    order = rng.permutation(len(labels))
    return np.array(labels)[order], np.array(probs)[order], classes


def test_ranking_says_which_classes_cannot_be_told_apart():
    labels, probs, classes = _two_groups()
    table = trust.build_table({"p": trust.per_class_from_predictions(labels, probs, classes)})
    scored = trust.score(
        table, weights={"calibration": 0, "robustness": 0, "localisation": 0, "stability": 0}
    )
    order = trust.ranking(scored)
    # c0 and c1 have the same accuracy: they cannot be told apart; c2 (50 %) is told apart from both
    assert (
        order.loc["c0", "cannot_tell_apart"] == "c1"
        and order.loc["c1", "cannot_tell_apart"] == "c0"
    )
    assert order.loc["c2", "cannot_tell_apart"] == "" and order.index[-1] == "c2"
    assert order.loc["c2", "rank_ci_low"] == order.loc["c2", "rank_ci_high"] == 3
    probs_rank = trust.rank_probabilities(scored)
    np.testing.assert_allclose(probs_rank.sum(axis=1), 1)
    assert probs_rank.loc["c2", 3] == 1 and 0.2 < probs_rank.loc["c0", 1] < 1
    assert order.attrs["note"] is None


def test_the_model_not_robust_at_the_budget_is_said_plainly():
    rows = []
    for k in range(3):
        for i in range(8):
            rows.append(
                {
                    "image": 8 * k + i,
                    "region": "whole",
                    "label": k,
                    "epsilon": 0.5 / 255 * (1 + i % 2),
                    "flipped": True,
                    "already_wrong": False,
                }
            )
    frag = pd.DataFrame(rows)
    frag.attrs["max_eps"] = 16 / 255
    table = trust.build_table({"a": trust.per_class_from_fragility(frag, CLASSES)})
    scored = trust.score(
        table, weights={"accuracy": 0, "calibration": 0, "localisation": 0, "stability": 0}
    )
    assert (scored["component_robustness"] == 0).all()
    note = trust.ranking(scored).attrs["note"]
    assert note.startswith("The model is not robust at 1/255")
    assert "not robust at a budget of 1/255" in trust.robustness_verdict(scored)
    words = trust.verdicts(scored)
    assert all(
        "the model is not robust at 1/255" in w.lower() for w in words
    )  # short in each sentence
    assert not any("robust at 1/255:" in w.lower() for w in words)
    items = trust.verdict_items(scored)  # in full for the HTML
    assert all(
        any(k == "model_note" and "most attacked images flip within it" in c for k, c in items[cls])
        for cls in CLASSES
    )
    # at a budget of a quarter grey level every image withstands it: no such sentence
    lenient = trust.score(
        table,
        budget=0.25 / 255,
        weights={"accuracy": 0, "calibration": 0, "localisation": 0, "stability": 0},
    )
    assert (
        trust.robustness_verdict(lenient) is None and trust.ranking(lenient).attrs["note"] is None
    )


def test_sanity_gate_decides_whether_localisation_counts():
    sources = _sources()
    failed = trust.score(
        trust.build_table(
            {
                **sources,
                "sanity check": trust.from_sanity_check(
                    _sanity([0.9, 0.8, 0.95, 0.85]), "gradcam", CLASSES
                ),
            }
        ),
        budget=0.015,
    )
    undecided = trust.score(
        trust.build_table(
            {
                **sources,
                "sanity check": trust.from_sanity_check(
                    _sanity([0.1, 0.9, 0.2, 0.8]), "gradcam", CLASSES
                ),
            }
        ),
        budget=0.015,
    )
    without = trust.score(_table(), budget=0.015, weights={"localisation": 0})
    for scored in (failed, undecided):
        np.testing.assert_allclose(scored["trust_score"], without["trust_score"])
        assert (
            scored.attrs["score"]["weights"]["localisation"] == 0 and scored.attrs["score"]["notes"]
        )
    assert "fails the sanity check" in failed.attrs["score"]["notes"][0]
    assert "not been shown to pass" in undecided.attrs["score"]["notes"][0]
    assert all("fail the sanity check" in w for w in trust.verdicts(failed))
    assert all("undecided on the sanity check" in w for w in trust.verdicts(undecided))
    passed = trust.score(_table(), budget=0.015)
    assert (
        passed.attrs["score"]["weights"]["localisation"] == 1 and not passed.attrs["score"]["notes"]
    )


def test_score_errors_and_missing_components():
    table = _table().drop(columns=["relevance_mass"])
    with pytest.raises(ValueError, match="'relevance_mass'.*weight 0"):
        trust.score(table)
    assert "trust_score" in trust.score(table, weights={"localisation": 0}).columns
    with pytest.raises(ValueError, match="unknown weight"):
        trust.score(_table(), weights={"beauty": 1})
    with pytest.raises(ValueError, match="all weights are 0"):
        trust.score(_table(), weights={k: 0 for k in trust.COMPONENTS})
    with pytest.raises(ValueError, match="budget"):
        trust.score(_table(), budget=-1)
    # a table without per-image values (not from the sources) cannot be bootstrapped: said clearly
    bare = trust.build_table({"p": pd.DataFrame({"accuracy": [0.9, 0.5, 0.8]}, index=CLASSES)})
    with pytest.raises(ValueError, match="per-image values"):
        trust.score(
            bare, weights={"calibration": 0, "robustness": 0, "localisation": 0, "stability": 0}
        )


def test_verdicts_follow_the_numbers():
    labels, probs, classes = _two_groups(accuracies=(1.0, 0.96, 0.5))
    table = trust.score(
        trust.build_table({"p": trust.per_class_from_predictions(labels, probs, classes)}),
        weights={"robustness": 0, "localisation": 0, "stability": 0},
    )
    words = trust.verdicts(table)
    assert list(words.index) == classes
    # 50/50 right: Wilson lower end 0.929 > 0.85 -> "accurate"; 48/50: 0.865 > 0.85 too
    assert "accurate: 100% right (95 % CI 93% to 100%, 50 images)" in words["c0"].lower().replace(
        "ci", "CI"
    )
    assert "accurate: 96% right" in words["c1"].lower()
    # 25/50: interval 37%-63% lies below 75% -> often wrong; and below the rest (98 %) by
    # Fisher's test
    assert (
        "often wrong: 50% right" in words["c2"].lower()
        and "less accurate than the other classes" in words["c2"]
    )
    assert "less accurate" not in words["c0"] + words["c1"]
    # c2's 25 mistakes are all answered "c0" at 0.95: when it says c0 it is right 50 of 75 times
    assert (
        "over-confident (ECE 0.28" in words["c0"]
        and "honest confidence would give about" in words["c0"]
    )
    assert "is right 67%" in words["c0"]
    # c2's own answers (25 right, 2 of c1's wrong, all at 0.95): no evidence against honest
    # confidence
    assert "no evidence of miscalibration" in words["c2"] and "confident" not in words["c2"]
    # c1: all 48 answers right at 0.95 -> ECE exactly 0.05 in every bootstrap draw: not "well"
    # calibrated
    assert "well calibrated" not in words["c1"]
    assert words["c0"].startswith("Trust ")
    with pytest.raises(ValueError, match="unknown threshold"):
        trust.verdicts(table, thresholds={"nice": 1})
    # thresholds move the clauses: a stricter "accurate" no longer fits 48/50
    strict = trust.verdicts(table, thresholds={"accurate": 0.9})
    assert (
        "accurate" not in strict["c1"].replace("inaccurate", "")
        and "accurate: 100%" in strict["c0"]
    )


# ----------------------------------------------------------------------------- export
def _section_values(page: str, cls: str) -> dict:
    """``{column: shown text}`` of the class's section of the HTML report."""
    section = re.search(
        rf'<section class="cls" id="[^"]+" data-class="{re.escape(cls)}">(.*?)</section>',
        page,
        re.S,
    ).group(1)
    return {
        c: html.unescape(v)
        for c, v in re.findall(r'<dd[^>]*data-col="([^"]+)">(.*?)</dd>', section, re.S)
    }


def test_html_is_self_contained_and_shows_every_class_and_number(tmp_path):
    table = trust.score(_table(), weights={"localisation": 0})
    words = trust.verdicts(table)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = tmp_path / "saved.png"
    fig.savefig(png)
    images = {
        "forest": [("Right, 90% sure", np.full((8, 8, 3), 0.5)), ("Wrong", np.zeros((3, 8, 8)))]
    }
    path = trust.write_html(
        table,
        tmp_path / "report" / "trust.html",
        figures={"a line": fig, "from a file": (png, "6 images")},
        verdicts=words,
        title="Trust <report>",
        notes=["first note", "second & last"],
        model="a tiny model",
        data="six images",
        n_images={"test images": 6},
        examples=images,
    )
    page = path.read_text(encoding="utf-8")
    # self-contained: no external resource, no script, every image inline
    for forbidden in ("http://", "https://", 'src="file', "<link", "<script", "url(", "@import"):
        assert forbidden not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 + 2 + 2  # ranking and component charts, figures, examples
    assert all(re.match(r"data:image/(png|jpeg);base64,", s) for s in sources)
    assert all(
        base64.b64decode(s.split(",", 1)[1])[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
        for s in sources
    )
    assert "Trust &lt;report&gt;" in page and "second &amp; last" in page and "a tiny model" in page
    assert "rests on 6 images" in page
    # every class with every per-class number, in the report's units; model-level numbers once
    model = table.attrs["model_level"]
    reasons = trust.undefined(table)
    columns = [
        c
        for c in table.columns
        if c not in model and not trust.is_ci(c) and c not in ("rank_ci_low", "rank_ci_high")
    ]
    for cls in CLASSES:
        shown = _section_values(page, cls)
        assert list(shown) == columns
        for c in columns:
            text = report.display(table.at[cls, c], c, max_eps=0.1, reason=reasons.get((cls, c)))
            assert shown[c].startswith(text)
            if f"{c}_ci_low" in table.columns and not np.isnan(table.at[cls, c]):
                assert "95 % CI" in shown[c], (cls, c, shown[c])
        for _kind, clause in words.attrs["items"][cls]:
            assert html.escape(clause[1:]) in page
    assert report.display(0.1, "attack_max_eps") == "25.5" and "gradcam" in page
    assert _section_values(page, "street")["median_eps_whole"].startswith("more than 25.5")
    assert re.sub("<[^>]+>", " ", _section_values(page, "forest")["accuracy"]).split() == [
        "100%",
        "95",
        "%",
        "CI",
        "34%",
        "to",
        "100%;",
        "2",
        "images",
    ]  # Wilson 2 of 2, by hand: 0.342
    # undefined values say why; nothing is missing, so no red banner
    assert (
        "not defined (no image of this class was explained)"
        in _section_values(page, "street")["relevance_mass"]
    )
    assert 'class="banner error"' not in page and "MISSING" not in page
    # the formula is typeset, each column's source is listed
    assert "<var>A</var><sup><var>w</var><sub>A</sub></sup>" in page
    assert "<code>median_eps_whole</code>" in page
    # sections by rank
    order = [page.index(f'data-class="{c}"') for c in trust.ranking(table).index]
    assert order == sorted(order)
    assert [p.name for p in path.parent.iterdir()] == [
        "trust.html"
    ]  # no temporary file left behind


def test_html_shows_missing_values_as_errors(tmp_path):
    sources = _sources()
    broken = sources["training"].copy()
    broken.loc["street", "share_forgotten"] = np.nan
    table = trust.build_table({**sources, "training": broken}, allow_missing=["share_forgotten"])
    page = trust.write_html(table, tmp_path / "t.html").read_text(encoding="utf-8")
    assert 'class="banner error"' in page and page.count('class="missing"') == 1
    assert _section_values(page, "street")["share_forgotten"] == "MISSING"


def test_html_write_is_atomic_and_checks_its_inputs(tmp_path):
    table = trust.score(_table())
    path = trust.write_html(table, tmp_path / "t.html")
    before = path.read_bytes()
    assert 'class="error"' not in before.decode() and "MISSING" not in before.decode()
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        trust.write_html(table, path, figures={"x": tmp_path / "fake.png"})
    with pytest.raises(ValueError, match="unknown class"):
        trust.write_html(table, path, examples={"desert": []})
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        trust.write_html(table, path, examples={"forest": [("x", np.zeros((4, 5, 6, 7)))]})
    with pytest.raises(ValueError, match="verdicts lack"):
        trust.write_html(table, path, verdicts={"forest": "fine"})
    with pytest.raises(ValueError, match="added after build_table"):
        trust.write_html(table.assign(extra=1), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "fake.png",
        "t.html",
    ]


def test_csv_round_trips(tmp_path):
    table = trust.score(_table(), weights={"localisation": 0})
    words = trust.verdicts(table)
    path = trust.write_csv(table, tmp_path / "trust.csv", verdicts=words)
    back = trust.read_csv(path)
    assert (
        "NaN" in path.read_text() and ",," not in path.read_text()
    )  # missing is written, not blank
    pd.testing.assert_frame_equal(
        back.drop(columns=["verdict", "not_defined"]), table, check_dtype=False, check_exact=True
    )
    assert back.loc["forest", "not_defined"] == "-"
    assert (
        "relevance_mass: no image of this class was explained" in back.loc["street", "not_defined"]
    )
    assert back["verdict"].tolist() == words.tolist()
    assert back.loc["street", "median_eps_whole"] == np.inf


def test_format_value():
    assert trust.format_value(np.nan) == trust.format_value(None) == "MISSING"
    assert trust.format_value(np.nan, reason="no image") == "not defined (no image)"
    assert trust.format_value(0.94333) == "0.943" and trust.format_value(0.0123456) == "0.0123"
    assert trust.format_value(np.int64(7)) == "7" and trust.format_value(3.0, column="rank") == "3"
    assert trust.format_value(np.inf, column="median_eps_whole", max_eps=0.1) == "> 0.1"
    assert trust.format_value(np.inf, column="object_background_ratio", max_eps=0.1) == "inf"
    assert trust.format_value("gradcam") == "gradcam"


# ----------------------------------------------------------------------------- a weak model
def _weak_outputs(tmp_path, labels, probs, classes, *, epochs=3):
    """Every source a weak model can give, then table, score, verdicts, CSV and HTML."""
    labels = np.asarray(labels)
    pred = probs.argmax(1)
    history = np.stack([pred] * epochs)  # it never changed its mind
    rows = []
    for region in ("whole", "object", "background"):
        for i, (y, p) in enumerate(zip(labels, pred)):
            rows.append(
                {
                    "image": i,
                    "region": region,
                    "label": y,
                    "epsilon": 0.0 if p != y else 0.02,
                    "flipped": p == y,
                    "already_wrong": p != y,
                    "flip_class": (y + 1) % len(classes),
                }
            )
    fragility = pd.DataFrame(rows)
    fragility.attrs["max_eps"] = 0.1
    rng = np.random.default_rng(1)
    maps = rng.random((len(labels), 4, 4))
    masks = np.zeros((len(labels), 4, 4), bool)
    masks[:, :2] = True
    sanity = _sanity([np.nan] * 3)  # constant maps: no correlation
    sources = {
        "predictions": trust.per_class_from_predictions(
            labels, probs, classes, calibrated_probs=probs
        ),
        "training": trust.per_class_from_history(history, labels, classes),
        "attacks": trust.per_class_from_fragility(fragility, classes),
        "explanations": trust.per_class_localisation(maps, masks, labels, classes),
        "sanity check": trust.from_sanity_check(sanity, "gradcam", classes),
    }
    table = trust.score(trust.build_table(sources))
    words = trust.verdicts(table)
    csv = trust.write_csv(table, tmp_path / "weak.csv", verdicts=words)
    images = np.random.default_rng(0).random((len(labels), 3, 8, 8))
    page = trust.write_html(
        table,
        tmp_path / "weak.html",
        verdicts=words,
        examples=report.class_examples(images, labels, probs, classes, fragility=fragility),
        figures={"heat": __import__("helpers.plots", fromlist=["x"]).trust_heatmap(table)},
    )
    return table, words, trust.read_csv(csv), page.read_text(encoding="utf-8")


def test_a_class_never_predicted_is_reported_not_raised(tmp_path):
    classes = ["buildings", "forest", "sea"]
    labels = np.repeat([0, 1, 2], 4)
    probs = np.tile([0.1, 0.6, 0.3], (12, 1))  # random weights: always "forest"
    table, words, back, page = _weak_outputs(tmp_path, labels, probs, classes)
    why = trust.undefined(table)
    assert (
        why[("buildings", "precision")]
        == why[("sea", "calibration_error")]
        == calibration.NEVER_PREDICTED
    )
    assert (
        why[("buildings", "median_eps_whole")] == trust.NONE_ATTACKED
    )  # never right, never attacked
    assert table.attrs["missing"] == []
    # a class with accuracy 0 scores 0 even though other components are not defined; forest is
    # ranked first
    assert table.loc["buildings", "trust_score"] == 0 and table.loc["forest", "rank"] == 1
    assert all(
        w.startswith("Trust") and "Not usable: the model is no better than chance" in w
        for w in words
    )
    assert (
        "never predicted" in words["sea"].lower() and "learned early and stably" not in words["sea"]
    )
    assert "precision: the model never predicts this class" in back.loc["sea", "not_defined"]
    assert "not defined (the model never predicts this class)" in page
    assert (
        "not defined (no image of this class was classified correctly, so none was attacked)"
        in page
    )
    assert 'class="banner unusable"' in page and "MISSING" not in page
    assert "mean correlation after randomising the weights not defined" in page  # constant maps


def test_a_class_with_a_single_test_image(tmp_path):
    classes = ["buildings", "forest", "sea"]
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
    probs = np.full((11, 3), 0.05)
    probs[np.arange(11), labels] = 0.9
    probs[4] = [0.05, 0.9, 0.05]  # one buildings image taken for forest
    table, words, back, page = _weak_outputs(tmp_path, labels, probs, classes)
    assert table.loc["sea", "n_test"] == 1 and table.loc["sea", "accuracy"] == 1
    assert "its numbers rest on only 1 test image" in words["sea"].lower()
    assert "Not usable" not in words["sea"]
    assert "rest on only 1 test image" in page and "sea" in back.index


def test_a_model_at_chance(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"class {k}" for k in range(6)]
    labels = np.repeat(np.arange(6), 6)
    probs = rng.dirichlet(np.ones(6), size=len(labels))  # random probabilities
    table, words, back, page = _weak_outputs(tmp_path, labels, probs, classes)
    assert trust.model_verdict(table).startswith("the model is no better than chance")
    assert all("Not usable" in w for w in words)
    assert len(back) == 6 and "Not usable." in page


def test_model_verdict_fires_at_chance_and_rarely_on_a_working_model():
    """Simulation of the rule: how often it calls a model unusable, with 6 balanced classes and
    20 test images each (120), when the model is at chance and when it is right half the time
    (three times chance; weak but clearly learning)."""
    rng = np.random.default_rng(0)
    classes = [str(k) for k in range(6)]

    def fires(p_right):
        acc = rng.binomial(20, p_right, size=6) / 20
        table = trust.build_table(
            {"p": pd.DataFrame({"n_test": [20] * 6, "accuracy": acc}, index=classes)}
        )
        return trust.model_verdict(table) is not None

    at_chance = np.mean([fires(1 / 6) for _ in range(400)])
    working = np.mean([fires(0.5) for _ in range(400)])
    assert at_chance > 0.9 and working < 0.01
    good = trust.build_table(
        {"p": pd.DataFrame({"n_test": [50] * 6, "accuracy": [0.9] * 6}, index=classes)}
    )
    assert trust.model_verdict(good) is None
    assert (
        trust.model_verdict(
            trust.build_table({"p": pd.DataFrame({"accuracy": [0.1] * 6}, index=classes)})
        )
        is None
    )


def test_undefined_components_and_scores_say_why():
    classes = ["a", "b"]
    table = trust.build_table(
        {
            "p": trust.per_class_from_predictions(
                [0, 0, 1, 1], np.tile([0.7, 0.3], (4, 1)), classes
            ),
        }
    )
    scored = trust.score(table, weights={"robustness": 0, "localisation": 0, "stability": 0})
    # b: accuracy 0 -> score 0 although its calibration is not defined
    assert scored.loc["b", "trust_score"] == 0 and np.isnan(
        scored.loc["b", "component_calibration"]
    )
    assert trust.undefined(scored)[("b", "component_calibration")] == calibration.NEVER_PREDICTED
    only_c = trust.score(
        table, weights={"accuracy": 0, "robustness": 0, "localisation": 0, "stability": 0}
    )
    assert np.isnan(only_c.loc["b", "trust_score"])
    assert (
        trust.undefined(only_c)[("b", "trust_score")]
        == f"calibration: {calibration.NEVER_PREDICTED}"
    )
    assert "Trust score not defined" in trust.verdicts(only_c)["b"]


def test_class_examples_and_saved_figures(tmp_path):
    classes = ["forest", "sea"]
    images = np.random.default_rng(0).random((4, 3, 8, 8))
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6]])
    frag = pd.DataFrame(
        {
            "image": [0, 2, 3],
            "region": "whole",
            "label": [0, 1, 1],
            "epsilon": [0.01, 0.02, 0.004],
            "flipped": True,
            "already_wrong": False,
            "flip_class": [1, 0, 0],
        }
    )
    ex = report.class_examples(images, labels, probs, classes, fragility=frag)
    assert [c for c, _ in ex["forest"]] == [
        "Right, 90% sure",
        "Wrong: taken for sea, 70% sure",
        "Most fragile: fooled by a change of 2.6/255, becomes sea",
    ]
    assert ex["sea"][-1][0].startswith(
        "Most fragile: fooled by a change of 1/255"
    ) and np.array_equal(ex["sea"][-1][1], images[3])
    assert len(ex["sea"]) == 2  # no wrong sea image
    plt.figure().savefig(tmp_path / "02_confusion.png")
    found = report.saved_figures(
        {"02_confusion": ("Confusion", "6 images"), "99_none": ("x", "y")}, tmp_path
    )
    assert found == {"Confusion": (tmp_path / "02_confusion.png", "6 images")}
