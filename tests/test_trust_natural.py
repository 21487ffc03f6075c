"""The natural-robustness component of the trust report: the corruption source by hand, the
component N in the score, the verdict rule by simulation (false alarms and power), a table
without the source scoring exactly as before, and the CSV and HTML showing it.

The rates measured (seeds fixed) are printed with ``pytest -s``."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from test_trust_rules import _rate, _said  # noqa: E402  (shared simulation helpers)

from helpers import corruptions, stats, trust  # noqa: E402

CLASSES = ["forest", "sea", "street"]
STATED = corruptions.stated_severities()  # ImageNet-C level 3 of each corruption
NOISE, FOG = STATED["gaussian_noise"], STATED["fog"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _frame(images: dict) -> pd.DataFrame:
    """The long frame of corruptions.natural_fragility by hand: ``{image: (label, {corruption:
    smallest flipping severity})}``, NaN = never flipped, 0 = wrong already (on every one)."""
    rows = []
    for image, (label, found) in images.items():
        wrong = all(s == 0 for s in found.values())
        for corruption, s in found.items():
            rows.append(
                {
                    "corruption": corruption,
                    "image": image,
                    "label": label,
                    "severity": s,
                    "flipped": not math.isnan(s) and not wrong,
                    "already_wrong": wrong,
                    "pred_clean": (label + 1) % 3 if wrong else label,
                    "flip_class": pd.NA if math.isnan(s) else (label + 1) % 3,
                }
            )
    return pd.DataFrame(rows)


def _hand_frame() -> pd.DataFrame:
    """Two corruptions (the frame lacks the other six). forest: image 0 withstands both (never
    flips under noise, fog only above its stated severity), image 1 neither, image 2 noise only,
    image 3 is wrong already; sea: its only image is wrong already; street: image 5 never flips,
    image 6 flips under noise AT its stated severity (not withstood) and fog above it."""
    nan = np.nan
    return _frame(
        {
            0: (0, {"gaussian_noise": nan, "fog": 0.9}),
            1: (0, {"gaussian_noise": 0.3, "fog": 0.1}),
            2: (0, {"gaussian_noise": 0.5, "fog": 0.2}),
            3: (0, {"gaussian_noise": 0.0, "fog": 0.0}),
            4: (1, {"gaussian_noise": 0.0, "fog": 0.0}),
            5: (2, {"gaussian_noise": nan, "fog": nan}),
            6: (2, {"gaussian_noise": NOISE, "fog": 0.95}),
        }
    )


# ----------------------------------------------------------------------------- the source
def test_corruption_source_by_hand():
    src = trust.per_class_from_corruptions(_hand_frame(), CLASSES)
    # only the correctly classified images count: forest 0-2 (not 3), sea none, street 5-6
    assert src["n_corrupted"].tolist() == [3, 0, 2]
    # forest withstands noise on images 0 and 2, fog on image 0; street noise on 5, fog on both
    np.testing.assert_allclose(
        src["share_withstanding_gaussian_noise"].iloc[[0, 2]], [2 / 3, 1 / 2]
    )
    np.testing.assert_allclose(src["share_withstanding_fog"].iloc[[0, 2]], [1 / 3, 1])
    for cls, column, k, n in (
        ("forest", "share_withstanding_gaussian_noise", 2, 3),
        ("forest", "share_withstanding_fog", 1, 3),
        ("street", "share_withstanding_gaussian_noise", 1, 2),
        ("street", "share_withstanding_fog", 2, 2),
    ):
        assert (src.loc[cls, f"{column}_ci_low"], src.loc[cls, f"{column}_ci_high"]) == (
            pytest.approx(stats.wilson(k, n))
        )
    # N: the mean over images of the share withstood: forest (1 + 0 + 1/2) / 3, street (1 + 1/2) / 2
    np.testing.assert_allclose(src["natural_robustness"].iloc[[0, 2]], [0.5, 0.75])
    # ... which is the mean of the shares when every image has every corruption
    shares = src[["share_withstanding_gaussian_noise", "share_withstanding_fog"]].mean(axis=1)
    np.testing.assert_allclose(src["natural_robustness"].iloc[[0, 2]], shares.iloc[[0, 2]])
    np.testing.assert_array_equal(src.attrs["samples"]["withstood"]["forest"], [1, 0, 0.5])
    lo, hi = (
        src.loc["forest", "natural_robustness_ci_low"],
        src["natural_robustness_ci_high"].iloc[0],
    )
    assert 0 <= lo <= 0.5 <= hi <= 1 and lo < hi
    # the frame lacks six corruptions: no column for them; the stated severities are level 3
    assert not any("noise" not in c and "fog" not in c for c in src.columns if "withstanding" in c)
    assert (src["natural_level"] == "ImageNet-C level 3").all()
    assert (src["natural_severities"] == f"gaussian_noise {NOISE:.2g}, fog {FOG:.2g}").all()
    # sea: no image it gets right: not defined, with the reason (build_table does not raise)
    table = trust.build_table({"corruptions": src})
    assert trust.undefined(table)[("sea", "natural_robustness")] == trust.NONE_CORRUPTED
    assert trust.undefined(table)[("sea", "share_withstanding_fog")] == trust.NONE_CORRUPTED
    assert table.attrs["model_level"]["natural_level"] == "ImageNet-C level 3"


def test_corruption_source_stated_severities_and_errors():
    frame = _hand_frame()
    # stated severities move the line: with noise stated at 0.25, image 1 (flips at 0.3) holds
    lenient = trust.per_class_from_corruptions(
        frame, CLASSES, severities={"gaussian_noise": 0.25, "fog": FOG}
    )
    assert lenient.loc["forest", "share_withstanding_gaussian_noise"] == 1
    assert (lenient["natural_level"] == "the stated severities").all()
    with pytest.raises(ValueError, match=r"no stated severity for corruption\(s\) \['fog'\]"):
        trust.per_class_from_corruptions(frame, CLASSES, severities={"gaussian_noise": 0.5})
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        trust.per_class_from_corruptions(frame, CLASSES, severities={**STATED, "fog": 0})
    with pytest.raises(ValueError, match="natural_fragility"):
        trust.per_class_from_corruptions(frame.drop(columns="severity"), CLASSES)
    with pytest.raises(ValueError, match="several rows"):
        trust.per_class_from_corruptions(pd.concat([frame, frame.iloc[:1]]), CLASSES)
    # a class none of whose images is in the corrupted sample, and a corruption a class lacks
    partial = frame[~((frame["label"] == 2) & (frame["corruption"] == "fog"))]
    src = trust.per_class_from_corruptions(partial[partial["label"] != 1], CLASSES)
    why = trust.undefined(trust.build_table({"c": src}))
    assert why[("sea", "natural_robustness")] == "none of its images was in the corrupted sample"
    assert why[("street", "share_withstanding_fog")] == "none of its images was corrupted by fog"
    assert src.loc["street", "natural_robustness"] == 0.5  # the noise share alone


# ----------------------------------------------------------------------------- the score
def _synthetic():
    """Predictions and training history of 3 classes x 40 images (seeded), and a natural
    frame of all 8 corruptions for them (image i withstands each with probability 0.4-0.8)."""
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(3), 40)
    right = rng.random(labels.size) < np.array([0.9, 0.75, 0.6])[labels]
    conf = rng.uniform(0.5, 1.0, labels.size)
    pred = np.where(right, labels, (labels + 1 + rng.integers(0, 2, labels.size)) % 3)
    probs = np.tile(((1 - conf) / 2)[:, None], (1, 3))
    probs[np.arange(labels.size), pred] = conf
    history = rng.integers(0, 3, size=(6, labels.size))
    history[3:] = np.where(rng.random((3, labels.size)) < 0.7, labels, history[3:])
    sources = {
        "predictions": trust.per_class_from_predictions(labels, probs, CLASSES, n_boot=300),
        "training": trust.per_class_from_history(history, labels, CLASSES, n_boot=300),
    }
    held = rng.random((labels.size, len(STATED))) < np.array([0.8, 0.6, 0.4])[labels][:, None]
    images = {
        i: (
            int(labels[i]),
            {
                c: 0.0 if pred[i] != labels[i] else np.nan if held[i, j] else s * rng.random()
                for j, (c, s) in enumerate(STATED.items())
            },
        )
        for i in range(labels.size)
    }
    return sources, _frame(images)


NO_ATTACK = {"robustness": 0, "localisation": 0}
# trust_score, its interval and the rank interval of the synthetic predictions + history,
# weights NO_ATTACK, n_boot 300, computed BEFORE the natural component existed
BEFORE = {
    "trust_score": [0.5023267879933407, 0.3351696017549233, 0.3128179967367119],
    "trust_score_ci_low": [0.34411406159408336, 0.0, 0.0],
    "trust_score_ci_high": [0.5921578333270918, 0.4475248811828414, 0.397175614580292],
    "rank": [1, 2, 3],
    "rank_ci_low": [1, 1, 2],
    "rank_ci_high": [2, 3, 3],
}


def test_a_table_without_the_source_scores_exactly_as_before(tmp_path):
    sources, natural = _synthetic()
    without = trust.score(trust.build_table(sources), weights=NO_ATTACK, n_boot=300)
    for column, values in BEFORE.items():
        np.testing.assert_array_equal(without[column].to_numpy(float), values, err_msg=column)
    assert "component_natural" not in without.columns
    assert without.attrs["score"]["weights"]["natural"] == 0
    assert "per_class_from_corruptions" in without.attrs["score"]["left_out"]["natural"]
    assert without.attrs["score"]["notes"] == []  # the notes an older report showed, unchanged
    # the same as a table WITH the source and N weighted 0: replicates, ranks, everything
    table = trust.build_table({**sources, "corruptions": trust.per_class_from_corruptions(
        natural, CLASSES, n_boot=300)})  # fmt: skip
    zero = trust.score(table, weights={**NO_ATTACK, "natural": 0}, n_boot=300)
    for column in [*BEFORE, "component_accuracy", "component_stability_ci_low"]:
        pd.testing.assert_series_equal(zero[column], without[column])
    np.testing.assert_array_equal(
        zero.attrs["replicates"]["trust_score"], without.attrs["replicates"]["trust_score"]
    )
    assert zero.attrs["score"]["left_out"] == {}  # weighted 0 by the user: nothing to say
    # the report's method lists the weights it always did (no w_N), the CSV no new column
    no_c = trust.score(trust.build_table(sources), weights={**NO_ATTACK, "calibration": 0})
    page = trust.write_html(no_c, tmp_path / "t.html").read_text("utf-8")  # see the CSV test
    assert "<sub>N</sub>" not in page and "<sub>S</sub> = 1." in page
    csv = trust.write_csv(without, tmp_path / "t.csv").read_text("utf-8")
    assert "natural" not in csv and "withstanding" not in csv and "corrupted" not in csv
    # asked for without its source: said which source it needs
    with pytest.raises(ValueError, match="per_class_from_corruptions"):
        trust.score(trust.build_table(sources), weights={**NO_ATTACK, "natural": 1})


def test_the_component_is_the_mean_share_withstood_and_enters_the_score():
    sources, natural = _synthetic()
    src = trust.per_class_from_corruptions(natural, CLASSES, n_boot=300)
    table = trust.score(trust.build_table({**sources, "corruptions": src}), weights=NO_ATTACK,
                        n_boot=300)  # fmt: skip
    # N by hand: per correctly classified image, the share of the 8 corruptions withstood
    ok = natural[~natural["already_wrong"]]
    held = ok["severity"].isna() | (ok["severity"] > ok["corruption"].map(STATED))
    by_hand = held.groupby([ok["label"], ok["image"]]).mean().groupby(level=0).mean()
    np.testing.assert_allclose(table["component_natural"], by_hand.to_numpy())
    np.testing.assert_allclose(table["natural_robustness"], by_hand.to_numpy())
    # the same bootstrap draws (class k seeded seed + k): the source's interval is N's
    for end in ("_ci_low", "_ci_high"):
        np.testing.assert_array_equal(
            table[f"component_natural{end}"], src[f"natural_robustness{end}"]
        )
    np.testing.assert_array_equal(table["n_corrupted"], ok.groupby("label")["image"].nunique())
    # the score: the geometric mean of A, C, S and N, replicate by replicate for the interval
    a, c, s, n = (
        table[f"component_{k}"] for k in ("accuracy", "calibration", "stability", "natural")
    )
    np.testing.assert_allclose(table["trust_score"], (a * c * s * n) ** (1 / 4))
    reps = table.attrs["replicates"]
    combined = (reps["accuracy"] * reps["calibration"] * reps["stability"] * reps["natural"]) ** (
        1 / 4
    )
    np.testing.assert_allclose(reps["trust_score"], combined)
    lo, hi = stats.percentile_interval(combined[0])
    assert table["trust_score_ci_low"].iloc[0] == pytest.approx(lo)
    assert table["trust_score_ci_high"].iloc[0] == pytest.approx(hi)
    assert table.attrs["score"]["notes"] == [] and "N^wN" in table.attrs["score"]["formula"]
    assert "component_natural" in trust.ranking(table).columns
    assert trust.provenance(table)["share_withstanding_fog"] == "corruptions"


def test_a_class_without_a_correct_image_has_no_natural_score_and_says_why():
    table = trust.build_table(
        {"c": trust.per_class_from_corruptions(_hand_frame(), CLASSES, n_boot=50)}
    )
    only = {k: 0 for k in trust.COMPONENTS if k != "natural"}
    scored = trust.score(table, weights=only, n_boot=50)
    np.testing.assert_allclose(scored["trust_score"].iloc[[0, 2]], [0.5, 0.75])
    assert np.isnan(scored.loc["sea", "trust_score"])
    why = trust.undefined(scored)
    assert why[("sea", "component_natural")] == trust.NONE_CORRUPTED
    assert why[("sea", "trust_score")] == f"natural: {trust.NONE_CORRUPTED}"


# ----------------------------------------------------------------------------- the rule
C, N_IMAGES = 6, 48  # the embedded profile: 6 classes of 50 test images, most right


def _draw(rng, share: float) -> pd.DataFrame:
    """6 classes x 48 correctly classified images x 8 corruptions; each image withstands each
    corruption with probability ``share`` (else it flips somewhere up to the stated severity)."""
    images = {}
    for i in range(C * N_IMAGES):
        held = rng.random(len(STATED)) < share
        images[i] = (
            i // N_IMAGES,
            {
                c: np.nan if h else s * rng.uniform(0.05, 1)
                for h, (c, s) in zip(held, STATED.items())
            },
        )
    return _frame(images)


def _words(frame, classes):
    src = trust.per_class_from_corruptions(frame, classes, n_boot=20)
    return trust.verdict_items(trust.build_table({"c": src}))


@pytest.mark.parametrize(
    "share, fragile_at_most, fragile_at_least, good_at_most",
    [(0.6, 0.05, 0.0, 0.05), (0.5, 0.05, 0.0, 0.05), (0.2, 1.0, 0.9, 0.0)],
)
def test_natural_words_by_simulation(share, fragile_at_most, fragile_at_least, good_at_most):
    """0.6 under every corruption: nothing is wrong (most images withstand each), "fragile"
    fires in at most 5 % of draws; 0.5: the boundary, either word in at most 5 % (the 8
    corruptions are judged together); 0.2: most images flip under every corruption, named in
    most draws."""
    rng = np.random.default_rng(int(share * 100))
    classes = [f"class {k}" for k in range(C)]
    fragile = good = draws = 0
    for _ in range(40):
        items = _words(_draw(rng, share), classes)
        fragile += sum(_said(items, c, "fragile to natural corruptions") for c in classes)
        good += sum(_said(items, c, "withstands natural corruptions") for c in classes)
        draws += C
    rate = _rate(f"'fragile to natural corruptions', true share {share}, 8 x 48", fragile, draws)
    assert fragile_at_least <= rate <= fragile_at_most
    assert _rate(f"'withstands', true share {share}", good, draws) <= good_at_most


def test_natural_words_name_the_corruptions_and_the_level():
    rng = np.random.default_rng(7)
    frame = _draw(rng, 0.95)
    # class 0 flips under fog on 40 of its 48 images: named, and only fog
    fog0 = (frame["label"] == 0) & (frame["corruption"] == "fog")
    frame.loc[fog0, "severity"] = np.where(frame.loc[fog0, "image"] < 40, FOG / 2, np.nan)
    classes = [f"class {k}" for k in range(C)]
    items = _words(frame, classes)
    bad = [text for kind, text in items["class 0"] if kind == "bad"]
    assert len(bad) == 1 and "under fog (" in bad[0] and "at ImageNet-C level 3" in bad[0]
    assert "noise" not in bad[0] and "of its 48 images" in bad[0]
    assert "17% withstand it" in bad[0]  # 8 of 48
    assert _said(items, "class 1", "withstands natural corruptions at ImageNet-C level 3")
    assert not _said(items, "class 0", "withstands natural corruptions")
    assert trust.THRESHOLDS["natural_share"] == 0.5
    # a stricter threshold calls none of the 95 % classes robust to corruption
    table = trust.build_table({"c": trust.per_class_from_corruptions(frame, classes, n_boot=20)})
    strict = trust.verdict_items(table, thresholds={"natural_share": 0.99})
    assert not _said(strict, "class 1", "withstands natural corruptions")
    # in the verdict sentence
    words = trust.verdicts(table)
    assert "fragile to natural corruptions" in words["class 0"].lower()


# ----------------------------------------------------------------------------- CSV and HTML
def test_csv_and_html_show_the_component_and_the_shares(tmp_path):
    sources, natural = _synthetic()
    src = trust.per_class_from_corruptions(natural, CLASSES, n_boot=300)
    # calibration left out: its estimate lies above its bootstrap interval here (the ECE of a
    # resample is biased upwards), which plots.trust_components cannot draw
    table = trust.score(trust.build_table({**sources, "corruptions": src}),
                        weights={**NO_ATTACK, "calibration": 0}, n_boot=300)  # fmt: skip
    words = trust.verdicts(table)
    back = trust.read_csv(trust.write_csv(table, tmp_path / "t.csv", verdicts=words))
    for column in ("component_natural", "natural_robustness", "share_withstanding_fog"):
        for c in (column, *trust.ci_columns(column)):
            np.testing.assert_array_equal(back[c].to_numpy(), table[c].to_numpy())
    assert (back["n_corrupted"] == table["n_corrupted"]).all()
    assert (back["natural_level"] == "ImageNet-C level 3").all()
    page = trust.write_html(table, tmp_path / "t.html", verdicts=words).read_text("utf-8")
    for column in ("component_natural", "natural_robustness", "share_withstanding_pixelate"):
        assert f'data-col="{column}"' in page
    assert "N: natural robustness" in page and "<var>N</var>" in page
    assert "Images that keep their prediction under fog at its stated severity" in page
    assert "the weakest of six checks" in page
    # value, interval and n in the class sections: "80% ... 95 % CI ..., 36 images"
    forest = table.loc["forest"]
    n = int(forest["n_corrupted"])
    assert f"{n} images" in page and trust.COLUMNS["share_withstanding_fog"] in page
