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

from helpers import calibration, quality, report, trust  # noqa: E402

CLASSES = ["forest", "sea", "street"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- the sources
# Six test images (the hand example of test_calibration): labels forest, sea, sea, street, street, forest.
P = np.array([[.9, .05, .05], [.8, .1, .1], [.1, .7, .2], [.4, .35, .25], [.2, .2, .6], [1., 0., 0.]])
Y = np.array([0, 1, 1, 2, 2, 0])


def test_predictions_source_matches_a_hand_count():
    src = trust.per_class_from_predictions(Y, P, CLASSES, n_bins=5)
    assert list(src.index) == CLASSES and src.index.name == "class"
    assert src["n_test"].tolist() == [2, 2, 2]
    np.testing.assert_allclose(src["accuracy"], [1, .5, .5])          # forest both right; sea, street one each
    assert src["n_predicted"].tolist() == [4, 1, 1]
    np.testing.assert_allclose(src["precision"], [.5, 1, 1])
    np.testing.assert_allclose(src["mean_confidence"], [(.9 + .8 + .4 + 1) / 4, .7, .6])
    np.testing.assert_allclose(src["calibration_error"], [.325, .3, .4])  # hand-computed in test_calibration
    # the per-class error is at least the gap between mean confidence and precision
    assert (src["calibration_error"] >= (src["mean_confidence"] - src["precision"]).abs() - 1e-12).all()


def test_predictions_source_after_temperature_scaling():
    sharp = calibration.apply_temperature(P, 0.5, kind="probs")
    src = trust.per_class_from_predictions(Y, P, CLASSES, calibrated_probs=sharp, n_bins=5)
    np.testing.assert_allclose(src["calibration_error_ts"],
                               calibration.per_class_calibration_error(sharp, Y, n_bins=5))
    assert (src["mean_confidence_ts"] > src["mean_confidence"]).all()       # T < 1 sharpens
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
    np.testing.assert_allclose(src["share_learned_early"], [.5, .5, 0])
    np.testing.assert_allclose(src["share_never_learned"], [.5, .5, 0])
    np.testing.assert_allclose(src["share_forgotten"], [0, 0, 1])
    np.testing.assert_allclose(src["share_learned_late"], [0, 0, 0])
    np.testing.assert_allclose(src.filter(like="share_").sum(axis=1), 1)
    pd.testing.assert_frame_equal(trust.per_class_from_history(PREDS, LABELS, CLASSES), src)
    pd.testing.assert_frame_equal(trust.per_class_from_history(_History()), src)   # labels, classes from it
    with pytest.raises(ValueError, match="another test set"):
        trust.per_class_from_history(_History(), LABELS[::-1], CLASSES)


def _fragility_frame():
    """What attacks.fragility_by_region returns, by hand: 6 images x 3 regions.
    image 2 (sea) is misclassified already and does not count."""
    nan = np.nan
    eps = {  # image: (label, whole, object, background); NaN = never flipped
        0: (0, .02, .03, .06), 1: (0, .04, .05, nan), 2: (1, 0, 0, 0),
        3: (1, .01, .02, .01), 4: (2, nan, nan, nan), 5: (2, .08, nan, .09)}
    rows = []
    for k, region in enumerate(("whole", "object", "background")):
        for image, (label, *e) in eps.items():
            rows.append({"image": image, "region": region, "label": label, "epsilon": e[k],
                         "flipped": not math.isnan(e[k]) and image != 2, "already_wrong": image == 2,
                         "l2_norm": e[k] * 10})
    frame = pd.DataFrame(rows)
    frame.attrs["max_eps"] = 0.1
    return frame


def test_fragility_source_medians_by_hand():
    src = trust.per_class_from_fragility(_fragility_frame(), CLASSES)
    assert src["n_attacked"].tolist() == [2, 1, 2]
    np.testing.assert_allclose(src["median_eps_whole"], [.03, .01, np.inf])   # never flipped counts as inf
    np.testing.assert_allclose(src["median_eps_object"], [.04, .02, np.inf])
    np.testing.assert_allclose(src["median_eps_background"], [np.inf, .01, np.inf])
    np.testing.assert_allclose(src["object_background_ratio"][:2], [0, 2])
    assert np.isnan(src.loc["street", "object_background_ratio"])              # inf / inf
    np.testing.assert_allclose(src["share_not_flipped_whole"], [0, 0, .5])
    assert (src["attack_max_eps"] == 0.1).all() and src.attrs["model_level"] == ["attack_max_eps"]
    # from the per-class summary the search limit must be given
    from helpers.attacks import per_class_fragility
    summary = per_class_fragility(_fragility_frame(), CLASSES)
    assert "attack_max_eps" not in trust.per_class_from_fragility(summary, CLASSES).columns
    pd.testing.assert_frame_equal(trust.per_class_from_fragility(summary, CLASSES, max_eps=0.1), src)


def _localisation_inputs():
    maps = np.zeros((3, 2, 2))
    masks = np.zeros((3, 2, 2), bool)
    maps[0, 0, 0], masks[0, 0, 0] = 1, True                     # forest: hit, mass 1, mask share .25
    maps[1, 1, 1], masks[1, 0, :] = 2, True                     # forest: miss, mass 0, share .5
    maps[2], masks[2, 0, 0] = 1, True                           # sea: constant map: miss, mass .25, share .25
    return maps, masks, np.array([0, 0, 1])


def test_localisation_source_by_hand():
    maps, masks, labels = _localisation_inputs()
    src = trust.per_class_localisation(maps, masks, labels, CLASSES)
    assert src["n_explained"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(src["pointing_game"][:2], [.5, 0])
    np.testing.assert_allclose(src["relevance_mass"][:2], [.5, .25])
    np.testing.assert_allclose(src["mask_share"][:2], [.375, .25])
    np.testing.assert_allclose(src["area_50"][:2], [quality.compactness(maps[:2])["area_50"].mean(),
                                                    quality.compactness(maps[2:])["area_50"].mean()])
    assert src.loc["street"].drop("n_explained").isna().all()                 # no street image explained


# ----------------------------------------------------------------------------- the table
def _sources():
    maps, masks, labels = _localisation_inputs()
    sanity = pd.DataFrame({"method": ["gradcam"] * 3, "stage": ["original", "head", "body"],
                           "spearman_abs": [1.0, 0.3, 0.1]})
    return {
        "predictions": trust.per_class_from_predictions(Y, P, CLASSES, n_bins=5),
        "training": trust.per_class_from_history(_History()),
        "attacks": trust.per_class_from_fragility(_fragility_frame(), CLASSES),
        "explanations": trust.per_class_localisation(maps, masks, labels, CLASSES),
        "sanity check": trust.from_sanity_check(sanity, "gradcam", CLASSES),
    }


def _table(**kw):
    kw.setdefault("allow_missing", ["object_background_ratio", "pointing_game", "relevance_mass",
                                    "mask_share", "area_50", "gini"])
    return trust.build_table(_sources(), **kw)


def test_every_number_traces_to_its_source():
    sources = _sources()
    sources["training"] = sources["training"].iloc[::-1]            # row order does not matter, names do
    table = trust.build_table(sources, allow_missing=True)
    prov = trust.provenance(table)
    assert list(table.index) == CLASSES and set(prov) == set(table.columns)
    assert set(prov.values()) == set(sources)
    for column, source in prov.items():
        pd.testing.assert_series_equal(table[column], sources[source][column].loc[CLASSES], check_names=False)
    assert table.attrs["model_level"] == {"attack_max_eps": 0.1, "sanity_correlation": pytest.approx(0.2),
                                          "explanation_method": "gradcam"}
    # no street image was explained: its localisation is not defined (with the reason), not missing
    assert trust.undefined(table)[("street", "relevance_mass")] == trust.NONE_EXPLAINED
    assert table.attrs["missing"] == []
    # the scored table keeps it, and names the derived columns
    scored = trust.score(table, weights={"localisation": 0})
    prov = trust.provenance(scored)
    assert prov["accuracy"] == "predictions" and prov["trust_score"] == prov["component_accuracy"] == "trust score"


def test_missing_class_or_value_raises():
    sources = _sources()
    with pytest.raises(ValueError, match=r"source 'attacks' has no row for class\(es\) \['sea'\]"):
        trust.build_table({**sources, "attacks": sources["attacks"].drop("sea")}, allow_missing=True)
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['desert'\]"):
        extra = pd.concat([sources["training"], sources["training"].iloc[:1].rename(index={"forest": "desert"})])
        trust.build_table({**sources, "training": extra}, allow_missing=True)
    with pytest.raises(ValueError, match="several rows"):
        trust.build_table({**sources, "training": pd.concat([sources["training"]] * 2)}, allow_missing=True)
    with pytest.raises(ValueError, match="column 'accuracy' comes from both"):
        trust.build_table({**sources, "again": sources["predictions"][["accuracy"]]}, allow_missing=True)
    # values the sources explain (not defined) do not raise; a NaN no source explains names the
    # column, the class and the source
    assert trust.undefined(trust.build_table(sources))[("street", "object_background_ratio")].startswith("neither")
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
def _hand_table(**model):
    """Three classes with round numbers (worked out in test_trust_score_follows_its_formula)."""
    pred = pd.DataFrame({"accuracy": [.9, .6, 1.0], "calibration_error": [.05, .2, .02],
                         "mean_confidence": [.95, .9, .99], "precision": [.9, .7, .98]}, index=CLASSES)
    attacks = pd.DataFrame({"median_eps_whole": [.04, .01, np.inf], "object_background_ratio": [.4, 2.5, 1.0]},
                           index=CLASSES)
    explanations = pd.DataFrame({"relevance_mass": [.8, .5, .7], "mask_share": [.5, .5, .4]}, index=CLASSES)
    training = pd.DataFrame({"share_learned_late": [.1, .2, 0], "share_forgotten": [0, .2, 0]}, index=CLASSES)
    sources = {"predictions": pred, "attacks": attacks, "explanations": explanations, "training": training}
    if model:
        sources["model"] = trust.model_level(CLASSES, **model)
    return trust.build_table(sources)


def test_trust_score_follows_its_formula():
    table = trust.score(_hand_table(attack_max_eps=0.1))
    # epsilons capped at 0.1: [.04, .01, .1], eps_ref = median = .04 -> R = [1, .25, 1]
    np.testing.assert_allclose(table["component_robustness"], [1, .25, 1])
    np.testing.assert_allclose(table["component_accuracy"], [.9, .6, 1])
    np.testing.assert_allclose(table["component_calibration"], [.95, .8, .98])
    # L = (mass - share) / (1 - share): (.8-.5)/.5, (.5-.5)/.5, (.7-.4)/.6
    np.testing.assert_allclose(table["component_localisation"], [.6, 0, .5])
    np.testing.assert_allclose(table["component_stability"], [.9, .6, 1])
    expected = [(.9 * .95 * 1 * .6 * .9) ** (1 / 5), 0.0, (1 * .98 * 1 * .5 * 1) ** (1 / 5)]
    np.testing.assert_allclose(table["trust_score"], expected)
    assert table["rank"].tolist() == [2, 3, 1]          # street .867, forest .857, sea 0 (chance-level localisation)
    assert list(trust.ranking(table).index) == ["street", "forest", "sea"]
    assert table.attrs["score"]["eps_ref"] == pytest.approx(.04)

    # weights: localisation left out, accuracy counted twice
    weighted = trust.score(_hand_table(attack_max_eps=0.1), weights={"localisation": 0, "accuracy": 2})
    a, c, r, s = (weighted[f"component_{k}"].to_numpy() for k in ("accuracy", "calibration", "robustness", "stability"))
    np.testing.assert_allclose(weighted["trust_score"], (a ** 2 * c * r * s) ** (1 / 5))
    assert "component_localisation" not in weighted.columns
    # an explicit reference epsilon (one scale for several models)
    absolute = trust.score(_hand_table(attack_max_eps=0.1), eps_ref=0.02)
    np.testing.assert_allclose(absolute["component_robustness"], [1, .5, 1])


def test_failed_sanity_check_drops_localisation_from_the_score():
    failed = trust.score(_hand_table(attack_max_eps=0.1, sanity_correlation=0.9))
    without = trust.score(_hand_table(attack_max_eps=0.1), weights={"localisation": 0})
    np.testing.assert_allclose(failed["trust_score"], without["trust_score"])
    assert failed.attrs["score"]["weights"]["localisation"] == 0 and failed.attrs["score"]["notes"]
    passed = trust.score(_hand_table(attack_max_eps=0.1, sanity_correlation=0.1))
    assert passed.attrs["score"]["weights"]["localisation"] == 1 and not passed.attrs["score"]["notes"]


def test_score_errors_and_missing_components():
    with pytest.raises(ValueError, match="eps_ref"):        # median epsilon infinite, no search limit known
        table = _hand_table()
        table.loc["forest", "median_eps_whole"] = np.inf
        trust.score(table)
    table = _hand_table(attack_max_eps=0.1).drop(columns=["relevance_mass"])
    with pytest.raises(ValueError, match="'relevance_mass'.*weight 0"):
        trust.score(table)
    assert "trust_score" in trust.score(table, weights={"localisation": 0}).columns
    with pytest.raises(ValueError, match="unknown weight"):
        trust.score(_hand_table(attack_max_eps=0.1), weights={"beauty": 1})
    with pytest.raises(ValueError, match="all weights are 0"):
        trust.score(_hand_table(attack_max_eps=0.1), weights={k: 0 for k in trust.COMPONENTS})
    # a missing component gives a missing score, ranked last
    sources = {"p": pd.DataFrame({"accuracy": [.9, np.nan, .8]}, index=CLASSES)}
    partial = trust.score(trust.build_table(sources, allow_missing=True),
                          weights={"calibration": 0, "robustness": 0, "localisation": 0, "stability": 0})
    assert np.isnan(partial.loc["sea", "trust_score"]) and partial["rank"].tolist() == [1, 3, 2]


def test_verdicts_follow_the_numbers():
    table = trust.score(_hand_table(attack_max_eps=0.1))
    words = trust.verdicts(table)
    assert list(words.index) == CLASSES
    forest, sea, street = words
    assert forest.startswith("Trust 0.86 (rank 2 of 3): accurate (90%), well calibrated")
    assert "relies on the object" in forest and "but" not in forest
    assert "often a false alarm (only 70% of the images it calls sea are sea)" in sea
    assert "often wrong (60% correct)" in sea and "over-confident (ECE 0.20; says 90%" in sea
    assert "fragile: flips at 2.6/255" in sea and "the classes' median is 10/255" in sea
    assert "leans on the background" in sea and "no better than chance" in sea and "unstable in training (40%" in sea
    assert "robust (most of its images withstand 26/255)" in street and "learned early and stably" in street
    # thresholds move the clauses
    stricter = trust.verdicts(table, thresholds={"accurate": 0.95, "calibrated": 0.01})
    assert "fairly accurate (90%)" in stricter["forest"] and ", but slightly over-confident" in stricter["forest"]
    with pytest.raises(ValueError, match="unknown threshold"):
        trust.verdicts(table, thresholds={"nice": 1})
    # without a score and without most sources, only what is there is judged
    bare = trust.verdicts(trust.build_table({"p": pd.DataFrame({"accuracy": [.95, .5, .8]}, index=CLASSES)}))
    assert bare.tolist() == ["Accurate (95%).", "Often wrong (50% correct).", "Fairly accurate (80%)."]
    sanity = trust.verdicts(trust.score(_hand_table(attack_max_eps=0.1, sanity_correlation=0.9)))
    assert all("fail the sanity check" in v for v in sanity)
    # an object that never flips (ratio inf) is said in words, not as "infx"
    table.loc["sea", "object_background_ratio"] = np.inf
    sea = trust.verdicts(table)["sea"]
    assert "changing the object alone does not flip it" in sea and "inf" not in sea


# ----------------------------------------------------------------------------- export
def _section_values(page: str, cls: str) -> dict:
    """``{column: shown text}`` of the class's section of the HTML report."""
    section = re.search(rf'<section class="cls" id="[^"]+" data-class="{re.escape(cls)}">(.*?)</section>',
                        page, re.S).group(1)
    return {c: html.unescape(v) for c, v in re.findall(r'<dd[^>]*data-col="([^"]+)">(.*?)</dd>', section, re.S)}


def test_html_is_self_contained_and_shows_every_class_and_number(tmp_path):
    table = trust.score(_table(), weights={"localisation": 0})
    words = trust.verdicts(table)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = tmp_path / "saved.png"
    fig.savefig(png)
    images = {"forest": [("Right, 90% sure", np.full((8, 8, 3), 0.5)), ("Wrong", np.zeros((3, 8, 8)))]}
    path = trust.write_html(table, tmp_path / "report" / "trust.html", figures={"a line": fig, "from a file": (png, "6 images")},
                            verdicts=words, title="Trust <report>", notes=["first note", "second & last"],
                            model="a tiny model", data="six images", n_images={"test images": 6}, examples=images)
    page = path.read_text(encoding="utf-8")
    # self-contained: no external resource, no script, every image inline
    for forbidden in ("http://", "https://", 'src="file', "<link", "<script", "url(", "@import"):
        assert forbidden not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 1 + 2 + 2                                    # ranking chart, figures, examples
    assert all(re.match(r"data:image/(png|jpeg);base64,", s) for s in sources)
    assert all(base64.b64decode(s.split(",", 1)[1])[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0") for s in sources)
    assert "Trust &lt;report&gt;" in page and "second &amp; last" in page and "a tiny model" in page
    assert "rests on 6 images" in page
    # every class with every per-class number, in the report's units; model-level numbers once
    model = table.attrs["model_level"]
    reasons = trust.undefined(table)
    columns = [c for c in table.columns if c not in model]
    for cls in CLASSES:
        shown = _section_values(page, cls)
        assert list(shown) == columns
        for c in columns:
            assert shown[c] == report.display(table.at[cls, c], c, max_eps=0.1, reason=reasons.get((cls, c)))
        for kind, clause in words.attrs["items"][cls]:
            assert html.escape(clause[1:]) in page
    assert report.display(0.1, "attack_max_eps") == "25.5" and "gradcam" in page
    assert _section_values(page, "street")["median_eps_whole"].startswith("more than 25.5")
    assert _section_values(page, "forest")["accuracy"] == "100%"
    # undefined values say why; nothing is missing, so no red banner
    assert "not defined (no image of this class was explained)" in _section_values(page, "street")["relevance_mass"]
    assert 'class="banner error"' not in page and "MISSING" not in page
    # the formula is typeset, each column's source is listed
    assert "<var>A</var><sup><var>w</var><sub>A</sub></sup>" in page
    assert "<code>median_eps_whole</code>" in page
    # sections by rank
    order = [page.index(f'data-class="{c}"') for c in trust.ranking(table).index]
    assert order == sorted(order)
    assert [p.name for p in path.parent.iterdir()] == ["trust.html"]      # no temporary file left behind


def test_html_shows_missing_values_as_errors(tmp_path):
    sources = _sources()
    broken = sources["training"].copy()
    broken.loc["street", "share_forgotten"] = np.nan
    table = trust.build_table({**sources, "training": broken}, allow_missing=["share_forgotten"])
    page = trust.write_html(table, tmp_path / "t.html").read_text(encoding="utf-8")
    assert 'class="banner error"' in page and page.count('class="missing"') == 1
    assert _section_values(page, "street")["share_forgotten"] == "MISSING"


def test_html_write_is_atomic_and_checks_its_inputs(tmp_path):
    table = trust.score(_hand_table(attack_max_eps=0.1))
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
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["fake.png", "t.html"]


def test_csv_round_trips(tmp_path):
    table = trust.score(_table(), weights={"localisation": 0})
    words = trust.verdicts(table)
    path = trust.write_csv(table, tmp_path / "trust.csv", verdicts=words)
    back = trust.read_csv(path)
    assert "NaN" in path.read_text() and ",," not in path.read_text()         # missing is written, not blank
    pd.testing.assert_frame_equal(back.drop(columns=["verdict", "not_defined"]), table, check_dtype=False,
                                  check_exact=True)
    assert back.loc["forest", "not_defined"] == "-"
    assert "relevance_mass: no image of this class was explained" in back.loc["street", "not_defined"]
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
    history = np.stack([pred] * epochs)                            # it never changed its mind
    rows = []
    for region in ("whole", "object", "background"):
        for i, (y, p) in enumerate(zip(labels, pred)):
            rows.append({"image": i, "region": region, "label": y, "epsilon": 0.0 if p != y else 0.02,
                         "flipped": p == y, "already_wrong": p != y, "flip_class": (y + 1) % len(classes)})
    fragility = pd.DataFrame(rows)
    fragility.attrs["max_eps"] = 0.1
    rng = np.random.default_rng(1)
    maps = rng.random((len(labels), 4, 4))
    masks = np.zeros((len(labels), 4, 4), bool)
    masks[:, :2] = True
    sanity = pd.DataFrame({"method": ["gradcam"] * 2, "stage": ["original", "head"], "spearman_abs": [1.0, np.nan]})
    sources = {
        "predictions": trust.per_class_from_predictions(labels, probs, classes, calibrated_probs=probs),
        "training": trust.per_class_from_history(history, labels, classes),
        "attacks": trust.per_class_from_fragility(fragility, classes),
        "explanations": trust.per_class_localisation(maps, masks, labels, classes),
        "sanity check": trust.from_sanity_check(sanity, "gradcam", classes),
    }
    table = trust.score(trust.build_table(sources))
    words = trust.verdicts(table)
    csv = trust.write_csv(table, tmp_path / "weak.csv", verdicts=words)
    images = np.random.default_rng(0).random((len(labels), 3, 8, 8))
    page = trust.write_html(table, tmp_path / "weak.html", verdicts=words,
                            examples=report.class_examples(images, labels, probs, classes, fragility=fragility),
                            figures={"heat": __import__("helpers.plots", fromlist=["x"]).trust_heatmap(table)})
    return table, words, trust.read_csv(csv), page.read_text(encoding="utf-8")


def test_a_class_never_predicted_is_reported_not_raised(tmp_path):
    classes = ["buildings", "forest", "sea"]
    labels = np.repeat([0, 1, 2], 4)
    probs = np.tile([0.1, 0.6, 0.3], (12, 1))                       # random weights: always "forest"
    table, words, back, page = _weak_outputs(tmp_path, labels, probs, classes)
    why = trust.undefined(table)
    assert why[("buildings", "precision")] == why[("sea", "calibration_error")] == calibration.NEVER_PREDICTED
    assert why[("buildings", "median_eps_whole")] == trust.NONE_ATTACKED      # never right, never attacked
    assert table.attrs["missing"] == []
    # a class with accuracy 0 scores 0 even though other components are not defined; forest is ranked first
    assert table.loc["buildings", "trust_score"] == 0 and table.loc["forest", "rank"] == 1
    assert all(w.startswith("Trust") and "Not usable: the model is no better than chance" in w for w in words)
    assert "never predicted" in words["sea"].lower() and "learned early" not in words["sea"]
    assert "precision: the model never predicts this class" in back.loc["sea", "not_defined"]
    assert "not defined (the model never predicts this class)" in page
    assert "not defined (no image of this class was classified correctly, so none was attacked)" in page
    assert 'class="banner unusable"' in page and "MISSING" not in page


def test_a_class_with_a_single_test_image(tmp_path):
    classes = ["buildings", "forest", "sea"]
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
    probs = np.full((11, 3), 0.05)
    probs[np.arange(11), labels] = 0.9
    probs[4] = [0.05, 0.9, 0.05]                                     # one buildings image taken for forest
    table, words, back, page = _weak_outputs(tmp_path, labels, probs, classes)
    assert table.loc["sea", "n_test"] == 1 and table.loc["sea", "accuracy"] == 1
    assert "its numbers rest on only 1 test image." in words["sea"]
    assert "Not usable" not in words["sea"]
    assert "rest on only 1 test image" in page and "sea" in back.index


def test_a_model_at_chance(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"class {k}" for k in range(6)]
    labels = np.repeat(np.arange(6), 6)
    probs = rng.dirichlet(np.ones(6), size=len(labels))               # random probabilities
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
        table = trust.build_table({"p": pd.DataFrame({"n_test": [20] * 6, "accuracy": acc}, index=classes)})
        return trust.model_verdict(table) is not None

    at_chance = np.mean([fires(1 / 6) for _ in range(400)])
    working = np.mean([fires(0.5) for _ in range(400)])
    assert at_chance > 0.9 and working < 0.01
    good = trust.build_table({"p": pd.DataFrame({"n_test": [50] * 6, "accuracy": [.9] * 6}, index=classes)})
    assert trust.model_verdict(good) is None
    assert trust.model_verdict(trust.build_table({"p": pd.DataFrame({"accuracy": [.1] * 6}, index=classes)})) is None


def test_undefined_components_and_scores_say_why():
    classes = ["a", "b"]
    table = trust.build_table({
        "p": trust.per_class_from_predictions([0, 0, 1, 1], np.tile([0.7, 0.3], (4, 1)), classes),
    })
    scored = trust.score(table, weights={"robustness": 0, "localisation": 0, "stability": 0})
    # b: accuracy 0 -> score 0 although its calibration is not defined
    assert scored.loc["b", "trust_score"] == 0 and np.isnan(scored.loc["b", "component_calibration"])
    assert trust.undefined(scored)[("b", "component_calibration")] == calibration.NEVER_PREDICTED
    only_c = trust.score(table, weights={"accuracy": 0, "robustness": 0, "localisation": 0, "stability": 0})
    assert np.isnan(only_c.loc["b", "trust_score"])
    assert trust.undefined(only_c)[("b", "trust_score")] == f"calibration: {calibration.NEVER_PREDICTED}"
    assert "Trust score not defined" in trust.verdicts(only_c)["b"]


def test_class_examples_and_saved_figures(tmp_path):
    classes = ["forest", "sea"]
    images = np.random.default_rng(0).random((4, 3, 8, 8))
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[.9, .1], [.3, .7], [.2, .8], [.4, .6]])
    frag = pd.DataFrame({"image": [0, 2, 3], "region": "whole", "label": [0, 1, 1], "epsilon": [.01, .02, .004],
                         "flipped": True, "already_wrong": False, "flip_class": [1, 0, 0]})
    ex = report.class_examples(images, labels, probs, classes, fragility=frag)
    assert [c for c, _ in ex["forest"]] == ["Right, 90% sure", "Wrong: taken for sea, 70% sure",
                                            "Most fragile: fooled by a change of 2.6/255, becomes sea"]
    assert ex["sea"][-1][0].startswith("Most fragile: fooled by a change of 1/255") and np.array_equal(ex["sea"][-1][1], images[3])
    assert len(ex["sea"]) == 2                                        # no wrong sea image
    plt.figure().savefig(tmp_path / "02_confusion.png")
    found = report.saved_figures({"02_confusion": ("Confusion", "6 images"), "99_none": ("x", "y")}, tmp_path)
    assert found == {"Confusion": (tmp_path / "02_confusion.png", "6 images")}
